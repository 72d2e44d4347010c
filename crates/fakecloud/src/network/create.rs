//! Creating Neutron resources, one or in bulk (all or nothing), within quotas, as strictly
//! as Neutron reads them: overlapping subnets, gateways and pools outside the CIDR, duplicate
//! rules and tags in a create the cloud does not keep are refused as Neutron refuses them.

use std::net::IpAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use ipnet::IpNet;
use serde_json::{json, Map, Value};

use super::{bad_request, collection_named, fail, not_found};
use crate::config::TagsInCreate;
use crate::world::{default_pool, new_id, timestamp, World};
use crate::{create_delay, service, Authorized, Shared};

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

/// One resource under the singular key, or many under the plural key (Neutron's bulk
/// create, all or nothing). Returns the items and whether it was a bulk request.
fn read_items(body: Option<Value>, kind: &str, singular: &str) -> Result<(Vec<Map<String, Value>>, bool), Response> {
    let Some(Value::Object(mut body)) = body else {
        return Err(bad_request(format!("Resource body required with key '{singular}'")));
    };
    let items = match (body.remove(singular), body.remove(kind)) {
        (Some(Value::Object(item)), _) => (vec![item], false),
        (_, Some(Value::Array(items))) if !items.is_empty() && items.iter().all(Value::is_object) => (
            items.into_iter().filter_map(|item| item.as_object().cloned()).collect(),
            true,
        ),
        _ => {
            return Err(bad_request(format!(
                "Resource body required with key '{singular}' or '{kind}'"
            )))
        }
    };
    for item in &items.0 {
        check_tags(item)?;
    }
    Ok(items)
}

/// Neutron's 409 when `count` more of `kind` would pass the project's quota.
fn check_quota(cloud: &Shared, world: &World, kind: &str, count: usize) -> Result<(), Response> {
    let quotas = cloud.config().quotas;
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
    if used + count as u64 > quota {
        return Err(over_quota(quota_name));
    }
    Ok(())
}

/// Creates every item or, when one fails, none.
fn create_all(world: &mut World, kind: &str, items: &[Map<String, Value>]) -> Result<Vec<Value>, Response> {
    let mut created = Vec::new();
    for item in items {
        let result = match kind {
            "networks" => create_network(world, item),
            "subnets" => create_subnet(world, item),
            "routers" => create_router(world, item),
            "ports" => create_port(world, item),
            "security_groups" => create_security_group(world, item),
            _ => create_rule(world, item),
        };
        match result {
            Ok(resource) => created.push(resource),
            Err(response) => {
                for resource in &created {
                    world
                        .neutron_mut(kind)
                        .remove(resource["id"].as_str().unwrap_or_default());
                }
                return Err(response);
            }
        }
    }
    Ok(created)
}

pub(super) async fn create(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path(collection): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
    let (kind, singular) = match collection_named(&collection) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let mut items = match read_items(body.map(|Json(body)| body), kind, singular) {
        Ok((items, bulk)) => (items, bulk),
        Err(response) => return response,
    };
    if let Err(response) = apply_tag_policy(&cloud, kind, &mut items.0) {
        return response;
    }
    let (items, bulk) = items;
    let lose_response = create_delay(&cloud).await;
    let made = {
        let mut world = cloud.world();
        check_quota(&cloud, &world, kind, items.len()).and_then(|()| create_all(&mut world, kind, &items))
    };
    let mut created = match made {
        Ok(created) => created,
        Err(response) => return response,
    };
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

pub(super) fn create_network(world: &mut World, body: &Map<String, Value>) -> Result<Value, Response> {
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

pub(super) fn create_subnet(world: &mut World, body: &Map<String, Value>) -> Result<Value, Response> {
    let network_id = body
        .get("network_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("network_id is required"))?
        .to_owned();
    if !world.neutron("networks").contains_key(&network_id) {
        return Err(not_found("network", &network_id));
    }
    let (cidr, ip_version) = read_cidr(world, body, &network_id)?;
    let gateway = read_gateway(body, cidr)?;
    let pools = read_pools(body, cidr, gateway)?;
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
    add_subnet(world, &network_id, &subnet, enable_dhcp)?;
    Ok(subnet)
}

/// The subnet's CIDR (of the family `ip_version` says), which must not overlap another
/// subnet of the network.
fn read_cidr(world: &World, body: &Map<String, Value>, network_id: &str) -> Result<(IpNet, u64), Response> {
    let cidr_text = body
        .get("cidr")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("cidr is required"))?;
    let cidr: IpNet = cidr_text
        .parse()
        .map_err(|_| bad_request(format!("'{cidr_text}' is not a valid IP subnet.")))?;
    let cidr = cidr.trunc();
    let ip_version = body.get("ip_version").and_then(Value::as_u64).unwrap_or(4);
    if !matches!((ip_version, cidr), (4, IpNet::V4(_)) | (6, IpNet::V6(_))) {
        return Err(bad_request("Cidr and ip_version do not match."));
    }
    let overlaps = world
        .neutron("subnets")
        .values()
        .filter(|s| s["network_id"] == network_id)
        .map(|other| {
            other["cidr"]
                .as_str()
                .unwrap_or_default()
                .parse::<IpNet>()
                .expect("stored cidr")
        })
        .any(|other| other.contains(&cidr) || cidr.contains(&other));
    if overlaps {
        return Err(bad_request(format!(
            "Requested subnet with cidr: {cidr} for network: {network_id} overlaps with another subnet"
        )));
    }
    Ok((cidr, ip_version))
}

/// The gateway: as given (inside the CIDR), none when null, else the first host.
fn read_gateway(body: &Map<String, Value>, cidr: IpNet) -> Result<Option<IpAddr>, Response> {
    let gateway: Option<IpAddr> = match body.get("gateway_ip") {
        Some(Value::Null) => None,
        Some(Value::String(text)) => Some(
            text.parse()
                .map_err(|_| bad_request(format!("'{text}' is not a valid IP address")))?,
        ),
        _ => Some(crate::world::next_ip(cidr.network()).expect("hosts")),
    };
    if let Some(gateway) = gateway.filter(|gateway| !cidr.contains(gateway)) {
        return Err(bad_request(format!(
            "Gateway IP {gateway} conflicts with allocation pool or is outside {cidr}"
        )));
    }
    Ok(gateway)
}

/// The allocation pools: as given (inside the CIDR), else the CIDR's hosts but the gateway.
fn read_pools(body: &Map<String, Value>, cidr: IpNet, gateway: Option<IpAddr>) -> Result<Value, Response> {
    let Some(pools) = body
        .get("allocation_pools")
        .and_then(Value::as_array)
        .filter(|pools| !pools.is_empty())
    else {
        let (start, end) = default_pool(cidr, gateway);
        return Ok(json!([{"start": start.to_string(), "end": end.to_string()}]));
    };
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
    Ok(Value::Array(pools.clone()))
}

/// Stores the subnet, lists it on its network and, with DHCP, gives it the DHCP port that
/// takes the first free address, as on a real cloud.
fn add_subnet(world: &mut World, network_id: &str, subnet: &Value, enable_dhcp: bool) -> Result<(), Response> {
    let id = subnet["id"].as_str().expect("id").to_owned();
    world.neutron_mut("subnets").insert(id.clone(), subnet.clone());
    let network = world.neutron_mut("networks").get_mut(network_id).expect("checked");
    network["subnets"].as_array_mut().expect("array").push(json!(id));
    if enable_dhcp {
        world
            .create_port(network_id, &format!("dhcp-{network_id}"), "network:dhcp", "", Some(&id))
            .map_err(bad_request)?;
    }
    Ok(())
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

/// The port range: min at most max, and only with a protocol that has ports (or ICMP).
fn read_port_range(body: &Map<String, Value>, protocol: &Value) -> Result<(Value, Value), Response> {
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
    Ok((min, max))
}

/// The remote prefix, normalised to its network address as Neutron stores it.
fn read_remote_ip(body: &Map<String, Value>) -> Result<Value, Response> {
    match body.get("remote_ip_prefix").and_then(Value::as_str) {
        Some(text) => Ok(json!(text
            .parse::<IpNet>()
            .map_err(|_| bad_request(format!("'{text}' is not a valid IP subnet")))?
            .trunc()
            .to_string())),
        None => Ok(Value::Null),
    }
}

/// Stores the rule in its group, unless the group has one the same (Neutron's 409).
fn add_rule(world: &mut World, group_id: &str, rule: &Value) -> Result<(), Response> {
    let duplicate = world.neutron("security_group_rules").values().find(|existing| {
        existing["security_group_id"] == group_id && RULE_IDENTITY.iter().all(|key| existing[*key] == rule[*key])
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
    let group = world.neutron_mut("security_groups").get_mut(group_id).expect("checked");
    group["security_group_rules"]
        .as_array_mut()
        .expect("array")
        .push(rule.clone());
    Ok(())
}

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
    let (min, max) = read_port_range(body, &protocol)?;
    let remote_ip = read_remote_ip(body)?;
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
    add_rule(world, &group_id, &rule)?;
    Ok(rule)
}
