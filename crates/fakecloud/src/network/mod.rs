//! Neutron v2.0: networks, subnets (allocation pools, gateway, DNS, a DHCP port), routers
//! (external gateway, interfaces), ports, security groups and rules, tags, quotas, extensions.
//! Resources are kept as the JSON the API shows, so list filters work on any attribute as in
//! Neutron.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

mod create;
mod routers;
mod tags;

use crate::world::{timestamp, World};
use crate::{service, Authorized, Shared};
use create::{create, create_network, create_subnet};
use routers::{add_router_interface, remove_router_interface};
use tags::{add_tag, check_tag, clear_tags, remove_tag, replace_tags, show_tags};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/networking", get(versions))
        .route("/networking/", get(versions))
        .route("/networking/v2.0", get(resources))
        .route("/networking/v2.0/", get(resources))
        .route("/networking/v2.0/extensions", get(extensions))
        .route("/networking/v2.0/quotas/{project}", get(quotas))
        .route(
            "/networking/v2.0/routers/{id}/add_router_interface",
            put(add_router_interface),
        )
        .route(
            "/networking/v2.0/routers/{id}/remove_router_interface",
            put(remove_router_interface),
        )
        .route("/networking/v2.0/{collection}", get(list).post(create))
        .route(
            "/networking/v2.0/{collection}/{id}",
            get(show).put(update).delete(remove),
        )
        .route(
            "/networking/v2.0/{collection}/{id}/tags",
            get(show_tags).put(replace_tags).delete(clear_tags),
        )
        .route(
            "/networking/v2.0/{collection}/{id}/tags/{tag}",
            put(add_tag).delete(remove_tag).get(check_tag),
        )
}

fn fail(status: StatusCode, kind: &str, message: impl AsRef<str>) -> Response {
    let body = json!({"NeutronError": {"type": kind, "message": message.as_ref(), "detail": ""}});
    (status, Json(body)).into_response()
}

fn not_found(singular: &str, id: &str) -> Response {
    let kind = match singular {
        "network" => "NetworkNotFound",
        "subnet" => "SubnetNotFound",
        "router" => "RouterNotFound",
        "port" => "PortNotFound",
        "security_group" => "SecurityGroupNotFound",
        _ => "SecurityGroupRuleNotFound",
    };
    let label = singular.replace('_', " ");
    fail(
        StatusCode::NOT_FOUND,
        kind,
        format!("{}{} {id} could not be found.", label[..1].to_uppercase(), &label[1..]),
    )
}

fn bad_request(message: impl AsRef<str>) -> Response {
    fail(
        StatusCode::BAD_REQUEST,
        "HTTPBadRequest",
        format!("Invalid input for operation: {}", message.as_ref()),
    )
}

/// The collection a URL names, or Neutron's 404 for one it does not have.
fn collection_named(name: &str) -> Result<(&'static str, &'static str), Response> {
    kind_of(name).ok_or_else(|| {
        fail(
            StatusCode::NOT_FOUND,
            "HTTPNotFound",
            "The resource could not be found.",
        )
    })
}

/// URL collection name -> (JSON collection key, singular key).
fn kind_of(collection: &str) -> Option<(&'static str, &'static str)> {
    Some(match collection {
        "networks" => ("networks", "network"),
        "subnets" => ("subnets", "subnet"),
        "routers" => ("routers", "router"),
        "ports" => ("ports", "port"),
        "security-groups" => ("security_groups", "security_group"),
        "security-group-rules" => ("security_group_rules", "security_group_rule"),
        _ => return None,
    })
}

async fn versions(State(cloud): State<Shared>) -> Json<Value> {
    Json(
        json!({"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"href": format!("{}/networking/v2.0/", cloud.base_url), "rel": "self"}]}]}),
    )
}

async fn resources(State(cloud): State<Shared>) -> Json<Value> {
    let resources: Vec<Value> = ["network", "subnet", "router", "port", "security_group", "security_group_rule"]
        .iter()
        .map(|singular| {
            let collection = format!("{singular}s").replace('_', "-");
            json!({"name": singular, "collection": format!("{singular}s"), "links": [{"href": format!("{}/networking/v2.0/{collection}", cloud.base_url), "rel": "self"}]})
        })
        .collect();
    Json(json!({"resources": resources}))
}

async fn extensions(_: Authorized<service::Network>) -> Response {
    let extension = |alias: &str, name: &str| json!({"alias": alias, "name": name, "description": name, "links": [], "updated": "2017-01-01T10:00:00-00:00"});
    Json(json!({"extensions": [
        extension("router", "Neutron L3 Router"),
        extension("external-net", "Neutron external network"),
        extension("security-group", "security-group"),
        extension("standard-attr-tag", "Tag support for resources with standard attribute"),
        extension("tag-creation", "Tag support for resources during creation"),
        extension("quotas", "Quota management support"),
        extension("binding", "Port Binding"),
        extension("port-security", "Port Security"),
    ]}))
    .into_response()
}

async fn quotas(State(cloud): State<Shared>, _: Authorized<service::Network>) -> Response {
    let quotas = cloud.config().quotas;
    Json(json!({"quota": {"network": quotas.networks, "subnet": quotas.subnets, "router": quotas.routers, "port": quotas.ports,
        "security_group": quotas.security_groups, "security_group_rule": quotas.security_group_rules, "floatingip": 50, "rbac_policy": 10, "subnetpool": -1}}))
    .into_response()
}

/// Whether a resource matches Neutron's query filters (any attribute; `tags`, `tags-any`,
/// `not-tags`, `not-tags-any`; repeated keys mean any of the values).
fn matches(resource: &Value, filters: &[(String, String)]) -> bool {
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for (key, value) in filters {
        by_key.entry(key.as_str()).or_default().push(value.as_str());
    }
    let tags: Vec<&str> = resource["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    by_key.iter().all(|(key, values)| {
        let wanted = || values.iter().flat_map(|v| v.split(',')).filter(|t| !t.is_empty());
        match *key {
            "fields" | "limit" | "marker" | "sort_key" | "sort_dir" | "page_reverse" => true,
            "tags" => wanted().all(|tag| tags.contains(&tag)),
            "tags-any" => wanted().any(|tag| tags.contains(&tag)),
            "not-tags" => !wanted().all(|tag| tags.contains(&tag)),
            "not-tags-any" => !wanted().any(|tag| tags.contains(&tag)),
            "fixed_ips" => values.iter().all(|filter| {
                let (field, value) = filter.split_once('=').unwrap_or(("", ""));
                resource["fixed_ips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|ip| ip[field].as_str() == Some(value))
            }),
            key => values.iter().any(|value| match &resource[key] {
                Value::String(text) => text == value,
                Value::Bool(flag) => flag.to_string() == value.to_ascii_lowercase(),
                Value::Number(number) => number.to_string() == *value,
                Value::Null => *value == "None" || value.is_empty(),
                _ => false,
            }),
        }
    })
}

async fn list(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path(collection): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let (kind, _) = match collection_named(&collection) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let world = cloud.world();
    let items: Vec<Value> = world
        .neutron(kind)
        .values()
        .filter(|resource| matches(resource, &query))
        .cloned()
        .collect();
    Json(json!({ kind: items })).into_response()
}

async fn show(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    let (kind, singular) = match collection_named(&collection) {
        Ok(found) => found,
        Err(response) => return response,
    };
    match cloud.world().neutron(kind).get(&id) {
        Some(resource) => Json(json!({ singular: resource })).into_response(),
        None => not_found(singular, &id),
    }
}

const UPDATABLE: [&str; 5] = [
    "name",
    "description",
    "admin_state_up",
    "dns_nameservers",
    "external_gateway_info",
];

async fn update(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path((collection, id)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let (kind, singular) = match collection_named(&collection) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(changes) = body.and_then(|Json(body)| body.get(singular).and_then(Value::as_object).cloned()) else {
        return bad_request(format!("Resource body required with key '{singular}'"));
    };
    let updatable = |key: &str| UPDATABLE.contains(&key) || (kind == "ports" && key == "security_groups");
    if let Some(field) = changes.keys().find(|key| !updatable(key)) {
        return bad_request(format!("Cannot update read-only attribute {field}"));
    }
    let mut world = cloud.world();
    let groups = changes
        .get("security_groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    if let Some(unknown) = groups
        .filter_map(Value::as_str)
        .find(|group| !world.neutron("security_groups").contains_key(*group))
    {
        return fail(
            StatusCode::NOT_FOUND,
            "SecurityGroupNotFound",
            format!("Security group {unknown} does not exist"),
        );
    }
    let Some(resource) = world.neutron_mut(kind).get_mut(&id) else {
        return not_found(singular, &id);
    };
    for (key, value) in changes {
        resource[key.as_str()] = value;
    }
    resource["updated_at"] = json!(timestamp(Utc::now()));
    resource["revision_number"] = json!(resource["revision_number"].as_u64().unwrap_or(1) + 1);
    Json(json!({ singular: resource.clone() })).into_response()
}

async fn remove(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    let (kind, singular) = match collection_named(&collection) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let mut world = cloud.world();
    if !world.neutron(kind).contains_key(&id) {
        return not_found(singular, &id);
    }
    if let Err(response) = check_in_use(&world, kind, &id) {
        return response;
    }
    let removed = world.neutron_mut(kind).remove(&id).expect("checked");
    match kind {
        "networks" => {
            world
                .neutron_mut("ports")
                .retain(|_, port| port["network_id"] != id.as_str());
            let subnets: Vec<String> = removed["subnets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
            for subnet in subnets {
                world.neutron_mut("subnets").remove(&subnet);
            }
        }
        "subnets" => {
            world.neutron_mut("ports").retain(|_, port| {
                !(port["device_owner"] == "network:dhcp"
                    && port["fixed_ips"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|ip| ip["subnet_id"] == id.as_str()))
            });
            if let Some(network) = world
                .neutron_mut("networks")
                .get_mut(removed["network_id"].as_str().unwrap_or_default())
            {
                network["subnets"]
                    .as_array_mut()
                    .expect("array")
                    .retain(|subnet| subnet != id.as_str());
            }
        }
        "security_groups" => world
            .neutron_mut("security_group_rules")
            .retain(|_, rule| rule["security_group_id"] != id.as_str()),
        "security_group_rules" => {
            if let Some(group) = world
                .neutron_mut("security_groups")
                .get_mut(removed["security_group_id"].as_str().unwrap_or_default())
            {
                group["security_group_rules"]
                    .as_array_mut()
                    .expect("array")
                    .retain(|rule| rule["id"] != id.as_str());
            }
        }
        _ => {}
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Neutron refuses to delete what is still used, with 409s of these types.
fn check_in_use(world: &World, kind: &str, id: &str) -> Result<(), Response> {
    let ports = world.neutron("ports").values();
    match kind {
        "networks"
            if ports
                .clone()
                .any(|port| port["network_id"] == id && port["device_owner"] != "network:dhcp") =>
        {
            return Err(fail(StatusCode::CONFLICT, "NetworkInUse", format!("Unable to complete operation on network {id}. There are one or more ports still in use on the network.")));
        }
        "subnets" => {
            let used = ports.clone().any(|port| {
                port["device_owner"] != "network:dhcp"
                    && port["fixed_ips"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|ip| ip["subnet_id"] == id)
            });
            if used {
                return Err(fail(StatusCode::CONFLICT, "SubnetInUse", format!("Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet.")));
            }
        }
        "routers"
            if ports
                .clone()
                .any(|port| port["device_id"] == id && port["device_owner"] == "network:router_interface") =>
        {
            return Err(fail(
                StatusCode::CONFLICT,
                "RouterInUse",
                format!("Router {id} still has ports"),
            ));
        }
        "security_groups" => {
            let group = &world.neutron("security_groups")[id];
            if group["name"] == "default" {
                return Err(fail(
                    StatusCode::CONFLICT,
                    "SecurityGroupCannotRemoveDefault",
                    "Insufficient rights for removing default security group.",
                ));
            }
            let name = group["name"].as_str().unwrap_or_default();
            let on_a_server = world
                .servers
                .values()
                .any(|server| server.deleted_at.is_none() && server.security_groups.iter().any(|g| g == name));
            // As in Neutron, a group on any port is in use.
            let on_a_port = world.neutron("ports").values().any(|port| {
                port["security_groups"]
                    .as_array()
                    .is_some_and(|groups| groups.iter().any(|group| group == id))
            });
            if on_a_server || on_a_port {
                return Err(fail(
                    StatusCode::CONFLICT,
                    "SecurityGroupInUse",
                    format!("Security Group {id} in use."),
                ));
            }
        }
        "ports" => {
            let port = &world.neutron("ports")[id];
            if port["device_owner"] == "network:router_interface" {
                return Err(fail(StatusCode::CONFLICT, "PortInUse", format!("Port {id} cannot be deleted directly via the port API: has device owner network:router_interface.")));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Creates the cloud's own external network `public` (with subnet `public-subnet`), which
/// routers use as their gateway. Not part of any deployment, so not in the inventory.
pub fn create_public_network(world: &mut World) -> Vec<String> {
    let body = json!({"name": "public", "router:external": true, "shared": true});
    let network = create_network(world, body.as_object().expect("object")).expect("public network");
    let network_id = network["id"].as_str().expect("id").to_owned();
    let body = json!({"name": "public-subnet", "network_id": network_id, "cidr": "172.24.4.0/24", "ip_version": 4, "enable_dhcp": false});
    let subnet = create_subnet(world, body.as_object().expect("object")).expect("public subnet");
    vec![network_id, subnet["id"].as_str().expect("id").to_owned()]
}
