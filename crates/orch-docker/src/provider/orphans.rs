//! What carries orch's deployment label on a host, and the removal of what no deployment
//! holds: containers first, then networks, then volumes.

use std::collections::HashMap;

use orch_core::reconcile::Marked;

use super::labelled_with;
use super::shared::{remove_container, remove_network, remove_volume};
use crate::client::Engine;
use crate::error::EngineError;
use crate::spec::{LABEL_DEPLOYMENT, LABEL_KEY};

/// The order of removal, dependents first.
const REMOVAL_ORDER: [&str; 3] = ["container", "container_network", "container_volume"];

fn mark(kind: &str, id: String, name: String, labels: Option<&HashMap<String, String>>) -> Option<Marked> {
    let labels = labels?;
    Some(Marked {
        kind: kind.to_owned(),
        id,
        name,
        deployment_id: labels.get(LABEL_DEPLOYMENT)?.clone(),
        key: labels.get(LABEL_KEY).cloned(),
    })
}

/// Every container, network and volume on the host with an `orch.deployment` label.
pub(super) async fn marked(engine: &Engine) -> Result<Vec<Marked>, EngineError> {
    let filters = HashMap::from([("label".to_owned(), vec![LABEL_DEPLOYMENT.to_owned()])]);
    let found = labelled_with(engine, "(every deployment)", filters).await?;
    let containers = found.containers.into_iter().filter_map(|container| {
        let name = container
            .names
            .as_ref()
            .and_then(|names| names.first())
            .map(|name| name.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        mark("container", container.id.clone()?, name, container.labels.as_ref())
    });
    let networks = found.networks.into_iter().filter_map(|network| {
        let name = network.name.clone().unwrap_or_default();
        mark("container_network", network.id.clone()?, name, network.labels.as_ref())
    });
    let volumes = found.volumes.into_iter().filter_map(|volume| {
        mark(
            "container_volume",
            volume.name.clone(),
            volume.name,
            Some(&volume.labels),
        )
    });
    Ok(containers.chain(networks).chain(volumes).collect())
}

/// Removes `orphans` in the order the engine needs.
pub(super) async fn remove(engine: &Engine, orphans: &[Marked]) -> Result<(), EngineError> {
    for kind in REMOVAL_ORDER {
        for orphan in orphans.iter().filter(|orphan| orphan.kind == kind) {
            match kind {
                "container" => remove_container(engine, &orphan.id).await?,
                "container_network" => remove_network(engine, &orphan.id).await?,
                _ => remove_volume(engine, &orphan.id).await?,
            }
        }
    }
    Ok(())
}
