//! Response bodies, with the field names the API documents (`/openapi.json`).

use std::collections::BTreeMap;

use orch_core::DeploymentStatus;
use orch_store::{DeploymentRecord, EventRecord, OperationRecord, ResourceRecord, TemplateRecord};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// `202` to `POST /deployments` and `PATCH /deployments/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentAccepted {
    pub id: String,
    pub name: String,
    pub status: DeploymentStatus,
    /// The recorded operation that the workflow layer carries out.
    pub operation_id: String,
}

impl DeploymentAccepted {
    pub fn new(record: DeploymentRecord, operation: &OperationRecord) -> Self {
        Self {
            id: record.id,
            name: record.name,
            status: record.status,
            operation_id: operation.id.clone(),
        }
    }
}

/// `202` to `DELETE /deployments/{id}`: `DELETING`, or `DELETED` when nothing had been
/// created yet and the deployment was deleted at once.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteAccepted {
    pub id: String,
    pub status: DeploymentStatus,
    /// The delete operation, once recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The operation that was in flight and is being cancelled first; the delete is
    /// recorded when it has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelling: Option<String>,
}

/// `202` to `POST /deployments/{id}/configure` and `/scale`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperationAccepted {
    pub deployment_id: String,
    pub status: DeploymentStatus,
    pub operation_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    pub id: String,
    /// `create`, `update`, `delete`, `configure` or `scale`.
    pub kind: String,
    /// `PENDING`, `RUNNING`, `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub state: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Set once a cancel was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<String>,
}

impl From<OperationRecord> for OperationView {
    fn from(operation: OperationRecord) -> Self {
        Self {
            id: operation.id,
            kind: operation.kind.as_str().to_owned(),
            state: operation.state,
            created_at: operation.created_at,
            started_at: operation.started_at,
            cancel_requested_at: operation.cancel_requested_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerView {
    pub id: Option<String>,
    pub name: Option<String>,
    pub ip: Option<String>,
    pub status: String,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct GroupView {
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceView {
    pub logical_key: String,
    pub kind: String,
    pub cloud_id: Option<String>,
    pub status: String,
    #[schema(value_type = Object)]
    pub attributes: Value,
}

/// The cloud resources of a deployment: `network_id` and `vm_ids` (the API's first shape), servers per
/// group, and every recorded resource.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ResourcesView {
    pub network_id: Option<String>,
    pub vm_ids: Vec<String>,
    pub groups: BTreeMap<String, GroupView>,
    /// The containerised services' instances, by service.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceView>,
    pub items: Vec<ResourceView>,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ServiceView {
    pub instances: Vec<InstanceView>,
}

/// One instance of a service.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    pub index: u64,
    /// The engine's name, `<deployment>-<service>-<index>`.
    pub name: Option<String>,
    pub container_id: Option<String>,
    pub host: Option<String>,
    /// `created`, `running` (no health check) or `healthy`.
    pub health: String,
    /// Published host ports by port name.
    #[schema(value_type = Object)]
    pub host_ports: Value,
}

impl ResourcesView {
    pub fn from_records(records: Vec<ResourceRecord>) -> Self {
        let mut view = Self::default();
        for record in records {
            let text = |key: &str| record.attributes.get(key).and_then(Value::as_str).map(str::to_owned);
            match record.kind.as_str() {
                "network" => view.network_id = view.network_id.or(record.cloud_id.clone()),
                "server" => {
                    if let Some(id) = &record.cloud_id {
                        view.vm_ids.push(id.clone());
                    }
                    let group = text("group").unwrap_or_default();
                    view.groups.entry(group).or_default().servers.push(ServerView {
                        id: record.cloud_id.clone(),
                        name: text("name"),
                        ip: text("ip"),
                        status: record.status.clone(),
                    });
                }
                "container" => {
                    let service = text("service").unwrap_or_default();
                    view.services.entry(service).or_default().instances.push(InstanceView {
                        index: record
                            .attributes
                            .get("index")
                            .and_then(Value::as_u64)
                            .unwrap_or_default(),
                        name: text("name"),
                        container_id: record.cloud_id.clone(),
                        host: text("host"),
                        health: record.status.clone(),
                        host_ports: record
                            .attributes
                            .get("host_ports")
                            .cloned()
                            .unwrap_or_else(|| json!({})),
                    });
                }
                _ => {}
            }
            view.items.push(ResourceView {
                logical_key: record.logical_key,
                kind: record.kind,
                cloud_id: record.cloud_id,
                status: record.status,
                attributes: record.attributes,
            });
        }
        for service in view.services.values_mut() {
            service.instances.sort_by_key(|instance| instance.index);
        }
        view
    }
}

/// One deployment, in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentView {
    pub id: String,
    pub name: String,
    pub status: DeploymentStatus,
    /// Why it is in this status, e.g. the cause of a failure.
    pub status_reason: Option<String>,
    pub template_id: Option<String>,
    /// The template it was created from, as given.
    #[schema(value_type = Object)]
    pub template: Value,
    #[schema(value_type = Object)]
    pub parameters: Value,
    pub cloud_region: String,
    /// Where the services run; empty without services.
    pub container_host: String,
    pub rollback: bool,
    /// Whether each reconcile pass repairs drift at once.
    pub auto_heal: bool,
    /// Whether the last reconcile pass found resources drifted (`GET .../drift` lists them).
    pub drifted: bool,
    pub drift_count: i64,
    /// When a reconcile pass last compared the deployment with its providers.
    pub drift_checked_at: Option<String>,
    pub resources: ResourcesView,
    /// The operation in flight, if any.
    pub operation: Option<OperationView>,
    /// The deployment's secrets, without their values.
    pub secrets: Vec<SecretView>,
    pub created_at: String,
    pub updated_at: String,
    pub deleted_at: Option<String>,
}

/// A secret as shown: never its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    pub name: String,
    /// `generated` by orch, or `supplied` with the request.
    pub source: String,
    pub created_at: String,
    /// When a generated value was revealed (it is shown once).
    pub revealed_at: Option<String>,
}

impl From<orch_store::secrets::SecretInfo> for SecretView {
    fn from(info: orch_store::secrets::SecretInfo) -> Self {
        let source = match info.source {
            orch_store::secrets::SecretSource::Generated => "generated",
            orch_store::secrets::SecretSource::Supplied => "supplied",
        };
        Self {
            name: info.name,
            source: source.to_owned(),
            created_at: info.created_at,
            revealed_at: info.revealed_at,
        }
    }
}

/// A generated secret's value, given once.
#[derive(Serialize, ToSchema)]
pub struct RevealedSecret {
    pub name: String,
    pub value: String,
}

impl DeploymentView {
    pub fn new(record: DeploymentRecord, resources: Vec<ResourceRecord>, operation: Option<OperationRecord>) -> Self {
        Self {
            template: record.template.to_value(),
            id: record.id,
            name: record.name,
            status: record.status,
            status_reason: record.status_reason,
            template_id: record.template_id,
            parameters: record.parameters,
            cloud_region: record.cloud_region,
            container_host: record.container_host,
            rollback: record.rollback,
            auto_heal: record.auto_heal,
            drifted: record.drift_count > 0,
            drift_count: record.drift_count,
            drift_checked_at: record.drift_checked_at,
            resources: ResourcesView::from_records(resources),
            operation: operation.map(OperationView::from),
            secrets: Vec::new(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            deleted_at: record.deleted_at,
        }
    }
}

/// A deployment in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentSummary {
    pub id: String,
    pub name: String,
    pub status: DeploymentStatus,
    pub status_reason: Option<String>,
    pub template_name: String,
    pub template_id: Option<String>,
    pub cloud_region: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<DeploymentRecord> for DeploymentSummary {
    fn from(record: DeploymentRecord) -> Self {
        Self {
            id: record.id,
            name: record.name,
            status: record.status,
            status_reason: record.status_reason,
            template_name: record.template.name,
            template_id: record.template_id,
            cloud_region: record.cloud_region,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentList {
    pub items: Vec<DeploymentSummary>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    /// What happened, e.g. `deployment.created`, `operation.requested`.
    pub action: String,
    /// The id of the API key that caused it.
    pub actor: Option<String>,
    pub request_id: Option<String>,
    #[schema(value_type = Object)]
    pub detail: Value,
    pub created_at: String,
}

impl From<EventRecord> for EventView {
    fn from(event: EventRecord) -> Self {
        Self {
            id: event.id,
            action: event.action,
            actor: event.actor,
            request_id: event.request_id,
            detail: event.detail,
            created_at: event.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// A stored template: its document plus id, version and times.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub id: String,
    pub version: i64,
    #[schema(value_type = Object)]
    #[serde(flatten)]
    pub document: Value,
    pub created_at: String,
    pub updated_at: String,
}

impl From<TemplateRecord> for TemplateView {
    fn from(record: TemplateRecord) -> Self {
        Self {
            id: record.id,
            version: record.version,
            document: record.template.to_value(),
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub items: Vec<TemplateView>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckView {
    /// `ok` or `failing`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessView {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    pub checks: BTreeMap<String, CheckView>,
}
