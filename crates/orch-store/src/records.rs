//! Rows as Rust types, and their decoding from `AnyRow`.

use orch_core::{DeploymentStatus, OperationKind, Template};
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Result, StoreError};

/// Who asked for a change and under which request: written into every event and operation.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The API key's id (a hash prefix, never the key).
    pub key_id: Option<String>,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateRecord {
    pub id: String,
    pub template: Template,
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

pub(crate) const TEMPLATE_COLUMNS: &str =
    "id, name, description, vm_config, network_config, security_groups, key_pair, services, networks, version, created_at, updated_at";

impl TemplateRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self> {
        let mut document = serde_json::Map::new();
        document.insert("name".into(), Value::String(row.try_get("name")?));
        if let Some(description) = row.try_get::<Option<String>, _>("description")? {
            document.insert("description".into(), Value::String(description));
        }
        if let Some(key_pair) = row.try_get::<Option<String>, _>("key_pair")? {
            document.insert("key_pair".into(), Value::String(key_pair));
        }
        // A template of services alone has neither servers nor a network; an older row has
        // no services.
        for column in ["vm_config", "network_config", "security_groups", "services", "networks"] {
            let value = json_column(row, column)?;
            let empty = value.is_null() || value.as_object().is_some_and(serde_json::Map::is_empty);
            if !empty || column == "security_groups" {
                document.insert(column.into(), value);
            }
        }
        let template = Template::parse(&Value::Object(document), "", None)
            .map_err(|_| StoreError::Corrupt("deployment_templates"))?;
        Ok(Self {
            id: row.try_get("id")?,
            template,
            version: row.try_get("version")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// A deployment as stored. `template` is the template it was created from (or last updated
/// to); the servers it asks for come from applying `parameters` to it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRecord {
    pub id: String,
    pub name: String,
    pub status: DeploymentStatus,
    /// Why the deployment is in its status, e.g. the cause of a failure.
    pub status_reason: Option<String>,
    pub template_id: Option<String>,
    pub template: Template,
    pub parameters: Value,
    /// Empty for a deployment of services alone.
    pub cloud_region: String,
    /// Where the deployment's containers run; empty for one without services.
    pub container_host: String,
    /// Whether a failed deploy deletes what it created.
    pub rollback: bool,
    /// Whether a reconcile pass that finds drift repairs it at once.
    pub auto_heal: bool,
    /// Resources the last reconcile pass found drifted, and when it looked.
    pub drift_count: i64,
    pub drift_checked_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

pub(crate) const DEPLOYMENT_COLUMNS: &str = "id, name, status, status_reason, template_id, template, parameters, cloud_region, rollback, created_at, updated_at, deleted_at, container_host, auto_heal, drift_count, drift_checked_at";

impl DeploymentRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self> {
        let status: String = row.try_get("status")?;
        let template = Template::parse(&json_column(row, "template")?, "", None)
            .map_err(|_| StoreError::Corrupt("deployments.template"))?;
        Ok(Self {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            status: status.parse().map_err(|_| StoreError::Corrupt("deployments.status"))?,
            status_reason: row.try_get("status_reason")?,
            template_id: row.try_get("template_id")?,
            template,
            parameters: json_column(row, "parameters")?,
            cloud_region: row.try_get("cloud_region")?,
            container_host: row.try_get("container_host")?,
            rollback: flag(row, "rollback")?,
            auto_heal: flag(row, "auto_heal")?,
            drift_count: row.try_get("drift_count")?,
            drift_checked_at: row.try_get("drift_checked_at")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            deleted_at: row.try_get("deleted_at")?,
        })
    }
}

/// One cloud resource of a deployment, keyed by its logical key (e.g. `server/web/0`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceRecord {
    pub logical_key: String,
    pub kind: String,
    pub cloud_id: Option<String>,
    pub status: String,
    pub attributes: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// A recorded resource as a provider sees it (an empty id: recorded before the provider
/// gave one).
impl From<ResourceRecord> for orch_core::provider::Observed {
    fn from(resource: ResourceRecord) -> Self {
        Self {
            key: resource.logical_key,
            kind: resource.kind,
            id: resource.cloud_id.unwrap_or_default(),
            status: resource.status,
            attributes: resource.attributes,
        }
    }
}

impl ResourceRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            logical_key: row.try_get("logical_key")?,
            kind: row.try_get("kind")?,
            cloud_id: row.try_get("cloud_id")?,
            status: row.try_get("status")?,
            attributes: json_column(row, "attributes")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// One entry of a deployment's append-only history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub action: String,
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub detail: Value,
    pub created_at: String,
}

impl EventRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            action: row.try_get("action")?,
            actor: row.try_get("actor")?,
            request_id: row.try_get("request_id")?,
            detail: json_column(row, "detail")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// States of an outbox row.
pub mod operation_state {
    pub const PENDING: &str = "PENDING";
    pub const RUNNING: &str = "RUNNING";
    pub const SUCCEEDED: &str = "SUCCEEDED";
    pub const FAILED: &str = "FAILED";
    pub const CANCELLED: &str = "CANCELLED";
}

/// One row of the `operations` outbox: work requested and not yet (or already) carried out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationRecord {
    pub id: String,
    pub deployment_id: String,
    pub kind: OperationKind,
    pub state: String,
    pub payload: Value,
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// When a cancel was asked for; the operation's forward steps stop at it.
    pub cancel_requested_at: Option<String>,
}

pub(crate) const OPERATION_COLUMNS: &str = "id, deployment_id, kind, state, payload, actor, request_id, error, created_at, started_at, finished_at, cancel_requested_at";

impl OperationRecord {
    pub(crate) fn from_row(row: &AnyRow) -> Result<Self> {
        let kind: String = row.try_get("kind")?;
        Ok(Self {
            id: row.try_get("id")?,
            deployment_id: row.try_get("deployment_id")?,
            kind: kind.parse().map_err(|_| StoreError::Corrupt("operations.kind"))?,
            state: row.try_get("state")?,
            payload: json_column(row, "payload")?,
            actor: row.try_get("actor")?,
            request_id: row.try_get("request_id")?,
            error: row.try_get("error")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            cancel_requested_at: row.try_get("cancel_requested_at")?,
        })
    }
}

/// A page of rows and the number of rows matching the filter.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

fn json_column(row: &AnyRow, column: &'static str) -> Result<Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| StoreError::Corrupt(column))
}

/// Flags are stored as 0 or 1 in a BIGINT column on both databases.
fn flag(row: &AnyRow, column: &'static str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}
