//! The reconciler: what a container host runs is compared with what the store recorded,
//! and an instance that stopped or went (`docker rm -f`, a daemon-side stop, an engine
//! restart) is repaired through an ordinary update operation, so the repair is durable,
//! health-gated and in dependency order like any deploy. It looks on start, every
//! `interval`, and at once when the engine's events say one of orch's containers stopped.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use orch_core::provider::Provider;
use orch_core::reconcile::STOPPED_CONTAINER;
use orch_docker::{Docker, EngineError};
use orch_store::{Actor, DeploymentRecord, Store, StoreError};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

pub struct Reconciler {
    pub store: Store,
    pub containers: Docker,
    pub interval: Duration,
}

impl Reconciler {
    /// One look at every completed deployment with services; the ids of those an update
    /// was asked for.
    pub async fn pass(&self) -> Result<Vec<String>, ReconcileError> {
        let mut repaired = Vec::new();
        let live = crate::sweep::completed_deployments(&self.store, |d| d.template.uses_containers()).await?;
        for deployment in &live {
            match self.check(deployment).await {
                Ok(true) => repaired.push(deployment.id.clone()),
                Ok(false) => {}
                Err(error) => tracing::warn!(deployment_id = %deployment.id, %error, "cannot reconcile"),
            }
        }
        Ok(repaired)
    }

    /// Compares one deployment; on drift, forgets the lost instances (their leases stay, so
    /// they come back on the same ports) and asks for an update to the spec it stands for.
    async fn check(&self, deployment: &DeploymentRecord) -> Result<bool, ReconcileError> {
        let host = self.containers.in_region(&deployment.container_host).await?;
        let running: BTreeMap<String, String> = host
            .observe(&deployment.id)
            .await?
            .into_iter()
            .filter(|found| found.kind == "container")
            .map(|found| (found.key, found.status))
            .collect();
        let drifted: BTreeMap<String, String> = self
            .store
            .resources(&deployment.id)
            .await?
            .into_iter()
            .filter(|resource| resource.kind == "container")
            .filter_map(|resource| match running.get(&resource.logical_key) {
                None => Some((resource.logical_key, "gone".to_owned())),
                Some(state) if STOPPED_CONTAINER.contains(&state.as_str()) => {
                    Some((resource.logical_key, state.clone()))
                }
                Some(_) => None,
            })
            .collect();
        if drifted.is_empty() {
            return Ok(false);
        }
        tracing::warn!(deployment_id = %deployment.id, instances = ?drifted, "containers drifted; repairing");
        metrics::counter!("container_drift_repairs_total").increment(1);
        for key in drifted.keys() {
            self.store.mark_resource_deleted(&deployment.id, key).await?;
        }
        self.store
            .record_event(&deployment.id, "containers.drifted", json!({"instances": drifted}))
            .await?;
        let actor = Actor {
            key_id: Some("reconciler".to_owned()),
            request_id: None,
        };
        match self.store.request_repair(&deployment.id, &actor).await {
            Ok(_) => Ok(true),
            // Another operation started meanwhile: it works from the same records.
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Looks now, then every `interval` and whenever an engine reports that one of orch's
    /// containers stopped, until `shutdown`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (nudge, mut nudged) = mpsc::channel::<()>(64);
        for host in self.containers.hosts().names() {
            tokio::spawn(watch(self.containers.clone(), host.to_owned(), nudge.clone()));
        }
        let mut ticks = tokio::time::interval(self.interval);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticks.tick() => {}
                Some(()) = nudged.recv() => {
                    // A burst of events (a daemon stopping every container) is one look.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    while nudged.try_recv().is_ok() {}
                }
            }
            if let Err(error) = self.pass().await {
                tracing::warn!(%error, "reconcile pass failed");
            }
        }
    }
}

/// Follows one host's events, nudging the reconciler on each; when the stream ends (the
/// daemon restarted) or cannot be had, nudges once and watches again after a pause.
async fn watch(containers: Docker, host: String, nudge: mpsc::Sender<()>) {
    loop {
        match containers
            .in_region(&host)
            .await
            .and_then(|engine| engine.container_events())
        {
            Ok(events) => {
                tokio::pin!(events);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => {
                            tracing::info!(deployment_id = %event.deployment_id, action = %event.action, "container event")
                        }
                        Err(error) => {
                            tracing::warn!(%host, %error, "engine events ended");
                            break;
                        }
                    }
                    if nudge.send(()).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => tracing::warn!(%host, %error, "cannot follow engine events"),
        }
        if nudge.send(()).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
