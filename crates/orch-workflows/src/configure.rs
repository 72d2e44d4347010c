//! Configuration with Ansible: not carried out yet. The workflow exists so that a recorded
//! configure operation ends (FAILED, with the reason) instead of waiting forever.

#![allow(unreachable_pub)]

use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

use crate::activities::{Finish, OperationRef, OrchActivities, Outcome};

#[workflow]
#[derive(Default)]
pub struct ConfigureWorkflow;

#[workflow_methods]
impl ConfigureWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, operation: OperationRef) -> WorkflowResult<String> {
        let options = temporalio_sdk::ActivityOptions::start_to_close_timeout(std::time::Duration::from_secs(60));
        if ctx
            .execute_activity(OrchActivities::begin, operation.clone(), options.clone())
            .await?
            .is_none()
        {
            return Ok("cancelled before it started".into());
        }
        let outcome =
            Outcome::Failed("configuration with ansible-playbook is not available in this version of orch".into());
        ctx.execute_activity(OrchActivities::finish, Finish { operation, outcome }, options)
            .await?;
        Ok("not available".into())
    }
}
