//! Where a provider reports as it goes: each resource is written to the store the moment the
//! provider knows it, and each sign of life becomes a Temporal heartbeat.

use orch_core::provider::{Observed, PortRequest, RecordFailed, Report};
use orch_store::leases::LeaseRequest;
use orch_store::resources::ResourceUpsert;
use orch_store::Store;
use serde_json::Value;
use temporalio_sdk::activities::ActivityContext;

use crate::failure::StoreFailure;

pub(crate) struct StoreReport<'a> {
    pub(crate) store: &'a Store,
    pub(crate) deployment_id: &'a str,
    pub(crate) ctx: &'a ActivityContext,
}

impl Report for StoreReport<'_> {
    async fn record(&self, resource: Observed) -> Result<(), RecordFailed> {
        let upsert = ResourceUpsert {
            deployment_id: self.deployment_id,
            logical_key: &resource.key,
            kind: &resource.kind,
            cloud_id: Some(&resource.id),
            status: &resource.status,
            attributes: &resource.attributes,
        };
        self.store
            .record_resource(&upsert)
            .await
            .map_err(|error| StoreFailure::from(error).recording(&resource.key))
    }

    async fn gone(&self, keys: &[String]) -> Result<(), RecordFailed> {
        // A member that is gone gives its host ports back.
        self.store
            .release_ports(self.deployment_id, keys)
            .await
            .map_err(|error| StoreFailure::from(error).recording("port leases"))?;
        if keys.is_empty() {
            return self
                .store
                .mark_all_resources_deleted(self.deployment_id)
                .await
                .map_err(|error| StoreFailure::from(error).recording("*"));
        }
        for key in keys {
            self.store
                .mark_resource_deleted(self.deployment_id, key)
                .await
                .map_err(|error| StoreFailure::from(error).recording(key))?;
        }
        Ok(())
    }

    async fn event(&self, action: &str, detail: Value) -> Result<(), RecordFailed> {
        self.store
            .record_event(self.deployment_id, action, detail)
            .await
            .map_err(|error| StoreFailure::from(error).recording(action))
    }

    async fn lease_port(&self, request: PortRequest<'_>) -> Result<u16, RecordFailed> {
        let lease = LeaseRequest {
            host: request.host,
            address: request.address,
            protocol: request.protocol,
            deployment_id: self.deployment_id,
            logical_key: request.key,
            port_name: request.name,
        };
        self.store
            .lease_port(&lease, request.range.0..=request.range.1, request.avoid)
            .await
            .map_err(|error| StoreFailure::from(error).recording(request.key))
    }

    async fn secrets(&self) -> Result<std::collections::BTreeMap<String, secrecy::SecretString>, RecordFailed> {
        self.store
            .secret_values(self.deployment_id)
            .await
            .map_err(|error| StoreFailure::from(error).recording("secrets"))
    }

    async fn progress(&self, what: &str) {
        heartbeat(self.ctx, what.to_owned()).await;
    }
}

/// Heartbeats are best effort: a payload that cannot be encoded must not fail the work.
pub(crate) async fn heartbeat(ctx: &ActivityContext, details: String) {
    if let Err(error) = ctx.record_heartbeat(details).await {
        tracing::warn!(error = %error, "heartbeat not recorded");
    }
}
