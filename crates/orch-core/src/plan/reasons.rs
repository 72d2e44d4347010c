//! Why a plan does what it does: one [`Change`] per create, delete, resize, replace and
//! prune, with its reason in words, for the dry run of an update and
//! `GET /deployments/{id}/plan`. Read off the same [`Plan`] the workflow carries out, so what
//! it says is what happens.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{parse_container_key, parse_server_key, service_spec_hash, Plan};
use crate::provider::Observed;
use crate::template::Template;

/// One change and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `create`, `attach`, `resize`, `rebuild`, `start`, `recreate`, `delete`, `replace` or
    /// `prune`.
    pub action: &'static str,
    pub key: String,
    pub reason: String,
}

/// `1 server`, `3 servers`.
fn count(n: impl Into<u64>, thing: &str) -> String {
    match n.into() {
        1 => format!("1 {thing}"),
        n => format!("{n} {thing}s"),
    }
}

/// `1 exists`, `3 exist`.
fn exist(n: usize) -> String {
    match n {
        1 => "1 exists".to_owned(),
        n => format!("{n} exist"),
    }
}

/// Why a server is rebuilt: it is in ERROR, or its group names another image.
fn rebuild_reason(key: &str, record: &BTreeMap<&str, &Observed>, desired: &Template) -> String {
    let recorded = record.get(key);
    let (group, _) = parse_server_key(key).unwrap_or_default();
    let wanted = desired.vm_config.get(group).map_or("", |group| group.image.as_str());
    if recorded.is_some_and(|resource| resource.status == "ERROR") {
        return format!("in ERROR; rebuilt in place from {wanted}");
    }
    let image = recorded.and_then(|resource| resource.attributes["image"].as_str());
    format!("image {} -> {wanted}, rebuilt in place", image.unwrap_or("(unknown)"))
}

fn change(action: &'static str, key: &str, reason: String) -> Change {
    Change {
        action,
        key: key.to_owned(),
        reason,
    }
}

impl Plan {
    /// Every change of this plan, in the order the steps make them, each with its reason.
    /// `recorded` and `desired` are what the plan was made from.
    pub fn changes(&self, recorded: &[Observed], desired: &Template) -> Vec<Change> {
        if self.delete_all {
            return vec![change(
                "delete",
                "*",
                "the deployment is deleted: everything it made goes".into(),
            )];
        }
        let record: BTreeMap<&str, &Observed> = recorded
            .iter()
            .map(|resource| (resource.key.as_str(), resource))
            .collect();
        let mut changes = Vec::new();
        for name in &self.subnets_to_create {
            changes.push(change(
                "create",
                &format!("subnet:{name}"),
                format!("subnet '{name}' is in the template and not made yet"),
            ));
        }
        // Counted once, not once per change: a plan may create thousands.
        let servers = members_per_owner(
            record.values().copied().filter(|resource| resource.kind == "server"),
            parse_server_key,
        );
        let servers_of = |group: &str| servers.get(group).copied().unwrap_or(0);
        for key in &self.servers.create {
            let (group, _) = parse_server_key(key).unwrap_or_default();
            let wanted = desired.vm_config.get(group).map_or(0, |group| group.count);
            let reason = format!(
                "group '{group}' asks for {}; {}",
                count(wanted, "server"),
                exist(servers_of(group))
            );
            changes.push(change("create", key, reason));
        }
        for key in &self.servers.attach {
            let (group, _) = parse_server_key(key).unwrap_or_default();
            let wanted = desired
                .vm_config
                .get(group)
                .map_or(0, |group| group.volumes.len() as u64);
            let reason = format!(
                "group '{group}' asks for {} per server, not all attached",
                count(wanted, "volume")
            );
            changes.push(change("attach", key, reason));
        }
        for (key, flavor) in &self.servers.resize {
            let recorded = record
                .get(key.as_str())
                .and_then(|resource| resource.attributes["flavor"].as_str());
            let reason = format!("flavor {} -> {flavor}", recorded.unwrap_or("(unknown)"));
            changes.push(change("resize", key, reason));
        }
        changes.extend(self.in_place_changes(recorded, &record, desired));
        for key in &self.servers.delete {
            changes.push(change("delete", key, server_delete_reason(key, &record, desired)));
        }
        for key in &self.prune {
            changes.push(change("prune", key, prune_reason(key, desired)));
        }
        changes.extend(self.service_changes(&record, desired));
        changes
    }

    /// Servers changed where they stand, or made again: rebuilt, replaced subnets and the
    /// servers made again on them (or on their group's new subnet), started.
    fn in_place_changes(
        &self,
        recorded: &[Observed],
        record: &BTreeMap<&str, &Observed>,
        desired: &Template,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for key in &self.servers.rebuild {
            changes.push(change("rebuild", key, rebuild_reason(key, record, desired)));
        }
        let replaced = super::moves::replaced_subnets(recorded, desired);
        for (name, why) in &replaced {
            let key = format!("subnet:{name}");
            if self.replace_subnets.contains(&key) {
                changes.push(change("replace", &key, why.clone()));
            }
        }
        let moved = super::moves::moved_servers(recorded, &super::DesiredState::of(desired), &replaced);
        for key in &self.servers.recreate {
            let why = moved.get(key).cloned().unwrap_or_default();
            changes.push(change("recreate", key, format!("{why}; made again, its volumes kept")));
        }
        for key in &self.servers.start {
            changes.push(change("start", key, "shut off outside orch; started".to_owned()));
        }
        changes
    }

    fn service_changes(&self, record: &BTreeMap<&str, &Observed>, desired: &Template) -> Vec<Change> {
        let instances = members_per_owner(record.values().copied(), parse_container_key);
        let instances_of = |service: &str| instances.get(service).copied().unwrap_or(0);
        let mut changes = Vec::new();
        for key in self.services.create.iter().flatten() {
            let (service, _) = parse_container_key(key).unwrap_or_default();
            let wanted = desired.services.get(service).map_or(0, |service| service.instances);
            let reason = format!(
                "service '{service}' asks for {wanted} instances; {} exist",
                instances_of(service)
            );
            changes.push(change("create", key, reason));
        }
        for key in &self.services.replace {
            let (service, _) = parse_container_key(key).unwrap_or_default();
            let was = record
                .get(key.as_str())
                .and_then(|resource| resource.attributes["spec_hash"].as_str());
            let reason = format!(
                "its spec changed (spec hash {} -> {})",
                was.unwrap_or("(none)"),
                service_spec_hash(desired, service)
            );
            changes.push(change("replace", key, reason));
        }
        for key in &self.services.delete {
            let (service, _) = parse_container_key(key).unwrap_or_default();
            let reason = match desired.services.get(service) {
                None => format!("service '{service}' is no longer in the template"),
                Some(spec) => format!(
                    "beyond the {} service '{service}' asks for",
                    count(spec.instances, "instance")
                ),
            };
            changes.push(change("delete", key, reason));
        }
        for key in &self.services.prune {
            changes.push(change("prune", key, "no service uses it any more".to_owned()));
        }
        changes
    }
}

/// How many recorded members each group or service has, by `parse` of their keys.
fn members_per_owner<'a>(
    resources: impl Iterator<Item = &'a Observed>,
    parse: impl Fn(&str) -> Option<(&str, u32)>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for resource in resources {
        if let Some((owner, _)) = parse(&resource.key) {
            *counts.entry(owner.to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

fn server_delete_reason(key: &str, record: &BTreeMap<&str, &Observed>, desired: &Template) -> String {
    let (group, _) = parse_server_key(key).unwrap_or_default();
    if record.get(key).is_none_or(|resource| resource.kind != "server") {
        return "parts (a port or volume) left by a server that never came to be".to_owned();
    }
    match desired.vm_config.get(group) {
        None => format!("group '{group}' is no longer in the template"),
        Some(spec) => format!("beyond the {} group '{group}' asks for", count(spec.count, "server")),
    }
}

fn prune_reason(key: &str, desired: &Template) -> String {
    if let Some(name) = key.strip_prefix("subnet:") {
        return format!("subnet '{name}' is no longer in the template");
    }
    if let Some(name) = key.strip_prefix("security-group:") {
        return format!("security group '{name}' is no longer in the template");
    }
    if let Some(name) = key.strip_prefix("router-interface:") {
        return match desired.wants_router() {
            true => format!("subnet '{name}' is no longer in the template"),
            false => "the template no longer asks for a router".to_owned(),
        };
    }
    "the template no longer asks for a router".to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::deployment::OperationKind;
    use crate::plan::Plan;
    use crate::provider::Observed;
    use crate::template::Template;

    fn template(web: u32, flavor: &str, subnets: &[&str]) -> Template {
        let subnets: serde_json::Map<String, serde_json::Value> = subnets
            .iter()
            .enumerate()
            .map(|(n, name)| ((*name).to_owned(), json!(format!("10.0.{}.0/24", n + 1))))
            .collect();
        Template::parse(
            &json!({
                "name": "t",
                "vm_config": {"web": {"flavor": flavor, "image": "img", "count": web, "subnet": "web"}},
                "network_config": {"cidr": "10.0.0.0/16", "subnets": subnets}
            }),
            "",
            None,
        )
        .unwrap()
    }

    fn server(index: u32, flavor: &str) -> Observed {
        Observed::new(
            &format!("server:web:{index}"),
            "server",
            "s",
            "ACTIVE",
            json!({"flavor": flavor}),
        )
    }

    #[test]
    fn every_change_of_an_update_says_why() {
        let recorded = vec![
            server(0, "m1.small"),
            server(1, "m1.small"),
            server(2, "m1.small"),
            Observed::new("subnet:web", "subnet", "n1", "ACTIVE", json!({})),
            Observed::new("subnet:old", "subnet", "n2", "ACTIVE", json!({})),
        ];
        let desired = template(2, "m1.large", &["web", "db"]);
        let plan = Plan::for_operation(OperationKind::Update, &recorded, &desired, None);
        let changes: Vec<(String, String, String)> = plan
            .changes(&recorded, &desired)
            .into_iter()
            .map(|change| (change.action.to_owned(), change.key, change.reason))
            .collect();
        let expected = [
            ("create", "subnet:db", "subnet 'db' is in the template and not made yet"),
            ("resize", "server:web:0", "flavor m1.small -> m1.large"),
            ("resize", "server:web:1", "flavor m1.small -> m1.large"),
            ("delete", "server:web:2", "beyond the 2 servers group 'web' asks for"),
            ("prune", "subnet:old", "subnet 'old' is no longer in the template"),
        ];
        let expected: Vec<(String, String, String)> = expected
            .iter()
            .map(|(a, k, r)| ((*a).to_owned(), (*k).to_owned(), (*r).to_owned()))
            .collect();
        assert_eq!(changes, expected);
    }

    #[test]
    fn a_scale_out_and_a_delete_say_why() {
        let recorded = vec![server(0, "m1.small")];
        let desired = template(3, "m1.small", &["web"]);
        let plan = Plan::for_operation(OperationKind::Update, &recorded, &desired, None);
        let changes = plan.changes(&recorded, &desired);
        assert_eq!(changes.len(), 3, "a subnet and two servers: {changes:?}");
        assert_eq!(changes[1].reason, "group 'web' asks for 3 servers; 1 exists");
        let delete = Plan::for_operation(OperationKind::Delete, &recorded, &desired, None);
        assert_eq!(delete.changes(&recorded, &desired)[0].key, "*");
    }
}
