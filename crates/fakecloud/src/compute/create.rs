//! Creating servers: the request read as strictly as Nova reads it, quotas (multi-create
//! makes as many as fit), ports bound or made, and Nova's 202.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chrono::{Duration, Utc};
use serde_json::{json, Map, Value};

use super::{fail, microversion, with_version};
use crate::config::{FakeConfig, Flavor, Quotas};
use crate::world::{new_id, Server, World};
use crate::{create_delay, service, Authorized, Shared};

pub(super) fn find_flavor(flavors: &[Flavor], reference: &str) -> Option<Flavor> {
    let id = reference.rsplit('/').next().unwrap_or(reference);
    flavors.iter().find(|flavor| flavor.id == id).cloned()
}

/// A validated create request.
struct ServerRequest {
    name: String,
    flavor: Flavor,
    image_id: String,
    networks: Vec<NetworkRequest>,
    key_name: Option<String>,
    security_groups: Vec<String>,
    metadata: Map<String, Value>,
    tags: Vec<String>,
    user_data: Option<String>,
    min_count: u64,
    max_count: u64,
}

enum NetworkRequest {
    Network(String),
    Port(String),
}

fn read_server_request(
    cloud: &Shared,
    world: &World,
    body: &Value,
    version: (u32, u32),
) -> Result<ServerRequest, Response> {
    let server = body
        .get("server")
        .filter(|s| s.is_object())
        .ok_or_else(|| bad("Invalid input for field/attribute server."))?;
    let name = server["name"]
        .as_str()
        .filter(|n| !n.trim().is_empty() && n.len() <= 255)
        .ok_or_else(|| bad("Invalid input for field/attribute name."))?;
    let (flavor, image_id) = read_flavor_and_image(cloud, server)?;
    let key_name = server["key_name"].as_str().map(str::to_owned);
    if key_name.as_ref().is_some_and(|key| !world.keypairs.contains_key(key)) {
        return Err(bad("Invalid key_name provided."));
    }
    let min_count = server["min_count"].as_u64().unwrap_or(1).max(1);
    Ok(ServerRequest {
        name: name.to_owned(),
        flavor,
        image_id,
        networks: read_networks(world, &server["networks"], version)?,
        key_name,
        security_groups: read_security_groups(world, server)?,
        metadata: read_metadata(server)?,
        tags: read_tags(server, version)?,
        user_data: read_user_data(server)?,
        min_count,
        max_count: server["max_count"].as_u64().unwrap_or(min_count).max(min_count),
    })
}

fn bad(message: impl AsRef<str>) -> Response {
    fail(StatusCode::BAD_REQUEST, message)
}

fn read_flavor_and_image(cloud: &Shared, server: &Value) -> Result<(Flavor, String), Response> {
    let config = cloud.config();
    let flavor_ref = server["flavorRef"]
        .as_str()
        .ok_or_else(|| bad("Invalid input for field/attribute flavorRef."))?;
    let flavor = find_flavor(&config.flavors, flavor_ref)
        .ok_or_else(|| bad(format!("Flavor {flavor_ref} could not be found.")))?;
    let image_ref = server["imageRef"].as_str().unwrap_or_default();
    let image_id = image_ref.rsplit('/').next().unwrap_or(image_ref).to_owned();
    if !config.images.iter().any(|image| image.id == image_id) {
        return Err(bad(format!("Image {image_ref} could not be found.")));
    }
    Ok((flavor, image_id))
}

/// `networks`: a list of ports or networks, `none` or `auto`; absent only before 2.37.
fn read_networks(world: &World, networks: &Value, version: (u32, u32)) -> Result<Vec<NetworkRequest>, Response> {
    let items = match networks {
        Value::Array(items) => items,
        Value::String(choice) if choice == "none" || choice == "auto" => return Ok(Vec::new()),
        Value::Null if version < (2, 37) => return Ok(Vec::new()),
        _ => return Err(bad("Invalid input for field/attribute networks.")),
    };
    items
        .iter()
        .map(|item| {
            if let Some(port) = item["port"].as_str() {
                world
                    .neutron("ports")
                    .contains_key(port)
                    .then(|| NetworkRequest::Port(port.to_owned()))
                    .ok_or_else(|| bad(format!("Port id {port} could not be found.")))
            } else if let Some(uuid) = item["uuid"].as_str() {
                world
                    .neutron("networks")
                    .contains_key(uuid)
                    .then(|| NetworkRequest::Network(uuid.to_owned()))
                    .ok_or_else(|| bad(format!("Network {uuid} could not be found.")))
            } else {
                Err(bad("Bad networks format: network uuid is not in proper format"))
            }
        })
        .collect()
}

/// Security groups by name or id, shown by name; `default` when none is given.
fn read_security_groups(world: &World, server: &Value) -> Result<Vec<String>, Response> {
    let mut security_groups = Vec::new();
    for group in server["security_groups"].as_array().into_iter().flatten() {
        let wanted = group["name"].as_str().unwrap_or_default();
        let found = world
            .neutron("security_groups")
            .values()
            .find(|g| g["name"] == wanted || g["id"] == wanted)
            .ok_or_else(|| bad(format!("Unable to find security_group with name or id '{wanted}'")))?;
        security_groups.push(found["name"].as_str().unwrap_or(wanted).to_owned());
    }
    if security_groups.is_empty() {
        security_groups.push("default".to_owned());
    }
    Ok(security_groups)
}

fn read_metadata(server: &Value) -> Result<Map<String, Value>, Response> {
    let metadata = server
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let invalid = |(key, value): (&String, &Value)| {
        key.is_empty() || key.len() > 255 || value.as_str().is_none_or(|value| value.len() > 255)
    };
    if metadata.iter().any(invalid) {
        return Err(bad("Invalid input for field/attribute metadata."));
    }
    Ok(metadata)
}

/// Tags in a create need 2.52; at most 50, each 1 to 60 characters without `,` or `/`.
fn read_tags(server: &Value, version: (u32, u32)) -> Result<Vec<String>, Response> {
    let tags: Vec<String> = server["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    if !tags.is_empty() && version < (2, 52) {
        return Err(bad("Additional properties are not allowed ('tags' was unexpected)"));
    }
    let invalid = |t: &String| t.is_empty() || t.len() > 60 || t.contains(',') || t.contains('/');
    if tags.len() > 50 || tags.iter().any(invalid) {
        return Err(bad("Invalid input for field/attribute tags."));
    }
    Ok(tags)
}

fn read_user_data(server: &Value) -> Result<Option<String>, Response> {
    let Some(data) = server["user_data"].as_str() else {
        return Ok(None);
    };
    match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(_) if data.len() <= 65_535 => Ok(Some(data.to_owned())),
        _ => Err(bad("User data needs to be valid base 64.")),
    }
}

/// How many servers of a multi-create fit the quotas (as many as fit between min_count and
/// max_count, as Nova does), or Nova's 403 naming the first quota min_count exceeds.
fn servers_that_fit(world: &World, quota: &Quotas, request: &ServerRequest) -> Result<u64, Response> {
    let usage = world.usage();
    let flavor = &request.flavor;
    let over = |n: u64| -> Option<(&str, u64, u64, u64)> {
        if usage.instances + n > quota.instances {
            Some(("instances", n, usage.instances, quota.instances))
        } else if usage.cores + n * flavor.vcpus > quota.cores {
            Some(("cores", n * flavor.vcpus, usage.cores, quota.cores))
        } else if usage.ram + n * flavor.ram > quota.ram {
            Some(("ram", n * flavor.ram, usage.ram, quota.ram))
        } else {
            None
        }
    };
    if let Some((resource, requested, used, limit)) = over(request.min_count) {
        let message = format!(
            "Quota exceeded for {resource}: Requested {requested}, but already used {used} of {limit} {resource}"
        );
        return Err(fail(StatusCode::FORBIDDEN, message));
    }
    Ok((request.min_count..=request.max_count)
        .rev()
        .find(|n| over(*n).is_none())
        .unwrap_or(request.min_count))
}

/// A server's interfaces as (network id, port id), and the ports Nova made for it.
type Plugged = (Vec<(String, String)>, Vec<String>);

/// Given ports are bound to the server; networks get a port Nova makes (and deletes with the
/// server).
fn plug(world: &mut World, server_id: &str, networks: &[NetworkRequest]) -> Result<Plugged, Response> {
    let mut interfaces = Vec::new();
    let mut nova_ports = Vec::new();
    for network in networks {
        let port = match network {
            NetworkRequest::Port(port_id) => {
                let port = world.neutron_mut("ports").get_mut(port_id).expect("validated");
                port["device_id"] = json!(server_id);
                port["device_owner"] = json!("compute:nova");
                port.clone()
            }
            NetworkRequest::Network(network_id) => {
                let port = world
                    .create_port(network_id, server_id, "compute:nova", "", None)
                    .map_err(bad)?;
                nova_ports.push(port["id"].as_str().unwrap_or_default().to_owned());
                port
            }
        };
        let id_of = |field: &str| port[field].as_str().unwrap_or_default().to_owned();
        interfaces.push((id_of("network_id"), id_of("id")));
    }
    Ok((interfaces, nova_ports))
}

/// Boots `count` servers of the request; returns the first one's id.
fn boot(world: &mut World, config: &FakeConfig, request: &ServerRequest, count: u64) -> Result<String, Response> {
    let now = Utc::now();
    let mut first = None;
    for index in 0..count {
        let id = new_id();
        let name = if count > 1 {
            format!("{}-{}", request.name, index + 1)
        } else {
            request.name.clone()
        };
        let (interfaces, nova_ports) = plug(world, &id, &request.networks)?;
        let server = Server {
            id: id.clone(),
            name,
            flavor: request.flavor.clone(),
            image_id: request.image_id.clone(),
            metadata: request.metadata.clone(),
            tags: request.tags.clone(),
            key_name: request.key_name.clone(),
            interfaces,
            nova_ports,
            security_groups: request.security_groups.clone(),
            created: now,
            active_at: now + Duration::milliseconds(config.boot_delay_ms as i64),
            fails: config.server_error_rate > 0.0 && rand::random::<f64>() < config.server_error_rate,
            deleted_at: None,
            resized_at: None,
            resize_confirmed: false,
            previous_flavor: None,
            stopped: false,
            volumes: Vec::new(),
            user_data: request.user_data.clone(),
            rebuild: None,
        };
        world.servers.insert(id.clone(), server);
        first.get_or_insert(id);
    }
    Ok(first.expect("at least one server"))
}

/// Nova's 202: the id, links, the groups by name and an admin password.
fn created(cloud: &Shared, id: &str, request: &ServerRequest) -> Response {
    let location = format!("{}/compute/v2.1/servers/{id}", cloud.base_url);
    let body = json!({"server": {
        "id": id,
        "links": [
            {"rel": "self", "href": location},
            {"rel": "bookmark", "href": format!("{}/compute/servers/{id}", cloud.base_url)}
        ],
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": request.security_groups.iter().map(|name| json!({"name": name})).collect::<Vec<_>>(),
        "adminPass": uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
    }});
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    response
        .headers_mut()
        .insert("location", location.parse().expect("ascii"));
    response
}

pub(super) async fn create_server(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    headers: HeaderMap,
    body: Option<Json<Value>>,
) -> Response {
    let version = match microversion(&headers) {
        Ok(version) => version,
        Err(response) => return response,
    };
    let Some(Json(body)) = body else {
        return bad("The request body is not valid JSON.");
    };
    let lose_response = create_delay(&cloud).await;
    let config = cloud.config();
    let made = {
        let mut world = cloud.world();
        read_server_request(&cloud, &world, &body, version).and_then(|request| {
            let count = servers_that_fit(&world, &config.quotas, &request)?;
            Ok((boot(&mut world, &config, &request, count)?, request))
        })
    };
    let (id, request) = match made {
        Ok(made) => made,
        Err(response) => return response,
    };
    if lose_response {
        return fail(StatusCode::SERVICE_UNAVAILABLE, "The server did not answer in time.");
    }
    if body["server"]["return_reservation_id"] == true {
        let reservation = json!({"reservation_id": format!("r-{}", &id[..8])});
        return (StatusCode::ACCEPTED, Json(reservation)).into_response();
    }
    with_version(created(&cloud, &id, &request), version)
}
