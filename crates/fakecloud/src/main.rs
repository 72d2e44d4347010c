//! `fakecloud --listen 127.0.0.1:PORT`: prints the bound URL as the first line of stdout and
//! serves until SIGTERM or Ctrl-C.

// Functions stay short enough to read at once (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

use std::net::SocketAddr;

use clap::Parser;
use fakecloud::{FakeCloud, FakeConfig, PlannedOutage};

/// An OpenStack-compatible cloud simulator (Keystone, Nova, Neutron, Cinder, Glance) for
/// tests and local use. Not a cloud: nothing it "creates" exists.
#[derive(Debug, Parser)]
#[command(name = "fakecloud", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Milliseconds added to every create request.
    #[arg(long)]
    create_latency_ms: Option<u64>,
    /// Milliseconds from a server's create until it leaves BUILD.
    #[arg(long)]
    boot_delay_ms: Option<u64>,
    /// Milliseconds a deleted server or volume stays visible.
    #[arg(long)]
    delete_delay_ms: Option<u64>,
    /// Share (0–1) of servers that end in ERROR.
    #[arg(long)]
    server_error_rate: Option<f64>,
    /// Share (0–1) of requests answered 500 or 503.
    #[arg(long)]
    error_rate: Option<f64>,
    /// Per-service error share, e.g. --error-rate-compute 0.1.
    #[arg(long)]
    error_rate_identity: Option<f64>,
    #[arg(long)]
    error_rate_compute: Option<f64>,
    #[arg(long)]
    error_rate_network: Option<f64>,
    #[arg(long)]
    error_rate_volume: Option<f64>,
    #[arg(long)]
    error_rate_image: Option<f64>,
    /// Requests per second over all services; beyond it 429 with Retry-After. 0 is off.
    #[arg(long)]
    rate_limit_rps: Option<f64>,
    /// An outage: SERVICE:START_MS:DURATION_MS after start (repeatable).
    #[arg(long, value_parser = parse_outage)]
    outage: Vec<PlannedOutage>,
    /// Settings as a JSON object (the same fields as PUT /_fake/config), applied first.
    #[arg(long)]
    config_json: Option<String>,
}

fn parse_outage(text: &str) -> Result<PlannedOutage, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [service, start, duration] = parts[..] else {
        return Err("expected SERVICE:START_MS:DURATION_MS".into());
    };
    if !fakecloud::SERVICES.contains(&service) {
        return Err(format!(
            "unknown service '{service}'; use one of {}",
            fakecloud::SERVICES.join(", ")
        ));
    }
    Ok(PlannedOutage {
        service: service.to_owned(),
        start_ms: start.parse().map_err(|_| "START_MS must be a number")?,
        duration_ms: duration.parse().map_err(|_| "DURATION_MS must be a number")?,
    })
}

fn configure(args: &Args) -> Result<FakeConfig, String> {
    let mut config = FakeConfig::default();
    if let Some(json) = &args.config_json {
        let patch: serde_json::Value = serde_json::from_str(json).map_err(|error| format!("--config-json: {error}"))?;
        config = config.merged(&patch)?;
    }
    let mut patch = serde_json::Map::new();
    let mut set = |key: &str, value: Option<serde_json::Value>| {
        if let Some(value) = value {
            patch.insert(key.to_owned(), value);
        }
    };
    set("create_latency_ms", args.create_latency_ms.map(Into::into));
    set("boot_delay_ms", args.boot_delay_ms.map(Into::into));
    set("delete_delay_ms", args.delete_delay_ms.map(Into::into));
    set("server_error_rate", args.server_error_rate.map(Into::into));
    set("error_rate", args.error_rate.map(Into::into));
    set("rate_limit_rps", args.rate_limit_rps.map(Into::into));
    let mut by_service = config.error_rate_by_service.clone();
    for (service, rate) in [
        ("identity", args.error_rate_identity),
        ("compute", args.error_rate_compute),
        ("network", args.error_rate_network),
        ("volume", args.error_rate_volume),
        ("image", args.error_rate_image),
    ] {
        if let Some(rate) = rate {
            by_service.insert(service.to_owned(), rate);
        }
    }
    patch.insert(
        "error_rate_by_service".into(),
        serde_json::to_value(by_service).expect("map"),
    );
    config.merged(&serde_json::Value::Object(patch))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let config = match configure(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("fakecloud: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let cloud = match FakeCloud::start_with(args.listen, config, args.outage.clone()).await {
        Ok(cloud) => cloud,
        Err(error) => {
            eprintln!("fakecloud: cannot listen on {}: {error}", args.listen);
            return std::process::ExitCode::from(1);
        }
    };
    println!("{}", cloud.url);
    eprintln!(
        "fakecloud: auth_url {} (user admin, password from the config, project admin, domain Default)",
        cloud.auth_url()
    );
    let _ = tokio::signal::ctrl_c().await;
    cloud.stop().await;
    std::process::ExitCode::SUCCESS
}
