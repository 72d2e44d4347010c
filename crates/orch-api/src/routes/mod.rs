//! Handlers, grouped by resource, and the OpenAPI document built from them.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::middleware::from_fn_with_state;
use orch_store::Actor;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Caller};
use crate::error::{ApiError, QueryProblem};
use crate::AppState;

pub mod catalog;
pub mod deployments;
pub mod host_keys;
mod openapi;
pub mod reconcile;
pub mod secrets;
pub mod system;
pub mod templates;

/// Default and largest page sizes of every list.
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

#[derive(OpenApi)]
#[openapi(
    info(title = "orch", description = "Infrastructure orchestrator: deployments of networks, servers and volumes from templates, carried out by durable workflows."),
    modifiers(&SecuritySchemes),
    tags(
        (name = "deployments", description = "Deployments and their operations"),
        (name = "templates", description = "Reusable deployment templates"),
        (name = "catalog", description = "Ready-made services a template names with `catalog:`"),
        (name = "reconcile", description = "Reconcile passes, orphaned resources and their cleanup"),
        (name = "system", description = "Health, readiness and metrics")
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every documented route: the API behind the key check, and the open system routes.
pub fn documented_routes(state: &AppState) -> OpenApiRouter<AppState> {
    let protected = OpenApiRouter::new()
        .routes(routes!(deployments::create, deployments::list))
        .routes(routes!(deployments::get, deployments::update, deployments::delete))
        .routes(routes!(deployments::configure))
        .routes(routes!(deployments::scale))
        .routes(routes!(deployments::retry))
        .routes(routes!(deployments::cancel))
        .routes(routes!(deployments::plan_of))
        .routes(routes!(deployments::configurations))
        .routes(routes!(deployments::configuration))
        .routes(routes!(deployments::events))
        .routes(routes!(host_keys::list))
        .routes(routes!(host_keys::forget))
        .routes(routes!(reconcile::drift))
        .routes(routes!(reconcile::repair))
        .routes(routes!(reconcile::reconcile_now))
        .routes(routes!(reconcile::run))
        .routes(routes!(reconcile::orphans))
        .routes(routes!(reconcile::cleanup))
        .routes(routes!(secrets::reveal))
        .routes(routes!(templates::create, templates::list))
        .routes(routes!(templates::get, templates::replace, templates::delete))
        .routes(routes!(catalog::list))
        .routes(routes!(catalog::get));
    let open = OpenApiRouter::new()
        .routes(routes!(system::health))
        .routes(routes!(system::ready));
    let metrics = OpenApiRouter::new().routes(routes!(system::metrics));
    let (protected, open) = if state.config.metrics_require_auth {
        (protected.merge(metrics), open)
    } else {
        (protected, open.merge(metrics))
    };
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(protected.route_layer(from_fn_with_state(state.clone(), auth::require_api_key)))
        .merge(open)
}

/// The whole document with the answers every operation shares (see [`openapi`]).
pub fn with_standard_errors(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    openapi::StandardErrors.modify(&mut document);
    document
}

/// The caller and request id of an authenticated request, as recorded in events.
pub struct RequestActor(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for RequestActor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(Actor {
            key_id: parts.extensions.get::<Caller>().map(|caller| caller.key_id.clone()),
            request_id: crate::request::request_id(&parts.extensions),
        }))
    }
}

/// The query string as name/value pairs, checked by the handler: unknown names and bad values
/// are 422 with every problem listed.
pub struct QueryParams {
    pairs: Vec<(String, String)>,
    problems: Vec<QueryProblem>,
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("the query string is malformed".into()))?;
        Ok(Self {
            pairs,
            problems: Vec::new(),
        })
    }
}

impl QueryParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn problem(&mut self, parameter: &str, detail: impl Into<String>) {
        self.problems.push(QueryProblem {
            parameter: parameter.to_owned(),
            detail: detail.into(),
        });
    }

    /// `limit` (1 to 100, default 20) and `offset` (default 0).
    pub fn page(&mut self) -> (i64, i64) {
        let limit = self.integer("limit", 1, MAX_LIMIT).unwrap_or(DEFAULT_LIMIT);
        let offset = self.integer("offset", 0, i64::from(i32::MAX)).unwrap_or(0);
        (limit, offset)
    }

    fn integer(&mut self, name: &str, min: i64, max: i64) -> Option<i64> {
        let text = self.get(name)?.to_owned();
        match text.parse::<i64>() {
            Ok(value) if (min..=max).contains(&value) => Some(value),
            _ => {
                self.problem(name, format!("must be an integer from {min} to {max}"));
                None
            }
        }
    }

    /// Fails with every problem found, including names outside `known`.
    pub fn finish(mut self, known: &[&str]) -> Result<(), ApiError> {
        let unknown: Vec<String> = self
            .pairs
            .iter()
            .map(|(key, _)| key.clone())
            .filter(|key| !known.contains(&key.as_str()))
            .collect();
        for name in unknown {
            self.problem(
                &name,
                format!("unknown query parameter; expected one of: {}", known.join(", ")),
            );
        }
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidQuery(self.problems))
        }
    }
}
