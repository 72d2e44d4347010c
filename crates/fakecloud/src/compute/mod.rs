//! Nova v2.1: flavors, servers (create with multi-create, list with filters and
//! `changes-since`, show, delete, resize and confirm, metadata), key pairs, volume attachments,
//! limits. Microversions up to 2.96 are accepted; 2.26 adds tags and 2.47 embeds the flavor,
//! as in Nova.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::config::{FakeConfig, Flavor};
use crate::world::{new_id, timestamp, Server, World};
use crate::{error, service, Authorized, Shared};

mod create;
mod list;

use create::{create_server, find_flavor};
use list::list_servers;

const MAX_MICROVERSION: (u32, u32) = (2, 96);

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/compute", get(versions))
        .route("/compute/", get(versions))
        .route("/compute/v2.1", get(version))
        .route("/compute/v2.1/", get(version))
        .route("/compute/v2.1/flavors", get(list_flavors))
        .route("/compute/v2.1/flavors/detail", get(list_flavors))
        .route("/compute/v2.1/flavors/{id}", get(show_flavor))
        .route("/compute/v2.1/servers", get(list_servers).post(create_server))
        .route("/compute/v2.1/servers/detail", get(list_servers))
        .route("/compute/v2.1/servers/{id}", get(show_server).delete(delete_server))
        .route("/compute/v2.1/servers/{id}/action", post(server_action))
        .route("/compute/v2.1/servers/{id}/tags", get(show_tags).put(replace_tags))
        .route(
            "/compute/v2.1/servers/{id}/metadata",
            get(show_metadata).put(replace_metadata).post(update_metadata),
        )
        .route(
            "/compute/v2.1/servers/{id}/os-volume_attachments",
            get(list_attachments).post(attach_volume),
        )
        .route(
            "/compute/v2.1/servers/{id}/os-volume_attachments/{volume_id}",
            axum::routing::delete(detach_volume),
        )
        .route("/compute/v2.1/os-keypairs", get(list_keypairs).post(create_keypair))
        .route(
            "/compute/v2.1/os-keypairs/{name}",
            get(show_keypair).delete(delete_keypair),
        )
        .route("/compute/v2.1/limits", get(limits))
        .layer(axum::middleware::from_fn(version_headers))
}

/// Nova names the microversion it answered with on every response, errors included, in both
/// the current and the legacy header.
async fn version_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let version = microversion(request.headers()).unwrap_or((2, 1));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key("openstack-api-version") {
        let value = format!("compute {}.{}", version.0, version.1);
        headers.insert("openstack-api-version", value.parse().expect("ascii"));
    }
    let legacy = format!("{}.{}", version.0, version.1);
    headers.insert("x-openstack-nova-api-version", legacy.parse().expect("ascii"));
    headers.insert(
        "vary",
        "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
            .parse()
            .expect("ascii"),
    );
    response
}

async fn show_tags(State(cloud): State<Shared>, _: Authorized<service::Compute>, Path(id): Path<String>) -> Response {
    match cloud.world().servers.get(&id) {
        Some(server) => Json(json!({"tags": server.tags})).into_response(),
        None => fail(StatusCode::NOT_FOUND, format!("Instance {id} could not be found.")),
    }
}

/// `PUT /servers/{id}/tags`: refused while the server builds, as Nova does.
async fn replace_tags(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(tags) = body.and_then(|Json(body)| {
        body["tags"].as_array().and_then(|tags| {
            tags.iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
        })
    }) else {
        return fail(StatusCode::BAD_REQUEST, "Invalid input for field/attribute tags.");
    };
    let mut world = cloud.world();
    let Some(server) = world.servers.get_mut(&id) else {
        return fail(StatusCode::NOT_FOUND, format!("Instance {id} could not be found."));
    };
    if server.status(Utc::now()) == "BUILD" {
        return error(
            "compute_conflict",
            StatusCode::CONFLICT,
            &format!("Cannot 'update tags' instance {id} while it is in vm_state building"),
        );
    }
    server.tags = tags.clone();
    Json(json!({"tags": tags})).into_response()
}

fn fail(status: StatusCode, message: impl AsRef<str>) -> Response {
    error("compute", status, message.as_ref())
}

fn version_document(cloud: &Shared) -> Value {
    json!({
        "id": "v2.1", "status": "CURRENT", "version": format!("{}.{}", MAX_MICROVERSION.0, MAX_MICROVERSION.1),
        "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{}/compute/v2.1/", cloud.base_url)}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]
    })
}

async fn versions(State(cloud): State<Shared>) -> Json<Value> {
    Json(json!({"versions": [version_document(&cloud)]}))
}

async fn version(State(cloud): State<Shared>) -> Json<Value> {
    Json(json!({"version": version_document(&cloud)}))
}

/// The requested microversion, from `OpenStack-API-Version: compute 2.x` or the legacy header.
fn microversion(headers: &HeaderMap) -> Result<(u32, u32), Response> {
    let requested = headers
        .get("openstack-api-version")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().strip_prefix("compute").map(str::trim).map(str::to_owned))
        .or_else(|| {
            headers
                .get("x-openstack-nova-api-version")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        });
    let Some(requested) = requested else {
        return Ok((2, 1));
    };
    if requested == "latest" {
        return Ok(MAX_MICROVERSION);
    }
    let parsed = requested
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)));
    match parsed {
        Some(version) if version >= (2, 1) && version <= MAX_MICROVERSION => Ok(version),
        _ => Err(fail(
            StatusCode::NOT_ACCEPTABLE,
            format!("Version {requested} is not supported by the API. Minimum is 2.1 and maximum is 2.96."),
        )),
    }
}

fn with_version(mut response: Response, version: (u32, u32)) -> Response {
    let value = format!("compute {}.{}", version.0, version.1);
    response
        .headers_mut()
        .insert("openstack-api-version", value.parse().expect("ascii"));
    response
        .headers_mut()
        .insert("vary", "OpenStack-API-Version".parse().expect("ascii"));
    response
}

fn render_flavor(flavor: &Flavor, base_url: &str) -> Value {
    json!({
        "id": flavor.id, "name": flavor.name, "vcpus": flavor.vcpus, "ram": flavor.ram, "disk": flavor.disk,
        "OS-FLV-EXT-DATA:ephemeral": 0, "swap": "", "rxtx_factor": 1.0, "os-flavor-access:is_public": true,
        "OS-FLV-DISABLED:disabled": false,
        "links": [{"rel": "self", "href": format!("{base_url}/compute/v2.1/flavors/{}", flavor.id)}]
    })
}

async fn list_flavors(State(cloud): State<Shared>, _: Authorized<service::Compute>) -> Response {
    let flavors: Vec<Value> = cloud
        .config()
        .flavors
        .iter()
        .map(|flavor| render_flavor(flavor, &cloud.base_url))
        .collect();
    Json(json!({"flavors": flavors})).into_response()
}

async fn show_flavor(State(cloud): State<Shared>, _: Authorized<service::Compute>, Path(id): Path<String>) -> Response {
    match cloud.config().flavors.iter().find(|flavor| flavor.id == id) {
        Some(flavor) => Json(json!({"flavor": render_flavor(flavor, &cloud.base_url)})).into_response(),
        None => fail(StatusCode::NOT_FOUND, format!("Flavor {id} could not be found.")),
    }
}

/// A server as `GET /servers/{id}` shows it at microversion 2.47 and later.
pub fn render_server(world: &World, server: &Server, now: DateTime<Utc>, base_url: &str) -> Value {
    render_server_at(world, server, now, base_url, (2, 96))
}

fn render_server_at(world: &World, server: &Server, now: DateTime<Utc>, base_url: &str, version: (u32, u32)) -> Value {
    let status = server.status(now);
    let mut addresses = Map::new();
    for (network_id, port_id) in &server.interfaces {
        let network_name = world
            .neutron("networks")
            .get(network_id)
            .and_then(|n| n["name"].as_str())
            .unwrap_or(network_id)
            .to_owned();
        if let Some(port) = world.neutron("ports").get(port_id) {
            let entries = addresses
                .entry(network_name)
                .or_insert_with(|| Value::Array(Vec::new()));
            for ip in port["fixed_ips"].as_array().into_iter().flatten() {
                let address = ip["ip_address"].as_str().unwrap_or_default();
                let version = if address.contains(':') { 6 } else { 4 };
                entries.as_array_mut().expect("array").push(json!({
                    "addr": address, "version": version, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": port["mac_address"]
                }));
            }
        }
    }
    let flavor = if version >= (2, 47) {
        json!({"vcpus": server.flavor.vcpus, "ram": server.flavor.ram, "disk": server.flavor.disk, "ephemeral": 0, "swap": 0,
               "original_name": server.flavor.name, "extra_specs": {}})
    } else {
        json!({"id": server.flavor.id, "links": [{"rel": "bookmark", "href": format!("{base_url}/compute/flavors/{}", server.flavor.id)}]})
    };
    let (vm_state, power_state) = match status {
        "BUILD" => ("building", 0),
        "ERROR" => ("error", 0),
        "VERIFY_RESIZE" => ("resized", 1),
        "SHUTOFF" => ("stopped", 4),
        _ => ("active", 1),
    };
    let task_state = if server.deleted_at.is_some() {
        json!("deleting")
    } else if status == "BUILD" {
        json!("spawning")
    } else {
        Value::Null
    };
    let mut rendered = json!({
        "id": server.id, "name": server.name, "status": status,
        "tenant_id": world.project_id, "user_id": world.user_id,
        "metadata": server.metadata, "hostId": if status == "BUILD" { "" } else { "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c" },
        "image": {"id": server.image_id, "links": [{"rel": "bookmark", "href": format!("{base_url}/compute/images/{}", server.image_id)}]},
        "flavor": flavor,
        "created": timestamp(server.created), "updated": timestamp(server.updated(now)),
        "addresses": addresses, "accessIPv4": "", "accessIPv6": "",
        "links": [
            {"rel": "self", "href": format!("{base_url}/compute/v2.1/servers/{}", server.id)},
            {"rel": "bookmark", "href": format!("{base_url}/compute/servers/{}", server.id)}
        ],
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": "nova", "config_drive": "", "key_name": server.key_name,
        "OS-SRV-USG:launched_at": if status == "BUILD" { Value::Null } else { json!(timestamp(server.active_at)) },
        "OS-SRV-USG:terminated_at": null,
        "OS-EXT-STS:task_state": task_state, "OS-EXT-STS:vm_state": vm_state, "OS-EXT-STS:power_state": power_state,
        "os-extended-volumes:volumes_attached": server.volumes.iter().map(|id| json!({"id": id, "delete_on_termination": false})).collect::<Vec<_>>(),
        "security_groups": server.security_groups.iter().map(|name| json!({"name": name})).collect::<Vec<_>>(),
        "locked": false, "description": null,
    });
    if version >= (2, 26) {
        rendered["tags"] = json!(server.tags);
    }
    // As Nova's view: progress only while a server runs or changes.
    if ["ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"].contains(&status) {
        rendered["progress"] = json!(if status == "BUILD" { 0 } else { 100 });
    }
    if status == "ERROR" {
        rendered["fault"] = json!({"code": 500, "created": timestamp(server.active_at), "message": "No valid host was found. There are not enough hosts available."});
    }
    rendered
}

/// Nova's `name` filter is a regular expression; the anchored exact form and plain substrings
/// are what clients send.
async fn show_server(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let version = match microversion(&headers) {
        Ok(version) => version,
        Err(response) => return response,
    };
    let world = cloud.world();
    match world.servers.get(&id) {
        Some(server) => with_version(
            Json(json!({"server": render_server_at(&world, server, Utc::now(), &cloud.base_url, version)}))
                .into_response(),
            version,
        ),
        None => fail(StatusCode::NOT_FOUND, format!("Instance {id} could not be found.")),
    }
}

async fn delete_server(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path(id): Path<String>,
) -> Response {
    let mut world = cloud.world();
    match world.servers.get_mut(&id) {
        Some(server) => {
            if server.deleted_at.is_none() {
                server.deleted_at = Some(Utc::now());
            }
            StatusCode::NO_CONTENT.into_response()
        }
        None => fail(StatusCode::NOT_FOUND, format!("Instance {id} could not be found.")),
    }
}

async fn server_action(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(Json(body)) = body else {
        return fail(StatusCode::BAD_REQUEST, "The request body is not valid JSON.");
    };
    let config = cloud.config();
    let flavors = config.flavors.clone();
    let now = Utc::now();
    let mut world = cloud.world();
    let Some(server) = world.servers.get_mut(&id) else {
        return fail(StatusCode::NOT_FOUND, format!("Instance {id} could not be found."));
    };
    let status = server.status(now);
    if let Some(resize) = body.get("resize") {
        if status != "ACTIVE" {
            return fail(
                StatusCode::CONFLICT,
                format!(
                    "Cannot 'resize' instance {id} while it is in vm_state {}",
                    status.to_lowercase()
                ),
            );
        }
        let reference = resize["flavorRef"].as_str().unwrap_or_default();
        let Some(flavor) = find_flavor(&flavors, reference) else {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("Flavor {reference} could not be found."),
            );
        };
        if flavor.id == server.flavor.id {
            return fail(StatusCode::BAD_REQUEST, "When resizing, instances must change flavor!");
        }
        server.previous_flavor = Some(std::mem::replace(&mut server.flavor, flavor));
        server.resized_at = Some(now);
        server.resize_confirmed = false;
        return StatusCode::ACCEPTED.into_response();
    }
    if let Some(rebuild) = body.get("rebuild") {
        return rebuild_server(server, &id, rebuild, &config, now);
    }
    for (action, from, stopped) in [("os-start", "SHUTOFF", false), ("os-stop", "ACTIVE", true)] {
        if body.get(action).is_some() {
            if status != from {
                let verb = action.trim_start_matches("os-");
                let state = status.to_lowercase();
                return fail(
                    StatusCode::CONFLICT,
                    format!("Cannot '{verb}' instance {id} while it is in vm_state {state}"),
                );
            }
            server.stopped = stopped;
            return StatusCode::ACCEPTED.into_response();
        }
    }
    if body.get("confirmResize").is_some() || body.get("revertResize").is_some() {
        if status != "VERIFY_RESIZE" {
            return fail(
                StatusCode::CONFLICT,
                format!(
                    "Cannot 'confirmResize' instance {id} while it is in vm_state {}",
                    status.to_lowercase()
                ),
            );
        }
        if body.get("revertResize").is_some() {
            if let Some(previous) = server.previous_flavor.take() {
                server.flavor = previous;
            }
        }
        server.resize_confirmed = true;
        server.resized_at = Some(now);
        return StatusCode::NO_CONTENT.into_response();
    }
    fail(StatusCode::BAD_REQUEST, "There is no such action.")
}

/// Nova's `rebuild`: a server that is ACTIVE, SHUTOFF or in ERROR takes the new image and is
/// REBUILD for as long as a boot takes (a shut-off one comes back ACTIVE, as in Nova).
fn rebuild_server(server: &mut Server, id: &str, rebuild: &Value, config: &FakeConfig, now: DateTime<Utc>) -> Response {
    let status = server.status(now);
    if !matches!(status, "ACTIVE" | "ERROR" | "SHUTOFF") {
        return fail(
            StatusCode::CONFLICT,
            format!(
                "Cannot 'rebuild' instance {id} while it is in vm_state {}",
                status.to_lowercase()
            ),
        );
    }
    let image_ref = rebuild["imageRef"].as_str().unwrap_or_default();
    let image_id = image_ref.rsplit('/').next().unwrap_or(image_ref).to_owned();
    if !config.images.iter().any(|image| image.id == image_id) {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("Image {image_ref} could not be found."),
        );
    }
    server.image_id = image_id;
    server.fails = false;
    server.stopped = false;
    server.rebuild = Some((now, now + chrono::Duration::milliseconds(config.boot_delay_ms as i64)));
    StatusCode::ACCEPTED.into_response()
}

fn with_server<T>(cloud: &Shared, id: &str, change: impl FnOnce(&mut Server) -> T) -> Result<T, Response> {
    let mut world = cloud.world();
    match world.servers.get_mut(id) {
        Some(server) => Ok(change(server)),
        None => Err(fail(
            StatusCode::NOT_FOUND,
            format!("Instance {id} could not be found."),
        )),
    }
}

async fn show_metadata(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path(id): Path<String>,
) -> Response {
    match with_server(&cloud, &id, |server| server.metadata.clone()) {
        Ok(metadata) => Json(json!({"metadata": metadata})).into_response(),
        Err(response) => response,
    }
}

fn read_metadata(body: Option<Json<Value>>) -> Result<Map<String, Value>, Response> {
    body.and_then(|Json(body)| body.get("metadata").and_then(Value::as_object).cloned())
        .filter(|metadata| metadata.values().all(Value::is_string))
        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "Invalid input for field/attribute metadata."))
}

async fn replace_metadata(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    change_metadata(&cloud, &id, body, |server, metadata| server.metadata = metadata)
}

async fn update_metadata(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    change_metadata(&cloud, &id, body, |server, metadata| server.metadata.extend(metadata))
}

/// `PUT` replaces a server's metadata, `POST` merges into it; both answer with all of it.
fn change_metadata(
    cloud: &Shared,
    id: &str,
    body: Option<Json<Value>>,
    change: impl FnOnce(&mut Server, Map<String, Value>),
) -> Response {
    let metadata = match read_metadata(body) {
        Ok(metadata) => metadata,
        Err(response) => return response,
    };
    match with_server(cloud, id, |server| {
        change(server, metadata);
        server.metadata.clone()
    }) {
        Ok(metadata) => Json(json!({"metadata": metadata})).into_response(),
        Err(response) => response,
    }
}

fn render_attachment(server_id: &str, volume_id: &str) -> Value {
    // `tag` (2.70) and `delete_on_termination` (2.79) are newer than what orch speaks.
    json!({"id": volume_id, "serverId": server_id, "volumeId": volume_id, "device": "/dev/vdb"})
}

async fn list_attachments(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path(id): Path<String>,
) -> Response {
    match with_server(&cloud, &id, |server| server.volumes.clone()) {
        Ok(volumes) => {
            Json(json!({"volumeAttachments": volumes.iter().map(|v| render_attachment(&id, v)).collect::<Vec<_>>()}))
                .into_response()
        }
        Err(response) => response,
    }
}

async fn attach_volume(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(volume_id) = body
        .as_ref()
        .and_then(|Json(body)| body["volumeAttachment"]["volumeId"].as_str())
        .map(str::to_owned)
    else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute volumeAttachment.",
        );
    };
    let now = Utc::now();
    let mut world = cloud.world();
    let Some(server) = world.servers.get(&id) else {
        return fail(StatusCode::NOT_FOUND, format!("Instance {id} could not be found."));
    };
    if server.status(now) != "ACTIVE" {
        return fail(
            StatusCode::CONFLICT,
            format!(
                "Cannot 'attach_volume' instance {id} while it is in vm_state {}",
                server.status(now).to_lowercase()
            ),
        );
    }
    let Some(volume) = world.volumes.get_mut(&volume_id) else {
        return fail(StatusCode::NOT_FOUND, format!("Volume {volume_id} could not be found."));
    };
    if volume.status(now) != "available" {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("Invalid volume: volume {volume_id} status must be 'available'"),
        );
    }
    volume.attachment = Some((id.clone(), new_id()));
    world
        .servers
        .get_mut(&id)
        .expect("checked")
        .volumes
        .push(volume_id.clone());
    Json(json!({"volumeAttachment": render_attachment(&id, &volume_id)})).into_response()
}

async fn detach_volume(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path((id, volume_id)): Path<(String, String)>,
) -> Response {
    let mut world = cloud.world();
    let Some(server) = world.servers.get_mut(&id) else {
        return fail(StatusCode::NOT_FOUND, format!("Instance {id} could not be found."));
    };
    let before = server.volumes.len();
    server.volumes.retain(|volume| *volume != volume_id);
    if server.volumes.len() == before {
        return fail(
            StatusCode::NOT_FOUND,
            format!("Volume {volume_id} is not attached to instance {id}."),
        );
    }
    if let Some(volume) = world.volumes.get_mut(&volume_id) {
        volume.attachment = None;
    }
    StatusCode::ACCEPTED.into_response()
}

async fn list_keypairs(State(cloud): State<Shared>, _: Authorized<service::Compute>) -> Response {
    let world = cloud.world();
    let keypairs: Vec<Value> = world.keypairs.values().map(|k| json!({"keypair": {"name": k["name"], "public_key": k["public_key"], "fingerprint": k["fingerprint"], "type": k["type"]}})).collect();
    Json(json!({"keypairs": keypairs})).into_response()
}

async fn create_keypair(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    body: Option<Json<Value>>,
) -> Response {
    let keypair = body
        .as_ref()
        .map(|Json(body)| body["keypair"].clone())
        .unwrap_or_default();
    let Some(name) = keypair["name"]
        .as_str()
        .filter(|n| !n.is_empty() && n.len() <= 255)
        .map(str::to_owned)
    else {
        return fail(StatusCode::BAD_REQUEST, "Invalid input for field/attribute name.");
    };
    let Some(public_key) = keypair["public_key"]
        .as_str()
        .filter(|k| k.starts_with("ssh-") || k.starts_with("ecdsa-"))
        .map(str::to_owned)
    else {
        return fail(
            StatusCode::BAD_REQUEST,
            "Keypair data is invalid: failed to generate fingerprint",
        );
    };
    let quota = cloud.config().quotas.key_pairs;
    let mut world = cloud.world();
    if world.keypairs.contains_key(&name) {
        return fail(StatusCode::CONFLICT, format!("Key pair '{name}' already exists."));
    }
    if world.keypairs.len() as u64 >= quota {
        return fail(StatusCode::FORBIDDEN, "Quota exceeded, too many key pairs.");
    }
    let digest: u64 = public_key.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let fingerprint = digest
        .to_be_bytes()
        .iter()
        .chain(digest.to_le_bytes().iter())
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let stored = json!({
        "name": name, "public_key": public_key, "fingerprint": fingerprint, "type": "ssh",
        "user_id": world.user_id, "created_at": timestamp(Utc::now()), "deleted": false, "deleted_at": null, "id": world.keypairs.len() + 1, "updated_at": null
    });
    world.keypairs.insert(name, stored.clone());
    Json(json!({"keypair": {"name": stored["name"], "public_key": stored["public_key"], "fingerprint": stored["fingerprint"], "user_id": stored["user_id"], "type": "ssh"}})).into_response()
}

async fn show_keypair(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path(name): Path<String>,
) -> Response {
    match cloud.world().keypairs.get(&name) {
        Some(keypair) => Json(json!({"keypair": keypair})).into_response(),
        None => fail(StatusCode::NOT_FOUND, format!("Keypair {name} not found for user")),
    }
}

async fn delete_keypair(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    Path(name): Path<String>,
) -> Response {
    match cloud.world().keypairs.remove(&name) {
        Some(_) => StatusCode::ACCEPTED.into_response(),
        None => fail(StatusCode::NOT_FOUND, format!("Keypair {name} not found for user")),
    }
}

async fn limits(State(cloud): State<Shared>, _: Authorized<service::Compute>) -> Response {
    let quotas = cloud.config().quotas;
    let world = cloud.world();
    let usage = world.usage();
    Json(json!({"limits": {"rate": [], "absolute": {
        "maxTotalInstances": quotas.instances, "maxTotalCores": quotas.cores, "maxTotalRAMSize": quotas.ram,
        "maxTotalKeypairs": quotas.key_pairs, "maxServerMeta": 128, "maxImageMeta": 128, "maxPersonality": 5, "maxPersonalitySize": 10240,
        "maxServerGroups": 10, "maxServerGroupMembers": 10, "maxSecurityGroups": -1, "maxSecurityGroupRules": -1,
        "maxTotalFloatingIps": -1, "totalFloatingIpsUsed": 0, "totalSecurityGroupsUsed": 0, "totalServerGroupsUsed": 0,
        "totalInstancesUsed": usage.instances, "totalCoresUsed": usage.cores, "totalRAMUsed": usage.ram
    }}}))
    .into_response()
}
