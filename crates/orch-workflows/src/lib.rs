//! orch's workflow layer: every recorded operation runs as a Temporal workflow.
//!
//! # Layout
//! - [`workflows`]: `DeployWorkflow`, `DeleteWorkflow`, `ScaleWorkflow`, `UpdateWorkflow`
//!   (deterministic; no I/O).
//! - [`configure`]: `ConfigureWorkflow` and its `ansible-playbook` activity;
//!   [`known_hosts`]: SSH host keys trusted on first contact per deployment.
//! - [`activities`]: all I/O, the same for every provider: the plan from `orch-core`, each
//!   step handed to the provider (`orch-cloud` for OpenStack), state through `orch-store`.
//!   `failure` keeps each error's kind across the activity boundary; `report` records what
//!   a provider reports the moment it reports it.
//! - [`devserver`]: a local Temporal dev server as a child process.
//! - `durations`: how long workflows and deployments took, recorded at their end.
//! - [`engine`]: Temporal connection, worker, and the relay that starts recorded operations
//!   and reconcile runs, and the reconcile schedules.
//! - [`sweep`]: `ReconcileWorkflow`: orphans, drift and their cleanup, per location.
//! - [`reconcile`]: the container watcher that repairs lost instances at once.

// Functions stay short enough to read at once (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

pub mod activities;
pub mod configure;
pub mod devserver;
mod durations;
pub mod engine;
mod failure;
pub mod known_hosts;
pub mod reconcile;
mod report;
pub mod sweep;
pub mod workflows;

pub use activities::OrchActivities;
pub use configure::AnsibleSettings;
pub use engine::{
    check_temporal, connect, connect_secured, ensure_schedules, history_length, relay_once, run_relay, run_schedules,
    run_worker, run_workflow_id, schedule_id, start_operation, workflow_id, TemporalSecurity, TemporalTls,
    WorkerThread, DEFAULT_TASK_QUEUE,
};
pub use temporalio_client::Client as TemporalClient;

/// The process id and the time in nanoseconds: unique per process and call, also across
/// hosts whose processes share an id (a relay's lease holder, a run's work directory).
pub(crate) fn process_unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    format!("{}-{nanos}", std::process::id())
}
