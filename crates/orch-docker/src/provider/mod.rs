//! The provider: each step of the plan carried out on the deployment's container host.
//! Everything is found by label (`orch.deployment`, `orch.key`) or deterministic name before
//! it is made, and recorded the moment the engine gives its id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerSummary, Network, Volume};
use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder};
use orch_core::plan::Step;
use orch_core::provider::{Observed, Provider, Report, Target};
use orch_core::reconcile::Marked;
use serde_json::json;
use tokio::sync::Mutex;

use crate::client::Engine;
use crate::config::ContainerHosts;
use crate::error::EngineError;
use crate::spec::{LABEL_DEPLOYMENT, LABEL_KEY};

pub mod events;
mod health;
mod images;
mod instances;
mod orphans;
mod payload;
mod shared;

/// Containers on the configured hosts.
#[derive(Clone)]
pub struct Docker {
    hosts: Arc<ContainerHosts>,
    engines: Arc<Mutex<HashMap<String, Engine>>>,
    engine: Option<Engine>,
    /// Networks are made one at a time: the engine makes two networks of one name when
    /// asked at once.
    network_lock: Arc<Mutex<()>>,
    probe: reqwest::Client,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker").field("engine", &self.engine).finish()
    }
}

impl Docker {
    pub fn new(hosts: ContainerHosts) -> Self {
        let probe = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .expect("a plain HTTP client always builds");
        Self {
            hosts: Arc::new(hosts),
            engines: Arc::default(),
            engine: None,
            network_lock: Arc::default(),
            probe,
        }
    }

    /// The configured hosts.
    pub fn hosts(&self) -> &ContainerHosts {
        &self.hosts
    }

    /// The address at which containers on `host` reach the machine the engine runs on: the
    /// gateway of the engine's default bridge, which `host-gateway` (and so
    /// `host.docker.internal`) stands for. A listener bound there is reachable from the
    /// machine and its containers, not from the network beyond.
    pub async fn host_gateway(&self, host: &str) -> Result<std::net::IpAddr, EngineError> {
        let engine = self.in_region(host).await?;
        let bridge = engine
            .engine()?
            .call("networks.inspect", "bridge", |docker| async move {
                docker.inspect_network("bridge", None).await
            })
            .await?;
        let configs = bridge.ipam.and_then(|ipam| ipam.config).unwrap_or_default();
        let gateway = configs
            .iter()
            .find_map(|config| gateway_of(config.gateway.as_deref(), config.subnet.as_deref()));
        gateway.ok_or_else(|| EngineError::Refused {
            what: format!("container host '{host}'"),
            message: "its default bridge network has no IPv4 subnet".to_owned(),
        })
    }

    fn engine(&self) -> Result<&Engine, EngineError> {
        self.engine
            .as_ref()
            .ok_or_else(|| EngineError::UnknownHost("(none chosen)".to_owned()))
    }
}

/// A bridge's IPv4 gateway: the one the engine names, else (as recent engines say of the
/// default bridge) the subnet's first address, which the engine gives its bridge.
fn gateway_of(gateway: Option<&str>, subnet: Option<&str>) -> Option<std::net::IpAddr> {
    if let Some(address) = gateway.and_then(|text| text.parse::<std::net::Ipv4Addr>().ok()) {
        return Some(address.into());
    }
    let network = subnet?.parse::<ipnet::Ipv4Net>().ok()?.network();
    Some(std::net::Ipv4Addr::from(u32::from(network) + 1).into())
}

/// One step's work on one deployment.
pub(crate) struct Work<'a, R: Report> {
    pub engine: &'a Engine,
    pub target: Target<'a>,
    pub report: &'a R,
    pub docker: &'a Docker,
}

/// Label filters selecting everything of one deployment.
pub(crate) fn owned_by(deployment_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{LABEL_DEPLOYMENT}={deployment_id}")])])
}

/// Everything the engine holds labelled for one deployment.
pub(crate) struct Labelled {
    pub containers: Vec<ContainerSummary>,
    pub networks: Vec<Network>,
    pub volumes: Vec<Volume>,
}

pub(crate) async fn labelled(engine: &Engine, deployment_id: &str) -> Result<Labelled, EngineError> {
    labelled_with(engine, deployment_id, owned_by(deployment_id)).await
}

/// Everything the engine holds that matches the label `filters`; `what` names the listing
/// in errors.
pub(crate) async fn labelled_with(
    engine: &Engine,
    what: &str,
    filters: HashMap<String, Vec<String>>,
) -> Result<Labelled, EngineError> {
    let containers = engine
        .call("containers.list", what, |docker| {
            let options = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            async move { docker.list_containers(Some(options)).await }
        })
        .await?;
    let networks = engine
        .call("networks.list", what, |docker| {
            let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
            async move { docker.list_networks(Some(options)).await }
        })
        .await?;
    let volumes = engine
        .call("volumes.list", what, |docker| {
            let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
            async move { docker.list_volumes(Some(options)).await }
        })
        .await?;
    Ok(Labelled {
        containers,
        networks,
        volumes: volumes.volumes.unwrap_or_default(),
    })
}

impl Provider for Docker {
    type Error = EngineError;

    async fn in_region(&self, host: &str) -> Result<Self, EngineError> {
        let settings = self
            .hosts
            .get(host)
            .ok_or_else(|| EngineError::UnknownHost(host.to_owned()))?;
        let mut engines = self.engines.lock().await;
        let engine = match engines.get(host) {
            Some(engine) => engine.clone(),
            None => {
                let engine = Engine::connect(Arc::new(settings.clone())).await?;
                engines.insert(host.to_owned(), engine.clone());
                engine
            }
        };
        Ok(Self {
            engine: Some(engine),
            ..self.clone()
        })
    }

    async fn carry_out(&self, step: &Step, target: Target<'_>, report: &impl Report) -> Result<(), EngineError> {
        let work = Work {
            engine: self.engine()?,
            target,
            report,
            docker: self,
        };
        match step {
            Step::Prepare => work.prepare().await,
            Step::Create(keys) => work.create(keys).await,
            Step::Wait(keys) => work.wait(keys).await,
            Step::Replace(keys) => work.replace(keys).await,
            Step::Delete(keys) => work.delete(keys).await,
            Step::Prune(keys) => work.prune(keys).await,
            Step::DeleteAll => work.delete_all().await,
            Step::Attach(_) | Step::Resize(_) | Step::Rebuild(_) | Step::Start(_) | Step::Evict(_) => Err(
                EngineError::Unsupported("attach volumes, resize, rebuild, start or evict in place"),
            ),
        }
    }

    async fn observe(&self, deployment_id: &str) -> Result<Vec<Observed>, EngineError> {
        let Labelled {
            containers,
            networks,
            volumes,
        } = labelled(self.engine()?, deployment_id).await?;
        let key_of = |labels: Option<&HashMap<String, String>>| {
            labels
                .and_then(|labels| labels.get(LABEL_KEY))
                .cloned()
                .unwrap_or_default()
        };
        let mut observed: Vec<Observed> = containers
            .iter()
            .map(|container| {
                let state = container.state.map(|state| state.to_string()).unwrap_or_default();
                let id = container.id.clone().unwrap_or_default();
                Observed::new(&key_of(container.labels.as_ref()), "container", &id, &state, json!({}))
            })
            .collect();
        observed.extend(networks.iter().map(|network| {
            let id = network.id.clone().unwrap_or_default();
            Observed::new(
                &key_of(network.labels.as_ref()),
                "container_network",
                &id,
                "ready",
                json!({}),
            )
        }));
        observed.extend(volumes.iter().map(|volume| {
            Observed::new(
                &key_of(Some(&volume.labels)),
                "container_volume",
                &volume.name,
                "ready",
                json!({}),
            )
        }));
        Ok(observed)
    }

    async fn marked(&self) -> Result<Vec<Marked>, EngineError> {
        orphans::marked(self.engine()?).await
    }

    async fn remove_orphans(&self, orphans: &[Marked]) -> Result<(), EngineError> {
        orphans::remove(self.engine()?, orphans).await
    }
}

#[cfg(test)]
mod tests {
    use super::gateway_of;

    #[test]
    fn a_bridge_gateway_is_the_named_one_else_the_subnets_first_address() {
        let gateway = |gateway, subnet| gateway_of(gateway, subnet).map(|ip| ip.to_string());
        assert_eq!(
            gateway(Some("10.9.0.5"), Some("10.9.0.0/16")).as_deref(),
            Some("10.9.0.5")
        );
        assert_eq!(gateway(None, Some("172.17.0.0/16")).as_deref(), Some("172.17.0.1"));
        assert_eq!(gateway(None, Some("fd00::/64")), None, "IPv4 only");
        assert_eq!(gateway(None, None), None);
    }
}
