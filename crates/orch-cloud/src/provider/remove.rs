//! Deleting members with what belongs to them, or everything of a deployment: what the
//! cloud lists by tag or name plus what the store recorded, torn down in the order the cloud
//! requires. What could not be deleted is named in a `cleanup.incomplete` event and in the
//! error, and stays recorded for the next attempt.

use orch_core::provider::{Observed, Report, Target};
use serde_json::json;

use super::port_key_of;
use crate::compute::ServerFilter;
use crate::error::Result;
use crate::managed::{name_of, name_prefix};
use crate::teardown::{Patience, DELETE_ORDER};
use crate::{CloudError, ManagedResource, OpenStack};

pub(super) async fn delete(cloud: &OpenStack, target: Target<'_>, keys: &[String], report: &impl Report) -> Result<()> {
    let id = target.deployment_id;
    let found = cloud.list_by_deployment(id).await?;
    let doomed: Vec<ManagedResource> = with_recorded(found, target.recorded, id)
        .into_iter()
        .filter(|resource| keys.is_empty() || doomed_with(keys, id, resource))
        .collect();
    let scope = ServerFilter {
        name_prefix: Some(name_prefix(id)),
        ..ServerFilter::default()
    };
    if let Err(error) = cloud.tear_down(&doomed, &scope, Patience::default()).await {
        if let CloudError::Incomplete { left, .. } = &error {
            let detail = json!({"left": left, "error": error.to_string()});
            report.event("cleanup.incomplete", detail).await?;
        }
        return Err(error);
    }
    if keys.is_empty() {
        return Ok(report.gone(&[]).await?);
    }
    let gone: Vec<String> = target
        .recorded
        .iter()
        .filter(|resource| keys.contains(&resource.key) || doomed.iter().any(|d| d.id == resource.id))
        .map(|resource| resource.key.clone())
        .collect();
    Ok(report.gone(&gone).await?)
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
            });
        }
    }
    found
}

/// Whether `resource` goes with the servers `server_keys`: the server, its port and its
/// volumes, known by their keys or, when their tags never arrived, by their names.
fn doomed_with(server_keys: &[String], deployment_id: &str, resource: &ManagedResource) -> bool {
    server_keys.iter().any(|server_key| {
        let port_key = port_key_of(server_key);
        let volume_key = server_key.replacen("server:", "volume:", 1) + ":";
        let named = |key: &str| name_of(deployment_id, key);
        match &resource.logical_key {
            Some(key) => key == server_key || *key == port_key || key.starts_with(&volume_key),
            None => {
                resource.name == named(server_key)
                    || resource.name == named(&port_key)
                    || resource.name.starts_with(&named(&volume_key))
            }
        }
    })
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
        }
    }

    #[test]
    fn a_server_goes_with_its_port_and_volumes_by_key_or_by_name() {
        let keys = vec!["server:web:1".to_owned()];
        let doomed = |resource: &ManagedResource| doomed_with(&keys, "d1", resource);
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
}
