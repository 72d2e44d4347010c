//! The deployment template: the API's `vm_config` and `network_config`, extended with what a user needs on a real cloud: subnets with gateway and DNS, a router,
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

mod network;
pub mod payload;
pub mod render;
mod security;
mod servers;
pub mod services;
mod topology;

use network::read_network;
pub use payload::{SecretMount, SecretSpec, ServiceFile};
use security::read_security_groups;
use servers::read_groups;
pub use services::{
    ClassNetwork, Condition, Dependency, HealthCheck, Probe, Protocol, Resources, Service, ServiceClass, ServicePort,
    ServiceVolume,
};

/// Most servers one group may have.
pub const MAX_GROUP_COUNT: u32 = 1_000;
/// Most servers one deployment may have over all its groups.
pub const MAX_TOTAL_COUNT: u32 = 5_000;
/// Most volumes per server.
pub const MAX_VOLUMES_PER_SERVER: usize = 16;
/// The most DNS servers a subnet has (Neutron's default `max_dns_nameservers`).
pub const MAX_DNS_NAMESERVERS: usize = 5;
/// Largest volume, in GiB.
pub const MAX_VOLUME_GB: u64 = 16_384;
/// Nova's limit for user data (before base64).
pub const MAX_USER_DATA_BYTES: usize = 48 * 1024;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 1_024;
/// Longest flavor, image, key pair or volume type name.
pub const MAX_REF_LEN: usize = 255;
/// The most server groups, subnets or security groups a template defines.
pub const MAX_NAMED: usize = 100;
/// The most security groups one server group lists.
pub const MAX_GROUPS_PER_SERVER: usize = 32;
/// The most metadata items a server has (Nova's default quota is 128).
pub const MAX_METADATA_ITEMS: usize = 128;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Template {
    /// The template's name; for an inline template it defaults to the deployment's name.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub description: Option<String>,
    /// Server groups by name; a template of services alone has none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub vm_config: BTreeMap<String, VmGroup>,
    /// The cloud network; required with `vm_config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_config: Option<NetworkConfig>,
    /// Security groups by name, referenced from `vm_config.<group>.security_groups`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub security_groups: BTreeMap<String, SecurityGroup>,
    /// Default key pair for every group that does not name its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub key_pair: Option<String>,
    /// Containerised services by name, run on the deployment's container host.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, Service>,
    /// Per-class settings of the services' networks.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<ServiceClass, ClassNetwork>,
    /// The deployment's secrets by name: generated, or supplied when it is made.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, SecretSpec>,
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

    /// Whether the template asks for anything on a cloud (servers or a network).
    pub fn uses_cloud(&self) -> bool {
        !self.vm_config.is_empty() || self.network_config.is_some()
    }

    /// Whether the template asks for containers.
    pub fn uses_containers(&self) -> bool {
        !self.services.is_empty()
    }

    /// The cloud network's subnets (none without a network).
    pub fn subnets(&self) -> impl Iterator<Item = (&String, &SubnetSpec)> {
        self.network_config.iter().flat_map(|network| network.subnets.iter())
    }

    /// Whether a router joins the subnets.
    pub fn wants_router(&self) -> bool {
        self.network_config
            .as_ref()
            .is_some_and(|network| network.router.enabled)
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
    let services = match object.optional("services") {
        Some(value) => services::read_services(value, &object.pointer_to("services"), problems),
        None => Some(BTreeMap::new()),
    };
    let networks = match object.optional("networks") {
        Some(value) => services::read_class_networks(value, &object.pointer_to("networks"), problems),
        None => Some(BTreeMap::new()),
    };
    let secrets = match object.optional("secrets") {
        Some(value) => payload::read_secret_specs(value, &object.pointer_to("secrets"), problems),
        None => Some(BTreeMap::new()),
    };
    // A template of services alone needs no cloud; one with servers needs both parts.
    let cloud_required = !object.has("services") || object.has("vm_config");
    let network_config = match cloud_required {
        true => object.required("network_config", problems),
        false => object.optional("network_config"),
    }
    .map(|value| read_network(value, &object.pointer_to("network_config"), problems));
    let vm_config = match cloud_required {
        true => object.required("vm_config", problems),
        false => object.optional("vm_config"),
    }
    .map(|value| read_groups(value, &object.pointer_to("vm_config"), problems));
    let groups_pointer = object.pointer_to("vm_config");
    let services_pointer = object.pointer_to("services");
    object.finish(problems);

    let mut template = Template {
        name: name?,
        description,
        vm_config: vm_config.unwrap_or(Some(BTreeMap::new()))?,
        network_config: match network_config {
            Some(network) => Some(network?),
            None => None,
        },
        security_groups: security_groups?,
        key_pair,
        services: services?,
        networks: networks?,
        secrets: secrets?,
    };
    payload::declare_catalog_secrets(&template.services, &mut template.secrets);
    services::check_services(&template.services, &template.networks, &services_pointer, problems);
    payload::check_secret_references(&template.services, &template.secrets, &services_pointer, problems);
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

/// A map of named items (server groups, subnets, security groups): each name a valid key,
/// each item read by `read_item`, every problem reported; `empty` says what an empty map
/// lacks, when one is not allowed.
fn read_named<T>(
    value: &Value,
    pointer: &str,
    problems: &mut Problems,
    empty: Option<&str>,
    read_item: impl Fn(&Value, &str, &mut Problems) -> Option<T>,
) -> Option<BTreeMap<String, T>> {
    let map = reader::object(value, pointer, problems)?;
    if !reader::at_most(map.len(), MAX_NAMED, pointer, problems) {
        return None;
    }
    if let Some(lacking) = empty.filter(|_| map.is_empty()) {
        problems.push(pointer, format!("must define at least one {lacking}"));
        return None;
    }
    let mut items = BTreeMap::new();
    let mut complete = true;
    for (name, value) in map {
        let item_pointer = child(pointer, name);
        let key_ok = read_key(name, &item_pointer, problems);
        match read_item(value, &item_pointer, problems) {
            Some(item) if key_ok => {
                items.insert(name.clone(), item);
            }
            _ => complete = false,
        }
    }
    complete.then_some(items)
}

/// Every group's subnet and security groups exist; rules name only known groups.
fn check_references(template: &Template, template_pointer: &str, problems: &mut Problems) {
    let groups_pointer = &child(template_pointer, "vm_config");
    for (name, group) in &template.vm_config {
        let group_pointer = child(groups_pointer, name);
        let subnet = group.subnet_name(name);
        if !template.subnets().any(|(known, _)| known == subnet) {
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
    for (subnet_name, subnet) in template.subnets() {
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
    fn long_lists_are_refused_before_they_are_read() {
        let mut value = web_app_stack();
        let names: Vec<String> = (0..80_000).map(|n| format!("g{n}")).collect();
        value["vm_config"]["web"]["security_groups"] = json!(names);
        let mut groups = serde_json::Map::new();
        for n in 0..40_000 {
            groups.insert(format!("g{n}"), json!({"rules": []}));
        }
        value["security_groups"] = Value::Object(groups);
        value["vm_config"]["web"]["metadata"] = json!((0..200)
            .map(|n| (format!("k{n}"), json!("v")))
            .collect::<serde_json::Map<_, _>>());
        let started = std::time::Instant::now();
        let problems = Template::parse(&value, "", None).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        let found = pointers(&problems);
        for pointer in [
            "/vm_config/web/security_groups",
            "/security_groups",
            "/vm_config/web/metadata",
        ] {
            assert!(found.contains(&pointer), "{pointer}: {found:?}");
        }
        assert!(
            problems.0.len() < 10,
            "one problem per list, not one per item: {}",
            problems.0.len()
        );
    }

    #[test]
    fn hidden_characters_are_refused_in_metadata_and_user_data() {
        let mut value = web_app_stack();
        value["vm_config"]["web"]["metadata"] = json!({"role": "web\u{202e}gnp.exe", "a\u{0}b": "x", "ok": "fine"});
        value["vm_config"]["app"]["user_data"] = json!("#!/bin/sh\necho hi\u{0}\n");
        value["vm_config"]["db"]["user_data"] = json!("#cloud-config\n\truncmd: [ls]\r\n");
        let problems = Template::parse(&value, "", None).unwrap_err();
        let mut found = pointers(&problems);
        found.sort_unstable();
        assert_eq!(
            found,
            [
                "/vm_config/app/user_data",
                "/vm_config/web/metadata/a\u{0}b",
                "/vm_config/web/metadata/role"
            ]
        );
    }

    #[test]
    fn seed_example_is_accepted_as_written_and_round_trips() {
        let template = Template::parse(&web_app_stack(), "", None).unwrap();
        assert_eq!(template.server_count(), 6);
        assert_eq!(template.vm_config["app"].count, 3);
        assert!(template.wants_router());
        let mut expected = web_app_stack();
        expected["network_config"]["router"] = json!({"enabled": true});
        assert!(template.uses_cloud() && !template.uses_containers());
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
        let six = json!({"cidr": "10.0.1.0/24", "dns_nameservers": vec!["8.8.8.8"; 6]});
        let mut refused = Problems::default();
        let _ = network::read_subnet(&six, "/s", &mut refused);
        assert_eq!(refused.0[0].pointer, "/s/dns_nameservers", "{refused:?}");
        assert!(refused.0[0].detail.contains("at most 5"), "{refused:?}");
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
