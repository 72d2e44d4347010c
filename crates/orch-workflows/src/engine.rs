//! Temporal plumbing: the client connection, the worker, and the relay that turns recorded
//! operations into workflow executions.

use std::future::Future;
use std::time::Duration;

use orch_core::OperationKind;
use orch_store::reconcile::{run_kind, ReconcileRun};
use orch_store::{OperationRecord, Store};
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{
    Client, ClientOptions, ClientTlsOptions, Connection, ConnectionOptions, TlsOptions, Url, WorkflowIdConflictPolicy,
    WorkflowStartOptions,
};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::activities::{OperationRef, OrchActivities};
use crate::configure::{AnsibleSettings, ConfigureActivities, ConfigureWorkflow};
use crate::sweep::{PassInput, ReconcileWorkflow, SweepActivities};
use crate::workflows::{DeleteWorkflow, DeployWorkflow, ScaleWorkflow, UpdateWorkflow};

/// The task queue orch's workers poll.
pub const DEFAULT_TASK_QUEUE: &str = "orch";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot connect to Temporal at {host}: {message}")]
    Connect { host: String, message: String },
    #[error("worker: {0}")]
    Worker(String),
    #[error("starting workflow {workflow_id}: {message}")]
    Start { workflow_id: String, message: String },
}

/// How orch proves itself to a secured or hosted Temporal, and checks the server: TLS with
/// an optional CA, client certificate (mTLS) and server name, and an API key (which implies
/// TLS). The default is plain gRPC, as for a dev server.
#[derive(Clone, Default)]
pub struct TemporalSecurity {
    pub tls: Option<TemporalTls>,
    pub api_key: Option<String>,
}

/// TLS to Temporal; without a CA, the system's roots verify the server.
#[derive(Clone, Default)]
pub struct TemporalTls {
    /// PEM certificates of the CA that signed the server's certificate.
    pub server_ca: Option<Vec<u8>>,
    /// The name the server's certificate must carry, when not the host's.
    pub server_name: Option<String>,
    /// PEM certificate and key orch presents (mTLS).
    pub client_identity: Option<(Vec<u8>, Vec<u8>)>,
}

// Neither the key nor the client's private key is ever printed.
impl std::fmt::Debug for TemporalSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tls = self.tls.as_ref().map(|tls| {
            (
                tls.server_ca.is_some(),
                tls.server_name.as_deref(),
                tls.client_identity.is_some(),
            )
        });
        f.debug_struct("TemporalSecurity")
            .field("tls (ca, server name, client certificate)", &tls)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl TemporalSecurity {
    fn uses_tls(&self) -> bool {
        self.tls.is_some() || self.api_key.is_some()
    }

    fn tls_options(&self) -> Option<TlsOptions> {
        let tls = self.tls.as_ref()?;
        let client = tls.client_identity.as_ref().map(|(cert, key)| {
            ClientTlsOptions::builder()
                .client_cert(cert.clone())
                .client_private_key(key.clone())
                .build()
        });
        Some(
            TlsOptions::builder()
                .maybe_server_root_ca_cert(tls.server_ca.clone())
                .maybe_domain(tls.server_name.clone())
                .maybe_client_tls_options(client)
                .build(),
        )
    }
}

/// Connects to the Temporal frontend at `host` (HOST:PORT) over plain gRPC.
pub async fn connect(host: &str, namespace: &str) -> Result<Client, EngineError> {
    connect_secured(host, namespace, &TemporalSecurity::default()).await
}

/// Connects to the Temporal frontend at `host` (HOST:PORT) as `security` says.
#[tracing::instrument(skip(security))]
pub async fn connect_secured(host: &str, namespace: &str, security: &TemporalSecurity) -> Result<Client, EngineError> {
    let connect_error = |message: String| EngineError::Connect {
        host: host.to_owned(),
        message,
    };
    let scheme = if security.uses_tls() { "https" } else { "http" };
    let url = Url::parse(&format!("{scheme}://{host}")).map_err(|error| connect_error(error.to_string()))?;
    let connection = Connection::connect(
        ConnectionOptions::new(url)
            .identity(format!("orch-{}", std::process::id()))
            .connect_timeout(Duration::from_secs(10))
            .maybe_tls_options(security.tls_options())
            .maybe_api_key(security.api_key.clone())
            .build(),
    )
    .await
    .map_err(|error| connect_error(error_chain(&error)))?;
    Client::new(connection, ClientOptions::new(namespace.to_owned()).build())
        .map_err(|error| connect_error(error.to_string()))
}

/// An error and its causes in one line: a TLS failure is only named by its source.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Runs a worker for every orch workflow and activity until `shutdown` resolves; in-flight
/// activities are finished or handed back to Temporal.
pub async fn run_worker(
    client: Client,
    task_queue: &str,
    activities: OrchActivities,
    ansible: AnsibleSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EngineError> {
    let worker_error = |error: &dyn std::fmt::Display| EngineError::Worker(error.to_string());
    let runtime = Runtime::from_current_tokio(Default::default()).map_err(|e| worker_error(&e))?;
    let configure = ConfigureActivities {
        store: activities.store.clone(),
        ansible,
    };
    let sweep = SweepActivities {
        store: activities.store.clone(),
        cloud: activities.cloud.clone(),
        containers: activities.containers.clone(),
        settings: activities.sweep,
    };
    let options = WorkerOptions::new(task_queue)
        .register_activities(activities)
        .register_activities(configure)
        .register_activities(sweep)
        .register_workflow::<DeployWorkflow>()
        .map_err(|e| worker_error(&e))?
        .register_workflow::<DeleteWorkflow>()
        .map_err(|e| worker_error(&e))?
        .register_workflow::<ScaleWorkflow>()
        .map_err(|e| worker_error(&e))?
        .register_workflow::<UpdateWorkflow>()
        .map_err(|e| worker_error(&e))?
        .register_workflow::<ConfigureWorkflow>()
        .map_err(|e| worker_error(&e))?
        .register_workflow::<ReconcileWorkflow>()
        .map_err(|e| worker_error(&e))?
        .build();
    let mut worker = Worker::new(&runtime, client, options).map_err(|e| worker_error(&e))?;
    let stop = worker.shutdown_handle();
    tokio::spawn(async move {
        shutdown.await;
        stop();
    });
    tracing::info!(task_queue, "worker polling");
    worker.run().await.map_err(|e| worker_error(&e))
}

/// The workflow id of an operation: a second start of the same operation is a no-op.
pub fn workflow_id(operation_id: &str) -> String {
    format!("orch-op-{operation_id}")
}

/// Starts the workflow of one recorded operation, idempotently.
#[tracing::instrument(skip(client, operation), fields(operation_id = %operation.id, kind = operation.kind.as_str()))]
pub async fn start_operation(
    client: &Client,
    task_queue: &str,
    operation: &OperationRecord,
) -> Result<(), EngineError> {
    let id = workflow_id(&operation.id);
    let input = OperationRef {
        operation_id: operation.id.clone(),
        deployment_id: operation.deployment_id.clone(),
    };
    let options = WorkflowStartOptions::new(task_queue, &id)
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .build();
    let started = match operation.kind {
        OperationKind::Create => client
            .start_workflow(DeployWorkflow::run, input, options)
            .await
            .map(|_| ()),
        OperationKind::Delete => client
            .start_workflow(DeleteWorkflow::run, input, options)
            .await
            .map(|_| ()),
        OperationKind::Scale => client
            .start_workflow(ScaleWorkflow::run, input, options)
            .await
            .map(|_| ()),
        OperationKind::Update => client
            .start_workflow(UpdateWorkflow::run, input, options)
            .await
            .map(|_| ()),
        OperationKind::Configure => client
            .start_workflow(crate::configure::ConfigureWorkflow::run, input, options)
            .await
            .map(|_| ()),
    };
    match started {
        Ok(()) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
        Err(error) => Err(EngineError::Start {
            workflow_id: id,
            message: error.to_string(),
        }),
    }
}

/// The workflow id of a reconcile run asked for through the API.
pub fn run_workflow_id(run_id: &str) -> String {
    format!("orch-reconcile-{run_id}")
}

/// Starts the workflow of one recorded reconcile run, idempotently.
async fn start_run(client: &Client, task_queue: &str, run: &ReconcileRun) -> Result<(), EngineError> {
    let id = run_workflow_id(&run.id);
    let input = PassInput {
        run_id: Some(run.id.clone()),
        kind: run.kind.clone(),
        locations: Vec::new(),
    };
    let options = WorkflowStartOptions::new(task_queue, &id)
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .build();
    match client.start_workflow(ReconcileWorkflow::run, input, options).await {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
        Err(error) => Err(EngineError::Start {
            workflow_id: id,
            message: error.to_string(),
        }),
    }
}

/// The schedule of one location's reconcile pass for the orch whose workers poll
/// `task_queue` (two installations may share a Temporal namespace).
pub fn schedule_id(task_queue: &str, location: &str) -> String {
    format!("orch-reconcile-{task_queue}-{location}")
}

/// Makes sure each location has its schedule, every `interval`: made when missing, its
/// interval set when it has another. Any number of replicas may ask at once; Temporal keeps
/// one schedule per id, so the pass runs once per interval, not once per replica, and a
/// pass still running when the next is due makes the next one skip.
pub async fn ensure_schedules(
    client: &Client,
    task_queue: &str,
    locations: &[String],
    interval: Duration,
) -> Result<(), EngineError> {
    use temporalio_client::schedules::{
        CreateScheduleOptions, ScheduleAction, ScheduleError, ScheduleOverlapPolicy, ScheduleSpec,
    };
    for location in locations {
        let id = schedule_id(task_queue, location);
        let failed = |error: ScheduleError| EngineError::Start {
            workflow_id: id.clone(),
            message: error.to_string(),
        };
        let input = PassInput {
            run_id: None,
            kind: run_kind::RECONCILE.to_owned(),
            locations: vec![location.clone()],
        };
        let action = ScheduleAction::start_workflow(ReconcileWorkflow::run, input, task_queue, id.clone());
        let options = CreateScheduleOptions::builder()
            .action(action)
            .spec(ScheduleSpec::from_interval(interval))
            .overlap_policy(ScheduleOverlapPolicy::Skip)
            .note(format!("orch's reconcile pass of {location}"))
            .build();
        match client.create_schedule(id.clone(), options).await {
            Ok(_) => tracing::info!(schedule = %id, ?interval, "reconcile schedule created"),
            Err(ScheduleError::Rpc(status)) if status.code() == temporalio_client::tonic::Code::AlreadyExists => {
                keep_interval(client, &id, interval).await.map_err(failed)?;
            }
            Err(error) => return Err(failed(error)),
        }
    }
    Ok(())
}

/// Sets an existing schedule's interval to `interval` unless it is that already.
async fn keep_interval(
    client: &Client,
    id: &str,
    interval: Duration,
) -> Result<(), temporalio_client::schedules::ScheduleError> {
    let handle = client.get_schedule_handle(id.to_owned());
    let description = handle.describe(Default::default()).await?;
    let spec = description
        .raw()
        .schedule
        .as_ref()
        .and_then(|schedule| schedule.spec.as_ref());
    let every: Vec<Duration> = spec
        .into_iter()
        .flat_map(|spec| spec.interval.iter().filter_map(|each| each.interval.as_ref()))
        .map(|every| Duration::new(every.seconds as u64, every.nanos as u32))
        .collect();
    if every == [interval] {
        return Ok(());
    }
    let spec = temporalio_client::schedules::ScheduleSpec::from_interval(interval);
    handle
        .update(
            move |update| {
                update.set_spec(spec);
            },
            Default::default(),
        )
        .await?;
    tracing::info!(schedule = %id, ?interval, "reconcile schedule's interval changed");
    Ok(())
}

/// Keeps a schedule for every location: `configured` ones and, as deployments name new
/// regions or hosts, those too (looked for every minute), until `shutdown`.
pub async fn run_schedules(
    store: Store,
    client: Client,
    task_queue: String,
    configured: Vec<String>,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut ensured: Vec<String> = Vec::new();
    tokio::pin!(shutdown);
    loop {
        match crate::sweep::all_locations(&store, &configured).await {
            Ok(places) => {
                let new: Vec<String> = places.into_iter().filter(|place| !ensured.contains(place)).collect();
                match ensure_schedules(&client, &task_queue, &new, interval).await {
                    Ok(()) => ensured.extend(new),
                    Err(error) => tracing::warn!(%error, "cannot make the reconcile schedules; trying again"),
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list the locations to reconcile"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// Starts every pending operation's and reconcile run's workflow; returns how many it
/// started.
pub async fn relay_once(store: &Store, client: &Client, task_queue: &str) -> Result<usize, EngineError> {
    let runs = store.pending_runs(50).await.map_err(|error| EngineError::Start {
        workflow_id: "-".into(),
        message: error.to_string(),
    })?;
    let mut started = 0;
    for run in &runs {
        match start_run(client, task_queue, run).await {
            Ok(()) => started += 1,
            Err(error) => tracing::warn!(error = %error, "relay could not start a reconcile run; it is retried"),
        }
    }
    started += relay_operations(store, client, task_queue).await?;
    Ok(started)
}

async fn relay_operations(store: &Store, client: &Client, task_queue: &str) -> Result<usize, EngineError> {
    let pending = store
        .pending_operations(200)
        .await
        .map_err(|error| EngineError::Start {
            workflow_id: "-".into(),
            message: error.to_string(),
        })?;
    let mut started = 0;
    for operation in &pending {
        match start_operation(client, task_queue, operation).await {
            Ok(()) => started += 1,
            Err(error) => {
                tracing::warn!(error = %error, "relay could not start an operation; it stays recorded and is retried")
            }
        }
    }
    Ok(started)
}

/// How long the relay's lease lasts, and how often its holder renews it (and a replica
/// standing by asks for it): a dead leader's work waits about a lease, never more.
const RELAY_LEASE: Duration = Duration::from_secs(10);
const RELAY_RENEW: Duration = Duration::from_secs(3);

/// The relay: every operation committed to the database gets its workflow, even if the
/// process that accepted it died right after the commit. One replica at a time relays (the
/// holder of the `relay` lease); the others stand by and take over when its lease runs out
/// or it stops. Starting a workflow is idempotent, so two relays for a moment are harmless.
pub async fn run_relay(
    store: Store,
    client: Client,
    task_queue: String,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let holder = crate::process_unique();
    let mut leading = false;
    let mut asked: Option<std::time::Instant> = None;
    loop {
        if asked.is_none_or(|at| at.elapsed() >= RELAY_RENEW) {
            let now_leading = store.lead("relay", &holder, RELAY_LEASE).await.unwrap_or_else(|error| {
                tracing::warn!(error = %error, "relay: cannot renew the lease");
                false
            });
            if now_leading != leading {
                tracing::info!(
                    holder,
                    leading = now_leading,
                    "relay: {}",
                    if now_leading { "leading" } else { "standing by" }
                );
            }
            leading = now_leading;
            asked = Some(std::time::Instant::now());
            metrics::gauge!("orch_relay_leader").set(f64::from(u8::from(leading)));
        }
        if leading {
            if let Err(error) = relay_once(&store, &client, &task_queue).await {
                tracing::warn!(error = %error, "relay cycle failed");
            }
        }
        tokio::select! {
            () = &mut shutdown => {
                if leading {
                    let _ = store.resign("relay", &holder).await;
                }
                return;
            }
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Whether the Temporal frontend answers its gRPC health check.
pub async fn check_temporal(client: &Client) -> Result<(), String> {
    use temporalio_client::tonic;
    use temporalio_common::protos::grpc::health::v1::HealthCheckRequest;
    let mut health = client.connection().health_service();
    match tokio::time::timeout(
        Duration::from_secs(3),
        health.check(tonic::Request::new(HealthCheckRequest::default())),
    )
    .await
    {
        Ok(Ok(response)) => serving(response.into_inner().status),
        Ok(Err(status)) => Err(format!("Temporal answered {}", status.code())),
        Err(_) => Err("Temporal did not answer in time".into()),
    }
}

/// Only `SERVING` is healthy: a Temporal that answers `NOT_SERVING` (starting, draining)
/// cannot run workflows.
fn serving(status: i32) -> Result<(), String> {
    use temporalio_common::protos::grpc::health::v1::health_check_response::ServingStatus;
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!("Temporal reports {}", other.as_str_name())),
        Err(_) => Err(format!("Temporal reports an unknown health status {status}")),
    }
}

/// A worker on a thread of its own (the SDK's worker future is not `Send`), with its own
/// connection. Dropping the handle stops it.
pub struct WorkerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), EngineError>>>,
}

impl WorkerThread {
    pub fn spawn(
        host: String,
        namespace: String,
        security: TemporalSecurity,
        task_queue: String,
        activities: OrchActivities,
        ansible: AnsibleSettings,
    ) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("orch-worker".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|error| EngineError::Worker(error.to_string()))?;
                runtime.block_on(async move {
                    let client = connect_secured(&host, &namespace, &security).await?;
                    run_worker(client, &task_queue, activities, ansible, async move {
                        let _ = stopped.await;
                    })
                    .await
                })
            })
            .expect("spawning a thread");
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops polling, lets running tasks finish, and waits for the thread.
    pub fn stop(mut self) -> Result<(), EngineError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(EngineError::Worker("the worker thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Events in a workflow's history: how close a deployment gets to Temporal's limits.
pub async fn history_length(client: &Client, workflow_id: &str) -> Result<usize, EngineError> {
    let handle = client.get_workflow_handle::<DeployWorkflow>(workflow_id.to_owned());
    let description = handle
        .describe(temporalio_client::WorkflowDescribeOptions::default())
        .await
        .map_err(|error| EngineError::Start {
            workflow_id: workflow_id.to_owned(),
            message: error.to_string(),
        })?;
    Ok(description.history_length())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_serving_is_healthy() {
        assert!(serving(1).is_ok());
        assert_eq!(serving(2).unwrap_err(), "Temporal reports NOT_SERVING");
        assert!(serving(0).is_err() && serving(3).is_err() && serving(9).is_err());
    }
}
