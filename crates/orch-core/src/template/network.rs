//! Reading the network: its CIDR, subnets (gateway, DNS, DHCP) that fit inside it without
//! overlapping, and the router.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::*;
use crate::problem::{child, Problems};
use crate::reader::{self, Object};

pub(super) fn read_cidr(value: &Value, pointer: &str, problems: &mut Problems) -> Option<IpNet> {
    let text = reader::string(value, pointer, problems)?;
    match text.parse::<IpNet>() {
        // `010.0.0.0/16` is 10.0.0.0/16 here and 8.0.0.0/16 to tools that read octal.
        Ok(net) if net.to_string() != text => {
            problems.push(pointer, format!("'{text}' is not written as a CIDR is: write {net}"));
            None
        }
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

pub(super) fn read_ip(value: &Value, pointer: &str, problems: &mut Problems) -> Option<IpAddr> {
    let text = reader::string(value, pointer, problems)?;
    match text.parse::<IpAddr>() {
        Ok(address @ IpAddr::V4(_)) if address.to_string() != text => {
            problems.push(
                pointer,
                format!("'{text}' is not written as an address is: write {address}"),
            );
            None
        }
        Ok(address) => Some(address),
        Err(_) => {
            problems.push(pointer, format!("'{text}' is not an IP address"));
            None
        }
    }
}

pub(super) fn read_network(value: &Value, pointer: &str, problems: &mut Problems) -> Option<NetworkConfig> {
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

pub(super) fn read_subnets(
    value: &Value,
    pointer: &str,
    problems: &mut Problems,
) -> Option<BTreeMap<String, SubnetSpec>> {
    read_named(value, pointer, problems, Some("subnet"), read_subnet)
}

pub(super) fn read_subnet(value: &Value, pointer: &str, problems: &mut Problems) -> Option<SubnetSpec> {
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
            reader::array(value, &dns_pointer, problems)
                .filter(|items| reader::at_most(items.len(), MAX_DNS_NAMESERVERS, &dns_pointer, problems))
                .map(|items| {
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

pub(super) fn broadcast(cidr: IpNet) -> Option<IpAddr> {
    match cidr {
        IpNet::V4(net) => Some(IpAddr::V4(net.broadcast())),
        IpNet::V6(_) => None,
    }
}

pub(super) fn read_router(value: &Value, pointer: &str, problems: &mut Problems) -> Option<RouterSpec> {
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
pub(super) fn check_subnet_layout(
    network: IpNet,
    subnets: &BTreeMap<String, SubnetSpec>,
    pointer: &str,
    problems: &mut Problems,
) {
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
