//! What the instances share: a network per class and the shared volumes (made by
//! `Prepare`), their removal when an update drops them (`Prune`), and the teardown of a
//! whole deployment (`DeleteAll`), which goes by label so that even what was never recorded
//! goes too.

use std::collections::BTreeSet;

use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use orch_core::plan::{container_key, CONTAINER_KINDS};
use orch_core::provider::{Observed, Report};
use orch_core::template::services::{class_is_internal, networks_of};
use orch_core::template::ServiceClass;
use serde_json::json;

use super::{labelled, owned_by, Work};
use crate::client::Engine;
use crate::error::EngineError;
use crate::spec::{labels, network_name, volume_key, volume_name, LABEL_KEY};

/// Containers removed at once.
const PARALLEL_REMOVALS: usize = 8;

/// A failed removal is fine when the thing is gone already.
pub(crate) fn gone_already(result: Result<(), EngineError>) -> Result<(), EngineError> {
    match result {
        Err(error) if error.is_not_found() => Ok(()),
        other => other,
    }
}

impl<R: Report> Work<'_, R> {
    /// Every network the services use, then every shared volume.
    pub(crate) async fn prepare(&self) -> Result<(), EngineError> {
        self.images().await?;
        let services = &self.target.desired.services;
        let classes: BTreeSet<ServiceClass> = services.keys().flat_map(|name| networks_of(name, services)).collect();
        for class in classes {
            self.network(class).await?;
        }
        for (name, service) in services {
            for volume in service.volumes.iter().filter(|volume| volume.shared) {
                self.volume(name, None, &volume.name).await?;
            }
        }
        Ok(())
    }

    /// The id of the class's network, found by key or made (under a lock) and recorded.
    pub(crate) async fn network(&self, class: ServiceClass) -> Result<String, EngineError> {
        let key = format!("container-network:{}", class.as_str());
        let desired = self.target.desired;
        let internal = class_is_internal(class, &desired.services, &desired.networks);
        let name = network_name(self.target.deployment_id, class.as_str());
        let _one_at_a_time = self.docker.network_lock.lock().await;
        let id = match self.find_network(&key).await? {
            Some(id) => id,
            None => {
                let request = NetworkCreateRequest {
                    name: name.clone(),
                    internal: Some(internal),
                    labels: Some(labels(self.target.deployment_id, &key)),
                    ..Default::default()
                };
                let created = self
                    .engine
                    .call("networks.create", &name, |docker| {
                        let request = request.clone();
                        async move { docker.create_network(request).await }
                    })
                    .await?;
                created.id
            }
        };
        let attributes = json!({"name": name, "class": class, "internal": internal, "host": self.engine.host()});
        self.report
            .record(Observed::new(&key, "container_network", &id, "ready", attributes))
            .await?;
        Ok(id)
    }

    async fn find_network(&self, key: &str) -> Result<Option<String>, EngineError> {
        let mut filters = owned_by(self.target.deployment_id);
        filters
            .entry("label".to_owned())
            .or_default()
            .push(format!("{LABEL_KEY}={key}"));
        let networks = self
            .engine
            .call("networks.list", key, |docker| {
                let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
                async move { docker.list_networks(Some(options)).await }
            })
            .await?;
        Ok(networks.into_iter().find_map(|network| network.id))
    }

    /// A named volume (made again is a no-op for the engine), recorded.
    pub(crate) async fn volume(&self, service: &str, index: Option<u32>, name: &str) -> Result<(), EngineError> {
        let key = volume_key(service, index, name);
        let volume_name = volume_name(self.target.deployment_id, service, index, name);
        let request = VolumeCreateRequest {
            name: Some(volume_name.clone()),
            labels: Some(labels(self.target.deployment_id, &key)),
            ..Default::default()
        };
        self.engine
            .call("volumes.create", &volume_name, |docker| {
                let request = request.clone();
                async move { docker.create_volume(request).await }
            })
            .await?;
        let attributes = json!({"service": service, "shared": index.is_none(), "host": self.engine.host()});
        self.report
            .record(Observed::new(
                &key,
                "container_volume",
                &volume_name,
                "ready",
                attributes,
            ))
            .await?;
        Ok(())
    }

    pub(crate) async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        remove_volume(self.engine, name).await
    }

    async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        remove_network(self.engine, id).await
    }

    /// Networks and shared volumes an update no longer needs.
    pub(crate) async fn prune(&self, keys: &[String]) -> Result<(), EngineError> {
        for key in keys {
            let Some(id) = self.target.recorded_id(key) else {
                continue;
            };
            match key.starts_with("container-network:") {
                true => self.remove_network(id).await?,
                false => self.remove_volume(id).await?,
            }
        }
        self.report.gone(keys).await?;
        Ok(())
    }

    /// Every container, network and volume labelled for the deployment, recorded or not.
    pub(crate) async fn delete_all(&self) -> Result<(), EngineError> {
        let found = labelled(self.engine, self.target.deployment_id).await?;
        let ids: Vec<String> = found
            .containers
            .into_iter()
            .filter_map(|container| container.id)
            .collect();
        let removals: Vec<_> = ids.iter().map(|id| self.remove_container(id)).collect();
        futures_util::stream::iter(removals)
            .buffer_unordered(PARALLEL_REMOVALS)
            .try_collect::<Vec<()>>()
            .await?;
        self.report.progress(&format!("removed {} containers", ids.len())).await;
        self.remove_all_payloads().await?;
        for id in found.networks.into_iter().filter_map(|network| network.id) {
            self.remove_network(&id).await?;
        }
        for volume in found.volumes {
            self.remove_volume(&volume.name).await?;
        }
        // Every key the deployment may have used, recorded or not, so that a lease taken by
        // an instance that was never recorded is given back too.
        let mut keys: BTreeSet<String> = self
            .target
            .recorded
            .iter()
            .filter(|resource| CONTAINER_KINDS.contains(&resource.kind.as_str()))
            .map(|resource| resource.key.clone())
            .collect();
        for (name, service) in &self.target.desired.services {
            keys.extend((0..service.instances).map(|index| container_key(name, index)));
        }
        let keys: Vec<String> = keys.into_iter().collect();
        if !keys.is_empty() {
            self.report.gone(&keys).await?;
        }
        Ok(())
    }

    /// Removes a container (stopping it first) with its anonymous volumes.
    pub(crate) async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        remove_container(self.engine, id).await
    }
}

/// Removes a container (stopping it first) with its anonymous volumes; one already gone is
/// not an error.
pub(crate) async fn remove_container(engine: &Engine, id: &str) -> Result<(), EngineError> {
    let removed = engine
        .call("containers.remove", id, |docker| async move {
            let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            docker.remove_container(id, Some(options)).await
        })
        .await;
    gone_already(removed)
}

pub(crate) async fn remove_volume(engine: &Engine, name: &str) -> Result<(), EngineError> {
    let removed = engine
        .call("volumes.remove", name, |docker| async move {
            let options = RemoveVolumeOptionsBuilder::default().force(true).build();
            docker.remove_volume(name, Some(options)).await
        })
        .await;
    gone_already(removed)
}

pub(crate) async fn remove_network(engine: &Engine, id: &str) -> Result<(), EngineError> {
    let removed = engine
        .call("networks.remove", id, |docker| async move {
            docker.remove_network(id).await
        })
        .await;
    gone_already(removed)
}
