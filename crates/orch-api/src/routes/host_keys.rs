//! SSH host keys that configure runs trusted on first contact: listed per deployment, and
//! forgotten when an operator knows a host's key changed for a good reason.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::deployments::live_deployment;
use super::RequestActor;
use crate::error::{ApiResult, ProblemDocument};
use crate::request::Path;
use crate::AppState;

/// The keys one host presented the first time a configure run reached it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostKeyView {
    pub host: String,
    /// The server that had the address then; absent for an address from an inventory. A key
    /// is forgotten by itself when its server is replaced.
    pub server_id: Option<String>,
    /// `known_hosts` lines, one per key.
    pub known_hosts: String,
    pub first_seen_at: String,
}

/// `GET /deployments/{id}/host-keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostKeyList {
    pub items: Vec<HostKeyView>,
}

#[utoipa::path(get, path = "/deployments/{id}/host-keys", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The SSH host keys configure runs enforce, by host", body = HostKeyList),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn list(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<HostKeyList>> {
    live_deployment(&state.store, &id).await?;
    let items = (state.store.host_keys(&id).await?)
        .into_iter()
        .map(|key| HostKeyView {
            host: key.host,
            server_id: key.server_id,
            known_hosts: key.known_hosts,
            first_seen_at: key.first_seen_at,
        })
        .collect();
    Ok(Json(HostKeyList { items }))
}

#[utoipa::path(delete, path = "/deployments/{id}/host-keys/{host}", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"), ("host" = String, Path, description = "The host's address")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Forgotten: the next run trusts the key the host presents, and records it"),
              (status = 404, description = "No such deployment, or no key recorded for the host", body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn forget(
    State(state): State<AppState>,
    Path((id, host)): Path<(String, String)>,
    RequestActor(actor): RequestActor,
) -> ApiResult<StatusCode> {
    live_deployment(&state.store, &id).await?;
    state.store.forget_host_key(&id, &host, "asked for", &actor).await?;
    tracing::info!(deployment_id = %id, %host, "SSH host key forgotten");
    Ok(StatusCode::NO_CONTENT)
}
