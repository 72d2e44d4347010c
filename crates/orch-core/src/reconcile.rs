//! Reconcile, the pure half: which of the resources carrying orch's mark in a region are
//! orphans, and how what a provider holds of a live deployment differs from what the store
//! recorded (drift). The providers list; the store remembers; this decides.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use serde_json::Value;

use crate::problem::Problems;
use crate::provider::Observed;
use crate::reader::{self, Object};

/// `POST /orphans/cleanup`: `{"dry_run": true}` lists what would go and removes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanupRequest {
    pub dry_run: bool,
}

impl CleanupRequest {
    pub fn parse(body: &Value) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let Some(mut object) = Object::new(body, "", &mut problems) else {
            return Err(problems);
        };
        let dry_run = match object.optional("dry_run") {
            Some(value) => reader::boolean(value, "/dry_run", &mut problems),
            None => Some(false),
        };
        object.finish(&mut problems);
        match dry_run {
            Some(dry_run) if problems.is_empty() => Ok(Self { dry_run }),
            _ => Err(problems),
        }
    }
}

/// A resource that carries orch's deployment mark (tag, metadata or label), as a provider
/// lists it in one region or on one host. Nothing without the mark is ever listed, so
/// nothing without it is ever judged or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marked {
    /// The provider's kind: `server`, `port`, `network`, `container`, ...
    pub kind: String,
    pub id: String,
    pub name: String,
    /// The deployment the mark names.
    pub deployment_id: String,
    /// The logical key the mark names, when it carries one.
    pub key: Option<String>,
}

/// What the store knows of a deployment a mark names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// Live and at rest: these provider ids and logical keys are recorded.
    Live {
        ids: HashSet<String>,
        keys: HashSet<String>,
    },
    /// An operation is in flight: what it makes may not be recorded yet, so nothing of it
    /// is judged until it ends.
    Busy,
    /// Deleted: everything still marked for it is left over.
    Deleted,
}

/// Why a resource is an orphan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrphanReason {
    /// The mark names a deployment the store never had.
    UnknownDeployment,
    /// The mark names a deployment that was deleted.
    DeploymentDeleted,
    /// The deployment is live but holds no resource under this key.
    KeyNotHeld,
    /// The deployment holds the key, but under another id: a duplicate.
    Duplicate,
}

impl OrphanReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownDeployment => "unknown_deployment",
            Self::DeploymentDeleted => "deployment_deleted",
            Self::KeyNotHeld => "key_not_held",
            Self::Duplicate => "duplicate",
        }
    }
}

/// The orphans among `marked`, given what the store holds of each deployment named
/// (absent: unknown). A resource of a live deployment without a key is never an orphan:
/// it cannot be told apart from one the deployment uses.
pub fn orphans(marked: &[Marked], holdings: &HashMap<String, Holding>) -> Vec<(Marked, OrphanReason)> {
    marked
        .iter()
        .filter_map(|resource| {
            let reason = match holdings.get(&resource.deployment_id) {
                None => OrphanReason::UnknownDeployment,
                Some(Holding::Deleted) => OrphanReason::DeploymentDeleted,
                Some(Holding::Busy) => return None,
                Some(Holding::Live { ids, keys }) => {
                    let key = resource.key.as_ref()?;
                    match (ids.contains(&resource.id), keys.contains(key)) {
                        (true, _) => return None,
                        (false, true) => OrphanReason::Duplicate,
                        (false, false) => OrphanReason::KeyNotHeld,
                    }
                }
            };
            Some((resource.clone(), reason))
        })
        .collect()
}

/// How one recorded resource differs from what the provider holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// Recorded, but the provider no longer has it.
    Gone,
    /// A server in `ERROR`.
    Error,
    /// A server shut off, or a container stopped.
    Stopped { state: String },
    /// A server running another flavor than the one recorded.
    Resized { recorded: String, actual: String },
    /// A security group lacking rules orch made in it.
    RulesMissing { rules: Vec<String> },
}

impl Problem {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Error => "error",
            Self::Stopped { .. } => "stopped",
            Self::Resized { .. } => "resized",
            Self::RulesMissing { .. } => "rules_missing",
        }
    }
}

/// One drifted resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub key: String,
    pub kind: String,
    pub id: String,
    #[serde(flatten)]
    pub problem: Problem,
}

/// Kinds whose absence is drift. Others (router interfaces, which the provider lists under
/// the router, ports an instance made) are found through what they belong to.
const WATCHED_KINDS: [&str; 8] = [
    "network",
    "subnet",
    "router",
    "security_group",
    "server",
    "volume",
    "container",
    "container_network",
];

/// Container states in which an instance does not serve and the engine will not bring it
/// back by itself (a restarting or paused one is left to the engine).
pub const STOPPED_CONTAINER: [&str; 4] = ["exited", "dead", "created", "removing"];

/// How the provider's `observed` differs from what was `recorded`, in recorded order.
pub fn drift(recorded: &[Observed], observed: &[Observed]) -> Vec<Drift> {
    let by_id: BTreeMap<&str, &Observed> = observed.iter().map(|found| (found.id.as_str(), found)).collect();
    recorded
        .iter()
        .filter(|resource| WATCHED_KINDS.contains(&resource.kind.as_str()) && !resource.id.is_empty())
        .filter_map(|resource| {
            let problem = match by_id.get(resource.id.as_str()) {
                None => Problem::Gone,
                Some(found) => problem_of(resource, found)?,
            };
            Some(Drift {
                key: resource.key.clone(),
                kind: resource.kind.clone(),
                id: resource.id.clone(),
                problem,
            })
        })
        .collect()
}

fn problem_of(recorded: &Observed, found: &Observed) -> Option<Problem> {
    match recorded.kind.as_str() {
        "server" => {
            match found.status.as_str() {
                "ERROR" => return Some(Problem::Error),
                "SHUTOFF" => {
                    return Some(Problem::Stopped {
                        state: found.status.clone(),
                    })
                }
                _ => {}
            }
            let recorded_flavor = recorded.attributes["flavor"].as_str()?;
            let actual = found.attributes["flavor"].as_str()?;
            (recorded_flavor != actual).then(|| Problem::Resized {
                recorded: recorded_flavor.to_owned(),
                actual: actual.to_owned(),
            })
        }
        "security_group" => {
            let held: HashSet<&str> = strings(&found.attributes["rules"])?.into_iter().collect();
            let missing: Vec<String> = strings(&recorded.attributes["rules"])?
                .into_iter()
                .filter(|rule| !held.contains(rule))
                .map(str::to_owned)
                .collect();
            (!missing.is_empty()).then_some(Problem::RulesMissing { rules: missing })
        }
        "container" => STOPPED_CONTAINER
            .contains(&found.status.as_str())
            .then(|| Problem::Stopped {
                state: found.status.clone(),
            }),
        _ => None,
    }
}

/// A JSON array of strings; `None` for anything else (nothing recorded to compare).
fn strings(value: &Value) -> Option<Vec<&str>> {
    value.as_array()?.iter().map(Value::as_str).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_cleanup_request_is_read_strictly() {
        assert_eq!(
            CleanupRequest::parse(&json!({})).unwrap(),
            CleanupRequest { dry_run: false }
        );
        assert!(CleanupRequest::parse(&json!({"dry_run": true})).unwrap().dry_run);
        let problems = CleanupRequest::parse(&json!({"dry_run": "yes", "all": 1})).unwrap_err();
        let pointers: Vec<&str> = problems.0.iter().map(|problem| problem.pointer.as_str()).collect();
        assert_eq!(pointers, ["/dry_run", "/all"]);
        assert!(CleanupRequest::parse(&json!([])).is_err());
    }

    fn marked(deployment: &str, id: &str, key: Option<&str>) -> Marked {
        Marked {
            kind: "server".into(),
            id: id.into(),
            name: format!("orch-{id}"),
            deployment_id: deployment.into(),
            key: key.map(str::to_owned),
        }
    }

    fn live(ids: &[&str], keys: &[&str]) -> Holding {
        Holding::Live {
            ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            keys: keys.iter().map(|key| (*key).to_owned()).collect(),
        }
    }

    #[test]
    fn orphans_are_what_no_live_deployment_holds() {
        let holdings = HashMap::from([
            ("live".to_owned(), live(&["s1"], &["server:web:0"])),
            ("busy".to_owned(), Holding::Busy),
            ("gone".to_owned(), Holding::Deleted),
        ]);
        let found = [
            marked("live", "s1", Some("server:web:0")),
            marked("live", "s2", Some("server:web:0")),
            marked("live", "s3", Some("server:web:7")),
            marked("live", "s4", None),
            marked("busy", "s5", Some("server:web:0")),
            marked("gone", "s6", Some("server:web:0")),
            marked("never", "s7", None),
        ];
        let judged: Vec<(&str, OrphanReason)> = orphans(&found, &holdings)
            .iter()
            .map(|(resource, reason)| (found.iter().find(|m| m.id == resource.id).unwrap().id.as_str(), *reason))
            .collect();
        assert_eq!(
            judged,
            [
                ("s2", OrphanReason::Duplicate),
                ("s3", OrphanReason::KeyNotHeld),
                ("s6", OrphanReason::DeploymentDeleted),
                ("s7", OrphanReason::UnknownDeployment),
            ]
        );
    }

    fn server(key: &str, id: &str, status: &str, flavor: &str) -> Observed {
        Observed::new(key, "server", id, status, json!({"flavor": flavor}))
    }

    #[test]
    fn drift_names_what_is_gone_broken_stopped_or_resized() {
        let recorded = [
            server("server:web:0", "a", "ACTIVE", "small"),
            server("server:web:1", "b", "ACTIVE", "small"),
            server("server:web:2", "c", "ACTIVE", "small"),
            server("server:web:3", "d", "ACTIVE", "small"),
            server("server:web:4", "e", "ACTIVE", "small"),
            Observed::new("network", "network", "n", "ACTIVE", json!({})),
            Observed::new("router-interface:app", "router_interface", "ri", "ACTIVE", json!({})),
            Observed::new("container:db:0", "container", "k", "healthy", json!({})),
        ];
        let observed = [
            server("server:web:0", "a", "ACTIVE", "small"),
            server("server:web:2", "c", "ERROR", "small"),
            server("server:web:3", "d", "SHUTOFF", "small"),
            server("server:web:4", "e", "ACTIVE", "large"),
            Observed::new("network", "network", "n", "present", json!({})),
            Observed::new("container:db:0", "container", "k", "exited", json!({})),
        ];
        let problems: Vec<(String, &str)> = drift(&recorded, &observed)
            .iter()
            .map(|found| (found.key.clone(), found.problem.as_str()))
            .collect();
        let expected = [
            ("server:web:1", "gone"),
            ("server:web:2", "error"),
            ("server:web:3", "stopped"),
            ("server:web:4", "resized"),
            ("container:db:0", "stopped"),
        ];
        assert_eq!(
            problems,
            expected.map(|(key, problem)| (key.to_owned(), problem)).to_vec()
        );
        assert!(drift(&observed[..1], &observed[..1]).is_empty());
    }

    #[test]
    fn a_security_group_missing_a_rule_orch_made_drifted() {
        let group = |rules: Value| {
            Observed::new(
                "security-group:web",
                "security_group",
                "g",
                "ACTIVE",
                json!({"rules": rules}),
            )
        };
        let recorded = [group(json!([
            "ingress IPv4 tcp 22-22 0.0.0.0/0",
            "ingress IPv4 tcp 443-443 0.0.0.0/0"
        ]))];
        // The cloud's own egress rules are not orch's concern.
        let whole = [group(json!([
            "egress IPv4 any *-* any",
            "ingress IPv4 tcp 22-22 0.0.0.0/0",
            "ingress IPv4 tcp 443-443 0.0.0.0/0"
        ]))];
        assert!(drift(&recorded, &whole).is_empty());
        let found = drift(&recorded, &[group(json!(["ingress IPv4 tcp 22-22 0.0.0.0/0"]))]);
        assert_eq!(
            found[0].problem,
            Problem::RulesMissing {
                rules: vec!["ingress IPv4 tcp 443-443 0.0.0.0/0".into()]
            }
        );
        let unrecorded = [Observed::new(
            "security-group:web",
            "security_group",
            "g",
            "ACTIVE",
            json!({}),
        )];
        assert!(drift(&unrecorded, &whole).is_empty(), "made before orch recorded rules");
    }
}
