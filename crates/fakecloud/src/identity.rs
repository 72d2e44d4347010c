//! Keystone v3: version discovery and token issue (password and application credential), with
//! a service catalog that points at this fakecloud.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::world::new_id;
use crate::{error, Shared};
use crate::{service, Authorized};

/// The application credential fakecloud accepts: this id, with the configured password as
/// its secret.
pub const APPLICATION_CREDENTIAL_ID: &str = "fakecloud-app-cred";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/identity", get(versions))
        .route("/identity/", get(versions))
        .route("/identity/v3", get(version))
        .route("/identity/v3/", get(version))
        .route("/identity/v3/auth/tokens", post(issue_token).get(validate_token))
}

fn version_document(cloud: &Shared) -> Value {
    json!({
        "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/identity/v3/", cloud.base_url)}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
    })
}

async fn versions(State(cloud): State<Shared>) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": {"values": [version_document(&cloud)]}})),
    )
        .into_response()
}

async fn version(State(cloud): State<Shared>) -> Json<Value> {
    Json(json!({"version": version_document(&cloud)}))
}

fn unauthorized() -> Response {
    error(
        "identity",
        StatusCode::UNAUTHORIZED,
        "The request you have made requires authentication.",
    )
}

/// Checks the credentials of a `POST /v3/auth/tokens` body.
fn authenticate(cloud: &Shared, body: &Value) -> Result<&'static str, Response> {
    let config = cloud.config();
    let identity = &body["auth"]["identity"];
    let methods: Vec<&str> = identity["methods"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if methods.contains(&"password") {
        let user = &identity["password"]["user"];
        let name_ok = user["name"] == config.username.as_str()
            || user["id"] == cloud.world.lock().expect("world").user_id.as_str();
        let domain = &user["domain"];
        let domain_ok =
            user["id"].is_string() || domain["name"] == config.domain_name.as_str() || domain["id"] == "default";
        if name_ok && domain_ok && user["password"] == config.password.as_str() {
            return Ok("password");
        }
        return Err(unauthorized());
    }
    if methods.contains(&"application_credential") {
        let credential = &identity["application_credential"];
        if credential["id"] == APPLICATION_CREDENTIAL_ID && credential["secret"] == config.password.as_str() {
            return Ok("application_credential");
        }
        return Err(unauthorized());
    }
    Err(error(
        "identity",
        StatusCode::BAD_REQUEST,
        "Expecting to find identity methods password or application_credential.",
    ))
}

async fn issue_token(State(cloud): State<Shared>, body: Option<Json<Value>>) -> Response {
    let Some(Json(body)) = body else {
        return error(
            "identity",
            StatusCode::BAD_REQUEST,
            "Expecting to find auth in request body.",
        );
    };
    let method = match authenticate(&cloud, &body) {
        Ok(method) => method,
        Err(response) => return response,
    };
    let config = cloud.config();
    let scope = &body["auth"]["scope"]["project"];
    let (project_id, user_id) = {
        let world = cloud.world.lock().expect("world lock");
        (world.project_id.clone(), world.user_id.clone())
    };
    if !scope.is_null() && scope["name"] != config.project_name.as_str() && scope["id"] != project_id.as_str() {
        return error(
            "identity",
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        );
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let issued = Utc::now();
    let expires = issued + Duration::seconds(config.token_ttl_seconds as i64);
    cloud
        .world
        .lock()
        .expect("world lock")
        .tokens
        .insert(token.clone(), expires);
    let base = &cloud.base_url;
    let endpoint = |url: String| {
        ["public", "internal", "admin"]
            .iter()
            .map(|interface| json!({"id": new_id(), "interface": interface, "region": config.region, "region_id": config.region, "url": url}))
            .collect::<Vec<_>>()
    };
    let catalog = json!([
        {"id": new_id(), "type": "identity", "name": "keystone", "endpoints": endpoint(format!("{base}/identity/v3"))},
        {"id": new_id(), "type": "compute", "name": "nova", "endpoints": endpoint(format!("{base}/compute/v2.1"))},
        {"id": new_id(), "type": "network", "name": "neutron", "endpoints": endpoint(format!("{base}/networking"))},
        {"id": new_id(), "type": "volumev3", "name": "cinderv3", "endpoints": endpoint(format!("{base}/volume/v3/{project_id}"))},
        {"id": new_id(), "type": "block-storage", "name": "cinder", "endpoints": endpoint(format!("{base}/volume/v3/{project_id}"))},
        {"id": new_id(), "type": "image", "name": "glance", "endpoints": endpoint(format!("{base}/image"))},
    ]);
    let domain = json!({"id": "default", "name": config.domain_name});
    let body = json!({"token": {
        "methods": [method],
        "user": {"domain": domain, "id": user_id, "name": config.username, "password_expires_at": null},
        "audit_ids": [uuid::Uuid::new_v4().simple().to_string()[..22].to_owned()],
        "expires_at": expires.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "issued_at": issued.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "project": {"domain": domain, "id": project_id, "name": config.project_name},
        "is_domain": false,
        "roles": [{"id": "2e6e8f9e6a8a4c7d9e0f1a2b3c4d5e6f", "name": "admin"}, {"id": "9fe2ff9ee4384b1894a90878d3e92bab", "name": "member"}],
        "catalog": catalog,
    }});
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response
        .headers_mut()
        .insert("x-subject-token", token.parse().expect("token is ASCII"));
    response
}

async fn validate_token(State(cloud): State<Shared>, _: Authorized<service::Identity>, headers: HeaderMap) -> Response {
    let subject = headers
        .get("x-subject-token")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let world = cloud.world.lock().expect("world lock");
    match world.tokens.get(subject) {
        Some(expires) if *expires > Utc::now() => {
            Json(json!({"token": {"expires_at": expires.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}})).into_response()
        }
        _ => error("identity", StatusCode::NOT_FOUND, "Could not find token."),
    }
}
