//! The instances: made (found by name first, adopted when their spec is unchanged), given
//! leased host ports, joined to their networks and started; replaced one at a time; removed
//! with their own volumes and leases.

use std::collections::BTreeMap;

use bollard::models::{ContainerInspectResponse, EndpointSettings, NetworkConnectRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptionsBuilder, ListContainersOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};
use orch_core::plan::{instance_name, parse_container_key, service_spec_hash};
use orch_core::provider::{Observed, PortRequest, Report};
use orch_core::template::services::networks_of;
use orch_core::template::{Service, ServiceClass};
use serde_json::json;

use super::Work;
use crate::error::EngineError;
use crate::spec::{aliases, Instance, LABEL_DEPLOYMENT, LABEL_SPEC_HASH};

/// Instances made at once.
const PARALLEL_CREATES: usize = 8;
/// How often a start is tried again with other ports, when something outside orch holds one.
const PORT_ATTEMPTS: usize = 5;

/// One instance of the template, by key.
pub(crate) struct Member<'a> {
    pub key: &'a str,
    pub service_name: &'a str,
    pub index: u32,
    pub service: &'a Service,
}

impl<R: Report> Work<'_, R> {
    pub(crate) fn member<'k>(&'k self, key: &'k str) -> Result<Member<'k>, EngineError> {
        let (service_name, index) =
            parse_container_key(key).ok_or(EngineError::Unsupported("handle a non-container key"))?;
        let service = self
            .target
            .desired
            .services
            .get(service_name)
            .ok_or_else(|| EngineError::NotFound {
                what: format!("service '{service_name}' in the template"),
            })?;
        Ok(Member {
            key,
            service_name,
            index,
            service,
        })
    }

    pub(crate) async fn create(&self, keys: &[String]) -> Result<(), EngineError> {
        // Ports bound on the host by containers orch does not know of (another orch, a
        // compose project): never leased to these instances. One look for the whole batch.
        let held = self.ports_bound_elsewhere().await?;
        // The futures are made first: a closure inside the stream would not be `Send`.
        let work: Vec<_> = keys.iter().map(|key| self.create_one(key, &held)).collect();
        futures_util::stream::iter(work)
            .buffer_unordered(PARALLEL_CREATES)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Host ports published by containers that are not this deployment's.
    async fn ports_bound_elsewhere(&self) -> Result<Vec<u16>, EngineError> {
        let deployment = self.target.deployment_id;
        let containers = self
            .engine
            .call("containers.list", "published ports", |docker| async move {
                let options = ListContainersOptionsBuilder::default().all(true).build();
                docker.list_containers(Some(options)).await
            })
            .await?;
        let ours = |labels: Option<&std::collections::HashMap<String, String>>| {
            labels
                .and_then(|labels| labels.get(LABEL_DEPLOYMENT))
                .is_some_and(|id| id == deployment)
        };
        Ok(containers
            .iter()
            .filter(|container| !ours(container.labels.as_ref()))
            .flat_map(|container| container.ports.iter().flatten())
            .filter_map(|port| port.public_port)
            .collect())
    }

    /// Makes one instance exist and run, adopting one an earlier attempt made; `held` are
    /// host ports that are not free.
    pub(crate) async fn create_one(&self, key: &str, held: &[u16]) -> Result<(), EngineError> {
        let member = self.member(key)?;
        let spec_hash = service_spec_hash(self.target.desired, member.service_name);
        let name = instance_name(self.target.deployment_id, member.service_name, member.index);
        if let Some(existing) = self.inspect(&name).await? {
            let labels = existing.config.as_ref().and_then(|config| config.labels.as_ref());
            let same = labels.and_then(|labels| labels.get(LABEL_SPEC_HASH)) == Some(&spec_hash);
            let id = existing.id.clone().unwrap_or_default();
            if same {
                return self.adopt(&member, &id, &spec_hash).await;
            }
            self.remove_container(&id).await?;
        }
        let networks = self.networks_of(member.service_name).await?;
        for volume in member.service.volumes.iter().filter(|volume| !volume.shared) {
            self.volume(member.service_name, Some(member.index), &volume.name)
                .await?;
        }
        let mut avoid = held.to_vec();
        for _ in 0..PORT_ATTEMPTS {
            let host_ports = self.lease_ports(&member, &avoid).await?;
            let id = self
                .create_container(&member, &spec_hash, &host_ports, &networks)
                .await?;
            match self.start(&id).await {
                Ok(()) => {
                    return self
                        .record_instance(&member, &id, &spec_hash, &host_ports, "running")
                        .await
                }
                Err(error) if error.is_port_taken() => {
                    tracing::warn!(key, %error, "a leased host port is held outside orch; leasing others");
                    self.remove_container(&id).await?;
                    avoid.extend(host_ports.values().copied());
                }
                Err(error) => return Err(error),
            }
        }
        Err(EngineError::Ports {
            key: key.to_owned(),
            message: format!("{PORT_ATTEMPTS} leased ports in a row were held by something outside orch"),
        })
    }

    /// An instance an earlier attempt made with the same spec: started if need be, recorded.
    async fn adopt(&self, member: &Member<'_>, id: &str, spec_hash: &str) -> Result<(), EngineError> {
        let host_ports = self.lease_ports(member, &[]).await?;
        self.start(id).await?;
        self.record_instance(member, id, spec_hash, &host_ports, "running")
            .await
    }

    /// The networks an instance joins, by class, made if need be (a scale-out after the
    /// deploy, or a retry after a crash in `Prepare`).
    async fn networks_of(&self, service_name: &str) -> Result<Vec<(ServiceClass, String)>, EngineError> {
        let mut ids = Vec::new();
        for class in networks_of(service_name, &self.target.desired.services) {
            let key = format!("container-network:{}", class.as_str());
            let id = match self.target.recorded_id(&key).filter(|id| !id.is_empty()) {
                Some(id) => id.to_owned(),
                None => self.network(class).await?,
            };
            ids.push((class, id));
        }
        // The service's own class first: it is the network the container is created on.
        let own = self.target.desired.services[service_name].class;
        ids.sort_by_key(|(class, _)| *class != own);
        Ok(ids)
    }

    pub(crate) async fn lease_ports(
        &self,
        member: &Member<'_>,
        avoid: &[u16],
    ) -> Result<BTreeMap<String, u16>, EngineError> {
        let settings = &self.engine.settings;
        let mut ports = BTreeMap::new();
        for port in member.service.published_ports() {
            let request = PortRequest {
                host: &settings.name,
                address: &settings.address,
                protocol: port.protocol.as_str(),
                key: member.key,
                name: &port.name,
                range: settings.port_range,
                avoid,
            };
            let host_port = self
                .report
                .lease_port(request)
                .await
                .map_err(|error| EngineError::Ports {
                    key: member.key.to_owned(),
                    message: error.message,
                })?;
            ports.insert(port.name.clone(), host_port);
        }
        Ok(ports)
    }

    async fn create_container(
        &self,
        member: &Member<'_>,
        spec_hash: &str,
        host_ports: &BTreeMap<String, u16>,
        networks: &[(ServiceClass, String)],
    ) -> Result<String, EngineError> {
        let payload = self.payload(member).await?;
        let instance = Instance {
            deployment_id: self.target.deployment_id,
            key: member.key,
            service_name: member.service_name,
            index: member.index,
            service: member.service,
            others: &self.target.desired.services,
            spec_hash,
            host_ports,
            address: &self.engine.settings.address,
            first_network: &networks[0].1,
            payload: &payload,
        };
        let name = instance.name();
        let body = instance.body();
        let create = || {
            self.engine.call("containers.create", &name, |docker| {
                let options = CreateContainerOptionsBuilder::default().name(&name).build();
                let body = body.clone();
                async move { docker.create_container(Some(options), body).await }
            })
        };
        let created = match create().await {
            // The image went since Prepare, or this is a scale: it is pulled, once.
            Err(error) if error.is_not_found() => {
                super::images::ensure_image(self.engine, &member.service.image).await?;
                create().await
            }
            other => other,
        };
        let id = match created {
            Ok(created) => created.id,
            Err(error @ EngineError::Conflict { .. }) => match self.inspect(&name).await? {
                // The first attempt's answer was lost: the container is there.
                Some(existing) => existing.id.unwrap_or_default(),
                None => return Err(error),
            },
            Err(error) => return Err(error),
        };
        self.record_instance(member, &id, spec_hash, host_ports, "created")
            .await?;
        for (_, network) in &networks[1..] {
            self.connect(&id, network, aliases(member.service_name, member.index))
                .await?;
        }
        Ok(id)
    }

    async fn connect(&self, id: &str, network: &str, aliases: Vec<String>) -> Result<(), EngineError> {
        let request = NetworkConnectRequest {
            container: id.to_owned(),
            endpoint_config: Some(EndpointSettings {
                aliases: Some(aliases),
                ..Default::default()
            }),
        };
        let joined = self
            .engine
            .call("networks.connect", id, |docker| {
                let request = request.clone();
                async move { docker.connect_network(network, request).await }
            })
            .await;
        match joined {
            // Joined already, by an earlier attempt.
            Err(EngineError::Refused { message, .. } | EngineError::Conflict { message, .. })
                if message.contains("already exists") =>
            {
                Ok(())
            }
            other => other,
        }
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        let started = self
            .engine
            .call("containers.start", id, |docker| async move {
                docker.start_container(id, None).await
            })
            .await;
        match started {
            Err(EngineError::Unchanged { .. }) => Ok(()),
            other => other,
        }
    }

    pub(crate) async fn inspect(&self, name: &str) -> Result<Option<ContainerInspectResponse>, EngineError> {
        let found = self
            .engine
            .call("containers.inspect", name, |docker| async move {
                let options = InspectContainerOptionsBuilder::default().build();
                docker.inspect_container(name, Some(options)).await
            })
            .await;
        match found {
            Ok(found) => Ok(Some(found)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub(crate) async fn record_instance(
        &self,
        member: &Member<'_>,
        id: &str,
        spec_hash: &str,
        host_ports: &BTreeMap<String, u16>,
        health: &str,
    ) -> Result<(), EngineError> {
        let attributes = json!({
            "service": member.service_name,
            "index": member.index,
            "name": instance_name(self.target.deployment_id, member.service_name, member.index),
            "host": self.engine.host(),
            "host_ports": host_ports,
            "spec_hash": spec_hash,
            "image": member.service.image,
        });
        self.report
            .record(Observed::new(member.key, "container", id, health, attributes))
            .await?;
        Ok(())
    }

    /// Each instance replaced in turn, and ready before the next one goes: the old
    /// container goes, a new one with the desired spec takes its name, volumes and ports.
    pub(crate) async fn replace(&self, keys: &[String]) -> Result<(), EngineError> {
        for key in keys {
            let member = self.member(key)?;
            let name = instance_name(self.target.deployment_id, member.service_name, member.index);
            self.remove_container(&name).await?;
            self.create_one(key, &[]).await?;
            self.wait_one(key).await?;
        }
        Ok(())
    }

    /// Removes the instances with their own volumes; their leases go back.
    pub(crate) async fn delete(&self, keys: &[String]) -> Result<(), EngineError> {
        let mut gone = Vec::new();
        for key in keys {
            let Some((service, index)) = parse_container_key(key) else {
                continue;
            };
            self.remove_container(&instance_name(self.target.deployment_id, service, index))
                .await?;
            self.remove_payload(key, service, index).await?;
            let prefix = format!("container-volume:{service}:{index}:");
            for volume in self
                .target
                .recorded
                .iter()
                .filter(|resource| resource.key.starts_with(&prefix))
            {
                self.remove_volume(&volume.id).await?;
                gone.push(volume.key.clone());
            }
            gone.push(key.clone());
        }
        self.report.gone(&gone).await?;
        Ok(())
    }
}
