//! Cloud resources, one row per (deployment, logical key): recorded the moment the
//! provider knows them, updated as they change, marked deleted when they are gone.

use serde_json::Value;
use uuid::Uuid;

use crate::{now, timed, ResourceRecord, Result, Store};

#[derive(Debug, Clone)]
pub struct ResourceUpsert<'a> {
    pub deployment_id: &'a str,
    pub logical_key: &'a str,
    pub kind: &'a str,
    pub cloud_id: Option<&'a str>,
    pub status: &'a str,
    pub attributes: &'a Value,
}

impl Store {
    /// Records (or updates) one resource by its logical key; idempotent, so an activity that
    /// runs twice records it once.
    #[tracing::instrument(skip_all, fields(deployment_id = resource.deployment_id, key = resource.logical_key))]
    pub async fn record_resource(&self, resource: &ResourceUpsert<'_>) -> Result<()> {
        let at = now();
        let query = sqlx::query(
            "INSERT INTO resources (id, deployment_id, logical_key, kind, cloud_id, status, attributes, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (deployment_id, logical_key) DO UPDATE SET kind = excluded.kind, \
             cloud_id = COALESCE(excluded.cloud_id, resources.cloud_id), status = excluded.status, \
             attributes = excluded.attributes, updated_at = excluded.updated_at, deleted_at = NULL",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(resource.deployment_id)
        .bind(resource.logical_key)
        .bind(resource.kind)
        .bind(resource.cloud_id)
        .bind(resource.status)
        .bind(resource.attributes.to_string())
        .bind(&at)
        .execute(self.pool());
        timed("resources.upsert", query).await?;
        Ok(())
    }

    /// The live cloud resources recorded for a deployment.
    #[tracing::instrument(skip(self))]
    pub async fn resources(&self, deployment_id: &str) -> Result<Vec<ResourceRecord>> {
        let rows = timed(
            "resources.list",
            sqlx::query(
                "SELECT logical_key, kind, cloud_id, status, attributes, created_at, updated_at FROM resources \
                 WHERE deployment_id = $1 AND deleted_at IS NULL ORDER BY logical_key",
            )
            .bind(deployment_id)
            .fetch_all(self.pool()),
        )
        .await?;
        rows.iter().map(ResourceRecord::from_row).collect()
    }

    /// Marks a resource as gone from the cloud.
    #[tracing::instrument(skip(self))]
    pub async fn mark_resource_deleted(&self, deployment_id: &str, logical_key: &str) -> Result<()> {
        let at = now();
        let query = sqlx::query(
            "UPDATE resources SET status = 'DELETED', deleted_at = $3, updated_at = $3 WHERE deployment_id = $1 AND logical_key = $2 AND deleted_at IS NULL",
        )
        .bind(deployment_id)
        .bind(logical_key)
        .bind(&at)
        .execute(self.pool());
        timed("resources.delete", query).await?;
        Ok(())
    }

    /// Marks every resource of a deployment as gone (after a full delete).
    #[tracing::instrument(skip(self))]
    pub async fn mark_all_resources_deleted(&self, deployment_id: &str) -> Result<()> {
        let at = now();
        let query = sqlx::query(
            "UPDATE resources SET status = 'DELETED', deleted_at = $2, updated_at = $2 WHERE deployment_id = $1 AND deleted_at IS NULL",
        )
        .bind(deployment_id)
        .bind(&at)
        .execute(self.pool());
        timed("resources.delete_all", query).await?;
        Ok(())
    }
}
