//! What the engine is asked to make for one instance: the container's configuration with
//! orch's hardened defaults, its labels, and its names. Pure, so it is tested without an
//! engine.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use orch_core::plan::instance_name;
use orch_core::template::render::{render, InstanceContext};
use orch_core::template::services::HOST_ALIAS;
use orch_core::template::{Probe, Service};

pub(crate) const LABEL_DEPLOYMENT: &str = "orch.deployment";
pub(crate) const LABEL_KEY: &str = "orch.key";
pub(crate) const LABEL_SPEC_HASH: &str = "orch.spec_hash";

const SECOND_NS: i64 = 1_000_000_000;

/// The labels every resource orch makes carries: whose it is and under which key.
pub(crate) fn labels(deployment_id: &str, key: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_DEPLOYMENT.to_owned(), deployment_id.to_owned()),
        (LABEL_KEY.to_owned(), key.to_owned()),
    ])
}

/// The network of a class: `<deployment>-<class>`.
pub(crate) fn network_name(deployment_id: &str, class: &str) -> String {
    format!("{deployment_id}-{class}")
}

/// A named volume: per instance `<deployment>-<service>-<index>-<name>`, shared
/// `<deployment>-<service>-<name>`.
pub(crate) fn volume_name(deployment_id: &str, service: &str, index: Option<u32>, name: &str) -> String {
    match index {
        Some(index) => format!("{}-{name}", instance_name(deployment_id, service, index)),
        None => format!("{deployment_id}-{service}-{name}"),
    }
}

pub(crate) fn volume_key(service: &str, index: Option<u32>, name: &str) -> String {
    match index {
        Some(index) => format!("container-volume:{service}:{index}:{name}"),
        None => format!("container-volume:{service}:{name}"),
    }
}

pub(crate) fn aliases(service: &str, index: u32) -> Vec<String> {
    vec![service.to_owned(), format!("{service}-{index}")]
}

/// One instance to create.
pub(crate) struct Instance<'a> {
    pub deployment_id: &'a str,
    pub key: &'a str,
    pub service_name: &'a str,
    pub index: u32,
    pub service: &'a Service,
    /// Every service of the deployment, for `{{orch.peers:SERVICE:PORT}}`.
    pub others: &'a BTreeMap<String, Service>,
    pub spec_hash: &'a str,
    /// Host port by port name, for the published ports.
    pub host_ports: &'a BTreeMap<String, u16>,
    pub address: &'a str,
    /// The network the container is created on (the others are joined before it starts).
    pub first_network: &'a str,
    /// The bind mounts of its files and secrets.
    pub payload: &'a [Mount],
}

impl Instance<'_> {
    pub fn name(&self) -> String {
        instance_name(self.deployment_id, self.service_name, self.index)
    }

    /// The DNS names the instance answers to on its networks: the service's (every
    /// instance) and its own `<service>-<index>`, so that peers (a Kafka quorum) find each other.
    pub fn aliases(&self) -> Vec<String> {
        aliases(self.service_name, self.index)
    }

    /// The container's configuration: the hardened defaults (no new privileges, every
    /// capability dropped but those asked for, restart unless stopped, rotated logs) and
    /// what the service asks for.
    pub fn body(&self) -> ContainerCreateBody {
        let service = self.service;
        let mut labels = labels(self.deployment_id, self.key);
        labels.insert(LABEL_SPEC_HASH.to_owned(), self.spec_hash.to_owned());
        let exposed: Vec<String> = service
            .ports
            .iter()
            .map(|port| format!("{}/{}", port.container, port.protocol.as_str()))
            .collect();
        let context = self.context();
        let render = |text: &String| render(text, &context);
        ContainerCreateBody {
            image: Some(service.image.clone()),
            cmd: (!service.command.is_empty()).then(|| service.command.iter().map(render).collect()),
            env: Some(
                service
                    .env
                    .iter()
                    .map(|(name, value)| format!("{name}={}", render(value)))
                    .collect(),
            ),
            labels: Some(labels),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            healthcheck: self.engine_healthcheck(),
            host_config: Some(self.host_config()),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.first_network.to_owned(),
                    EndpointSettings {
                        aliases: Some(self.aliases()),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }

    fn host_config(&self) -> HostConfig {
        let service = self.service;
        let port_bindings = service
            .published_ports()
            .filter_map(|port| {
                let host_port = self.host_ports.get(&port.name)?;
                let binding = PortBinding {
                    host_ip: Some(self.address.to_owned()),
                    host_port: Some(host_port.to_string()),
                };
                Some((
                    format!("{}/{}", port.container, port.protocol.as_str()),
                    Some(vec![binding]),
                ))
            })
            .collect::<HashMap<_, _>>();
        let mounts = service
            .volumes
            .iter()
            .map(|volume| Mount {
                target: Some(volume.target.clone()),
                source: Some(volume_name(
                    self.deployment_id,
                    self.service_name,
                    (!volume.shared).then_some(self.index),
                    &volume.name,
                )),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            })
            .chain(self.payload.iter().cloned())
            .collect::<Vec<_>>();
        let tmpfs: HashMap<String, String> = service
            .tmpfs
            .iter()
            .map(|path| (path.clone(), "rw,noexec,nosuid,size=64m".to_owned()))
            .collect();
        HostConfig {
            memory: service.resources.memory.and_then(|bytes| i64::try_from(bytes).ok()),
            nano_cpus: service.resources.cpus.map(|cpus| (cpus * 1e9) as i64),
            pids_limit: service.resources.pids.map(i64::from),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
            readonly_rootfs: Some(service.read_only),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: (!service.cap_add.is_empty()).then(|| service.cap_add.clone()),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            extra_hosts: Some(vec![HOST_ALIAS.to_owned()]),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_owned()),
                config: Some(HashMap::from([
                    ("max-size".to_owned(), "10m".to_owned()),
                    ("max-file".to_owned(), "3".to_owned()),
                ])),
            }),
            ..Default::default()
        }
    }

    /// What `{{orch.…}}` tokens are filled in with for this instance.
    fn context(&self) -> InstanceContext<'_> {
        InstanceContext::new(self.service_name, self.index, self.others)
    }

    /// An exec probe runs in the engine; HTTP and TCP probes are orch's own.
    fn engine_healthcheck(&self) -> Option<HealthConfig> {
        let check = self.service.healthcheck.as_ref()?;
        let Probe::Exec(command) = &check.probe else {
            return None;
        };
        let context = self.context();
        let mut test = vec!["CMD".to_owned()];
        test.extend(command.iter().map(|word| render(word, &context)));
        Some(HealthConfig {
            test: Some(test),
            interval: Some(i64::from(check.interval_s) * SECOND_NS),
            timeout: Some(i64::from(check.timeout_s) * SECOND_NS),
            retries: Some(i64::from(check.retries)),
            start_period: Some(0),
            start_interval: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::Template;

    const STACK: &str = r#"
name: s
services:
  web:
    image: local/busybox:latest
    command: ["/bin/httpd", "-f"]
    class: gateway
    env: {MODE: edge, PORT: 8080, PEERS: "{{orch.peers:8080}}"}
    ports: [{container: 8080, name: http, publish: true}, {container: 9000, name: admin}]
    volumes: [{name: data, target: /data}, {name: cache, target: /cache, shared: true}]
    healthcheck: {exec: ["/bin/true"], interval_s: 1}
    resources: {cpus: 0.5, memory: 64MiB, pids: 100}
    read_only: true
    cap_add: [NET_BIND_SERVICE]
    tmpfs: [/tmp]
"#;

    #[test]
    fn an_instance_is_hardened_and_shaped_as_its_service_asks() {
        let template = Template::parse_text(STACK).unwrap();
        let ports = BTreeMap::from([("http".to_owned(), 20_001)]);
        let instance = Instance {
            deployment_id: "d",
            key: "container:web:1",
            service_name: "web",
            index: 1,
            service: &template.services["web"],
            others: &template.services,
            spec_hash: "abc",
            host_ports: &ports,
            address: "0.0.0.0",
            first_network: "d-gateway",
            payload: &[],
        };
        let body = instance.body();
        assert_eq!(instance.name(), "d-web-1");
        let host = body.host_config.unwrap();
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add, Some(vec!["NET_BIND_SERVICE".to_owned()]));
        assert_eq!(host.security_opt, Some(vec!["no-new-privileges:true".to_owned()]));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(
            host.extra_hosts,
            Some(vec!["host.docker.internal:host-gateway".to_owned()])
        );
        assert_eq!(
            (host.memory, host.nano_cpus, host.pids_limit),
            (Some(64 << 20), Some(500_000_000), Some(100))
        );
        let bindings = host.port_bindings.unwrap();
        assert_eq!(bindings.len(), 1, "only published ports are bound");
        assert_eq!(
            bindings["8080/tcp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("20001")
        );
        let sources: Vec<_> = host.mounts.unwrap().into_iter().map(|m| m.source.unwrap()).collect();
        assert_eq!(sources, ["d-web-1-data", "d-web-cache"]);
        assert_eq!(body.env.unwrap(), ["MODE=edge", "PEERS=web-0:8080", "PORT=8080"]);
        assert_eq!(body.labels.unwrap()[LABEL_SPEC_HASH], "abc");
        assert_eq!(body.healthcheck.unwrap().interval, Some(SECOND_NS));
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["d-gateway"].aliases,
            Some(vec!["web".to_owned(), "web-1".to_owned()])
        );
    }
}
