//! `/deployments`: create, read, list, update, delete, configure, scale, events.
//!
//! Every request is validated completely before anything is written; work is recorded as an
//! operation in the same transaction as the status change, for the workflow layer.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use orch_core::plan::Plan;
use orch_core::provider::Observed;
use orch_core::{
    apply_parameters, ConfigureRequest, CreateDeploymentRequest, DeploymentStatus, OperationKind, Problems,
    ScaleRequest, Template, TemplateRef, UpdateDeploymentRequest,
};
use orch_store::deployments::{DeleteOutcome, DeploymentFilter, NewDeployment};
use orch_store::{Actor, DeploymentRecord, OperationRecord, Store, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::{QueryParams, RequestActor};
use crate::error::{ApiError, ApiResult, ProblemDocument};
use crate::request::{Body, Path};
use crate::views::{
    DeleteAccepted, DeploymentAccepted, DeploymentList, DeploymentSummary, DeploymentView, EventList, EventView,
    OperationAccepted,
};
use crate::{AppState, Region};

/// `POST /deployments` body. Documentation only: bodies are read by orch-core's strict
/// reader, which reports every problem at once.
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateDeploymentBody {
    /// 1–63 characters of letters, digits, '.', '_' and '-'; unique among live deployments.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    name: String,
    /// A stored template's name or id, or a template object.
    #[schema(schema_with = super::openapi::template_reference)]
    template: Value,
    /// Defaults to the configured region; unused by a template of services alone.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    cloud_region: Option<String>,
    /// The container host the template's services run on; defaults to the first configured
    /// (`local`).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    container_host: Option<String>,
    /// `<group>_count`, `<group>_flavor`, `<group>_image`.
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// Whether a failed deploy deletes what it created (default true).
    rollback: Option<bool>,
    /// Whether every reconcile pass that finds drift repairs it at once (default false:
    /// drift is reported, and `POST /deployments/{id}/reconcile` repairs it).
    auto_heal: Option<bool>,
    /// Values of the template's secrets by name: required for those it declares
    /// `supplied`, optional for the others (generated when absent). Never shown again.
    #[schema(value_type = Option<Object>)]
    secrets: Option<Value>,
}

/// `PATCH /deployments/{id}` body (documentation only).
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateDeploymentBody {
    /// A stored template's name or id, or a template object.
    #[schema(schema_with = super::openapi::template_reference)]
    template: Option<Value>,
    /// Merged into the current parameters; `null` removes one.
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// Only return the plan.
    dry_run: Option<bool>,
}

/// `POST /deployments/{id}/scale` body (documentation only).
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    #[schema(maximum = 1000)]
    target_count: u32,
    /// The server group to scale.
    vm_type: Option<String>,
    /// The service to scale (instead of `vm_type`).
    service: Option<String>,
}

/// `POST /deployments/{id}/configure` body (documentation only).
#[allow(dead_code)]
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ConfigureBody {
    /// A playbook relative to the configured playbook directory.
    #[schema(min_length = 1)]
    playbook: String,
    /// Groups of hosts: the deployment's servers (by name or address) or addresses in its
    /// subnets; the servers by group when absent.
    #[schema(value_type = Option<Object>)]
    inventory: Option<Value>,
    /// Variables by name (identifiers, none of Ansible's own).
    #[schema(value_type = Option<Object>)]
    extra_vars: Option<Value>,
    /// Default 1800 (30 min).
    #[schema(minimum = 1, maximum = 21600)]
    timeout_seconds: Option<u32>,
}

/// Resolves a template reference. A stored template that does not exist is a validation
/// problem at `/template`, not a 404: the URL was right, the body was not.
async fn resolve_template(store: &Store, reference: TemplateRef) -> ApiResult<(Option<String>, Template)> {
    match reference {
        TemplateRef::Inline(template) => Ok((None, *template)),
        TemplateRef::Stored(name) => match store.template(&name).await {
            Ok(record) => Ok((Some(record.id), record.template)),
            Err(StoreError::NotFound(_)) => {
                Err(Problems::single("/template", format!("no stored template has the name or id '{name}'")).into())
            }
            Err(error) => Err(error.into()),
        },
    }
}

/// With a cloud configured, a region it does not know is refused now, not when a workflow
/// runs.
async fn check_region(state: &AppState, region: &str) -> ApiResult<()> {
    let Some(check) = &state.region_check else {
        return Ok(());
    };
    match check(region.to_owned()).await {
        Region::Known => Ok(()),
        Region::Unknown { why } => Err(Problems::single("/cloud_region", why).into()),
        Region::Unreachable { why } => {
            tracing::warn!(reason = %why, "cannot check the region with the cloud");
            Err(ApiError::Unavailable(
                "the cloud cannot be reached to check the region; try again later".into(),
            ))
        }
    }
}

/// The container host asked for (or the default), if it is configured.
fn container_host(state: &AppState, asked: Option<String>) -> ApiResult<String> {
    let hosts = &state.config.container_hosts;
    let Some(host) = asked.or_else(|| hosts.first().cloned()) else {
        return Err(Problems::single("/template/services", "no container host is configured for services").into());
    };
    if !hosts.contains(&host) {
        let why = format!(
            "'{host}' is not a configured container host; hosts: {}",
            hosts.join(", ")
        );
        return Err(Problems::single("/container_host", why).into());
    }
    Ok(host)
}

/// A live (not soft-deleted) deployment, or 404.
pub(crate) async fn live_deployment(store: &Store, id: &str) -> ApiResult<DeploymentRecord> {
    let record = store.deployment(id).await?;
    if record.deleted_at.is_some() {
        return Err(ApiError::NotFound(format!("deployment '{id}'")));
    }
    Ok(record)
}

#[utoipa::path(post, path = "/deployments", tag = "deployments",
    request_body = CreateDeploymentBody,
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 202, description = "Recorded; the deploy runs asynchronously", body = DeploymentAccepted),
        (status = 409, description = "A live deployment has this name", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid body; every problem with its JSON pointer", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    RequestActor(actor): RequestActor,
    Body(body): Body,
) -> ApiResult<(StatusCode, HeaderMap, Json<DeploymentAccepted>)> {
    let request = CreateDeploymentRequest::parse(&body)?;
    let (record, operation) = record_deployment(&state, request, &actor).await?;
    tracing::info!(deployment_id = %record.id, operation_id = %operation.id, "deployment recorded");
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/deployments/{}", record.id)) {
        headers.insert(header::LOCATION, location);
    }
    let accepted = DeploymentAccepted::new(record, &operation);
    Ok((StatusCode::ACCEPTED, headers, Json(accepted)))
}

/// Validates a create request completely and records the deployment with its deploy
/// operation: what `POST /deployments` does after reading the body, and what `orch dev`
/// calls for the stack it deploys itself.
pub async fn record_deployment(
    state: &AppState,
    request: CreateDeploymentRequest,
    actor: &Actor,
) -> ApiResult<(DeploymentRecord, OperationRecord)> {
    let (template_id, template) = resolve_template(&state.store, request.template).await?;
    let parameters = Value::Object(request.parameters);
    apply_parameters(&template, &parameters, "/parameters")?;
    let cloud_region = match template.uses_cloud() {
        true => request
            .cloud_region
            .unwrap_or_else(|| state.config.default_region.clone()),
        false => String::new(),
    };
    if template.uses_cloud() {
        check_region(state, &cloud_region).await?;
    }
    let container_host = match template.uses_containers() {
        true => container_host(state, request.container_host)?,
        false => String::new(),
    };
    let secrets = super::secrets::for_create(&template, &request.secrets)?;
    let new = NewDeployment {
        name: request.name,
        template_id,
        template,
        parameters,
        cloud_region,
        container_host,
        rollback: request.rollback,
        auto_heal: request.auto_heal,
        secrets,
    };
    Ok(state.store.create_deployment(&new, actor).await?)
}

#[utoipa::path(get, path = "/deployments", tag = "deployments",
    params(
        ("status" = Option<DeploymentStatus>, Query, description = "Only this status; DELETED lists soft-deleted deployments"),
        ("name" = Option<String>, Query, description = "Only this exact name"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
        ("offset" = Option<i64>, Query, minimum = 0, maximum = 2147483647, description = "Default 0"),
    ),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Newest first", body = DeploymentList),
              (status = 422, description = "Invalid query", body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn list(State(state): State<AppState>, mut query: QueryParams) -> ApiResult<Json<DeploymentList>> {
    let (limit, offset) = query.page();
    let status = match query.get("status").map(str::parse::<DeploymentStatus>) {
        Some(Ok(status)) => Some(status),
        Some(Err(message)) => {
            query.problem("status", message);
            None
        }
        None => None,
    };
    let name = query.get("name").map(str::to_owned);
    query.finish(&["status", "name", "limit", "offset"])?;
    let page = state
        .store
        .deployments(&DeploymentFilter {
            status,
            name,
            limit,
            offset,
        })
        .await?;
    Ok(Json(DeploymentList {
        items: page.items.into_iter().map(DeploymentSummary::from).collect(),
        total: page.total,
        limit,
        offset,
    }))
}

#[utoipa::path(get, path = "/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = DeploymentView),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<DeploymentView>> {
    let record = state.store.deployment(&id).await?;
    let resources = state.store.resources(&id).await?;
    let operation = state.store.operation_in_flight(&id).await?;
    let secrets = state.store.secrets_of(&id).await?;
    let mut view = DeploymentView::new(record, resources, operation);
    view.secrets = secrets.into_iter().map(Into::into).collect();
    Ok(Json(view))
}

#[utoipa::path(patch, path = "/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    request_body = UpdateDeploymentBody,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 202, body = DeploymentAccepted),
              (status = 200, description = "With `dry_run`: the plan (servers to create, delete, resize; subnets to create; shared resources to remove; the steps the update would run); nothing changes", body = Object),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 409, description = "Another operation is in flight, or the status does not allow it", body = ProblemDocument, content_type = "application/problem+json"),
              (status = 422, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RequestActor(actor): RequestActor,
    Body(body): Body,
) -> ApiResult<Response> {
    let current = live_deployment(&state.store, &id).await?;
    let request = UpdateDeploymentRequest::parse(&body, &current.name)?;
    let (record, operation) = match record_update(&state, &current, request, &actor).await? {
        Updated::Plan(plan) => return Ok(Json(plan).into_response()),
        Updated::Recorded(recorded) => *recorded,
    };
    Ok((StatusCode::ACCEPTED, Json(DeploymentAccepted::new(record, &operation))).into_response())
}

/// What an update request came to.
pub enum Updated {
    /// A dry run: the plan, nothing changed.
    Plan(Value),
    Recorded(Box<(DeploymentRecord, OperationRecord)>),
}

/// Validates an update of `current` completely and records its operation, or only plans it:
/// what `PATCH /deployments/{id}` does after reading the body, and what `orch dev` calls
/// when its own stack's template changed.
pub async fn record_update(
    state: &AppState,
    current: &DeploymentRecord,
    request: UpdateDeploymentRequest,
    actor: &Actor,
) -> ApiResult<Updated> {
    let id = &current.id;
    let parameters = Value::Object(request.merged_parameters(&current.parameters));
    let (template_id, template) = match request.template {
        Some(reference) => resolve_template(&state.store, reference).await?,
        None => (current.template_id.clone(), current.template.clone()),
    };
    let effective = apply_parameters(&template, &parameters, "/parameters")?;
    let secrets = super::secrets::for_update(state, id, &template).await?;
    if request.dry_run {
        return Ok(Updated::Plan(plan(&state.store, id, &effective).await?));
    }
    state.store.add_missing_secrets(id, &secrets).await?;
    let payload = json!({
        "template_id": template_id,
        "template": template.to_value(),
        "parameters": parameters,
    });
    let (record, operation) = state
        .store
        .request_operation(id, OperationKind::Update, &payload, actor)
        .await?;
    Ok(Updated::Recorded(Box::new((record, operation))))
}

/// What an update to `desired` would do, from the resources recorded now: the plan the
/// update's workflow would carry out.
async fn plan(store: &Store, id: &str, desired: &Template) -> ApiResult<Value> {
    let recorded: Vec<Observed> = store.resources(id).await?.into_iter().map(Observed::from).collect();
    let plan = Plan::for_operation(OperationKind::Update, &recorded, desired, None);
    let changes = plan.changes(&recorded, desired);
    Ok(json!({"plan": {
        "changes": changes,
        "servers": plan.servers,
        "subnets_to_create": plan.subnets_to_create,
        "prune": plan.prune,
        "services": plan.services,
        "steps": plan.steps(),
    }}))
}

#[utoipa::path(get, path = "/deployments/{id}/plan", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "What an update to the deployment's own spec would change, from what is recorded: every create, delete, resize, replace and prune with its reason (`changes`), and the steps; empty when the record matches the spec. The same planner the workflows run", body = Object),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn plan_of(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let record = live_deployment(&state.store, &id).await?;
    let effective = apply_parameters(&record.template, &record.parameters, "/parameters")?;
    Ok(Json(plan(&state.store, &id, &effective).await?))
}

#[utoipa::path(delete, path = "/deployments/{id}", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 202, body = DeleteAccepted),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 409, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RequestActor(actor): RequestActor,
) -> ApiResult<(StatusCode, Json<DeleteAccepted>)> {
    live_deployment(&state.store, &id).await?;
    let (record, outcome) = state.store.delete_deployment(&id, &actor).await?;
    let (operation_id, cancelling) = match outcome {
        DeleteOutcome::Deleted => (None, None),
        DeleteOutcome::Deleting => {
            let delete = state.store.operation_in_flight(&id).await?;
            (delete.map(|operation| operation.id), None)
        }
        DeleteOutcome::AfterCancel(cancelled) => (None, Some(cancelled)),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(DeleteAccepted {
            id: record.id,
            status: record.status,
            operation_id,
            cancelling,
        }),
    ))
}

#[utoipa::path(post, path = "/deployments/{id}/configure", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    request_body = ConfigureBody,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 202, body = OperationAccepted),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 409, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 422, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn configure(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RequestActor(actor): RequestActor,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<OperationAccepted>)> {
    let record = live_deployment(&state.store, &id).await?;
    let request = ConfigureRequest::parse(&body)?;
    if let Some(inventory) = &request.inventory {
        let resources = state.store.resources(&id).await?;
        check_inventory_hosts(inventory, &resources, &record.template)?;
    }
    let payload = serde_json::to_value(&request).map_err(ApiError::internal)?;
    start_operation(&state, &id, OperationKind::Configure, payload, &actor).await
}

/// A given inventory names the deployment's own servers, by name or address, or addresses
/// inside its subnets; Ansible is never pointed at another host.
fn check_inventory_hosts(
    inventory: &serde_json::Map<String, Value>,
    resources: &[orch_store::ResourceRecord],
    template: &Template,
) -> Result<(), Problems> {
    let servers = resources.iter().filter(|resource| resource.kind == "server");
    let known: Vec<&str> = servers
        .flat_map(|server| [server.attributes["name"].as_str(), server.attributes["ip"].as_str()])
        .flatten()
        .collect();
    let inside_subnets = |host: &str| {
        host.parse::<std::net::IpAddr>()
            .is_ok_and(|address| template.subnets().any(|(_, subnet)| subnet.cidr.contains(&address)))
    };
    let mut problems = Problems::default();
    for (group, hosts) in inventory {
        for (index, host) in hosts.as_array().into_iter().flatten().enumerate() {
            let host = host.as_str().unwrap_or_default();
            if !known.contains(&host) && !inside_subnets(host) {
                problems.push(
                    format!("/inventory/{group}/{index}"),
                    format!("'{host}' is not one of the deployment's servers (by name or address) nor an address in its subnets"),
                );
            }
        }
    }
    problems.into_result(())
}

#[utoipa::path(post, path = "/deployments/{id}/scale", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    request_body = ScaleBody,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 202, body = OperationAccepted),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 409, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 422, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn scale(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RequestActor(actor): RequestActor,
    Body(body): Body,
) -> ApiResult<(StatusCode, Json<OperationAccepted>)> {
    let current = live_deployment(&state.store, &id).await?;
    let effective = apply_parameters(&current.template, &current.parameters, "/parameters")?;
    let request = ScaleRequest::parse(&body, &effective)?;
    let payload = serde_json::to_value(&request).map_err(ApiError::internal)?;
    start_operation(&state, &id, OperationKind::Scale, payload, &actor).await
}

async fn start_operation(
    state: &AppState,
    id: &str,
    kind: OperationKind,
    payload: Value,
    actor: &orch_store::Actor,
) -> ApiResult<(StatusCode, Json<OperationAccepted>)> {
    let (record, operation) = state.store.request_operation(id, kind, &payload, actor).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(OperationAccepted {
            deployment_id: record.id,
            status: record.status,
            operation_id: operation.id,
        }),
    ))
}

#[utoipa::path(get, path = "/deployments/{id}/events", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"),
           ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
           ("offset" = Option<i64>, Query, minimum = 0, maximum = 2147483647, description = "Default 0")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Oldest first", body = EventList),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    mut query: QueryParams,
) -> ApiResult<Json<EventList>> {
    let (limit, offset) = query.page();
    query.finish(&["limit", "offset"])?;
    // Soft-deleted deployments keep their history readable.
    state.store.deployment(&id).await?;
    let page = state.store.events(&id, limit, offset).await?;
    Ok(Json(EventList {
        items: page.items.into_iter().map(EventView::from).collect(),
        total: page.total,
        limit,
        offset,
    }))
}

#[utoipa::path(post, path = "/deployments/{id}/cancel", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 202, description = "The operation in flight stops at its next step boundary (or within seconds inside one) and compensates: a create ends FAILED with reason `cancelled` and nothing left; a scale or update returns to the previous spec and ends COMPLETED with reason `cancelled; reverted to the previous spec`", body = OperationAccepted),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 409, description = "Nothing in flight, or a delete or configure run (which cannot be cancelled)", body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RequestActor(actor): RequestActor,
) -> ApiResult<(StatusCode, Json<OperationAccepted>)> {
    live_deployment(&state.store, &id).await?;
    let operation = state.store.request_cancel(&id, false, &actor).await?;
    tracing::info!(deployment_id = %id, operation_id = %operation.id, "cancel requested");
    operation_accepted(&state.store, &id, operation).await
}

/// `202` with the deployment's status as it is now that `operation` was asked for.
pub(crate) async fn operation_accepted(
    store: &Store,
    id: &str,
    operation: OperationRecord,
) -> ApiResult<(StatusCode, Json<OperationAccepted>)> {
    let record = store.deployment(id).await?;
    let accepted = OperationAccepted {
        deployment_id: record.id,
        status: record.status,
        operation_id: operation.id,
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[utoipa::path(post, path = "/deployments/{id}/retry", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 202, description = "The failed operation runs again and resumes from what exists", body = DeploymentAccepted),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 409, description = "The deployment is not FAILED", body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RequestActor(actor): RequestActor,
) -> ApiResult<(StatusCode, Json<DeploymentAccepted>)> {
    live_deployment(&state.store, &id).await?;
    let (record, operation) = state.store.retry_operation(&id, &actor).await?;
    Ok((StatusCode::ACCEPTED, Json(DeploymentAccepted::new(record, &operation))))
}

#[utoipa::path(get, path = "/deployments/{id}/configurations", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "ansible-playbook runs, newest first, without their output", body = Object),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn configurations(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    state.store.deployment(&id).await?;
    let runs = state.store.configuration_runs(&id).await?;
    let items: Vec<Value> = runs
        .into_iter()
        .map(|run| {
            json!({"id": run.id, "playbook": run.playbook, "status": run.status, "failed_task": run.failed_task,
                          "started_at": run.started_at, "finished_at": run.finished_at})
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(get, path = "/deployments/{id}/configurations/{run}", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"), ("run" = String, Path, description = "Run id (the configure operation's id)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "One run with its output", body = Object),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn configuration(
    State(state): State<AppState>,
    Path((id, run)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let run = state.store.configuration_run(&id, &run).await?;
    Ok(Json(serde_json::to_value(run).map_err(ApiError::internal)?))
}
