//! Reading security groups and their rules, in Neutron's own field names.

use std::collections::BTreeMap;

use serde_json::Value;

use super::network::read_cidr;
use super::*;
use crate::problem::{child, Problems};
use crate::reader::{self, Object};

pub(super) fn read_security_groups(
    value: &Value,
    pointer: &str,
    problems: &mut Problems,
) -> Option<BTreeMap<String, SecurityGroup>> {
    read_named(value, pointer, problems, None, read_security_group)
}

pub(super) fn read_security_group(value: &Value, pointer: &str, problems: &mut Problems) -> Option<SecurityGroup> {
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

pub(super) fn read_rule(value: &Value, pointer: &str, problems: &mut Problems) -> Option<SecurityRule> {
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
