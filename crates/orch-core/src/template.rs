//! The deployment template: seed 001's `DeploymentTemplate` (`vm_config` and `network_config`)
//! extended with what a user needs on a real cloud: subnets with gateway and DNS, a router,
//! security groups, volumes per server, key pairs, user data and per-group bounds.
//!
//! Templates are read from a `serde_json::Value` (YAML is converted first) by a strict reader
//! that reports every problem at once, each with a JSON pointer. The typed structs below only
//! serialize; a stored template is read back through the same parser.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::names::{check_key, check_name};
use crate::problem::{child, Problems};
use crate::reader::{self, Object};

/// Most servers one group may have.
pub const MAX_GROUP_COUNT: u32 = 1_000;
/// Most servers one deployment may have over all its groups.
pub const MAX_TOTAL_COUNT: u32 = 5_000;
/// Most volumes per server.
pub const MAX_VOLUMES_PER_SERVER: usize = 16;
/// Largest volume, in GiB.
pub const MAX_VOLUME_GB: u64 = 16_384;
/// Nova's limit for user data (before base64).
pub const MAX_USER_DATA_BYTES: usize = 48 * 1024;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 1_024;
/// Longest flavor, image, key pair or volume type name.
pub const MAX_REF_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Template {
    /// The template's name; for an inline template it defaults to the deployment's name.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Server groups by name.
    pub vm_config: BTreeMap<String, VmGroup>,
    pub network_config: NetworkConfig,
    /// Security groups by name, referenced from `vm_config.<group>.security_groups`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub security_groups: BTreeMap<String, SecurityGroup>,
    /// Default key pair for every group that does not name its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_pair: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct VmGroup {
    /// Flavor name or id.
    pub flavor: String,
    /// Image name or id.
    pub image: String,
    pub count: u32,
    /// Scaling never goes below this.
    #[serde(skip_serializing_if = "is_zero")]
    pub min_count: u32,
    /// Scaling never goes above this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    /// The subnet the group's servers attach to; defaults to the subnet named like the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// Volumes created and attached per server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_pair: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Extra server metadata; keys starting with `orch_` are reserved.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl VmGroup {
    /// The subnet this group attaches to.
    pub fn subnet_name<'a>(&'a self, group: &'a str) -> &'a str {
        self.subnet.as_deref().unwrap_or(group)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct VolumeSpec {
    pub size_gb: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NetworkConfig {
    #[schema(value_type = String, example = "10.0.0.0/16")]
    pub cidr: IpNet,
    /// Subnets by name: a CIDR string, or an object with `cidr`, `gateway_ip`,
    /// `dns_nameservers` and `enable_dhcp`.
    pub subnets: BTreeMap<String, SubnetSpec>,
    pub router: RouterSpec,
}

#[derive(Debug, Clone, PartialEq, ToSchema)]
pub struct SubnetSpec {
    #[schema(value_type = String, example = "10.0.1.0/24")]
    pub cidr: IpNet,
    #[schema(value_type = Option<String>)]
    pub gateway_ip: Option<IpAddr>,
    #[schema(value_type = Vec<String>)]
    pub dns_nameservers: Vec<IpAddr>,
    pub enable_dhcp: bool,
}

impl SubnetSpec {
    fn is_plain(&self) -> bool {
        self.gateway_ip.is_none() && self.dns_nameservers.is_empty() && self.enable_dhcp
    }

    /// Addresses a server can get: the prefix minus network, broadcast, gateway and DHCP port.
    pub fn usable_addresses(&self) -> u128 {
        let host_bits = u32::from(self.cidr.max_prefix_len() - self.cidr.prefix_len());
        let total = if host_bits >= 127 {
            u128::MAX
        } else {
            1u128 << host_bits
        };
        total.saturating_sub(4)
    }
}

// A subnet given as a bare CIDR is written back as one, so that a stored template reads the
// way its author wrote it.
impl Serialize for SubnetSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.is_plain() {
            return serializer.serialize_str(&self.cidr.to_string());
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("cidr", &self.cidr)?;
        if let Some(gateway) = &self.gateway_ip {
            map.serialize_entry("gateway_ip", gateway)?;
        }
        if !self.dns_nameservers.is_empty() {
            map.serialize_entry("dns_nameservers", &self.dns_nameservers)?;
        }
        map.serialize_entry("enable_dhcp", &self.enable_dhcp)?;
        map.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RouterSpec {
    /// Whether to create a router that joins the subnets (default true).
    pub enabled: bool,
    /// The external network for the router's gateway, by name or id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_network: Option<String>,
}

impl Default for RouterSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            external_network: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SecurityGroup {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub rules: Vec<SecurityRule>,
}

/// One rule, in Neutron's own field names.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SecurityRule {
    /// `ingress` or `egress`.
    pub direction: String,
    /// `tcp`, `udp`, `icmp` or absent for any protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range_min: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_range_max: Option<u32>,
    #[schema(value_type = Option<String>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ip_prefix: Option<IpNet>,
    /// Another security group of this template, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_group: Option<String>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl Template {
    /// Reads and validates a template document located at `pointer` in the request body.
    /// `default_name` is used when the document has no `name` (inline templates).
    pub fn parse(value: &Value, pointer: &str, default_name: Option<&str>) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let template = read_template(value, pointer, default_name, &mut problems);
        match template {
            Some(template) if problems.is_empty() => Ok(template),
            _ => Err(problems),
        }
    }

    /// Reads a template from YAML or JSON text (JSON is YAML, so one parser serves both).
    pub fn parse_text(text: &str) -> Result<Self, Problems> {
        let value: Value = serde_yaml_ng::from_str(text)
            .map_err(|error| Problems::single("", format!("is not valid YAML or JSON: {error}")))?;
        Self::parse(&value, "", None)
    }

    /// The document as JSON, in the same shape `parse` reads.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("a template always serializes")
    }

    /// Total servers over all groups.
    pub fn server_count(&self) -> u32 {
        self.vm_config.values().map(|group| group.count).sum()
    }
}

fn read_template(
    value: &Value,
    pointer: &str,
    default_name: Option<&str>,
    problems: &mut Problems,
) -> Option<Template> {
    let mut object = Object::new(value, pointer, problems)?;
    let name = match (object.optional("name"), default_name) {
        (Some(value), _) => read_name(value, &object.pointer_to("name"), problems),
        (None, Some(default)) => Some(default.to_owned()),
        (None, None) => {
            problems.push(object.pointer_to("name"), "is required");
            None
        }
    };
    let description = object
        .optional("description")
        .and_then(|value| reader::text(value, &object.pointer_to("description"), MAX_DESCRIPTION_LEN, problems));
    let key_pair = object
        .optional("key_pair")
        .and_then(|value| reader::text(value, &object.pointer_to("key_pair"), MAX_REF_LEN, problems));
    let security_groups = match object.optional("security_groups") {
        Some(value) => read_security_groups(value, &object.pointer_to("security_groups"), problems),
        None => Some(BTreeMap::new()),
    };
    let network_config = object
        .required("network_config", problems)
        .and_then(|value| read_network(value, &object.pointer_to("network_config"), problems));
    let vm_config = object
        .required("vm_config", problems)
        .and_then(|value| read_groups(value, &object.pointer_to("vm_config"), problems));
    let groups_pointer = object.pointer_to("vm_config");
    object.finish(problems);

    let template = Template {
        name: name?,
        description,
        vm_config: vm_config?,
        network_config: network_config?,
        security_groups: security_groups?,
        key_pair,
    };
    check_references(&template, pointer, problems);
    check_group_bounds(
        &template,
        pointer,
        |group| child(&child(&groups_pointer, group), "count"),
        problems,
    );
    Some(template)
}

fn read_name(value: &Value, pointer: &str, problems: &mut Problems) -> Option<String> {
    let name = reader::string(value, pointer, problems)?;
    match check_name(name) {
        Ok(()) => Some(name.to_owned()),
        Err(rule) => {
            problems.push(pointer, rule);
            None
        }
    }
}

fn read_key(key: &str, pointer: &str, problems: &mut Problems) -> bool {
    match check_key(key) {
        Ok(()) => true,
        Err(rule) => {
            problems.push(pointer, format!("name '{key}' {rule}"));
            false
        }
    }
}

fn read_groups(value: &Value, pointer: &str, problems: &mut Problems) -> Option<BTreeMap<String, VmGroup>> {
    let map = reader::object(value, pointer, problems)?;
    if map.is_empty() {
        problems.push(pointer, "must define at least one server group");
        return None;
    }
    let mut groups = BTreeMap::new();
    let mut complete = true;
    for (name, value) in map {
        let group_pointer = child(pointer, name);
        let key_ok = read_key(name, &group_pointer, problems);
        match read_group(value, &group_pointer, problems) {
            Some(group) if key_ok => {
                groups.insert(name.clone(), group);
            }
            _ => complete = false,
        }
    }
    complete.then_some(groups)
}

fn read_group(value: &Value, pointer: &str, problems: &mut Problems) -> Option<VmGroup> {
    let mut object = Object::new(value, pointer, problems)?;
    let text_field = |object: &mut Object, key: &'static str, problems: &mut Problems| {
        object
            .optional(key)
            .and_then(|value| reader::text(value, &object.pointer_to(key), MAX_REF_LEN, problems))
    };
    let flavor = object
        .required("flavor", problems)
        .and_then(|value| reader::text(value, &object.pointer_to("flavor"), MAX_REF_LEN, problems));
    let image = object
        .required("image", problems)
        .and_then(|value| reader::text(value, &object.pointer_to("image"), MAX_REF_LEN, problems));
    let count = object
        .required("count", problems)
        .and_then(|value| reader::integer(value, &object.pointer_to("count"), 0, MAX_GROUP_COUNT.into(), problems));
    let min_count = match object.optional("min_count") {
        Some(value) => reader::integer(
            value,
            &object.pointer_to("min_count"),
            0,
            MAX_GROUP_COUNT.into(),
            problems,
        ),
        None => Some(0),
    };
    let max_count = object.optional("max_count").map(|value| {
        reader::integer(
            value,
            &object.pointer_to("max_count"),
            0,
            MAX_GROUP_COUNT.into(),
            problems,
        )
    });
    let subnet = object.optional("subnet").and_then(|value| {
        let pointer = object.pointer_to("subnet");
        reader::string(value, &pointer, problems)
            .filter(|name| read_key(name, &pointer, problems))
            .map(str::to_owned)
    });
    let security_groups = match object.optional("security_groups") {
        Some(value) => read_names(value, &object.pointer_to("security_groups"), problems),
        None => Some(Vec::new()),
    };
    let volumes = match object.optional("volumes") {
        Some(value) => read_volumes(value, &object.pointer_to("volumes"), problems),
        None => Some(Vec::new()),
    };
    let key_pair = text_field(&mut object, "key_pair", problems);
    let user_data = object.optional("user_data").and_then(|value| {
        let pointer = object.pointer_to("user_data");
        let data = reader::string(value, &pointer, problems)?;
        if data.len() > MAX_USER_DATA_BYTES {
            problems.push(pointer, format!("must be at most {MAX_USER_DATA_BYTES} bytes"));
            None
        } else {
            Some(data.to_owned())
        }
    });
    let metadata = match object.optional("metadata") {
        Some(value) => read_metadata(value, &object.pointer_to("metadata"), problems),
        None => Some(BTreeMap::new()),
    };
    object.finish(problems);
    Some(VmGroup {
        flavor: flavor?,
        image: image?,
        count: count?,
        min_count: min_count?,
        max_count: max_count.map(|max| max.ok_or(())).transpose().ok()?,
        subnet,
        security_groups: security_groups?,
        volumes: volumes?,
        key_pair,
        user_data,
        metadata: metadata?,
    })
}

fn read_names(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<String>> {
    let items = reader::array(value, pointer, problems)?;
    let mut names = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_pointer = child(pointer, &index.to_string());
        if let Some(name) = reader::string(item, &item_pointer, problems) {
            if names.iter().any(|known| known == name) {
                problems.push(item_pointer, format!("'{name}' is listed twice"));
            } else if read_key(name, &item_pointer, problems) {
                names.push(name.to_owned());
            }
        }
    }
    Some(names)
}

fn read_volumes(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<VolumeSpec>> {
    let items = reader::array(value, pointer, problems)?;
    if items.len() > MAX_VOLUMES_PER_SERVER {
        problems.push(pointer, format!("must list at most {MAX_VOLUMES_PER_SERVER} volumes"));
    }
    let mut volumes = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_pointer = child(pointer, &index.to_string());
        let Some(mut object) = Object::new(item, &item_pointer, problems) else {
            continue;
        };
        let size_gb = object
            .required("size_gb", problems)
            .and_then(|value| reader::integer(value, &object.pointer_to("size_gb"), 1, MAX_VOLUME_GB, problems));
        let volume_type = object
            .optional("volume_type")
            .and_then(|value| reader::text(value, &object.pointer_to("volume_type"), MAX_REF_LEN, problems));
        object.finish(problems);
        if let Some(size_gb) = size_gb {
            volumes.push(VolumeSpec { size_gb, volume_type });
        }
    }
    Some(volumes)
}

fn read_metadata(value: &Value, pointer: &str, problems: &mut Problems) -> Option<BTreeMap<String, String>> {
    let map = reader::object(value, pointer, problems)?;
    let mut metadata = BTreeMap::new();
    for (key, value) in map {
        let item_pointer = child(pointer, key);
        if key.is_empty() || key.len() > 255 {
            problems.push(&item_pointer, "keys must be 1 to 255 characters");
        } else if key.starts_with("orch_") {
            problems.push(&item_pointer, "keys starting with 'orch_' are reserved for orch");
        } else if let Some(text) = reader::string(value, &item_pointer, problems) {
            if text.len() > 255 {
                problems.push(&item_pointer, "values must be at most 255 characters");
            } else {
                metadata.insert(key.clone(), text.to_owned());
            }
        }
    }
    Some(metadata)
}

fn read_cidr(value: &Value, pointer: &str, problems: &mut Problems) -> Option<IpNet> {
    let text = reader::string(value, pointer, problems)?;
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Some(net),
        Ok(net) => {
            problems.push(pointer, format!("has host bits set; the network is {}", net.trunc()));
            None
        }
        Err(_) => {
            problems.push(pointer, format!("'{text}' is not a CIDR such as 10.0.0.0/16"));
            None
        }
    }
}

fn read_ip(value: &Value, pointer: &str, problems: &mut Problems) -> Option<IpAddr> {
    let text = reader::string(value, pointer, problems)?;
    match text.parse() {
        Ok(address) => Some(address),
        Err(_) => {
            problems.push(pointer, format!("'{text}' is not an IP address"));
            None
        }
    }
}

fn read_network(value: &Value, pointer: &str, problems: &mut Problems) -> Option<NetworkConfig> {
    let mut object = Object::new(value, pointer, problems)?;
    let cidr = object
        .required("cidr", problems)
        .and_then(|value| read_cidr(value, &object.pointer_to("cidr"), problems));
    let subnets_pointer = object.pointer_to("subnets");
    let subnets = object
        .required("subnets", problems)
        .and_then(|value| read_subnets(value, &subnets_pointer, problems));
    let router = match object.optional("router") {
        Some(value) => read_router(value, &object.pointer_to("router"), problems),
        None => Some(RouterSpec::default()),
    };
    object.finish(problems);
    let (cidr, subnets) = (cidr?, subnets?);
    check_subnet_layout(cidr, &subnets, &subnets_pointer, problems);
    Some(NetworkConfig {
        cidr,
        subnets,
        router: router?,
    })
}

fn read_subnets(value: &Value, pointer: &str, problems: &mut Problems) -> Option<BTreeMap<String, SubnetSpec>> {
    let map = reader::object(value, pointer, problems)?;
    if map.is_empty() {
        problems.push(pointer, "must define at least one subnet");
        return None;
    }
    let mut subnets = BTreeMap::new();
    let mut complete = true;
    for (name, value) in map {
        let subnet_pointer = child(pointer, name);
        let key_ok = read_key(name, &subnet_pointer, problems);
        match read_subnet(value, &subnet_pointer, problems) {
            Some(subnet) if key_ok => {
                subnets.insert(name.clone(), subnet);
            }
            _ => complete = false,
        }
    }
    complete.then_some(subnets)
}

fn read_subnet(value: &Value, pointer: &str, problems: &mut Problems) -> Option<SubnetSpec> {
    if value.is_string() {
        return read_cidr(value, pointer, problems).map(|cidr| SubnetSpec {
            cidr,
            gateway_ip: None,
            dns_nameservers: Vec::new(),
            enable_dhcp: true,
        });
    }
    let mut object = Object::new(value, pointer, problems)?;
    let cidr = object
        .required("cidr", problems)
        .and_then(|value| read_cidr(value, &object.pointer_to("cidr"), problems));
    let gateway_pointer = object.pointer_to("gateway_ip");
    let gateway_ip = object
        .optional("gateway_ip")
        .and_then(|value| read_ip(value, &gateway_pointer, problems));
    let dns_nameservers = match object.optional("dns_nameservers") {
        Some(value) => {
            let dns_pointer = object.pointer_to("dns_nameservers");
            reader::array(value, &dns_pointer, problems).map(|items| {
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(index, item)| read_ip(item, &child(&dns_pointer, &index.to_string()), problems))
                    .collect()
            })
        }
        None => Some(Vec::new()),
    };
    let enable_dhcp = match object.optional("enable_dhcp") {
        Some(value) => reader::boolean(value, &object.pointer_to("enable_dhcp"), problems),
        None => Some(true),
    };
    object.finish(problems);
    let cidr = cidr?;
    if let Some(gateway) = gateway_ip {
        if !cidr.contains(&gateway) || gateway == cidr.network() || Some(gateway) == broadcast(cidr) {
            problems.push(gateway_pointer, format!("must be a host address inside {cidr}"));
        }
    }
    Some(SubnetSpec {
        cidr,
        gateway_ip,
        dns_nameservers: dns_nameservers?,
        enable_dhcp: enable_dhcp?,
    })
}

fn broadcast(cidr: IpNet) -> Option<IpAddr> {
    match cidr {
        IpNet::V4(net) => Some(IpAddr::V4(net.broadcast())),
        IpNet::V6(_) => None,
    }
}

fn read_router(value: &Value, pointer: &str, problems: &mut Problems) -> Option<RouterSpec> {
    if let Value::Bool(enabled) = value {
        return Some(RouterSpec {
            enabled: *enabled,
            external_network: None,
        });
    }
    let mut object = Object::new(value, pointer, problems)?;
    let enabled = match object.optional("enabled") {
        Some(value) => reader::boolean(value, &object.pointer_to("enabled"), problems),
        None => Some(true),
    };
    let external_network = object
        .optional("external_network")
        .and_then(|value| reader::text(value, &object.pointer_to("external_network"), MAX_REF_LEN, problems));
    object.finish(problems);
    Some(RouterSpec {
        enabled: enabled?,
        external_network,
    })
}

/// Every subnet lies inside the network, in the same address family, and no two overlap.
fn check_subnet_layout(network: IpNet, subnets: &BTreeMap<String, SubnetSpec>, pointer: &str, problems: &mut Problems) {
    let mut checked: Vec<(&str, IpNet)> = Vec::new();
    for (name, subnet) in subnets {
        let subnet_pointer = child(pointer, name);
        if !network.contains(&subnet.cidr) {
            problems.push(
                &subnet_pointer,
                format!("{} is not inside the network {network}", subnet.cidr),
            );
        }
        let usable_prefix = if subnet.cidr.max_prefix_len() == 32 { 29 } else { 125 };
        if subnet.cidr.prefix_len() > usable_prefix {
            problems.push(
                &subnet_pointer,
                format!(
                    "{} is too small; use a prefix of /{usable_prefix} or shorter",
                    subnet.cidr
                ),
            );
        }
        for (other_name, other) in &checked {
            if other.contains(&subnet.cidr) || subnet.cidr.contains(other) {
                problems.push(
                    &subnet_pointer,
                    format!("{} overlaps subnet '{other_name}' ({other})", subnet.cidr),
                );
            }
        }
        checked.push((name, subnet.cidr));
    }
}

fn read_security_groups(
    value: &Value,
    pointer: &str,
    problems: &mut Problems,
) -> Option<BTreeMap<String, SecurityGroup>> {
    let map = reader::object(value, pointer, problems)?;
    let mut groups = BTreeMap::new();
    let mut complete = true;
    for (name, value) in map {
        let group_pointer = child(pointer, name);
        let key_ok = read_key(name, &group_pointer, problems);
        match read_security_group(value, &group_pointer, problems) {
            Some(group) if key_ok => {
                groups.insert(name.clone(), group);
            }
            _ => complete = false,
        }
    }
    complete.then_some(groups)
}

fn read_security_group(value: &Value, pointer: &str, problems: &mut Problems) -> Option<SecurityGroup> {
    let mut object = Object::new(value, pointer, problems)?;
    let description = object
        .optional("description")
        .and_then(|value| reader::text(value, &object.pointer_to("description"), MAX_DESCRIPTION_LEN, problems));
    let rules_pointer = object.pointer_to("rules");
    let rules = match object.optional("rules") {
        Some(value) => reader::array(value, &rules_pointer, problems).map(|items| {
            items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| read_rule(item, &child(&rules_pointer, &index.to_string()), problems))
                .collect()
        }),
        None => Some(Vec::new()),
    };
    object.finish(problems);
    Some(SecurityGroup {
        description,
        rules: rules?,
    })
}

fn read_rule(value: &Value, pointer: &str, problems: &mut Problems) -> Option<SecurityRule> {
    let mut object = Object::new(value, pointer, problems)?;
    let direction = match object.optional("direction") {
        Some(value) => {
            let pointer = object.pointer_to("direction");
            reader::string(value, &pointer, problems).and_then(|direction| {
                if matches!(direction, "ingress" | "egress") {
                    Some(direction.to_owned())
                } else {
                    problems.push(pointer, "must be 'ingress' or 'egress'");
                    None
                }
            })
        }
        None => Some("ingress".to_owned()),
    };
    let protocol_pointer = object.pointer_to("protocol");
    let protocol = object.optional("protocol").and_then(|value| {
        reader::string(value, &protocol_pointer, problems).and_then(|protocol| {
            if matches!(protocol, "tcp" | "udp" | "icmp") {
                Some(protocol.to_owned())
            } else {
                problems.push(
                    &protocol_pointer,
                    "must be 'tcp', 'udp' or 'icmp' (omit it for any protocol)",
                );
                None
            }
        })
    });
    let port = |object: &mut Object, key: &'static str, problems: &mut Problems| {
        object
            .optional(key)
            .and_then(|value| reader::integer(value, &object.pointer_to(key), 1, 65_535, problems))
    };
    let port_range_min = port(&mut object, "port_range_min", problems);
    let port_range_max = port(&mut object, "port_range_max", problems);
    let remote_ip_prefix = object
        .optional("remote_ip_prefix")
        .and_then(|value| read_cidr(value, &object.pointer_to("remote_ip_prefix"), problems));
    let remote_group = object
        .optional("remote_group")
        .and_then(|value| reader::string(value, &object.pointer_to("remote_group"), problems).map(str::to_owned));
    let max_pointer = object.pointer_to("port_range_max");
    object.finish(problems);
    if let (Some(min), Some(max)) = (port_range_min, port_range_max) {
        if min > max {
            problems.push(&max_pointer, "must not be below port_range_min");
        }
    }
    if (port_range_min.is_some() || port_range_max.is_some()) && !matches!(protocol.as_deref(), Some("tcp" | "udp")) {
        problems.push(&protocol_pointer, "ports need protocol 'tcp' or 'udp'");
    }
    if remote_ip_prefix.is_some() && remote_group.is_some() {
        problems.push(pointer, "give remote_ip_prefix or remote_group, not both");
    }
    Some(SecurityRule {
        direction: direction?,
        protocol,
        port_range_min,
        port_range_max,
        remote_ip_prefix,
        remote_group,
    })
}

/// Every group's subnet and security groups exist; rules name only known groups.
fn check_references(template: &Template, template_pointer: &str, problems: &mut Problems) {
    let groups_pointer = &child(template_pointer, "vm_config");
    for (name, group) in &template.vm_config {
        let group_pointer = child(groups_pointer, name);
        let subnet = group.subnet_name(name);
        if !template.network_config.subnets.contains_key(subnet) {
            let pointer = if group.subnet.is_some() {
                child(&group_pointer, "subnet")
            } else {
                group_pointer.clone()
            };
            problems.push(
                pointer,
                format!(
                    "group '{name}' needs a subnet: network_config.subnets has no '{subnet}'; add it or set 'subnet'"
                ),
            );
        }
        for (index, security_group) in group.security_groups.iter().enumerate() {
            if !template.security_groups.contains_key(security_group) {
                problems.push(
                    child(&child(&group_pointer, "security_groups"), &index.to_string()),
                    format!("security group '{security_group}' is not defined in security_groups"),
                );
            }
        }
    }
    for (name, group) in &template.security_groups {
        for (index, rule) in group.rules.iter().enumerate() {
            if let Some(remote) = &rule.remote_group {
                if !template.security_groups.contains_key(remote) {
                    problems.push(
                        format!("{template_pointer}/security_groups/{name}/rules/{index}/remote_group"),
                        format!("security group '{remote}' is not defined in security_groups"),
                    );
                }
            }
        }
    }
}

/// Counts respect `min_count`/`max_count`, the total bound, and every subnet can address the
/// servers placed on it. `count_pointer` says where a group's count came from (the template or
/// a parameter), so the error points at what the user has to change.
pub(crate) fn check_group_bounds(
    template: &Template,
    template_pointer: &str,
    count_pointer: impl Fn(&str) -> String,
    problems: &mut Problems,
) {
    let groups_pointer = &child(template_pointer, "vm_config");
    for (name, group) in &template.vm_config {
        let group_pointer = child(groups_pointer, name);
        if group.count < group.min_count {
            problems.push(
                count_pointer(name),
                format!("{} is below min_count {}", group.count, group.min_count),
            );
        }
        if let Some(max) = group.max_count {
            if max < group.min_count {
                problems.push(
                    child(&group_pointer, "max_count"),
                    format!("{max} is below min_count {}", group.min_count),
                );
            } else if group.count > max {
                problems.push(count_pointer(name), format!("{} is above max_count {max}", group.count));
            }
        }
    }
    let total = template.server_count();
    if total > MAX_TOTAL_COUNT {
        problems.push(
            groups_pointer,
            format!("{total} servers in all; at most {MAX_TOTAL_COUNT} are allowed"),
        );
    }
    for (subnet_name, subnet) in &template.network_config.subnets {
        let servers: u128 = template
            .vm_config
            .iter()
            .filter(|(name, group)| group.subnet_name(name) == subnet_name)
            .map(|(_, group)| u128::from(group.count))
            .sum();
        if servers > subnet.usable_addresses() {
            problems.push(
                format!("{template_pointer}/network_config/subnets/{subnet_name}"),
                format!(
                    "{} has room for {} servers, but {servers} are placed on it",
                    subnet.cidr,
                    subnet.usable_addresses()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn web_app_stack() -> Value {
        json!({
          "name": "web-app-stack",
          "description": "3-tier web application",
          "vm_config": {
            "web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 2},
            "app": {"flavor": "m1.medium", "image": "ubuntu-22.04", "count": 3},
            "db": {"flavor": "m1.large", "image": "ubuntu-22.04", "count": 1}
          },
          "network_config": {
            "cidr": "10.0.0.0/16",
            "subnets": {"web": "10.0.1.0/24", "app": "10.0.2.0/24", "db": "10.0.3.0/24"}
          }
        })
    }

    fn pointers(problems: &Problems) -> Vec<&str> {
        problems.0.iter().map(|p| p.pointer.as_str()).collect()
    }

    #[test]
    fn seed_example_is_accepted_as_written_and_round_trips() {
        let template = Template::parse(&web_app_stack(), "", None).unwrap();
        assert_eq!(template.server_count(), 6);
        assert_eq!(template.vm_config["app"].count, 3);
        assert!(template.network_config.router.enabled);
        let mut expected = web_app_stack();
        expected["network_config"]["router"] = json!({"enabled": true});
        assert_eq!(template.to_value(), expected);
        assert_eq!(Template::parse(&template.to_value(), "", None).unwrap(), template);
    }

    #[test]
    fn yaml_is_read_like_json() {
        let yaml = "name: y\nvm_config:\n  web: {flavor: m1.small, image: cirros, count: 1}\nnetwork_config:\n  cidr: 10.1.0.0/16\n  subnets: {web: 10.1.1.0/24}\n";
        let template = Template::parse_text(yaml).unwrap();
        assert_eq!(template.vm_config["web"].image, "cirros");
    }

    #[test]
    fn every_problem_is_reported_with_its_pointer() {
        let value = json!({
          "name": "bad name!",
          "vm_config": {
            "web": {"flavor": "", "image": "u", "count": -1, "colour": "red"},
            "db": {"flavor": "f", "image": "u", "count": 1.5}
          },
          "network_config": {
            "cidr": "10.0.0.1/16",
            "subnets": {"web": "10.1.0.0/24", "db": "nonsense"}
          }
        });
        let problems = Template::parse(&value, "/template", None).unwrap_err();
        let found = pointers(&problems);
        for expected in [
            "/template/name",
            "/template/vm_config/web/flavor",
            "/template/vm_config/web/count",
            "/template/vm_config/web/colour",
            "/template/vm_config/db/count",
            "/template/network_config/cidr",
            "/template/network_config/subnets/db",
        ] {
            assert!(found.contains(&expected), "missing {expected} in {found:?}");
        }
    }

    #[test]
    fn subnets_must_fit_inside_the_network_without_overlap() {
        let mut value = web_app_stack();
        value["network_config"]["subnets"] =
            json!({"web": "10.0.1.0/24", "app": "10.0.1.128/25", "db": "192.168.0.0/24"});
        let problems = Template::parse(&value, "", None).unwrap_err();
        let details: Vec<String> = problems
            .0
            .iter()
            .map(|p| format!("{} {}", p.pointer, p.detail))
            .collect();
        assert!(
            details
                .iter()
                .any(|d| d.starts_with("/network_config/subnets/db") && d.contains("not inside")),
            "{details:?}"
        );
        assert!(details.iter().any(|d| d.contains("overlaps")), "{details:?}");
    }

    #[test]
    fn groups_need_a_subnet_and_known_security_groups() {
        let mut value = web_app_stack();
        value["vm_config"]["cache"] =
            json!({"flavor": "m1.tiny", "image": "cirros", "count": 1, "security_groups": ["nope"]});
        let problems = Template::parse(&value, "", None).unwrap_err();
        let found = pointers(&problems);
        assert!(found.contains(&"/vm_config/cache"), "{found:?}");
        assert!(found.contains(&"/vm_config/cache/security_groups/0"), "{found:?}");
    }

    #[test]
    fn extensions_are_read() {
        let mut value = web_app_stack();
        value["key_pair"] = json!("ops");
        value["security_groups"] = json!({"web": {"rules": [{"protocol": "tcp", "port_range_min": 80, "port_range_max": 443, "remote_ip_prefix": "0.0.0.0/0"}]}});
        value["vm_config"]["web"]["security_groups"] = json!(["web"]);
        value["vm_config"]["web"]["volumes"] = json!([{"size_gb": 10}]);
        value["vm_config"]["web"]["min_count"] = json!(1);
        value["network_config"]["subnets"]["web"] =
            json!({"cidr": "10.0.1.0/24", "gateway_ip": "10.0.1.1", "dns_nameservers": ["8.8.8.8"]});
        let template = Template::parse(&value, "", None).unwrap();
        assert_eq!(template.security_groups["web"].rules[0].port_range_max, Some(443));
        assert_eq!(template.vm_config["web"].volumes[0].size_gb, 10);
        assert_eq!(Template::parse(&template.to_value(), "", None).unwrap(), template);
    }

    #[test]
    fn bounds_and_capacity_are_checked() {
        let mut value = web_app_stack();
        value["vm_config"]["web"]["min_count"] = json!(3);
        value["vm_config"]["db"]["count"] = json!(300);
        let problems = Template::parse(&value, "", None).unwrap_err();
        let found = pointers(&problems);
        assert!(found.contains(&"/vm_config/web/count"), "{found:?}");
        assert!(found.contains(&"/network_config/subnets/db"), "{found:?}");
    }

    #[test]
    fn rule_ports_need_tcp_or_udp() {
        let mut value = web_app_stack();
        value["security_groups"] = json!({"s": {"rules": [{"port_range_min": 80, "direction": "sideways"}]}});
        let problems = Template::parse(&value, "", None).unwrap_err();
        let found = pointers(&problems);
        assert!(found.contains(&"/security_groups/s/rules/0/protocol"), "{found:?}");
        assert!(found.contains(&"/security_groups/s/rules/0/direction"), "{found:?}");
    }
}
