//! Nothing is lost when a worker dies: `orch serve` and `orch worker` as separate processes
//! against a real Temporal dev server and fakecloud; the worker is killed with SIGKILL in the
//! middle of a deploy, a new one takes over, and the deploy completes with no resource twice.

mod common;

use std::process::{Command, Stdio};

use common::Running;
use std::time::{Duration, Instant};

use fakecloud::{FakeCloud, FakeConfig};
use orch_workflows::devserver::{temporal_cli, DevServer};
use serde_json::{json, Value};

const KEY: &str = "crash-test-key-0123456789";

fn orch(dir: &std::path::Path, temporal: &str, auth_url: &str, command: &str) -> Command {
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
        .arg(command)
        .stdin(Stdio::null());
    command_line
}

fn worker(dir: &std::path::Path, temporal: &str, auth_url: &str) -> Running {
    let child = orch(dir, temporal, auth_url, "worker")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

#[test]
fn a_worker_killed_mid_deploy_is_replaced_and_the_deploy_completes_without_duplicates() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fake = FakeConfig {
        boot_delay_ms: 3_000,
        create_latency_ms: 100,
        ..FakeConfig::default()
    };
    let cloud = runtime
        .block_on(FakeCloud::start("127.0.0.1:0".parse().unwrap(), fake))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("orch-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let temporal = DevServer::start(&temporal_cli(root), &dir.join("temporal.db"))
        .expect("temporal CLI (scripts/test.sh installs it)");
    let auth_url = cloud.auth_url();

    let mut server = Running(
        orch(&dir, &temporal.address, &auth_url, "serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = common::listening_url(&mut server);
    let mut first_worker = worker(&dir, &temporal.address, &auth_url);

    runtime.block_on(async {
        let http = reqwest::Client::new();
        let template = json!({
          "vm_config": {
            "web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 2},
            "app": {"flavor": "m1.medium", "image": "ubuntu-22.04", "count": 3},
            "db": {"flavor": "m1.large", "image": "ubuntu-22.04", "count": 1}
          },
          "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24", "app": "10.0.2.0/24", "db": "10.0.3.0/24"}}
        });
        let accepted: Value = http
            .post(format!("{url}/deployments"))
            .header("X-API-Key", KEY)
            .json(&json!({"name": "survivor", "template": template}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = accepted["id"].as_str().unwrap().to_owned();
        let inventory = || async { reqwest::get(format!("{}/_fake/inventory", cloud.url)).await.unwrap().json::<Value>().await.unwrap() };

        // Kill the worker once servers exist but before they are ACTIVE.
        let deadline = Instant::now() + Duration::from_secs(60);
        while inventory().await["servers"].as_array().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no server was created");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first_worker.kill().unwrap();
        first_worker.wait().unwrap();
        let _second_worker = worker(&dir, &temporal.address, &auth_url);

        let deadline = Instant::now() + Duration::from_secs(120);
        let deployment = loop {
            let deployment: Value = http.get(format!("{url}/deployments/{id}")).header("X-API-Key", KEY).send().await.unwrap().json().await.unwrap();
            if deployment["status"] != "PENDING" && deployment["status"] != "IN_PROGRESS" {
                break deployment;
            }
            assert!(Instant::now() < deadline, "still {}", deployment["status"]);
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
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
