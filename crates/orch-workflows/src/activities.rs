//! Activities: every piece of I/O the workflows do, idempotent so that Temporal may run any
//! of them again (at least once). Cloud resources are found by their keys before they are
//! created, so nothing is made twice, and recorded in the database the moment the cloud returns
//! their id, so nothing is lost. Waiting is one list call per deployment per cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use orch_cloud::compute::{Server, ServerCreate, ServerFilter};
use orch_cloud::managed::{create_unless_found, deployment_tag, key_of, name_of, name_prefix};
use orch_cloud::network::{PortCreate, SecurityGroupRule, SubnetCreate};
use orch_cloud::teardown::{Patience, DELETE_ORDER};
use orch_cloud::{CloudError, ManagedResource, OpenStack, ResourceKey};
use orch_core::plan::{parse_server_key, plan_servers, server_spec, DesiredState, ServerPlan};
use orch_core::{apply_parameters, DeploymentStatus, OperationKind, ScaleRequest, Template};
use orch_store::deployments::ResourceUpsert;
use orch_store::{operation_state, DeploymentRecord, OperationRecord, ResourceRecord, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::ApplicationFailure;

/// Longest pause between two polls of a deployment's servers. One list call per cycle covers
/// the whole deployment, so polling often costs little and finds ACTIVE servers promptly.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Servers created concurrently within one activity.
const CREATE_CONCURRENCY: usize = 16;

/// What the activities work with: the database and the cloud.
pub struct OrchActivities {
    pub store: Store,
    pub cloud: OpenStack,
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
}

/// A set of resources of one operation, by logical key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub operation: OperationRef,
    pub keys: Vec<String>,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Completed,
    Failed(String),
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    pub operation: OperationRef,
    pub outcome: Outcome,
}

/// The plan of an update or a scale, computed by an activity from the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangePlan {
    pub servers: ServerPlan,
}

fn retryable(message: impl Into<String>) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(message.into()))
}

fn fatal(message: impl Into<String>) -> ActivityError {
    ActivityError::application(ApplicationFailure::non_retryable(message.into()))
}

/// Cloud errors that a retry cannot fix (quota, bad request, unknown flavor) fail at once.
fn cloud_error(error: CloudError) -> ActivityError {
    if error.is_retryable() {
        retryable(error.to_string())
    } else {
        fatal(error.to_string())
    }
}

fn store_error(error: StoreError) -> ActivityError {
    match error {
        StoreError::NotFound(what) => fatal(format!("{what} not found")),
        other => retryable(format!("{other}: {:?}", std::error::Error::source(&other))),
    }
}

/// Runs an activity's work while heartbeating every few seconds, so that Temporal sees a slow
/// but living attempt as alive (and does not start a second one beside it), and a dead
/// worker's attempt as dead within the heartbeat timeout.
async fn keep_alive<T>(ctx: &ActivityContext, work: impl std::future::Future<Output = T>) -> T {
    let ticker = async {
        loop {
            heartbeat(ctx, "alive").await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    };
    tokio::select! {
        result = work => result,
        () = ticker => unreachable!("the heartbeat loop never ends"),
    }
}

/// Heartbeats are best effort: a payload that cannot be encoded must not fail the work.
async fn heartbeat<T: temporalio_common::data_converters::TemporalSerializable + 'static>(
    ctx: &ActivityContext,
    details: T,
) {
    if let Err(error) = ctx.record_heartbeat(details).await {
        tracing::warn!(error = %error, "heartbeat not recorded");
    }
}

/// The key of a server's port: `server:web:0` -> `port:web:0`.
fn port_key_of(server_key: &str) -> String {
    server_key.replacen("server:", "port:", 1)
}

fn key(deployment_id: &str, logical_key: &str) -> Result<ResourceKey, ActivityError> {
    ResourceKey::new(deployment_id, logical_key).map_err(cloud_error)
}

impl OrchActivities {
    async fn record(
        &self,
        deployment_id: &str,
        logical_key: &str,
        kind: &str,
        cloud_id: &str,
        status: &str,
        attributes: Value,
    ) -> Result<(), ActivityError> {
        self.store
            .record_resource(&ResourceUpsert {
                deployment_id,
                logical_key,
                kind,
                cloud_id: Some(cloud_id),
                status,
                attributes: &attributes,
            })
            .await
            .map_err(store_error)
    }

    async fn deployment(&self, id: &str) -> Result<DeploymentRecord, ActivityError> {
        self.store.deployment(id).await.map_err(store_error)
    }

    async fn cloud_for(&self, deployment: &DeploymentRecord) -> Result<OpenStack, ActivityError> {
        self.cloud
            .in_region(&deployment.cloud_region)
            .await
            .map_err(cloud_error)
    }

    /// The template the operation works towards: an update's new one, else the deployment's
    /// with its parameters applied.
    async fn desired_template(
        &self,
        operation: &OperationRecord,
        deployment: &DeploymentRecord,
    ) -> Result<Template, ActivityError> {
        let (template, parameters) = match operation.kind {
            OperationKind::Update => {
                let template = Template::parse(&operation.payload["template"], "", None)
                    .map_err(|problems| fatal(problems.to_string()))?;
                (template, operation.payload["parameters"].clone())
            }
            OperationKind::Scale => {
                let request: ScaleRequest =
                    serde_json::from_value(operation.payload.clone()).map_err(|error| fatal(error.to_string()))?;
                let mut parameters = deployment.parameters.as_object().cloned().unwrap_or_default();
                parameters.insert(format!("{}_count", request.vm_type), json!(request.target_count));
                (deployment.template.clone(), Value::Object(parameters))
            }
            _ => (deployment.template.clone(), deployment.parameters.clone()),
        };
        apply_parameters(&template, &parameters, "/parameters").map_err(|problems| fatal(problems.to_string()))
    }

    async fn operation(&self, id: &str) -> Result<OperationRecord, ActivityError> {
        self.store.operation(id).await.map_err(store_error)
    }

    /// Live server records: key -> (cloud id, flavor).
    async fn existing_servers(&self, deployment_id: &str) -> Result<BTreeMap<String, (String, String)>, ActivityError> {
        let resources = self.store.resources(deployment_id).await.map_err(store_error)?;
        Ok(resources
            .into_iter()
            .filter(|resource| resource.kind == "server")
            .filter_map(|resource| {
                let flavor = resource.attributes["flavor"].as_str().unwrap_or_default().to_owned();
                Some((resource.logical_key, (resource.cloud_id?, flavor)))
            })
            .collect())
    }
}

impl OrchActivities {
    async fn provision_network_work(
        self: &Arc<Self>,
        _ctx: &ActivityContext,
        operation: OperationRef,
    ) -> Result<(), ActivityError> {
        let record = self.operation(&operation.operation_id).await?;
        let deployment = self.deployment(&operation.deployment_id).await?;
        let template = self.desired_template(&record, &deployment).await?;
        let cloud = self.cloud_for(&deployment).await?;
        let id = deployment.id.as_str();
        let (network, _) = cloud.ensure_network(&key(id, "network")?).await.map_err(cloud_error)?;
        self.record(
            id,
            "network",
            "network",
            &network.id,
            "ACTIVE",
            json!({"name": network.name}),
        )
        .await?;
        // Few per deployment: created one after another.
        let mut subnets = Vec::new();
        for (name, spec) in &template.network_config.subnets {
            let logical_key = format!("subnet:{name}");
            let request = SubnetCreate {
                network_id: network.id.clone(),
                cidr: spec.cidr.to_string(),
                gateway_ip: spec.gateway_ip.map(|ip| ip.to_string()),
                dns_nameservers: spec.dns_nameservers.iter().map(ToString::to_string).collect(),
                enable_dhcp: spec.enable_dhcp,
                ..SubnetCreate::default()
            };
            let (subnet, _) = cloud
                .ensure_subnet(&key(id, &logical_key)?, &request)
                .await
                .map_err(cloud_error)?;
            self.record(
                id,
                &logical_key,
                "subnet",
                &subnet.id,
                "ACTIVE",
                json!({"name": subnet.name, "cidr": subnet.cidr}),
            )
            .await?;
            subnets.push((name.clone(), subnet.id));
        }
        if template.network_config.router.enabled {
            let external = match &template.network_config.router.external_network {
                Some(name) => Some(cloud.find_external_network(name).await.map_err(cloud_error)?.id),
                None => None,
            };
            let (router, _) = cloud
                .ensure_router(&key(id, "router")?, external.as_deref())
                .await
                .map_err(cloud_error)?;
            self.record(
                id,
                "router",
                "router",
                &router.id,
                "ACTIVE",
                json!({"name": router.name}),
            )
            .await?;
            // Interfaces of one router conflict with each other on the cloud side: one at a time.
            for (name, subnet_id) in &subnets {
                cloud
                    .add_router_interface(&router.id, subnet_id)
                    .await
                    .map_err(cloud_error)?;
                self.record(
                    id,
                    &format!("router-interface:{name}"),
                    "router_interface",
                    subnet_id,
                    "ACTIVE",
                    json!({"router_id": router.id, "subnet": name}),
                )
                .await?;
            }
        }
        let mut groups = HashMap::new();
        for name in template.security_groups.keys() {
            let logical_key = format!("security-group:{name}");
            let description = template.security_groups[name].description.clone().unwrap_or_default();
            let (group, _) = cloud
                .ensure_security_group(&key(id, &logical_key)?, &description)
                .await
                .map_err(cloud_error)?;
            self.record(
                id,
                &logical_key,
                "security_group",
                &group.id,
                "ACTIVE",
                json!({"name": group.name}),
            )
            .await?;
            groups.insert(name.clone(), group.id);
        }
        for (name, group) in &template.security_groups {
            // Rules of one group conflict with each other: created one after another.
            for rule in &group.rules {
                let remote_ip = rule.remote_ip_prefix.map(|net| net.to_string());
                let rule = SecurityGroupRule {
                    security_group_id: groups[name].clone(),
                    direction: rule.direction.clone(),
                    ethertype: Some(
                        if remote_ip.as_deref().is_some_and(|ip| ip.contains(':')) {
                            "IPv6"
                        } else {
                            "IPv4"
                        }
                        .to_owned(),
                    ),
                    protocol: rule.protocol.clone(),
                    port_range_min: rule.port_range_min,
                    port_range_max: rule.port_range_max,
                    remote_ip_prefix: remote_ip,
                    remote_group_id: rule.remote_group.as_ref().map(|remote| groups[remote].clone()),
                    ..SecurityGroupRule::default()
                };
                cloud.ensure_security_group_rule(&rule).await.map_err(cloud_error)?;
            }
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(first = batch.keys.first().map(String::as_str).unwrap_or_default(), attempt = ctx.info().attempt))]
    async fn create_servers_work(self: &Arc<Self>, ctx: &ActivityContext, batch: Batch) -> Result<(), ActivityError> {
        tracing::info!("creating a batch of servers");
        let record = self.operation(&batch.operation.operation_id).await?;
        let deployment = self.deployment(&batch.operation.deployment_id).await?;
        let template = self.desired_template(&record, &deployment).await?;
        let cloud = self.cloud_for(&deployment).await?;
        let resources = self.store.resources(&deployment.id).await.map_err(store_error)?;
        let cloud_id = |logical_key: &str| {
            resources
                .iter()
                .find(|r| r.logical_key == logical_key)
                .and_then(|r| r.cloud_id.clone())
        };
        let network_id = cloud_id("network").ok_or_else(|| retryable("the network is not recorded yet"))?;
        let ids_by_prefix = |prefix: &str| -> HashMap<String, String> {
            resources
                .iter()
                .filter_map(|r| Some((r.logical_key.strip_prefix(prefix)?.to_owned(), r.cloud_id.clone()?)))
                .collect()
        };
        let subnet_ids = ids_by_prefix("subnet:");
        let security_group_ids = ids_by_prefix("security-group:");
        let mut flavors = HashMap::new();
        let mut images = HashMap::new();
        let specs: Vec<_> = batch
            .keys
            .iter()
            .map(|server_key| {
                let (group, index) =
                    parse_server_key(server_key).ok_or_else(|| fatal(format!("'{server_key}' is not a server key")))?;
                Ok(server_spec(&template, group, index))
            })
            .collect::<Result<_, ActivityError>>()?;
        for spec in &specs {
            if !flavors.contains_key(&spec.flavor) {
                let flavor = cloud
                    .find_flavor(&spec.flavor)
                    .await
                    .map_err(|error| fatal(format!("flavor '{}': {error}", spec.flavor)))?;
                flavors.insert(spec.flavor.clone(), flavor.id);
            }
            if !images.contains_key(&spec.image) {
                let image = cloud
                    .find_image(&spec.image)
                    .await
                    .map_err(|error| fatal(format!("image '{}': {error}", spec.image)))?;
                images.insert(spec.image.clone(), image.id);
            }
        }
        // What already exists, looked up once for the whole batch: the ports on the
        // deployment's network, known by tag or by name (a port whose tags never arrived).
        let port_keys: Vec<ResourceKey> = specs
            .iter()
            .map(|spec| key(&deployment.id, &port_key_of(&spec.key)))
            .collect::<Result<_, _>>()?;
        let mut ports = cloud.find_ports(&network_id, &port_keys).await.map_err(cloud_error)?;
        // Each server's interface is a port on its group's subnet; the missing ones are made in
        // one bulk request. After a bulk create that may have happened, look again first.
        let mut attempt = 0;
        loop {
            let missing: Vec<PortCreate> = specs
                .iter()
                .zip(&port_keys)
                .filter(|(_, port_key)| !ports.contains_key(&port_key.logical_key))
                .map(|(spec, port_key)| {
                    Ok(PortCreate {
                        name: port_key.name(),
                        network_id: network_id.clone(),
                        subnet_id: Some(
                            subnet_ids
                                .get(&spec.subnet)
                                .cloned()
                                .ok_or_else(|| retryable(format!("subnet '{}' is not recorded yet", spec.subnet)))?,
                        ),
                        security_group_ids: spec
                            .security_groups
                            .iter()
                            .filter_map(|name| security_group_ids.get(name).cloned())
                            .collect(),
                        tags: port_key.tags(),
                    })
                })
                .collect::<Result<_, ActivityError>>()?;
            match cloud.create_ports(&missing).await {
                Ok(created) => {
                    ports.extend(
                        created
                            .into_iter()
                            .filter_map(|port| Some((key_of(&port.tags)?.to_owned(), port))),
                    );
                    break;
                }
                Err(error) if error.is_retryable() && attempt < 3 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
                    ports = cloud.find_ports(&network_id, &port_keys).await.map_err(cloud_error)?;
                }
                Err(error) => return Err(cloud_error(error)),
            }
        }
        for spec in &specs {
            let port_key = port_key_of(&spec.key);
            if let Some(port) = ports.get(&port_key) {
                self.record(
                    &deployment.id,
                    &port_key,
                    "port",
                    &port.id,
                    "ACTIVE",
                    json!({"server": spec.key}),
                )
                .await?;
            }
        }
        let servers: HashMap<String, String> = cloud
            .list_servers(&ServerFilter {
                tags: vec![deployment_tag(&deployment.id)],
                ..ServerFilter::default()
            })
            .await
            .map_err(cloud_error)?
            .into_iter()
            .filter(Server::is_live)
            .filter_map(|server| Some((key_of(&server.tags)?.to_owned(), server.id)))
            .collect();
        // Owned tasks, bounded by a semaphore: each creates one server and records its id.
        let permits = Arc::new(tokio::sync::Semaphore::new(CREATE_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for spec in specs {
            let request = ServerCreate {
                flavor_id: flavors[&spec.flavor].clone(),
                image_id: images[&spec.image].clone(),
                key_name: spec.key_pair.clone(),
                user_data: spec.user_data.clone(),
                metadata: spec.metadata.clone(),
                ..ServerCreate::default()
            };
            let (this, cloud, permits, deployment_id) =
                (self.clone(), cloud.clone(), permits.clone(), deployment.id.clone());
            let port = ports
                .get(&port_key_of(&spec.key))
                .cloned()
                .ok_or_else(|| retryable(format!("the port of {} was not created", spec.key)))?;
            let known_server = servers.get(&spec.key).cloned();
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore is never closed");
                let server_key = key(&deployment_id, &spec.key)?;
                let request = server_key.server_request(&ServerCreate {
                    port_ids: vec![port.id],
                    ..request
                });
                let (server_id, _) = create_unless_found(
                    known_server,
                    || async { Ok(cloud.find_server(&server_key).await?.map(|server| server.id)) },
                    || cloud.create_server(&request),
                )
                .await
                .map_err(cloud_error)?;
                let attributes =
                    json!({"group": spec.group, "index": spec.index, "name": server_key.name(), "flavor": spec.flavor});
                this.record(&deployment_id, &spec.key, "server", &server_id, "BUILD", attributes)
                    .await?;
                Ok::<_, ActivityError>(spec.key)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let created = done.map_err(|error| retryable(format!("a create task failed: {error}")))??;
            heartbeat(ctx, created).await;
        }
        Ok(())
    }

    async fn attach_volumes_work(self: &Arc<Self>, ctx: &ActivityContext, batch: Batch) -> Result<(), ActivityError> {
        let record = self.operation(&batch.operation.operation_id).await?;
        let deployment = self.deployment(&batch.operation.deployment_id).await?;
        let template = self.desired_template(&record, &deployment).await?;
        let cloud = self.cloud_for(&deployment).await?;
        let existing = self.existing_servers(&deployment.id).await?;
        for server_key in &batch.keys {
            let Some((group, index)) = parse_server_key(server_key) else {
                continue;
            };
            let spec = server_spec(&template, group, index);
            let Some((server_id, _)) = existing.get(server_key) else {
                continue;
            };
            for (volume_key, size, volume_type) in &spec.volumes {
                let (volume, _) = cloud
                    .ensure_volume(&key(&deployment.id, volume_key)?, *size, volume_type.as_deref())
                    .await
                    .map_err(cloud_error)?;
                self.record(
                    &deployment.id,
                    volume_key,
                    "volume",
                    &volume.id,
                    "creating",
                    json!({"server": server_key, "size_gb": size}),
                )
                .await?;
                cloud
                    .wait_volume(&volume.id, Some("available"), Duration::from_secs(600))
                    .await
                    .or_else(|error| {
                        // Already attached by an earlier attempt.
                        if matches!(error, CloudError::WaitTimeout { .. }) {
                            Err(error)
                        } else {
                            Ok(())
                        }
                    })
                    .map_err(cloud_error)?;
                if !cloud
                    .list_attachments(server_id)
                    .await
                    .map_err(cloud_error)?
                    .contains(&volume.id)
                {
                    cloud.attach_volume(server_id, &volume.id).await.map_err(cloud_error)?;
                }
                self.record(
                    &deployment.id,
                    volume_key,
                    "volume",
                    &volume.id,
                    "in-use",
                    json!({"server": server_key, "size_gb": size}),
                )
                .await?;
                heartbeat(ctx, volume_key.clone()).await;
            }
        }
        Ok(())
    }

    async fn resize_servers_work(self: &Arc<Self>, ctx: &ActivityContext, batch: Batch) -> Result<(), ActivityError> {
        let record = self.operation(&batch.operation.operation_id).await?;
        let deployment = self.deployment(&batch.operation.deployment_id).await?;
        let template = self.desired_template(&record, &deployment).await?;
        let cloud = self.cloud_for(&deployment).await?;
        let existing = self.existing_servers(&deployment.id).await?;
        for server_key in &batch.keys {
            let (Some((group, index)), Some((server_id, _))) = (parse_server_key(server_key), existing.get(server_key))
            else {
                continue;
            };
            let spec = server_spec(&template, group, index);
            let flavor = cloud
                .find_flavor(&spec.flavor)
                .await
                .map_err(|error| fatal(error.to_string()))?;
            let server = cloud.get_server(server_id).await.map_err(cloud_error)?;
            if server.flavor["original_name"] != spec.flavor.as_str() && server.status == "ACTIVE" {
                cloud.resize_server(server_id, &flavor.id).await.map_err(cloud_error)?;
            }
            loop {
                let server = cloud.get_server(server_id).await.map_err(cloud_error)?;
                match server.status.as_str() {
                    "VERIFY_RESIZE" => cloud.confirm_resize(server_id).await.map_err(cloud_error)?,
                    "ACTIVE" if server.flavor["original_name"] == spec.flavor.as_str() => break,
                    "ERROR" => return Err(fatal(format!("server {} went to ERROR while resizing", server.name))),
                    _ => {}
                }
                heartbeat(ctx, server_key.clone()).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let attributes =
                json!({"group": group, "index": index, "name": server.name, "ip": server.ip(), "flavor": spec.flavor});
            self.record(&deployment.id, server_key, "server", server_id, "ACTIVE", attributes)
                .await?;
        }
        Ok(())
    }

    /// Deletes the servers of `batch` with their ports and volumes, or (no keys) everything
    /// of the deployment: what the cloud lists by tag or name and what the database
    /// recorded, in the order the cloud requires. What could not be deleted is named in the
    /// error and in a `cleanup.incomplete` event, and stays recorded for the next attempt.
    async fn delete_resources_work(
        self: &Arc<Self>,
        _ctx: &ActivityContext,
        batch: Batch,
    ) -> Result<(), ActivityError> {
        let deployment = self.deployment(&batch.operation.deployment_id).await?;
        let cloud = self.cloud_for(&deployment).await?;
        let id = deployment.id.as_str();
        let recorded = self.store.resources(id).await.map_err(store_error)?;
        let found = cloud.list_by_deployment(id).await.map_err(cloud_error)?;
        let doomed: Vec<ManagedResource> = with_recorded(found, &recorded, id)
            .into_iter()
            .filter(|resource| batch.keys.is_empty() || doomed_with(&batch.keys, id, resource))
            .collect();
        let scope = ServerFilter {
            name_prefix: Some(name_prefix(id)),
            ..ServerFilter::default()
        };
        if let Err(error) = cloud.tear_down(&doomed, &scope, Patience::default()).await {
            if let CloudError::Incomplete { left, .. } = &error {
                self.store
                    .record_event(
                        id,
                        "cleanup.incomplete",
                        json!({"left": left, "error": error.to_string()}),
                    )
                    .await
                    .map_err(store_error)?;
            }
            return Err(cloud_error(error));
        }
        if batch.keys.is_empty() {
            return self.store.mark_all_resources_deleted(id).await.map_err(store_error);
        }
        for resource in recorded {
            let gone = doomed.iter().any(|d| Some(&d.id) == resource.cloud_id.as_ref())
                || batch.keys.contains(&resource.logical_key);
            if gone {
                self.store
                    .mark_resource_deleted(id, &resource.logical_key)
                    .await
                    .map_err(store_error)?;
            }
        }
        Ok(())
    }
}

/// What the cloud listed, plus what the database recorded that the listing missed.
fn with_recorded(
    mut found: Vec<ManagedResource>,
    recorded: &[ResourceRecord],
    deployment_id: &str,
) -> Vec<ManagedResource> {
    for resource in recorded {
        let Some(cloud_id) = &resource.cloud_id else {
            continue;
        };
        let Some(kind) = DELETE_ORDER.iter().find(|kind| **kind == resource.kind) else {
            continue;
        };
        if !found.iter().any(|f| &f.id == cloud_id) {
            found.push(ManagedResource {
                kind,
                id: cloud_id.clone(),
                name: resource.attributes["name"].as_str().unwrap_or_default().to_owned(),
                deployment_id: Some(deployment_id.to_owned()),
                logical_key: Some(resource.logical_key.clone()),
            });
        }
    }
    found
}

/// Whether `resource` goes with the servers `server_keys`: the server, its port and its
/// volumes, known by their keys or, when their tags never arrived, by their names.
fn doomed_with(server_keys: &[String], deployment_id: &str, resource: &ManagedResource) -> bool {
    server_keys.iter().any(|server_key| {
        let port_key = port_key_of(server_key);
        let volume_key = server_key.replacen("server:", "volume:", 1) + ":";
        let named = |key: &str| name_of(deployment_id, key);
        match &resource.logical_key {
            Some(key) => key == server_key || *key == port_key || key.starts_with(&volume_key),
            None => {
                resource.name == named(server_key)
                    || resource.name == named(&port_key)
                    || resource.name.starts_with(&named(&volume_key))
            }
        }
    })
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
        let record = self.operation(&operation.operation_id).await?;
        let claimed = match record.state.as_str() {
            operation_state::PENDING => self
                .store
                .claim_operation(&operation.operation_id)
                .await
                .map_err(store_error)?
                .is_some(),
            operation_state::RUNNING => true,
            _ => false,
        };
        if !claimed && self.operation(&operation.operation_id).await?.state != operation_state::RUNNING {
            return Ok(None);
        }
        let deployment = self.deployment(&operation.deployment_id).await?;
        Ok(Some(Started {
            kind: record.kind,
            rollback: deployment.rollback,
        }))
    }

    /// The servers the operation creates, by key, in creation order.
    #[activity]
    pub async fn servers_to_create(
        self: Arc<Self>,
        _ctx: ActivityContext,
        operation: OperationRef,
    ) -> Result<ChangePlan, ActivityError> {
        let record = self.operation(&operation.operation_id).await?;
        let deployment = self.deployment(&operation.deployment_id).await?;
        let template = self.desired_template(&record, &deployment).await?;
        let desired = DesiredState::of(&template);
        let existing: BTreeMap<String, String> = self
            .existing_servers(&deployment.id)
            .await?
            .into_iter()
            .map(|(key, (_, flavor))| (key, flavor))
            .collect();
        let mut servers = plan_servers(&existing, &desired);
        if record.kind == OperationKind::Scale {
            // A scale touches its group only; other differences wait for an update.
            let request: ScaleRequest =
                serde_json::from_value(record.payload.clone()).map_err(|error| fatal(error.to_string()))?;
            let in_group = |key: &String| parse_server_key(key).is_some_and(|(group, _)| group == request.vm_type);
            servers.create.retain(in_group);
            servers.delete.retain(in_group);
            servers.resize.clear();
        }
        if matches!(record.kind, OperationKind::Create) {
            servers.delete.clear();
            servers.resize.clear();
        }
        Ok(ChangePlan { servers })
    }

    /// The network, its subnets, the router with its interfaces, and the security groups
    /// with their rules.
    #[activity]
    pub async fn provision_network(
        self: Arc<Self>,
        ctx: ActivityContext,
        operation: OperationRef,
    ) -> Result<(), ActivityError> {
        let work = self.provision_network_work(&ctx, operation);
        keep_alive(&ctx, work).await
    }

    /// Boots the servers of `batch` (found before created), recording each id at once.
    #[activity]
    pub async fn create_servers(self: Arc<Self>, ctx: ActivityContext, batch: Batch) -> Result<(), ActivityError> {
        let work = self.create_servers_work(&ctx, batch);
        keep_alive(&ctx, work).await
    }

    /// Waits until every server of `batch` is ACTIVE, with one list call per cycle for the
    /// whole deployment. A server in ERROR fails the operation with Nova's fault message.
    #[activity]
    pub async fn wait_for_servers(self: Arc<Self>, ctx: ActivityContext, batch: Batch) -> Result<(), ActivityError> {
        let deployment = self.deployment(&batch.operation.deployment_id).await?;
        let cloud = self.cloud_for(&deployment).await?;
        let mut pending: BTreeSet<String> = batch.keys.iter().cloned().collect();
        let existing = self.existing_servers(&deployment.id).await?;
        let mut interval = Duration::from_millis(250);
        let mut since: Option<chrono::DateTime<chrono::Utc>> = None;
        while !pending.is_empty() {
            // Nova's times have whole seconds: look back a little so no change is missed.
            let asked_at = chrono::Utc::now() - chrono::Duration::seconds(2);
            let filter = ServerFilter {
                tags: vec![deployment_tag(&deployment.id)],
                changes_since: since.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                ..ServerFilter::default()
            };
            let servers = cloud.list_servers(&filter).await.map_err(cloud_error)?;
            since = Some(asked_at);
            let before = pending.len();
            for server in servers {
                let Some(server_key) = key_of(&server.tags).map(str::to_owned) else {
                    continue;
                };
                if !pending.contains(&server_key) {
                    continue;
                }
                match server.status.as_str() {
                    "ACTIVE" => {
                        let (_, flavor) = existing.get(&server_key).cloned().unwrap_or_default();
                        let (group, index) = parse_server_key(&server_key).unwrap_or_default();
                        let attributes = json!({"group": group, "index": index, "name": server.name, "ip": server.ip(), "flavor": flavor});
                        self.record(&deployment.id, &server_key, "server", &server.id, "ACTIVE", attributes)
                            .await?;
                        pending.remove(&server_key);
                    }
                    "ERROR" => {
                        let fault = server.fault_message().unwrap_or_else(|| "no fault given".into());
                        self.record(
                            &deployment.id,
                            &server_key,
                            "server",
                            &server.id,
                            "ERROR",
                            json!({"fault": fault, "name": server.name}),
                        )
                        .await?;
                        return Err(fatal(format!("server {} went to ERROR: {fault}", server.name)));
                    }
                    _ => {}
                }
            }
            heartbeat(&ctx, pending.len()).await;
            if ctx.is_cancelled() {
                return Err(ActivityError::cancelled());
            }
            if pending.is_empty() {
                break;
            }
            interval = if pending.len() < before {
                Duration::from_millis(250)
            } else {
                (interval * 3 / 2).min(MAX_POLL_INTERVAL)
            };
            tokio::time::sleep(interval).await;
        }
        Ok(())
    }

    /// Creates and attaches the volumes of the servers in `batch`.
    #[activity]
    pub async fn attach_volumes(self: Arc<Self>, ctx: ActivityContext, batch: Batch) -> Result<(), ActivityError> {
        let work = self.attach_volumes_work(&ctx, batch);
        keep_alive(&ctx, work).await
    }

    /// Resizes servers whose flavor changed, and confirms.
    #[activity]
    pub async fn resize_servers(self: Arc<Self>, ctx: ActivityContext, batch: Batch) -> Result<(), ActivityError> {
        let work = self.resize_servers_work(&ctx, batch);
        keep_alive(&ctx, work).await
    }

    /// Deletes the servers of `batch` and their volumes; with no keys, everything of the
    /// deployment, found by its tags as well as in the database, in reverse dependency order.
    #[activity]
    pub async fn delete_resources(self: Arc<Self>, ctx: ActivityContext, batch: Batch) -> Result<(), ActivityError> {
        let work = self.delete_resources_work(&ctx, batch);
        keep_alive(&ctx, work).await
    }

    /// Writes the end of the operation back: status, cause, and (after an update or a scale)
    /// the template and parameters the deployment now stands for.
    #[activity]
    pub async fn finish(self: Arc<Self>, _ctx: ActivityContext, finish: Finish) -> Result<(), ActivityError> {
        let record = self.operation(&finish.operation.operation_id).await?;
        if record.state != operation_state::RUNNING {
            return Ok(());
        }
        let deployment = self.deployment(&finish.operation.deployment_id).await?;
        let (succeeded, status, reason) = match &finish.outcome {
            Outcome::Completed => (true, DeploymentStatus::Completed, None),
            Outcome::Deleted => (true, DeploymentStatus::Deleted, None),
            Outcome::Failed(reason) => (false, DeploymentStatus::Failed, Some(reason.as_str())),
        };
        if succeeded {
            match record.kind {
                OperationKind::Update => {
                    let template = Template::parse(&record.payload["template"], "", None)
                        .map_err(|problems| fatal(problems.to_string()))?;
                    let template_id = record.payload["template_id"].as_str();
                    self.store
                        .set_desired(&deployment.id, template_id, &template, &record.payload["parameters"])
                        .await
                        .map_err(store_error)?;
                }
                OperationKind::Scale => {
                    let request: ScaleRequest =
                        serde_json::from_value(record.payload.clone()).map_err(|error| fatal(error.to_string()))?;
                    let mut parameters = deployment.parameters.as_object().cloned().unwrap_or_default();
                    parameters.insert(format!("{}_count", request.vm_type), json!(request.target_count));
                    self.store
                        .set_desired(
                            &deployment.id,
                            deployment.template_id.as_deref(),
                            &deployment.template,
                            &Value::Object(parameters),
                        )
                        .await
                        .map_err(store_error)?;
                }
                _ => {}
            }
        }
        self.store
            .finish_operation(&record.id, succeeded, status, reason)
            .await
            .map_err(store_error)?;
        Ok(())
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
            .map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(kind: &'static str, name: &str, key: Option<&str>) -> ManagedResource {
        ManagedResource {
            kind,
            id: name.to_owned(),
            name: name.to_owned(),
            deployment_id: Some("d1".into()),
            logical_key: key.map(str::to_owned),
        }
    }

    #[test]
    fn a_server_goes_with_its_port_and_volumes_by_key_or_by_name() {
        let keys = vec!["server:web:1".to_owned()];
        let doomed = |resource: &ManagedResource| doomed_with(&keys, "d1", resource);
        assert!(doomed(&found("server", "x", Some("server:web:1"))));
        assert!(doomed(&found("port", "x", Some("port:web:1"))));
        assert!(doomed(&found("volume", "x", Some("volume:web:1:0"))));
        assert!(doomed(&found("port", "orch-d1-port-web-1", None)), "untagged, by name");
        assert!(doomed(&found("volume", "orch-d1-volume-web-1-0", None)));
        assert!(!doomed(&found("port", "x", Some("port:web:10"))), "another server's");
        assert!(!doomed(&found("volume", "orch-d1-volume-web-10-0", None)));
        assert!(
            !doomed(&found("port", "orch-d2-port-web-1", None)),
            "another deployment's"
        );
    }
}
