//! How long operations take, under the seed's names: `workflow_execution_duration_seconds`
//! (by workflow) from an operation's start to its end, and `deployment_duration_seconds`
//! (by the status it ended in) from a deployment's request to the end of its create.
//! Recorded where the end is written, in the worker's process.

use chrono::{DateTime, Utc};
use orch_core::{DeploymentStatus, OperationKind};
use orch_store::{seconds_between, OperationRecord};

/// The workflow that carries out an operation of `kind`.
pub fn workflow_name(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Create => "DeployWorkflow",
        OperationKind::Update => "UpdateWorkflow",
        OperationKind::Delete => "DeleteWorkflow",
        OperationKind::Scale => "ScaleWorkflow",
        OperationKind::Configure => "ConfigureWorkflow",
    }
}

/// Records the end of `operation`, which left its deployment in `status`.
pub fn record_end(operation: &OperationRecord, status: DeploymentStatus, now: DateTime<Utc>) {
    let started = operation.started_at.as_deref().unwrap_or(&operation.created_at);
    if let Some(seconds) = seconds_between(started, now) {
        metrics::histogram!("workflow_execution_duration_seconds", "workflow" => workflow_name(operation.kind))
            .record(seconds);
    }
    if operation.kind == OperationKind::Create {
        if let Some(seconds) = seconds_between(&operation.created_at, now) {
            metrics::histogram!("deployment_duration_seconds", "status" => status.as_str()).record(seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_from_the_recorded_times() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T10:00:30.500Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(seconds_between("2026-12-02T10:00:00.000Z", now), Some(30.5));
        assert_eq!(
            seconds_between("2026-12-02T10:01:00Z", now),
            Some(0.0),
            "never negative"
        );
        assert_eq!(seconds_between("yesterday", now), None);
        assert_eq!(workflow_name(OperationKind::Create), "DeployWorkflow");
        assert_eq!(workflow_name(OperationKind::Configure), "ConfigureWorkflow");
    }
}
