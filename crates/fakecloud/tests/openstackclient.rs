//! python-openstackclient, unchanged, against fakecloud: the proof that fakecloud speaks the
//! OpenStack API for the calls orch uses. The `openstack` CLI comes from PyPI; the README's
//! test command installs it and sets `OPENSTACK_CLI`.

use std::process::Command;

use fakecloud::{FakeCloud, FakeConfig};
use serde_json::Value;

fn cli() -> String {
    std::env::var("OPENSTACK_CLI").unwrap_or_else(|_| "openstack".to_owned())
}

/// Runs `openstack ARGS -f json` against the cloud and returns its JSON output.
fn openstack(auth_url: &str, args: &[&str]) -> Value {
    let output = Command::new(cli())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("OS_AUTH_URL", auth_url)
        .env("OS_USERNAME", "admin")
        .env("OS_PASSWORD", "fakecloud")
        .env("OS_PROJECT_NAME", "admin")
        .env("OS_USER_DOMAIN_NAME", "Default")
        .env("OS_PROJECT_DOMAIN_NAME", "Default")
        .env("OS_REGION_NAME", "RegionOne")
        .env("OS_IDENTITY_API_VERSION", "3")
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run '{}' ({error}); install python-openstackclient or run scripts/test.sh",
                cli()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "openstack {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|_| Value::String(stdout.into_owned()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstackclient_creates_and_deletes_a_network_a_server_and_a_volume() {
    let config = FakeConfig {
        boot_delay_ms: 300,
        delete_delay_ms: 200,
        volume_delay_ms: 200,
        ..FakeConfig::default()
    };
    let cloud = FakeCloud::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let auth_url = cloud.auth_url();
    let inventory_url = format!("{}/_fake/inventory", cloud.url);
    tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| openstack(&auth_url, args);
        let inventory = || -> Value { reqwest::blocking::get(&inventory_url).unwrap().json().unwrap() };

        let network = run(&["network", "create", "orch-net", "-f", "json"]);
        assert_eq!(network["name"], "orch-net");
        assert_eq!(network["status"], "ACTIVE");
        let subnet = run(&[
            "subnet",
            "create",
            "orch-subnet",
            "--network",
            "orch-net",
            "--subnet-range",
            "10.20.0.0/24",
            "-f",
            "json",
        ]);
        assert_eq!(subnet["cidr"], "10.20.0.0/24");
        assert_eq!(subnet["gateway_ip"], "10.20.0.1");

        let server = run(&[
            "server",
            "create",
            "orch-vm",
            "--flavor",
            "m1.small",
            "--image",
            "ubuntu-22.04",
            "--network",
            "orch-net",
            "--wait",
            "-f",
            "json",
        ]);
        assert_eq!(server["status"], "ACTIVE");
        let servers = run(&["server", "list", "-f", "json"]);
        assert_eq!(servers[0]["Name"], "orch-vm");
        assert_eq!(servers[0]["Status"], "ACTIVE");
        assert!(servers[0]["Networks"].to_string().contains("10.20.0."), "{servers}");

        let volume = run(&["volume", "create", "--size", "2", "orch-vol", "-f", "json"]);
        assert_eq!(volume["size"], 2);
        assert_eq!(inventory()["volumes"][0]["name"], "orch-vol");

        run(&["volume", "delete", "orch-vol"]);
        run(&["server", "delete", "--wait", "orch-vm"]);
        run(&["subnet", "delete", "orch-subnet"]);
        run(&["network", "delete", "orch-net"]);
        std::thread::sleep(std::time::Duration::from_millis(400));
        let left = inventory();
        for (kind, items) in left.as_object().unwrap() {
            assert_eq!(items.as_array().unwrap().len(), 0, "{kind} left behind: {items}");
        }
    })
    .await
    .unwrap();
}
