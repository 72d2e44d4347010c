//! The contract between fakecloud and a real OpenStack: the same requests, every kind of
//! call orch makes (and the failures it relies on), sent to both; their status codes, body
//! shapes (field names and JSON types, error bodies, pagination links) and the microversion
//! headers must agree. A difference fails the test unless `ACCEPTED` lists it with a reason.
//!
//! A shape is the structure of a body without its values: objects by field name, arrays by
//! their first element, and `null` compatible with any type (a field that is null in one
//! answer and a string in the other differs in value, not in shape).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fakecloud::{FakeCloud, FakeConfig};
use orch_cloud::client::auth_body;
use orch_cloud::CloudConfig;
use reqwest::Method;
use serde_json::{json, Value};

use crate::{cloud_config, clouds, ONE_AT_A_TIME};

/// Differences that are allowed, each with its reason: (step or `*`, path prefix, reason).
const ACCEPTED: &[(&str, &str, &str)] = &[
    (
        "*",
        "/extensions/0",
        "the list of extensions differs; fakecloud lists the ones orch uses",
    ),
    // Fields the real services show an admin only; fakecloud answers as a member would.
    ("*", "/server/OS-EXT-SRV-ATTR:", "admin-only server attributes"),
    ("*", "/servers/0/OS-EXT-SRV-ATTR:", "admin-only server attributes"),
    (
        "*",
        "/server/host_status",
        "admin-only (policy os_compute_api:servers:show:host_status)",
    ),
    (
        "*",
        "/servers/0/host_status",
        "admin-only (policy os_compute_api:servers:show:host_status)",
    ),
    ("*", "/port/binding:", "admin-only port binding attributes"),
    ("*", "/ports/0/binding:", "admin-only port binding attributes"),
    ("*", "/volume/os-vol-host-attr:", "admin-only volume attributes"),
    ("*", "/volume/os-vol-mig-status-attr:", "admin-only volume attributes"),
    ("*", "/volumes/0/os-vol-host-attr:", "admin-only volume attributes"),
    (
        "*",
        "/volumes/0/os-vol-mig-status-attr:",
        "admin-only volume attributes",
    ),
    // Timing: fakecloud shows a new server's addresses and groups at once, Nova once its
    // port is bound, a few seconds into the build.
    ("server", "/server/addresses/", "shown once the port is bound"),
    ("server", "/server/security_groups", "shown once the port is bound"),
    (
        "servers by tag",
        "/servers/0/addresses/",
        "shown once the port is bound",
    ),
    (
        "servers by tag",
        "/servers/0/security_groups",
        "shown once the port is bound",
    ),
    (
        "servers, one page",
        "/servers/0/addresses/",
        "shown once the port is bound",
    ),
    (
        "servers, one page",
        "/servers/0/security_groups",
        "shown once the port is bound",
    ),
    (
        "servers changed since",
        "/servers/0/addresses/",
        "shown once the port is bound",
    ),
    (
        "servers changed since",
        "/servers/0/security_groups",
        "shown once the port is bound",
    ),
];

/// Response headers that are part of the contract.
const HEADERS: &[&str] = &[
    "openstack-api-version",
    "x-openstack-nova-api-version",
    "x-subject-token",
];

/// One side of the comparison: a token and the endpoints of its catalog.
struct Target {
    http: reqwest::Client,
    token: String,
    endpoints: BTreeMap<&'static str, String>,
    vars: BTreeMap<String, String>,
}

/// What a target answered to one step.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<&'static str>,
    body: Value,
}

impl Target {
    async fn connect(config: &CloudConfig) -> Self {
        let http = reqwest::Client::new();
        let url = format!("{}/auth/tokens", config.auth_url.as_str().trim_end_matches('/'));
        let response = http
            .post(&url)
            .json(&auth_body(&config.credentials))
            .send()
            .await
            .unwrap();
        let token = response.headers()["x-subject-token"].to_str().unwrap().to_owned();
        let body: Value = response.json().await.unwrap();
        let catalog = body["token"]["catalog"].as_array().unwrap();
        let find = |types: &[&str]| -> String {
            types
                .iter()
                .find_map(|wanted| {
                    catalog
                        .iter()
                        .filter(|entry| entry["type"] == *wanted)
                        .find_map(|entry| {
                            entry["endpoints"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .find(|e| e["interface"] == "public" && e["region_id"] == config.region_name.as_str())
                                .map(|e| e["url"].as_str().unwrap().trim_end_matches('/').to_owned())
                        })
                })
                .unwrap_or_else(|| panic!("no {types:?} endpoint"))
        };
        let network = find(&["network"]);
        let image = find(&["image"]);
        let endpoints = BTreeMap::from([
            ("identity", config.auth_url.as_str().trim_end_matches('/').to_owned()),
            ("compute", find(&["compute"])),
            ("network", format!("{}/v2.0", network.trim_end_matches("/v2.0"))),
            ("volume", find(&["block-storage", "volumev3", "volume"])),
            ("image", format!("{}/v2", image.trim_end_matches("/v2"))),
        ]);
        let vars = BTreeMap::from([(
            "project".to_owned(),
            body["token"]["project"]["id"].as_str().unwrap().to_owned(),
        )]);
        Self {
            http,
            token,
            endpoints,
            vars,
        }
    }

    fn fill(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (name, value) in &self.vars {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }

    async fn send(&self, step: &Step) -> Answer {
        let url = format!("{}{}", self.endpoints[step.service], self.fill(&step.path));
        let mut request = self
            .http
            .request(step.method.clone(), url)
            .header("x-auth-token", &self.token)
            .header("accept", "application/json");
        if step.service == "compute" {
            request = request.header("openstack-api-version", "compute 2.52");
        }
        if let Some(body) = &step.body {
            let body: Value = serde_json::from_str(&self.fill(&body.to_string())).unwrap();
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = HEADERS
            .iter()
            .copied()
            .filter(|name| response.headers().contains_key(*name))
            .collect();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(if text.is_empty() { Value::Null } else { json!("<text>") });
        Answer { status, headers, body }
    }

    /// Sends the step, keeps what it saves, and waits where it waits.
    async fn run(&mut self, step: &Step) -> Answer {
        let answer = self.send(step).await;
        for (name, pointer) in step.save {
            if let Some(value) = answer.body.pointer(pointer).and_then(Value::as_str) {
                self.vars.insert((*name).to_owned(), value.to_owned());
            }
        }
        answer
    }

    /// Polls `path` until `pointer` reads `wanted`.
    async fn wait(&self, service: &'static str, path: &str, pointer: &str, wanted: &str) {
        let step = Step::new("wait", service, Method::GET, path);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let answer = self.send(&step).await;
            let now = answer
                .body
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if now == wanted {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {pointer} is '{now}', not '{wanted}'"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

struct Step {
    label: &'static str,
    service: &'static str,
    method: Method,
    path: String,
    body: Option<Value>,
    save: &'static [(&'static str, &'static str)],
}

impl Step {
    fn new(label: &'static str, service: &'static str, method: Method, path: &str) -> Self {
        Self {
            label,
            service,
            method,
            path: path.to_owned(),
            body: None,
            save: &[],
        }
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn save(mut self, save: &'static [(&'static str, &'static str)]) -> Self {
        self.save = save;
        self
    }
}

fn get(label: &'static str, service: &'static str, path: &str) -> Step {
    Step::new(label, service, Method::GET, path)
}

fn post(label: &'static str, service: &'static str, path: &str, body: Value) -> Step {
    Step::new(label, service, Method::POST, path).body(body)
}

fn put(label: &'static str, service: &'static str, path: &str, body: Value) -> Step {
    Step::new(label, service, Method::PUT, path).body(body)
}

fn delete(label: &'static str, service: &'static str, path: &str) -> Step {
    Step::new(label, service, Method::DELETE, path)
}

/// The structure of a JSON value without its values. A list's shape is the union of its
/// items' shapes: the two sides may list the same items in another order (Nova's order of
/// servers made in the same second is not fixed), and an item's own keys (metadata) must
/// not then read as a difference.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(shape).reduce(merge).into_iter().collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

/// Two shapes as one: every key of either, the first side's type where both have one.
fn merge(first: Value, second: Value) -> Value {
    match (first, second) {
        (Value::Object(mut first), Value::Object(second)) => {
            for (key, value) in second {
                let merged = match first.remove(&key) {
                    Some(mine) => merge(mine, value),
                    None => value,
                };
                first.insert(key, merged);
            }
            Value::Object(first)
        }
        (Value::Array(first), Value::Array(second)) => {
            Value::Array(first.into_iter().chain(second).reduce(merge).into_iter().collect())
        }
        (Value::Null, second) => second,
        (first, _) => first,
    }
}

/// Where two shapes differ, as (path, what).
fn differences(fake: &Value, real: &Value, path: &str, found: &mut Vec<(String, String)>) {
    match (fake, real) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(fake), Value::Object(real)) => {
            for (key, real_value) in real {
                let at = format!("{path}/{key}");
                match fake.get(key) {
                    Some(fake_value) => differences(fake_value, real_value, &at, found),
                    None => found.push((at, "missing in fakecloud".into())),
                }
            }
            for key in fake.keys().filter(|key| !real.contains_key(*key)) {
                found.push((format!("{path}/{key}"), "only in fakecloud".into()));
            }
        }
        (Value::Array(fake), Value::Array(real)) => {
            if let (Some(fake), Some(real)) = (fake.first(), real.first()) {
                differences(fake, real, &format!("{path}/0"), found);
            }
        }
        (fake, real) if fake == real => {}
        (fake, real) => found.push((path.to_owned(), format!("type: fakecloud {fake}, real {real}"))),
    }
}

fn accepted(step: &str, path: &str) -> bool {
    ACCEPTED
        .iter()
        .any(|(on, prefix, _)| (*on == "*" || *on == step) && path.starts_with(prefix))
}

/// The steps, in order; `{name}` is what an earlier step saved.
fn script(name: &str) -> Vec<Step> {
    let n = |suffix: &str| json!(format!("contract-{name}-{suffix}"));
    vec![
        get("extensions", "network", "/extensions"),
        post("network with tags", "network", "/networks", json!({"network": {"name": n("refused"), "tags": ["a"]}})),
        post("network", "network", "/networks", json!({"network": {"name": n("net"), "admin_state_up": true}})).save(&[("net", "/network/id")]),
        put("network tags", "network", "/networks/{net}/tags", json!({"tags": ["contract_a", "contract_b"]})),
        get("networks by tags", "network", "/networks?tags=contract_a,contract_b"),
        get("external networks", "network", "/networks?router:external=true").save(&[("public", "/networks/0/id")]),
        post("subnet with tags", "network", "/subnets", json!({"subnet": {"network_id": "{net}", "cidr": "10.91.1.0/24", "ip_version": 4, "tags": ["a"]}})),
        post("subnet", "network", "/subnets", json!({"subnet": {"name": n("subnet"), "network_id": "{net}", "cidr": "10.91.1.0/24", "ip_version": 4, "enable_dhcp": true, "dns_nameservers": []}})).save(&[("subnet", "/subnet/id")]),
        post("overlapping subnet", "network", "/subnets", json!({"subnet": {"network_id": "{net}", "cidr": "10.91.1.128/25", "ip_version": 4}})),
        put("subnet tags", "network", "/subnets/{subnet}/tags", json!({"tags": ["contract_a"]})),
        get("subnets by name", "network", &format!("/subnets?name=contract-{name}-subnet")),
        post("router with tags", "network", "/routers", json!({"router": {"name": n("refused"), "tags": ["a"]}})),
        post("router", "network", "/routers", json!({"router": {"name": n("router"), "admin_state_up": true, "external_gateway_info": {"network_id": "{public}"}}})).save(&[("router", "/router/id")]),
        put("router interface", "network", "/routers/{router}/add_router_interface", json!({"subnet_id": "{subnet}"})),
        put("router interface again", "network", "/routers/{router}/add_router_interface", json!({"subnet_id": "{subnet}"})),
        get("router interface ports", "network", "/ports?device_id={router}&device_owner=network:router_interface"),
        post("security group with tags", "network", "/security-groups", json!({"security_group": {"name": n("refused"), "tags": ["a"]}})),
        post("security group", "network", "/security-groups", json!({"security_group": {"name": n("sg"), "description": "contract"}})).save(&[("sg", "/security_group/id")]),
        post("rule", "network", "/security-group-rules", json!({"security_group_rule": {"security_group_id": "{sg}", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}})),
        post("duplicate rule", "network", "/security-group-rules", json!({"security_group_rule": {"security_group_id": "{sg}", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0"}})),
        get("rules of a group", "network", "/security-group-rules?security_group_id={sg}"),
        post("port with tags", "network", "/ports", json!({"port": {"name": n("port-a"), "network_id": "{net}", "fixed_ips": [{"subnet_id": "{subnet}"}], "tags": ["a"]}})).save(&[("port_a", "/port/id")]),
        post("ports in bulk", "network", "/ports", json!({"ports": [
            {"name": n("port-b"), "network_id": "{net}", "fixed_ips": [{"subnet_id": "{subnet}"}], "security_groups": ["{sg}"], "tags": ["a"]},
            {"name": n("port-c"), "network_id": "{net}", "fixed_ips": [{"subnet_id": "{subnet}"}], "tags": ["a"]}]})).save(&[("port_b", "/ports/0/id"), ("port_c", "/ports/1/id")]),
        put("port tags", "network", "/ports/{port_a}/tags", json!({"tags": ["contract_a"]})),
        get("ports of a network", "network", "/ports?network_id={net}"),
        delete("subnet in use", "network", "/subnets/{subnet}"),
        delete("network in use", "network", "/networks/{net}"),
        get("missing network", "network", "/networks/00000000-0000-0000-0000-000000000000"),
        get("flavors", "compute", "/flavors/detail"),
        get("image by name", "image", "/images?name=cirros").save(&[("image", "/images/0/id")]),
        get("missing image", "image", "/images/00000000-0000-0000-0000-000000000000"),
        post("server", "compute", "/servers", json!({"server": {"name": n("server-a"), "flavorRef": "1", "imageRef": "{image}", "networks": [{"port": "{port_a}"}], "metadata": {"orch_key": "a"}, "tags": ["contract_a"]}})).save(&[("server_a", "/server/id")]),
        post("second server", "compute", "/servers", json!({"server": {"name": n("server-b"), "flavorRef": "1", "imageRef": "{image}", "networks": [{"port": "{port_c}"}], "tags": ["contract_a"]}})).save(&[("server_b", "/server/id")]),
        get("server", "compute", "/servers/{server_a}"),
        get("servers by tag", "compute", "/servers/detail?tags=contract_a&limit=1000"),
        get("servers, one page", "compute", &format!("/servers/detail?name=^contract-{name}-&limit=1")),
        put("server tags while it builds", "compute", "/servers/{server_a}/tags", json!({"tags": ["contract_a", "contract_b"]})),
        get("missing server", "compute", "/servers/00000000-0000-0000-0000-000000000000"),
        post("volume", "volume", "/volumes", json!({"volume": {"name": n("volume"), "size": 1, "metadata": {"contract": name}}})).save(&[("volume", "/volume/id")]),
        post("volume of an unknown type", "volume", "/volumes", json!({"volume": {"name": n("refused"), "size": 1, "volume_type": "no-such-type"}})),
        get("volume", "volume", "/volumes/{volume}"),
        get("volumes by metadata", "volume", &format!("/volumes/detail?metadata={{\"contract\":\"{name}\"}}")),
        post("volume metadata", "volume", "/volumes/{volume}/metadata", json!({"metadata": {"orch_key": "v"}})),
        get("missing volume", "volume", "/volumes/00000000-0000-0000-0000-000000000000"),
    ]
}

/// Steps once the servers are ACTIVE and the volume available; a rebuild (ACTIVE is the
/// state Nova rebuilds from) and a delete mid-rebuild. Not here: resize. The
/// testbed's fake virt driver fails `confirmResize` (an AttributeError in nova-compute) and
/// leaves the server in ERROR; resize is tested against fakecloud only.
fn script_with_active_servers() -> Vec<Step> {
    vec![
        // Once both are ACTIVE: while they build, which of them the testbed's Nova lists
        // here varies from run to run (CI saw one run list server A first and another list
        // neither with A's metadata), so only a settled list is compared.
        get(
            "servers changed since",
            "compute",
            "/servers/detail?tags=contract_a&changes-since=2020-01-01T00:00:00Z",
        ),
        put(
            "server tags",
            "compute",
            "/servers/{server_a}/tags",
            json!({"tags": ["contract_a", "contract_b"]}),
        ),
        post(
            "attach",
            "compute",
            "/servers/{server_a}/os-volume_attachments",
            json!({"volumeAttachment": {"volumeId": "{volume}"}}),
        ),
        get("attachments", "compute", "/servers/{server_a}/os-volume_attachments"),
        delete("attached volume", "volume", "/volumes/{volume}"),
        post(
            "rebuild",
            "compute",
            "/servers/{server_b}/action",
            json!({"rebuild": {"imageRef": "{image}"}}),
        ),
        delete("server", "compute", "/servers/{server_b}"),
        get("server being deleted", "compute", "/servers/{server_b}"),
        post(
            "start an active server",
            "compute",
            "/servers/{server_a}/action",
            json!({"os-start": null}),
        ),
        post(
            "stop",
            "compute",
            "/servers/{server_a}/action",
            json!({"os-stop": null}),
        ),
    ]
}

/// Steps once server A is SHUTOFF (someone stopped it behind orch's back): a repair starts it.
fn script_with_a_stopped_server() -> Vec<Step> {
    vec![
        get("stopped server", "compute", "/servers/{server_a}"),
        post(
            "start",
            "compute",
            "/servers/{server_a}/action",
            json!({"os-start": null}),
        ),
    ]
}

/// Everything the script made, deleted in order on both sides (answers not compared).
async fn clean_up(target: &Target) {
    for path in ["/servers/{server_a}", "/servers/{server_b}"] {
        let _ = target.send(&delete("clean up", "compute", path)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for server in ["{server_a}", "{server_b}"] {
        while target
            .send(&get("gone", "compute", &format!("/servers/{server}")))
            .await
            .status
            != 404
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let volume = delete("clean up", "volume", "/volumes/{volume}");
    while target.send(&volume).await.status == 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let steps = [
        delete("clean up", "network", "/ports/{port_a}"),
        delete("clean up", "network", "/ports/{port_b}"),
        delete("clean up", "network", "/ports/{port_c}"),
        put(
            "clean up",
            "network",
            "/routers/{router}/remove_router_interface",
            json!({"subnet_id": "{subnet}"}),
        ),
        delete("clean up", "network", "/routers/{router}"),
        delete("clean up", "network", "/security-groups/{sg}"),
        delete("clean up", "network", "/subnets/{subnet}"),
        delete("clean up", "network", "/networks/{net}"),
    ];
    for step in &steps {
        let answer = target.send(step).await;
        assert!(
            answer.status < 300 || answer.status == 404,
            "{}: {} {}",
            step.path,
            answer.status,
            answer.body
        );
    }
}

struct Report {
    failures: Vec<String>,
    accepted: Vec<String>,
}

impl Report {
    fn compare(&mut self, step: &Step, fake: &Answer, real: &Answer) {
        if fake.status != real.status {
            self.failures.push(format!(
                "{}: status: fakecloud {}, real {} ({})",
                step.label, fake.status, real.status, real.body
            ));
            return;
        }
        if fake.headers != real.headers {
            self.failures.push(format!(
                "{}: headers: fakecloud {:?}, real {:?}",
                step.label, fake.headers, real.headers
            ));
        }
        let mut found = Vec::new();
        differences(&shape(&fake.body), &shape(&real.body), "", &mut found);
        for (path, what) in found {
            let line = format!("{}: {path}: {what}", step.label);
            if accepted(step.label, &path) {
                self.accepted.push(line);
            } else {
                self.failures.push(line);
            }
        }
    }
}

async fn run_both(fake: &mut Target, real: &mut Target, steps: &[Step], report: &mut Report) {
    for step in steps {
        let (fake_answer, real_answer) = (fake.run(step).await, real.run(step).await);
        report.compare(step, &fake_answer, &real_answer);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real OpenStack: ORCH_TEST_CLOUDS"]
async fn fakecloud_answers_every_call_orch_makes_as_the_real_cloud_does() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let cloud = clouds().remove(0);
    // Servers build for as long as the testbed's take, so that the steps sent while they
    // build find them building on both sides.
    let config = FakeConfig {
        boot_delay_ms: 10_000,
        ..FakeConfig::default()
    };
    let fakecloud = FakeCloud::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let fake_config = CloudConfig::password(&fakecloud.auth_url(), "admin", "fakecloud", "admin").unwrap();
    let mut fake = Target::connect(&fake_config).await;
    let mut real = Target::connect(&cloud_config(&cloud)).await;
    let name = crate::common::unique();
    let mut report = Report {
        failures: Vec::new(),
        accepted: Vec::new(),
    };
    run_both(&mut fake, &mut real, &script(&name), &mut report).await;
    for target in [&fake, &real] {
        target
            .wait("compute", "/servers/{server_a}", "/server/status", "ACTIVE")
            .await;
        target
            .wait("compute", "/servers/{server_b}", "/server/status", "ACTIVE")
            .await;
        target
            .wait("volume", "/volumes/{volume}", "/volume/status", "available")
            .await;
    }
    run_both(&mut fake, &mut real, &script_with_active_servers(), &mut report).await;
    for target in [&fake, &real] {
        target
            .wait("compute", "/servers/{server_a}", "/server/status", "SHUTOFF")
            .await;
    }
    run_both(&mut fake, &mut real, &script_with_a_stopped_server(), &mut report).await;
    clean_up(&real).await;
    clean_up(&fake).await;
    println!("accepted differences:\n  {}", report.accepted.join("\n  "));
    if let Ok(path) = std::env::var("CONTRACT_REPORT") {
        std::fs::write(path, report.failures.join("\n")).unwrap();
    }
    assert!(
        report.failures.is_empty(),
        "{} difference(s) between fakecloud and {cloud}:\n  {}",
        report.failures.len(),
        report.failures.join("\n  ")
    );
}

#[test]
fn shapes_compare_names_and_types_not_values() {
    let mut found = Vec::new();
    differences(
        &shape(&json!({"a": 1, "b": "x", "c": [{"d": true}], "e": null, "only": 1})),
        &shape(&json!({"a": 2, "b": 3, "c": [{"d": false, "f": 1}], "e": "set", "g": 0})),
        "",
        &mut found,
    );
    let paths: Vec<&str> = found.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(paths, ["/b", "/c/0/f", "/g", "/only"]);
}

#[test]
fn lists_compare_by_the_union_of_their_items_whatever_their_order() {
    let fake = json!({"servers": [{"id": "b", "metadata": {}}, {"id": "a", "metadata": {"orch_key": "a"}}]});
    let real = json!({"servers": [{"id": "a", "metadata": {"orch_key": "a"}}, {"id": "b", "metadata": {}}]});
    let mut found = Vec::new();
    differences(&shape(&fake), &shape(&real), "", &mut found);
    assert!(found.is_empty(), "{found:?}");
    let missing = json!({"servers": [{"id": "b", "metadata": {}}]});
    differences(&shape(&missing), &shape(&real), "", &mut found);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "/servers/0/metadata/orch_key");
}
