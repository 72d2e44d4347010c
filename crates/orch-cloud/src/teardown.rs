//! Deleting resources in the order the cloud requires. Servers first, and then a wait until
//! they are gone (Nova lists a deleted server for a while, and its ports stay bound and its
//! volumes attached until it is); volumes once Nova has detached them; ports, every one of
//! them, recorded or not, before their subnets; router interfaces before the subnets they
//! sit on and before their router; security groups; subnets; networks last.
//!
//! Neutron refuses (409) to delete a subnet that still holds a port or a group a port still
//! uses, and Cinder (400) a volume still attached. Such refusals usually clear within
//! seconds, so they are retried with backoff until a deadline; after it the error names
//! everything that is left, and trying again later may finish the work.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::client::OpenStack;
use crate::compute::ServerFilter;
use crate::error::{CloudError, Result, Service};
use crate::managed::ManagedResource;
use crate::network::Port;

/// Deletes of one kind in flight at once (the client's own limits still pace them).
const DELETE_CONCURRENCY: usize = 16;

/// The order of deletion, dependents first.
pub const DELETE_ORDER: [&str; 7] = [
    "server",
    "volume",
    "port",
    "router",
    "security_group",
    "subnet",
    "network",
];

/// How long to keep trying a refused delete, and how long to wait for servers and volumes
/// to be gone.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub refused: Duration,
    pub gone: Duration,
}

impl Default for Patience {
    fn default() -> Self {
        Self {
            refused: Duration::from_secs(120),
            gone: Duration::from_secs(600),
        }
    }
}

/// Whether a refusal may clear by itself: a dependent still going away.
fn refused_for_now(error: &CloudError) -> bool {
    match error {
        CloudError::Conflict { .. } => true,
        // Cinder: "Volume status must be available or error ..., and must not be ... attached".
        CloudError::BadRequest {
            service: Service::Volume,
            message,
        } => message.contains("status must be") || message.contains("attached"),
        _ => false,
    }
}

fn of_kind<'a>(resources: &'a [ManagedResource], kind: &str) -> Vec<&'a ManagedResource> {
    resources.iter().filter(|resource| resource.kind == kind).collect()
}

fn describe(resources: &[&ManagedResource]) -> Vec<String> {
    resources
        .iter()
        .map(|resource| format!("{} {} ({})", resource.kind, resource.name, resource.id))
        .collect()
}

impl OpenStack {
    /// Deletes `resources` in dependency order. `servers_scope` lists the servers among
    /// which those being deleted are watched until they are gone (one list per cycle).
    pub async fn tear_down(
        &self,
        resources: &[ManagedResource],
        servers_scope: &ServerFilter,
        patience: Patience,
    ) -> Result<()> {
        for (step, kind) in DELETE_ORDER.iter().enumerate() {
            let batch = of_kind(resources, kind);
            if batch.is_empty() {
                continue;
            }
            if let Err(error) = self.delete_kind(kind, &batch, servers_scope, patience).await {
                let left: Vec<&ManagedResource> = DELETE_ORDER[step..]
                    .iter()
                    .flat_map(|kind| of_kind(resources, kind))
                    .collect();
                return Err(CloudError::Incomplete {
                    left: describe(&left),
                    message: error.to_string(),
                });
            }
        }
        Ok(())
    }

    async fn delete_kind(
        &self,
        kind: &str,
        batch: &[&ManagedResource],
        servers_scope: &ServerFilter,
        patience: Patience,
    ) -> Result<()> {
        let ids: Vec<String> = batch.iter().map(|resource| resource.id.clone()).collect();
        match kind {
            "server" => {
                self.delete_concurrently(&ids, |cloud, id| async move { cloud.delete_server(&id).await })
                    .await?;
                self.wait_servers_gone(&ids, servers_scope, patience.gone).await
            }
            "volume" => {
                for id in &ids {
                    self.persist(patience, || self.delete_volume(id)).await?;
                    self.wait_volume(id, None, patience.gone).await?;
                }
                Ok(())
            }
            "port" => {
                self.delete_concurrently(&ids, |cloud, id| async move { cloud.delete_port(&id).await })
                    .await
            }
            "router" => {
                for id in &ids {
                    self.clear_router(id).await?;
                    self.persist(patience, || self.delete_router(id)).await?;
                }
                Ok(())
            }
            "security_group" => {
                self.persist_each(&ids, patience, |id| self.delete_security_group(id))
                    .await
            }
            "subnet" => self.persist_each(&ids, patience, |id| self.delete_subnet(id)).await,
            _ => self.persist_each(&ids, patience, |id| self.delete_network(id)).await,
        }
    }

    /// Runs a delete again while the cloud refuses it for now, until `patience` runs out.
    async fn persist<F, Fut>(&self, patience: Patience, delete: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .with_total_delay(Some(patience.refused));
        delete
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(refused_for_now)
            .notify(|error, wait| tracing::info!(error = %error, wait_ms = wait.as_millis() as u64, "delete refused for now; trying again"))
            .await
    }

    async fn persist_each<'a, F, Fut>(&self, ids: &'a [String], patience: Patience, delete: F) -> Result<()>
    where
        F: Fn(&'a str) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        for id in ids {
            self.persist(patience, || delete(id)).await?;
        }
        Ok(())
    }

    async fn delete_concurrently<F, Fut>(&self, ids: &[String], delete: F) -> Result<()>
    where
        F: Fn(OpenStack, String) -> Fut,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let permits = Arc::new(tokio::sync::Semaphore::new(DELETE_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for id in ids {
            let (permits, work) = (permits.clone(), delete(self.clone(), id.clone()));
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore is never closed");
                work.await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|error| CloudError::Decode {
                service: Service::Compute,
                message: format!("a delete task failed: {error}"),
            })??;
        }
        Ok(())
    }

    /// Waits until none of `ids` is listed in `scope` any more (or only as DELETED).
    async fn wait_servers_gone(&self, ids: &[String], scope: &ServerFilter, patience: Duration) -> Result<()> {
        let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let deadline = tokio::time::Instant::now() + patience;
        let mut interval = Duration::from_millis(250);
        loop {
            let listed = self.list_servers(scope).await?;
            let remaining = listed
                .iter()
                .filter(|server| wanted.contains(server.id.as_str()) && server.status != "DELETED")
                .count();
            if remaining == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CloudError::WaitTimeout {
                    what: format!("{remaining} deleted server(s) to be gone"),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 3 / 2).min(Duration::from_secs(5));
        }
    }

    /// Removes every interface of a router, whichever subnet it is on.
    async fn clear_router(&self, router_id: &str) -> Result<()> {
        let ports: Vec<Port> = self.list_neutron(&[("device_id", router_id.to_owned())]).await?;
        for port in ports
            .iter()
            .filter(|port| port.device_owner.starts_with("network:router_interface"))
        {
            self.remove_router_port(router_id, &port.id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_and_attached_volumes_are_refusals_for_now() {
        let conflict = CloudError::Conflict {
            service: Service::Network,
            message: "Unable to complete operation on subnet".into(),
        };
        let attached = CloudError::BadRequest {
            service: Service::Volume,
            message: "Invalid volume: Volume status must be available or error".into(),
        };
        let invalid = CloudError::BadRequest {
            service: Service::Network,
            message: "Invalid input".into(),
        };
        assert!(refused_for_now(&conflict));
        assert!(refused_for_now(&attached));
        assert!(!refused_for_now(&invalid));
        assert!(!refused_for_now(&CloudError::NotFound {
            service: Service::Network,
            message: String::new()
        }));
    }

    #[test]
    fn everything_is_deleted_dependents_first() {
        let position = |kind| DELETE_ORDER.iter().position(|k| *k == kind).unwrap();
        assert!(position("server") < position("volume"));
        assert!(position("port") < position("subnet"));
        assert!(position("router") < position("subnet"));
        assert!(position("security_group") > position("port"));
        assert_eq!(DELETE_ORDER.last(), Some(&"network"));
    }
}
