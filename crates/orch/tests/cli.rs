//! The `orch` binary as a user runs it: help, configuration errors, `serve` on port 0 with
//! graceful shutdown on SIGTERM, and no secret in the logs.

mod common;
#[path = "cli/kubernetes.rs"]
mod kubernetes;
#[path = "cli/schemathesis.rs"]
mod schemathesis;

use common::Running;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const KEY: &str = "cli-test-key-0123456789";

fn orch() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orch"));
    // Only what each test sets: a developer's own settings must not leak in.
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// `orch serve` on port 0 in `dir` with a write key and `env`; the process and its URL.
fn serve(dir: &std::path::Path, env: &[(&str, String)], stderr: Stdio) -> (Running, String) {
    let mut command = orch();
    command
        .current_dir(dir)
        .env("API_KEYS", format!("{KEY}:write"))
        .env("API_PORT", "0");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = Running(
        command
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    let url = common::listening_url(&mut child);
    (child, url)
}

/// Runs `work` to its end on a runtime of its own (the tests themselves are synchronous).
fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(work)
}

/// A finished command's stdout and stderr, for a failure message.
fn said(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A fresh working directory per test, so `./data` and `.env` are the test's own.
fn scratch_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "orch-cli-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_explains_every_command() {
    let output = orch().arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("serve") && text.contains("config"), "{text}");
    for command in ["serve", "config"] {
        let output = orch().args([command, "--help"]).output().unwrap();
        assert!(output.status.success(), "{command} --help");
        assert!(!output.stdout.is_empty());
    }
}

#[test]
fn invalid_configuration_exits_with_one_line_naming_the_variable() {
    let dir = scratch_dir();
    for (name, value, expected) in [
        ("API_PORT", "eighty", "API_PORT"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("RATE_LIMIT_PER_MINUTE", "-1", "RATE_LIMIT_PER_MINUTE"),
    ] {
        let output = orch()
            .current_dir(&dir)
            .env("API_KEYS", format!("{KEY}:write"))
            .env(name, value)
            .arg("serve")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    let output = orch().current_dir(&dir).arg("serve").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("API_KEYS"));
    assert!(
        !dir.join("data").exists(),
        "nothing is created when the configuration is invalid"
    );
}

#[test]
fn config_command_shows_sources_without_secrets() {
    let dir = scratch_dir();
    std::fs::write(dir.join(".env"), "API_PORT=9100\n").unwrap();
    let output = orch()
        .current_dir(&dir)
        .env("API_KEYS", format!("{KEY}:write"))
        .env("OPENSTACK_PASSWORD", "cloud-secret")
        .env("TEMPORAL_API_KEY", "temporal-secret")
        .arg("config")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("API_PORT=9100\t# DotEnv"), "{text}");
    assert!(text.contains("API_KEYS=***\t# Environment"), "{text}");
    assert!(
        !text.contains(KEY) && !text.contains("cloud-secret") && !text.contains("temporal-secret"),
        "{text}"
    );
}

#[test]
fn serve_answers_and_stops_gracefully_on_sigterm() {
    let dir = scratch_dir();
    let (mut child, url) = serve(&dir, &[("LOG_LEVEL", "trace".into())], Stdio::piped());

    block_on(async {
        let client = reqwest::Client::new();
        assert_eq!(
            client.get(format!("{url}/health/ready")).send().await.unwrap().status(),
            200
        );
        let listed = client
            .get(format!("{url}/deployments"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);
        let template = serde_json::json!({"name": "audited", "vm_config": {"web": {"flavor": "m1.small", "image": "cirros", "count": 1}},
                                          "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24"}}});
        let stored = client
            .post(format!("{url}/templates"))
            .header("X-API-Key", KEY)
            .header("X-Request-Id", "audit-me-1")
            .json(&template)
            .send()
            .await
            .unwrap();
        assert_eq!(stored.status(), 201);
    });
    assert!(dir.join("data/orch.db").exists(), "SQLite under ./data by default");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "orch did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(logs.contains("shutdown requested"), "{logs}");
    assert!(
        logs.contains("\"request_id\""),
        "JSON logs carry the request id: {logs}"
    );
    assert!(!logs.contains(KEY), "the API key never reaches the logs");
    let audit = logs
        .lines()
        .find(|line| line.contains("\"orch::audit\"") && line.contains("template.created"))
        .unwrap_or_else(|| panic!("no audit line for the template write: {logs}"));
    assert!(
        audit.contains("audit-me-1") && audit.contains("\"key_id\"") && audit.contains("audited"),
        "{audit}"
    );
}

#[test]
fn serve_checks_regions_and_readiness_with_the_configured_cloud() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cloud = runtime
        .block_on(fakecloud::FakeCloud::start(
            "127.0.0.1:0".parse().unwrap(),
            fakecloud::FakeConfig::default(),
        ))
        .unwrap();
    let dir = scratch_dir();
    let mut child = Running(
        orch()
            .current_dir(&dir)
            .env("API_KEYS", format!("{KEY}:write"))
            .env("API_PORT", "0")
            .env("OPENSTACK_AUTH_URL", cloud.auth_url())
            .env("OPENSTACK_USERNAME", "admin")
            .env("OPENSTACK_PASSWORD", "fakecloud")
            .env("OPENSTACK_PROJECT_NAME", "admin")
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = common::listening_url(&mut child);
    block_on(async {
        let client = reqwest::Client::new();
        let ready: serde_json::Value = client
            .get(format!("{url}/health/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["checks"]["cloud"]["status"], "ok", "{ready}");
        let template = serde_json::json!({"vm_config": {"web": {"flavor": "m1.tiny", "image": "cirros", "count": 1}},
                                          "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24"}}});
        let refused = client
            .post(format!("{url}/deployments"))
            .header("X-API-Key", KEY)
            .json(&serde_json::json!({"name": "far", "template": template, "cloud_region": "us-west-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 422);
        let problem: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(problem["errors"][0]["pointer"], "/cloud_region");
        let accepted = client
            .post(format!("{url}/deployments"))
            .header("X-API-Key", KEY)
            .json(&serde_json::json!({"name": "near", "template": template}))
            .send()
            .await
            .unwrap();
        assert_eq!(accepted.status(), 202);
        let deployment: serde_json::Value = accepted.json().await.unwrap();
        let shown: serde_json::Value = client
            .get(format!("{url}/deployments/{}", deployment["id"].as_str().unwrap()))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(shown["cloud_region"], "RegionOne", "the cloud's region is the default");
        cloud.stop().await;
        let ready = client.get(format!("{url}/health/ready")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        let ready: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(ready["checks"]["cloud"]["status"], "failing");
    });
}

/// A certificate for 127.0.0.1 issued by a fresh CA, written as `server.pem` and
/// `server.key` in `dir`; the CA's PEM text, which a client trusts.
fn issued_certificate(dir: &std::path::Path) -> Vec<u8> {
    let ca = common::new_ca(dir, "orch-test-ca");
    common::issue(dir, "server", "127.0.0.1", "subjectAltName=IP:127.0.0.1\n");
    ca
}

/// Whether a client that trusts only `pem` is answered 200 on `/health`.
async fn trusted_by(url: &str, pem: &[u8]) -> bool {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
        .build()
        .unwrap();
    client
        .get(format!("{url}/health"))
        .send()
        .await
        .is_ok_and(|answer| answer.status() == 200)
}

/// `TLS_CERT_FILE` and `TLS_KEY_FILE`: the API over TLS only, and a renewed certificate
/// served after SIGHUP without a restart; a bad file stops orch at start, naming it.
#[test]
fn serve_speaks_tls_and_reloads_its_certificate_on_sighup() {
    let dir = scratch_dir();
    let first = issued_certificate(&dir);
    let tls = [
        ("TLS_CERT_FILE", dir.join("server.pem").display().to_string()),
        ("TLS_KEY_FILE", dir.join("server.key").display().to_string()),
    ];
    let (child, url) = serve(&dir, &tls, Stdio::null());
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    block_on(async {
        assert!(trusted_by(&url, &first).await, "served with the first certificate");
        let plain = reqwest::get(url.replace("https://", "http://") + "/health").await;
        assert!(
            plain.is_err() || plain.is_ok_and(|answer| answer.status() != 200),
            "no plain HTTP"
        );
    });
    let second = issued_certificate(&dir);
    let hangup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !trusted_by(&url, &second).await {
            assert!(Instant::now() < deadline, "the renewed certificate is never served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!trusted_by(&url, &first).await, "the old certificate is gone");
    });
    drop(child);

    std::fs::write(dir.join("server.key"), "not a key").unwrap();
    let refused = orch()
        .current_dir(&dir)
        .env("API_KEYS", format!("{KEY}:write"))
        .env("TLS_CERT_FILE", dir.join("server.pem"))
        .env("TLS_KEY_FILE", dir.join("server.key"))
        .arg("serve")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("TLS_CERT_FILE") && said.contains("server.key"), "{said}");
}

/// Runs `orch keys ARGS` with `stdin`; its stdout.
fn keys(args: &[&str], stdin: &str) -> String {
    let mut child = orch()
        .arg("keys")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn keys_are_hashed_and_made_and_an_expired_one_is_refused() {
    let hashed = keys(&["hash"], &format!("{KEY}\n"));
    assert_eq!(hashed.trim(), orch_api::auth::hashed_key(KEY));
    assert_eq!(hashed.trim().len(), "sha256:".len() + 64);
    let refused = orch().args(["keys", "hash"]).stdin(Stdio::piped()).output().unwrap();
    assert!(!refused.status.success(), "an empty key is refused");

    let made = keys(&["new", "--scope", "write", "--name", "ci"], "");
    let (new_key, entry) = made.trim().split_once('\n').unwrap();
    assert!(
        entry.starts_with("sha256:") && entry.ends_with(":write:name=ci"),
        "{entry}"
    );
    assert!(!entry.contains(new_key), "the entry holds no key");

    let old_key = "old-key-0123456789abcdef";
    let old = keys(&["hash"], old_key);
    let api_keys = format!("{entry},{}:read:name=old:expires=2020-01-01", old.trim());
    let dir = scratch_dir();
    let (mut child, url) = serve(&dir, &[("API_KEYS", api_keys)], Stdio::piped());
    block_on(async {
        let client = reqwest::Client::new();
        let list = |key: &str| client.get(format!("{url}/deployments")).header("X-API-Key", key).send();
        assert_eq!(list(new_key).await.unwrap().status(), 200);
        let expired = list(old_key).await.unwrap();
        assert_eq!(expired.status(), 401);
        let problem: serde_json::Value = expired.json().await.unwrap();
        assert!(problem["type"].as_str().unwrap().ends_with("key-expired"), "{problem}");
    });
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(logs.contains("this API key has expired: it is refused"), "{logs}");
    assert!(logs.contains("an expired API key was refused"), "{logs}");
    assert!(!logs.contains(old_key) && !logs.contains(new_key), "no key in the logs");
}

/// The alert rules are valid and fire as `alerts.test.yaml` says (promtool, from Debian's
/// prometheus package, which scripts/test.sh installs); each alert has its runbook entry.
#[test]
fn alert_rules_pass_promtool_and_each_has_a_runbook_entry() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let monitoring = root.join("deploy/monitoring");
    for args in [["check", "rules", "alerts.yaml"], ["test", "rules", "alerts.test.yaml"]] {
        let output = Command::new("promtool")
            .current_dir(&monitoring)
            .args(args)
            .output()
            .expect("promtool (scripts/test.sh installs Debian's prometheus package)");
        assert!(output.status.success(), "promtool {args:?}: {}", said(&output));
    }
    let rules = std::fs::read_to_string(monitoring.join("alerts.yaml")).unwrap();
    let runbook = std::fs::read_to_string(root.join("docs/runbook.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    for alert in alerts {
        assert!(
            runbook.contains(&format!("## {alert}\n")),
            "no runbook entry for {alert}"
        );
        let anchor = format!("docs/runbook.md#{}", alert.to_lowercase());
        assert!(rules.contains(&anchor), "{alert} does not link {anchor}");
    }
}

/// The production dashboard (`deploy/monitoring/dashboard.json`): every panel's query is
/// PromQL that promtool accepts (each written as a recording rule and checked), and names
/// only metrics orch describes, so a renamed metric cannot leave a panel empty.
#[test]
fn dashboard_queries_are_valid_promql_on_metrics_orch_serves() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/monitoring/dashboard.json")).unwrap()).unwrap();
    let described = std::fs::read_to_string(root.join("crates/orch-api/src/lib.rs")).unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 12, "{} panels", panels.len());
    for (index, panel) in panels.iter().enumerate() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let quoted = serde_json::to_string(expr).unwrap();
            rules.push_str(&format!(
                "      - record: orch:panel_{index}:{}\n        expr: {quoted}\n",
                target["refId"].as_str().unwrap()
            ));
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.contains('_') && word.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            for name in names {
                let metric = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name);
                let function = ["histogram_quantile"].contains(&metric);
                assert!(
                    function || described.contains(&format!("\"{metric}\"")),
                    "panel {} names {name}, which orch does not describe",
                    panel["title"]
                );
            }
        }
    }
    let file = scratch_dir().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).unwrap();
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (scripts/test.sh installs Debian's prometheus package)");
    assert!(output.status.success(), "the dashboard's queries: {}", said(&output));
}
