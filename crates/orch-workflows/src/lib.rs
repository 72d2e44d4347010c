//! orch's workflow layer: every recorded operation runs as a Temporal workflow.
//!
//! # Layout
//! - [`workflows`]: `DeployWorkflow`, `DeleteWorkflow`, `ScaleWorkflow`, `UpdateWorkflow`
//!   (deterministic; no I/O).
//! - [`configure`]: `ConfigureWorkflow` and its `ansible-playbook` activity.
//! - [`activities`]: all I/O: cloud calls through `orch-cloud`, state through `orch-store`.
//! - [`devserver`]: a local Temporal dev server as a child process.
//! - [`engine`]: Temporal connection, worker, and the relay that starts recorded operations.

pub mod activities;
pub mod configure;
pub mod devserver;
pub mod engine;
pub mod workflows;

pub use activities::OrchActivities;
pub use configure::AnsibleSettings;
pub use engine::{
    check_temporal, connect, history_length, relay_once, run_relay, run_worker, start_operation, workflow_id,
    WorkerThread, DEFAULT_TASK_QUEUE,
};
pub use temporalio_client::Client as TemporalClient;
