//! The workflows, named as in seed 001. They are deterministic: every piece of I/O is an
//! activity. Each starts with `begin` (claims the operation), ends with `finish` (writes the
//! outcome back), and on failure compensates: a failed deploy deletes what it created unless
//! the request asked to keep it.

#![allow(unreachable_pub)]

use std::time::Duration;

use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityExecutionError, ActivityOptions, WorkflowContext, WorkflowResult};

use crate::activities::{Batch, Finish, OperationRef, OrchActivities, Outcome};

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

fn short() -> ActivityOptions {
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

fn batches(operation: &OperationRef, keys: &[String]) -> Vec<Batch> {
    keys.chunks(SERVERS_PER_BATCH)
        .map(|chunk| Batch {
            operation: operation.clone(),
            keys: chunk.to_vec(),
        })
        .collect()
}

/// Creates servers in parallel batches, waits for all with one poller, attaches volumes.
async fn create_servers<W>(
    ctx: &WorkflowContext<W>,
    operation: &OperationRef,
    keys: &[String],
) -> Result<(), ActivityExecutionError> {
    if keys.is_empty() {
        return Ok(());
    }
    let creates = batches(operation, keys)
        .into_iter()
        .map(|batch| ctx.execute_activity(OrchActivities::create_servers, batch, long()));
    for result in temporalio_workflow::join_all(creates).await {
        result?;
    }
    let all = Batch {
        operation: operation.clone(),
        keys: keys.to_vec(),
    };
    ctx.execute_activity(OrchActivities::wait_for_servers, all.clone(), long())
        .await?;
    ctx.execute_activity(OrchActivities::attach_volumes, all, long())
        .await?;
    Ok(())
}

async fn finish<W>(ctx: &WorkflowContext<W>, operation: &OperationRef, outcome: Outcome) -> WorkflowResult<String> {
    let summary = format!("{outcome:?}");
    ctx.execute_activity(
        OrchActivities::finish,
        Finish {
            operation: operation.clone(),
            outcome,
        },
        short(),
    )
    .await?;
    Ok(summary)
}

/// Deletes everything of the deployment (compensation of a failed deploy, or a delete).
async fn delete_everything<W>(
    ctx: &WorkflowContext<W>,
    operation: &OperationRef,
) -> Result<(), ActivityExecutionError> {
    ctx.execute_activity(
        OrchActivities::delete_resources,
        Batch {
            operation: operation.clone(),
            keys: Vec::new(),
        },
        long(),
    )
    .await
}

#[workflow]
#[derive(Default)]
pub struct DeployWorkflow;

#[workflow_methods]
impl DeployWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, operation: OperationRef) -> WorkflowResult<String> {
        let Some(started) = ctx
            .execute_activity(OrchActivities::begin, operation.clone(), short())
            .await?
        else {
            return Ok("cancelled before it started".into());
        };
        let steps = async {
            ctx.execute_activity(OrchActivities::provision_network, operation.clone(), long())
                .await?;
            let plan = ctx
                .execute_activity(OrchActivities::servers_to_create, operation.clone(), short())
                .await?;
            create_servers(ctx, &operation, &plan.servers.create).await
        };
        match steps.await {
            Ok(()) => finish(ctx, &operation, Outcome::Completed).await,
            Err(error) => {
                let reason = failure_message(&error);
                if started.rollback {
                    let note = (
                        operation.clone(),
                        "compensation.started".to_owned(),
                        serde_json::json!({"reason": reason}),
                    );
                    ctx.execute_activity(OrchActivities::note, note, short()).await?;
                    if let Err(cleanup) = delete_everything(ctx, &operation).await {
                        let reason = format!("{reason}; compensation failed: {}", failure_message(&cleanup));
                        return finish(ctx, &operation, Outcome::Failed(reason)).await;
                    }
                }
                finish(ctx, &operation, Outcome::Failed(reason)).await
            }
        }
    }
}

#[workflow]
#[derive(Default)]
pub struct DeleteWorkflow;

#[workflow_methods]
impl DeleteWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, operation: OperationRef) -> WorkflowResult<String> {
        if ctx
            .execute_activity(OrchActivities::begin, operation.clone(), short())
            .await?
            .is_none()
        {
            return Ok("cancelled before it started".into());
        }
        match delete_everything(ctx, &operation).await {
            Ok(()) => finish(ctx, &operation, Outcome::Deleted).await,
            Err(error) => finish(ctx, &operation, Outcome::Failed(failure_message(&error))).await,
        }
    }
}

/// Scale and update share their shape: plan, create, resize, delete (newest first).
async fn change<W>(
    ctx: &WorkflowContext<W>,
    operation: &OperationRef,
    provision: bool,
) -> Result<(), ActivityExecutionError> {
    if provision {
        ctx.execute_activity(OrchActivities::provision_network, operation.clone(), long())
            .await?;
    }
    let plan = ctx
        .execute_activity(OrchActivities::servers_to_create, operation.clone(), short())
        .await?;
    create_servers(ctx, operation, &plan.servers.create).await?;
    if !plan.servers.resize.is_empty() {
        let keys = plan.servers.resize.iter().map(|(key, _)| key.clone()).collect();
        ctx.execute_activity(
            OrchActivities::resize_servers,
            Batch {
                operation: operation.clone(),
                keys,
            },
            long(),
        )
        .await?;
    }
    if !plan.servers.delete.is_empty() {
        let batch = Batch {
            operation: operation.clone(),
            keys: plan.servers.delete.clone(),
        };
        ctx.execute_activity(OrchActivities::delete_resources, batch, long())
            .await?;
    }
    Ok(())
}

#[workflow]
#[derive(Default)]
pub struct ScaleWorkflow;

#[workflow_methods]
impl ScaleWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, operation: OperationRef) -> WorkflowResult<String> {
        if ctx
            .execute_activity(OrchActivities::begin, operation.clone(), short())
            .await?
            .is_none()
        {
            return Ok("cancelled before it started".into());
        }
        match change(ctx, &operation, false).await {
            Ok(()) => finish(ctx, &operation, Outcome::Completed).await,
            Err(error) => finish(ctx, &operation, Outcome::Failed(failure_message(&error))).await,
        }
    }
}

#[workflow]
#[derive(Default)]
pub struct UpdateWorkflow;

#[workflow_methods]
impl UpdateWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, operation: OperationRef) -> WorkflowResult<String> {
        if ctx
            .execute_activity(OrchActivities::begin, operation.clone(), short())
            .await?
            .is_none()
        {
            return Ok("cancelled before it started".into());
        }
        match change(ctx, &operation, true).await {
            Ok(()) => finish(ctx, &operation, Outcome::Completed).await,
            Err(error) => finish(ctx, &operation, Outcome::Failed(failure_message(&error))).await,
        }
    }
}
