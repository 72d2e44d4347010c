//! The workflows end to end: a real Temporal dev server (the `temporal` CLI from PyPI), an
//! in-process worker, fakecloud, and a fresh SQLite state per test. Each test uses its own
//! task queue, so tests run in parallel against one dev server.

#[path = "workflows/cancel.rs"]
mod cancel;
mod common;
#[path = "workflows/containers.rs"]
mod containers;
#[path = "workflows/host_keys.rs"]
mod host_keys;
#[path = "workflows/real_services.rs"]
mod real_services;
#[path = "workflows/reconcile.rs"]
mod reconcile;
#[path = "workflows/update.rs"]
mod update;

use std::time::{Duration, Instant};

use common::{web_app_stack, Orch};
use fakecloud::{FakeCloud, FakeConfig};
use orch_cloud::{ClientLimits, CloudConfig, OpenStack};
use orch_core::{DeploymentStatus, OperationKind, Template};
use orch_store::Actor;
use orch_workflows::{relay_once, AnsibleSettings};
use serde_json::{json, Value};

/// Playbooks for the tests, against localhost with a local connection.
fn playbook_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("orch-playbooks-{}", common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("site.yml"),
        "- hosts: all\n  connection: local\n  gather_facts: false\n  vars:\n    ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n  tasks:\n    - name: write the greeting\n      ansible.builtin.copy:\n        content: \"{{ greeting }} from {{ inventory_hostname }}\\n\"\n        dest: \"{{ target }}\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("reach.yml"),
        "- hosts: all\n  gather_facts: false\n  tasks:\n    - name: reach the host over ssh\n      ansible.builtin.raw: echo reached\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("broken.yml"),
        "- hosts: all\n  connection: local\n  gather_facts: false\n  tasks:\n    - name: this task fails\n      ansible.builtin.command: /bin/false\n",
    )
    .unwrap();
    dir
}

/// orch against a fakecloud of the test's own.
struct Harness {
    orch: Orch,
    cloud: FakeCloud,
}

impl std::ops::Deref for Harness {
    type Target = Orch;
    fn deref(&self) -> &Orch {
        &self.orch
    }
}

async fn harness(configure: impl FnOnce(&mut FakeConfig)) -> Harness {
    harness_with(configure, fast_limits()).await
}

/// Quick retries and no pacing: fakecloud answers at once.
fn fast_limits() -> ClientLimits {
    ClientLimits {
        backoff_base: Duration::from_millis(50),
        requests_per_second: 0.0,
        ..ClientLimits::default()
    }
}

async fn harness_with(configure: impl FnOnce(&mut FakeConfig), limits: ClientLimits) -> Harness {
    harness_with_ansible(configure, limits, |_| {}).await
}

async fn harness_with_ansible(
    configure: impl FnOnce(&mut FakeConfig),
    limits: ClientLimits,
    ansible_settings: impl FnOnce(&mut AnsibleSettings),
) -> Harness {
    let mut fake = FakeConfig {
        boot_delay_ms: 300,
        delete_delay_ms: 100,
        volume_delay_ms: 100,
        ..FakeConfig::default()
    };
    configure(&mut fake);
    let cloud = FakeCloud::start("127.0.0.1:0".parse().unwrap(), fake).await.unwrap();
    let mut cloud_config = CloudConfig::password(&cloud.auth_url(), "admin", "fakecloud", "admin").unwrap();
    cloud_config.limits = limits;
    let ansible_playbook = std::env::var("ANSIBLE_PLAYBOOK")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../.venv/tools/bin/ansible-playbook"
            ))
            .to_path_buf()
        });
    let mut ansible = AnsibleSettings {
        playbook_dir: playbook_dir(),
        ansible_playbook,
        ..AnsibleSettings::default()
    };
    ansible_settings(&mut ansible);
    let orch = Orch::start(OpenStack::new(cloud_config).unwrap(), ansible).await;
    Harness { orch, cloud }
}

impl Harness {
    async fn inventory(&self) -> Value {
        reqwest::get(format!("{}/_fake/inventory", self.cloud.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn count(&self, kind: &str) -> usize {
        self.inventory().await[kind].as_array().unwrap().len()
    }

    async fn assert_empty(&self) {
        let inventory = self.inventory().await;
        for (kind, items) in inventory.as_object().unwrap() {
            assert_eq!(items.as_array().unwrap().len(), 0, "{kind} left behind: {items}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_web_app_stack_then_delete_it() {
    let h = harness(|_| {}).await;
    // The seed's stack, with a security group on the web tier and a volume per db server.
    let mut document = web_app_stack().to_value();
    document["security_groups"] = json!({"web": {"description": "web tier", "rules": [
        {"protocol": "tcp", "port_range_min": 443, "port_range_max": 443, "remote_ip_prefix": "0.0.0.0/0"},
        {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_group": "web"}
    ]}});
    document["vm_config"]["web"]["security_groups"] = json!(["web"]);
    document["vm_config"]["db"]["volumes"] = json!([{"size_gb": 20}]);
    let template = Template::parse(&document, "", None).unwrap();
    let id = h.create("shop", template, true).await;
    let deployment = h.settle(&id).await;
    assert_eq!(
        deployment.status,
        DeploymentStatus::Completed,
        "{:?}",
        deployment.status_reason
    );

    // Gentle on the cloud: one create per resource, no per-server lookups or polls.
    let stats: Value = reqwest::get(format!("{}/_fake/stats", h.cloud.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let count = |service: &str, method: &str| -> u64 {
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["service"] == service && r["method"] == method)
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count("compute", "POST"), 6 + 1, "six servers and one volume attachment");
    let compute_gets = count("compute", "GET");
    assert!(
        compute_gets <= 12,
        "{compute_gets} compute GETs for 6 servers: lookups and polls are batched"
    );

    let inventory = h.inventory().await;
    let servers = inventory["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 6);
    assert_eq!(h.count("networks").await, 1);
    assert_eq!(h.count("subnets").await, 3);
    assert_eq!(h.count("routers").await, 1);
    let groups = inventory["security_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let rules: Vec<&Value> = groups[0]["security_group_rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["direction"] == "ingress")
        .collect();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(
        rules.iter().any(|r| r["remote_group_id"] == groups[0]["id"]),
        "the ssh rule refers to the group itself"
    );
    let volumes = inventory["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0]["status"], "in-use");
    assert_eq!(volumes[0]["size"], 20);
    let web_ports: Vec<&Value> = inventory["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().unwrap_or_default().contains("port-web"))
        .collect();
    assert_eq!(web_ports.len(), 2);
    assert!(
        web_ports
            .iter()
            .all(|p| p["security_groups"] == json!([groups[0]["id"]])),
        "{web_ports:?}"
    );
    for server in servers {
        assert_eq!(server["status"], "ACTIVE");
        let tags: Vec<&str> = server["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(tags.contains(&format!("orch_deployment={id}").as_str()), "{tags:?}");
    }
    let mut names: Vec<&str> = servers.iter().map(|s| s["name"].as_str().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 6, "no server exists twice");

    // Every cloud id is recorded, with addresses from the right subnets.
    let resources = h.store.resources(&id).await.unwrap();
    let recorded_servers: Vec<_> = resources.iter().filter(|r| r.kind == "server").collect();
    assert_eq!(recorded_servers.len(), 6);
    for server in &recorded_servers {
        assert_eq!(server.status, "ACTIVE");
        let group = server.attributes["group"].as_str().unwrap();
        let prefix = match group {
            "web" => "10.0.1.",
            "app" => "10.0.2.",
            _ => "10.0.3.",
        };
        assert!(
            server.attributes["ip"].as_str().unwrap().starts_with(prefix),
            "{server:?}"
        );
    }
    assert!(resources.iter().any(|r| r.kind == "network"));
    let events: Vec<String> = h
        .store
        .events(&id, 100, 0)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        events,
        ["deployment.created", "operation.started", "operation.succeeded"]
    );

    // A second relay pass starts nothing new: the operation is done.
    relay_once(&h.store, &h.client, &h.task_queue).await.unwrap();
    assert_eq!(h.count("servers").await, 6);

    h.store.delete_deployment(&id, &Actor::default()).await.unwrap();
    let deleted = h.settle(&id).await;
    assert_eq!(deleted.status, DeploymentStatus::Deleted);
    assert!(deleted.deleted_at.is_some());
    h.assert_empty().await;
    assert!(h.store.resources(&id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_in_error_fails_the_deploy_and_compensation_removes_everything() {
    let h = harness(|config| config.server_error_rate = 1.0).await;
    let id = h.create("broken", web_app_stack(), true).await;
    let deployment = h.settle(&id).await;
    assert_eq!(deployment.status, DeploymentStatus::Failed);
    let reason = deployment.status_reason.unwrap();
    assert!(reason.contains("ERROR") && reason.contains("No valid host"), "{reason}");
    h.assert_empty().await;
    let events: Vec<String> = h
        .store
        .events(&id, 100, 0)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(events.contains(&"compensation.started".to_owned()), "{events:?}");
    assert_eq!(events.last().unwrap(), "operation.failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quota_error_fails_at_once_and_rollback_false_keeps_resources() {
    let h = harness(|config| config.quotas.instances = 4).await;
    let started = Instant::now();
    let id = h.create("too-big", web_app_stack(), false).await;
    let deployment = h.settle(&id).await;
    assert_eq!(deployment.status, DeploymentStatus::Failed);
    assert!(
        deployment.status_reason.as_deref().unwrap().contains("Quota exceeded"),
        "{:?}",
        deployment.status_reason
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a quota error is not retried for long"
    );
    // Kept for inspection: the network and the servers that fit.
    assert_eq!(h.count("networks").await, 1);
    assert!(h.count("servers").await <= 4);
    // Retried with room in the quota, it resumes from what exists: nothing twice.
    let kept: Vec<String> = h.inventory().await["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    reqwest::Client::new()
        .put(format!("{}/_fake/config", h.cloud.url))
        .json(&json!({"quotas": {"instances": 100}}))
        .send()
        .await
        .unwrap();
    h.store.retry_operation(&id, &Actor::default()).await.unwrap();
    let retried = h.settle(&id).await;
    assert_eq!(
        retried.status,
        DeploymentStatus::Completed,
        "{:?}",
        retried.status_reason
    );
    let servers: Vec<String> = h.inventory().await["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(servers.len(), 6);
    assert!(
        kept.iter().all(|id| servers.contains(id)),
        "the servers made before the failure were adopted"
    );
    // A deployment can be deleted, and the delete finds everything by its tags.
    h.store.delete_deployment(&id, &Actor::default()).await.unwrap();
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Deleted);
    h.assert_empty().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_starts_operations_committed_before_a_crash_and_a_second_start_is_a_no_op() {
    let h = harness(|_| {}).await;
    let mut template = web_app_stack();
    template.vm_config.retain(|group, _| group == "web");
    // The deployment and its operation are committed, and no workflow was started: what a
    // crash between the commit and the start leaves behind.
    let id = h.create("after-crash", template, true).await;
    let operation = h.store.operation_in_flight(&id).await.unwrap().unwrap();
    assert_eq!(operation.kind, OperationKind::Create);
    assert_eq!(h.store.deployment(&id).await.unwrap().status, DeploymentStatus::Pending);
    // Two relays race to start it.
    let (first, second) = tokio::join!(
        orch_workflows::start_operation(&h.client, &h.task_queue, &operation),
        orch_workflows::start_operation(&h.client, &h.task_queue, &operation)
    );
    first.unwrap();
    second.unwrap();
    let deployment = h.settle(&id).await;
    assert_eq!(
        deployment.status,
        DeploymentStatus::Completed,
        "{:?}",
        deployment.status_reason
    );
    assert_eq!(h.count("servers").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_then_in_removes_the_newest_first() {
    let h = harness(|_| {}).await;
    let mut template = web_app_stack();
    template.vm_config.retain(|group, _| group == "web");
    template.vm_config.get_mut("web").unwrap().min_count = 1;
    let id = h.create("elastic", template, true).await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let actor = Actor::default();
    h.store
        .request_operation(
            &id,
            OperationKind::Scale,
            &json!({"target_count": 4, "vm_type": "web"}),
            &actor,
        )
        .await
        .unwrap();
    let scaled = h.settle(&id).await;
    assert_eq!(scaled.status, DeploymentStatus::Completed, "{:?}", scaled.status_reason);
    assert_eq!(scaled.parameters["web_count"], 4);
    assert_eq!(h.count("servers").await, 4);

    h.store
        .request_operation(
            &id,
            OperationKind::Scale,
            &json!({"target_count": 1, "vm_type": "web"}),
            &actor,
        )
        .await
        .unwrap();
    let scaled = h.settle(&id).await;
    assert_eq!(scaled.status, DeploymentStatus::Completed, "{:?}", scaled.status_reason);
    let keys: Vec<String> = h
        .store
        .resources(&id)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == "server")
        .map(|r| r.logical_key)
        .collect();
    assert_eq!(keys, ["server:web:0"], "the oldest server stays");
    assert_eq!(h.count("servers").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_adds_a_group_and_resizes() {
    let h = harness(|_| {}).await;
    let mut template = web_app_stack();
    template.vm_config.retain(|group, _| group == "web");
    let id = h.create("growing", template.clone(), true).await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let mut bigger = web_app_stack();
    bigger.vm_config.retain(|group, _| group != "app");
    bigger.vm_config.get_mut("web").unwrap().flavor = "m1.medium".into();
    let payload = json!({"template_id": null, "template": bigger.to_value(), "parameters": {}});
    let updated = h.operate(&id, OperationKind::Update, &payload).await;
    assert_eq!(
        updated.status,
        DeploymentStatus::Completed,
        "{:?}",
        updated.status_reason
    );
    assert!(updated.template.vm_config.contains_key("db"));
    let inventory = h.inventory().await;
    let servers = inventory["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3);
    let web: Vec<&Value> = servers
        .iter()
        .filter(|s| s["metadata"]["orch_key"].as_str().unwrap().starts_with("server:web"))
        .collect();
    assert!(
        web.iter().all(|s| s["flavor"]["original_name"] == "m1.medium"),
        "{web:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configure_runs_a_real_playbook_and_names_the_failing_task() {
    let h = harness(|_| {}).await;
    let mut template = web_app_stack();
    template.vm_config.retain(|group, _| group == "db");
    let id = h.create("configured", template, true).await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let target = std::env::temp_dir().join(format!("orch-greeting-{}", std::process::id()));
    let request = json!({"playbook": "site.yml", "inventory": {"local": ["localhost"]},
                         "extra_vars": {"greeting": "hello; rm -rf /", "target": target}});
    let (_, operation) = h
        .store
        .request_operation(&id, OperationKind::Configure, &request, &Actor::default())
        .await
        .unwrap();
    let configured = h.settle(&id).await;
    assert_eq!(
        configured.status,
        DeploymentStatus::Completed,
        "{:?}",
        configured.status_reason
    );
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "hello; rm -rf / from localhost\n",
        "extra vars are data, not shell"
    );
    let run = h.store.configuration_run(&id, &operation.id).await.unwrap();
    assert_eq!(run.status, "SUCCEEDED");
    assert!(run.output.contains("PLAY RECAP"), "{}", run.output);

    let request = json!({"playbook": "broken.yml", "inventory": {"local": ["localhost"]}});
    let (_, operation) = h
        .store
        .request_operation(&id, OperationKind::Configure, &request, &Actor::default())
        .await
        .unwrap();
    let failed = h.settle(&id).await;
    assert_eq!(failed.status, DeploymentStatus::Failed);
    assert!(
        failed.status_reason.as_deref().unwrap().contains("this task fails"),
        "{:?}",
        failed.status_reason
    );
    let run = h.store.configuration_run(&id, &operation.id).await.unwrap();
    assert_eq!(
        (run.status.as_str(), run.failed_task.as_deref()),
        ("FAILED", Some("this task fails"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_servers_under_a_rate_limit_and_injected_errors_exist_once_each() {
    // The cloud admits 100 requests/s and fails 5 % of all requests; orch paces itself at 90.
    let limits = ClientLimits {
        backoff_base: Duration::from_millis(50),
        requests_per_second: 90.0,
        breaker_threshold: 20,
        ..ClientLimits::default()
    };
    let h = harness_with(
        |config| {
            config.rate_limit_rps = 100.0;
            config.error_rate = 0.05;
            config.boot_delay_ms = 1_000;
        },
        limits,
    )
    .await;
    let mut template = web_app_stack();
    template.vm_config.retain(|group, _| group == "web");
    template.vm_config.get_mut("web").unwrap().count = 200;
    let id = h.create("two-hundred", template, true).await;
    let deployment = h.settle(&id).await;
    assert_eq!(
        deployment.status,
        DeploymentStatus::Completed,
        "{:?}",
        deployment.status_reason
    );
    let inventory = h.inventory().await;
    let servers = inventory["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 200);
    let mut keys: Vec<&str> = servers
        .iter()
        .map(|s| s["metadata"]["orch_key"].as_str().unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 200, "no server exists twice");
    assert_eq!(
        inventory["ports"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["device_owner"] == "compute:nova")
            .count(),
        200
    );
    let stats: Value = reqwest::get(format!("{}/_fake/stats", h.cloud.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_status = |code: u64| -> u64 {
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == code)
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    assert!(by_status(500) + by_status(503) > 0, "faults were injected");
    let limited: Vec<&Value> = stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 429)
        .collect();
    assert_eq!(
        by_status(429),
        0,
        "orch stayed below the cloud's rate limit: {limited:?}"
    );
}

/// A crash between a create and its tagging, or a cloud that drops tags, leaves resources
/// without their tags: the deploy adopts them by name instead of making second copies, and
/// the delete finds them (and a port nobody recorded) so that nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resources_that_never_got_their_tags_are_adopted_and_deleted_not_duplicated() {
    let h = harness(|_| {}).await;
    let mut template = web_app_stack();
    template.vm_config.retain(|group, _| group == "web");
    let id = h.create("untagged", template, true).await;
    // What a worker that died between the creates and the tag requests left behind.
    let cloud_config = CloudConfig::password(&h.cloud.auth_url(), "admin", "fakecloud", "admin").unwrap();
    let other = OpenStack::new(cloud_config).unwrap();
    let key = |logical: &str| orch_cloud::ResourceKey::new(&id, logical).unwrap();
    let network = other.create_network(&key("network").name(), &[]).await.unwrap();
    let port = other
        .create_port(&key("port:web:0").name(), &network.id, None, &[], &[])
        .await
        .unwrap();
    let stray = other.create_port("", &network.id, None, &[], &[]).await.unwrap();

    let deployment = h.settle(&id).await;
    assert_eq!(
        deployment.status,
        DeploymentStatus::Completed,
        "{:?}",
        deployment.status_reason
    );
    let inventory = h.inventory().await;
    assert_eq!(
        inventory["networks"].as_array().unwrap().len(),
        1,
        "the adopted network only"
    );
    let adopted = inventory["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == network.id.as_str())
        .unwrap();
    assert!(adopted["tags"]
        .as_array()
        .unwrap()
        .contains(&json!(format!("orch_deployment={id}"))));
    let server_ports: Vec<&Value> = inventory["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().unwrap_or_default().contains("-port-web-"))
        .collect();
    assert_eq!(server_ports.len(), 2, "no port twice: {server_ports:?}");
    assert!(server_ports
        .iter()
        .any(|p| p["id"] == port.id.as_str() && p["device_owner"] == "compute:nova"));

    h.store.delete_deployment(&id, &Actor::default()).await.unwrap();
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Deleted);
    let inventory = h.inventory().await;
    assert!(
        inventory["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["id"] != stray.id.as_str()),
        "the stray port on the deployment's network went with it"
    );
    h.assert_empty().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compute_outage_during_a_deploy_is_waited_out_not_failed() {
    let h = harness(|_| {}).await;
    let id = h.create("outage", web_app_stack(), true).await;
    // Longer than the client's own retries, and long enough to open the circuit: the flavor
    // look-up fails as unavailable, which the workflow retries instead of failing at once.
    reqwest::Client::new()
        .post(format!("{}/_fake/outage", h.cloud.url))
        .json(&json!({"service": "compute", "duration_ms": 5000}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let deployment = h.settle(&id).await;
    assert_eq!(
        deployment.status,
        DeploymentStatus::Completed,
        "{:?}",
        deployment.status_reason
    );
    assert_eq!(h.count("servers").await, 6, "every server once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_volume_in_error_fails_the_deploy_instead_of_being_attached() {
    let h = harness(|config| config.volume_error_rate = 1.0).await;
    let mut document = web_app_stack().to_value();
    document["vm_config"]["db"]["volumes"] = json!([{"size_gb": 10}]);
    let template = Template::parse(&document, "", None).unwrap();
    let id = h.create("broken-disk", template, true).await;
    let deployment = h.settle(&id).await;
    assert_eq!(deployment.status, DeploymentStatus::Failed);
    let reason = deployment.status_reason.unwrap_or_default();
    assert!(
        reason.contains("went to error"),
        "the volume's own state is the cause: {reason}"
    );
    assert!(!reason.contains("compensation failed"), "{reason}");
    h.assert_empty().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_removes_the_subnets_and_security_groups_the_template_dropped() {
    let h = harness(|_| {}).await;
    let rule = json!([{"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"}]);
    let before = json!({
      "name": "shrinking",
      "vm_config": {
        "web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 2, "security_groups": ["web"]},
        "db": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 1, "security_groups": ["db"]}
      },
      "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24", "db": "10.0.3.0/24"}},
      "security_groups": {"web": {"rules": rule}, "db": {"rules": rule}}
    });
    let id = h
        .create("shrinking", Template::parse(&before, "", None).unwrap(), true)
        .await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    // The db group, its subnet and its security group go; web stays but drops its group.
    let after = json!({
      "name": "shrinking",
      "vm_config": {"web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 2}},
      "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24"}}
    });
    let payload = json!({"template_id": null, "template": after, "parameters": {}});
    let updated = h.operate(&id, OperationKind::Update, &payload).await;
    assert_eq!(
        updated.status,
        DeploymentStatus::Completed,
        "{:?}",
        updated.status_reason
    );
    let inventory = h.inventory().await;
    let names = |kind: &str| -> Vec<String> {
        inventory[kind]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|item| item["name"].as_str().map(str::to_owned))
            .filter(|name| name.starts_with("orch-"))
            .collect()
    };
    assert_eq!(names("subnets").len(), 1, "only web's subnet: {:?}", names("subnets"));
    assert!(
        names("security_groups").is_empty(),
        "both groups removed: {:?}",
        names("security_groups")
    );
    assert_eq!(names("servers").len(), 2, "{:?}", names("servers"));
    let ports = inventory["ports"].as_array().unwrap();
    assert!(
        ports.iter().all(|port| port["security_groups"]
            .as_array()
            .is_none_or(|groups| groups.is_empty())),
        "no port still carries a removed group: {ports:?}"
    );
    let recorded: Vec<String> = h
        .store
        .resources(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.logical_key)
        .collect();
    assert!(
        !recorded.iter().any(|key| key.contains("db")),
        "the store forgot what was removed: {recorded:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scale_out_that_fails_returns_to_the_previous_spec() {
    let h = harness(|config| config.quotas.instances = 3).await;
    let mut template = web_app_stack();
    template.vm_config.retain(|group, _| group == "web");
    let id = h.create("capped", template, true).await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let servers_before: Vec<String> = h.inventory().await["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|server| server["id"].as_str().unwrap().to_owned())
        .collect();
    // Two servers exist; the quota has room for one more of the three asked for.
    let scale = json!({"target_count": 5, "vm_type": "web"});
    let failed = h.operate(&id, OperationKind::Scale, &scale).await;
    assert_eq!(failed.status, DeploymentStatus::Failed);
    let reason = failed.status_reason.unwrap_or_default();
    assert!(
        reason.contains("Quota exceeded") && reason.contains("reverted to the previous spec"),
        "{reason}"
    );
    assert_eq!(
        failed.parameters.get("web_count"),
        None,
        "the deployment still stands for two"
    );
    let mut servers_after: Vec<String> = h.inventory().await["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|server| server["id"].as_str().unwrap().to_owned())
        .collect();
    servers_after.sort();
    let mut servers_before = servers_before;
    servers_before.sort();
    assert_eq!(
        servers_after, servers_before,
        "the server the scale made is gone, the others untouched"
    );
    let inventory = h.inventory().await;
    let server_ports: Vec<&Value> = inventory["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|port| port["name"].as_str().unwrap_or_default().contains("-port-web-"))
        .collect();
    assert_eq!(
        server_ports.len(),
        2,
        "the ports made for servers that never came go too: {server_ports:?}"
    );
    let recorded = h.store.resources(&id).await.unwrap();
    assert_eq!(
        recorded.iter().filter(|r| r.kind == "server").count(),
        2,
        "{recorded:?}"
    );
    assert_eq!(recorded.iter().filter(|r| r.kind == "port").count(), 2, "{recorded:?}");
}
