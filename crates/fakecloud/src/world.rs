//! The simulated resources. Time-driven changes (a server leaving BUILD, a volume becoming
//! available, a deleted resource disappearing) are computed from timestamps whenever the world
//! is looked at, so that nothing needs a background task and `updated` times are exact.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::config::{FakeConfig, Flavor};

pub fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[derive(Debug, Clone)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub flavor: Flavor,
    pub image_id: String,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    pub key_name: Option<String>,
    /// (network id, port id) per interface.
    pub interfaces: Vec<(String, String)>,
    /// Ports Nova made for this server (deleted with it); ports passed in by the client are
    /// only detached, as in Nova.
    pub nova_ports: Vec<String>,
    pub security_groups: Vec<String>,
    pub created: DateTime<Utc>,
    pub active_at: DateTime<Utc>,
    pub fails: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub resized_at: Option<DateTime<Utc>>,
    pub resize_confirmed: bool,
    pub previous_flavor: Option<Flavor>,
    pub volumes: Vec<String>,
    pub user_data: Option<String>,
    /// (asked at, done at) of the last rebuild: REBUILD in between.
    pub rebuild: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Shut off (`os-stop`, or a test playing someone outside orch): SHUTOFF.
    pub stopped: bool,
}

impl Server {
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if now < self.active_at {
            "BUILD"
        } else if self.fails {
            "ERROR"
        } else if self.rebuild.is_some_and(|(_, done)| now < done) {
            "REBUILD"
        } else if self.stopped {
            "SHUTOFF"
        } else if self.resized_at.is_some() && !self.resize_confirmed {
            "VERIFY_RESIZE"
        } else {
            "ACTIVE"
        }
    }

    /// When the server last changed, as Nova's `updated`.
    pub fn updated(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut updated = self.created;
        if now >= self.active_at {
            updated = self.active_at;
        }
        let rebuild = self.rebuild.into_iter().flat_map(|(asked, done)| [asked, done]);
        for at in [self.resized_at, self.deleted_at].into_iter().flatten().chain(rebuild) {
            if at > updated && at <= now {
                updated = at;
            }
        }
        updated
    }
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub size: u64,
    pub volume_type: String,
    pub metadata: Map<String, Value>,
    pub created: DateTime<Utc>,
    pub available_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// (server id, attachment id).
    pub attachment: Option<(String, String)>,
    /// Ends in `error` instead of `available` (fault injection).
    pub fails: bool,
}

impl Volume {
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.deleted_at.is_some() {
            "deleting"
        } else if now < self.available_at {
            "creating"
        } else if self.fails {
            "error"
        } else if self.attachment.is_some() {
            "in-use"
        } else {
            "available"
        }
    }
}

/// Neutron resource kinds, by their collection names.
pub const NEUTRON_KINDS: [&str; 6] = [
    "networks",
    "subnets",
    "routers",
    "ports",
    "security_groups",
    "security_group_rules",
];

pub struct World {
    pub project_id: String,
    pub user_id: String,
    pub tokens: HashMap<String, DateTime<Utc>>,
    pub servers: BTreeMap<String, Server>,
    /// Deleted servers as last shown, for `changes-since` (Nova lists them as DELETED).
    pub deleted_servers: Vec<(DateTime<Utc>, Value)>,
    pub volumes: BTreeMap<String, Volume>,
    /// Neutron resources as their API shows them, by kind and id.
    pub neutron: BTreeMap<&'static str, BTreeMap<String, Value>>,
    pub keypairs: BTreeMap<String, Value>,
    /// The cloud's own resources (the `default` security group, the `public` network): not a
    /// deployment's, so not in the inventory.
    pub builtin: HashSet<String>,
    mac_counter: u64,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> Self {
        let mut world = Self {
            project_id: uuid::Uuid::new_v4().simple().to_string(),
            user_id: uuid::Uuid::new_v4().simple().to_string(),
            tokens: HashMap::new(),
            servers: BTreeMap::new(),
            deleted_servers: Vec::new(),
            volumes: BTreeMap::new(),
            neutron: NEUTRON_KINDS.iter().map(|kind| (*kind, BTreeMap::new())).collect(),
            keypairs: BTreeMap::new(),
            builtin: HashSet::new(),
            mac_counter: 0,
        };
        world.create_default_security_group();
        let public = crate::network::create_public_network(&mut world);
        world.builtin.extend(public);
        world
    }

    /// Every project has a `default` security group, as in Neutron.
    fn create_default_security_group(&mut self) {
        let id = new_id();
        let now = timestamp(Utc::now());
        let group = json!({
            "id": id, "name": "default", "description": "Default security group",
            "tenant_id": self.project_id, "project_id": self.project_id,
            "security_group_rules": [], "tags": [], "stateful": true, "shared": false,
            "created_at": now, "updated_at": now, "revision_number": 1
        });
        self.builtin.insert(id.clone());
        self.neutron.get_mut("security_groups").expect("kind").insert(id, group);
    }

    pub fn token_valid(&self, token: &str) -> bool {
        self.tokens.get(token).is_some_and(|expires| *expires > Utc::now())
    }

    /// Finishes deletions whose delay has passed.
    pub fn advance(&mut self, config: &FakeConfig) {
        let now = Utc::now();
        let delay = Duration::milliseconds(config.delete_delay_ms as i64);
        let gone: Vec<String> = self
            .servers
            .values()
            .filter(|server| server.deleted_at.is_some_and(|at| at + delay <= now))
            .map(|server| server.id.clone())
            .collect();
        for id in gone {
            let server = self.servers.remove(&id).expect("listed");
            let removed_at = server.deleted_at.expect("deleting") + delay;
            let mut shown = crate::compute::render_server(self, &server, now, "");
            shown["status"] = json!("DELETED");
            shown["updated"] = json!(timestamp(removed_at));
            shown["OS-EXT-STS:vm_state"] = json!("deleted");
            shown["OS-EXT-STS:task_state"] = Value::Null;
            self.deleted_servers.push((removed_at, shown));
            for (_, port_id) in &server.interfaces {
                if server.nova_ports.contains(port_id) {
                    self.neutron.get_mut("ports").expect("kind").remove(port_id);
                } else if let Some(port) = self.neutron.get_mut("ports").expect("kind").get_mut(port_id) {
                    port["device_id"] = json!("");
                    port["device_owner"] = json!("");
                }
            }
            for volume in server.volumes {
                if let Some(volume) = self.volumes.get_mut(&volume) {
                    volume.attachment = None;
                }
            }
        }
        self.volumes
            .retain(|_, volume| volume.deleted_at.is_none_or(|at| at + delay > now));
    }

    pub fn neutron(&self, kind: &str) -> &BTreeMap<String, Value> {
        self.neutron.get(kind).expect("known neutron kind")
    }

    pub fn neutron_mut(&mut self, kind: &str) -> &mut BTreeMap<String, Value> {
        self.neutron.get_mut(kind).expect("known neutron kind")
    }

    pub fn next_mac(&mut self) -> String {
        self.mac_counter += 1;
        let n = self.mac_counter;
        format!(
            "fa:16:3e:{:02x}:{:02x}:{:02x}",
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )
    }

    /// The next free address of a subnet's allocation pools.
    pub fn allocate_ip(&self, subnet_id: &str) -> Option<IpAddr> {
        let subnet = self.neutron("subnets").get(subnet_id)?;
        let used: HashSet<String> = self
            .neutron("ports")
            .values()
            .flat_map(|port| port["fixed_ips"].as_array().cloned().unwrap_or_default())
            .filter(|ip| ip["subnet_id"] == subnet_id)
            .filter_map(|ip| ip["ip_address"].as_str().map(str::to_owned))
            .collect();
        for pool in subnet["allocation_pools"].as_array()? {
            let start: IpAddr = pool["start"].as_str()?.parse().ok()?;
            let end: IpAddr = pool["end"].as_str()?.parse().ok()?;
            let mut candidate = start;
            loop {
                if !used.contains(&candidate.to_string()) {
                    return Some(candidate);
                }
                if candidate == end {
                    break;
                }
                candidate = next_ip(candidate)?;
            }
        }
        None
    }

    /// Creates a port on `network_id` with an address from its first subnet.
    pub fn create_port(
        &mut self,
        network_id: &str,
        device_id: &str,
        device_owner: &str,
        name: &str,
        subnet: Option<&str>,
    ) -> Result<Value, String> {
        let network = self
            .neutron("networks")
            .get(network_id)
            .ok_or_else(|| format!("Network {network_id} could not be found."))?;
        let subnet_id = network["subnets"]
            .as_array()
            .and_then(|subnets| subnets.first())
            .and_then(Value::as_str)
            .map(str::to_owned);
        let subnet_id = match subnet {
            Some(wanted) => {
                let inside = network["subnets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|id| id == wanted);
                if !inside {
                    return Err(format!("Subnet {wanted} is not on network {network_id}."));
                }
                Some(wanted.to_owned())
            }
            None => subnet_id,
        };
        let mut fixed_ips = Vec::new();
        if let Some(subnet_id) = subnet_id {
            let ip = self
                .allocate_ip(&subnet_id)
                .ok_or_else(|| format!("No more IP addresses available on network {network_id}."))?;
            fixed_ips.push(json!({"subnet_id": subnet_id, "ip_address": ip.to_string()}));
        }
        let id = new_id();
        let now = timestamp(Utc::now());
        let port = json!({
            "id": id, "name": name, "network_id": network_id, "tenant_id": self.project_id, "project_id": self.project_id,
            "mac_address": self.next_mac(), "admin_state_up": true, "status": "ACTIVE",
            "device_id": device_id, "device_owner": device_owner, "fixed_ips": fixed_ips,
            "allowed_address_pairs": [], "extra_dhcp_opts": [], "security_groups": [],
            "description": "", "binding:vnic_type": "normal", "port_security_enabled": true,
            "tags": [], "created_at": now, "updated_at": now, "revision_number": 1
        });
        self.neutron_mut("ports").insert(id, port.clone());
        Ok(port)
    }

    /// Every live resource, by kind, as the cloud shows it: the leak check used by tests.
    pub fn inventory(&self, base_url: &str) -> Value {
        let now = Utc::now();
        let servers: Vec<Value> = self
            .servers
            .values()
            .map(|server| crate::compute::render_server(self, server, now, base_url))
            .collect();
        let volumes: Vec<Value> = self
            .volumes
            .values()
            .map(|volume| crate::volume::render_volume(volume, now))
            .collect();
        let neutron = |kind: &str| {
            let own = self.neutron(kind).values().filter(|resource| {
                let id = resource["id"].as_str().unwrap_or_default();
                let network = resource["network_id"].as_str().unwrap_or_default();
                !self.builtin.contains(id) && !self.builtin.contains(network)
            });
            Value::Array(own.cloned().collect())
        };
        json!({
            "servers": servers,
            "networks": neutron("networks"),
            "subnets": neutron("subnets"),
            "routers": neutron("routers"),
            "ports": neutron("ports"),
            "security_groups": neutron("security_groups"),
            "volumes": volumes,
            "key_pairs": self.keypairs.values().cloned().collect::<Vec<_>>(),
        })
    }

    /// Resources in use, for quotas.
    pub fn usage(&self) -> Usage {
        let live = self.servers.values().filter(|server| server.deleted_at.is_none());
        let mut usage = Usage::default();
        for server in live {
            usage.instances += 1;
            usage.cores += server.flavor.vcpus;
            usage.ram += server.flavor.ram;
        }
        for volume in self.volumes.values().filter(|volume| volume.deleted_at.is_none()) {
            usage.volumes += 1;
            usage.gigabytes += volume.size;
        }
        usage
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub instances: u64,
    pub cores: u64,
    pub ram: u64,
    pub volumes: u64,
    pub gigabytes: u64,
}

pub fn next_ip(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(v6) => u128::from(v6).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}

/// Neutron's default pool: from the address after the gateway to the last host address.
pub fn default_pool(cidr: IpNet, gateway: Option<IpAddr>) -> (IpAddr, IpAddr) {
    let first_host = next_ip(cidr.network()).expect("network has hosts");
    let start = match gateway {
        Some(gateway) if gateway == first_host => next_ip(first_host).expect("room after gateway"),
        _ => first_host,
    };
    let end = match cidr {
        IpNet::V4(net) => IpAddr::V4((u32::from(net.broadcast()) - 1).into()),
        IpNet::V6(net) => IpAddr::V6(net.broadcast()),
    };
    (start, end)
}
