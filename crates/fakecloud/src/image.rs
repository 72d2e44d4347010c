//! Glance v2: the stock images, listed and shown, with name and status filters.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::config::Image;
use crate::{error, service, Authorized, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/image", get(versions))
        .route("/image/", get(versions))
        .route("/image/versions", get(versions))
        .route("/image/v2/images", get(list))
        .route("/image/v2/images/{id}", get(show))
}

async fn versions(State(cloud): State<Shared>) -> Response {
    let versions = json!({"versions": [{"id": "v2.16", "status": "CURRENT", "links": [{"href": format!("{}/image/v2/", cloud.base_url), "rel": "self"}]}]});
    (StatusCode::MULTIPLE_CHOICES, Json(versions)).into_response()
}

fn render_image(image: &Image) -> Value {
    json!({
        "id": image.id, "name": image.name, "status": "active", "visibility": "public", "protected": false, "os_hidden": false,
        "checksum": "ee1eca47dc88f4879d8a229cc70a07c6", "os_hash_algo": "sha512", "os_hash_value": null,
        "min_ram": 0, "min_disk": image.min_disk, "owner": "fakecloud", "size": 13_287_936, "virtual_size": null,
        "container_format": "bare", "disk_format": "qcow2", "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
        "owner_specified.openstack.md5": "", "owner_specified.openstack.object": format!("images/{}", image.name),
        "owner_specified.openstack.sha256": "", "stores": "file",
        "tags": [], "self": format!("/v2/images/{}", image.id), "file": format!("/v2/images/{}/file", image.id), "schema": "/v2/schemas/image"
    })
}

async fn list(
    State(cloud): State<Shared>,
    _: Authorized<service::Image>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let images: Vec<Value> = cloud
        .config()
        .images
        .iter()
        .filter(|image| query.get("name").is_none_or(|name| *name == image.name))
        .filter(|image| query.get("id").is_none_or(|id| *id == image.id))
        .filter(|_| query.get("status").is_none_or(|status| status == "active"))
        .map(render_image)
        .collect();
    Json(json!({"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"})).into_response()
}

/// Glance answers JSON when asked for it (as orch does), else its HTML-ish text.
fn not_found(headers: &HeaderMap, id: &str) -> Response {
    let wants_json = headers
        .get("accept")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    let message = format!("No image found with ID {id}");
    if wants_json {
        let body =
            json!({"message": format!("{message}<br /><br />\n\n\n"), "code": "404 Not Found", "title": "Not Found"});
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    error("image", StatusCode::NOT_FOUND, &message)
}

async fn show(
    State(cloud): State<Shared>,
    _: Authorized<service::Image>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match cloud.config().images.iter().find(|image| image.id == id) {
        Some(image) => Json(render_image(image)).into_response(),
        None => not_found(&headers, &id),
    }
}
