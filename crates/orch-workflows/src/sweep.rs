//! The reconcile pass, as a workflow: per location (a cloud region or a container host) it
//! lists everything carrying orch's deployment mark, records the orphans among it (what no
//! live deployment holds), and compares each live deployment there with what the provider
//! holds (drift), repairing at once those that asked for `auto_heal`. A cleanup run removes
//! the orphans past their grace period, each checked again just before. A Temporal Schedule
//! per location starts the pass (one schedule, however many replicas ask for it);
//! `POST /reconcile` and `POST /orphans/cleanup` start a run through the store's outbox.

#![allow(unreachable_pub)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use orch_cloud::OpenStack;
use orch_core::plan::{Backend, CONTAINER_KINDS};
use orch_core::provider::{Observed, Provider};
use orch_core::reconcile::{drift, orphans, Drift, Holding, Marked, OrphanReason, Problem};
use orch_core::DeploymentStatus;
use orch_docker::{ContainerHosts, Docker};
use orch_store::deployments::DeploymentFilter;
use orch_store::reconcile::run_kind;
use orch_store::resources::ResourceUpsert;
use orch_store::{Actor, DeploymentRecord, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

use crate::activities::keep_alive;
use crate::failure::{activity_failure, OrchFailure, StoreFailure};

/// Deployments read per page.
const PAGE: i64 = 100;

/// What the pass needs besides the providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepSettings {
    /// How long a resource must stay orphaned before it is listed and may be removed: what
    /// a create has just made is recorded a moment later.
    pub orphan_grace_seconds: u64,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            orphan_grace_seconds: 600,
        }
    }
}

pub struct SweepActivities {
    pub store: Store,
    pub cloud: Option<OpenStack>,
    pub containers: Docker,
    pub settings: SweepSettings,
}

/// What a pass is asked to do: `kind` is a [`run_kind`]; no locations means every one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassInput {
    /// The run recorded by the API; a scheduled pass has none and is its workflow id.
    #[serde(default)]
    pub run_id: Option<String>,
    pub kind: String,
    #[serde(default)]
    pub locations: Vec<String>,
}

/// One location of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceRun {
    pub run_id: String,
    pub kind: String,
    pub location: String,
}

/// What a run found or did at one location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceResult {
    pub location: String,
    /// Orphans known there after the pass (in their grace period or not).
    pub orphans: usize,
    /// Of them, first seen by this pass.
    pub new_orphans: usize,
    /// Orphans removed (a cleanup).
    pub removed: Vec<String>,
    /// Deployments found drifted, and those a repair was asked for.
    pub drifted: Vec<String>,
    pub healed: Vec<String>,
    pub error: Option<String>,
}

/// A location's name in the store and in metrics: `cloud:<region>` or `containers:<host>`.
pub fn location(backend: Backend, name: &str) -> String {
    match backend {
        Backend::Cloud => format!("cloud:{name}"),
        Backend::Containers => format!("containers:{name}"),
    }
}

/// The locations a worker or server is configured for: the cloud's region and every
/// container host.
pub fn configured_locations(cloud: Option<&OpenStack>, hosts: &ContainerHosts) -> Vec<String> {
    let region = cloud.map(|cloud| location(Backend::Cloud, cloud.region()));
    let hosts = hosts.names().map(|host| location(Backend::Containers, host));
    region.into_iter().chain(hosts).collect()
}

/// `configured`, and every location a deployment ever used, each once, sorted.
pub async fn all_locations(store: &Store, configured: &[String]) -> Result<Vec<String>, StoreError> {
    let (regions, hosts) = store.locations_in_use().await?;
    let mut places: Vec<String> = configured.to_vec();
    places.extend(regions.iter().map(|name| location(Backend::Cloud, name)));
    places.extend(hosts.iter().map(|name| location(Backend::Containers, name)));
    places.sort();
    places.dedup();
    Ok(places)
}

/// Every `COMPLETED` deployment that `keep` picks, read a page at a time.
pub(crate) async fn completed_deployments(
    store: &Store,
    keep: impl Fn(&DeploymentRecord) -> bool,
) -> Result<Vec<DeploymentRecord>, StoreError> {
    let mut kept = Vec::new();
    let mut offset = 0;
    loop {
        let filter = DeploymentFilter {
            status: Some(DeploymentStatus::Completed),
            name: None,
            limit: PAGE,
            offset,
        };
        let page = store.deployments(&filter).await?;
        let done = page.items.len() < PAGE as usize;
        kept.extend(page.items.into_iter().filter(|deployment| keep(deployment)));
        if done {
            return Ok(kept);
        }
        offset += PAGE;
    }
}

fn parse_location(location: &str) -> Option<(Backend, &str)> {
    match location.split_once(':')? {
        ("cloud", name) => Some((Backend::Cloud, name)),
        ("containers", name) => Some((Backend::Containers, name)),
        _ => None,
    }
}

fn store_failed(activity: &'static str) -> impl Fn(StoreError) -> ActivityError {
    move |error| activity_failure(activity, &OrchFailure::Store(StoreFailure::from(error)))
}

fn provider_failed<E: orch_core::provider::Classified + std::fmt::Display>(
    activity: &'static str,
) -> impl Fn(E) -> ActivityError {
    move |error| activity_failure(activity, &error)
}

/// Whether a recorded resource is one `backend` holds.
fn held_by(resource: &Observed, backend: Backend) -> bool {
    CONTAINER_KINDS.contains(&resource.kind.as_str()) == (backend == Backend::Containers)
}

/// How `deployment`'s resources at `backend` differ from what `provider` holds.
pub(crate) async fn drift_of<P: Provider>(
    provider: &P,
    deployment_id: &str,
    recorded: &[Observed],
    backend: Backend,
) -> Result<Vec<Drift>, P::Error> {
    let observed = provider.observe(deployment_id).await?;
    let recorded: Vec<Observed> = recorded
        .iter()
        .filter(|resource| held_by(resource, backend))
        .cloned()
        .collect();
    Ok(drift(&recorded, &observed))
}

/// Writes what drift found into the records, so that the planner repairs it: what is gone is
/// forgotten (and made again), a server's status and flavor are what the cloud says (an
/// `ERROR` one is rebuilt, a `SHUTOFF` one started, a resized one resized back), a stopped
/// container is forgotten (and made again, on its leased ports), and a security group's
/// missing rules are left to `Prepare`, which makes them.
pub(crate) async fn write_drift(
    store: &Store,
    deployment_id: &str,
    recorded: &[Observed],
    found: &[Drift],
) -> Result<(), StoreError> {
    for finding in found {
        let Some(resource) = recorded.iter().find(|resource| resource.key == finding.key) else {
            continue;
        };
        let (status, attributes) = match (&finding.problem, resource.kind.as_str()) {
            (Problem::Gone, _) | (Problem::Stopped { .. }, "container") => {
                store.mark_resource_deleted(deployment_id, &finding.key).await?;
                continue;
            }
            // The update's Prepare makes every rule of the template that is missing.
            (Problem::RulesMissing { .. }, _) => continue,
            (Problem::Error, _) => ("ERROR".to_owned(), resource.attributes.clone()),
            (Problem::Stopped { state }, _) => (state.clone(), resource.attributes.clone()),
            (Problem::Resized { actual, .. }, _) => {
                let mut attributes = resource.attributes.clone();
                attributes["flavor"] = json!(actual);
                (resource.status.clone(), attributes)
            }
        };
        let upsert = ResourceUpsert {
            deployment_id,
            logical_key: &resource.key,
            kind: &resource.kind,
            cloud_id: Some(&resource.id),
            status: &status,
            attributes: &attributes,
        };
        store.record_resource(&upsert).await?;
    }
    Ok(())
}

impl SweepActivities {
    /// The locations of a pass: those asked for, else every configured one and every one a
    /// deployment ever used.
    async fn locations(&self, asked: &[String]) -> Result<Vec<String>, StoreError> {
        if !asked.is_empty() {
            return Ok(asked.to_vec());
        }
        all_locations(
            &self.store,
            &configured_locations(self.cloud.as_ref(), self.containers.hosts()),
        )
        .await
    }

    /// The completed deployments at a location, with resources of that backend.
    async fn live_at(&self, backend: Backend, name: &str) -> Result<Vec<DeploymentRecord>, StoreError> {
        completed_deployments(&self.store, |deployment| match backend {
            Backend::Cloud => deployment.cloud_region == name && deployment.template.uses_cloud(),
            Backend::Containers => deployment.container_host == name && deployment.template.uses_containers(),
        })
        .await
    }

    /// The orphans among what `provider` holds with orch's mark, and what the store holds of
    /// each deployment a mark names.
    async fn orphans_held_by<P: Provider>(
        &self,
        provider: &P,
        activity: &'static str,
    ) -> Result<(Vec<(Marked, OrphanReason)>, HashMap<String, Holding>), ActivityError> {
        let marked = provider.marked().await.map_err(provider_failed(activity))?;
        let named: HashSet<String> = marked.iter().map(|found| found.deployment_id.clone()).collect();
        let holdings = self.store.holdings(&named).await.map_err(store_failed(activity))?;
        Ok((orphans(&marked, &holdings), holdings))
    }

    /// Finds the orphans and the drift at one location.
    async fn sweep<P: Provider>(
        &self,
        provider: &P,
        backend: Backend,
        place: &PlaceRun,
    ) -> Result<PlaceResult, ActivityError> {
        const ACTIVITY: &str = "sweep_place";
        let name = parse_location(&place.location).map_or("", |(_, name)| name);
        let provider = provider.in_region(name).await.map_err(provider_failed(ACTIVITY))?;
        let (found, holdings) = self.orphans_held_by(&provider, ACTIVITY).await?;
        let new = (self.store.record_orphans(&place.location, &found).await).map_err(store_failed(ACTIVITY))?;
        for orphan in &new {
            tracing::warn!(location = %place.location, kind = %orphan.kind, id = %orphan.id, name = %orphan.name,
                deployment = %orphan.deployment_id, "orphaned resource found");
            if holdings.contains_key(&orphan.deployment_id) {
                let detail =
                    json!({"location": place.location, "kind": orphan.kind, "id": orphan.id, "name": orphan.name});
                let event = self.store.record_event(&orphan.deployment_id, "orphan.found", detail);
                event.await.map_err(store_failed(ACTIVITY))?;
            }
        }
        let mut result = PlaceResult {
            location: place.location.clone(),
            orphans: found.len(),
            new_orphans: new.len(),
            ..PlaceResult::default()
        };
        let live = self.live_at(backend, name).await.map_err(store_failed(ACTIVITY))?;
        for deployment in live {
            self.check_drift(&provider, backend, &deployment, &mut result).await?;
        }
        Ok(result)
    }

    /// Compares one live deployment; records what differs, and asks for a repair when the
    /// deployment heals itself.
    async fn check_drift<P: Provider>(
        &self,
        provider: &P,
        backend: Backend,
        deployment: &DeploymentRecord,
        result: &mut PlaceResult,
    ) -> Result<(), ActivityError> {
        const ACTIVITY: &str = "sweep_place";
        let recorded: Vec<Observed> = (self.store.resources(&deployment.id).await)
            .map_err(store_failed(ACTIVITY))?
            .into_iter()
            .map(Observed::from)
            .collect();
        let found = drift_of(provider, &deployment.id, &recorded, backend)
            .await
            .map_err(provider_failed(ACTIVITY))?;
        let new = (self.store.record_drift(&deployment.id, &found).await).map_err(store_failed(ACTIVITY))?;
        if !new.is_empty() {
            tracing::warn!(deployment_id = %deployment.id, drift = ?new, "deployment drifted");
            let event = self
                .store
                .record_event(&deployment.id, "drift.found", json!({"drift": new}));
            event.await.map_err(store_failed(ACTIVITY))?;
        }
        if found.is_empty() {
            return Ok(());
        }
        result.drifted.push(deployment.id.clone());
        if deployment.auto_heal {
            let actor = Actor {
                key_id: Some("reconciler".to_owned()),
                request_id: None,
            };
            match self.store.request_repair(&deployment.id, &actor).await {
                Ok(_) => result.healed.push(deployment.id.clone()),
                // Another operation started meanwhile; the next pass looks again.
                Err(StoreError::Conflict(_)) => {}
                Err(error) => return Err(store_failed(ACTIVITY)(error)),
            }
        }
        Ok(())
    }

    /// Removes the orphans at one location that are past their grace period and still
    /// orphans now.
    async fn clean<P: Provider>(&self, provider: &P, place: &PlaceRun) -> Result<PlaceResult, ActivityError> {
        const ACTIVITY: &str = "clean_place";
        let name = parse_location(&place.location).map_or("", |(_, name)| name);
        let listed = (self
            .store
            .orphans(self.settings.orphan_grace_seconds, Some(&place.location))
            .await)
            .map_err(store_failed(ACTIVITY))?;
        let mut result = PlaceResult {
            location: place.location.clone(),
            ..PlaceResult::default()
        };
        if listed.is_empty() {
            return Ok(result);
        }
        let provider = provider.in_region(name).await.map_err(provider_failed(ACTIVITY))?;
        let (still, _) = self.orphans_held_by(&provider, ACTIVITY).await?;
        let still: HashSet<String> = still.into_iter().map(|(orphan, _)| orphan.id).collect();
        let doomed: Vec<_> = listed
            .iter()
            .filter(|orphan| still.contains(&orphan.resource_id))
            .map(orch_store::reconcile::OrphanRecord::marked)
            .collect();
        provider
            .remove_orphans(&doomed)
            .await
            .map_err(provider_failed(ACTIVITY))?;
        // Only what went: one adopted meanwhile is not this run's, and the next pass sees it.
        let ids: Vec<String> = doomed.iter().map(|orphan| orphan.id.clone()).collect();
        let removed = self.store.orphans_removed(&place.location, &ids, &place.run_id);
        removed.await.map_err(store_failed(ACTIVITY))?;
        for orphan in &doomed {
            tracing::info!(location = %place.location, kind = %orphan.kind, id = %orphan.id, name = %orphan.name, "orphan removed");
        }
        result.removed = doomed.into_iter().map(|orphan| orphan.id).collect();
        Ok(result)
    }

    async fn at_place(&self, place: &PlaceRun) -> Result<PlaceResult, ActivityError> {
        let Some((backend, _)) = parse_location(&place.location) else {
            let failure = OrchFailure::Invalid(format!("'{}' is not a location", place.location));
            return Err(activity_failure("sweep_place", &failure));
        };
        let cleanup = place.kind == run_kind::CLEANUP;
        match backend {
            Backend::Cloud => {
                let Some(cloud) = &self.cloud else {
                    let failure = OrchFailure::Invalid("this worker has no cloud configured".into());
                    return Err(activity_failure("sweep_place", &failure));
                };
                match cleanup {
                    true => self.clean(cloud, place).await,
                    false => self.sweep(cloud, backend, place).await,
                }
            }
            Backend::Containers => match cleanup {
                true => self.clean(&self.containers, place).await,
                false => self.sweep(&self.containers, backend, place).await,
            },
        }
    }
}

#[activities]
impl SweepActivities {
    /// Records the run as started; the locations it goes through.
    #[activity]
    pub async fn begin_pass(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: PassInput,
    ) -> Result<Vec<String>, ActivityError> {
        let run_id = input.run_id.unwrap_or_default();
        let start = self.store.start_run(&run_id, &input.kind);
        start.await.map_err(store_failed("begin_pass"))?;
        self.locations(&input.locations)
            .await
            .map_err(store_failed("begin_pass"))
    }

    /// One location of a pass or a cleanup, heartbeating while it works.
    #[activity]
    pub async fn at_location(
        self: Arc<Self>,
        ctx: ActivityContext,
        place: PlaceRun,
    ) -> Result<PlaceResult, ActivityError> {
        keep_alive(&ctx, self.at_place(&place)).await
    }

    /// Ends the run with what each location gave.
    #[activity]
    pub async fn finish_pass(
        self: Arc<Self>,
        _ctx: ActivityContext,
        end: (String, Vec<PlaceResult>),
    ) -> Result<(), ActivityError> {
        let (run_id, places) = end;
        let failed: Vec<String> = places
            .iter()
            .filter_map(|place| Some(format!("{}: {}", place.location, place.error.as_ref()?)))
            .collect();
        let error = (!failed.is_empty()).then(|| failed.join("; "));
        let by_location: BTreeMap<&str, &PlaceResult> =
            places.iter().map(|place| (place.location.as_str(), place)).collect();
        let result = json!({"locations": by_location});
        let finish = self.store.finish_run(&run_id, &result, error.as_deref());
        finish.await.map_err(store_failed("finish_pass"))
    }
}

fn at_location_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(3600))
        .heartbeat_timeout(Duration::from_secs(15))
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_attempts(5)
                .build(),
        )
        .build()
}

#[workflow]
#[derive(Default)]
pub struct ReconcileWorkflow;

#[workflow_methods]
impl ReconcileWorkflow {
    /// Goes through each location in turn; one that fails is named in the run's error and
    /// does not stop the others.
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: PassInput) -> WorkflowResult<String> {
        let run_id = input.run_id.clone().unwrap_or_else(|| ctx.workflow_id().to_owned());
        let begin = PassInput {
            run_id: Some(run_id.clone()),
            ..input.clone()
        };
        let short = crate::workflows::short();
        let places = ctx
            .execute_activity(SweepActivities::begin_pass, begin, short.clone())
            .await?;
        let mut results = Vec::new();
        for location in places {
            let place = PlaceRun {
                run_id: run_id.clone(),
                kind: input.kind.clone(),
                location: location.clone(),
            };
            let done = ctx
                .execute_activity(SweepActivities::at_location, place, at_location_options())
                .await;
            results.push(done.unwrap_or_else(|error| PlaceResult {
                location,
                error: Some(crate::workflows::failure_message(&error)),
                ..PlaceResult::default()
            }));
        }
        let summary = format!("{} location(s)", results.len());
        ctx.execute_activity(SweepActivities::finish_pass, (run_id, results), short)
            .await?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_their_backend() {
        assert_eq!(location(Backend::Cloud, "RegionOne"), "cloud:RegionOne");
        assert_eq!(
            parse_location("containers:edge:1"),
            Some((Backend::Containers, "edge:1"))
        );
        assert_eq!(parse_location("RegionOne"), None);
        assert_eq!(parse_location("moon:x"), None);
    }

    #[test]
    fn recorded_resources_are_judged_by_the_backend_that_holds_them() {
        let server = Observed::new("server:web:0", "server", "s", "ACTIVE", json!({}));
        let container = Observed::new("container:db:0", "container", "c", "healthy", json!({}));
        assert!(held_by(&server, Backend::Cloud) && !held_by(&server, Backend::Containers));
        assert!(held_by(&container, Backend::Containers) && !held_by(&container, Backend::Cloud));
    }
}
