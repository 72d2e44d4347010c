//! Router interfaces: added by subnet (the router takes the subnet's gateway address) or by
//! port, removed by subnet or by port.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Value};

use super::{bad_request, fail, not_found};
use crate::world::{new_id, timestamp};
use crate::{service, Authorized, Shared};

pub(super) async fn add_router_interface(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
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

pub(super) async fn remove_router_interface(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Response {
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
