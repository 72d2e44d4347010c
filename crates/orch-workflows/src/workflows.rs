//! The workflows, named as in the API's operation kinds. They are deterministic: every piece
//! of I/O is an activity. Each claims its operation (`begin`), asks for its steps (`plan`),
//! runs them one after another (a create in parallel batches), and writes the outcome back
//! (`finish`). A failed deploy deletes what it created unless the request asked to keep it;
//! a failed scale or update brings the deployment back to the spec it stood for.

#![allow(unreachable_pub)]

use std::time::Duration;

use orch_core::plan::{Backend, Planned, Step};
use orch_core::OperationKind;
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityExecutionError, ActivityOptions, WorkflowContext, WorkflowResult};

use crate::activities::{Finish, OperationRef, OrchActivities, Outcome, StepRun};

/// Servers per create activity: small enough to retry cheaply, large enough that a
/// 1,000-server deployment stays far from Temporal's history limits.
const SERVERS_PER_BATCH: usize = 50;

/// Retry policy of every activity: exponential backoff from 1 s to 30 s, 10 attempts.
/// Non-retryable failures (quota, unknown flavor, bad request) stop at once.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(30))
        .maximum_attempts(10)
        .build()
}

pub(crate) fn short() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(retry_policy())
        .build()
}

/// Long, heartbeating activities: a dead worker is noticed within the heartbeat timeout and
/// the activity runs again elsewhere.
fn long() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(3600))
        .heartbeat_timeout(Duration::from_secs(15))
        .retry_policy(retry_policy())
        .build()
}

/// The innermost message of an activity failure: the cause a user can act on.
pub(crate) fn failure_message(error: &ActivityExecutionError) -> String {
    let mut message = error.to_string();
    let mut failure = error.failure();
    while let Some(current) = failure {
        if !current.message.is_empty() {
            message = current.message.clone();
        }
        failure = current.cause.as_deref();
    }
    message
}

async fn run_step<W>(
    ctx: &WorkflowContext<W>,
    operation: &OperationRef,
    planned: Planned,
) -> Result<(), ActivityExecutionError> {
    carry_out_step(ctx, operation, planned, false).await
}

/// One step; `revert`: towards the spec before the operation (a compensation).
async fn carry_out_step<W>(
    ctx: &WorkflowContext<W>,
    operation: &OperationRef,
    planned: Planned,
    revert: bool,
) -> Result<(), ActivityExecutionError> {
    let run = StepRun {
        operation: operation.clone(),
        on: planned.on,
        step: planned.step,
        revert,
    };
    ctx.execute_activity(OrchActivities::run_step, run, long()).await
}

/// Runs the planned steps in order; a create runs as parallel batches.
async fn carry_out<W>(ctx: &WorkflowContext<W>, operation: &OperationRef) -> Result<(), ActivityExecutionError> {
    let steps = ctx
        .execute_activity(OrchActivities::plan, operation.clone(), short())
        .await?;
    for planned in steps {
        if let Step::Create(keys) = &planned.step {
            let creates = keys.chunks(SERVERS_PER_BATCH).map(|chunk| {
                let batch = Planned {
                    on: planned.on,
                    step: Step::Create(chunk.to_vec()),
                };
                run_step(ctx, operation, batch)
            });
            for result in temporalio_workflow::join_all(creates).await {
                result?;
            }
        } else {
            run_step(ctx, operation, planned).await?;
        }
    }
    Ok(())
}

async fn finish<W>(ctx: &WorkflowContext<W>, operation: &OperationRef, outcome: Outcome) -> WorkflowResult<String> {
    let summary = format!("{outcome:?}");
    let finish = Finish {
        operation: operation.clone(),
        outcome,
    };
    ctx.execute_activity(OrchActivities::finish, finish, short()).await?;
    Ok(summary)
}

async fn note_compensation<W>(ctx: &WorkflowContext<W>, operation: &OperationRef, reason: &str) -> WorkflowResult<()> {
    let note = (
        operation.clone(),
        "compensation.started".to_owned(),
        serde_json::json!({"reason": reason}),
    );
    ctx.execute_activity(OrchActivities::note, note, short()).await?;
    Ok(())
}

/// Deletes what a failed deploy made, on every provider the deployment uses; the reason
/// says whether that worked too.
async fn compensate<W>(
    ctx: &WorkflowContext<W>,
    operation: &OperationRef,
    backends: &[Backend],
    reason: String,
) -> WorkflowResult<String> {
    note_compensation(ctx, operation, &reason).await?;
    let teardown = async {
        for on in backends {
            let planned = Planned {
                on: *on,
                step: Step::DeleteAll,
            };
            run_step(ctx, operation, planned).await?;
        }
        Ok::<_, ActivityExecutionError>(())
    };
    let reason = match teardown.await {
        Ok(()) => reason,
        Err(cleanup) => format!("{reason}; compensation failed: {}", failure_message(&cleanup)),
    };
    finish(ctx, operation, Outcome::Failed(reason)).await
}

/// Brings a deployment whose scale or update failed (or was cancelled) back to the spec it
/// stood for: what the operation created goes, what it removed or resized comes back. A
/// cancelled one that got back ends COMPLETED at the old spec; a failed one ends FAILED.
async fn revert<W>(
    ctx: &WorkflowContext<W>,
    operation: &OperationRef,
    reason: String,
    cancelled: bool,
) -> WorkflowResult<String> {
    note_compensation(ctx, operation, &reason).await?;
    let reverted = async {
        let steps = ctx
            .execute_activity(OrchActivities::revert_plan, operation.clone(), short())
            .await?;
        for step in steps {
            carry_out_step(ctx, operation, step, true).await?;
        }
        Ok::<_, ActivityExecutionError>(())
    };
    let outcome = match reverted.await {
        Ok(()) if cancelled => Outcome::Reverted(format!("{reason}; reverted to the previous spec")),
        Ok(()) => Outcome::Failed(format!("{reason}; reverted to the previous spec")),
        Err(cleanup) => Outcome::Failed(format!("{reason}; compensation failed: {}", failure_message(&cleanup))),
    };
    finish(ctx, operation, outcome).await
}

/// Every operation but configure: claim, plan, carry out, write the outcome back.
async fn run_operation<W>(ctx: &WorkflowContext<W>, operation: OperationRef) -> WorkflowResult<String> {
    let Some(started) = ctx
        .execute_activity(OrchActivities::begin, operation.clone(), short())
        .await?
    else {
        return Ok("cancelled before it started".into());
    };
    let error = match carry_out(ctx, &operation).await {
        Ok(()) if started.kind == OperationKind::Delete => return finish(ctx, &operation, Outcome::Deleted).await,
        Ok(()) => return finish(ctx, &operation, Outcome::Completed).await,
        Err(error) => error,
    };
    // A cancelled operation is compensated whatever its rollback flag said.
    let cancelled = ctx
        .execute_activity(OrchActivities::cancel_requested, operation.clone(), short())
        .await?;
    let reason = match cancelled {
        true => "cancelled".to_owned(),
        false => failure_message(&error),
    };
    match started.kind {
        OperationKind::Create if started.rollback || cancelled => {
            compensate(ctx, &operation, &started.backends, reason).await
        }
        OperationKind::Scale | OperationKind::Update => revert(ctx, &operation, reason, cancelled).await,
        _ => finish(ctx, &operation, Outcome::Failed(reason)).await,
    }
}

/// The workflow types stay apart (the relay starts each by the operation's kind, and
/// Temporal lists them by name), but share one body.
macro_rules! operation_workflow {
    ($($name:ident),*) => {$(
        #[workflow]
        #[derive(Default)]
        pub struct $name;

        #[workflow_methods]
        impl $name {
            #[run]
            pub async fn run(ctx: &mut WorkflowContext<Self>, operation: OperationRef) -> WorkflowResult<String> {
                run_operation(ctx, operation).await
            }
        }
    )*};
}

operation_workflow!(DeployWorkflow, DeleteWorkflow, ScaleWorkflow, UpdateWorkflow);
