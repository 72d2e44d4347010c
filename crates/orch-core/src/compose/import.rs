//! A Compose file as an orch template, where it can be: images, commands, environment,
//! ports, named volumes, tmpfs, `depends_on` with its conditions, health checks, replicas,
//! limits, `read_only`, `cap_add`, configs (as files) and secrets (declared `supplied`).
//! Everything else is named in the notes instead of being dropped silently: builds, bind
//! mounts, host ports (orch leases its own), networks (orch makes one per class), and the
//! fields orch sets itself (restart policy, logging, capabilities dropped).
//!
//! Pure: the caller reads the file, and the config files it names through `read_config`.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::catalog;
use crate::names::MAX_KEY_LEN;
use crate::problem::Problems;
use crate::template::Template;

/// The template made of a Compose file, and what it could not carry over.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeImport {
    pub template: Template,
    pub notes: Vec<String>,
}

/// Fields orch decides itself: no note when a file sets them.
const SET_BY_ORCH: &[&str] = &["restart", "logging", "cap_drop", "security_opt", "init"];

/// Turns `compose` (the parsed YAML) into a template named `name` (unless the file names
/// its project). `read_config(path)` gives a config file's content, for `file:` configs.
pub fn import(
    compose: &Value,
    name: &str,
    read_config: &dyn Fn(&str) -> Result<String, String>,
) -> Result<ComposeImport, Problems> {
    let mut notes = Vec::new();
    let Some(services) = compose.get("services").and_then(Value::as_object) else {
        return Err(Problems::single("/services", "a Compose file needs services"));
    };
    let configs = top_level_configs(compose, read_config, &mut notes);
    let mut secrets = Map::new();
    for secret in compose.get("secrets").and_then(Value::as_object).into_iter().flatten() {
        secrets.insert(secret.0.clone(), json!({"supplied": true}));
    }
    if !secrets.is_empty() {
        notes.push(format!(
            "secrets ({}) are declared supplied: give their values when you create the deployment",
            secrets.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let renamed: Vec<(String, String)> = services.keys().map(|old| (old.clone(), key_of(old))).collect();
    let mut out = Map::new();
    for (old, new) in &renamed {
        if old != new {
            notes.push(format!("service '{old}' is named '{new}' (orch names are lowercase)"));
        }
        let service = import_service(new, &services[old], &renamed, &configs, &mut notes);
        out.insert(new.clone(), service);
    }
    for key in compose.as_object().into_iter().flat_map(Map::keys) {
        if ![
            "name", "services", "secrets", "configs", "volumes", "networks", "version",
        ]
        .contains(&key.as_str())
        {
            notes.push(format!("top-level '{key}' is not carried"));
        }
    }
    if compose.get("networks").is_some() {
        notes.push("networks are not carried: orch makes one per class, internal for data and messaging".into());
    }
    let project = compose
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| name.to_owned(), key_of);
    let mut document = json!({"name": project, "services": out});
    if !secrets.is_empty() {
        document["secrets"] = Value::Object(secrets);
    }
    let template = Template::parse(&document, "", None)?;
    Ok(ComposeImport { template, notes })
}

/// Config name -> content, for `content:` configs and `file:` ones `read_config` can read.
fn top_level_configs(
    compose: &Value,
    read_config: &dyn Fn(&str) -> Result<String, String>,
    notes: &mut Vec<String>,
) -> Map<String, Value> {
    let mut configs = Map::new();
    for (name, config) in compose.get("configs").and_then(Value::as_object).into_iter().flatten() {
        let content = match (config.get("content"), config.get("file").and_then(Value::as_str)) {
            (Some(Value::String(content)), _) => Ok(content.clone()),
            (_, Some(path)) => read_config(path),
            _ => Err("only content: and file: configs are carried".to_owned()),
        };
        match content {
            Ok(content) => {
                configs.insert(name.clone(), Value::String(content));
            }
            Err(why) => notes.push(format!("config '{name}' is not carried: {why}")),
        }
    }
    configs
}

/// A Compose name as an orch key: lowercase, '.' and other marks as '-'.
fn key_of(name: &str) -> String {
    let mut key: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !key.starts_with(|c: char| c.is_ascii_lowercase()) {
        key.insert(0, 's');
    }
    key.truncate(MAX_KEY_LEN);
    key
}

fn import_service(
    name: &str,
    compose: &Value,
    renamed: &[(String, String)],
    configs: &Map<String, Value>,
    notes: &mut Vec<String>,
) -> Value {
    let mut service = Map::new();
    let fields = compose.as_object().cloned().unwrap_or_default();
    let mut carried: BTreeSet<&str> = BTreeSet::new();
    let mut carry = |key: &'static str| {
        carried.insert(key);
        fields.get(key)
    };
    match carry("image").and_then(Value::as_str) {
        Some(image) => {
            service.insert("image".into(), json!(image));
        }
        None => notes.push(format!(
            "{name}: no image (a build is not carried; build it and set image)"
        )),
    }
    if let Some(command) = carry("command") {
        match words(command) {
            Some(words) => {
                service.insert("command".into(), json!(words));
            }
            None => notes.push(format!(
                "{name}: its command is a shell string with quotes; write it as a list"
            )),
        }
    }
    if let Some(env) = carry("environment").and_then(environment) {
        service.insert("env".into(), Value::Object(env));
    }
    let ports = ports(name, carry("ports"), carry("expose"), notes);
    if !ports.is_empty() {
        service.insert("ports".into(), Value::Array(ports));
    }
    let (volumes, tmpfs) = volumes(name, carry("volumes"), notes);
    let mut tmpfs = tmpfs;
    tmpfs.extend(words(carry("tmpfs").unwrap_or(&Value::Null)).unwrap_or_default());
    if !volumes.is_empty() {
        service.insert("volumes".into(), Value::Array(volumes));
    }
    if !tmpfs.is_empty() {
        service.insert("tmpfs".into(), json!(tmpfs));
    }
    if let Some(depends) = carry("depends_on") {
        service.insert("depends_on".into(), dependencies(name, depends, renamed, notes));
    }
    if let Some(check) = carry("healthcheck").and_then(|check| healthcheck(name, check, notes)) {
        service.insert("healthcheck".into(), check);
    }
    deploy(name, carry("deploy"), &mut service, notes);
    for key in ["read_only", "cap_add"] {
        if let Some(value) = carry(key) {
            service.insert(key.into(), value.clone());
        }
    }
    let files = files(name, carry("configs"), configs, notes);
    if !files.is_empty() {
        service.insert("files".into(), Value::Array(files));
    }
    if let Some(secrets) = carry("secrets").and_then(Value::as_array) {
        let names: Vec<Value> = secrets
            .iter()
            .filter_map(|secret| secret.as_str().or_else(|| secret.get("source")?.as_str()))
            .map(|secret| json!(secret))
            .collect();
        service.insert("secrets".into(), Value::Array(names));
    }
    let class = class_of(&service);
    notes.push(format!("{name}: class {class}; set class: if another fits"));
    service.insert("class".into(), json!(class));
    for key in fields.keys().filter(|key| !carried.contains(key.as_str())) {
        if !SET_BY_ORCH.contains(&key.as_str()) && !only_the_host_alias(key, &fields[key]) {
            notes.push(format!("{name}: '{key}' is not carried"));
        }
    }
    Value::Object(service)
}

/// `extra_hosts` naming only the host, which orch gives every instance.
fn only_the_host_alias(key: &str, value: &Value) -> bool {
    let alias = crate::template::services::HOST_ALIAS;
    key == "extra_hosts"
        && match value {
            Value::Array(items) => items.iter().all(|item| item.as_str() == Some(alias)),
            Value::Object(map) => map
                .iter()
                .all(|(name, ip)| format!("{name}:{}", ip.as_str().unwrap_or("")) == alias),
            _ => false,
        }
}

/// A list of words, or a string without quotes split at whitespace.
fn words(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Some(text.clone()),
                Value::Number(number) => Some(number.to_string()),
                _ => None,
            })
            .collect(),
        Value::String(text) if !text.contains(['"', '\'', '\\']) => {
            Some(text.split_whitespace().map(str::to_owned).collect())
        }
        _ => None,
    }
}

/// `environment` as a map or as `KEY=value` items.
fn environment(value: &Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(
            map.iter()
                .map(|(key, value)| (key.clone(), if value.is_null() { json!("") } else { value.clone() }))
                .collect(),
        ),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(|item| {
                    let (key, value) = item.split_once('=').unwrap_or((item, ""));
                    (key.to_owned(), json!(value))
                })
                .collect(),
        ),
        _ => None,
    }
}

fn ports(name: &str, ports: Option<&Value>, expose: Option<&Value>, notes: &mut Vec<String>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut host_ports = false;
    for port in ports.and_then(Value::as_array).into_iter().flatten() {
        let (target, protocol, published) = match port {
            Value::Object(long) => (
                long.get("target").and_then(Value::as_u64),
                long.get("protocol").and_then(Value::as_str).unwrap_or("tcp").to_owned(),
                long.get("published").is_some(),
            ),
            short => {
                let text = short.as_str().map(str::to_owned).unwrap_or_else(|| short.to_string());
                let (spec, protocol) = text.split_once('/').unwrap_or((&text, "tcp"));
                let parts: Vec<&str> = spec.split(':').collect();
                let target = parts.last().and_then(|port| port.parse().ok());
                (target, protocol.to_owned(), parts.len() > 1)
            }
        };
        let Some(target) = target else {
            notes.push(format!("{name}: port {port} is not carried (ranges are not)"));
            continue;
        };
        host_ports |= published;
        out.push(
            json!({"container": target, "name": format!("{protocol}-{target}"), "protocol": protocol, "publish": true}),
        );
    }
    for port in expose.and_then(Value::as_array).into_iter().flatten() {
        let text = port.as_str().map(str::to_owned).unwrap_or_else(|| port.to_string());
        if let Ok(target) = text.split('/').next().unwrap_or_default().parse::<u64>() {
            if !out.iter().any(|known| known["container"] == target) {
                out.push(json!({"container": target, "name": format!("tcp-{target}")}));
            }
        }
    }
    if host_ports {
        notes.push(format!(
            "{name}: host ports are leased by orch from CONTAINER_PORT_RANGE, not the file's"
        ));
    }
    out
}

/// Named volumes and tmpfs mounts; bind mounts are not carried.
fn volumes(name: &str, volumes: Option<&Value>, notes: &mut Vec<String>) -> (Vec<Value>, Vec<String>) {
    let (mut named, mut tmpfs) = (Vec::new(), Vec::new());
    for volume in volumes.and_then(Value::as_array).into_iter().flatten() {
        let (kind, source, target) = match volume {
            Value::String(short) => {
                let parts: Vec<&str> = short.split(':').collect();
                match parts.as_slice() {
                    [target] => ("anonymous", String::new(), (*target).to_owned()),
                    [source, target, ..] if source.starts_with(['.', '/', '~']) => {
                        ("bind", (*source).to_owned(), (*target).to_owned())
                    }
                    [source, target, ..] => ("volume", (*source).to_owned(), (*target).to_owned()),
                    [] => continue,
                }
            }
            long => (
                long.get("type").and_then(Value::as_str).unwrap_or("volume"),
                long.get("source")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                long.get("target")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            ),
        };
        match kind {
            "volume" if !source.is_empty() => named.push(json!({"name": key_of(&source), "target": target})),
            "tmpfs" => tmpfs.push(target),
            _ => notes.push(format!(
                "{name}: the {kind} mount at {target} is not carried; orch mounts named volumes"
            )),
        }
    }
    (named, tmpfs)
}

fn dependencies(name: &str, value: &Value, renamed: &[(String, String)], notes: &mut Vec<String>) -> Value {
    let renamed_to = |old: &str| {
        renamed
            .iter()
            .find(|(from, _)| from == old)
            .map_or_else(|| key_of(old), |(_, to)| to.clone())
    };
    let entries: Vec<(String, &str)> = match value {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|service| (service.to_owned(), "service_started"))
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(service, spec)| {
                let condition = spec
                    .get("condition")
                    .and_then(Value::as_str)
                    .unwrap_or("service_started");
                (service.clone(), condition)
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for (service, condition) in entries {
        let condition = match condition {
            "service_healthy" => "healthy",
            "service_started" => "started",
            other => {
                notes.push(format!("{name}: depends_on {service} '{other}' becomes started"));
                "started"
            }
        };
        out.push(json!({"service": renamed_to(&service), "condition": condition}));
    }
    Value::Array(out)
}

fn healthcheck(name: &str, check: &Value, notes: &mut Vec<String>) -> Option<Value> {
    if check.get("disable").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let test = check.get("test")?;
    let exec: Vec<String> = match test {
        Value::String(shell) => vec!["sh".into(), "-c".into(), shell.clone()],
        Value::Array(items) => {
            let words: Vec<String> = items.iter().filter_map(Value::as_str).map(str::to_owned).collect();
            match words.split_first() {
                Some((first, rest)) if first == "CMD" => rest.to_vec(),
                Some((first, rest)) if first == "CMD-SHELL" => vec!["sh".into(), "-c".into(), rest.join(" ")],
                _ => {
                    notes.push(format!("{name}: health check {test} is not carried"));
                    return None;
                }
            }
        }
        _ => return None,
    };
    let mut out = json!({"exec": exec});
    let seconds = |key: &str| check.get(key).and_then(Value::as_str).and_then(duration_seconds);
    for (from, to) in [("interval", "interval_s"), ("timeout", "timeout_s")] {
        if let Some(value) = seconds(from) {
            out[to] = json!(value.max(1));
        }
    }
    if let Some(retries) = check.get("retries").and_then(Value::as_u64) {
        out["retries"] = json!(retries);
    }
    if let Some(start) = seconds("start_period") {
        let interval = seconds("interval").unwrap_or(2);
        let retries = check.get("retries").and_then(Value::as_u64).unwrap_or(3);
        out["deadline_s"] = json!((start + interval * retries).max(10));
    }
    Some(out)
}

/// Compose durations (`1m30s`, `10s`, `500ms`) in whole seconds.
fn duration_seconds(text: &str) -> Option<u64> {
    let mut total_ms = 0u64;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let value: u64 = number.parse().ok()?;
        number.clear();
        let factor = match c {
            'h' => 3_600_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            's' => 1_000,
            _ => return None,
        };
        total_ms += value * factor;
    }
    if !number.is_empty() {
        return None;
    }
    Some(total_ms.div_ceil(1_000))
}

fn deploy(name: &str, deploy: Option<&Value>, service: &mut Map<String, Value>, notes: &mut Vec<String>) {
    let Some(deploy) = deploy else { return };
    if let Some(replicas) = deploy.get("replicas").and_then(Value::as_u64) {
        service.insert("instances".into(), json!(replicas));
    }
    let Some(limits) = deploy.pointer("/resources/limits") else {
        return;
    };
    let mut resources = Map::new();
    let cpus = match limits.get("cpus") {
        Some(Value::String(text)) => text.parse::<f64>().ok(),
        Some(value) => value.as_f64(),
        None => None,
    };
    if let Some(cpus) = cpus {
        resources.insert("cpus".into(), json!(cpus));
    }
    if let Some(memory) = limits.get("memory") {
        resources.insert("memory".into(), memory.clone());
    }
    if let Some(pids) = limits.get("pids") {
        resources.insert("pids".into(), pids.clone());
    }
    if deploy.pointer("/resources/reservations").is_some() {
        notes.push(format!("{name}: reservations are not carried; orch sets limits"));
    }
    service.insert("resources".into(), Value::Object(resources));
}

fn files(name: &str, mounts: Option<&Value>, configs: &Map<String, Value>, notes: &mut Vec<String>) -> Vec<Value> {
    let mut files = Vec::new();
    for mount in mounts.and_then(Value::as_array).into_iter().flatten() {
        let source = mount
            .as_str()
            .or_else(|| mount.get("source")?.as_str())
            .unwrap_or_default();
        let target = mount
            .get("target")
            .and_then(Value::as_str)
            .map_or_else(|| format!("/{source}"), str::to_owned);
        match configs.get(source) {
            Some(content) => files.push(json!({"path": target, "content": content})),
            None => notes.push(format!("{name}: config '{source}' is not carried")),
        }
    }
    files
}

/// The class of the catalog entry with the same image, else gateway for a service that
/// publishes a port, else admin.
fn class_of(service: &Map<String, Value>) -> &'static str {
    let repository = |image: &str| image.rsplit_once(':').map_or(image, |(repo, _)| repo).to_owned();
    let image = service.get("image").and_then(Value::as_str).map(repository);
    let entry = catalog::installed()
        .entries
        .values()
        .find(|entry| Some(repository(&entry.service.image)) == image);
    if let Some(entry) = entry {
        return entry.service.class.as_str();
    }
    let publishes = service
        .get("ports")
        .and_then(Value::as_array)
        .is_some_and(|ports| ports.iter().any(|port| port["publish"] == true));
    if publishes {
        "gateway"
    } else {
        "admin"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::check_key;

    const FILE: &str = r#"
name: Shop
services:
  web.front:
    image: nginx:1.27
    ports: ["8080:80", {target: 443, published: 8443}]
    depends_on: {api: {condition: service_healthy}}
    read_only: true
    restart: always
    volumes: ["./site:/usr/share/nginx/html:ro", {type: tmpfs, target: /tmp}]
    configs: [{source: nginx, target: /etc/nginx/conf.d/default.conf}]
  api:
    image: example/api:2
    command: serve --port 9000
    environment: ["MODE=prod", "DB=db:5432"]
    expose: ["9000"]
    healthcheck: {test: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:9000/health"], interval: 5s, retries: 4, start_period: 1m}
    deploy: {replicas: 3, resources: {limits: {cpus: "0.5", memory: 256M}}}
    secrets: [api_token]
    privileged: true
    extra_hosts: ["host.docker.internal:host-gateway"]
  db:
    image: postgres:16
    volumes: ["data:/var/lib/postgresql/data"]
    build: ./db
    extra_hosts: {legacy: "10.0.0.9"}
configs:
  nginx: {file: ./nginx.conf}
secrets:
  api_token: {file: ./token.txt}
volumes: {data: {}}
networks: {front: {}}
"#;

    #[test]
    fn a_compose_file_becomes_a_template_and_says_what_it_left() {
        let compose: Value = serde_yaml_ng::from_str(FILE).unwrap();
        let read = |path: &str| match path {
            "./nginx.conf" => Ok("server { listen 80; }".to_owned()),
            _ => Err("no such file".to_owned()),
        };
        let ComposeImport { template, notes } = import(&compose, "ignored", &read).unwrap();
        assert_eq!(template.name, "shop");
        let web = &template.services["web-front"];
        assert_eq!(
            web.ports.iter().map(|port| port.container).collect::<Vec<_>>(),
            [80, 443]
        );
        assert!(web.ports.iter().all(|port| port.publish));
        assert_eq!(web.depends_on[0].service, "api");
        assert_eq!(web.files[0].content, "server { listen 80; }");
        assert_eq!(web.tmpfs, ["/tmp"]);
        assert_eq!(web.class.as_str(), "gateway", "nginx's catalog class");
        let api = &template.services["api"];
        assert_eq!(api.command, ["serve", "--port", "9000"]);
        assert_eq!(api.env["DB"], "db:5432");
        assert_eq!(api.instances, 3);
        assert_eq!(api.resources.memory, Some(256 << 20));
        let check = api.healthcheck.as_ref().unwrap();
        assert_eq!((check.interval_s, check.retries, check.deadline_s), (5, 4, 80));
        assert!(template.secrets["api_token"].supplied);
        assert_eq!(
            template.services["db"].class.as_str(),
            "data",
            "postgres's catalog class"
        );
        let all = notes.join("\n");
        for expected in [
            "'web.front' is named 'web-front'",
            "bind mount at /usr/share/nginx/html",
            "host ports are leased",
            "api: 'privileged' is not carried",
            "db: 'build' is not carried",
            "networks are not carried",
            "declared supplied",
            "db: 'extra_hosts' is not carried",
        ] {
            assert!(all.contains(expected), "{expected}: {all}");
        }
        assert!(!all.contains("restart"), "orch's own fields are not noted: {all}");
        assert!(
            !all.contains("api: 'extra_hosts'"),
            "the host alias orch gives every instance is not noted: {all}"
        );
    }

    #[test]
    fn compose_names_become_orch_keys() {
        assert_eq!(key_of("Web.Front"), "web-front");
        assert_eq!(key_of("1st"), "s1st");
        let long = key_of(&"a".repeat(80));
        assert!(check_key(&long).is_ok(), "{long}");
    }

    #[test]
    fn durations_read_as_compose_writes_them() {
        assert_eq!(duration_seconds("1m30s"), Some(90));
        assert_eq!(duration_seconds("500ms"), Some(1));
        assert_eq!(duration_seconds("2h"), Some(7200));
        assert_eq!(duration_seconds("ten"), None);
    }

    #[test]
    fn a_file_without_services_is_refused() {
        let error = import(&json!({"version": "3"}), "x", &|_| Err(String::new())).unwrap_err();
        assert_eq!(error.0[0].pointer, "/services");
    }
}
