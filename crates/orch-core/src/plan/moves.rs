//! Servers that must be made again on their network: a subnet whose CIDR or gateway the
//! template changed is replaced (a subnet's range cannot change in place), and with it every
//! server on it; a server whose group now names another subnet is made again on that one.
//! Both keep their volumes, which are attached again.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::DesiredState;
use crate::provider::Observed;
use crate::template::Template;

/// The subnets recorded with another CIDR, or another gateway, than the template gives them,
/// with why.
pub(super) fn replaced_subnets(recorded: &[Observed], desired: &Template) -> BTreeMap<String, String> {
    let mut replaced = BTreeMap::new();
    for (name, spec) in desired.subnets() {
        let key = format!("subnet:{name}");
        let Some(made) = recorded.iter().find(|resource| resource.key == key) else {
            continue;
        };
        let cidr = made.attributes["cidr"]
            .as_str()
            .and_then(|text| text.parse::<IpNet>().ok());
        if let Some(cidr) = cidr.filter(|cidr| *cidr != spec.cidr) {
            replaced.insert(name.clone(), format!("cidr {cidr} -> {}", spec.cidr));
            continue;
        }
        let gateway = made.attributes["gateway_ip"]
            .as_str()
            .and_then(|text| text.parse::<IpAddr>().ok());
        if let (Some(was), Some(wanted)) = (gateway, spec.gateway_ip) {
            if was != wanted {
                replaced.insert(name.clone(), format!("gateway {was} -> {wanted}"));
            }
        }
    }
    replaced
}

/// The subnet a recorded server is on: the recorded subnet whose range holds its address.
fn subnet_of(server: &Observed, subnets: &[(String, IpNet)]) -> Option<String> {
    let ip: IpAddr = server.attributes["ip"].as_str()?.parse().ok()?;
    subnets
        .iter()
        .find(|(_, cidr)| cidr.contains(&ip))
        .map(|(name, _)| name.clone())
}

/// Servers that exist and stay but must be made again, with why: on a replaced subnet, or
/// on another subnet than their group names now. A server whose address is not recorded is
/// left where it is.
pub(super) fn moved_servers(
    recorded: &[Observed],
    desired: &DesiredState,
    replaced: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let subnets: Vec<(String, IpNet)> = recorded
        .iter()
        .filter(|resource| resource.kind == "subnet")
        .filter_map(|resource| {
            let name = resource.key.strip_prefix("subnet:")?;
            let cidr = resource.attributes["cidr"].as_str()?.parse().ok()?;
            Some((name.to_owned(), cidr))
        })
        .collect();
    let mut moved = BTreeMap::new();
    for spec in &desired.servers {
        let Some(server) = recorded.iter().find(|resource| resource.key == spec.key) else {
            continue;
        };
        if let Some(why) = replaced.get(&spec.subnet) {
            moved.insert(
                spec.key.clone(),
                format!("subnet '{}' is replaced ({why})", spec.subnet),
            );
            continue;
        }
        match subnet_of(server, &subnets) {
            Some(on) if on != spec.subnet => {
                moved.insert(
                    spec.key.clone(),
                    format!("its group moved from subnet '{on}' to '{}'", spec.subnet),
                );
            }
            _ => {}
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn template(web_cidr: &str, db_subnet: &str) -> Template {
        Template::parse(
            &json!({"name": "t",
                    "vm_config": {"web": {"flavor": "f", "image": "i", "count": 1},
                                  "db": {"flavor": "f", "image": "i", "count": 1, "subnet": db_subnet}},
                    "network_config": {"cidr": "10.0.0.0/16",
                                       "subnets": {"web": web_cidr, "db": "10.0.3.0/24", "other": "10.0.4.0/24"}}}),
            "",
            None,
        )
        .unwrap()
    }

    fn recorded() -> Vec<Observed> {
        vec![
            Observed::new("subnet:web", "subnet", "s1", "ACTIVE", json!({"cidr": "10.0.1.0/24"})),
            Observed::new(
                "subnet:db",
                "subnet",
                "s2",
                "ACTIVE",
                json!({"cidr": "10.0.3.0/24", "gateway_ip": "10.0.3.1"}),
            ),
            Observed::new("server:web:0", "server", "a", "ACTIVE", json!({"ip": "10.0.1.5"})),
            Observed::new("server:db:0", "server", "b", "ACTIVE", json!({"ip": "10.0.3.7"})),
        ]
    }

    #[test]
    fn a_changed_cidr_replaces_the_subnet_and_moves_its_servers() {
        let desired = template("10.0.5.0/24", "db");
        let replaced = replaced_subnets(&recorded(), &desired);
        assert_eq!(replaced.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(replaced["web"], "cidr 10.0.1.0/24 -> 10.0.5.0/24");
        let moved = moved_servers(&recorded(), &DesiredState::of(&desired), &replaced);
        assert_eq!(moved.keys().collect::<Vec<_>>(), ["server:web:0"]);
        let same = template("10.0.1.0/24", "db");
        assert!(replaced_subnets(&recorded(), &same).is_empty());
        assert!(moved_servers(&recorded(), &DesiredState::of(&same), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_changed_gateway_replaces_the_subnet() {
        let mut desired = template("10.0.1.0/24", "db");
        let db = desired.network_config.as_mut().unwrap().subnets.get_mut("db").unwrap();
        db.gateway_ip = Some("10.0.3.254".parse().unwrap());
        let replaced = replaced_subnets(&recorded(), &desired);
        assert_eq!(replaced["db"], "gateway 10.0.3.1 -> 10.0.3.254");
    }

    #[test]
    fn a_group_that_names_another_subnet_moves() {
        let desired = template("10.0.1.0/24", "other");
        let moved = moved_servers(&recorded(), &DesiredState::of(&desired), &BTreeMap::new());
        assert_eq!(moved["server:db:0"], "its group moved from subnet 'db' to 'other'");
        assert_eq!(moved.len(), 1);
    }
}
