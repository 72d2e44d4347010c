//! The `orch` binary's library: command-line interface, configuration loading, logging set-up
//! and the `serve` command. `main.rs` only calls [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orch_api::AppState;
use orch_store::{Store, StoreOptions};
use tokio::net::TcpListener;

pub mod cloud;
pub mod config;

use config::{Config, LogFormat, Sources};

/// orch: deploy, configure, scale and tear down infrastructure from templates.
#[derive(Debug, Parser)]
#[command(name = "orch", version, about, long_about = None)]
pub struct Cli {
    /// TOML file of settings (VARIABLE = value); the environment and .env override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API on API_HOST:API_PORT until SIGTERM or Ctrl-C.
    Serve,
    /// Show the effective configuration and where each value came from (secrets redacted).
    Config,
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config_file = config::config_file_path(cli.config);
    let sources = Sources::gather(config_file.as_deref(), &std::env::current_dir()?, std::env::vars())?;
    match cli.command {
        Command::Config => {
            for (name, value, source) in sources.describe() {
                println!("{name}={value}\t# {source:?}");
            }
            Ok(())
        }
        Command::Serve => {
            let mut config = sources.load()?;
            let environment: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let cloud = cloud::client(&config, &environment)?;
            if let Some(cloud) = &cloud {
                config.api.default_region = cloud.region().to_owned();
            }
            init_logging(&config);
            serve(config, cloud).await
        }
    }
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

async fn serve(config: Config, cloud: Option<orch_cloud::OpenStack>) -> anyhow::Result<()> {
    tracing::info!(database = %config::redacted_database_url(&config), "connecting to the database");
    let store = Store::connect(config::database_url(&config), &StoreOptions::default())
        .await
        .context("cannot open the database")?;
    let address = SocketAddr::new(config.api_host, config.api_port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    // The first line on stdout is the address, so scripts and tests can use port 0.
    println!("orch listening on http://{bound}");
    tracing::info!(address = %bound, "serving the API");
    let mut state = AppState::new(store, config.api);
    match &cloud {
        Some(cloud) => {
            tracing::info!(region = cloud.region(), "cloud configured");
            state.region_check = Some(cloud::region_check(cloud));
            state.readiness_checks = std::sync::Arc::new(vec![("cloud".to_owned(), cloud::readiness_check(cloud))]);
        }
        None => {
            tracing::warn!("no cloud configured (OPENSTACK_AUTH_URL, OS_CLOUD or OS_AUTH_URL); regions are not checked")
        }
    }
    orch_api::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
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
