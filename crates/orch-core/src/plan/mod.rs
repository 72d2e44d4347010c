//! Desired state: the cloud resources a template asks for, each under a logical key that is
//! stable across runs, and the plan between what exists and what is desired.
//!
//! Keys: `network`, `subnet:<name>`, `router`, `router-interface:<subnet>`,
//! `security-group:<name>`, `server:<group>:<index>`, `volume:<group>:<index>:<n>`. Keys never
//! contain `/` or `,`, so they fit into cloud tags.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::deployment::OperationKind;
use crate::provider::Observed;
use crate::template::{SecurityRule, Template};

mod moves;
mod reasons;
mod services;

pub use reasons::Change;
pub use services::{
    container_key, instance_name, parse_container_key, service_spec_hash, ServicePlan, CONTAINER_KINDS,
};

/// Which provider carries a step out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The deployment's cloud region (servers, networks, volumes).
    #[default]
    Cloud,
    /// The deployment's container host (services).
    Containers,
}

/// A step and the provider it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub on: Backend,
    pub step: Step,
}

/// One server to boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSpec {
    pub key: String,
    pub group: String,
    pub index: u32,
    pub flavor: String,
    pub image: String,
    pub subnet: String,
    pub security_groups: Vec<String>,
    pub key_pair: Option<String>,
    pub user_data: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// (key, size in GiB, volume type) per volume.
    pub volumes: Vec<(String, u32, Option<String>)>,
}

/// Everything a template asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredState {
    pub servers: Vec<ServerSpec>,
    pub subnets: Vec<String>,
    pub security_groups: BTreeMap<String, Vec<SecurityRule>>,
    pub router: bool,
}

pub fn server_key(group: &str, index: u32) -> String {
    format!("server:{group}:{index}")
}

/// The group and index of a server key.
pub fn parse_server_key(key: &str) -> Option<(&str, u32)> {
    let rest = key.strip_prefix("server:")?;
    let (group, index) = rest.rsplit_once(':')?;
    Some((group, index.parse().ok()?))
}

impl DesiredState {
    pub fn of(template: &Template) -> Self {
        let mut servers = Vec::new();
        for (group_name, group) in &template.vm_config {
            for index in 0..group.count {
                servers.push(server_spec(template, group_name, index));
            }
        }
        Self {
            servers,
            subnets: template.subnets().map(|(name, _)| name.clone()).collect(),
            security_groups: template
                .security_groups
                .iter()
                .map(|(name, group)| (name.clone(), group.rules.clone()))
                .collect(),
            router: template.wants_router(),
        }
    }

    /// Server keys in creation order.
    pub fn server_keys(&self) -> BTreeSet<String> {
        self.servers.iter().map(|server| server.key.clone()).collect()
    }
}

/// The spec of server `index` of `group`, also for indices beyond the template's count
/// (scale out).
pub fn server_spec(template: &Template, group_name: &str, index: u32) -> ServerSpec {
    let group = &template.vm_config[group_name];
    let key = server_key(group_name, index);
    ServerSpec {
        volumes: group
            .volumes
            .iter()
            .enumerate()
            .map(|(n, volume)| {
                (
                    format!("volume:{group_name}:{index}:{n}"),
                    volume.size_gb,
                    volume.volume_type.clone(),
                )
            })
            .collect(),
        key,
        group: group_name.to_owned(),
        index,
        flavor: group.flavor.clone(),
        image: group.image.clone(),
        subnet: group.subnet_name(group_name).to_owned(),
        security_groups: group.security_groups.clone(),
        key_pair: group.key_pair.clone().or_else(|| template.key_pair.clone()),
        user_data: group.user_data.clone(),
        metadata: group.metadata.clone(),
    }
}

/// What an update does to the servers: create, delete, resize.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPlan {
    pub create: Vec<String>,
    pub delete: Vec<String>,
    /// (key, new flavor).
    pub resize: Vec<(String, String)>,
    /// Servers that exist but lack volumes their group asks for (added by an update, or not
    /// attached before a crash): they get them.
    #[serde(default)]
    pub attach: Vec<String>,
    /// Servers whose group names another image than they were made from, or recorded in
    /// `ERROR` (a reconcile saw it): rebuilt in batches of at most a quarter of their group.
    #[serde(default)]
    pub rebuild: Vec<String>,
    /// Servers recorded `SHUTOFF` (a reconcile saw them stopped outside orch): started.
    #[serde(default)]
    pub start: Vec<String>,
    /// Servers made again, keeping their volumes: on a subnet that is replaced, or on
    /// another subnet than their group names now.
    #[serde(default)]
    pub recreate: Vec<String>,
}

impl ServerPlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.delete.is_empty()
            && self.resize.is_empty()
            && self.attach.is_empty()
            && self.rebuild.is_empty()
            && self.start.is_empty()
            && self.recreate.is_empty()
    }
}

/// Servers that stay and whose recorded status is `status`.
fn recorded_in(recorded: &[Observed], desired: &DesiredState, status: &str) -> Vec<String> {
    let wanted = desired.server_keys();
    recorded
        .iter()
        .filter(|resource| resource.kind == "server" && resource.status == status && wanted.contains(&resource.key))
        .map(|resource| resource.key.clone())
        .collect()
}

/// Servers that exist and stay whose recorded image is not their group's. A server recorded
/// without its image (made before orch recorded it) is left as it is.
fn image_changed(recorded: &[Observed], desired: &DesiredState) -> Vec<String> {
    let images: BTreeMap<&str, &str> = recorded
        .iter()
        .filter(|resource| resource.kind == "server")
        .filter_map(|resource| Some((resource.key.as_str(), resource.attributes["image"].as_str()?)))
        .collect();
    desired
        .servers
        .iter()
        .filter(|server| {
            images
                .get(server.key.as_str())
                .is_some_and(|image| *image != server.image)
        })
        .map(|server| server.key.clone())
        .collect()
}

/// Rebuild batches: per group, at most a quarter of its servers at once (at least one), so
/// that the rest keep serving.
fn rebuild_batches(rebuild: &[String], desired: &DesiredState) -> Vec<Vec<String>> {
    let mut by_group: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for key in rebuild {
        let (group, _) = parse_server_key(key).unwrap_or_default();
        by_group.entry(group).or_default().push(key.clone());
    }
    let mut batches = Vec::new();
    for (group, keys) in by_group {
        let size = desired.servers.iter().filter(|server| server.group == group).count();
        batches.extend(keys.chunks((size / 4).max(1)).map(<[String]>::to_vec));
    }
    batches
}

/// Servers that exist and stay whose volumes are not all recorded attached.
fn lacking_volumes(recorded: &[Observed], existing: &BTreeMap<String, String>, desired: &DesiredState) -> Vec<String> {
    let attached: BTreeSet<&str> = recorded
        .iter()
        .filter(|resource| resource.kind == "volume" && resource.status == "in-use")
        .map(|resource| resource.key.as_str())
        .collect();
    desired
        .servers
        .iter()
        .filter(|server| existing.contains_key(&server.key))
        .filter(|server| {
            server
                .volumes
                .iter()
                .any(|(key, _, _)| !attached.contains(key.as_str()))
        })
        .map(|server| server.key.clone())
        .collect()
}

/// The plan from `existing` servers (key -> flavor they were created with) to `desired`.
/// Servers are deleted newest (highest index) first; an image change is the planner's
/// `rebuild` (from what was recorded), not a delete and create.
pub fn plan_servers(existing: &BTreeMap<String, String>, desired: &DesiredState) -> ServerPlan {
    let wanted: BTreeMap<&str, &ServerSpec> = desired
        .servers
        .iter()
        .map(|server| (server.key.as_str(), server))
        .collect();
    let mut plan = ServerPlan::default();
    for server in &desired.servers {
        match existing.get(&server.key) {
            None => plan.create.push(server.key.clone()),
            Some(flavor) if *flavor != server.flavor => plan.resize.push((server.key.clone(), server.flavor.clone())),
            Some(_) => {}
        }
    }
    let mut delete: Vec<&String> = existing
        .keys()
        .filter(|key| !wanted.contains_key(key.as_str()))
        .collect();
    delete.sort_by_key(|key| std::cmp::Reverse(parse_server_key(key).map(|(_, index)| index)));
    plan.delete = delete.into_iter().cloned().collect();
    plan
}

/// One provider-neutral step of an operation, naming the members (servers) it works on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Make the shared resources exist (network, subnets, router, security groups).
    Prepare,
    /// Create these members, each found by key first.
    Create(Vec<String>),
    /// Wait until these members are ready.
    Wait(Vec<String>),
    /// Make what needs a ready member (volumes).
    Attach(Vec<String>),
    /// Change these members in place to their desired size.
    Resize(Vec<String>),
    /// Rebuild these members in place from their desired image, all at once (one batch),
    /// each ready before the step ends.
    Rebuild(Vec<String>),
    /// Delete these members but keep their volumes: they are made again later in the same
    /// plan (on a replaced or another subnet) and get their volumes back.
    Evict(Vec<String>),
    /// Start these members, stopped outside orch, each ready before the step ends.
    Start(Vec<String>),
    /// Replace these members with their desired spec one at a time, each ready before the
    /// next goes (a changed container image or setting).
    Replace(Vec<String>),
    /// Delete these members with what belongs to them.
    Delete(Vec<String>),
    /// Delete shared resources the template no longer asks for (subnets, security groups,
    /// router interfaces, the router), after the members that used them.
    Prune(Vec<String>),
    /// Delete everything of the deployment.
    DeleteAll,
}

/// What an operation will do, from what is recorded to what is desired. The dry run of an
/// update and the workflow carrying an operation out both read it from here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Whether the shared resources are (re)made: a create and an update do it.
    pub prepare: bool,
    pub servers: ServerPlan,
    pub subnets_to_create: Vec<String>,
    /// Shared resources an update drops: keys recorded that the template no longer has.
    pub prune: Vec<String>,
    /// Subnets (and their router interfaces) deleted before `Prepare` makes them again with
    /// the CIDR or gateway the template now gives them.
    #[serde(default)]
    pub replace_subnets: Vec<String>,
    /// `servers.rebuild`, in the batches they are rebuilt in, one step each.
    #[serde(default)]
    pub rebuild_batches: Vec<Vec<String>>,
    /// A delete: everything goes.
    pub delete_all: bool,
    /// What happens to the containerised services.
    pub services: ServicePlan,
    /// Whether the deployment has (or asks for) anything on a cloud.
    pub cloud: bool,
}

impl Plan {
    /// The plan of an operation of `kind`. `recorded` is what the store holds (servers with
    /// the flavor they were made with); `scale_group` limits a scale to its group, since other
    /// differences wait for an update.
    pub fn for_operation(
        kind: OperationKind,
        recorded: &[Observed],
        desired: &Template,
        scale_group: Option<&str>,
    ) -> Self {
        let cloud = desired.uses_cloud()
            || recorded
                .iter()
                .any(|resource| !CONTAINER_KINDS.contains(&resource.kind.as_str()));
        let services = ServicePlan::for_operation(kind, recorded, desired, scale_group);
        if kind == OperationKind::Delete {
            return Self {
                delete_all: true,
                services,
                cloud,
                ..Self::default()
            };
        }
        Self {
            services,
            cloud,
            ..Self::for_cloud(kind, recorded, desired, scale_group)
        }
    }

    fn for_cloud(kind: OperationKind, recorded: &[Observed], desired: &Template, scale_group: Option<&str>) -> Self {
        let existing: BTreeMap<String, String> = recorded
            .iter()
            .filter(|resource| resource.kind == "server")
            .map(|resource| {
                let flavor = resource.attributes["flavor"].as_str().unwrap_or_default();
                (resource.key.clone(), flavor.to_owned())
            })
            .collect();
        let desired_state = DesiredState::of(desired);
        let mut servers = plan_servers(&existing, &desired_state);
        servers
            .delete
            .extend(parts_without_members(recorded, &existing, &desired_state));
        servers.attach = lacking_volumes(recorded, &existing, &desired_state);
        servers.rebuild = image_changed(recorded, &desired_state);
        for broken in recorded_in(recorded, &desired_state, "ERROR") {
            if !servers.rebuild.contains(&broken) {
                servers.rebuild.push(broken);
            }
        }
        servers.start = recorded_in(recorded, &desired_state, "SHUTOFF");
        servers.resize.retain(|(key, _)| !servers.start.contains(key));
        match kind {
            OperationKind::Create => {
                servers.delete.clear();
                servers.resize.clear();
                servers.rebuild.clear();
                servers.start.clear();
            }
            OperationKind::Scale => {
                let in_group =
                    |key: &String| parse_server_key(key).is_some_and(|(group, _)| Some(group) == scale_group);
                servers.create.retain(in_group);
                servers.delete.retain(in_group);
                servers.attach.retain(in_group);
                servers.resize.clear();
                servers.rebuild.clear();
                servers.start.clear();
            }
            _ => {}
        }
        let mut subnets_to_create: Vec<String> = desired_state
            .subnets
            .iter()
            .filter(|name| !recorded.iter().any(|resource| resource.key == format!("subnet:{name}")))
            .cloned()
            .collect();
        let (prune, replace_subnets) = match kind {
            OperationKind::Update => {
                let replaced = moves::replaced_subnets(recorded, desired);
                let moved = moves::moved_servers(recorded, &desired_state, &replaced);
                servers.recreate = moved.into_keys().collect();
                let again = |key: &String| !servers.recreate.contains(key);
                servers.rebuild.retain(again);
                servers.start.retain(again);
                servers.attach.retain(again);
                servers.resize.retain(|(key, _)| again(key));
                subnets_to_create.extend(replaced.keys().cloned());
                (dropped_shared(recorded, desired), replaced_keys(recorded, &replaced))
            }
            _ => (Vec::new(), Vec::new()),
        };
        let rebuild_batches = rebuild_batches(&servers.rebuild, &desired_state);
        Self {
            prepare: desired.uses_cloud() && matches!(kind, OperationKind::Create | OperationKind::Update),
            rebuild_batches,
            servers,
            subnets_to_create,
            prune,
            replace_subnets,
            ..Self::default()
        }
    }

    /// Every step in the order it runs: the cloud's, then the services' (a delete takes the
    /// services down first, since they may use what the cloud holds).
    pub fn steps(&self) -> Vec<Planned> {
        let on = |backend: Backend| move |step: Step| Planned { on: backend, step };
        let cloud = self.cloud_steps().into_iter().map(on(Backend::Cloud));
        let services = self.services.steps().into_iter().map(on(Backend::Containers));
        match self.delete_all {
            true => services.chain(cloud).collect(),
            false => cloud.chain(services).collect(),
        }
    }

    /// The cloud's steps: shared resources, then new members (created, waited for, given
    /// their volumes), then resizes, then deletes, newest first.
    pub fn cloud_steps(&self) -> Vec<Step> {
        if !self.cloud {
            return Vec::new();
        }
        if self.delete_all {
            return vec![Step::DeleteAll];
        }
        let mut steps = Vec::new();
        // What is made again goes first: its servers (volumes kept), then the subnets that
        // are replaced, which Prepare then makes anew.
        if !self.servers.recreate.is_empty() {
            steps.push(Step::Evict(self.servers.recreate.clone()));
        }
        if !self.replace_subnets.is_empty() {
            steps.push(Step::Prune(self.replace_subnets.clone()));
        }
        if self.prepare {
            steps.push(Step::Prepare);
        }
        let create: Vec<String> = self
            .servers
            .create
            .iter()
            .chain(&self.servers.recreate)
            .cloned()
            .collect();
        if !create.is_empty() {
            steps.extend([
                Step::Create(create.clone()),
                Step::Wait(create.clone()),
                Step::Attach(create),
            ]);
        }
        if !self.servers.attach.is_empty() {
            steps.push(Step::Attach(self.servers.attach.clone()));
        }
        if !self.servers.resize.is_empty() {
            steps.push(Step::Resize(
                self.servers.resize.iter().map(|(key, _)| key.clone()).collect(),
            ));
        }
        if !self.servers.start.is_empty() {
            steps.push(Step::Start(self.servers.start.clone()));
        }
        steps.extend(self.rebuild_batches.iter().cloned().map(Step::Rebuild));
        if !self.servers.delete.is_empty() {
            steps.push(Step::Delete(self.servers.delete.clone()));
        }
        if !self.prune.is_empty() {
            steps.push(Step::Prune(self.prune.clone()));
        }
        steps
    }
}

/// The recorded keys of the replaced subnets and of their router interfaces.
fn replaced_keys(recorded: &[Observed], replaced: &BTreeMap<String, String>) -> Vec<String> {
    let keys: BTreeSet<String> = replaced
        .keys()
        .flat_map(|name| [format!("router-interface:{name}"), format!("subnet:{name}")])
        .collect();
    recorded
        .iter()
        .filter(|resource| keys.contains(&resource.key))
        .map(|resource| resource.key.clone())
        .collect()
}

/// Members that never came to be but left parts behind (a port made in bulk before its
/// server's create failed, a volume): their keys, so that a delete of the member takes the
/// parts with it.
fn parts_without_members(
    recorded: &[Observed],
    existing: &BTreeMap<String, String>,
    desired: &DesiredState,
) -> Vec<String> {
    let wanted = desired.server_keys();
    let owners: BTreeSet<String> = recorded
        .iter()
        .filter_map(|resource| owner_of(&resource.key))
        .filter(|owner| !existing.contains_key(owner) && !wanted.contains(owner))
        .collect();
    let mut owners: Vec<String> = owners.into_iter().collect();
    owners.sort_by_key(|key| std::cmp::Reverse(parse_server_key(key).map(|(_, index)| index)));
    owners
}

/// The member a part belongs to: `port:web:3` and `volume:web:3:0` -> `server:web:3`.
fn owner_of(key: &str) -> Option<String> {
    if let Some(rest) = key.strip_prefix("port:") {
        return parse_server_key(&format!("server:{rest}")).map(|_| format!("server:{rest}"));
    }
    let (member, number) = key.strip_prefix("volume:")?.rsplit_once(':')?;
    number.parse::<u32>().ok()?;
    Some(format!("server:{member}"))
}

/// The shared resources recorded that `desired` no longer asks for: subnets and security
/// groups it dropped, the router interfaces of dropped subnets, and the router (with all
/// its interfaces) when it is no longer enabled.
fn dropped_shared(recorded: &[Observed], desired: &Template) -> Vec<String> {
    let router = desired.wants_router();
    let subnet_wanted = |name: &str| desired.subnets().any(|(known, _)| known == name);
    let wanted = |key: &str| -> bool {
        if let Some(name) = key.strip_prefix("subnet:") {
            subnet_wanted(name)
        } else if let Some(name) = key.strip_prefix("security-group:") {
            desired.security_groups.contains_key(name)
        } else if let Some(name) = key.strip_prefix("router-interface:") {
            router && subnet_wanted(name)
        } else if key == "router" {
            router
        } else {
            true
        }
    };
    let mut dropped: Vec<String> = recorded
        .iter()
        .filter(|resource| !wanted(&resource.key))
        .map(|resource| resource.key.clone())
        .collect();
    dropped.sort();
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(web: u32, flavor: &str) -> Template {
        Template::parse(
            &json!({"name": "t",
                    "vm_config": {"web": {"flavor": flavor, "image": "cirros", "count": web, "volumes": [{"size_gb": 5}]},
                                  "db": {"flavor": "m1.large", "image": "cirros", "count": 1, "subnet": "web"}},
                    "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24"}}}),
            "",
            None,
        )
        .unwrap()
    }

    #[test]
    fn an_image_change_rebuilds_in_batches_of_a_quarter_of_the_group() {
        let made_from = |index: u32, image: Option<&str>| {
            let mut attributes = json!({"flavor": "m1.small"});
            if let Some(image) = image {
                attributes["image"] = json!(image);
            }
            Observed::new(&format!("server:db:{index}"), "server", "s", "ACTIVE", attributes)
        };
        let desired = |count: u32| {
            let mut template = template(0, "m1.small");
            template.vm_config.get_mut("db").unwrap().count = count;
            template.vm_config.get_mut("db").unwrap().image = "ubuntu-22.04".into();
            template
        };
        let recorded: Vec<Observed> = (0..8).map(|index| made_from(index, Some("cirros"))).collect();
        let plan = Plan::for_operation(OperationKind::Update, &recorded, &desired(8), None);
        assert_eq!(plan.servers.rebuild.len(), 8);
        let steps = plan.cloud_steps();
        let rebuilds: Vec<&Step> = steps.iter().filter(|step| matches!(step, Step::Rebuild(_))).collect();
        assert_eq!(rebuilds.len(), 4, "8 servers, 2 at a time: {rebuilds:?}");
        let small = Plan::for_operation(OperationKind::Update, &recorded[..2], &desired(2), None);
        assert_eq!(
            small.rebuild_batches,
            [vec!["server:db:0".to_owned()], vec!["server:db:1".to_owned()]]
        );
        let unknown = [made_from(0, None)];
        let plan = Plan::for_operation(OperationKind::Update, &unknown, &desired(1), None);
        assert!(plan.servers.rebuild.is_empty(), "no image recorded, nothing to compare");
        let scale = Plan::for_operation(OperationKind::Scale, &recorded, &desired(8), Some("db"));
        assert!(
            scale.servers.rebuild.is_empty(),
            "a scale waits for an update to rebuild"
        );
    }

    #[test]
    fn a_server_recorded_in_error_is_rebuilt_and_one_shut_off_is_started() {
        let server = |index: u32, status: &str| {
            let attributes = json!({"flavor": "m1.large", "image": "cirros"});
            Observed::new(&format!("server:db:{index}"), "server", "s", status, attributes)
        };
        let mut desired = template(0, "m1.small");
        desired.vm_config.get_mut("db").unwrap().count = 3;
        let recorded = [server(0, "ACTIVE"), server(1, "ERROR"), server(2, "SHUTOFF")];
        let plan = Plan::for_operation(OperationKind::Update, &recorded, &desired, None);
        assert_eq!(plan.servers.rebuild, ["server:db:1"]);
        assert_eq!(plan.servers.start, ["server:db:2"]);
        let steps = plan.cloud_steps();
        assert!(steps.contains(&Step::Start(vec!["server:db:2".into()])), "{steps:?}");
        assert!(steps.contains(&Step::Rebuild(vec!["server:db:1".into()])), "{steps:?}");
        let actions: Vec<&str> = plan.changes(&recorded, &desired).iter().map(|c| c.action).collect();
        assert!(
            actions.contains(&"start") && actions.contains(&"rebuild"),
            "{actions:?}"
        );
        let create = Plan::for_operation(OperationKind::Create, &recorded, &desired, None);
        assert!(create.servers.start.is_empty() && create.servers.rebuild.is_empty());
    }

    #[test]
    fn servers_that_lack_their_volumes_get_them() {
        let server = |index: u32| {
            Observed::new(
                &format!("server:web:{index}"),
                "server",
                "s",
                "ACTIVE",
                json!({"flavor": "m1.small"}),
            )
        };
        let volume = |index: u32, status: &str| {
            Observed::new(&format!("volume:web:{index}:0"), "volume", "v", status, json!({}))
        };
        let db = Observed::new("server:db:0", "server", "d", "ACTIVE", json!({"flavor": "m1.large"}));
        // web:0 has its volume; web:1's was made but never attached (a crash); web:2 has none.
        let recorded = [
            server(0),
            volume(0, "in-use"),
            server(1),
            volume(1, "creating"),
            server(2),
            db,
        ];
        let desired = template(3, "m1.small");
        for kind in [OperationKind::Create, OperationKind::Update] {
            let plan = Plan::for_operation(kind, &recorded, &desired, None);
            assert_eq!(plan.servers.attach, ["server:web:1", "server:web:2"], "{kind:?}");
            assert!(plan.cloud_steps().contains(&Step::Attach(plan.servers.attach.clone())));
        }
        let scale_db = Plan::for_operation(OperationKind::Scale, &recorded, &desired, Some("db"));
        assert!(scale_db.servers.attach.is_empty(), "a scale touches its group alone");
        let whole = [server(0), volume(0, "in-use")];
        let plan = Plan::for_operation(OperationKind::Update, &whole, &template(1, "m1.small"), None);
        assert!(plan.servers.attach.is_empty());
    }

    #[test]
    fn desired_state_names_every_resource() {
        let desired = DesiredState::of(&template(2, "m1.small"));
        let keys: Vec<&str> = desired.servers.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["server:db:0", "server:web:0", "server:web:1"]);
        assert_eq!(desired.servers[2].volumes, [("volume:web:1:0".to_owned(), 5, None)]);
        assert_eq!(desired.servers[0].subnet, "web");
        assert!(desired.router);
        assert_eq!(parse_server_key("server:web:12"), Some(("web", 12)));
    }

    #[test]
    fn plans_create_delete_newest_first_and_resize() {
        let existing: BTreeMap<String, String> = [
            ("server:web:0", "m1.small"),
            ("server:web:1", "m1.small"),
            ("server:web:2", "m1.small"),
            ("server:db:0", "m1.large"),
        ]
        .into_iter()
        .map(|(k, f)| (k.to_owned(), f.to_owned()))
        .collect();
        let plan = plan_servers(&existing, &DesiredState::of(&template(1, "m1.small")));
        assert_eq!(plan.delete, ["server:web:2", "server:web:1"]);
        assert!(plan.create.is_empty() && plan.resize.is_empty());
        let plan = plan_servers(&existing, &DesiredState::of(&template(4, "m1.medium")));
        assert_eq!(plan.create, ["server:web:3"]);
        assert_eq!(plan.resize.len(), 3);
        assert!(plan_servers(&existing, &DesiredState::of(&template(3, "m1.small"))).is_empty());
    }

    fn server(key: &str, flavor: &str) -> Observed {
        Observed::new(key, "server", "id", "ACTIVE", json!({"flavor": flavor}))
    }

    #[test]
    fn each_operation_has_its_steps() {
        let recorded = [
            server("server:web:0", "m1.small"),
            Observed::new("volume:web:0:0", "volume", "v", "in-use", json!({})),
            server("server:db:0", "m1.large"),
            Observed::new("subnet:web", "subnet", "s", "ACTIVE", json!({})),
        ];
        let create = Plan::for_operation(OperationKind::Create, &[], &template(2, "m1.small"), None);
        let all = vec![
            "server:db:0".to_owned(),
            "server:web:0".to_owned(),
            "server:web:1".to_owned(),
        ];
        assert_eq!(
            create.cloud_steps(),
            [
                Step::Prepare,
                Step::Create(all.clone()),
                Step::Wait(all.clone()),
                Step::Attach(all)
            ]
        );
        assert_eq!(create.subnets_to_create, ["web"]);
        let update = Plan::for_operation(OperationKind::Update, &recorded, &template(0, "m1.small"), None);
        assert_eq!(
            update.cloud_steps(),
            [Step::Prepare, Step::Delete(vec!["server:web:0".into()])]
        );
        assert!(update.subnets_to_create.is_empty());
        let scale = Plan::for_operation(OperationKind::Scale, &recorded, &template(2, "m1.medium"), Some("web"));
        let new = vec!["server:web:1".to_owned()];
        assert_eq!(
            scale.cloud_steps(),
            [Step::Create(new.clone()), Step::Wait(new.clone()), Step::Attach(new)],
            "a scale neither resizes nor touches other groups"
        );
        let delete = Plan::for_operation(OperationKind::Delete, &recorded, &template(2, "m1.small"), None);
        assert_eq!(delete.cloud_steps(), [Step::DeleteAll]);
    }

    #[test]
    fn an_update_prunes_what_the_template_dropped() {
        let recorded = [
            Observed::new("network", "network", "n", "ACTIVE", json!({})),
            Observed::new("subnet:web", "subnet", "s1", "ACTIVE", json!({})),
            Observed::new("subnet:old", "subnet", "s2", "ACTIVE", json!({})),
            Observed::new("router", "router", "r", "ACTIVE", json!({})),
            Observed::new("router-interface:web", "router_interface", "s1", "ACTIVE", json!({})),
            Observed::new("router-interface:old", "router_interface", "s2", "ACTIVE", json!({})),
            Observed::new("security-group:gone", "security_group", "g", "ACTIVE", json!({})),
            server("server:web:0", "m1.small"),
        ];
        let update = Plan::for_operation(OperationKind::Update, &recorded, &template(1, "m1.small"), None);
        assert_eq!(
            update.prune,
            ["router-interface:old", "security-group:gone", "subnet:old"]
        );
        assert_eq!(update.cloud_steps().last(), Some(&Step::Prune(update.prune.clone())));
        let scale = Plan::for_operation(OperationKind::Scale, &recorded, &template(1, "m1.small"), Some("web"));
        assert!(scale.prune.is_empty(), "only an update prunes");
    }

    #[test]
    fn parts_of_members_that_never_came_to_be_go_with_a_delete() {
        let recorded = [
            server("server:web:0", "m1.small"),
            Observed::new("port:web:0", "port", "p0", "ACTIVE", json!({})),
            Observed::new("port:web:1", "port", "p1", "ACTIVE", json!({})),
            Observed::new("port:web:2", "port", "p2", "ACTIVE", json!({})),
            Observed::new("volume:web:2:0", "volume", "v2", "creating", json!({})),
        ];
        // The spec stands for one web server: web:1 and web:2 got ports (and a volume) but
        // no server before the operation that made them failed.
        let revert = Plan::for_operation(OperationKind::Update, &recorded, &template(1, "m1.small"), None);
        assert_eq!(revert.servers.delete, ["server:web:2", "server:web:1"]);
        assert_eq!(owner_of("volume:web:2:0").as_deref(), Some("server:web:2"));
        assert_eq!(owner_of("subnet:web"), None);
    }
}
