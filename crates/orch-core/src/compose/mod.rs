//! A template's services as a Docker Compose file (the Compose specification, as
//! `docker compose up --wait` reads it): the same services and instances, networks per class
//! with `internal`, health checks, `depends_on` with `condition: service_healthy`, resource
//! limits and the hardened defaults; never a static IP. Pure: the CLI writes it as YAML.
//!
//! What Compose cannot carry is said, not dropped silently: HTTP and TCP probes are orch's
//! own and become a `wget` or `nc` check inside the container (which needs the tool there),
//! and published ports get host ports chosen by the engine (Compose has no lease).

pub mod import;

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::template::render::{render, InstanceContext};
use crate::template::services::{class_is_internal, networks_of};
use crate::template::{Condition, Probe, Service, Template};

/// The Compose document, what it could not carry over as orch runs it, and the files it
/// reads beside it (the services' configuration files, rendered for instance 0).
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeExport {
    pub document: Value,
    pub notes: Vec<String>,
    /// Paths relative to the Compose file, and their content.
    pub files: Vec<(String, String)>,
}

/// Exports `template` (its parameters applied) as Compose project `project`.
pub fn export(template: &Template, project: &str) -> ComposeExport {
    let mut notes = Vec::new();
    let mut services = Map::new();
    let mut volumes = Map::new();
    let mut classes = BTreeSet::new();
    for (name, service) in &template.services {
        let joined = networks_of(name, &template.services);
        classes.extend(joined.iter().copied());
        for volume in &service.volumes {
            volumes.insert(volume.name.clone(), json!({}));
        }
        if service.volumes.iter().any(|volume| !volume.shared) && service.instances > 1 {
            notes.push(format!(
                "{name}: per-instance volumes become one volume shared by the {} replicas",
                service.instances
            ));
        }
        let networks: Vec<&str> = joined.iter().map(|class| class.as_str()).collect();
        let entry = service_entry(name, service, &template.services, &networks, &mut notes);
        services.insert(name.clone(), entry);
    }
    let networks: Map<String, Value> = classes
        .into_iter()
        .map(|class| {
            let internal = class_is_internal(class, &template.services, &template.networks);
            (class.as_str().to_owned(), json!({"internal": internal}))
        })
        .collect();
    let mut document = json!({"name": project, "services": services, "networks": networks});
    if !volumes.is_empty() {
        document["volumes"] = Value::Object(volumes);
    }
    let files = config_files(template);
    if !files.is_empty() {
        // Compose mounts a config into a read-only service only from a file.
        let configs: Map<String, Value> = (files.iter())
            .map(|(name, _)| (name.clone(), json!({"file": format!("./configs/{name}")})))
            .collect();
        document["configs"] = Value::Object(configs);
    }
    let files = (files.into_iter())
        .map(|(name, content)| (format!("configs/{name}"), content))
        .collect();
    if !template.secrets.is_empty() {
        let secrets: Map<String, Value> = (template.secrets.keys())
            .map(|name| (name.clone(), json!({"file": format!("./secrets/{name}")})))
            .collect();
        notes.push(format!(
            "secrets are read from ./secrets/<name> beside the file ({}), as they are (Compose without swarm sets no owner or mode); orch never writes their values out",
            template.secrets.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        document["secrets"] = Value::Object(secrets);
    }
    ComposeExport { document, notes, files }
}

/// The configuration files by config name (`<service>-file-<index>`), rendered for
/// instance 0.
fn config_files(template: &Template) -> Vec<(String, String)> {
    let mut configs = Vec::new();
    for (name, service) in &template.services {
        let context = InstanceContext::new(name, 0, &template.services);
        for (index, file) in service.files.iter().enumerate() {
            configs.push((config_name(name, index), render(&file.content, &context)));
        }
    }
    configs
}

fn config_name(service: &str, index: usize) -> String {
    format!("{service}-file-{index}")
}

fn payload_mounts(name: &str, service: &Service) -> [(&'static str, Option<Value>); 2] {
    let configs: Vec<Value> = (service.files.iter().enumerate())
        .map(|(index, file)| json!({"source": config_name(name, index), "target": file.path, "mode": file.mode}))
        .collect();
    // Without swarm, Compose mounts a secret's file as it is: no uid, gid or mode.
    let secrets: Vec<Value> = (service.secrets.iter())
        .map(|mount| json!({"source": mount.name, "target": mount.name}))
        .collect();
    [
        ("configs", (!configs.is_empty()).then_some(Value::Array(configs))),
        ("secrets", (!secrets.is_empty()).then_some(Value::Array(secrets))),
    ]
}

fn service_entry(
    name: &str,
    service: &Service,
    all: &std::collections::BTreeMap<String, Service>,
    networks: &[&str],
    notes: &mut Vec<String>,
) -> Value {
    let mut entry = json!({
        "image": service.image,
        "networks": networks,
        "restart": "unless-stopped",
        "read_only": service.read_only,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "extra_hosts": [crate::template::services::HOST_ALIAS],
        "logging": {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}},
        "deploy": {"replicas": service.instances, "resources": {"limits": limits(service)}},
    });
    // Replicas share one environment: per-instance values are those of instance 0.
    let context = InstanceContext::new(name, 0, all);
    let per_instance = service
        .env
        .values()
        .chain(&service.command)
        .any(|text| render(text, &context) != *text);
    if per_instance {
        notes.push(format!(
            "{name}: per-instance values ({{{{orch.…}}}}) are those of instance 0 for every replica"
        ));
    }
    let command: Vec<String> = service.command.iter().map(|word| render(word, &context)).collect();
    let environment: std::collections::BTreeMap<&String, String> = service
        .env
        .iter()
        .map(|(key, value)| (key, render(value, &context)))
        .collect();
    let fields = [
        ("command", (!command.is_empty()).then(|| json!(command))),
        ("environment", (!environment.is_empty()).then(|| json!(environment))),
        ("cap_add", (!service.cap_add.is_empty()).then(|| json!(service.cap_add))),
        ("tmpfs", (!service.tmpfs.is_empty()).then(|| json!(service.tmpfs))),
        ("ports", ports(service)),
        ("volumes", volume_mounts(service)),
        (
            "healthcheck",
            service
                .healthcheck
                .as_ref()
                .map(|check| healthcheck(name, check, notes)),
        ),
        ("depends_on", dependencies(service)),
    ];
    for (key, value) in fields.into_iter().chain(payload_mounts(name, service)) {
        if let Some(value) = value {
            entry[key] = value;
        }
    }
    entry
}

fn limits(service: &Service) -> Value {
    let mut limits = Map::new();
    if let Some(cpus) = service.resources.cpus {
        limits.insert("cpus".into(), json!(cpus.to_string()));
    }
    if let Some(memory) = service.resources.memory {
        limits.insert("memory".into(), json!(format!("{memory}b")));
    }
    if let Some(pids) = service.resources.pids {
        limits.insert("pids".into(), json!(pids));
    }
    Value::Object(limits)
}

/// Published ports with a host port the engine chooses; the others are only exposed.
fn ports(service: &Service) -> Option<Value> {
    let ports: Vec<Value> = service
        .published_ports()
        .map(|port| json!({"target": port.container, "protocol": port.protocol.as_str()}))
        .collect();
    (!ports.is_empty()).then_some(Value::Array(ports))
}

fn volume_mounts(service: &Service) -> Option<Value> {
    let mounts: Vec<Value> = service
        .volumes
        .iter()
        .map(|volume| json!({"type": "volume", "source": volume.name, "target": volume.target}))
        .collect();
    (!mounts.is_empty()).then_some(Value::Array(mounts))
}

fn healthcheck(name: &str, check: &crate::template::HealthCheck, notes: &mut Vec<String>) -> Value {
    let test = match &check.probe {
        Probe::Exec(command) => [vec!["CMD".to_owned()], command.clone()].concat(),
        Probe::Http { port, path } => {
            notes.push(format!("{name}: the HTTP probe runs as wget inside the container"));
            let url = format!("http://127.0.0.1:{port}{path}");
            ["CMD", "wget", "-q", "-O", "/dev/null", &url]
                .map(str::to_owned)
                .to_vec()
        }
        Probe::Tcp { port } => {
            notes.push(format!("{name}: the TCP probe runs as nc inside the container"));
            ["CMD", "nc", "-z", "127.0.0.1", &port.to_string()]
                .map(str::to_owned)
                .to_vec()
        }
    };
    json!({
        "test": test,
        "interval": format!("{}s", check.interval_s),
        "timeout": format!("{}s", check.timeout_s),
        "retries": check.retries,
        "start_period": format!("{}s", check.deadline_s),
    })
}

fn dependencies(service: &Service) -> Option<Value> {
    let dependencies: Map<String, Value> = service
        .depends_on
        .iter()
        .map(|dependency| {
            let condition = match dependency.condition {
                Condition::Started => "service_started",
                Condition::Healthy => "service_healthy",
            };
            (dependency.service.clone(), json!({"condition": condition}))
        })
        .collect();
    (!dependencies.is_empty()).then_some(Value::Object(dependencies))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_TIER: &str = include_str!("../../../../examples/two-tier-services.yaml");

    #[test]
    fn the_two_tier_example_exports_as_compose_runs_it() {
        let template = Template::parse_text(TWO_TIER).unwrap();
        let ComposeExport { document, notes, files } = export(&template, "tt");
        assert!(files.is_empty());
        let web = &document["services"]["web"];
        assert_eq!(web["deploy"]["replicas"], 2);
        assert_eq!(web["depends_on"]["cache"]["condition"], "service_healthy");
        assert_eq!(web["networks"], json!(["data", "gateway"]));
        assert_eq!(web["ports"], json!([{"target": 8080, "protocol": "tcp"}]));
        assert_eq!(web["deploy"]["resources"]["limits"]["memory"], "67108864b");
        assert_eq!(web["cap_drop"], json!(["ALL"]));
        assert_eq!(web["extra_hosts"], json!(["host.docker.internal:host-gateway"]));
        assert_eq!(document["networks"]["data"]["internal"], true);
        assert_eq!(document["networks"]["gateway"]["internal"], false);
        assert_eq!(document["services"]["cache"]["healthcheck"]["test"][0], "CMD");
        assert!(document.to_string().find("ipv4_address").is_none(), "no static IPs");
        assert_eq!(notes, ["web: the HTTP probe runs as wget inside the container"]);
    }

    #[test]
    fn files_become_configs_beside_the_file_and_secrets_stay_unwritten() {
        let text = "name: s\nservices:\n  am: {catalog: alertmanager, instances: 2}\n  cache: {catalog: redis}\n  prom:\n    catalog: prometheus\n    files: [{path: /etc/prometheus/prometheus.yml, content: 'targets: [{{orch.peers:am:9093}}]'}]\n";
        let template = Template::parse_text(text).unwrap();
        let ComposeExport { document, notes, files } = export(&template, "s");
        assert_eq!(document["configs"]["prom-file-0"]["file"], "./configs/prom-file-0");
        assert_eq!(
            document["services"]["prom"]["configs"][0]["target"],
            "/etc/prometheus/prometheus.yml"
        );
        let prom = files.iter().find(|(path, _)| path == "configs/prom-file-0").unwrap();
        assert_eq!(prom.1, "targets: [am-0:9093,am-1:9093]");
        assert_eq!(
            document["secrets"]["redis_password"]["file"],
            "./secrets/redis_password"
        );
        assert_eq!(
            document["services"]["cache"]["secrets"],
            json!([{"source": "redis_password", "target": "redis_password"}])
        );
        assert!(notes.iter().any(|note| note.contains("./secrets/")), "{notes:?}");
    }
}
