//! Cinder v3: volumes (create, list with name/status/metadata filters, show, delete), volume
//! types, quotas answered as Cinder answers them (413 overLimit).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};

use crate::world::{new_id, timestamp, Volume};
use crate::{create_delay, error, service, Authorized, Shared};

const VOLUME_TYPES: [&str; 3] = ["__DEFAULT__", "standard", "ssd"];

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/volume", get(versions))
        .route("/volume/", get(versions))
        .route("/volume/v3", get(version))
        .route("/volume/v3/", get(version))
        .route("/volume/v3/{project}/volumes", get(list).post(create))
        .route("/volume/v3/{project}/volumes/detail", get(list))
        .route("/volume/v3/{project}/volumes/{id}", get(show).delete(remove))
        .route(
            "/volume/v3/{project}/volumes/{id}/metadata",
            get(show_metadata).post(update_metadata),
        )
        .route("/volume/v3/{project}/types", get(types))
        .layer(axum::middleware::from_fn(version_header))
}

/// Cinder names the microversion it answered with (3.0 unless asked for another).
async fn version_header(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let asked = request
        .headers()
        .get("openstack-api-version")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().strip_prefix("volume"))
        .map(|version| version.trim().to_owned());
    let mut response = next.run(request).await;
    let value = format!("volume {}", asked.unwrap_or_else(|| "3.0".into()));
    if let Ok(value) = value.parse() {
        response.headers_mut().insert("openstack-api-version", value);
    }
    response
}

async fn show_metadata(
    State(cloud): State<Shared>,
    _: Authorized<service::Volume>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    match cloud.world().volumes.get(&id) {
        Some(volume) => Json(json!({"metadata": volume.metadata})).into_response(),
        None => fail(StatusCode::NOT_FOUND, format!("Volume {id} could not be found.")),
    }
}

/// `POST /volumes/{id}/metadata`: merged into what the volume has.
async fn update_metadata(
    State(cloud): State<Shared>,
    _: Authorized<service::Volume>,
    Path((_project, id)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(metadata) = body.and_then(|Json(body)| body["metadata"].as_object().cloned()) else {
        return fail(StatusCode::BAD_REQUEST, "Malformed request body");
    };
    if metadata.values().any(|value| !value.is_string()) {
        return fail(StatusCode::BAD_REQUEST, "Invalid input for field/attribute metadata.");
    }
    let mut world = cloud.world();
    let Some(volume) = world.volumes.get_mut(&id) else {
        return fail(StatusCode::NOT_FOUND, format!("Volume {id} could not be found."));
    };
    for (key, value) in metadata {
        volume.metadata.insert(key, value);
    }
    Json(json!({"metadata": volume.metadata})).into_response()
}

fn fail(status: StatusCode, message: impl AsRef<str>) -> Response {
    error("volume", status, message.as_ref())
}

fn version_document(cloud: &Shared) -> Value {
    json!({"id": "v3.0", "status": "CURRENT", "version": "3.70", "min_version": "3.0", "updated": "2023-08-31T00:00:00Z",
           "links": [{"href": format!("{}/volume/v3/", cloud.base_url), "rel": "self"}],
           "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}]})
}

async fn versions(State(cloud): State<Shared>) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": [version_document(&cloud)]})),
    )
        .into_response()
}

async fn version(State(cloud): State<Shared>) -> Json<Value> {
    Json(json!({"versions": [version_document(&cloud)]}))
}

/// Most volumes one list answers (Cinder's `osapi_max_limit`).
const MAX_LIMIT: usize = 1000;

/// A volume as `GET /volumes/{id}` shows it.
pub fn render_volume(volume: &Volume, now: DateTime<Utc>) -> Value {
    let attachments: Vec<Value> = volume
        .attachment
        .iter()
        .map(|(server_id, attachment_id)| {
            json!({"server_id": server_id, "attachment_id": attachment_id, "volume_id": volume.id, "id": volume.id,
                   "device": "/dev/vdb", "host_name": null, "attached_at": timestamp(now)})
        })
        .collect();
    json!({
        "id": volume.id, "name": volume.name, "description": volume.description, "status": volume.status(now),
        "size": volume.size, "availability_zone": "nova", "created_at": timestamp(volume.created),
        "updated_at": timestamp(if now >= volume.available_at { volume.available_at } else { volume.created }),
        "attachments": attachments, "bootable": "false", "encrypted": false, "multiattach": false,
        "volume_type": volume.volume_type, "snapshot_id": null, "source_volid": null,
        "metadata": volume.metadata, "replication_status": null, "consistencygroup_id": null,
        "user_id": "fakecloud", "os-vol-tenant-attr:tenant_id": "fakecloud", "migration_status": null,
        "links": [{"rel": "self", "href": format!("/volumes/{}", volume.id)}],
    })
}

async fn create(
    State(cloud): State<Shared>,
    _: Authorized<service::Volume>,
    Path(_project): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(request) = body.and_then(|Json(body)| body.get("volume").and_then(Value::as_object).cloned()) else {
        return fail(StatusCode::BAD_REQUEST, "Invalid input for field/attribute volume.");
    };
    let Some(size) = request.get("size").and_then(Value::as_u64).filter(|size| *size >= 1) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute size. Value: None. None is not of type 'integer', 'string'",
        );
    };
    let volume_type = request
        .get("volume_type")
        .and_then(Value::as_str)
        .unwrap_or("__DEFAULT__")
        .to_owned();
    if !VOLUME_TYPES.contains(&volume_type.as_str()) {
        return fail(
            StatusCode::NOT_FOUND,
            format!("Volume type with name {volume_type} could not be found."),
        );
    }
    let metadata: Map<String, Value> = request
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if metadata.values().any(|value| !value.is_string()) {
        return fail(StatusCode::BAD_REQUEST, "Invalid input for field/attribute metadata.");
    }
    let lose_response = create_delay(&cloud).await;
    let config = cloud.config();
    let mut world = cloud.world();
    let usage = world.usage();
    if usage.volumes + 1 > config.quotas.volumes {
        return fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "VolumeLimitExceeded: Maximum number of volumes allowed ({}) exceeded for quota 'volumes'.",
                config.quotas.volumes
            ),
        );
    }
    if usage.gigabytes + size > config.quotas.gigabytes {
        return fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested {size}G, quota is {}G and {}G has been consumed.", config.quotas.gigabytes, usage.gigabytes),
        );
    }
    let now = Utc::now();
    let volume = Volume {
        id: new_id(),
        name: request.get("name").and_then(Value::as_str).map(str::to_owned),
        description: request.get("description").and_then(Value::as_str).map(str::to_owned),
        size,
        volume_type,
        metadata,
        created: now,
        available_at: now + Duration::milliseconds(config.volume_delay_ms as i64),
        deleted_at: None,
        attachment: None,
        fails: config.volume_error_rate > 0.0 && rand::random::<f64>() < config.volume_error_rate,
    };
    let mut shown = render_volume(&volume, now);
    // The create's answer is the volume before the extended attributes are filled in.
    if let Some(fields) = shown.as_object_mut() {
        fields.remove("os-vol-tenant-attr:tenant_id");
    }
    world.volumes.insert(volume.id.clone(), volume);
    drop(world);
    if lose_response {
        return fail(StatusCode::SERVICE_UNAVAILABLE, "The server did not answer in time.");
    }
    (StatusCode::ACCEPTED, Json(json!({"volume": shown}))).into_response()
}

async fn list(
    State(cloud): State<Shared>,
    _: Authorized<service::Volume>,
    Path(_project): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // Cinder takes metadata filters as a JSON object in the query string.
    let metadata: Map<String, Value> = match query.get("metadata") {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => return fail(StatusCode::BAD_REQUEST, format!("Invalid filter: metadata={text}")),
        },
        None => Map::new(),
    };
    let limit = match query.get("limit").map(|limit| limit.parse::<usize>()) {
        Some(Ok(limit)) => limit.min(MAX_LIMIT),
        Some(Err(_)) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "Invalid input received: limit must be an integer",
            )
        }
        None => MAX_LIMIT,
    };
    let now = Utc::now();
    let world = cloud.world();
    let mut volumes: Vec<&Volume> = world
        .volumes
        .values()
        .filter(|volume| {
            query
                .get("name")
                .is_none_or(|name| volume.name.as_deref() == Some(name.as_str()))
        })
        .filter(|volume| query.get("status").is_none_or(|status| volume.status(now) == status))
        .filter(|volume| {
            metadata
                .iter()
                .all(|(key, value)| volume.metadata.get(key) == Some(value))
        })
        .collect();
    // Cinder sorts by creation, newest first, and pages with `marker` and `limit`.
    volumes.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    if let Some(marker) = query.get("marker") {
        let Some(position) = volumes.iter().position(|volume| &volume.id == marker) else {
            return fail(StatusCode::NOT_FOUND, format!("Marker {marker} could not be found."));
        };
        volumes.drain(..=position);
    }
    let full = volumes.len() >= limit;
    volumes.truncate(limit);
    let mut body = json!({"volumes": volumes.iter().map(|volume| render_volume(volume, now)).collect::<Vec<_>>()});
    if let Some(last) = volumes.last().filter(|_| full) {
        let href = format!(
            "{}/volume/v3/{}/volumes/detail?limit={limit}&marker={}",
            cloud.base_url, world.project_id, last.id
        );
        body["volumes_links"] = json!([{"href": href, "rel": "next"}]);
    }
    Json(body).into_response()
}

async fn show(
    State(cloud): State<Shared>,
    _: Authorized<service::Volume>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    let world = cloud.world();
    match world.volumes.get(&id) {
        Some(volume) => Json(json!({"volume": render_volume(volume, Utc::now())})).into_response(),
        None => fail(StatusCode::NOT_FOUND, format!("Volume {id} could not be found.")),
    }
}

async fn remove(
    State(cloud): State<Shared>,
    _: Authorized<service::Volume>,
    Path((_project, id)): Path<(String, String)>,
) -> Response {
    let now = Utc::now();
    let mut world = cloud.world();
    let Some(volume) = world.volumes.get_mut(&id) else {
        return fail(StatusCode::NOT_FOUND, format!("Volume {id} could not be found."));
    };
    match volume.status(now) {
        "in-use" | "creating" => fail(
            StatusCode::BAD_REQUEST,
            "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots or be disassociated from snapshots after volume transfer.",
        ),
        _ => {
            volume.deleted_at.get_or_insert(now);
            StatusCode::ACCEPTED.into_response()
        }
    }
}

async fn types(_: Authorized<service::Volume>, Path(_project): Path<String>) -> Response {
    let types: Vec<Value> = VOLUME_TYPES
        .iter()
        .map(|name| json!({"id": name, "name": name, "description": null, "is_public": true, "extra_specs": {}, "os-volume-type-access:is_public": true}))
        .collect();
    Json(json!({"volume_types": types})).into_response()
}
