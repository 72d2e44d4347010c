//! The `orch` binary's library: command-line interface, configuration loading, logging set-up
//! and the `serve` command. `main.rs` only calls [`run`].

// Functions stay short enough to read at once (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod bench;
mod client;
pub mod cloud;
pub mod config;
pub mod observability;
mod runtime;

use config::{Config, LogFormat, Sources};

/// orch: deploy, configure, scale and tear down infrastructure from templates.
#[derive(Debug, Parser)]
#[command(name = "orch", version, about, long_about = None)]
pub struct Cli {
    /// TOML file of settings (VARIABLE = value); the environment and .env override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub connection: client::Connection,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API on API_HOST:API_PORT, and the relay that starts recorded operations
    /// on Temporal (TEMPORAL_HOST), until SIGTERM or Ctrl-C.
    Serve,
    /// Run a Temporal worker that carries out deployments (needs TEMPORAL_HOST and a cloud).
    Worker,
    /// Run everything in one process on the embedded defaults: SQLite, a local Temporal dev
    /// server (unless TEMPORAL_HOST is set), fakecloud (unless a cloud is configured), the API,
    /// the relay and a worker. Prints where the API listens and which key to use.
    Dev(DevArgs),
    /// Show the effective configuration and where each value came from (secrets redacted).
    Config,
    /// Measure a deployment of N servers against fakecloud: makespan, lower bound, requests per
    /// server, workflow history, memory; and the same with the concurrency limited to 10.
    Bench(bench::BenchArgs),
    /// API keys: their hashed form for API_KEYS, and new ones.
    #[command(subcommand)]
    Keys(KeysCommand),
    #[command(flatten)]
    Client(client::ClientCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the `sha256:HEX` form of a key read from stdin, which API_KEYS takes instead of
    /// the key itself (so the configuration holds no key).
    Hash,
    /// Make a new random key: prints the key, then its API_KEYS entry in hashed form.
    New {
        /// `read` or `write`.
        #[arg(long, default_value = "read", value_parser = ["read", "write"])]
        scope: String,
        /// A name for logs (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: Option<String>,
        /// When the key stops working: 2027-01-31 (midnight UTC) or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
    },
}

/// `orch keys hash` and `orch keys new`. The key is read from stdin, never from the command
/// line, where other users of the machine could see it.
fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Hash => {
            let mut key = String::new();
            std::io::stdin().read_line(&mut key)?;
            let key = key.trim_end_matches(['\n', '\r']);
            // The same rules as API_KEYS, so that what is printed is accepted there.
            orch_api::auth::ApiKeys::parse(&format!("{key}:read")).map_err(anyhow::Error::msg)?;
            println!("{}", orch_api::auth::hashed_key(key));
        }
        KeysCommand::New { scope, name, expires } => {
            let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            let mut entry = format!("{}:{scope}", orch_api::auth::hashed_key(&key));
            if let Some(name) = name {
                entry.push_str(&format!(":name={name}"));
            }
            if let Some(expires) = expires {
                entry.push_str(&format!(":expires={expires}"));
            }
            orch_api::auth::ApiKeys::parse(&entry).map_err(anyhow::Error::msg)?;
            println!("{key}");
            println!("{entry}");
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Also deploy orch's own observability stack on the local Docker Engine: Prometheus
    /// scraping orch's metrics and Grafana with orch's dashboard
    /// (examples/orch-observability.yaml).
    #[arg(long)]
    pub with_observability: bool,
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = match cli.command {
        Command::Client(command) => return client::run(command, cli.connection).await,
        Command::Bench(args) => return bench::run(args).await,
        Command::Keys(command) => return keys(command),
        command => command,
    };
    let cli = Cli { command, ..cli };
    let config_file = config::config_file_path(cli.config);
    let sources = Sources::gather(config_file.as_deref(), &std::env::current_dir()?, std::env::vars())?;
    match cli.command {
        Command::Config => {
            for (name, value, source) in sources.describe() {
                println!("{name}={value}\t# {source:?}");
            }
            Ok(())
        }
        Command::Serve | Command::Worker | Command::Dev(_) => {
            let mut sources = sources;
            let dev_key = match cli.command {
                Command::Dev(_) => dev_api_key(&mut sources)?,
                _ => None,
            };
            let mut config = sources.load()?;
            // Before anything reads a template (the store does, on every read).
            orch_core::catalog::install(std::mem::take(&mut config.catalog)).map_err(anyhow::Error::msg)?;
            let environment: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let cloud = cloud::client(&config, &environment)?;
            if let Some(cloud) = &cloud {
                config.api.default_region = cloud.region().to_owned();
            }
            init_logging(&config);
            match cli.command {
                Command::Serve => runtime::serve(config, cloud).await,
                Command::Worker => runtime::worker(config, cloud).await,
                Command::Dev(args) => runtime::dev(config, cloud, dev_key, &args).await,
                _ => unreachable!("matched above"),
            }
        }
        Command::Client(_) | Command::Bench(_) | Command::Keys(_) => unreachable!("handled above"),
    }
}

/// `orch dev` without API_KEYS: a random write key, kept in `data/dev-api-key` (mode 600)
/// so that it survives restarts.
fn dev_api_key(sources: &mut Sources) -> anyhow::Result<Option<String>> {
    if std::env::var("API_KEYS").is_ok_and(|keys| !keys.is_empty()) {
        return Ok(None);
    }
    let path = std::path::Path::new("data/dev-api-key");
    let key = match std::fs::read_to_string(path) {
        Ok(key) if key.trim().len() >= orch_api::auth::MIN_KEY_LEN => key.trim().to_owned(),
        _ => {
            std::fs::create_dir_all("data")?;
            let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            write_private(path, &key)?;
            key
        }
    };
    sources.set_if_absent("API_KEYS", format!("{key}:write"));
    Ok(Some(key))
}

fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(content.as_bytes())
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&config.log_level)
        .expect("LOG_LEVEL was validated");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}
