//! Nothing is lost when a worker dies: `orch serve` and `orch worker` as separate processes
//! against a real Temporal dev server and fakecloud; the worker is killed with SIGKILL in the
//! middle of a deploy, a new one takes over, and the deploy completes with no resource twice.
//! Both also reach a Temporal that insists on TLS, a client certificate and an API key.

mod common;
#[path = "crash/secure_temporal.rs"]
mod secure_temporal;

use std::process::{Command, Stdio};

use common::{labelled, EngineGuard, Running};
use std::time::{Duration, Instant};

use fakecloud::{FakeCloud, FakeConfig};
use orch_workflows::devserver::{temporal_cli, DevServer};
use serde_json::{json, Value};

const KEY: &str = "crash-test-key-0123456789";

/// `orch COMMAND` against `temporal` and the fakecloud at `auth_url`, with `env` besides.
fn orch(dir: &std::path::Path, temporal: &str, auth_url: &str, env: &[(String, String)], command: &str) -> Command {
    let mut command_line = Command::new(env!("CARGO_BIN_EXE_orch"));
    command_line
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("API_KEYS", format!("{KEY}:write"))
        .env("API_PORT", "0")
        .env("LOG_LEVEL", "warn")
        .env("TEMPORAL_HOST", temporal)
        .env("OPENSTACK_AUTH_URL", auth_url)
        .env("OPENSTACK_USERNAME", "admin")
        .env("OPENSTACK_PASSWORD", "fakecloud")
        .env("OPENSTACK_PROJECT_NAME", "admin")
        .envs(env.iter().map(|(name, value)| (name, value)))
        .arg(command)
        .stdin(Stdio::null());
    command_line
}

/// What both crash tests run: fakecloud, a Temporal dev server, `orch serve` and a first
/// `orch worker`, each stopped when the scene drops.
struct Scene {
    // Fields drop in this order: the processes first, the runtime last.
    server: Option<Running>,
    _temporal: DevServer,
    /// Where orch reaches Temporal, and the settings that secure it.
    temporal_address: String,
    temporal_env: Vec<(String, String)>,
    cloud: FakeCloud,
    dir: std::path::PathBuf,
    url: String,
    runtime: tokio::runtime::Runtime,
}

impl Scene {
    fn start(name: &str, fake: FakeConfig) -> (Self, Running) {
        Self::start_with(name, fake, |address, _, _| (address.to_owned(), Vec::new()))
    }

    /// A scene whose Temporal is reached through `front`: given the dev server's address, the
    /// scene's directory and runtime, it returns the address orch uses and its settings.
    fn start_with(
        name: &str,
        fake: FakeConfig,
        front: impl FnOnce(&str, &std::path::Path, &tokio::runtime::Runtime) -> (String, Vec<(String, String)>),
    ) -> (Self, Running) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cloud = runtime
            .block_on(FakeCloud::start("127.0.0.1:0".parse().unwrap(), fake))
            .unwrap();
        let dir = std::env::temp_dir().join(format!("orch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let temporal = DevServer::start(&temporal_cli(root), &dir.join("temporal.db"))
            .expect("temporal CLI (scripts/test.sh installs it)");
        let (temporal_address, temporal_env) = front(&temporal.address, &dir, &runtime);
        let mut server = Running(
            orch(&dir, &temporal_address, &cloud.auth_url(), &temporal_env, "serve")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let url = common::listening_url(&mut server);
        let scene = Self {
            server: Some(server),
            _temporal: temporal,
            temporal_address,
            temporal_env,
            cloud,
            dir,
            url,
            runtime,
        };
        let first_worker = scene.worker();
        (scene, first_worker)
    }

    /// The first `orch serve`, to stop it; the scene keeps running without it.
    fn take_server(&mut self) -> Running {
        self.server.take().expect("the first server is still the scene's")
    }

    fn worker(&self) -> Running {
        let child = self
            .orch(&self.cloud.auth_url(), "worker")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Running(child)
    }

    /// Another `orch serve` on the same database and Temporal; its process and URL.
    fn another_server(&self) -> (Running, String) {
        let mut server = Running(
            self.orch(&self.cloud.auth_url(), "serve")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let url = common::listening_url(&mut server);
        (server, url)
    }

    fn orch(&self, auth_url: &str, command: &str) -> Command {
        orch(&self.dir, &self.temporal_address, auth_url, &self.temporal_env, command)
    }

    /// A worker with no cloud configured: it runs containers only.
    fn worker_without_cloud(&self) -> Running {
        let child = self
            .orch("", "worker")
            .env_remove("OPENSTACK_AUTH_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Running(child)
    }

    /// Asks for a deployment of `template`; its id.
    async fn deploy(&self, http: &reqwest::Client, name: &str, template: Value) -> String {
        let accepted: Value = http
            .post(format!("{}/deployments", self.url))
            .header("X-API-Key", KEY)
            .json(&json!({"name": name, "template": template}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        accepted["id"].as_str().unwrap().to_owned()
    }

    /// Deploys one server on its own network under `name` and waits until it is COMPLETED.
    async fn deploy_one_server(&self, http: &reqwest::Client, name: &str) {
        let template = json!({
          "vm_config": {"web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 1}},
          "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24"}}
        });
        let id = self.deploy(http, name, template).await;
        let deployment = self.deployed(http, &id).await;
        assert_eq!(deployment["status"], "COMPLETED", "{deployment}");
    }

    /// Waits until the deploy of `id` is over, and returns the deployment.
    async fn deployed(&self, http: &reqwest::Client, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let deployment: Value = http
                .get(format!("{}/deployments/{id}", self.url))
                .header("X-API-Key", KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if deployment["status"] != "PENDING" && deployment["status"] != "IN_PROGRESS" {
                return deployment;
            }
            assert!(Instant::now() < deadline, "still {}", deployment["status"]);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[test]
fn a_worker_killed_mid_deploy_is_replaced_and_the_deploy_completes_without_duplicates() {
    let fake = FakeConfig {
        boot_delay_ms: 3_000,
        create_latency_ms: 100,
        ..FakeConfig::default()
    };
    let (scene, mut first_worker) = Scene::start("crash", fake);
    scene.runtime.block_on(async {
        let http = reqwest::Client::new();
        let template = json!({
          "vm_config": {
            "web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 2},
            "app": {"flavor": "m1.medium", "image": "ubuntu-22.04", "count": 3},
            "db": {"flavor": "m1.large", "image": "ubuntu-22.04", "count": 1}
          },
          "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24", "app": "10.0.2.0/24", "db": "10.0.3.0/24"}}
        });
        let id = scene.deploy(&http, "survivor", template).await;
        let inventory = || async { reqwest::get(format!("{}/_fake/inventory", scene.cloud.url)).await.unwrap().json::<Value>().await.unwrap() };

        // Kill the worker once servers exist but before they are ACTIVE.
        let deadline = Instant::now() + Duration::from_secs(60);
        while inventory().await["servers"].as_array().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no server was created");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first_worker.kill().unwrap();
        first_worker.wait().unwrap();
        let _second_worker = scene.worker();

        let deployment = scene.deployed(&http, &id).await;
        assert_eq!(deployment["status"], "COMPLETED", "{deployment}");
        assert_eq!(deployment["resources"]["vm_ids"].as_array().unwrap().len(), 6);
        let inventory = inventory().await;
        let servers = inventory["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 6, "no server exists twice: {servers:?}");
        let mut keys: Vec<&str> = servers.iter().map(|s| s["metadata"]["orch_key"].as_str().unwrap()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 6);
        assert_eq!(inventory["networks"].as_array().unwrap().len(), 1);
        assert_eq!(inventory["subnets"].as_array().unwrap().len(), 3);
    });
}

#[test]
fn a_worker_killed_mid_container_deploy_is_replaced_and_nothing_is_made_twice() {
    let (scene, mut first_worker) = Scene::start("crash-containers", FakeConfig::default());
    scene.runtime.block_on(async {
        let http = reqwest::Client::new();
        // The cache takes a few seconds to answer, so the worker dies while it waits.
        let two_tier = include_str!("../../../examples/two-tier-services.yaml");
        let mut template = orch_core::Template::parse_text(two_tier).unwrap().to_value();
        template["services"]["cache"]["command"] =
            json!(["/bin/sh", "-c", "sleep 4; exec /bin/httpd -f -p 6379 -h /www"]);
        template["services"]["cache"]["healthcheck"]["interval_s"] = json!(1);
        let id = scene.deploy(&http, "survivor-containers", template).await;
        let _guard = EngineGuard(id.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        while labelled("container", &id).is_empty() {
            assert!(Instant::now() < deadline, "no container was created");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first_worker.kill().unwrap();
        first_worker.wait().unwrap();
        // The one that takes over has no cloud at all: containers need none.
        let _second_worker = scene.worker_without_cloud();

        let deployment = scene.deployed(&http, &id).await;
        let url = &scene.url;
        let engine = (labelled("container", &id), labelled("network", &id));
        let expected = (
            vec![format!("{id}-cache-0"), format!("{id}-web-0"), format!("{id}-web-1")],
            vec![format!("{id}-data"), format!("{id}-gateway")],
        );
        let deleted = http
            .delete(format!("{url}/deployments/{id}"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), reqwest::StatusCode::ACCEPTED);
        assert_eq!(deployment["status"], "COMPLETED", "{deployment}");
        assert_eq!(engine, expected, "each container and network exactly once");
        let web = &deployment["resources"]["services"]["web"]["instances"];
        let ports: Vec<&Value> = web
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &i["host_ports"]["http"])
            .collect();
        assert!(ports.len() == 2 && ports[0] != ports[1], "{ports:?}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !labelled("container", &id).is_empty() || !labelled("network", &id).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the delete left {:?}",
                labelled("container", &id)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}

/// `TEMPORAL_TLS_*` and `TEMPORAL_API_KEY`: serve and worker reach a Temporal that refuses a
/// handshake without a client certificate from its CA and every call without the key, and a
/// deploy completes through it; the key appears in no log.
#[test]
fn serve_and_worker_reach_temporal_over_mtls_with_an_api_key() {
    const API_KEY: &str = "temporal-api-key-0123456789";
    let mut counts = None;
    let (scene, _worker) = Scene::start_with("secure-temporal", FakeConfig::default(), |upstream, dir, runtime| {
        let certificates = secure_temporal::Certificates::issue(dir);
        let (address, seen) = runtime.block_on(secure_temporal::start(upstream, &certificates, API_KEY));
        counts = Some(seen);
        let path = |path: &std::path::Path| path.display().to_string();
        let env = vec![
            ("TEMPORAL_TLS_CA_FILE".to_owned(), path(&certificates.ca)),
            ("TEMPORAL_TLS_CERT_FILE".to_owned(), path(&certificates.client_cert)),
            ("TEMPORAL_TLS_KEY_FILE".to_owned(), path(&certificates.client_key)),
            (
                "TEMPORAL_TLS_SERVER_NAME".to_owned(),
                secure_temporal::SERVER_NAME.to_owned(),
            ),
            ("TEMPORAL_API_KEY".to_owned(), API_KEY.to_owned()),
            ("LOG_LEVEL".to_owned(), "debug".to_owned()),
        ];
        (address.to_string(), env)
    });
    let counts = counts.unwrap();
    scene.runtime.block_on(async {
        scene.deploy_one_server(&reqwest::Client::new(), "through-mtls").await;
    });
    use secure_temporal::Counts as C;
    assert!(
        C::get(&counts.calls) > 0,
        "every call went through the secured frontend"
    );
    assert_eq!(C::get(&counts.calls_refused), 0, "no call went without the key");
    assert_eq!(
        C::get(&counts.handshakes_refused),
        0,
        "no handshake went without the certificate"
    );

    // The frontend is as strict as it claims: without a client certificate, no handshake.
    let mut plain = scene.orch(&scene.cloud.auth_url(), "worker");
    plain
        .env_remove("TEMPORAL_TLS_CERT_FILE")
        .env_remove("TEMPORAL_TLS_KEY_FILE");
    let mut refused = Running(plain.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while C::get(&counts.handshakes_refused) == 0 {
        assert!(Instant::now() < deadline, "a worker without a certificate was let in");
        std::thread::sleep(Duration::from_millis(100));
    }
    refused.kill().unwrap();
    let mut logged = String::new();
    std::io::Read::read_to_string(&mut refused.stderr.take().unwrap(), &mut logged).unwrap();
    assert!(logged.contains("waiting for Temporal"), "{logged}");
    assert!(!logged.contains(API_KEY), "the key is never logged");
}

/// The `/metrics` text of the process serving at `base`.
async fn metrics_of(http: &reqwest::Client, base: &str) -> reqwest::Result<String> {
    http.get(format!("{base}/metrics")).send().await?.text().await
}

/// Whether promtool (Debian's prometheus package, installed by scripts/test.sh) accepts a
/// scrape: names and labels as Prometheus means them.
fn promtool_accepts(scrape: &str) -> Result<(), String> {
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test.sh installs Debian's prometheus package)");
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), scrape.as_bytes()).unwrap();
    let output = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

/// `WORKER_METRICS_PORT`: a worker apart from the API serves `/health` and `/metrics` with
/// its cloud calls and the seed's workflow and deployment durations; promtool accepts both
/// the worker's scrape and the API's.
#[test]
fn a_worker_serves_its_own_metrics_and_promtool_accepts_every_scrape() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (scene, _worker) = Scene::start_with("worker-metrics", FakeConfig::default(), |address, _, _| {
        (
            address.to_owned(),
            vec![("WORKER_METRICS_PORT".to_owned(), port.to_string())],
        )
    });
    scene.runtime.block_on(async {
        let http = reqwest::Client::new();
        scene.deploy_one_server(&http, "measured").await;
        let worker = format!("http://127.0.0.1:{port}");
        let health = http.get(format!("{worker}/health")).send().await.unwrap();
        assert_eq!(health.status(), reqwest::StatusCode::OK);
        let scrape = metrics_of(&http, &worker).await.unwrap();
        for expected in [
            r#"workflow_execution_duration_seconds_count{workflow="DeployWorkflow"} 1"#,
            r#"deployment_duration_seconds_count{status="COMPLETED"} 1"#,
            "openstack_api_calls_total{",
            "database_query_duration_seconds_bucket{",
        ] {
            assert!(
                scrape.contains(expected),
                "the worker's scrape lacks {expected}:\n{scrape}"
            );
        }
        promtool_accepts(&scrape).unwrap_or_else(|said| panic!("promtool on the worker's scrape: {said}"));
        let api = metrics_of(&http, &scene.url).await.unwrap();
        assert!(api.contains(r#"orch_deployments{status="COMPLETED"} 1"#), "{api}");
        assert!(
            api.contains("orch_oldest_pending_operation_seconds 0"),
            "nothing waits: {api}"
        );
        promtool_accepts(&api).unwrap_or_else(|said| panic!("promtool on the API's scrape: {said}"));
    });
}

/// `orch_relay_leader` on the `/metrics` of the API at `url`; none when it does not answer.
async fn relay_leader(http: &reqwest::Client, url: &str) -> Option<bool> {
    let text = metrics_of(http, url).await.ok()?;
    let value = text.lines().find_map(|line| line.strip_prefix("orch_relay_leader "))?;
    Some(value.trim() == "1")
}

/// Waits until exactly one of `urls` relays; its index.
async fn the_one_leader(http: &reqwest::Client, urls: &[&str]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        for (index, url) in urls.iter().enumerate() {
            if relay_leader(http, url).await == Some(true) {
                leaders.push(index);
            }
        }
        if let [leader] = leaders[..] {
            return leader;
        }
        assert!(Instant::now() < deadline, "leaders among {urls:?}: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Two `orch serve` replicas on one database: one relays, the other stands by; the leader
/// killed with SIGKILL, the other takes over within the lease, and a deploy accepted by
/// the survivor completes.
#[test]
fn one_of_two_servers_relays_and_the_other_takes_over_when_it_dies() {
    let (mut scene, _worker) = Scene::start("relay-failover", FakeConfig::default());
    let (second, second_url) = scene.another_server();
    let first_url = scene.url.clone();
    let mut servers = [Some(scene.take_server()), Some(second)];
    let http = reqwest::Client::new();
    let urls = [first_url.as_str(), second_url.as_str()];
    let survivor = scene.runtime.block_on(async {
        let leader = the_one_leader(&http, &urls).await;
        // Standing by is stable: the other never starts relaying while the leader lives.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(the_one_leader(&http, &urls).await, leader);
        let mut killed = servers[leader].take().unwrap();
        killed.kill().unwrap();
        killed.wait().unwrap();
        let survivor = 1 - leader;
        let started = Instant::now();
        while relay_leader(&http, urls[survivor]).await != Some(true) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no failover within the lease"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        survivor
    });
    scene.url = urls[survivor].to_owned();
    scene.runtime.block_on(scene.deploy_one_server(&http, "after-failover"));
}
