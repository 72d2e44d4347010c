//! Activities: every piece of I/O the workflows do, idempotent so that Temporal may run any
//! of them again (at least once). Cloud resources are found by their keys before they are
//! created (invariant 1) and recorded in the database the moment the cloud returns their id
//! (invariant 2). Waiting is one list call per deployment per cycle (invariant 5).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use orch_cloud::compute::{ServerCreate, ServerFilter};
use orch_cloud::managed::{create_unless_found, deployment_tag, key_of};
use orch_cloud::network::{PortCreate, SecurityGroupRule, SubnetCreate};
use orch_cloud::{CloudError, OpenStack, ResourceKey};
use orch_core::plan::{parse_server_key, plan_servers, server_spec, DesiredState, ServerPlan};
use orch_core::{apply_parameters, DeploymentStatus, OperationKind, ScaleRequest, Template};
use orch_store::deployments::ResourceUpsert;
use orch_store::{operation_state, DeploymentRecord, OperationRecord, Store, StoreError};
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

/// Deletes many resources of one kind, `CREATE_CONCURRENCY` at a time (the client's own
/// limits still pace them).
async fn delete_all<F, Fut>(cloud: &OpenStack, ids: Vec<String>, delete: F) -> Result<(), ActivityError>
where
    F: Fn(OpenStack, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), CloudError>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(CREATE_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let (permits, work) = (permits.clone(), delete(cloud.clone(), id));
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore is never closed");
            work.await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|error| retryable(format!("a delete task failed: {error}")))?
            .map_err(cloud_error)?;
    }
    Ok(())
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
        // What already exists, looked up once for the whole batch (invariant 1 at one list call
        // per kind instead of one per server).
        let tag = vec![("tags", deployment_tag(&deployment.id))];
        let mut ports: HashMap<String, orch_cloud::network::Port> = cloud
            .list_ports(&tag)
            .await
            .map_err(cloud_error)?
            .into_iter()
            .filter_map(|port| Some((key_of(&port.tags)?.to_owned(), port)))
            .collect();
        // Each server's interface is a port on its group's subnet; the missing ones are made in
        // one bulk request. After a bulk create that may have happened, look again first.
        let mut attempt = 0;
        loop {
            let missing: Vec<PortCreate> = specs
                .iter()
                .filter(|spec| !ports.contains_key(&port_key_of(&spec.key)))
                .map(|spec| {
                    let port_key = key(&deployment.id, &port_key_of(&spec.key))?;
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
                    ports = cloud
                        .list_ports(&tag)
                        .await
                        .map_err(cloud_error)?
                        .into_iter()
                        .filter_map(|port| Some((key_of(&port.tags)?.to_owned(), port)))
                        .collect();
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
            .filter(|server| server.status != "DELETED" && server.task_state.as_deref() != Some("deleting"))
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

    async fn delete_resources_work(self: &Arc<Self>, ctx: &ActivityContext, batch: Batch) -> Result<(), ActivityError> {
        let deployment = self.deployment(&batch.operation.deployment_id).await?;
        let cloud = self.cloud_for(&deployment).await?;
        let id = deployment.id.as_str();
        let everything = batch.keys.is_empty();
        let mut found = cloud.list_by_deployment(id).await.map_err(cloud_error)?;
        let recorded = self.store.resources(id).await.map_err(store_error)?;
        // Resources the database knows that the tag search did not return (say, a tag was lost).
        for resource in &recorded {
            let known = found.iter().any(|f| Some(&f.id) == resource.cloud_id.as_ref());
            if let (false, Some(cloud_id)) = (known, &resource.cloud_id) {
                let kind = match resource.kind.as_str() {
                    "server" => "server",
                    "port" => "port",
                    "volume" => "volume",
                    "router" => "router",
                    "security_group" => "security_group",
                    "subnet" => "subnet",
                    "network" => "network",
                    _ => continue,
                };
                found.push(orch_cloud::ManagedResource {
                    kind,
                    id: cloud_id.clone(),
                    name: String::new(),
                    deployment_id: Some(id.to_owned()),
                    logical_key: Some(resource.logical_key.clone()),
                });
            }
        }
        let selected = |resource: &orch_cloud::ManagedResource| -> bool {
            if everything {
                return true;
            }
            let Some(logical_key) = &resource.logical_key else {
                return false;
            };
            batch.keys.iter().any(|server_key| {
                logical_key == server_key
                    || *logical_key == server_key.replacen("server:", "port:", 1)
                    || logical_key
                        .strip_prefix("volume:")
                        .is_some_and(|rest| format!("server:{rest}").starts_with(&format!("{server_key}:")))
            })
        };
        let of_kind = |kind: &str| -> Vec<orch_cloud::ManagedResource> {
            found
                .iter()
                .filter(|r| r.kind == kind && selected(r))
                .cloned()
                .collect()
        };

        let servers = of_kind("server");
        delete_all(
            &cloud,
            servers.iter().map(|server| server.id.clone()).collect(),
            |cloud, id| async move { cloud.delete_server(&id).await },
        )
        .await?;
        // Wait until they are gone: one list call per cycle.
        let server_ids: BTreeSet<String> = servers.iter().map(|s| s.id.clone()).collect();
        let mut interval = Duration::from_millis(250);
        loop {
            let live = cloud
                .list_servers(&ServerFilter {
                    tags: vec![deployment_tag(id)],
                    ..ServerFilter::default()
                })
                .await
                .map_err(cloud_error)?;
            let remaining = live
                .iter()
                .filter(|s| server_ids.contains(&s.id) && s.status != "DELETED")
                .count();
            heartbeat(ctx, remaining).await;
            if remaining == 0 {
                break;
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 3 / 2).min(Duration::from_secs(5));
        }
        for volume in of_kind("volume") {
            cloud.delete_volume(&volume.id).await.map_err(cloud_error)?;
            cloud
                .wait_volume(&volume.id, None, Duration::from_secs(600))
                .await
                .map_err(cloud_error)?;
        }
        delete_all(
            &cloud,
            of_kind("port").into_iter().map(|port| port.id).collect(),
            |cloud, id| async move { cloud.delete_port(&id).await },
        )
        .await?;
        if everything {
            let subnets = of_kind("subnet");
            for router in of_kind("router") {
                for subnet in &subnets {
                    cloud
                        .remove_router_interface(&router.id, &subnet.id)
                        .await
                        .map_err(cloud_error)?;
                }
                cloud.delete_router(&router.id).await.map_err(cloud_error)?;
            }
            for group in of_kind("security_group") {
                cloud.delete_security_group(&group.id).await.map_err(cloud_error)?;
            }
            for subnet in &subnets {
                cloud.delete_subnet(&subnet.id).await.map_err(cloud_error)?;
            }
            for network in of_kind("network") {
                cloud.delete_network(&network.id).await.map_err(cloud_error)?;
            }
        }
        if everything {
            self.store.mark_all_resources_deleted(id).await.map_err(store_error)?;
            return Ok(());
        }
        for resource in recorded {
            let deleted = batch.keys.contains(&resource.logical_key)
                || found
                    .iter()
                    .any(|f| selected(f) && f.logical_key.as_ref() == Some(&resource.logical_key));
            if deleted {
                self.store
                    .mark_resource_deleted(id, &resource.logical_key)
                    .await
                    .map_err(store_error)?;
            }
        }
        Ok(())
    }
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
