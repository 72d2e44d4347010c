//! `orch bench --servers N`: deploys N servers through the real API, relay, workflow and
//! cloud client against fakecloud (a child process, so orch's own memory is measured), deletes
//! them, and prints the figures next to the lower bound the simulated cloud allows. It runs the
//! same deployment again with the cloud concurrency limited to 10, Terraform's default.

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
    #[arg(long)]
    servers: u32,
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

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("orch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (temporal_host, _dev_server) = match std::env::var("TEMPORAL_HOST") {
        Ok(host) if !host.is_empty() => (host, None),
        _ => {
            let cli = orch_workflows::devserver::temporal_cli(std::path::Path::new("."));
            let db = dir.join("temporal.db");
            let server =
                tokio::task::spawn_blocking(move || orch_workflows::devserver::DevServer::start(&cli, &db)).await??;
            (server.address.clone(), Some(server))
        }
    };
    let mut results = vec![run_once(&args, &temporal_host, &dir, None).await?];
    if !args.no_baseline {
        results.push(run_once(&args, &temporal_host, &dir, Some(10)).await?);
    }
    println!(
        "{:<12} {:>8} {:>11} {:>10} {:>10} {:>6} {:>12} {:>8} {:>8} {:>9}",
        "run", "servers", "deploy (s)", "delete (s)", "bound (s)", "ratio", "req/server", "429s", "history", "rss (MB)"
    );
    for (name, figures) in ["orch", "parallel=10"].iter().zip(&results) {
        println!(
            "{name:<12} {:>8} {:>11.1} {:>10.1} {:>10.1} {:>6.2} {:>12.2} {:>8} {:>8} {:>9.0}",
            figures.servers,
            figures.makespan_s,
            figures.delete_makespan_s,
            figures.lower_bound_s,
            figures.ratio,
            figures.requests_per_server,
            figures.rate_limited_requests,
            figures.history_events,
            figures.peak_rss_mb
        );
    }
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

async fn run_once(
    args: &BenchArgs,
    temporal_host: &str,
    dir: &std::path::Path,
    concurrency: Option<usize>,
) -> anyhow::Result<Figures> {
    let fake = FakeCloudProcess::start(args)?;
    let mut cloud_config = CloudConfig::password(&format!("{}/identity/v3", fake.url), "admin", "fakecloud", "admin")?;
    let defaults = ClientLimits::default();
    cloud_config.limits = ClientLimits {
        max_concurrency: concurrency.unwrap_or(defaults.max_concurrency),
        // Just below what the cloud admits, so it never has to refuse.
        requests_per_second: args.rate_limit_rps * 0.95,
        ..defaults
    };
    let cloud = OpenStack::new(cloud_config)?;
    let run = format!(
        "{}-{}",
        concurrency.unwrap_or(0),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let store = Store::connect(
        &format!("sqlite://{}/bench-{run}.db", dir.display()),
        &StoreOptions::default(),
    )
    .await?;
    let task_queue = format!("orch-bench-{run}");
    let worker = WorkerThread::spawn(
        temporal_host.to_owned(),
        "default".to_owned(),
        task_queue.clone(),
        OrchActivities {
            store: store.clone(),
            cloud,
        },
        AnsibleSettings::default(),
    );
    let client = orch_workflows::connect(temporal_host, "default").await?;
    let mut api = ApiConfig::with_keys(ApiKeys::parse(&format!("{KEY}:write")).map_err(anyhow::Error::msg)?);
    api.rate_limit_per_minute = std::num::NonZeroU32::new(1_000_000).expect("non-zero");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(orch_api::serve(
        listener,
        AppState::new(store.clone(), api),
        async move {
            let _ = stopped.await;
        },
    ));
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(orch_workflows::run_relay(
        store.clone(),
        client.clone(),
        task_queue,
        Duration::from_millis(100),
        async move {
            let _ = relay_stopped.await;
        },
    ));

    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}{path}", fake.url);
    let template = json!({
        "vm_config": {"web": {"flavor": "m1.tiny", "image": "cirros", "count": args.servers}},
        "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.0.0/18"}}
    });
    http.delete(admin("/_fake/stats")).send().await?;
    let started = Instant::now();
    let accepted: Value = http
        .post(format!("{url}/deployments"))
        .header("X-API-Key", KEY)
        .json(&json!({"name": format!("bench-{run}"), "template": template}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = accepted["id"].as_str().unwrap_or_default().to_owned();
    let operation_id = accepted["operation_id"].as_str().unwrap_or_default().to_owned();
    let deployed = settle(&http, &url, &id).await?;
    let makespan = started.elapsed().as_secs_f64();
    if deployed["status"] != "COMPLETED" {
        bail!(
            "the deployment ended {}: {}",
            deployed["status"],
            deployed["status_reason"]
        );
    }
    let stats: Value = http.get(admin("/_fake/stats")).send().await?.json().await?;
    let requests = stats["total"].as_u64().unwrap_or(0);
    let rate_limited: u64 = stats["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["status"] == 429)
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    let history = orch_workflows::history_length(&client, &orch_workflows::workflow_id(&operation_id))
        .await
        .unwrap_or(0);
    let peak_rss = peak_rss_mb();

    let started = Instant::now();
    http.delete(format!("{url}/deployments/{id}"))
        .header("X-API-Key", KEY)
        .send()
        .await?
        .error_for_status()?;
    let deleted = settle(&http, &url, &id).await?;
    let delete_makespan = started.elapsed().as_secs_f64();
    if deleted["status"] != "DELETED" {
        bail!("the delete ended {}: {}", deleted["status"], deleted["status_reason"]);
    }
    let _ = stop_relay.send(());
    let _ = relay.await;
    let _ = stop.send(());
    let _ = server.await;
    worker.stop()?;

    let chain_calls = 5.0;
    // Each server costs two requests the cloud must admit: its create, and the tags of its
    // port, which Neutron (as fakecloud, by default) does not keep from the port's create.
    let requests_per_server = 2.0;
    let lower_bound = chain_calls * args.create_latency_ms as f64 / 1000.0
        + args.boot_delay_ms as f64 / 1000.0
        + requests_per_server * f64::from(args.servers) / args.rate_limit_rps;
    Ok(Figures {
        servers: args.servers,
        concurrency: concurrency.unwrap_or(ClientLimits::default().max_concurrency),
        makespan_s: makespan,
        delete_makespan_s: delete_makespan,
        lower_bound_s: lower_bound,
        ratio: makespan / lower_bound,
        requests_per_server: requests as f64 / f64::from(args.servers.max(1)),
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
