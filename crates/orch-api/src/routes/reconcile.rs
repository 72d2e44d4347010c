//! Reconcile: a pass asked for now, the orphans passes found and their cleanup, and each
//! deployment's drift and repair. The passes themselves run as workflows (a Temporal
//! Schedule per location, or a run recorded here that the relay starts).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use orch_core::reconcile::CleanupRequest;
use orch_store::reconcile::{run_kind, OrphanRecord, ReconcileRun};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::deployments::{live_deployment, operation_accepted};
use super::{QueryParams, RequestActor};
use crate::error::{ApiResult, ProblemDocument};
use crate::request::{Body, Path};
use crate::views::OperationAccepted;
use crate::AppState;

/// `202` to `POST /reconcile` and `POST /orphans/cleanup`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    /// The run's id: `GET /reconcile/{id}` follows it.
    pub operation_id: String,
    /// `reconcile` or `cleanup`.
    pub kind: String,
    pub state: String,
}

impl From<ReconcileRun> for RunAccepted {
    fn from(run: ReconcileRun) -> Self {
        Self {
            operation_id: run.id,
            kind: run.kind,
            state: run.state,
        }
    }
}

/// A reconcile pass or an orphan cleanup, and what it found or did per location.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub kind: String,
    /// `PENDING`, `RUNNING`, `SUCCEEDED` or `FAILED` (a location failed; the others ran).
    pub state: String,
    /// Per location: orphans known and new, orphans removed, deployments drifted and healed.
    #[schema(value_type = Object)]
    pub result: Value,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl From<ReconcileRun> for RunView {
    fn from(run: ReconcileRun) -> Self {
        Self {
            id: run.id,
            kind: run.kind,
            state: run.state,
            result: run.result,
            error: run.error,
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
        }
    }
}

/// A resource carrying orch's deployment mark that no live deployment holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrphanView {
    /// `server`, `port`, `volume`, `network`, `container`, ...
    pub kind: String,
    /// The provider's id.
    pub id: String,
    pub name: String,
    /// The deployment its mark names.
    pub deployment_tag: String,
    pub logical_key: Option<String>,
    /// `cloud:<region>` or `containers:<host>`.
    pub location: String,
    /// `unknown_deployment`, `deployment_deleted`, `key_not_held` or `duplicate`.
    pub reason: String,
    pub first_seen: String,
    pub last_seen: String,
}

impl From<OrphanRecord> for OrphanView {
    fn from(orphan: OrphanRecord) -> Self {
        Self {
            kind: orphan.kind,
            id: orphan.resource_id,
            name: orphan.name,
            deployment_tag: orphan.deployment_tag,
            logical_key: orphan.logical_key,
            location: orphan.location,
            reason: orphan.reason,
            first_seen: orphan.first_seen_at,
            last_seen: orphan.last_seen_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrphanList {
    pub items: Vec<OrphanView>,
    /// Only resources orphaned for at least this long are listed (`ORPHAN_GRACE_SECONDS`).
    pub grace_seconds: u64,
}

/// `POST /orphans/cleanup` body (documentation only).
#[allow(dead_code)]
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CleanupBody {
    /// List what would be removed, and remove nothing (default false).
    dry_run: Option<bool>,
}

#[utoipa::path(post, path = "/reconcile", tag = "reconcile",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 202, description = "A pass over every location starts now: orphans are found and recorded, live deployments compared with their providers", body = RunAccepted)))]
pub async fn reconcile_now(
    State(state): State<AppState>,
    RequestActor(actor): RequestActor,
) -> ApiResult<(StatusCode, Json<RunAccepted>)> {
    let run = state.store.request_run(run_kind::RECONCILE, &actor).await?;
    tracing::info!(run_id = %run.id, "reconcile pass requested");
    Ok((StatusCode::ACCEPTED, Json(run.into())))
}

#[utoipa::path(get, path = "/reconcile/{id}", tag = "reconcile",
    params(("id" = String, Path, description = "Run id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = RunView),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn run(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunView>> {
    Ok(Json(state.store.run(&id).await?.into()))
}

#[utoipa::path(get, path = "/orphans", tag = "reconcile",
    params(("location" = Option<String>, Query, description = "Only this location, e.g. `cloud:RegionOne` or `containers:local`")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Orphans past their grace period, oldest first", body = OrphanList),
              (status = 422, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn orphans(State(state): State<AppState>, query: QueryParams) -> ApiResult<Json<OrphanList>> {
    let location = query.get("location").map(str::to_owned);
    query.finish(&["location"])?;
    orphans_list(&state, location.as_deref()).await
}

#[utoipa::path(post, path = "/orphans/cleanup", tag = "reconcile",
    request_body = CleanupBody,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 202, description = "A cleanup starts: each orphan past its grace period is checked again and removed, dependents first; `GET /reconcile/{id}` shows what went", body = RunAccepted),
              (status = 200, description = "With `dry_run`: what would be removed; nothing changes", body = OrphanList),
              (status = 422, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn cleanup(
    State(state): State<AppState>,
    RequestActor(actor): RequestActor,
    Body(body): Body,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let request = CleanupRequest::parse(&body)?;
    if request.dry_run {
        return Ok(orphans_list(&state, None).await?.into_response());
    }
    let run = state.store.request_run(run_kind::CLEANUP, &actor).await?;
    tracing::info!(run_id = %run.id, "orphan cleanup requested");
    Ok((StatusCode::ACCEPTED, Json(RunAccepted::from(run))).into_response())
}

async fn orphans_list(state: &AppState, location: Option<&str>) -> ApiResult<Json<OrphanList>> {
    let grace = state.config.orphan_grace_seconds;
    let found = state.store.orphans(grace, location).await?;
    Ok(Json(OrphanList {
        items: found.into_iter().map(OrphanView::from).collect(),
        grace_seconds: grace,
    }))
}

#[utoipa::path(get, path = "/deployments/{id}/drift", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "What the last reconcile pass found different from the providers: each resource with `gone`, `error`, `stopped` or `resized`", body = Object),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn drift(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let record = live_deployment(&state.store, &id).await?;
    let items = state.store.drift(&id).await?;
    Ok(Json(json!({
        "deployment_id": record.id,
        "drifted": !items.is_empty(),
        "checked_at": record.drift_checked_at,
        "auto_heal": record.auto_heal,
        "items": items,
    })))
}

#[utoipa::path(post, path = "/deployments/{id}/reconcile", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 202, description = "A repair starts: an update to the spec the deployment stands for, planned from what the providers hold at that moment (what is missing is made again, what is stopped started, what is in ERROR rebuilt, what was resized resized back)", body = OperationAccepted),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 409, description = "Another operation is in flight, or the status does not allow an update", body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn repair(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RequestActor(actor): RequestActor,
) -> ApiResult<(StatusCode, Json<OperationAccepted>)> {
    live_deployment(&state.store, &id).await?;
    let operation = state.store.request_repair(&id, &actor).await?;
    tracing::info!(deployment_id = %id, operation_id = %operation.id, "repair requested");
    operation_accepted(&state.store, &id, operation).await
}
