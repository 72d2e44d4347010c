//! Neutron v2.0: networks, subnets (allocation pools, gateway, DNS, a DHCP port), routers
//! (external gateway, interfaces), ports, security groups and rules, tags, quotas, extensions.
//! Resources are kept as the JSON the API shows, so list filters work on any attribute as in
//! Neutron.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::Utc;
use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::config::TagsInCreate;
use crate::world::{default_pool, new_id, timestamp, World};
use crate::{authorize, create_delay, Shared};

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

async fn extensions(State(cloud): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
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

async fn quotas(State(cloud): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
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
    headers: HeaderMap,
    Path(collection): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    let Some((kind, _)) = kind_of(&collection) else {
        return fail(
            StatusCode::NOT_FOUND,
            "HTTPNotFound",
            "The resource could not be found.",
        );
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
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    let Some((kind, singular)) = kind_of(&collection) else {
        return fail(
            StatusCode::NOT_FOUND,
            "HTTPNotFound",
            "The resource could not be found.",
        );
    };
    match cloud.world().neutron(kind).get(&id) {
        Some(resource) => Json(json!({ singular: resource })).into_response(),
        None => not_found(singular, &id),
    }
}

fn over_quota(resource: &str) -> Response {
    fail(
        StatusCode::CONFLICT,
        "OverQuota",
        format!("Quota exceeded for resources: ['{resource}']."),
    )
}

/// Fields every resource has.
fn base(world: &World, body: &Map<String, Value>) -> Map<String, Value> {
    let now = timestamp(Utc::now());
    let tags: Vec<Value> = body.get("tags").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut resource = Map::new();
    resource.insert("id".into(), json!(new_id()));
    resource.insert("name".into(), body.get("name").cloned().unwrap_or(json!("")));
    resource.insert(
        "description".into(),
        body.get("description").cloned().unwrap_or(json!("")),
    );
    resource.insert("tenant_id".into(), json!(world.project_id));
    resource.insert("project_id".into(), json!(world.project_id));
    resource.insert("tags".into(), Value::Array(tags));
    resource.insert("created_at".into(), json!(now));
    resource.insert("updated_at".into(), json!(now));
    resource.insert("revision_number".into(), json!(1));
    resource
}

fn check_tags(body: &Map<String, Value>) -> Result<(), Response> {
    match body.get("tags") {
        None => Ok(()),
        Some(Value::Array(tags))
            if tags.iter().all(|t| {
                t.as_str()
                    .is_some_and(|t| !t.is_empty() && t.len() <= 255 && !t.contains(','))
            }) =>
        {
            Ok(())
        }
        Some(_) => Err(bad_request(
            "tags must be a list of strings of 1 to 255 characters without commas",
        )),
    }
}

async fn create(
    State(cloud): State<Shared>,
    headers: HeaderMap,
    Path(collection): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    let Some((kind, singular)) = kind_of(&collection) else {
        return fail(
            StatusCode::NOT_FOUND,
            "HTTPNotFound",
            "The resource could not be found.",
        );
    };
    // One resource under the singular key, or many under the plural key (Neutron's bulk
    // create, all or nothing).
    let (mut items, bulk) = match body.map(|Json(body)| body) {
        Some(Value::Object(mut body)) => match (body.remove(singular), body.remove(kind)) {
            (Some(Value::Object(item)), _) => (vec![item], false),
            (_, Some(Value::Array(items))) if !items.is_empty() && items.iter().all(Value::is_object) => (
                items.into_iter().filter_map(|item| item.as_object().cloned()).collect(),
                true,
            ),
            _ => return bad_request(format!("Resource body required with key '{singular}' or '{kind}'")),
        },
        _ => return bad_request(format!("Resource body required with key '{singular}'")),
    };
    for item in &items {
        if let Err(response) = check_tags(item) {
            return response;
        }
    }
    if let Err(response) = apply_tag_policy(&cloud, kind, &mut items) {
        return response;
    }
    let lose_response = create_delay(&cloud).await;
    let quotas = cloud.config().quotas;
    let mut world = cloud.world();
    let (quota, quota_name) = match kind {
        "networks" => (quotas.networks, "network"),
        "subnets" => (quotas.subnets, "subnet"),
        "routers" => (quotas.routers, "router"),
        "ports" => (quotas.ports, "port"),
        "security_groups" => (quotas.security_groups, "security_group"),
        _ => (quotas.security_group_rules, "security_group_rule"),
    };
    let used = world
        .neutron(kind)
        .keys()
        .filter(|id| !world.builtin.contains(*id))
        .count() as u64;
    if used + items.len() as u64 > quota {
        return over_quota(quota_name);
    }
    let mut created = Vec::new();
    for item in &items {
        let result = match kind {
            "networks" => create_network(&mut world, item),
            "subnets" => create_subnet(&mut world, item),
            "routers" => create_router(&mut world, item),
            "ports" => create_port(&mut world, item),
            "security_groups" => create_security_group(&mut world, item),
            _ => create_rule(&mut world, item),
        };
        match result {
            Ok(resource) => created.push(resource),
            Err(response) => {
                for resource in &created {
                    world
                        .neutron_mut(kind)
                        .remove(resource["id"].as_str().unwrap_or_default());
                }
                return response;
            }
        }
    }
    drop(world);
    if lose_response {
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The server did not answer in time.",
        );
    }
    if bulk {
        (StatusCode::CREATED, Json(json!({ kind: created }))).into_response()
    } else {
        (StatusCode::CREATED, Json(json!({ singular: created.remove(0) }))).into_response()
    }
}

/// What this Neutron does with tags in a create (see [`TagsInCreate`]).
fn apply_tag_policy(cloud: &Shared, kind: &str, items: &mut [Map<String, Value>]) -> Result<(), Response> {
    if cloud.config().tags_in_create == TagsInCreate::Keep {
        return Ok(());
    }
    match kind {
        "ports" => {
            for item in items {
                item.remove("tags");
            }
            Ok(())
        }
        "networks" | "subnets" | "routers" | "security_groups"
            if items.iter().any(|item| item.contains_key("tags")) =>
        {
            Err(fail(
                StatusCode::BAD_REQUEST,
                "HTTPBadRequest",
                "Attribute 'tags' not allowed in POST",
            ))
        }
        _ => Ok(()),
    }
}

fn create_network(world: &mut World, body: &Map<String, Value>) -> Result<Value, Response> {
    let mut network = base(world, body);
    let segment = 1000 + world.neutron("networks").len();
    for (key, value) in [
        (
            "admin_state_up",
            body.get("admin_state_up").cloned().unwrap_or(json!(true)),
        ),
        ("mtu", json!(1450)),
        ("status", json!("ACTIVE")),
        ("subnets", json!([])),
        ("shared", body.get("shared").cloned().unwrap_or(json!(false))),
        ("availability_zone_hints", json!([])),
        ("availability_zones", json!(["nova"])),
        ("ipv4_address_scope", Value::Null),
        ("ipv6_address_scope", Value::Null),
        (
            "router:external",
            body.get("router:external").cloned().unwrap_or(json!(false)),
        ),
        (
            "port_security_enabled",
            body.get("port_security_enabled").cloned().unwrap_or(json!(true)),
        ),
        ("provider:network_type", json!("vxlan")),
        ("provider:physical_network", Value::Null),
        ("provider:segmentation_id", json!(segment)),
        ("qinq", json!(false)),
        ("vlan_transparent", json!(false)),
    ] {
        network.insert(key.into(), value);
    }
    // Only external networks say whether they are the default one.
    if network["router:external"] == true {
        network.insert("is_default".into(), json!(false));
    }
    let mut network = Value::Object(network);
    world
        .neutron_mut("networks")
        .insert(network["id"].as_str().expect("id").to_owned(), network.clone());
    // Neutron's create answer says `is_default` of any network; its reads, of external ones.
    network["is_default"] = json!(false);
    Ok(network)
}

fn create_subnet(world: &mut World, body: &Map<String, Value>) -> Result<Value, Response> {
    let network_id = body
        .get("network_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("network_id is required"))?
        .to_owned();
    if !world.neutron("networks").contains_key(&network_id) {
        return Err(not_found("network", &network_id));
    }
    let cidr_text = body
        .get("cidr")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("cidr is required"))?;
    let cidr: IpNet = cidr_text
        .parse()
        .map_err(|_| bad_request(format!("'{cidr_text}' is not a valid IP subnet.")))?;
    let cidr = cidr.trunc();
    let ip_version = body.get("ip_version").and_then(Value::as_u64).unwrap_or(4);
    let family_ok = matches!((ip_version, cidr), (4, IpNet::V4(_)) | (6, IpNet::V6(_)));
    if !family_ok {
        return Err(bad_request("Cidr and ip_version do not match."));
    }
    for other in world
        .neutron("subnets")
        .values()
        .filter(|s| s["network_id"] == network_id.as_str())
    {
        let other_cidr: IpNet = other["cidr"].as_str().unwrap_or_default().parse().expect("stored cidr");
        if other_cidr.contains(&cidr) || cidr.contains(&other_cidr) {
            return Err(bad_request(format!(
                "Requested subnet with cidr: {cidr} for network: {network_id} overlaps with another subnet"
            )));
        }
    }
    let gateway: Option<IpAddr> = match body.get("gateway_ip") {
        Some(Value::Null) => None,
        Some(Value::String(text)) => Some(
            text.parse()
                .map_err(|_| bad_request(format!("'{text}' is not a valid IP address")))?,
        ),
        _ => Some(crate::world::next_ip(cidr.network()).expect("hosts")),
    };
    if let Some(gateway) = gateway {
        if !cidr.contains(&gateway) {
            return Err(bad_request(format!(
                "Gateway IP {gateway} conflicts with allocation pool or is outside {cidr}"
            )));
        }
    }
    let pools = match body.get("allocation_pools").and_then(Value::as_array) {
        Some(pools) if !pools.is_empty() => {
            for pool in pools {
                let inside = ["start", "end"].iter().all(|key| {
                    pool[*key]
                        .as_str()
                        .and_then(|ip| ip.parse::<IpAddr>().ok())
                        .is_some_and(|ip| cidr.contains(&ip))
                });
                if !inside {
                    return Err(bad_request(format!(
                        "The allocation pool {pool} spans beyond the subnet cidr {cidr}."
                    )));
                }
            }
            Value::Array(pools.clone())
        }
        _ => {
            let (start, end) = default_pool(cidr, gateway);
            json!([{"start": start.to_string(), "end": end.to_string()}])
        }
    };
    let enable_dhcp = body.get("enable_dhcp").and_then(Value::as_bool).unwrap_or(true);
    let mut subnet = base(world, body);
    for (key, value) in [
        ("network_id", json!(network_id)),
        ("ip_version", json!(ip_version)),
        ("cidr", json!(cidr.to_string())),
        ("gateway_ip", json!(gateway.map(|g| g.to_string()))),
        ("allocation_pools", pools),
        (
            "dns_nameservers",
            body.get("dns_nameservers").cloned().unwrap_or(json!([])),
        ),
        ("host_routes", body.get("host_routes").cloned().unwrap_or(json!([]))),
        ("enable_dhcp", json!(enable_dhcp)),
        ("subnetpool_id", Value::Null),
        ("ipv6_ra_mode", Value::Null),
        ("ipv6_address_mode", Value::Null),
        ("service_types", json!([])),
        ("router:external", json!(false)),
    ] {
        subnet.insert(key.into(), value);
    }
    let subnet = Value::Object(subnet);
    let id = subnet["id"].as_str().expect("id").to_owned();
    world.neutron_mut("subnets").insert(id.clone(), subnet.clone());
    let network = world.neutron_mut("networks").get_mut(&network_id).expect("checked");
    network["subnets"].as_array_mut().expect("array").push(json!(id));
    if enable_dhcp {
        // Neutron's DHCP agent takes the first free address, as on a real cloud.
        world
            .create_port(
                &network_id,
                &format!("dhcp-{network_id}"),
                "network:dhcp",
                "",
                Some(&id),
            )
            .map_err(bad_request)?;
    }
    Ok(subnet)
}

fn create_router(world: &mut World, body: &Map<String, Value>) -> Result<Value, Response> {
    let gateway = match body.get("external_gateway_info") {
        Some(Value::Object(info)) => {
            let network_id = info
                .get("network_id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad_request("external_gateway_info needs network_id"))?;
            let network = world
                .neutron("networks")
                .get(network_id)
                .ok_or_else(|| not_found("network", network_id))?;
            if network["router:external"] != true {
                return Err(bad_request(format!(
                    "Bad router request: Network {network_id} is not an external network."
                )));
            }
            let subnet = network["subnets"].get(0).and_then(Value::as_str).map(str::to_owned);
            let address = subnet.as_deref().and_then(|s| world.allocate_ip(s));
            json!({"network_id": network_id, "enable_snat": info.get("enable_snat").cloned().unwrap_or(json!(true)),
                   "external_fixed_ips": address.map(|ip| vec![json!({"subnet_id": subnet, "ip_address": ip.to_string()})]).unwrap_or_default()})
        }
        _ => Value::Null,
    };
    let mut router = base(world, body);
    let gateways = match &gateway {
        Value::Object(info) => {
            let mut info = info.clone();
            info.remove("enable_snat");
            json!([info])
        }
        _ => json!([]),
    };
    let snat = gateway.get("enable_snat").cloned().unwrap_or(json!(false));
    for (key, value) in [
        ("admin_state_up", json!(true)),
        ("status", json!("ACTIVE")),
        ("external_gateway_info", gateway),
        ("external_gateways", gateways),
        ("enable_snat", snat),
        ("routes", json!([])),
        ("availability_zone_hints", json!([])),
        ("availability_zones", json!(["nova"])),
        ("ha", json!(false)),
        ("flavor_id", Value::Null),
        ("enable_default_route_bfd", json!(false)),
        ("enable_default_route_ecmp", json!(false)),
    ] {
        router.insert(key.into(), value);
    }
    let router = Value::Object(router);
    world
        .neutron_mut("routers")
        .insert(router["id"].as_str().expect("id").to_owned(), router.clone());
    Ok(router)
}

fn create_port(world: &mut World, body: &Map<String, Value>) -> Result<Value, Response> {
    let network_id = body
        .get("network_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("network_id is required"))?
        .to_owned();
    if !world.neutron("networks").contains_key(&network_id) {
        return Err(not_found("network", &network_id));
    }
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let device_id = body
        .get("device_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let owner = body
        .get("device_owner")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let subnet = body
        .get("fixed_ips")
        .and_then(Value::as_array)
        .and_then(|ips| ips.first())
        .and_then(|ip| ip["subnet_id"].as_str())
        .map(str::to_owned);
    for group in body
        .get("security_groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = group.as_str().unwrap_or_default();
        if !world.neutron("security_groups").contains_key(id) {
            return Err(not_found("security_group", id));
        }
    }
    let mut port = world
        .create_port(&network_id, &device_id, &owner, &name, subnet.as_deref())
        .map_err(|message| fail(StatusCode::CONFLICT, "IpAddressGenerationFailure", message))?;
    let id = port["id"].as_str().expect("id").to_owned();
    for key in ["tags", "description", "security_groups"] {
        if let Some(value) = body.get(key) {
            port[key] = value.clone();
        }
    }
    world.neutron_mut("ports").insert(id, port.clone());
    Ok(port)
}

fn create_security_group(world: &mut World, body: &Map<String, Value>) -> Result<Value, Response> {
    let mut group = base(world, body);
    let id = group["id"].as_str().expect("id").to_owned();
    let now = timestamp(Utc::now());
    // Neutron gives every new group egress rules for both address families.
    let rules: Vec<Value> = ["IPv4", "IPv6"]
        .iter()
        .map(|ethertype| {
            json!({"id": new_id(), "security_group_id": id, "direction": "egress", "ethertype": ethertype, "protocol": null,
                   "port_range_min": null, "port_range_max": null, "remote_ip_prefix": null, "remote_group_id": null,
                   "remote_address_group_id": null, "normalized_cidr": null, "description": "", "tenant_id": world.project_id,
                   "project_id": world.project_id, "created_at": now, "updated_at": now, "revision_number": 0, "belongs_to_default_sg": false})
        })
        .collect();
    // Rules shown inside their group carry two attributes more than on their own.
    let shown: Vec<Value> = rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let mut rule = rule.clone();
            rule["standard_attr_id"] = json!(index + 1);
            rule["tags"] = json!([]);
            rule
        })
        .collect();
    group.insert("security_group_rules".into(), json!(shown));
    group.insert("stateful".into(), json!(true));
    group.insert("shared".into(), json!(false));
    let group = Value::Object(group);
    world.neutron_mut("security_groups").insert(id, group.clone());
    for rule in rules {
        world
            .neutron_mut("security_group_rules")
            .insert(rule["id"].as_str().expect("id").to_owned(), rule);
    }
    Ok(group)
}

const RULE_IDENTITY: [&str; 7] = [
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
];

fn create_rule(world: &mut World, body: &Map<String, Value>) -> Result<Value, Response> {
    let group_id = body
        .get("security_group_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("security_group_id is required"))?
        .to_owned();
    if !world.neutron("security_groups").contains_key(&group_id) {
        return Err(not_found("security_group", &group_id));
    }
    let direction = body.get("direction").and_then(Value::as_str).unwrap_or_default();
    if !matches!(direction, "ingress" | "egress") {
        return Err(bad_request(format!("{direction} is not in valid_values")));
    }
    let protocol = body.get("protocol").cloned().unwrap_or(Value::Null);
    let (min, max) = (
        body.get("port_range_min").cloned().unwrap_or(Value::Null),
        body.get("port_range_max").cloned().unwrap_or(Value::Null),
    );
    if let (Some(min), Some(max)) = (min.as_u64(), max.as_u64()) {
        if min > max {
            return Err(bad_request(
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
            ));
        }
    }
    if !min.is_null()
        && !matches!(protocol.as_str(), Some("tcp" | "udp" | "6" | "17"))
        && protocol.as_str() != Some("icmp")
    {
        return Err(bad_request("Must also specify protocol if port range is given."));
    }
    let remote_ip = body.get("remote_ip_prefix").cloned().unwrap_or(Value::Null);
    let remote_ip = match remote_ip.as_str() {
        Some(text) => json!(text
            .parse::<IpNet>()
            .map_err(|_| bad_request(format!("'{text}' is not a valid IP subnet")))?
            .trunc()
            .to_string()),
        None => Value::Null,
    };
    let remote_group = body.get("remote_group_id").cloned().unwrap_or(Value::Null);
    if let Some(remote) = remote_group.as_str() {
        if !world.neutron("security_groups").contains_key(remote) {
            return Err(not_found("security_group", remote));
        }
    }
    let ethertype = body.get("ethertype").cloned().unwrap_or(json!("IPv4"));
    let mut rule = base(world, body);
    rule.remove("name");
    rule.remove("tags");
    for (key, value) in [
        ("security_group_id", json!(group_id)),
        ("direction", json!(direction)),
        ("ethertype", ethertype),
        ("protocol", protocol),
        ("port_range_min", min),
        ("port_range_max", max),
        ("remote_ip_prefix", remote_ip.clone()),
        ("normalized_cidr", remote_ip),
        ("remote_group_id", remote_group),
        ("remote_address_group_id", Value::Null),
        ("belongs_to_default_sg", json!(false)),
    ] {
        rule.insert(key.into(), value);
    }
    let rule = Value::Object(rule);
    let duplicate = world.neutron("security_group_rules").values().find(|existing| {
        existing["security_group_id"] == group_id.as_str()
            && RULE_IDENTITY.iter().all(|key| existing[*key] == rule[*key])
    });
    if let Some(existing) = duplicate {
        return Err(fail(
            StatusCode::CONFLICT,
            "SecurityGroupRuleExists",
            format!(
                "Security group rule already exists. Rule id is {}.",
                existing["id"].as_str().unwrap_or_default()
            ),
        ));
    }
    let id = rule["id"].as_str().expect("id").to_owned();
    world.neutron_mut("security_group_rules").insert(id, rule.clone());
    let group = world
        .neutron_mut("security_groups")
        .get_mut(&group_id)
        .expect("checked");
    group["security_group_rules"]
        .as_array_mut()
        .expect("array")
        .push(rule.clone());
    Ok(rule)
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
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    let Some((kind, singular)) = kind_of(&collection) else {
        return fail(
            StatusCode::NOT_FOUND,
            "HTTPNotFound",
            "The resource could not be found.",
        );
    };
    let Some(changes) = body.and_then(|Json(body)| body.get(singular).and_then(Value::as_object).cloned()) else {
        return bad_request(format!("Resource body required with key '{singular}'"));
    };
    if let Some(field) = changes.keys().find(|key| !UPDATABLE.contains(&key.as_str())) {
        return bad_request(format!("Cannot update read-only attribute {field}"));
    }
    let mut world = cloud.world();
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
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    let Some((kind, singular)) = kind_of(&collection) else {
        return fail(
            StatusCode::NOT_FOUND,
            "HTTPNotFound",
            "The resource could not be found.",
        );
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
            if world
                .servers
                .values()
                .any(|server| server.deleted_at.is_none() && server.security_groups.iter().any(|g| g == name))
            {
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

async fn add_router_interface(
    State(cloud): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    let Some(subnet_id) = body
        .as_ref()
        .and_then(|Json(body)| body["subnet_id"].as_str())
        .map(str::to_owned)
    else {
        return bad_request("Either subnet_id or port_id must be specified");
    };
    let mut world = cloud.world();
    if !world.neutron("routers").contains_key(&id) {
        return not_found("router", &id);
    }
    let Some(subnet) = world.neutron("subnets").get(&subnet_id).cloned() else {
        return not_found("subnet", &subnet_id);
    };
    let attached = world.neutron("ports").values().any(|port| {
        port["device_id"] == id.as_str()
            && port["fixed_ips"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|ip| ip["subnet_id"] == subnet_id.as_str())
    });
    if attached {
        return bad_request(format!("Router already has a port on subnet {subnet_id}."));
    }
    let Some(gateway) = subnet["gateway_ip"].as_str().map(str::to_owned) else {
        return bad_request(format!(
            "Bad router request: Subnet {subnet_id} does not have a gateway IP."
        ));
    };
    let network_id = subnet["network_id"].as_str().unwrap_or_default().to_owned();
    let port_id = new_id();
    let now = timestamp(Utc::now());
    let port = json!({
        "id": port_id, "name": "", "network_id": network_id, "tenant_id": world.project_id, "project_id": world.project_id,
        "mac_address": world.next_mac(), "admin_state_up": true, "status": "ACTIVE", "device_id": id,
        "device_owner": "network:router_interface", "fixed_ips": [{"subnet_id": subnet_id, "ip_address": gateway}],
        "allowed_address_pairs": [], "extra_dhcp_opts": [], "security_groups": [], "description": "",
        "binding:vnic_type": "normal", "port_security_enabled": false, "tags": [], "created_at": now, "updated_at": now, "revision_number": 1
    });
    world.neutron_mut("ports").insert(port_id.clone(), port);
    Json(json!({"id": id, "project_id": world.project_id, "subnet_id": subnet_id,
                "subnet_ids": [subnet_id], "port_id": port_id, "network_id": network_id}))
    .into_response()
}

async fn remove_router_interface(
    State(cloud): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    // By subnet or by port, as Neutron takes either.
    let field = |name: &str| {
        body.as_ref()
            .and_then(|Json(body)| body[name].as_str())
            .map(str::to_owned)
    };
    let (subnet_wanted, port_wanted) = (field("subnet_id"), field("port_id"));
    if subnet_wanted.is_none() && port_wanted.is_none() {
        return bad_request("Either subnet_id or port_id must be specified");
    }
    let mut world = cloud.world();
    if !world.neutron("routers").contains_key(&id) {
        return not_found("router", &id);
    }
    let on_subnet = |port: &Value, subnet: &str| {
        port["fixed_ips"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|ip| ip["subnet_id"] == subnet)
    };
    let port = world
        .neutron("ports")
        .values()
        .find(|port| {
            port["device_id"] == id.as_str()
                && port_wanted.as_ref().is_none_or(|wanted| port["id"] == wanted.as_str())
                && subnet_wanted.as_ref().is_none_or(|wanted| on_subnet(port, wanted))
        })
        .cloned();
    let Some(port) = port else {
        return match (&subnet_wanted, &port_wanted) {
            (Some(subnet_id), _) => fail(
                StatusCode::NOT_FOUND,
                "RouterInterfaceNotFoundForSubnet",
                format!("Router {id} has no interface on subnet {subnet_id}"),
            ),
            (None, Some(port_id)) => fail(
                StatusCode::NOT_FOUND,
                "RouterInterfaceNotFound",
                format!("Router {id} does not have an interface with id {port_id}"),
            ),
            (None, None) => unreachable!("checked above"),
        };
    };
    let subnet_id = port["fixed_ips"][0]["subnet_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let port_id = port["id"].as_str().unwrap_or_default().to_owned();
    world.neutron_mut("ports").remove(&port_id);
    Json(json!({"id": id, "project_id": world.project_id, "subnet_id": subnet_id,
                "subnet_ids": [subnet_id], "port_id": port_id, "network_id": port["network_id"]}))
    .into_response()
}

fn with_tags(
    cloud: &Shared,
    collection: &str,
    id: &str,
    change: impl FnOnce(&mut Vec<Value>) -> Result<(), Response>,
) -> Result<Vec<Value>, Response> {
    let Some((kind, singular)) = kind_of(collection) else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "HTTPNotFound",
            "The resource could not be found.",
        ));
    };
    let mut world = cloud.world();
    let Some(resource) = world.neutron_mut(kind).get_mut(id) else {
        return Err(not_found(singular, id));
    };
    let mut tags = resource["tags"].as_array().cloned().unwrap_or_default();
    change(&mut tags)?;
    resource["tags"] = Value::Array(tags.clone());
    Ok(tags)
}

fn valid_tag(tag: &str) -> Result<(), Response> {
    if tag.is_empty() || tag.len() > 255 || tag.contains(',') {
        Err(bad_request(format!("'{tag}' is not a valid tag")))
    } else {
        Ok(())
    }
}

async fn show_tags(
    State(cloud): State<Shared>,
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    match with_tags(&cloud, &collection, &id, |_| Ok(())) {
        Ok(tags) => Json(json!({"tags": tags})).into_response(),
        Err(response) => response,
    }
}

async fn replace_tags(
    State(cloud): State<Shared>,
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    let Some(new_tags) = body.and_then(|Json(body)| body["tags"].as_array().cloned()) else {
        return bad_request("tags is required");
    };
    for tag in &new_tags {
        if let Err(response) = valid_tag(tag.as_str().unwrap_or_default()) {
            return response;
        }
    }
    match with_tags(&cloud, &collection, &id, |tags| {
        *tags = new_tags;
        Ok(())
    }) {
        Ok(tags) => Json(json!({"tags": tags})).into_response(),
        Err(response) => response,
    }
}

async fn clear_tags(
    State(cloud): State<Shared>,
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    match with_tags(&cloud, &collection, &id, |tags| {
        tags.clear();
        Ok(())
    }) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

async fn add_tag(
    State(cloud): State<Shared>,
    headers: HeaderMap,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    match with_tags(&cloud, &collection, &id, |tags| {
        valid_tag(&tag)?;
        if !tags.iter().any(|t| t == tag.as_str()) {
            tags.push(json!(tag));
        }
        Ok(())
    }) {
        Ok(_) => StatusCode::CREATED.into_response(),
        Err(response) => response,
    }
}

async fn remove_tag(
    State(cloud): State<Shared>,
    headers: HeaderMap,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    match with_tags(&cloud, &collection, &id, |tags| {
        let before = tags.len();
        tags.retain(|t| t != tag.as_str());
        if tags.len() == before {
            Err(fail(
                StatusCode::NOT_FOUND,
                "TagNotFound",
                format!("Tag {tag} could not be found."),
            ))
        } else {
            Ok(())
        }
    }) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

async fn check_tag(
    State(cloud): State<Shared>,
    headers: HeaderMap,
    Path((collection, id, tag)): Path<(String, String, String)>,
) -> Response {
    if let Err(response) = authorize(&cloud, "network", &headers) {
        return response;
    }
    match with_tags(&cloud, &collection, &id, |tags| {
        if tags.iter().any(|t| t == tag.as_str()) {
            Ok(())
        } else {
            Err(fail(
                StatusCode::NOT_FOUND,
                "TagNotFound",
                format!("Tag {tag} could not be found."),
            ))
        }
    }) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
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
