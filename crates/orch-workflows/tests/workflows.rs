//! The workflows end to end: a real Temporal dev server (the `temporal` CLI from PyPI), an
//! in-process worker, fakecloud, and a fresh SQLite state per test. Each test uses its own
//! task queue, so tests run in parallel against one dev server.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fakecloud::{FakeCloud, FakeConfig};
use orch_cloud::{ClientLimits, CloudConfig, OpenStack};
use orch_core::{DeploymentStatus, OperationKind, Template};
use orch_store::deployments::NewDeployment;
use orch_store::{Actor, Store, StoreOptions};
use orch_workflows::devserver::{temporal_cli, DevServer};
use orch_workflows::{connect, relay_once, run_worker, AnsibleSettings, OrchActivities};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// One dev server per test binary, started on first use; it stops when the binary ends.
fn dev_server() -> &'static str {
    static SERVER: OnceLock<DevServer> = OnceLock::new();
    &SERVER
        .get_or_init(|| {
            let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
            let db = std::env::temp_dir().join(format!("orch-temporal-{}.db", std::process::id()));
            DevServer::start(&temporal_cli(root), &db)
                .unwrap_or_else(|error| panic!("{error}; run scripts/test.sh, which installs the temporal CLI"))
        })
        .address
}

/// Playbooks for the tests, against localhost with a local connection.
fn playbook_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("orch-playbooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("site.yml"),
        "- hosts: all\n  connection: local\n  gather_facts: false\n  vars:\n    ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n  tasks:\n    - name: write the greeting\n      ansible.builtin.copy:\n        content: \"{{ greeting }} from {{ inventory_hostname }}\\n\"\n        dest: \"{{ target }}\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("broken.yml"),
        "- hosts: all\n  connection: local\n  gather_facts: false\n  tasks:\n    - name: this task fails\n      ansible.builtin.command: /bin/false\n",
    )
    .unwrap();
    dir
}

struct Harness {
    store: Store,
    cloud: FakeCloud,
    client: temporalio_client::Client,
    task_queue: String,
    stop_worker: Option<oneshot::Sender<()>>,
}

async fn harness(configure: impl FnOnce(&mut FakeConfig)) -> Harness {
    let limits = ClientLimits {
        backoff_base: Duration::from_millis(50),
        requests_per_second: 0.0,
        ..ClientLimits::default()
    };
    harness_with(configure, limits).await
}

async fn harness_with(configure: impl FnOnce(&mut FakeConfig), limits: ClientLimits) -> Harness {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
    let mut fake = FakeConfig {
        boot_delay_ms: 300,
        delete_delay_ms: 100,
        volume_delay_ms: 100,
        ..FakeConfig::default()
    };
    configure(&mut fake);
    let cloud = FakeCloud::start("127.0.0.1:0".parse().unwrap(), fake).await.unwrap();
    let dir = std::env::temp_dir().join(format!("orch-wf-{}", uuid_like()));
    let store = Store::connect(&format!("sqlite://{}/orch.db", dir.display()), &StoreOptions::default())
        .await
        .unwrap();
    let mut cloud_config = CloudConfig::password(&cloud.auth_url(), "admin", "fakecloud", "admin").unwrap();
    cloud_config.limits = limits;
    let openstack = OpenStack::new(cloud_config).unwrap();
    let address = dev_server().to_owned();
    let client = connect_with_retry(&address).await;
    let task_queue = format!("orch-test-{}", uuid_like());
    let (stop_worker, stopped) = oneshot::channel::<()>();
    let activities = OrchActivities {
        store: store.clone(),
        cloud: openstack,
    };
    let ansible_playbook = std::env::var("ANSIBLE_PLAYBOOK")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../.venv/tools/bin/ansible-playbook"
            ))
            .to_path_buf()
        });
    let ansible = AnsibleSettings {
        playbook_dir: playbook_dir(),
        ansible_playbook,
        ..AnsibleSettings::default()
    };
    let queue = task_queue.clone();
    // The worker's future is not Send: it runs on a thread of its own.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let client = connect_with_retry(&address).await;
            run_worker(client, &queue, activities, ansible, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    Harness {
        store,
        cloud,
        client,
        task_queue,
        stop_worker: Some(stop_worker),
    }
}

async fn connect_with_retry(address: &str) -> temporalio_client::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match connect(address, "default").await {
            Ok(client) => return client,
            Err(error) => {
                assert!(Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        Instant::now().elapsed().subsec_nanos()
    )
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_worker.take() {
            let _ = stop.send(());
        }
    }
}

fn web_app_stack() -> Template {
    Template::parse(
        &json!({
          "name": "web-app-stack",
          "description": "3-tier web application",
          "vm_config": {
            "web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 2},
            "app": {"flavor": "m1.medium", "image": "ubuntu-22.04", "count": 3},
            "db": {"flavor": "m1.large", "image": "ubuntu-22.04", "count": 1}
          },
          "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24", "app": "10.0.2.0/24", "db": "10.0.3.0/24"}}
        }),
        "",
        None,
    )
    .unwrap()
}

impl Harness {
    async fn create(&self, name: &str, template: Template, rollback: bool) -> String {
        let new = NewDeployment {
            name: name.into(),
            template_id: None,
            template,
            parameters: json!({}),
            cloud_region: "RegionOne".into(),
            rollback,
        };
        self.store
            .create_deployment(&new, &Actor::default())
            .await
            .unwrap()
            .0
            .id
    }

    /// Starts whatever is pending, then waits until the deployment leaves `transient`.
    async fn settle(&self, id: &str) -> orch_store::DeploymentRecord {
        relay_once(&self.store, &self.client, &self.task_queue).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            // In this order: a deployment read before the check could be stale.
            let in_flight = self.store.operation_in_flight(id).await.unwrap();
            let deployment = self.store.deployment(id).await.unwrap();
            if in_flight.is_none() {
                return deployment;
            }
            assert!(
                Instant::now() < deadline,
                "deployment {id} still {:?}",
                deployment.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

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
    h.store
        .request_operation(&id, OperationKind::Update, &payload, &Actor::default())
        .await
        .unwrap();
    let updated = h.settle(&id).await;
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
