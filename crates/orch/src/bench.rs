//! `orch bench --servers N`: deploys N servers through the real API, relay, workflow and
//! cloud client against fakecloud (a child process, so orch's own memory is measured), deletes
//! them, and prints the figures next to the lower bound the simulated cloud allows. It runs the
//! same deployment again with the cloud concurrency limited to 10, Terraform's default.
//! `orch bench --containers N` does the same with containers on the local engine, beside
//! `docker compose` (see `containers.rs`).

mod containers;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use orch_api::{ApiConfig, ApiKeys, AppState};
use orch_cloud::{ClientLimits, CloudConfig, OpenStack};
use orch_store::{Store, StoreOptions};
use orch_workflows::{AnsibleSettings, OrchActivities, WorkerThread};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Servers to deploy.
    #[arg(long, required_unless_present = "containers", conflicts_with = "containers")]
    servers: Option<u32>,
    /// Containers to deploy on the local engine, beside `docker compose` doing the same.
    #[arg(long)]
    containers: Option<u32>,
    /// fakecloud: time from a server's create until it is ACTIVE.
    #[arg(long, default_value_t = 10_000)]
    boot_delay_ms: u64,
    /// fakecloud: latency of every create request.
    #[arg(long, default_value_t = 200)]
    create_latency_ms: u64,
    /// fakecloud: requests per second it admits (orch is configured just below it).
    #[arg(long, default_value_t = 50.0)]
    rate_limit_rps: f64,
    /// Also write the figures to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip the run with the concurrency limited to 10.
    #[arg(long)]
    no_baseline: bool,
}

#[derive(Debug, Clone, Serialize)]
struct Figures {
    servers: u32,
    concurrency: usize,
    makespan_s: f64,
    delete_makespan_s: f64,
    lower_bound_s: f64,
    ratio: f64,
    requests_per_server: f64,
    rate_limited_requests: u64,
    history_events: usize,
    peak_rss_mb: f64,
}

const KEY: &str = "bench-key-0123456789abcdef";

/// fakecloud as a child process, from beside this binary.
struct FakeCloudProcess {
    url: String,
    child: Child,
}

impl FakeCloudProcess {
    fn start(args: &BenchArgs) -> anyhow::Result<Self> {
        let binary = std::env::current_exe()?.with_file_name("fakecloud");
        let mut child = Command::new(&binary)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--boot-delay-ms", &args.boot_delay_ms.to_string()])
            .args(["--create-latency-ms", &args.create_latency_ms.to_string()])
            .args(["--rate-limit-rps", &args.rate_limit_rps.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {} (cargo build --release -p fakecloud)", binary.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        Ok(Self {
            url: line.trim().to_owned(),
            child,
        })
    }
}

impl Drop for FakeCloudProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This process's peak resident memory (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|line| line.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A Temporal dev server of the bench's own, unless `TEMPORAL_HOST` names one.
async fn temporal(dir: &std::path::Path) -> anyhow::Result<(String, Option<orch_workflows::devserver::DevServer>)> {
    Ok(match std::env::var("TEMPORAL_HOST") {
        Ok(host) if !host.is_empty() => (host, None),
        _ => {
            let cli = orch_workflows::devserver::temporal_cli(std::path::Path::new("."));
            let db = dir.join("temporal.db");
            let server =
                tokio::task::spawn_blocking(move || orch_workflows::devserver::DevServer::start(&cli, &db)).await??;
            (server.address.clone(), Some(server))
        }
    })
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("orch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (temporal_host, _dev_server) = temporal(&dir).await?;
    if let Some(containers) = args.containers {
        return containers::run(containers, args.json.as_deref(), &temporal_host, &dir).await;
    }
    let mut results = vec![run_once(&args, &temporal_host, &dir, None).await?];
    if !args.no_baseline {
        results.push(run_once(&args, &temporal_host, &dir, Some(10)).await?);
    }
    println!("{}", figures_table(&results));
    if let Some(path) = &args.json {
        let mut document = serde_json::to_value(&results[0])?;
        if let Some(baseline) = results.get(1) {
            document["baseline_parallelism_10"] = serde_json::to_value(baseline)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&document)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The figures side by side: orch, and the same run at the parallelism of a Heat-like peer.
fn figures_table(results: &[Figures]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_header([
        "run",
        "servers",
        "deploy (s)",
        "delete (s)",
        "bound (s)",
        "ratio",
        "req/server",
        "429s",
        "history",
        "rss (MB)",
    ]);
    for (name, figures) in ["orch", "parallel=10"].iter().zip(results) {
        table.add_row([
            name.to_string(),
            figures.servers.to_string(),
            format!("{:.1}", figures.makespan_s),
            format!("{:.1}", figures.delete_makespan_s),
            format!("{:.1}", figures.lower_bound_s),
            format!("{:.2}", figures.ratio),
            format!("{:.2}", figures.requests_per_server),
            figures.rate_limited_requests.to_string(),
            figures.history_events.to_string(),
            format!("{:.0}", figures.peak_rss_mb),
        ]);
    }
    for column in table.column_iter_mut().skip(1) {
        column.set_cell_alignment(comfy_table::CellAlignment::Right);
    }
    table
}

/// orch in this process against fakecloud: the API, the relay and a worker, on a fresh
/// SQLite database and task queue.
struct Running {
    url: String,
    client: orch_workflows::TemporalClient,
    worker: WorkerThread,
    stop_server: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop_relay: tokio::sync::oneshot::Sender<()>,
    relay: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(
        cloud: Option<OpenStack>,
        containers: orch_docker::Docker,
        temporal_host: &str,
        dir: &std::path::Path,
        run: &str,
    ) -> anyhow::Result<Self> {
        let store = Store::connect(
            &format!("sqlite://{}/bench-{run}.db", dir.display()),
            &StoreOptions::default(),
        )
        .await?;
        let task_queue = format!("orch-bench-{run}");
        let activities = OrchActivities {
            store: store.clone(),
            cloud,
            containers,
            sweep: orch_workflows::sweep::SweepSettings::default(),
        };
        let worker = WorkerThread::spawn(
            temporal_host.to_owned(),
            "default".to_owned(),
            orch_workflows::TemporalSecurity::default(),
            task_queue.clone(),
            activities,
            AnsibleSettings::default(),
        );
        let client = orch_workflows::connect(temporal_host, "default").await?;
        let mut api = ApiConfig::with_keys(ApiKeys::parse(&format!("{KEY}:write")).map_err(anyhow::Error::msg)?);
        api.rate_limit_per_minute = std::num::NonZeroU32::new(1_000_000).expect("non-zero");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let state = AppState::new(store.clone(), api);
        let server = tokio::spawn(orch_api::serve(listener, state, async move {
            let _ = server_stopped.await;
        }));
        let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
        let relay = orch_workflows::run_relay(
            store,
            client.clone(),
            task_queue,
            Duration::from_millis(100),
            async move {
                let _ = relay_stopped.await;
            },
        );
        Ok(Self {
            url,
            client,
            worker,
            stop_server,
            server,
            stop_relay,
            relay: tokio::spawn(relay),
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_relay.send(());
        let _ = self.relay.await;
        let _ = self.stop_server.send(());
        let _ = self.server.await;
        Ok(self.worker.stop()?)
    }
}

/// Requests fakecloud answered since its statistics were reset, and how many were 429s.
async fn cloud_requests(http: &reqwest::Client, fake_url: &str) -> anyhow::Result<(u64, u64)> {
    let stats: Value = http.get(format!("{fake_url}/_fake/stats")).send().await?.json().await?;
    let rate_limited = stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == 429)
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    Ok((stats["total"].as_u64().unwrap_or(0), rate_limited))
}

/// Sends `request` (with the key) and waits until the deployment settles in `expected`;
/// returns the deployment and the seconds it took.
async fn timed(
    http: &reqwest::Client,
    url: &str,
    id: Option<&str>,
    request: reqwest::RequestBuilder,
    expected: &str,
) -> anyhow::Result<(Value, f64)> {
    let started = Instant::now();
    let accepted: Value = request
        .header("X-API-Key", KEY)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = id.or(accepted["id"].as_str()).unwrap_or_default().to_owned();
    let settled = settle(http, url, &id).await?;
    if settled["status"] != expected {
        bail!("{id} ended {}: {}", settled["status"], settled["status_reason"]);
    }
    let mut settled = settled;
    settled["accepted"] = accepted;
    Ok((settled, started.elapsed().as_secs_f64()))
}

/// What a deploy cannot beat: the chain of creates before the first server (network,
/// subnet, router, interface, port), one boot, and every request the cloud must admit at its
/// rate. Each server costs two: its create, and the tags of its port, which Neutron (as
/// fakecloud, by default) does not keep from the port's create.
fn lower_bound(args: &BenchArgs) -> f64 {
    let chain_calls = 5.0;
    let requests_per_server = 2.0;
    chain_calls * args.create_latency_ms as f64 / 1000.0
        + args.boot_delay_ms as f64 / 1000.0
        + requests_per_server * f64::from(args.servers.unwrap_or_default()) / args.rate_limit_rps
}

async fn run_once(
    args: &BenchArgs,
    temporal_host: &str,
    dir: &std::path::Path,
    concurrency: Option<usize>,
) -> anyhow::Result<Figures> {
    let servers = args.servers.unwrap_or_default();
    let fake = FakeCloudProcess::start(args)?;
    let mut cloud_config = CloudConfig::password(&format!("{}/identity/v3", fake.url), "admin", "fakecloud", "admin")?;
    let defaults = ClientLimits::default();
    cloud_config.limits = ClientLimits {
        max_concurrency: concurrency.unwrap_or(defaults.max_concurrency),
        // Just below what the cloud admits, so it never has to refuse.
        requests_per_second: args.rate_limit_rps * 0.95,
        ..defaults
    };
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let run = format!("{}-{}", concurrency.unwrap_or(0), since_epoch.as_millis());
    let no_containers = orch_docker::Docker::new(orch_docker::ContainerHosts::default());
    let orch = Running::start(
        Some(OpenStack::new(cloud_config)?),
        no_containers,
        temporal_host,
        dir,
        &run,
    )
    .await?;
    let http = reqwest::Client::new();
    let template = json!({
        "vm_config": {"web": {"flavor": "m1.tiny", "image": "cirros", "count": servers}},
        "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.0.0/18"}}
    });
    http.delete(format!("{}/_fake/stats", fake.url)).send().await?;
    let create = http
        .post(format!("{}/deployments", orch.url))
        .json(&json!({"name": format!("bench-{run}"), "template": template}));
    let (deployed, makespan) = timed(&http, &orch.url, None, create, "COMPLETED").await?;
    let (requests, rate_limited) = cloud_requests(&http, &fake.url).await?;
    let operation_id = deployed["accepted"]["operation_id"].as_str().unwrap_or_default();
    let history = orch_workflows::history_length(&orch.client, &orch_workflows::workflow_id(operation_id))
        .await
        .unwrap_or(0);
    let peak_rss = peak_rss_mb();
    let id = deployed["id"].as_str().unwrap_or_default();
    let delete = http.delete(format!("{}/deployments/{id}", orch.url));
    let (_, delete_makespan) = timed(&http, &orch.url, Some(id), delete, "DELETED").await?;
    orch.stop().await?;
    let lower_bound = lower_bound(args);
    Ok(Figures {
        servers,
        concurrency: concurrency.unwrap_or(ClientLimits::default().max_concurrency),
        makespan_s: makespan,
        delete_makespan_s: delete_makespan,
        lower_bound_s: lower_bound,
        ratio: makespan / lower_bound,
        requests_per_server: requests as f64 / f64::from(servers.max(1)),
        rate_limited_requests: rate_limited,
        history_events: history,
        peak_rss_mb: peak_rss,
    })
}

/// Polls until no operation is in flight.
async fn settle(http: &reqwest::Client, url: &str, id: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let deployment: Value = http
            .get(format!("{url}/deployments/{id}"))
            .header("X-API-Key", KEY)
            .send()
            .await?
            .json()
            .await?;
        if deployment["operation"].is_null() {
            return Ok(deployment);
        }
        if Instant::now() > deadline {
            bail!("the deployment did not settle within an hour");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
