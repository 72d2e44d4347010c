//! Neutron v2.0: networks, subnets, routers and interfaces, ports, security groups and rules.
//! Creates carry their tags through [`crate::tagging`], which knows whether this cloud keeps
//! tags sent in a create or needs them put after it.

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{field, Call, OpenStack};
use crate::compute::ignore_not_found;
use crate::error::Service;
use crate::error::{CloudError, Result};

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    crate::client::decode(Service::Network, value)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Network {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(rename = "router:external", default)]
    pub external: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Subnet {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub network_id: String,
    pub cidr: String,
    #[serde(default)]
    pub gateway_ip: Option<String>,
    #[serde(default)]
    pub allocation_pools: Vec<Value>,
    #[serde(default)]
    pub dns_nameservers: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Router {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub external_gateway_info: Option<Value>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Port {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub network_id: String,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub device_owner: String,
    #[serde(default)]
    pub fixed_ips: Vec<Value>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SecurityGroup {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub security_group_rules: Vec<SecurityGroupRule>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct SecurityGroupRule {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub security_group_id: String,
    pub direction: String,
    #[serde(default)]
    pub ethertype: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port_range_min: Option<u32>,
    #[serde(default)]
    pub port_range_max: Option<u32>,
    #[serde(default)]
    pub remote_ip_prefix: Option<String>,
    #[serde(default)]
    pub remote_group_id: Option<String>,
}

impl SecurityGroupRule {
    /// The traffic the rule allows, as one line: what is recorded of the rules orch made and
    /// compared with what the cloud holds, for drift.
    pub fn signature(&self) -> String {
        let ports = |port: Option<u32>| port.map_or("*".to_owned(), |port| port.to_string());
        let remote = match (&self.remote_ip_prefix, &self.remote_group_id) {
            (Some(prefix), _) => prefix.clone(),
            (None, Some(group)) => format!("group:{group}"),
            (None, None) => "any".to_owned(),
        };
        format!(
            "{} {} {} {}-{} {remote}",
            self.direction,
            self.ethertype.as_deref().unwrap_or("IPv4"),
            self.protocol.as_deref().unwrap_or("any"),
            ports(self.port_range_min),
            ports(self.port_range_max),
        )
    }

    /// Whether two rules allow the same traffic (Neutron's duplicate check).
    pub fn same_as(&self, other: &SecurityGroupRule) -> bool {
        self.direction == other.direction
            && self.ethertype.as_deref().unwrap_or("IPv4") == other.ethertype.as_deref().unwrap_or("IPv4")
            && self.protocol == other.protocol
            && self.port_range_min == other.port_range_min
            && self.port_range_max == other.port_range_max
            && self.remote_ip_prefix == other.remote_ip_prefix
            && self.remote_group_id == other.remote_group_id
    }
}

/// A port to create in bulk.
#[derive(Debug, Clone, Default)]
pub struct PortCreate {
    pub name: String,
    pub network_id: String,
    pub subnet_id: Option<String>,
    pub security_group_ids: Vec<String>,
    pub tags: Vec<String>,
}

/// What finding a Neutron resource by its key needs: where it lives and its tags.
pub trait NeutronResource: serde::de::DeserializeOwned {
    /// The collection as in the URL, e.g. `security-groups`.
    const COLLECTION: &'static str;
    /// The key of a list's body, e.g. `security_groups`.
    const PLURAL: &'static str;
    /// The kind as [`crate::ManagedResource`] names it.
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn name(&self) -> &str;
    fn tags(&self) -> &[String];
    fn tags_mut(&mut self) -> &mut Vec<String>;
}

macro_rules! neutron_resource {
    ($type:ty, $collection:literal, $plural:literal, $kind:literal) => {
        impl NeutronResource for $type {
            const COLLECTION: &'static str = $collection;
            const PLURAL: &'static str = $plural;
            const KIND: &'static str = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn name(&self) -> &str {
                &self.name
            }
            fn tags(&self) -> &[String] {
                &self.tags
            }
            fn tags_mut(&mut self) -> &mut Vec<String> {
                &mut self.tags
            }
        }
    };
}

neutron_resource!(Network, "networks", "networks", "network");
neutron_resource!(Subnet, "subnets", "subnets", "subnet");
neutron_resource!(Router, "routers", "routers", "router");
neutron_resource!(Port, "ports", "ports", "port");
neutron_resource!(SecurityGroup, "security-groups", "security_groups", "security_group");

impl PortCreate {
    /// The create body, without tags (see [`crate::tagging`]).
    fn body(&self) -> Value {
        let mut body = json!({"name": self.name, "network_id": self.network_id});
        if let Some(subnet_id) = &self.subnet_id {
            body["fixed_ips"] = json!([{"subnet_id": subnet_id}]);
        }
        if !self.security_group_ids.is_empty() {
            body["security_groups"] = json!(self.security_group_ids);
        }
        body
    }
}

/// A subnet to create.
#[derive(Debug, Clone, Default)]
pub struct SubnetCreate {
    pub name: String,
    pub network_id: String,
    pub cidr: String,
    pub gateway_ip: Option<String>,
    pub dns_nameservers: Vec<String>,
    pub enable_dhcp: bool,
    pub tags: Vec<String>,
}

impl OpenStack {
    pub(crate) async fn neutron_create(&self, collection: &str, singular: &str, body: Value) -> Result<Value> {
        let path = format!("/{collection}");
        let reply = self
            .send(Call::new(Service::Network, Method::POST, &path).json(json!({ singular: body })))
            .await?;
        Ok(field(reply, singular))
    }

    pub(crate) async fn neutron_bulk_create(
        &self,
        collection: &str,
        plural: &str,
        items: Vec<Value>,
    ) -> Result<Vec<Value>> {
        let path = format!("/{collection}");
        let reply = self
            .send(Call::new(Service::Network, Method::POST, &path).json(json!({ plural: items })))
            .await?;
        decode(field(reply, plural))
    }

    /// Lists a collection with Neutron's filters, e.g. `[("tags", "a,b")]`.
    pub(crate) async fn neutron_list(
        &self,
        collection: &str,
        plural: &str,
        filters: &[(&'static str, String)],
    ) -> Result<Value> {
        let path = format!("/{collection}");
        let mut call = Call::new(Service::Network, Method::GET, &path);
        for (key, value) in filters {
            call = call.query(key, value.clone());
        }
        Ok(field(self.send(call).await?, plural))
    }

    /// Lists resources of one kind with Neutron's filters.
    pub async fn list_neutron<T: NeutronResource>(&self, filters: &[(&'static str, String)]) -> Result<Vec<T>> {
        decode(self.neutron_list(T::COLLECTION, T::PLURAL, filters).await?)
    }

    async fn neutron_delete(&self, collection: &str, id: &str) -> Result<()> {
        let path = format!("/{collection}/{id}");
        ignore_not_found(self.send(Call::new(Service::Network, Method::DELETE, &path)).await)
    }

    #[tracing::instrument(skip(self, tags))]
    pub async fn create_network(&self, name: &str, tags: &[String]) -> Result<Network> {
        decode(
            self.neutron_create_tagged(
                "networks",
                "network",
                json!({"name": name, "admin_state_up": true}),
                tags,
            )
            .await?,
        )
    }

    pub async fn get_network(&self, id: &str) -> Result<Network> {
        let path = format!("/networks/{id}");
        decode(field(
            self.send(Call::new(Service::Network, Method::GET, &path)).await?,
            "network",
        ))
    }

    pub async fn list_networks(&self, filters: &[(&'static str, String)]) -> Result<Vec<Network>> {
        decode(self.neutron_list("networks", "networks", filters).await?)
    }

    pub async fn delete_network(&self, id: &str) -> Result<()> {
        self.neutron_delete("networks", id).await
    }

    /// An external network by name or id, for a router's gateway.
    pub async fn find_external_network(&self, name_or_id: &str) -> Result<Network> {
        let networks = self.list_networks(&[("router:external", "true".into())]).await?;
        networks
            .into_iter()
            .find(|network| network.id == name_or_id || network.name == name_or_id)
            .ok_or_else(|| CloudError::NotFound {
                service: Service::Network,
                message: format!("no external network has the name or id '{name_or_id}'"),
            })
    }

    #[tracing::instrument(skip(self, request), fields(name = %request.name))]
    pub async fn create_subnet(&self, request: &SubnetCreate) -> Result<Subnet> {
        let version = if request.cidr.contains(':') { 6 } else { 4 };
        let mut body = json!({
            "name": request.name, "network_id": request.network_id, "cidr": request.cidr, "ip_version": version,
            "enable_dhcp": request.enable_dhcp, "dns_nameservers": request.dns_nameservers,
        });
        if let Some(gateway) = &request.gateway_ip {
            body["gateway_ip"] = json!(gateway);
        }
        decode(
            self.neutron_create_tagged("subnets", "subnet", body, &request.tags)
                .await?,
        )
    }

    pub async fn list_subnets(&self, filters: &[(&'static str, String)]) -> Result<Vec<Subnet>> {
        decode(self.neutron_list("subnets", "subnets", filters).await?)
    }

    pub async fn delete_subnet(&self, id: &str) -> Result<()> {
        self.neutron_delete("subnets", id).await
    }

    /// A router, with its gateway on `external_network_id` when given.
    #[tracing::instrument(skip(self, tags))]
    pub async fn create_router(
        &self,
        name: &str,
        external_network_id: Option<&str>,
        tags: &[String],
    ) -> Result<Router> {
        let mut body = json!({"name": name, "admin_state_up": true});
        if let Some(network_id) = external_network_id {
            body["external_gateway_info"] = json!({"network_id": network_id});
        }
        decode(self.neutron_create_tagged("routers", "router", body, tags).await?)
    }

    pub async fn list_routers(&self, filters: &[(&'static str, String)]) -> Result<Vec<Router>> {
        decode(self.neutron_list("routers", "routers", filters).await?)
    }

    pub async fn delete_router(&self, id: &str) -> Result<()> {
        self.neutron_delete("routers", id).await
    }

    /// Adds an interface on `subnet_id`; an interface that already exists is kept.
    #[tracing::instrument(skip(self))]
    pub async fn add_router_interface(&self, router_id: &str, subnet_id: &str) -> Result<()> {
        if self.router_interface(router_id, subnet_id).await?.is_some() {
            return Ok(());
        }
        let path = format!("/routers/{router_id}/add_router_interface");
        match self
            .send(Call::new(Service::Network, Method::PUT, &path).json(json!({"subnet_id": subnet_id})))
            .await
        {
            Ok(_) => Ok(()),
            // Another attempt got there first.
            Err(CloudError::BadRequest { message, .. }) if message.contains("already has a port") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The router's interface port on a subnet, if any.
    pub async fn router_interface(&self, router_id: &str, subnet_id: &str) -> Result<Option<Port>> {
        let ports = self
            .list_ports(&[
                ("device_id", router_id.to_owned()),
                ("device_owner", "network:router_interface".into()),
            ])
            .await?;
        Ok(ports
            .into_iter()
            .find(|port| port.fixed_ips.iter().any(|ip| ip["subnet_id"] == subnet_id)))
    }

    /// Removes the interface on `subnet_id`; a missing one counts as removed.
    #[tracing::instrument(skip(self))]
    pub async fn remove_router_interface(&self, router_id: &str, subnet_id: &str) -> Result<()> {
        let path = format!("/routers/{router_id}/remove_router_interface");
        ignore_not_found(
            self.send(Call::new(Service::Network, Method::PUT, &path).json(json!({"subnet_id": subnet_id})))
                .await,
        )
    }

    /// Replaces a port's security groups.
    #[tracing::instrument(skip(self))]
    pub async fn set_port_security_groups(&self, port_id: &str, groups: &[String]) -> Result<()> {
        let path = format!("/ports/{port_id}");
        let body = json!({"port": {"security_groups": groups}});
        self.send(Call::new(Service::Network, Method::PUT, &path).json(body))
            .await
            .map(|_| ())
    }

    /// Removes the router interface that is `port_id`; a missing one counts as removed.
    pub async fn remove_router_port(&self, router_id: &str, port_id: &str) -> Result<()> {
        let path = format!("/routers/{router_id}/remove_router_interface");
        ignore_not_found(
            self.send(Call::new(Service::Network, Method::PUT, &path).json(json!({"port_id": port_id})))
                .await,
        )
    }

    pub async fn list_ports(&self, filters: &[(&'static str, String)]) -> Result<Vec<Port>> {
        decode(self.neutron_list("ports", "ports", filters).await?)
    }

    /// A port on `network_id`, with its address from `subnet_id` when given, and the security
    /// groups (by id) that filter its traffic.
    #[tracing::instrument(skip(self, tags))]
    pub async fn create_port(
        &self,
        name: &str,
        network_id: &str,
        subnet_id: Option<&str>,
        security_group_ids: &[String],
        tags: &[String],
    ) -> Result<Port> {
        let port = PortCreate {
            name: name.to_owned(),
            network_id: network_id.to_owned(),
            subnet_id: subnet_id.map(str::to_owned),
            security_group_ids: security_group_ids.to_vec(),
            tags: tags.to_vec(),
        };
        decode(self.neutron_create_tagged("ports", "port", port.body(), tags).await?)
    }

    /// Many ports in one request (Neutron's bulk create: all or nothing).
    #[tracing::instrument(skip_all, fields(count = ports.len()))]
    pub async fn create_ports(&self, ports: &[PortCreate]) -> Result<Vec<Port>> {
        if ports.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<Value> = ports.iter().map(PortCreate::body).collect();
        let tags: Vec<Vec<String>> = ports.iter().map(|port| port.tags.clone()).collect();
        let created = self.neutron_bulk_create_tagged("ports", "ports", items, &tags).await?;
        decode(Value::Array(created))
    }

    pub async fn delete_port(&self, id: &str) -> Result<()> {
        self.neutron_delete("ports", id).await
    }

    #[tracing::instrument(skip(self, tags))]
    pub async fn create_security_group(&self, name: &str, description: &str, tags: &[String]) -> Result<SecurityGroup> {
        decode(
            self.neutron_create_tagged(
                "security-groups",
                "security_group",
                json!({"name": name, "description": description}),
                tags,
            )
            .await?,
        )
    }

    pub async fn list_security_groups(&self, filters: &[(&'static str, String)]) -> Result<Vec<SecurityGroup>> {
        decode(self.neutron_list("security-groups", "security_groups", filters).await?)
    }

    pub async fn delete_security_group(&self, id: &str) -> Result<()> {
        self.neutron_delete("security-groups", id).await
    }

    /// Deletes one rule. orch never does (a dropped group goes whole); its tests play someone
    /// who does.
    pub async fn delete_security_group_rule(&self, id: &str) -> Result<()> {
        self.neutron_delete("security-group-rules", id).await
    }

    /// Creates a rule unless an identical one exists (Neutron answers 409 for a duplicate,
    /// which here means the work is done).
    #[tracing::instrument(skip(self, rule))]
    pub async fn ensure_security_group_rule(&self, rule: &SecurityGroupRule) -> Result<SecurityGroupRule> {
        let existing: Vec<SecurityGroupRule> = decode(
            self.neutron_list(
                "security-group-rules",
                "security_group_rules",
                &[("security_group_id", rule.security_group_id.clone())],
            )
            .await?,
        )?;
        if let Some(found) = existing.into_iter().find(|existing| existing.same_as(rule)) {
            return Ok(found);
        }
        let body = json!({
            "security_group_id": rule.security_group_id, "direction": rule.direction,
            "ethertype": rule.ethertype.clone().unwrap_or_else(|| "IPv4".into()), "protocol": rule.protocol,
            "port_range_min": rule.port_range_min, "port_range_max": rule.port_range_max,
            "remote_ip_prefix": rule.remote_ip_prefix, "remote_group_id": rule.remote_group_id,
        });
        match self
            .neutron_create("security-group-rules", "security_group_rule", body)
            .await
        {
            Ok(created) => decode(created),
            Err(CloudError::Conflict { .. }) => {
                let existing: Vec<SecurityGroupRule> = decode(
                    self.neutron_list(
                        "security-group-rules",
                        "security_group_rules",
                        &[("security_group_id", rule.security_group_id.clone())],
                    )
                    .await?,
                )?;
                existing
                    .into_iter()
                    .find(|existing| existing.same_as(rule))
                    .ok_or_else(|| CloudError::Conflict {
                        service: Service::Network,
                        message: "rule conflicts but no identical rule exists".into(),
                    })
            }
            Err(error) => Err(error),
        }
    }
}
