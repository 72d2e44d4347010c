//! Activities: every piece of I/O the workflows do, idempotent so that Temporal may run any
//! of them again (at least once). They are the same for every provider: `plan` asks the
//! planner in `orch-core` for the operation's steps, `run_step` hands one step to the
//! provider (which finds by key before it creates and reports each resource at once, so
//! nothing is made twice and nothing is lost), and `finish` writes the outcome back.

use std::sync::Arc;
use std::time::Duration;

use orch_cloud::OpenStack;
use orch_core::deployment::{desired_inputs, desired_template};
use orch_core::plan::{Backend, Plan, Planned, Step};
use orch_core::provider::{Observed, Provider, Target};
use orch_core::{DeploymentStatus, OperationKind, ScaleRequest, Template};
use orch_docker::Docker;
use orch_store::{operation_state, DeploymentRecord, OperationRecord, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::failure::{activity_failure, OrchFailure, StoreFailure};
use crate::report::{heartbeat, StoreReport};
use crate::sweep::{drift_of, write_drift, SweepSettings};

/// What the activities work with: the database and the providers.
pub struct OrchActivities {
    pub store: Store,
    /// `None` for a worker of containers alone: a cloud step then fails, not retried.
    pub cloud: Option<OpenStack>,
    pub containers: Docker,
    /// How the reconcile pass judges orphans.
    pub sweep: SweepSettings,
}

/// Which operation a workflow carries out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRef {
    pub operation_id: String,
    pub deployment_id: String,
}

/// What `begin` learns about the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub kind: OperationKind,
    pub rollback: bool,
    /// The providers the deployment uses, in the order a teardown goes through them.
    #[serde(default)]
    pub backends: Vec<Backend>,
}

/// One step of an operation, for `run_step`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRun {
    pub operation: OperationRef,
    /// The provider the step is for.
    #[serde(default)]
    pub on: Backend,
    pub step: Step,
    /// A step of a compensation: it works towards the spec the deployment stood for before
    /// the operation, not the one the operation asked for.
    pub revert: bool,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Completed,
    Failed(String),
    Deleted,
    /// Back at the spec it stood for before the operation (a cancelled scale or update),
    /// with why.
    Reverted(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    pub operation: OperationRef,
    pub outcome: Outcome,
}

type Failure = OrchFailure;

fn invalid(what: impl std::fmt::Display) -> Failure {
    OrchFailure::Invalid(what.to_string())
}

fn store_failure(error: orch_store::StoreError) -> Failure {
    OrchFailure::Store(StoreFailure::from(error))
}

/// Runs an activity's work while heartbeating every few seconds, so that Temporal sees a slow
/// but living attempt as alive (and does not start a second one beside it), and a dead
/// worker's attempt as dead within the heartbeat timeout. A cancelled activity stops at the
/// next beat.
pub(crate) async fn keep_alive<T>(
    ctx: &ActivityContext,
    work: impl std::future::Future<Output = Result<T, ActivityError>>,
) -> Result<T, ActivityError> {
    let ticker = async {
        loop {
            heartbeat(ctx, "alive".to_owned()).await;
            if ctx.is_cancelled() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    };
    tokio::select! {
        result = work => result,
        () = ticker => Err(ActivityError::cancelled()),
    }
}

/// What the store holds of a deployment, as the provider sees it.
fn observed(resources: Vec<orch_store::ResourceRecord>) -> Vec<Observed> {
    resources.into_iter().map(Observed::from).collect()
}

impl OrchActivities {
    async fn operation(&self, id: &str) -> Result<OperationRecord, Failure> {
        self.store.operation(id).await.map_err(store_failure)
    }

    async fn deployment(&self, id: &str) -> Result<DeploymentRecord, Failure> {
        self.store.deployment(id).await.map_err(store_failure)
    }

    /// The template the operation works towards, its parameters applied.
    fn desired(operation: &OperationRecord, deployment: &DeploymentRecord) -> Result<Template, Failure> {
        desired_template(
            operation.kind,
            &operation.payload,
            &deployment.template,
            &deployment.parameters,
        )
        .map_err(invalid)
    }

    /// The template the deployment stands for now (an update or a scale changes it only when
    /// it succeeds), its parameters applied.
    fn current(deployment: &DeploymentRecord) -> Result<Template, Failure> {
        desired_template(
            OperationKind::Create,
            &Value::Null,
            &deployment.template,
            &deployment.parameters,
        )
        .map_err(invalid)
    }

    /// The steps that bring the deployment back to the spec it stood for before a failed
    /// scale or update.
    async fn revert_steps(&self, operation: &OperationRef) -> Result<Vec<Planned>, Failure> {
        let deployment = self.deployment(&operation.deployment_id).await?;
        let template = Self::current(&deployment)?;
        let recorded = observed(self.store.resources(&deployment.id).await.map_err(store_failure)?);
        Ok(Plan::for_operation(OperationKind::Update, &recorded, &template, None).steps())
    }

    async fn claim(&self, operation: &OperationRef) -> Result<Option<Started>, Failure> {
        let record = self.operation(&operation.operation_id).await?;
        let claimed = match record.state.as_str() {
            operation_state::PENDING => self
                .store
                .claim_operation(&operation.operation_id)
                .await
                .map_err(store_failure)?
                .is_some(),
            operation_state::RUNNING => true,
            _ => false,
        };
        if !claimed && self.operation(&operation.operation_id).await?.state != operation_state::RUNNING {
            return Ok(None);
        }
        let deployment = self.deployment(&operation.deployment_id).await?;
        let template = &deployment.template;
        let backends = [
            (template.uses_containers(), Backend::Containers),
            (template.uses_cloud(), Backend::Cloud),
        ];
        Ok(Some(Started {
            kind: record.kind,
            rollback: deployment.rollback,
            backends: backends
                .into_iter()
                .filter(|(used, _)| *used)
                .map(|(_, backend)| backend)
                .collect(),
        }))
    }

    async fn steps(&self, operation: &OperationRef) -> Result<Vec<Planned>, Failure> {
        let record = self.operation(&operation.operation_id).await?;
        let deployment = self.deployment(&operation.deployment_id).await?;
        if record.kind == OperationKind::Update && record.payload["repair"] == true {
            self.refresh(&deployment).await?;
        }
        let template = Self::desired(&record, &deployment)?;
        let recorded = observed(self.store.resources(&deployment.id).await.map_err(store_failure)?);
        let scale_group = match record.kind {
            OperationKind::Scale => Some(
                serde_json::from_value::<ScaleRequest>(record.payload.clone())
                    .map_err(invalid)?
                    .vm_type,
            ),
            _ => None,
        };
        Ok(Plan::for_operation(record.kind, &recorded, &template, scale_group.as_deref()).steps())
    }

    /// Before a repair is planned: what each provider holds now, written into the records
    /// where it differs, so that the plan repairs exactly that.
    async fn refresh(&self, deployment: &DeploymentRecord) -> Result<(), Failure> {
        let recorded = observed(self.store.resources(&deployment.id).await.map_err(store_failure)?);
        let mut found = Vec::new();
        if deployment.template.uses_containers() {
            let host = self.containers.in_region(&deployment.container_host).await;
            let host = host.map_err(|error| OrchFailure::of_provider(&error))?;
            let drift = drift_of(&host, &deployment.id, &recorded, Backend::Containers).await;
            found.extend(drift.map_err(|error| OrchFailure::of_provider(&error))?);
        }
        if let (true, Some(cloud)) = (deployment.template.uses_cloud(), &self.cloud) {
            let region = cloud.in_region(&deployment.cloud_region).await;
            let region = region.map_err(|error| OrchFailure::of_provider(&error))?;
            let drift = drift_of(&region, &deployment.id, &recorded, Backend::Cloud).await;
            found.extend(drift.map_err(|error| OrchFailure::of_provider(&error))?);
        }
        tracing::info!(deployment_id = %deployment.id, drift = ?found, "repairing");
        write_drift(&self.store, &deployment.id, &recorded, &found)
            .await
            .map_err(store_failure)
    }

    /// Hands one step to the provider it is for.
    async fn dispatch(&self, ctx: &ActivityContext, run: &StepRun) -> Result<(), ActivityError> {
        match run.on {
            Backend::Cloud => match &self.cloud {
                Some(cloud) => self.run(cloud, ctx, run).await,
                None => Err(activity_failure(
                    "run_step",
                    &invalid("this worker has no cloud configured (set OPENSTACK_* or OS_CLOUD)"),
                )),
            },
            Backend::Containers => self.run(&self.containers, ctx, run).await,
        }
    }

    /// Hands one step to `provider`, aimed at the deployment's region or container host.
    async fn run<P: Provider>(&self, provider: &P, ctx: &ActivityContext, run: &StepRun) -> Result<(), ActivityError> {
        let failed = |error: &P::Error| activity_failure("run_step", error);
        let orch_failed = |error: Failure| activity_failure("run_step", &error);
        let record = self.operation(&run.operation.operation_id).await.map_err(orch_failed)?;
        let deployment = self
            .deployment(&run.operation.deployment_id)
            .await
            .map_err(orch_failed)?;
        let template = match run.revert {
            true => Self::current(&deployment),
            false => Self::desired(&record, &deployment),
        }
        .map_err(orch_failed)?;
        let resources = self.store.resources(&deployment.id).await.map_err(store_failure);
        let recorded = observed(resources.map_err(orch_failed)?);
        let target = Target {
            deployment_id: &deployment.id,
            desired: &template,
            recorded: &recorded,
        };
        let place = match run.on {
            Backend::Cloud => &deployment.cloud_region,
            Backend::Containers => &deployment.container_host,
        };
        let provider = provider.in_region(place).await.map_err(|e| failed(&e))?;
        let report = StoreReport {
            store: &self.store,
            deployment_id: &deployment.id,
            ctx,
        };
        let done = provider.carry_out(&run.step, target, &report).await;
        done.map_err(|error| failed(&error))
    }

    async fn write_outcome(&self, finish: &Finish) -> Result<(), Failure> {
        let record = self.operation(&finish.operation.operation_id).await?;
        if record.state != operation_state::RUNNING {
            return Ok(());
        }
        let (succeeded, status, reason) = match &finish.outcome {
            Outcome::Completed => (true, DeploymentStatus::Completed, None),
            Outcome::Deleted => (true, DeploymentStatus::Deleted, None),
            Outcome::Failed(reason) => (false, DeploymentStatus::Failed, Some(reason.as_str())),
            Outcome::Reverted(reason) => (false, DeploymentStatus::Completed, Some(reason.as_str())),
        };
        if succeeded && matches!(record.kind, OperationKind::Update | OperationKind::Scale) {
            self.stand_for_desired(&record, &finish.operation.deployment_id).await?;
        }
        self.store
            .finish_operation(&record.id, succeeded, status, reason)
            .await
            .map_err(store_failure)?;
        crate::durations::record_end(&record, status, chrono::Utc::now());
        Ok(())
    }

    /// After an update or a scale, the deployment stands for the template and parameters the
    /// operation worked towards.
    async fn stand_for_desired(&self, record: &OperationRecord, deployment_id: &str) -> Result<(), Failure> {
        let deployment = self.deployment(deployment_id).await?;
        let (template, parameters) = desired_inputs(
            record.kind,
            &record.payload,
            &deployment.template,
            &deployment.parameters,
        )
        .map_err(invalid)?;
        let template_id = match record.kind {
            OperationKind::Update => record.payload["template_id"].as_str(),
            _ => deployment.template_id.as_deref(),
        };
        self.store
            .set_desired(&deployment.id, template_id, &template, &parameters)
            .await
            .map_err(store_failure)
    }
}

/// How often a running step looks for a cancel.
const CANCEL_POLL: Duration = Duration::from_secs(2);

impl OrchActivities {
    /// Returns once a cancel is asked for the operation (at once if it was already), or
    /// with the store's error when it cannot be asked for long.
    async fn until_cancelled(&self, operation_id: &str) -> Result<(), Failure> {
        let mut failures = 0;
        loop {
            match self.store.cancel_requested(operation_id).await {
                Ok(true) => return Ok(()),
                Ok(false) => failures = 0,
                // The database away for a moment must not fail the step; for a minute, it does.
                Err(error) if failures < 30 => {
                    failures += 1;
                    tracing::warn!(%error, "cannot look for a cancel");
                }
                Err(error) => return Err(store_failure(error)),
            }
            tokio::time::sleep(CANCEL_POLL).await;
        }
    }
}

/// An activity's own failure, counted and converted with its kind.
fn failed(activity: &'static str) -> impl Fn(Failure) -> ActivityError {
    move |error| activity_failure(activity, &error)
}

#[activities]
impl OrchActivities {
    /// Claims the operation. `None` when it was cancelled before any workflow ran (a delete of
    /// a pending deployment), in which case the workflow does nothing.
    #[activity]
    pub async fn begin(
        self: Arc<Self>,
        _ctx: ActivityContext,
        operation: OperationRef,
    ) -> Result<Option<Started>, ActivityError> {
        self.claim(&operation).await.map_err(failed("begin"))
    }

    /// The operation's steps, in the order they run, from what the store recorded to what
    /// the operation asks for.
    #[activity]
    pub async fn plan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        operation: OperationRef,
    ) -> Result<Vec<Planned>, ActivityError> {
        self.steps(&operation).await.map_err(failed("plan"))
    }

    /// The steps back to the spec before a failed scale or update.
    #[activity]
    pub async fn revert_plan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        operation: OperationRef,
    ) -> Result<Vec<Planned>, ActivityError> {
        self.revert_steps(&operation).await.map_err(failed("revert_plan"))
    }

    /// Carries out one step with the deployment's provider, heartbeating while it works. A
    /// forward step stops when a cancel is asked for (what it made so far is recorded, or
    /// found by tag, for the compensation); a compensation's steps always run to the end.
    #[activity]
    pub async fn run_step(self: Arc<Self>, ctx: ActivityContext, run: StepRun) -> Result<(), ActivityError> {
        let work = keep_alive(&ctx, self.dispatch(&ctx, &run));
        if run.revert || matches!(run.step, Step::DeleteAll) {
            return work.await;
        }
        tokio::select! {
            result = work => result,
            cancelled = self.until_cancelled(&run.operation.operation_id) => {
                Err(failed("run_step")(cancelled.map_or_else(|error| error, |()| OrchFailure::Cancelled)))
            }
        }
    }

    /// Whether a cancel was asked for the operation: the workflow's compensation reads it.
    #[activity]
    pub async fn cancel_requested(
        self: Arc<Self>,
        _ctx: ActivityContext,
        operation: OperationRef,
    ) -> Result<bool, ActivityError> {
        (self.store.cancel_requested(&operation.operation_id).await)
            .map_err(|error| failed("cancel_requested")(store_failure(error)))
    }

    /// Writes the end of the operation back: status, cause, and (after an update or a scale)
    /// the template and parameters the deployment now stands for.
    #[activity]
    pub async fn finish(self: Arc<Self>, _ctx: ActivityContext, finish: Finish) -> Result<(), ActivityError> {
        self.write_outcome(&finish).await.map_err(failed("finish"))
    }

    /// Appends a progress event (e.g. compensation started).
    #[activity]
    pub async fn note(
        self: Arc<Self>,
        _ctx: ActivityContext,
        note: (OperationRef, String, Value),
    ) -> Result<(), ActivityError> {
        let (operation, action, detail) = note;
        self.store
            .record_event(&operation.deployment_id, &action, detail)
            .await
            .map_err(|error| failed("note")(store_failure(error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::provider::Classified;
    use serde_json::json;

    #[test]
    fn records_reach_the_provider_with_their_keys_and_ids() {
        let record = orch_store::ResourceRecord {
            logical_key: "server:web:0".into(),
            kind: "server".into(),
            cloud_id: Some("s-1".into()),
            status: "ACTIVE".into(),
            attributes: json!({"flavor": "m1.small"}),
            created_at: String::new(),
            updated_at: String::new(),
        };
        let unnamed = orch_store::ResourceRecord {
            cloud_id: None,
            logical_key: "volume:web:0:0".into(),
            ..record.clone()
        };
        let seen = observed(vec![record, unnamed]);
        assert_eq!(
            seen[0],
            Observed::new("server:web:0", "server", "s-1", "ACTIVE", json!({"flavor": "m1.small"}))
        );
        assert_eq!(seen[1].id, "", "a resource recorded before the cloud gave it an id");
    }

    #[test]
    fn a_step_run_survives_the_trip_through_temporal() {
        let run = StepRun {
            operation: OperationRef {
                operation_id: "o".into(),
                deployment_id: "d".into(),
            },
            on: Backend::Containers,
            step: Step::Create(vec!["server:web:0".into()]),
            revert: false,
        };
        let text = serde_json::to_string(&run).unwrap();
        assert_eq!(serde_json::from_str::<StepRun>(&text).unwrap(), run);
    }

    #[test]
    fn a_document_that_no_longer_reads_is_not_retried() {
        let error = invalid("the template no longer reads");
        assert_eq!((error.kind(), error.is_retryable()), ("invalid", false));
    }
}
