//! Deleting members with what belongs to them, or everything of a deployment: what the
//! cloud lists by tag or name plus what the store recorded, torn down in the order the cloud
//! requires. What could not be deleted is named in a `cleanup.incomplete` event and in the
//! error, and stays recorded for the next attempt.

use std::collections::HashSet;

use orch_core::provider::{Observed, Report, Target};
use serde_json::json;

use super::port_key_of;
use crate::compute::ServerFilter;
use crate::error::Result;
use crate::managed::{name_of, name_prefix};
use crate::teardown::{Patience, DELETE_ORDER};
use crate::{CloudError, ManagedResource, OpenStack};

pub(super) async fn delete(cloud: &OpenStack, target: Target<'_>, keys: &[String], report: &impl Report) -> Result<()> {
    delete_members(cloud, target, Going::new(keys, target.deployment_id), keys, report).await
}

/// Deletes the members' servers and ports; their volumes stay (detached by the delete) for
/// the servers made again in their place.
pub(super) async fn evict(cloud: &OpenStack, target: Target<'_>, keys: &[String], report: &impl Report) -> Result<()> {
    let mut going = Going::new(keys, target.deployment_id);
    going.servers.clear();
    going.volume_names.clear();
    delete_members(cloud, target, going, keys, report).await
}

async fn delete_members(
    cloud: &OpenStack,
    target: Target<'_>,
    going: Going,
    keys: &[String],
    report: &impl Report,
) -> Result<()> {
    let id = target.deployment_id;
    let found = cloud.list_by_deployment(id).await?;
    let doomed: Vec<ManagedResource> = with_recorded(found, target.recorded, id)
        .into_iter()
        .filter(|resource| keys.is_empty() || going.takes(resource))
        .collect();
    tear_down(cloud, &doomed, id, report).await?;
    if keys.is_empty() {
        return Ok(report.gone(&[]).await?);
    }
    let doomed_ids: HashSet<&str> = doomed.iter().map(|resource| resource.id.as_str()).collect();
    let gone: Vec<String> = target
        .recorded
        .iter()
        .filter(|resource| going.keys.contains(resource.key.as_str()) || doomed_ids.contains(resource.id.as_str()))
        .map(|resource| resource.key.clone())
        .collect();
    Ok(report.gone(&gone).await?)
}

/// Deletes the shared resources an update dropped. Security groups are first taken off the
/// ports that still carry them (servers that stay, in other groups now), and interfaces of
/// dropped subnets off the router that stays; then the rest goes in the cloud's order.
pub(super) async fn prune(cloud: &OpenStack, target: Target<'_>, keys: &[String], report: &impl Report) -> Result<()> {
    let dropped: Vec<&Observed> = target
        .recorded
        .iter()
        .filter(|resource| keys.contains(&resource.key) && !resource.id.is_empty())
        .collect();
    let groups: HashSet<&str> = dropped
        .iter()
        .filter(|resource| resource.kind == "security_group")
        .map(|resource| resource.id.as_str())
        .collect();
    if let (false, Some(network_id)) = (groups.is_empty(), target.recorded_id("network")) {
        strip_groups(cloud, network_id, &groups).await?;
    }
    let router_stays = !keys.iter().any(|key| key == "router");
    if let (true, Some(router_id)) = (router_stays, target.recorded_id("router")) {
        for interface in dropped.iter().filter(|resource| resource.kind == "router_interface") {
            cloud.remove_router_interface(router_id, &interface.id).await?;
        }
    }
    let dropped: Vec<Observed> = dropped.into_iter().cloned().collect();
    let doomed = with_recorded(Vec::new(), &dropped, target.deployment_id);
    tear_down(cloud, &doomed, target.deployment_id, report).await?;
    Ok(report.gone(keys).await?)
}

/// Tears `doomed` down; what the cloud would not let go is named in a `cleanup.incomplete`
/// event as well as in the error.
async fn tear_down(
    cloud: &OpenStack,
    doomed: &[ManagedResource],
    deployment_id: &str,
    report: &impl Report,
) -> Result<()> {
    let scope = ServerFilter {
        name_prefix: Some(name_prefix(deployment_id)),
        ..ServerFilter::default()
    };
    let Err(error) = cloud.tear_down(doomed, &scope, Patience::default()).await else {
        return Ok(());
    };
    if let CloudError::Incomplete { left, .. } = &error {
        let detail = json!({"left": left, "error": error.to_string()});
        report.event("cleanup.incomplete", detail).await?;
    }
    Err(error)
}

/// Takes `groups` off every port of the network that carries one of them.
async fn strip_groups(cloud: &OpenStack, network_id: &str, groups: &HashSet<&str>) -> Result<()> {
    let ports = cloud.list_ports(&[("network_id", network_id.to_owned())]).await?;
    for port in ports
        .iter()
        .filter(|port| port.security_groups.iter().any(|group| groups.contains(group.as_str())))
    {
        let kept: Vec<String> = port
            .security_groups
            .iter()
            .filter(|group| !groups.contains(group.as_str()))
            .cloned()
            .collect();
        cloud.set_port_security_groups(&port.id, &kept).await?;
    }
    Ok(())
}

/// What goes with the servers of a delete: each server, its port and its volumes, known by
/// their keys or, when their tags never arrived, by their names. Built once, so that
/// deciding for each of the cloud's resources is a look-up, not a scan of the keys.
struct Going {
    /// Server and port keys.
    keys: HashSet<String>,
    /// The servers, by key, whose volumes go.
    servers: HashSet<String>,
    /// Server and port names.
    names: HashSet<String>,
    /// `orch-<deployment>-volume-<group>-<index>`: a volume's name without its number.
    volume_names: HashSet<String>,
}

impl Going {
    fn new(server_keys: &[String], deployment_id: &str) -> Self {
        let mut going = Self {
            keys: HashSet::new(),
            servers: server_keys.iter().cloned().collect(),
            names: HashSet::new(),
            volume_names: HashSet::new(),
        };
        for server_key in server_keys {
            let port_key = port_key_of(server_key);
            going.names.insert(name_of(deployment_id, server_key));
            going.names.insert(name_of(deployment_id, &port_key));
            let volumes = server_key.replacen("server:", "volume:", 1);
            going.volume_names.insert(name_of(deployment_id, &volumes));
            going.keys.insert(server_key.clone());
            going.keys.insert(port_key);
        }
        going
    }

    fn takes(&self, resource: &ManagedResource) -> bool {
        match &resource.logical_key {
            Some(key) => {
                self.keys.contains(key) || volume_owner(key).is_some_and(|owner| self.servers.contains(&owner))
            }
            None => {
                self.names.contains(&resource.name)
                    || resource.name.rsplit_once('-').is_some_and(|(prefix, number)| {
                        number.parse::<u32>().is_ok() && self.volume_names.contains(prefix)
                    })
            }
        }
    }
}

/// The server a volume key belongs to: `volume:web:1:0` -> `server:web:1`.
fn volume_owner(key: &str) -> Option<String> {
    let (server, number) = key.strip_prefix("volume:")?.rsplit_once(':')?;
    number.parse::<u32>().ok()?;
    Some(format!("server:{server}"))
}

/// What the cloud listed, plus what the store recorded that the listing missed.
fn with_recorded(mut found: Vec<ManagedResource>, recorded: &[Observed], deployment_id: &str) -> Vec<ManagedResource> {
    for resource in recorded {
        let Some(kind) = DELETE_ORDER.iter().find(|kind| **kind == resource.kind) else {
            continue;
        };
        if !resource.id.is_empty() && !found.iter().any(|f| f.id == resource.id) {
            found.push(ManagedResource {
                kind,
                id: resource.id.clone(),
                name: resource.attributes["name"].as_str().unwrap_or_default().to_owned(),
                deployment_id: Some(deployment_id.to_owned()),
                logical_key: Some(resource.key.clone()),
                status: String::new(),
                flavor: None,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(kind: &'static str, name: &str, key: Option<&str>) -> ManagedResource {
        ManagedResource {
            kind,
            id: name.to_owned(),
            name: name.to_owned(),
            deployment_id: Some("d1".into()),
            logical_key: key.map(str::to_owned),
            status: String::new(),
            flavor: None,
        }
    }

    #[test]
    fn a_server_goes_with_its_port_and_volumes_by_key_or_by_name() {
        let keys = vec!["server:web:1".to_owned()];
        let going = Going::new(&keys, "d1");
        let doomed = |resource: &ManagedResource| going.takes(resource);
        assert!(doomed(&found("server", "x", Some("server:web:1"))));
        assert!(doomed(&found("port", "x", Some("port:web:1"))));
        assert!(doomed(&found("volume", "x", Some("volume:web:1:0"))));
        assert!(doomed(&found("port", "orch-d1-port-web-1", None)), "untagged, by name");
        assert!(doomed(&found("volume", "orch-d1-volume-web-1-0", None)));
        assert!(!doomed(&found("port", "x", Some("port:web:10"))), "another server's");
        assert!(!doomed(&found("volume", "orch-d1-volume-web-10-0", None)));
        assert!(
            !doomed(&found("port", "orch-d2-port-web-1", None)),
            "another deployment's"
        );
    }

    #[test]
    fn what_the_listing_missed_is_added_from_the_records_once() {
        let listed = vec![found("network", "n1", Some("network"))];
        let recorded = [
            Observed::new("network", "network", "n1", "ACTIVE", json!({"name": "n"})),
            Observed::new("port:web:0", "port", "p1", "ACTIVE", json!({})),
            Observed::new("router-interface:web", "router_interface", "s1", "ACTIVE", json!({})),
        ];
        let all = with_recorded(listed, &recorded, "d1");
        let ids: Vec<(&str, &str)> = all.iter().map(|r| (r.kind, r.id.as_str())).collect();
        assert_eq!(
            ids,
            [("network", "n1"), ("port", "p1")],
            "interfaces go with their router"
        );
    }

    #[test]
    fn deciding_what_goes_takes_a_look_up_per_resource() {
        // A scale-in from 10,000 to 5,000 servers: 5,000 keys against 20,000 resources. A scan
        // of the keys for each resource (with a name built per step) took minutes here.
        let keys: Vec<String> = (5_000..10_000).map(|n| format!("server:web:{n}")).collect();
        let resources: Vec<ManagedResource> = (0..10_000)
            .flat_map(|n| {
                [
                    found("server", &format!("s{n}"), Some(&format!("server:web:{n}"))),
                    found("port", &format!("orch-d1-port-web-{n}"), None),
                ]
            })
            .collect();
        let started = std::time::Instant::now();
        let going = Going::new(&keys, "d1");
        let taken = resources.iter().filter(|resource| going.takes(resource)).count();
        assert_eq!(taken, 10_000, "5,000 servers and their 5,000 ports");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
