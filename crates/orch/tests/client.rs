//! The main job as a newcomer runs it: `orch dev` on the embedded defaults (SQLite, a local
//! Temporal dev server, fakecloud), and the CLI client deploying seed 001's web-app-stack with
//! `--wait`, scaling it, refusing a bad parameter, and deleting it.

mod common;

use common::Running;

use std::process::{Command, Output, Stdio};

const KEY: &str = "client-test-key-0123456789";

fn orch(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orch"));
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    if let Ok(cli) = std::env::var("TEMPORAL_CLI") {
        command.env("TEMPORAL_CLI", cli);
    } else {
        command.env(
            "TEMPORAL_CLI",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/tools/bin/temporal"),
        );
    }
    command
}

fn client(dir: &std::path::Path, url: &str, args: &[&str]) -> Output {
    orch(dir)
        .env("ORCH_URL", url)
        .env("ORCH_API_KEY", KEY)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn orch_dev_and_the_cli_deploy_scale_and_delete_web_app_stack() {
    let dir = std::env::temp_dir().join(format!("orch-client-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut dev = Running(
        orch(&dir)
            .env("API_KEYS", format!("{KEY}:write"))
            .env("API_PORT", "0")
            .env("LOG_LEVEL", "warn")
            .arg("dev")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = common::listening_url(&mut dev);
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/web-app-stack.yaml");

    let deployed = client(
        &dir,
        &url,
        &["deploy", example, "--name", "demo", "--wait", "--output", "json"],
    );
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let deployment: serde_json::Value = serde_json::from_slice(&deployed.stdout).unwrap();
    assert_eq!(deployment["status"], "COMPLETED");
    assert_eq!(deployment["resources"]["vm_ids"].as_array().unwrap().len(), 6);
    assert!(deployment["resources"]["network_id"].is_string());

    let scaled = client(
        &dir,
        &url,
        &[
            "scale", "demo", "--group", "web", "--count", "3", "--wait", "--output", "json",
        ],
    );
    assert!(scaled.status.success(), "{}", String::from_utf8_lossy(&scaled.stderr));
    let deployment: serde_json::Value = serde_json::from_slice(&scaled.stdout).unwrap();
    assert_eq!(
        deployment["resources"]["groups"]["web"]["servers"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let refused = client(
        &dir,
        &url,
        &["deploy", example, "--name", "other", "--param", "cache_count=1"],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("/parameters/cache_count"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let listed = client(&dir, &url, &["list", "--output", "json"]);
    let page: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(page["total"], 1);

    let deleted = client(&dir, &url, &["delete", "demo", "--wait", "--output", "json"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let deployment: serde_json::Value = serde_json::from_slice(&deleted.stdout).unwrap();
    assert_eq!(deployment["status"], "DELETED");

    let status = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dev.wait().unwrap().success(), "orch dev stops cleanly on SIGTERM");
}
