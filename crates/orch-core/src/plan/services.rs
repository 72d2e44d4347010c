//! The containerised services' half of a plan: which instances to create (in dependency
//! waves), replace (their spec changed), and delete (newest and dependents first), and
//! which shared parts an update no longer needs.
//!
//! Keys: `container:<service>:<index>`, `container-network:<class>`,
//! `container-volume:<service>:<name>` (shared) and `container-volume:<service>:<index>:<name>`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Step;
use crate::deployment::OperationKind;
use crate::provider::Observed;
use crate::template::services::{networks_of, start_order, wired_to};
use crate::template::Template;

/// The kinds a container provider records; everything else belongs to a cloud.
pub const CONTAINER_KINDS: [&str; 3] = ["container", "container_network", "container_volume"];

pub fn container_key(service: &str, index: u32) -> String {
    format!("container:{service}:{index}")
}

/// The service and index of a container key.
pub fn parse_container_key(key: &str) -> Option<(&str, u32)> {
    let (service, index) = key.strip_prefix("container:")?.rsplit_once(':')?;
    Some((service, index.parse().ok()?))
}

/// The engine's name of an instance: `<deployment>-<service>-<index>`, unique per host.
pub fn instance_name(deployment_id: &str, service: &str, index: u32) -> String {
    format!("{deployment_id}-{service}-{index}")
}

/// A digest of everything that shapes a service's containers (not how many there are):
/// an instance whose recorded digest differs is replaced by an update.
pub fn service_spec_hash(template: &Template, service: &str) -> String {
    let mut spec = template.services[service].clone();
    spec.instances = 0;
    spec.min_instances = 0;
    spec.max_instances = None;
    let networks: Vec<_> = networks_of(service, &template.services).into_iter().collect();
    // A service wired to another's instances is remade when their number changes.
    let wired: BTreeMap<&str, u32> = wired_to(&template.services[service])
        .into_iter()
        .map(|other| (other, template.services.get(other).map_or(0, |other| other.instances)))
        .collect();
    let mut document = serde_json::json!({"service": spec, "networks": networks});
    if !wired.is_empty() {
        document["wired"] = serde_json::json!(wired);
    }
    let digest = Sha256::digest(document.to_string().as_bytes());
    hex::encode(&digest[..8])
}

/// What an operation does to the services' instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePlan {
    /// Whether the networks and shared volumes are (re)made.
    pub prepare: bool,
    /// New instances, in waves: each wave starts once the one before it is ready.
    pub create: Vec<Vec<String>>,
    /// Instances whose spec changed, in start order.
    pub replace: Vec<String>,
    /// Instances to remove: dependents before what they depend on, newest first.
    pub delete: Vec<String>,
    /// Networks and shared volumes an update no longer needs.
    pub prune: Vec<String>,
    /// A delete: every container, network and volume of the deployment goes.
    pub delete_all: bool,
}

impl ServicePlan {
    pub fn for_operation(
        kind: OperationKind,
        recorded: &[Observed],
        desired: &Template,
        scale_service: Option<&str>,
    ) -> Self {
        let has_containers = recorded
            .iter()
            .any(|resource| CONTAINER_KINDS.contains(&resource.kind.as_str()));
        if !desired.uses_containers() && !has_containers {
            return Self::default();
        }
        if kind == OperationKind::Delete {
            return Self {
                delete_all: true,
                ..Self::default()
            };
        }
        let existing: BTreeMap<&str, &str> = recorded
            .iter()
            .filter(|resource| resource.kind == "container")
            .map(|resource| {
                let hash = resource.attributes["spec_hash"].as_str().unwrap_or_default();
                (resource.key.as_str(), hash)
            })
            .collect();
        let in_scope = |service: &str| kind != OperationKind::Scale || Some(service) == scale_service;
        let waves = start_order(&desired.services);
        let mut plan = Self {
            prepare: matches!(kind, OperationKind::Create | OperationKind::Update),
            ..Self::default()
        };
        for wave in &waves {
            let mut create = Vec::new();
            for service in wave.iter().filter(|service| in_scope(service)) {
                let hash = service_spec_hash(desired, service);
                for index in 0..desired.services[service].instances {
                    let key = container_key(service, index);
                    match existing.get(key.as_str()) {
                        None => create.push(key),
                        Some(recorded) if *recorded != hash && kind == OperationKind::Update => plan.replace.push(key),
                        Some(_) => {}
                    }
                }
            }
            if !create.is_empty() {
                plan.create.push(create);
            }
        }
        if kind != OperationKind::Create {
            plan.delete = unwanted_instances(&existing, desired, &waves, &in_scope);
        }
        if kind == OperationKind::Update {
            plan.prune = unwanted_parts(recorded, desired);
        }
        plan
    }

    /// The steps in the order they run.
    pub fn steps(&self) -> Vec<Step> {
        if self.delete_all {
            return vec![Step::DeleteAll];
        }
        let mut steps = Vec::new();
        if self.prepare {
            steps.push(Step::Prepare);
        }
        for wave in &self.create {
            steps.extend([Step::Create(wave.clone()), Step::Wait(wave.clone())]);
        }
        if !self.replace.is_empty() {
            steps.push(Step::Replace(self.replace.clone()));
        }
        if !self.delete.is_empty() {
            steps.push(Step::Delete(self.delete.clone()));
        }
        if !self.prune.is_empty() {
            steps.push(Step::Prune(self.prune.clone()));
        }
        steps
    }
}

/// Recorded instances the template no longer asks for: services in reverse start order
/// (dependents first), each newest first; services the template dropped go first of all.
fn unwanted_instances(
    existing: &BTreeMap<&str, &str>,
    desired: &Template,
    waves: &[Vec<String>],
    in_scope: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let rank: BTreeMap<&str, usize> = waves
        .iter()
        .enumerate()
        .flat_map(|(wave, services)| services.iter().map(move |service| (service.as_str(), wave)))
        .collect();
    let mut unwanted: Vec<(&str, u32)> = existing
        .keys()
        .filter_map(|key| parse_container_key(key))
        .filter(|(service, _)| in_scope(service))
        .filter(|(service, index)| {
            desired
                .services
                .get(*service)
                .is_none_or(|spec| *index >= spec.instances)
        })
        .collect();
    unwanted.sort_by_key(|(service, index)| {
        let wave = rank.get(service).copied().unwrap_or(usize::MAX);
        (std::cmp::Reverse(wave), *service, std::cmp::Reverse(*index))
    });
    unwanted
        .into_iter()
        .map(|(service, index)| container_key(service, index))
        .collect()
}

/// Networks of classes no service uses any more, and shared volumes no service declares.
fn unwanted_parts(recorded: &[Observed], desired: &Template) -> Vec<String> {
    let classes: BTreeSet<&str> = desired
        .services
        .keys()
        .flat_map(|name| networks_of(name, &desired.services))
        .map(|class| class.as_str())
        .collect();
    let wanted = |key: &str| -> bool {
        if let Some(class) = key.strip_prefix("container-network:") {
            return classes.contains(class);
        }
        let Some(rest) = key.strip_prefix("container-volume:") else {
            return true;
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let Some(service) = desired.services.get(parts[0]) else {
            return false;
        };
        let name = parts.last().copied().unwrap_or_default();
        service.volumes.iter().any(|volume| volume.name == name)
    };
    let mut unwanted: Vec<String> = recorded
        .iter()
        .filter(|resource| matches!(resource.kind.as_str(), "container_network" | "container_volume"))
        .filter(|resource| !wanted(&resource.key))
        .map(|resource| resource.key.clone())
        .collect();
    unwanted.sort();
    unwanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stack(web: u32, image: &str) -> Template {
        Template::parse(
            &json!({"name": "s", "services": {
                "cache": {"image": "c", "class": "data", "healthcheck": {"tcp": {"port": 6379}}},
                "web": {"image": image, "class": "gateway", "instances": web,
                        "depends_on": [{"service": "cache", "condition": "healthy"}]},
            }}),
            "",
            None,
        )
        .unwrap()
    }

    fn container(key: &str, template: &Template) -> Observed {
        let (service, _) = parse_container_key(key).unwrap();
        let hash = service_spec_hash(template, service);
        Observed::new(key, "container", "id", "healthy", json!({"spec_hash": hash}))
    }

    #[test]
    fn a_create_starts_services_in_dependency_waves() {
        let plan = ServicePlan::for_operation(OperationKind::Create, &[], &stack(2, "w"), None);
        let web = vec!["container:web:0".to_owned(), "container:web:1".to_owned()];
        assert_eq!(
            plan.steps(),
            [
                Step::Prepare,
                Step::Create(vec!["container:cache:0".into()]),
                Step::Wait(vec!["container:cache:0".into()]),
                Step::Create(web.clone()),
                Step::Wait(web),
            ]
        );
    }

    #[test]
    fn scale_update_and_delete_plan_what_changed() {
        let current = stack(3, "w");
        let recorded: Vec<Observed> = [
            "container:cache:0",
            "container:web:0",
            "container:web:1",
            "container:web:2",
        ]
        .iter()
        .map(|key| container(key, &current))
        .collect();
        let scale = ServicePlan::for_operation(OperationKind::Scale, &recorded, &stack(1, "w"), Some("web"));
        assert_eq!(
            scale.steps(),
            [Step::Delete(vec!["container:web:2".into(), "container:web:1".into()])]
        );
        let update = ServicePlan::for_operation(OperationKind::Update, &recorded, &stack(3, "w2"), None);
        assert_eq!(
            update.replace,
            ["container:web:0", "container:web:1", "container:web:2"],
            "a changed image replaces every instance of its service, and only those"
        );
        let delete = ServicePlan::for_operation(OperationKind::Delete, &recorded, &current, None);
        assert_eq!(delete.steps(), [Step::DeleteAll]);
        let mut dropped = recorded.clone();
        dropped.push(Observed::new(
            "container-network:admin",
            "container_network",
            "n",
            "ok",
            json!({}),
        ));
        let update = ServicePlan::for_operation(OperationKind::Update, &dropped, &current, None);
        assert_eq!(update.prune, ["container-network:admin"]);
        assert!(update.replace.is_empty() && update.create.is_empty());
    }

    #[test]
    fn a_template_without_services_plans_nothing_for_containers() {
        let plan = ServicePlan::for_operation(OperationKind::Delete, &[], &Template::parse_text(
            "name: v\nvm_config: {web: {flavor: f, image: i, count: 1}}\nnetwork_config: {cidr: 10.0.0.0/16, subnets: {web: 10.0.1.0/24}}\n",
        ).unwrap(), None);
        assert!(plan.steps().is_empty());
        assert_eq!(parse_container_key("container:web:12"), Some(("web", 12)));
        assert_eq!(instance_name("d", "web", 1), "d-web-1");
    }
}
