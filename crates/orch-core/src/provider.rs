//! The provider boundary. The planner ([`crate::plan`]) turns an operation into
//! provider-neutral [`Step`](crate::plan::Step)s, each naming logical keys; a provider (the
//! OpenStack client in `orch-cloud`, the container engine beside it) carries them out. The
//! workflows and activities are the same for every provider: they hand a step to the
//! provider, and record what it reports.
//!
//! A provider keeps three promises:
//! - **Find by key before create.** Every resource carries its deployment and logical key
//!   (tags, labels or a deterministic name), so running a step again adopts what an earlier
//!   attempt made instead of making it twice.
//! - **Report at once.** Each resource is passed to [`Report::record`] the moment the
//!   provider knows its id, before the provider goes on, so a crash loses nothing.
//! - **Say what kind of failure it is.** Errors implement [`Classified`], so the workflow
//!   retries what a retry can fix and stops at once on what it cannot.

use std::collections::BTreeMap;
use std::future::Future;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::Step;
use crate::reconcile::Marked;
use crate::template::Template;

/// A resource as the provider holds it (or as the store recorded it), under its logical key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub key: String,
    /// `network`, `subnet`, `router`, `router_interface`, `security_group`, `port`,
    /// `server`, `volume`, ...: the provider's own resource kinds.
    pub kind: String,
    /// The provider's id of the resource.
    pub id: String,
    pub status: String,
    pub attributes: Value,
}

impl Observed {
    pub fn new(key: &str, kind: &str, id: &str, status: &str, attributes: Value) -> Self {
        Self {
            key: key.to_owned(),
            kind: kind.to_owned(),
            id: id.to_owned(),
            status: status.to_owned(),
            attributes,
        }
    }
}

/// What a step works on: one deployment, the template it works towards, and what the store
/// has recorded of it so far.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub deployment_id: &'a str,
    pub desired: &'a Template,
    pub recorded: &'a [Observed],
}

impl Target<'_> {
    /// The provider id recorded under `key`.
    pub fn recorded_id(&self, key: &str) -> Option<&str> {
        self.recorded
            .iter()
            .find(|resource| resource.key == key)
            .map(|resource| resource.id.as_str())
    }

    /// The attributes recorded under `key`.
    pub fn recorded_attributes(&self, key: &str) -> Option<&Value> {
        self.recorded
            .iter()
            .find(|resource| resource.key == key)
            .map(|resource| &resource.attributes)
    }
}

/// A failure's kind, kept across the activity boundary: a stable label for metrics and
/// Temporal's failure type, and whether trying again can help.
pub trait Classified {
    fn kind(&self) -> &'static str;
    fn is_retryable(&self) -> bool;
}

/// The store could not record what the provider reported.
#[derive(Debug, Clone, thiserror::Error)]
#[error("recording {key}: {message}")]
pub struct RecordFailed {
    pub key: String,
    pub message: String,
    pub retryable: bool,
}

/// A host port asked for, for one named port of one member.
#[derive(Debug, Clone, Copy)]
pub struct PortRequest<'a> {
    pub host: &'a str,
    pub address: &'a str,
    pub protocol: &'a str,
    pub key: &'a str,
    pub name: &'a str,
    /// The ports orch may lease on this host.
    pub range: (u16, u16),
    /// Ports found held by something outside orch.
    pub avoid: &'a [u16],
}

/// Where a provider reports, as it goes, what it made, what it waited for and what it left.
pub trait Report: Sync {
    /// Records `resource` durably; the provider goes on only once this returns.
    fn record(&self, resource: Observed) -> impl Future<Output = Result<(), RecordFailed>> + Send;
    /// Records that the resources under `keys` are gone; no keys: everything of the deployment.
    fn gone(&self, keys: &[String]) -> impl Future<Output = Result<(), RecordFailed>> + Send;
    /// Appends an event to the deployment's history (e.g. what a teardown left).
    fn event(&self, action: &str, detail: Value) -> impl Future<Output = Result<(), RecordFailed>> + Send;
    /// Leases a host port: the same one on every call for the same member and port name
    /// (unless it is in `avoid`), never one another member holds.
    fn lease_port(&self, request: PortRequest<'_>) -> impl Future<Output = Result<u16, RecordFailed>> + Send;
    /// The deployment's secrets, decrypted, by name. Read by the provider itself, so that no
    /// value ever passes through the workflow's history.
    fn secrets(&self) -> impl Future<Output = Result<BTreeMap<String, SecretString>, RecordFailed>> + Send;
    /// A sign of life with what was just done; best effort.
    fn progress(&self, what: &str) -> impl Future<Output = ()> + Send;
}

/// One provider: it carries out the planner's steps for a deployment in one region.
pub trait Provider: Clone + Send + Sync + 'static {
    type Error: std::error::Error + Classified + From<RecordFailed> + Send + Sync + 'static;

    /// The same provider, aimed at `region`.
    fn in_region(&self, region: &str) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// Carries out one step of the plan (see [`Step`] for what each asks). A step may run
    /// again after a crash or a retry: what an earlier attempt made is found by key, not
    /// made twice.
    fn carry_out(
        &self,
        step: &Step,
        target: Target<'_>,
        report: &impl Report,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// What the provider holds of the deployment, found by key, with each resource's own
    /// status (and a server's `flavor` among its attributes), for drift.
    fn observe(&self, deployment_id: &str) -> impl Future<Output = Result<Vec<Observed>, Self::Error>> + Send;

    /// Everything in this region or on this host that carries orch's deployment mark,
    /// whichever deployment it names.
    fn marked(&self) -> impl Future<Output = Result<Vec<Marked>, Self::Error>> + Send;

    /// Removes `orphans`, dependents first. Each is looked for by id; one already gone is
    /// not an error.
    fn remove_orphans(&self, orphans: &[Marked]) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
