//! `orch dev --with-observability`: orch watched by its own stack. A Prometheus that scrapes
//! orch's `/metrics` and a Grafana with orch's dashboard, deployed on the local container
//! engine from `examples/orch-observability.yaml` like any other deployment, so that a
//! newcomer sees orch's figures in a browser in one command.
//!
//! The containers reach orch at `host.docker.internal:9464` (every instance has that alias):
//! a second listener that serves `/metrics` alone, bound on the engine's bridge gateway, so it
//! is reachable from this machine and its containers and not from the network beyond.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use orch_api::routes::deployments::{record_deployment, record_update, Updated};
use orch_api::AppState;
use orch_core::{CreateDeploymentRequest, DeploymentStatus, Template, TemplateRef, UpdateDeploymentRequest};
use orch_store::deployments::DeploymentFilter;
use orch_store::{Actor, DeploymentRecord};
use tokio::net::TcpListener;

/// The stack, as shipped in `examples/`.
pub const TEMPLATE: &str = include_str!("../../../examples/orch-observability.yaml");
/// The deployment's name: one per orch dev data directory, found again after a restart.
pub const DEPLOYMENT: &str = "orch-observability";
/// Where the template's Prometheus scrapes orch (`host.docker.internal:9464`).
pub const METRICS_PORT: u16 = 9464;

/// The metrics listener, bound before anything is deployed so that a port in use is an
/// error at start-up.
pub struct Observability {
    listener: TcpListener,
}

impl Observability {
    /// Binds `/metrics` on the bridge gateway of the `local` container host.
    pub async fn bind(containers: &orch_docker::Docker) -> anyhow::Result<Self> {
        let gateway = containers
            .host_gateway(orch_docker::DEFAULT_HOST)
            .await
            .context("--with-observability needs the local Docker Engine")?;
        let address = SocketAddr::new(gateway, METRICS_PORT);
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!(
                "cannot listen on {address} for the observability stack's Prometheus (is another orch dev running?)"
            )
        })?;
        tracing::info!(address = %address, "serving /metrics to the observability stack");
        Ok(Self { listener })
    }

    /// Serves the metrics until shutdown, records (or brings up to date) the stack's
    /// deployment, and says where Grafana and Prometheus are once it is up.
    pub async fn start(self, state: AppState) -> anyhow::Result<()> {
        let served = orch_api::serve_metrics(self.listener, state.clone(), crate::shutdown_signal());
        tokio::spawn(async move {
            if let Err(error) = served.await {
                tracing::error!(%error, "the metrics listener stopped");
            }
        });
        let id = ensure_deployment(&state).await?;
        tokio::spawn(announce_when_up(state, id));
        Ok(())
    }
}

fn actor() -> Actor {
    Actor {
        key_id: Some("orch-dev".to_owned()),
        request_id: None,
    }
}

/// The template of this build, read with the installed catalog.
pub fn template() -> anyhow::Result<Template> {
    Template::parse_text(TEMPLATE).map_err(|problems| anyhow::anyhow!("examples/orch-observability.yaml: {problems}"))
}

/// Creates the stack's deployment, or updates it when this build's template differs from
/// the one it runs; an unchanged one is left alone, so a restart duplicates nothing.
async fn ensure_deployment(state: &AppState) -> anyhow::Result<String> {
    let template = template()?;
    let failed = |error: orch_api::ApiError| anyhow::anyhow!("the observability stack: {error}");
    let Some(current) = live(state).await? else {
        let request = CreateDeploymentRequest {
            name: DEPLOYMENT.to_owned(),
            template: TemplateRef::Inline(Box::new(template)),
            parameters: serde_json::Map::new(),
            cloud_region: None,
            container_host: Some(orch_docker::DEFAULT_HOST.to_owned()),
            rollback: true,
            // orch watches its own stack: a stopped Prometheus is started again.
            auto_heal: true,
            secrets: std::collections::BTreeMap::new(),
        };
        let (record, _) = record_deployment(state, request, &actor()).await.map_err(failed)?;
        tracing::info!(deployment_id = %record.id, "observability stack recorded");
        return Ok(record.id);
    };
    let settled = matches!(current.status, DeploymentStatus::Completed | DeploymentStatus::Failed);
    if current.template == template || !settled {
        if current.status == DeploymentStatus::Failed {
            tracing::warn!(reason = ?current.status_reason, "the observability stack failed; `orch retry {DEPLOYMENT}` tries again");
        }
        return Ok(current.id);
    }
    let request = UpdateDeploymentRequest {
        template: Some(TemplateRef::Inline(Box::new(template))),
        parameters: None,
        dry_run: false,
    };
    let updated = record_update(state, &current, request, &actor())
        .await
        .map_err(failed)?;
    if let Updated::Recorded(recorded) = updated {
        tracing::info!(operation_id = %recorded.1.id, "observability stack updated to this build's template");
    }
    Ok(current.id)
}

async fn live(state: &AppState) -> anyhow::Result<Option<DeploymentRecord>> {
    let filter = DeploymentFilter {
        status: None,
        name: Some(DEPLOYMENT.to_owned()),
        limit: 1,
        offset: 0,
    };
    Ok(state.store.deployments(&filter).await?.items.into_iter().next())
}

/// Prints Grafana's and Prometheus's addresses once the stack is up (or why it is not).
async fn announce_when_up(state: AppState, id: String) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(record) = state.store.deployment(&id).await else {
            return;
        };
        match record.status {
            DeploymentStatus::Completed => break,
            DeploymentStatus::Failed => {
                eprintln!(
                    "orch dev: the observability stack failed: {}",
                    record.status_reason.unwrap_or_default()
                );
                return;
            }
            DeploymentStatus::Deleting | DeploymentStatus::Deleted => return,
            _ => {}
        }
    }
    let Ok(resources) = state.store.resources(&id).await else {
        return;
    };
    let port_of = |service: &str| {
        resources
            .iter()
            .find(|resource| resource.kind == "container" && resource.attributes["service"] == service)
            .and_then(|resource| resource.attributes["host_ports"]["http"].as_u64())
    };
    if let (Some(grafana), Some(prometheus)) = (port_of("grafana"), port_of("prometheus")) {
        eprintln!(
            "orch dev: Grafana with orch's dashboard at http://127.0.0.1:{grafana} (anonymous viewer; \
             admin password: orch secret reveal {DEPLOYMENT} grafana_admin_password); \
             Prometheus at http://127.0.0.1:{prometheus}"
        );
    }
}
