//! The containerised half of a template: `services:`, each a set of identical instances of
//! one image on a container host, and `networks:`, per-class network settings.
//!
//! Every field is read strictly and every problem reported with its JSON pointer, like the
//! server groups. The typed structs serialize back into the same shape they are read from.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::payload::{read_files, read_secret_mounts, SecretMount, ServiceFile};
pub(crate) use super::topology::{check_instance_bounds, check_services};
pub use super::topology::{class_is_internal, networks_of, start_order, wired_to};
use super::{read_key, read_named};
use crate::problem::{child, Problems};
use crate::reader::{self, Object};

/// Most instances of one service.
pub const MAX_INSTANCES: u32 = 500;
/// Most instances over every service of a deployment.
pub const MAX_TOTAL_INSTANCES: u32 = 2_000;
/// Docker refuses a memory limit below 6 MiB.
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// Longest image reference, command word or environment value.
pub const MAX_VALUE_LEN: usize = 4_096;

/// What a service is for; its class decides the network it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceClass {
    Observability,
    Data,
    Messaging,
    Gateway,
    Cicd,
    Admin,
}

impl ServiceClass {
    pub const ALL: [ServiceClass; 6] = [
        Self::Observability,
        Self::Data,
        Self::Messaging,
        Self::Gateway,
        Self::Cicd,
        Self::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Observability => "observability",
            Self::Data => "data",
            Self::Messaging => "messaging",
            Self::Gateway => "gateway",
            Self::Cicd => "cicd",
            Self::Admin => "admin",
        }
    }

    /// Classes whose network has no way out unless the template says otherwise or one of
    /// their services publishes a port.
    pub fn internal_by_default(self) -> bool {
        matches!(self, Self::Data | Self::Messaging)
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|class| class.as_str() == name)
    }
}

/// Every instance can reach the machine its engine runs on as `host.docker.internal`, as
/// Docker Desktop gives every container: a service scraping or calling something on the
/// host (orch's own metrics, a node exporter) needs no IP written into its template.
pub const HOST_ALIAS: &str = "host.docker.internal:host-gateway";

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
/// Every field is written out, even when empty: a service from the catalog is stored merged,
/// and an empty field must not bring the entry's value back when it is read again.
pub struct Service {
    /// The catalog entry it was made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<String>,
    pub image: String,
    pub instances: u32,
    pub min_instances: u32,
    pub max_instances: Option<u32>,
    pub class: ServiceClass,
    pub ports: Vec<ServicePort>,
    pub env: BTreeMap<String, String>,
    pub command: Vec<String>,
    pub volumes: Vec<ServiceVolume>,
    pub depends_on: Vec<Dependency>,
    pub healthcheck: Option<HealthCheck>,
    pub resources: Resources,
    pub read_only: bool,
    pub cap_add: Vec<String>,
    pub tmpfs: Vec<String>,
    /// Configuration files, rendered per instance and mounted read-only.
    pub files: Vec<ServiceFile>,
    /// The deployment's secrets this service reads from `/run/secrets/<name>`.
    pub secrets: Vec<SecretMount>,
}

impl Service {
    /// Every text that may hold `{{orch.…}}` tokens, with its pointer below the service.
    pub fn texts(&self) -> impl Iterator<Item = (String, &str)> {
        let env = self
            .env
            .iter()
            .map(|(name, value)| (format!("/env/{name}"), value.as_str()));
        let command =
            (self.command.iter().enumerate()).map(|(index, word)| (format!("/command/{index}"), word.as_str()));
        let files = (self.files.iter().enumerate())
            .map(|(index, file)| (format!("/files/{index}/content"), file.content.as_str()));
        let probe = match self.healthcheck.as_ref().map(|check| &check.probe) {
            Some(Probe::Exec(words)) => words.as_slice(),
            _ => &[],
        };
        let probe =
            (probe.iter().enumerate()).map(|(index, word)| (format!("/healthcheck/exec/{index}"), word.as_str()));
        env.chain(command).chain(files).chain(probe)
    }

    /// Ports published on the container host.
    pub fn published_ports(&self) -> impl Iterator<Item = &ServicePort> {
        self.ports.iter().filter(|port| port.publish)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ServicePort {
    pub container: u16,
    pub name: String,
    pub protocol: Protocol,
    pub publish: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ServiceVolume {
    pub name: String,
    /// Where the volume is mounted in the container.
    pub target: String,
    /// One volume for every instance, instead of one each.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    Started,
    Healthy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Dependency {
    pub service: String,
    pub condition: Condition,
}

/// How orch learns that an instance is ready: a command the engine runs inside the
/// container, or an HTTP or TCP probe orch runs itself (for images without a shell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    Exec(Vec<String>),
    Http { port: u16, path: String },
    Tcp { port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct HealthCheck {
    #[serde(flatten)]
    pub probe: Probe,
    pub interval_s: u32,
    pub timeout_s: u32,
    pub retries: u32,
    /// How long an instance may take to become healthy before the operation fails.
    pub deadline_s: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Resources {
    pub cpus: Option<f64>,
    /// Bytes.
    pub memory: Option<u64>,
    pub pids: Option<u32>,
}

/// Per-class network settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ClassNetwork {
    /// No route out of the network.
    pub internal: bool,
}

pub(super) fn read_services(
    value: &Value,
    pointer: &str,
    problems: &mut Problems,
) -> Option<BTreeMap<String, Service>> {
    read_named(value, pointer, problems, Some("service"), read_service)
}

/// A template's service: its own fields, or those of the catalog entry it names with its
/// overrides written over them.
fn read_service(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Service> {
    let Some(name) = value.get("catalog").filter(|name| !name.is_null()) else {
        return read_fields(value, pointer, problems);
    };
    let catalog_pointer = child(pointer, "catalog");
    let name = reader::string(name, &catalog_pointer, problems)?;
    let catalog = crate::catalog::installed();
    let Some(entry) = catalog.get(name) else {
        let known: Vec<&str> = catalog.entries.keys().map(String::as_str).collect();
        problems.push(
            catalog_pointer,
            format!("'{name}' is not in the catalog; entries: {}", known.join(", ")),
        );
        return None;
    };
    let mut overrides = value.as_object().cloned().unwrap_or_default();
    overrides.remove("catalog");
    let mut service = read_fields(&crate::catalog::merged(entry, &overrides), pointer, problems)?;
    service.catalog = Some(name.to_owned());
    Some(service)
}

/// A catalog entry's service, which cannot name another entry.
pub(crate) fn read_catalog_service(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Service> {
    if value.get("catalog").is_some() {
        problems.push(child(pointer, "catalog"), "a catalog entry cannot name another entry");
        return None;
    }
    read_fields(value, pointer, problems)
}

fn read_fields(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Service> {
    let mut object = Object::new(value, pointer, problems)?;
    // Read by `read_service`; known here so that a stored `catalog: null` reads.
    object.optional("catalog");
    let image = object
        .required("image", problems)
        .and_then(|value| reader::text(value, &object.pointer_to("image"), MAX_VALUE_LEN, problems));
    let bound = |object: &mut Object, key: &'static str, problems: &mut Problems| {
        object
            .optional(key)
            .map(|value| reader::integer(value, &object.pointer_to(key), 0, MAX_INSTANCES.into(), problems))
    };
    let instances = bound(&mut object, "instances", problems).unwrap_or(Some(1));
    let min_instances = bound(&mut object, "min_instances", problems).unwrap_or(Some(0));
    let max_instances = bound(&mut object, "max_instances", problems);
    let class = object
        .required("class", problems)
        .and_then(|value| read_class(value, &object.pointer_to("class"), problems));
    let ports = read_or(&mut object, "ports", problems, read_ports, Vec::new);
    let env = read_or(&mut object, "env", problems, read_env, BTreeMap::new);
    let command = read_or(&mut object, "command", problems, read_words, Vec::new);
    let volumes = read_or(&mut object, "volumes", problems, read_volumes, Vec::new);
    let depends_on = read_or(&mut object, "depends_on", problems, read_dependencies, Vec::new);
    let healthcheck = object
        .optional("healthcheck")
        .map(|value| read_healthcheck(value, &object.pointer_to("healthcheck"), problems));
    let resources = read_or(&mut object, "resources", problems, read_resources, Resources::default);
    let read_only = read_or(&mut object, "read_only", problems, reader::boolean, || false);
    let cap_add = read_or(&mut object, "cap_add", problems, read_capabilities, Vec::new);
    let tmpfs = read_or(&mut object, "tmpfs", problems, read_paths, Vec::new);
    let files = read_or(&mut object, "files", problems, read_files, Vec::new);
    let secrets = read_or(&mut object, "secrets", problems, read_secret_mounts, Vec::new);
    object.finish(problems);
    Some(Service {
        catalog: None,
        image: image?,
        instances: instances?,
        min_instances: min_instances?,
        max_instances: checked(max_instances)?,
        class: class?,
        ports: ports?,
        env: env?,
        command: command?,
        volumes: volumes?,
        depends_on: depends_on?,
        healthcheck: checked(healthcheck)?,
        resources: resources?,
        read_only: read_only?,
        cap_add: cap_add?,
        tmpfs: tmpfs?,
        files: files?,
        secrets: secrets?,
    })
}

/// An optional value that was read: `Some(None)` when absent, `Some(Some(x))` when valid,
/// `None` when present but invalid (its problem is recorded).
fn checked<T>(value: Option<Option<T>>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(Some(value)) => Some(Some(value)),
        Some(None) => None,
    }
}

/// An optional field read by `read`, or `default()` when it is absent.
pub(super) fn read_or<T>(
    object: &mut Object,
    key: &'static str,
    problems: &mut Problems,
    read: impl Fn(&Value, &str, &mut Problems) -> Option<T>,
    default: impl Fn() -> T,
) -> Option<T> {
    match object.optional(key) {
        Some(value) => read(value, &object.pointer_to(key), problems),
        None => Some(default()),
    }
}

fn read_class(value: &Value, pointer: &str, problems: &mut Problems) -> Option<ServiceClass> {
    let name = reader::string(value, pointer, problems)?;
    let class = ServiceClass::parse(name);
    if class.is_none() {
        let known: Vec<&str> = ServiceClass::ALL.iter().map(|class| class.as_str()).collect();
        problems.push(
            pointer,
            format!("'{name}' is not a class; expected one of: {}", known.join(", ")),
        );
    }
    class
}

fn port_number(value: &Value, pointer: &str, problems: &mut Problems) -> Option<u16> {
    reader::integer(value, pointer, 1, 65_535, problems).and_then(|port| u16::try_from(port).ok())
}

fn read_ports(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<ServicePort>> {
    let items = reader::array(value, pointer, problems)?;
    let mut ports: Vec<ServicePort> = Vec::new();
    let mut complete = true;
    for (index, item) in items.iter().enumerate() {
        let item_pointer = child(pointer, &index.to_string());
        match read_port(item, &item_pointer, problems) {
            Some(port) if ports.iter().any(|known| known.name == port.name) => {
                problems.push(child(&item_pointer, "name"), format!("'{}' is named twice", port.name));
                complete = false;
            }
            Some(port)
                if ports
                    .iter()
                    .any(|known| (known.container, known.protocol) == (port.container, port.protocol)) =>
            {
                problems.push(
                    child(&item_pointer, "container"),
                    format!("{} is listed twice", port.container),
                );
                complete = false;
            }
            Some(port) => ports.push(port),
            None => complete = false,
        }
    }
    complete.then_some(ports)
}

fn read_port(value: &Value, pointer: &str, problems: &mut Problems) -> Option<ServicePort> {
    let mut object = Object::new(value, pointer, problems)?;
    let container = object
        .required("container", problems)
        .and_then(|value| port_number(value, &object.pointer_to("container"), problems));
    let name = object.required("name", problems).and_then(|value| {
        let pointer = object.pointer_to("name");
        reader::string(value, &pointer, problems)
            .filter(|name| read_key(name, &pointer, problems))
            .map(str::to_owned)
    });
    let protocol = match object.optional("protocol") {
        Some(value) => match reader::string(value, &object.pointer_to("protocol"), problems) {
            Some("tcp") => Some(Protocol::Tcp),
            Some("udp") => Some(Protocol::Udp),
            Some(other) => {
                problems.push(object.pointer_to("protocol"), format!("'{other}' must be tcp or udp"));
                None
            }
            None => None,
        },
        None => Some(Protocol::Tcp),
    };
    let publish = read_or(&mut object, "publish", problems, reader::boolean, || false);
    object.finish(problems);
    Some(ServicePort {
        container: container?,
        name: name?,
        protocol: protocol?,
        publish: publish?,
    })
}

/// A string, or a number or boolean written without quotes (YAML users write `PORT: 8080`).
fn scalar(value: &Value, pointer: &str, problems: &mut Problems) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => {
            problems.push(pointer, format!("must be a string, not {}", reader::kind(other)));
            return None;
        }
    };
    if text.len() > MAX_VALUE_LEN || text.contains('\0') {
        problems.push(pointer, format!("must be at most {MAX_VALUE_LEN} bytes without NUL"));
        return None;
    }
    if let Err(why) = super::render::check(&text) {
        problems.push(pointer, why);
        return None;
    }
    Some(text)
}

fn read_env(value: &Value, pointer: &str, problems: &mut Problems) -> Option<BTreeMap<String, String>> {
    let map = reader::object(value, pointer, problems)?;
    let mut env = BTreeMap::new();
    let mut complete = true;
    for (name, value) in map {
        let item_pointer = child(pointer, name);
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            problems.push(
                &item_pointer,
                "names are letters, digits and '_', not starting with a digit",
            );
            complete = false;
        }
        match scalar(value, &item_pointer, problems) {
            Some(text) if valid_name => {
                env.insert(name.clone(), text);
            }
            _ => complete = false,
        }
    }
    complete.then_some(env)
}

fn read_words(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<String>> {
    let items = reader::array(value, pointer, problems)?;
    let words: Vec<Option<String>> = items
        .iter()
        .enumerate()
        .map(|(index, item)| scalar(item, &child(pointer, &index.to_string()), problems))
        .collect();
    words.into_iter().collect()
}

/// An absolute path inside the container, without `..` (it names a mount point).
pub(super) fn container_path(value: &Value, pointer: &str, problems: &mut Problems) -> Option<String> {
    let path = reader::text(value, pointer, MAX_VALUE_LEN, problems)?;
    if !path.starts_with('/') || path.split('/').any(|part| part == "..") || path.contains(':') {
        problems.push(pointer, "must be an absolute path without '..' or ':'");
        return None;
    }
    Some(path)
}

fn read_paths(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<String>> {
    let items = reader::array(value, pointer, problems)?;
    let paths: Vec<Option<String>> = items
        .iter()
        .enumerate()
        .map(|(index, item)| container_path(item, &child(pointer, &index.to_string()), problems))
        .collect();
    paths.into_iter().collect()
}

fn read_capabilities(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<String>> {
    let items = reader::array(value, pointer, problems)?;
    let mut capabilities = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_pointer = child(pointer, &index.to_string());
        let Some(name) = reader::string(item, &item_pointer, problems) else {
            continue;
        };
        let name = name.strip_prefix("CAP_").unwrap_or(name);
        if name == "ALL" || name.is_empty() || !name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            problems.push(
                item_pointer,
                format!("'{name}' is not a capability name (e.g. NET_BIND_SERVICE)"),
            );
        } else {
            capabilities.push(name.to_owned());
        }
    }
    Some(capabilities)
}

fn read_volumes(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<ServiceVolume>> {
    let items = reader::array(value, pointer, problems)?;
    let mut volumes: Vec<ServiceVolume> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_pointer = child(pointer, &index.to_string());
        let Some(mut object) = Object::new(item, &item_pointer, problems) else {
            continue;
        };
        let name = object.required("name", problems).and_then(|value| {
            let pointer = object.pointer_to("name");
            reader::string(value, &pointer, problems)
                .filter(|name| read_key(name, &pointer, problems))
                .map(str::to_owned)
        });
        let target = object
            .required("target", problems)
            .and_then(|value| container_path(value, &object.pointer_to("target"), problems));
        let shared = read_or(&mut object, "shared", problems, reader::boolean, || false);
        object.finish(problems);
        if let (Some(name), Some(target), Some(shared)) = (name, target, shared) {
            if volumes.iter().any(|known| known.name == name || known.target == target) {
                problems.push(item_pointer, format!("volume '{name}' or its target is listed twice"));
            } else {
                volumes.push(ServiceVolume { name, target, shared });
            }
        }
    }
    Some(volumes)
}

fn read_dependencies(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<Dependency>> {
    let items = reader::array(value, pointer, problems)?;
    let mut dependencies: Vec<Dependency> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_pointer = child(pointer, &index.to_string());
        let dependency = match item {
            Value::String(service) => Some(Dependency {
                service: service.clone(),
                condition: Condition::Started,
            }),
            _ => read_dependency(item, &item_pointer, problems),
        };
        if let Some(dependency) = dependency {
            if dependencies.iter().any(|known| known.service == dependency.service) {
                problems.push(item_pointer, format!("'{}' is listed twice", dependency.service));
            } else {
                dependencies.push(dependency);
            }
        }
    }
    Some(dependencies)
}

fn read_dependency(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Dependency> {
    let mut object = Object::new(value, pointer, problems)?;
    let service = object
        .required("service", problems)
        .and_then(|value| reader::string(value, &object.pointer_to("service"), problems))
        .map(str::to_owned);
    let condition = match object.optional("condition") {
        Some(value) => match reader::string(value, &object.pointer_to("condition"), problems) {
            Some("started") => Some(Condition::Started),
            Some("healthy" | "service_healthy") => Some(Condition::Healthy),
            Some(other) => {
                problems.push(
                    object.pointer_to("condition"),
                    format!("'{other}' must be started or healthy"),
                );
                None
            }
            None => None,
        },
        None => Some(Condition::Started),
    };
    object.finish(problems);
    Some(Dependency {
        service: service?,
        condition: condition?,
    })
}

fn read_healthcheck(value: &Value, pointer: &str, problems: &mut Problems) -> Option<HealthCheck> {
    let mut object = Object::new(value, pointer, problems)?;
    let exec = object
        .optional("exec")
        .map(|value| read_words(value, &object.pointer_to("exec"), problems).map(Probe::Exec));
    let http = object
        .optional("http")
        .map(|value| read_http_probe(value, &object.pointer_to("http"), problems));
    let tcp = object
        .optional("tcp")
        .map(|value| read_tcp_probe(value, &object.pointer_to("tcp"), problems));
    let seconds =
        |object: &mut Object, key: &'static str, default: u32, problems: &mut Problems| match object.optional(key) {
            Some(value) => reader::integer(value, &object.pointer_to(key), 1, 3_600, problems),
            None => Some(default),
        };
    let interval_s = seconds(&mut object, "interval_s", 2, problems);
    let timeout_s = seconds(&mut object, "timeout_s", 3, problems);
    let retries = seconds(&mut object, "retries", 3, problems);
    let deadline_s = seconds(&mut object, "deadline_s", 120, problems);
    object.finish(problems);
    let probes: Vec<Option<Probe>> = [exec, http, tcp].into_iter().flatten().collect();
    if probes.len() != 1 {
        problems.push(pointer, "needs exactly one of exec, http or tcp");
        return None;
    }
    let probe = probes.into_iter().next().flatten()?;
    if matches!(&probe, Probe::Exec(words) if words.is_empty()) {
        problems.push(child(pointer, "exec"), "must name a command");
        return None;
    }
    Some(HealthCheck {
        probe,
        interval_s: interval_s?,
        timeout_s: timeout_s?,
        retries: retries?,
        deadline_s: deadline_s?,
    })
}

fn read_http_probe(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Probe> {
    let mut object = Object::new(value, pointer, problems)?;
    let port = object
        .required("port", problems)
        .and_then(|value| port_number(value, &object.pointer_to("port"), problems));
    let path = match object.optional("path") {
        Some(value) => reader::text(value, &object.pointer_to("path"), MAX_VALUE_LEN, problems).filter(|path| {
            let ok = path.starts_with('/') && !path.contains(char::is_whitespace);
            if !ok {
                problems.push(object.pointer_to("path"), "must start with '/' and have no spaces");
            }
            ok
        }),
        None => Some("/".to_owned()),
    };
    object.finish(problems);
    Some(Probe::Http {
        port: port?,
        path: path?,
    })
}

fn read_tcp_probe(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Probe> {
    let mut object = Object::new(value, pointer, problems)?;
    let port = object
        .required("port", problems)
        .and_then(|value| port_number(value, &object.pointer_to("port"), problems));
    object.finish(problems);
    Some(Probe::Tcp { port: port? })
}

fn read_resources(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Resources> {
    let mut object = Object::new(value, pointer, problems)?;
    let cpus = object.optional("cpus").map(|value| {
        let pointer = object.pointer_to("cpus");
        match value.as_f64() {
            Some(cpus) if (0.01..=256.0).contains(&cpus) => Some(cpus),
            _ => {
                problems.push(pointer, "must be a number of CPUs between 0.01 and 256");
                None
            }
        }
    });
    let memory = object
        .optional("memory")
        .map(|value| read_memory(value, &object.pointer_to("memory"), problems));
    let pids = object
        .optional("pids")
        .map(|value| reader::integer(value, &object.pointer_to("pids"), 1, 4_194_304, problems));
    object.finish(problems);
    Some(Resources {
        cpus: checked(cpus)?,
        memory: checked(memory)?,
        pids: checked(pids)?,
    })
}

/// Bytes, as a number or as text with a unit: `64MiB`, `1GiB`, `512m`, `2g`.
fn read_memory(value: &Value, pointer: &str, problems: &mut Problems) -> Option<u64> {
    let bytes = match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => parse_bytes(text),
        _ => None,
    };
    match bytes {
        Some(bytes) if bytes >= MIN_MEMORY_BYTES => Some(bytes),
        Some(_) => {
            problems.push(pointer, "must be at least 6MiB");
            None
        }
        None => {
            problems.push(pointer, "must be bytes, or a size such as 64MiB, 1GiB, 512m");
            None
        }
    }
}

fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" | "b" => 1,
        "KiB" | "k" | "K" | "KB" | "kb" => 1 << 10,
        "MiB" | "m" | "M" | "MB" | "mb" => 1 << 20,
        "GiB" | "g" | "G" | "GB" | "gb" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

pub(super) fn read_class_networks(
    value: &Value,
    pointer: &str,
    problems: &mut Problems,
) -> Option<BTreeMap<ServiceClass, ClassNetwork>> {
    let map = reader::object(value, pointer, problems)?;
    let mut networks = BTreeMap::new();
    for (name, value) in map {
        let item_pointer = child(pointer, name);
        let class = read_class(&Value::String(name.clone()), &item_pointer, problems);
        let Some(mut object) = Object::new(value, &item_pointer, problems) else {
            continue;
        };
        let internal = object
            .required("internal", problems)
            .and_then(|value| reader::boolean(value, &object.pointer_to("internal"), problems));
        object.finish(problems);
        if let (Some(class), Some(internal)) = (class, internal) {
            networks.insert(class, ClassNetwork { internal });
        }
    }
    Some(networks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;

    pub(crate) const TWO_TIER: &str = r#"
name: two-tier
services:
  cache:
    image: local/busybox:latest
    command: ["/bin/httpd", "-f", "-p", "6379", "-h", "/www"]
    class: data
    healthcheck: {exec: ["/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:6379/"]}
  web:
    image: local/busybox:latest
    command: ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
    class: gateway
    instances: 2
    ports: [{container: 8080, name: http, publish: true}]
    healthcheck: {http: {port: 8080, path: /}}
    depends_on: [{service: cache, condition: healthy}]
    resources: {cpus: 0.5, memory: 64MiB}
"#;

    fn pointers(problems: &Problems) -> Vec<String> {
        problems
            .0
            .iter()
            .map(|p| format!("{} {}", p.pointer, p.detail))
            .collect()
    }

    #[test]
    fn the_issue_example_is_accepted_as_written_and_round_trips() {
        let template = Template::parse_text(TWO_TIER).unwrap();
        assert!(template.vm_config.is_empty() && template.network_config.is_none());
        let web = &template.services["web"];
        assert_eq!(web.instances, 2);
        assert_eq!(web.resources.memory, Some(64 << 20));
        assert_eq!(web.depends_on[0].condition, Condition::Healthy);
        assert_eq!(
            web.healthcheck.as_ref().unwrap().probe,
            Probe::Http {
                port: 8080,
                path: "/".into()
            }
        );
        assert_eq!(template.services["cache"].instances, 1);
        assert_eq!(Template::parse(&template.to_value(), "", None).unwrap(), template);
        assert_eq!(
            start_order(&template.services),
            vec![vec!["cache".to_owned()], vec!["web".to_owned()]]
        );
        assert!(class_is_internal(
            ServiceClass::Data,
            &template.services,
            &template.networks
        ));
        assert!(!class_is_internal(
            ServiceClass::Gateway,
            &template.services,
            &template.networks
        ));
        let joined: Vec<_> = networks_of("web", &template.services).into_iter().collect();
        assert_eq!(joined, vec![ServiceClass::Data, ServiceClass::Gateway]);
    }

    #[test]
    fn every_service_problem_is_located() {
        let text = r#"
name: bad
networks: {data: {internal: true}}
services:
  a:
    image: x
    class: data
    ports: [{container: 70000, name: http}, {container: 5432, name: db, publish: true}]
    depends_on: [b, {service: nope}]
    resources: {memory: 1k, cpus: 0}
    healthcheck: {exec: [], http: {port: 80}}
    colour: red
  b:
    image: x
    class: cloud
    depends_on: [{service: a, condition: healthy}]
    volumes: [{name: d, target: relative}]
    cap_add: [ALL]
"#;
        let problems = Template::parse_text(text).unwrap_err();
        let found = pointers(&problems);
        for expected in [
            "/services/a/ports/0/container",
            "/services/a/resources/memory",
            "/services/a/resources/cpus",
            "/services/a/healthcheck",
            "/services/a/colour",
            "/services/b/class",
            "/services/b/volumes/0/target",
            "/services/b/cap_add/0",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(&format!("{expected} "))),
                "missing {expected} in {found:?}"
            );
        }
    }

    #[test]
    fn references_cycles_and_internal_networks_are_checked() {
        let text = r#"
name: refs
networks: {data: {internal: true}}
services:
  a: {image: x, class: data, depends_on: [b, {service: ghost}], ports: [{container: 1, name: p, publish: true}]}
  b: {image: x, class: gateway, depends_on: [{service: a, condition: healthy}]}
  c: {image: x, class: admin, instances: 5, max_instances: 3}
"#;
        let found = pointers(&Template::parse_text(text).unwrap_err());
        let has = |prefix: &str, words: &str| found.iter().any(|f| f.starts_with(prefix) && f.contains(words));
        assert!(has("/services/a/depends_on/1 ", "not defined"), "{found:?}");
        assert!(has("/services/b/depends_on/0 ", "no healthcheck"), "{found:?}");
        assert!(has("/services/a/depends_on ", "cycle: a -> b -> a"), "{found:?}");
        assert!(has("/services/a/ports ", "declared internal"), "{found:?}");
        assert!(has("/services/c/instances ", "above max_instances 3"), "{found:?}");
    }

    #[test]
    fn sizes_read_with_their_units() {
        assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
        assert_eq!(parse_bytes("2g"), Some(2 << 30));
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("5 parsecs"), None);
        assert_eq!(parse_bytes("99999999999999999999G"), None);
    }
}
