//! `/templates`: reusable deployment templates, in JSON or YAML.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use orch_core::{Problems, Template};

use super::{QueryParams, RequestActor};
use crate::error::{ApiResult, ProblemDocument};
use crate::request::{Body, Path};
use crate::views::{TemplateList, TemplateView};
use crate::AppState;

#[utoipa::path(post, path = "/templates", tag = "templates",
    request_body(content((orch_core::Template = "application/json"), (orch_core::Template = "application/yaml"))),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, body = TemplateView),
              (status = 409, description = "A template has this name", body = ProblemDocument, content_type = "application/problem+json"),
              (status = 422, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    RequestActor(actor): RequestActor,
    Body(body): Body<true>,
) -> ApiResult<(StatusCode, HeaderMap, Json<TemplateView>)> {
    let template = given(&body)?;
    let record = state.store.create_template(&template).await?;
    audit("template.created", &record.id, &record.template.name, &actor);
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/templates/{}", record.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(record.into())))
}

/// A template as a request gives it: valid, and named so that its name cannot shadow an id.
fn given(body: &serde_json::Value) -> ApiResult<Template> {
    let template = Template::parse(body, "", None)?;
    orch_core::names::check_not_an_id(&template.name).map_err(|rule| Problems::single("/name", rule))?;
    Ok(template)
}

#[utoipa::path(get, path = "/templates", tag = "templates",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20"),
           ("offset" = Option<i64>, Query, minimum = 0, maximum = 2147483647, description = "Default 0")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Newest first", body = TemplateList)))]
pub async fn list(State(state): State<AppState>, mut query: QueryParams) -> ApiResult<Json<TemplateList>> {
    let (limit, offset) = query.page();
    query.finish(&["limit", "offset"])?;
    let page = state.store.templates(limit, offset).await?;
    Ok(Json(TemplateList {
        items: page.items.into_iter().map(TemplateView::from).collect(),
        total: page.total,
        limit,
        offset,
    }))
}

#[utoipa::path(get, path = "/templates/{id_or_name}", tag = "templates",
    params(("id_or_name" = String, Path, description = "Template id or name")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = TemplateView),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn get(State(state): State<AppState>, Path(id_or_name): Path<String>) -> ApiResult<Json<TemplateView>> {
    Ok(Json(state.store.template(&id_or_name).await?.into()))
}

#[utoipa::path(put, path = "/templates/{id_or_name}", tag = "templates",
    params(("id_or_name" = String, Path, description = "Template id or name")),
    request_body(content((orch_core::Template = "application/json"), (orch_core::Template = "application/yaml"))),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Replaced; version incremented. Existing deployments keep their copy.", body = TemplateView),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 409, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 422, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn replace(
    State(state): State<AppState>,
    Path(id_or_name): Path<String>,
    RequestActor(actor): RequestActor,
    Body(body): Body<true>,
) -> ApiResult<Json<TemplateView>> {
    let template = given(&body)?;
    let record = state.store.replace_template(&id_or_name, &template).await?;
    audit("template.replaced", &record.id, &record.template.name, &actor);
    Ok(Json(record.into()))
}

#[utoipa::path(delete, path = "/templates/{id_or_name}", tag = "templates",
    params(("id_or_name" = String, Path, description = "Template id or name")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 204, description = "Deleted"),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
              (status = 409, description = "A live deployment uses it", body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id_or_name): Path<String>,
    RequestActor(actor): RequestActor,
) -> ApiResult<StatusCode> {
    state.store.delete_template(&id_or_name).await?;
    audit("template.deleted", &id_or_name, &id_or_name, &actor);
    Ok(StatusCode::NO_CONTENT)
}

/// Templates have no history of their own: each write is an audit line (target
/// `orch::audit`) naming who (the key's id), what, and the request id; never the content.
fn audit(action: &str, id: &str, name: &str, actor: &orch_store::Actor) {
    tracing::info!(
        target: "orch::audit",
        action,
        template_id = id,
        template = name,
        key_id = actor.key_id.as_deref().unwrap_or("-"),
        request_id = actor.request_id.as_deref().unwrap_or("-"),
        "template written"
    );
}
