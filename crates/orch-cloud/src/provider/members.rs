//! Members are servers: each boots with its own port on its group's subnet. A batch looks
//! up what exists once (one list of the network's ports, one of the deployment's servers),
//! makes the missing ports in one bulk request and boots the missing servers concurrently.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use orch_core::plan::ServerSpec;
use orch_core::provider::{Observed, Report, Target};
use serde_json::{json, Value};

use super::in_place::{until_changed, Change, Progress};
use super::{key, member_of, port_key_of, report_active, spec_of};
use crate::compute::{Server, ServerCreate, ServerFilter};
use crate::error::Result;
use crate::error::Service;
use crate::managed::{create_unless_found, deployment_tag, key_of};
use crate::network::{Port, PortCreate};
use crate::{CloudError, OpenStack, ResourceKey};

/// Servers created concurrently within one batch.
const CREATE_CONCURRENCY: usize = 16;

/// Longest pause between two polls of a deployment's servers. One list call per cycle covers
/// the whole deployment, so polling often costs little and finds ACTIVE servers promptly.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(1);

pub(super) async fn create(cloud: &OpenStack, target: Target<'_>, keys: &[String], report: &impl Report) -> Result<()> {
    tracing::info!(
        first = keys.first().map(String::as_str).unwrap_or_default(),
        "creating a batch of servers"
    );
    let specs: Vec<ServerSpec> = keys
        .iter()
        .map(|server_key| spec_of(target.desired, server_key))
        .collect::<Result<_>>()?;
    let (flavors, images) = resolve_flavors_and_images(cloud, &specs).await?;
    let ports = ensure_ports(cloud, target, &specs, report).await?;
    let known = known_servers(cloud, target.deployment_id).await?;
    let mut tasks = tokio::task::JoinSet::new();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(CREATE_CONCURRENCY));
    for spec in specs {
        let port = ports
            .get(&port_key_of(&spec.key))
            .ok_or_else(|| unavailable(format!("the port of {} was not created", spec.key)))?;
        let request = ServerCreate {
            flavor_id: flavors[&spec.flavor].clone(),
            image_id: images[&spec.image].clone(),
            key_name: spec.key_pair.clone(),
            user_data: spec.user_data.clone(),
            metadata: spec.metadata.clone(),
            port_ids: vec![port.id.clone()],
            ..ServerCreate::default()
        };
        let (cloud, permits) = (cloud.clone(), permits.clone());
        let server_key = key(target.deployment_id, &spec.key)?;
        let known_id = known.get(&spec.key).cloned();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore is never closed");
            let server_id = boot(&cloud, &server_key, &request, known_id).await?;
            Ok::<_, CloudError>((spec, server_key.name(), server_id))
        });
    }
    // Each id is recorded as soon as its create returns.
    while let Some(done) = tasks.join_next().await {
        let (spec, name, server_id) = done.map_err(|error| unavailable(format!("a create task failed: {error}")))??;
        let attributes =
            json!({"group": spec.group, "index": spec.index, "name": name, "flavor": spec.flavor, "image": spec.image});
        report
            .record(Observed::new(&spec.key, "server", &server_id, "BUILD", attributes))
            .await?;
        report.progress(&spec.key).await;
    }
    Ok(())
}

fn unavailable(message: String) -> CloudError {
    CloudError::Unavailable {
        service: Service::Compute,
        message,
        ambiguous: false,
    }
}

/// One server: the known one, else found by its keys, else created (and after an ambiguous
/// failure looked up again before another create).
async fn boot(
    cloud: &OpenStack,
    server_key: &ResourceKey,
    request: &ServerCreate,
    known: Option<String>,
) -> Result<String> {
    let request = server_key.server_request(request);
    let (server_id, _) = create_unless_found(
        known,
        || async { Ok(cloud.find_server(server_key).await?.map(|server| server.id)) },
        || cloud.create_server(&request),
    )
    .await?;
    Ok(server_id)
}

/// The ids of the flavors and images the specs name, each looked up once.
async fn resolve_flavors_and_images(
    cloud: &OpenStack,
    specs: &[ServerSpec],
) -> Result<(HashMap<String, String>, HashMap<String, String>)> {
    let mut flavors = HashMap::new();
    let mut images = HashMap::new();
    for spec in specs {
        if !flavors.contains_key(&spec.flavor) {
            flavors.insert(spec.flavor.clone(), cloud.find_flavor(&spec.flavor).await?.id);
        }
        if !images.contains_key(&spec.image) {
            images.insert(spec.image.clone(), cloud.find_image(&spec.image).await?.id);
        }
    }
    Ok((flavors, images))
}

/// The batch's ports by key: those on the network (by tag or by name, for a port whose tags
/// never arrived), and the missing ones made in one bulk request. After a bulk create that
/// may have happened, it looks again first. Each is recorded.
async fn ensure_ports(
    cloud: &OpenStack,
    target: Target<'_>,
    specs: &[ServerSpec],
    report: &impl Report,
) -> Result<HashMap<String, Port>> {
    let network_id = target
        .recorded_id("network")
        .ok_or_else(|| unavailable("the network is not recorded yet".into()))?;
    let port_keys: Vec<ResourceKey> = specs
        .iter()
        .map(|spec| key(target.deployment_id, &port_key_of(&spec.key)))
        .collect::<Result<_>>()?;
    let find_and_make = || async {
        let mut ports = cloud.find_ports(network_id, &port_keys).await?;
        let missing = missing_ports(target, specs, &port_keys, &ports, network_id)?;
        let created = cloud.create_ports(&missing).await?;
        ports.extend(
            created
                .into_iter()
                .filter_map(|port| Some((key_of(&port.tags)?.to_owned(), port))),
        );
        Ok(ports)
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_times(3)
        .with_jitter();
    let ports = find_and_make.retry(backoff).when(CloudError::is_retryable).await?;
    for spec in specs {
        let port_key = port_key_of(&spec.key);
        if let Some(port) = ports.get(&port_key) {
            report_active(report, &port_key, "port", &port.id, json!({"server": spec.key})).await?;
        }
    }
    Ok(ports)
}

/// The port requests of the specs that have no port yet.
fn missing_ports(
    target: Target<'_>,
    specs: &[ServerSpec],
    port_keys: &[ResourceKey],
    ports: &HashMap<String, Port>,
    network_id: &str,
) -> Result<Vec<PortCreate>> {
    let recorded_ids = |prefix: &str| -> HashMap<&str, &str> {
        target
            .recorded
            .iter()
            .filter_map(|r| Some((r.key.strip_prefix(prefix)?, r.id.as_str())))
            .collect()
    };
    let (subnets, groups) = (recorded_ids("subnet:"), recorded_ids("security-group:"));
    specs
        .iter()
        .zip(port_keys)
        .filter(|(_, port_key)| !ports.contains_key(&port_key.logical_key))
        .map(|(spec, port_key)| {
            let subnet_id = subnets
                .get(spec.subnet.as_str())
                .ok_or_else(|| unavailable(format!("subnet '{}' is not recorded yet", spec.subnet)))?;
            Ok(PortCreate {
                name: port_key.name(),
                network_id: network_id.to_owned(),
                subnet_id: Some((*subnet_id).to_owned()),
                security_group_ids: spec
                    .security_groups
                    .iter()
                    .filter_map(|name| groups.get(name.as_str()).map(|id| (*id).to_owned()))
                    .collect(),
                tags: port_key.tags(),
            })
        })
        .collect()
}

/// The deployment's live servers, by key, in one list.
async fn known_servers(cloud: &OpenStack, deployment_id: &str) -> Result<HashMap<String, String>> {
    let filter = ServerFilter {
        tags: vec![deployment_tag(deployment_id)],
        ..ServerFilter::default()
    };
    Ok(cloud
        .list_servers(&filter)
        .await?
        .into_iter()
        .filter(Server::is_live)
        .filter_map(|server| Some((key_of(&server.tags)?.to_owned(), server.id)))
        .collect())
}

/// Waits until every server under `keys` is ACTIVE, with one list call per cycle for the
/// whole deployment. A server in ERROR fails the step with Nova's fault message.
pub(super) async fn wait(cloud: &OpenStack, target: Target<'_>, keys: &[String], report: &impl Report) -> Result<()> {
    let mut pending: BTreeSet<String> = keys.iter().cloned().collect();
    // What was recorded at create (flavor, image) is kept when the server becomes ready.
    let made: BTreeMap<&str, &Value> = target
        .recorded
        .iter()
        .filter(|resource| resource.kind == "server")
        .map(|resource| (resource.key.as_str(), &resource.attributes))
        .collect();
    let mut interval = Duration::from_millis(250);
    let mut since: Option<chrono::DateTime<chrono::Utc>> = None;
    while !pending.is_empty() {
        let filter = ServerFilter {
            tags: vec![deployment_tag(target.deployment_id)],
            changes_since: since.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ..ServerFilter::default()
        };
        let servers = cloud.list_servers(&filter).await?;
        since = next_since(since, &servers);
        let before = pending.len();
        for server in servers {
            let Some(server_key) = key_of(&server.tags).map(str::to_owned) else {
                continue;
            };
            if pending.contains(&server_key) && settled(&server, &server_key, &made, report).await? {
                pending.remove(&server_key);
            }
        }
        report.progress(&format!("{} servers pending", pending.len())).await;
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

/// Where the next poll starts: the newest `updated` time the cloud showed, less a second
/// (Nova's times have whole seconds), so that the cloud's clock decides and a worker whose
/// clock is off misses nothing.
fn next_since(
    previous: Option<chrono::DateTime<chrono::Utc>>,
    servers: &[Server],
) -> Option<chrono::DateTime<chrono::Utc>> {
    let newest = servers
        .iter()
        .filter_map(|server| chrono::DateTime::parse_from_rfc3339(&server.updated).ok())
        .map(|at| at.with_timezone(&chrono::Utc))
        .max();
    match (previous, newest) {
        (_, Some(newest)) => {
            Some(previous.map_or(newest, |previous| previous.max(newest)) - chrono::Duration::seconds(1))
        }
        (previous, None) => previous,
    }
}

/// Whether a pending server is ready (and then recorded with its address); an ERROR is
/// recorded with Nova's fault and fails.
async fn settled(
    server: &Server,
    server_key: &str,
    made: &BTreeMap<&str, &Value>,
    report: &impl Report,
) -> Result<bool> {
    match server.status.as_str() {
        "ACTIVE" => {
            let recorded = made.get(server_key).copied();
            let (group, index) = member_of(server_key).unwrap_or_default();
            let attributes = json!({
                "group": group, "index": index, "name": server.name, "ip": server.ip(),
                "flavor": recorded.map_or(&Value::Null, |made| &made["flavor"]),
                "image": recorded.map_or(&Value::Null, |made| &made["image"]),
            });
            report
                .record(Observed::new(server_key, "server", &server.id, "ACTIVE", attributes))
                .await?;
            Ok(true)
        }
        "ERROR" => {
            let fault = server.fault_message().unwrap_or_else(|| "no fault given".into());
            let attributes = json!({"fault": fault, "name": server.name});
            report
                .record(Observed::new(server_key, "server", &server.id, "ERROR", attributes))
                .await?;
            Err(CloudError::ResourceFailed {
                what: format!("server {}", server.name),
                message: format!("went to ERROR: {fault}"),
            })
        }
        _ => Ok(false),
    }
}

/// Resizes servers whose flavor changed, and confirms.
pub(super) async fn resize(cloud: &OpenStack, target: Target<'_>, keys: &[String], report: &impl Report) -> Result<()> {
    for server_key in keys {
        let Some(server_id) = target.recorded_id(server_key) else {
            continue;
        };
        let spec = spec_of(target.desired, server_key)?;
        let flavor = cloud.find_flavor(&spec.flavor).await?;
        let server = cloud.get_server(server_id).await?;
        if server.flavor["original_name"] != spec.flavor.as_str() && server.status == "ACTIVE" {
            cloud.resize_server(server_id, &flavor.id).await?;
        }
        let server = until_resized(cloud, server_id, &spec.flavor, report).await?;
        let image = target
            .recorded_attributes(server_key)
            .map_or(Value::Null, |made| made["image"].clone());
        let attributes = json!({"group": spec.group, "index": spec.index, "name": server.name, "ip": server.ip(), "flavor": spec.flavor, "image": image});
        report
            .record(Observed::new(server_key, "server", server_id, "ACTIVE", attributes))
            .await?;
    }
    Ok(())
}

/// `left_active`: whether the server has been seen in another state since the resize was
/// asked for. Nova that gives up on a resize puts the server back to ACTIVE with its old
/// flavor (and a fault), which must not be waited on for ever.
fn resizing(status: &str, flavor_now: &str, wanted: &str, left_active: bool) -> Progress {
    match status {
        "ACTIVE" if flavor_now == wanted => Progress::Done,
        "ACTIVE" if left_active => {
            Progress::Failed(format!("the resize did not take: the flavor is still {flavor_now}"))
        }
        "VERIFY_RESIZE" => Progress::Confirm,
        "ERROR" => Progress::Failed("went to ERROR while resizing".into()),
        _ => Progress::Wait,
    }
}

/// Waits for a resize to `flavor`, confirming it when Nova asks.
async fn until_resized(cloud: &OpenStack, server_id: &str, flavor: &str, report: &impl Report) -> Result<Server> {
    let judge = |server: &Server, left_active: bool| {
        let flavor_now = server.flavor["original_name"].as_str().unwrap_or_default();
        resizing(&server.status, flavor_now, flavor, left_active)
    };
    let change = Change {
        goal: format!("resized to {flavor}"),
        judge: &judge,
    };
    until_changed(cloud, server_id, change, report).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_updated(updated: &str) -> Server {
        serde_json::from_value(json!({"id": "s", "updated": updated})).unwrap()
    }

    #[test]
    fn polls_start_from_the_clouds_own_times() {
        let at = |text: &str| {
            chrono::DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        // The cloud's clock is an hour behind the worker's: the worker's "now" would skip
        // every change for an hour.
        let servers = [
            server_updated("2026-01-01T10:00:05Z"),
            server_updated("2026-01-01T10:00:09Z"),
        ];
        assert_eq!(next_since(None, &servers), Some(at("2026-01-01T10:00:08Z")));
        assert_eq!(
            next_since(Some(at("2026-01-01T10:00:08Z")), &[]),
            Some(at("2026-01-01T10:00:08Z")),
            "nothing changed"
        );
        assert_eq!(next_since(None, &[]), None);
    }

    #[test]
    fn a_resize_ends_done_confirmed_or_failed_never_waiting_on_a_flavor_that_stays() {
        assert_eq!(resizing("ACTIVE", "m1.large", "m1.large", false), Progress::Done);
        assert_eq!(resizing("RESIZE", "m1.small", "m1.large", true), Progress::Wait);
        assert_eq!(
            resizing("VERIFY_RESIZE", "m1.large", "m1.large", true),
            Progress::Confirm
        );
        assert_eq!(
            resizing("ACTIVE", "m1.small", "m1.large", false),
            Progress::Wait,
            "Nova has not started yet"
        );
        assert!(
            matches!(resizing("ACTIVE", "m1.small", "m1.large", true), Progress::Failed(_)),
            "Nova gave up"
        );
        assert!(matches!(
            resizing("ERROR", "m1.small", "m1.large", true),
            Progress::Failed(_)
        ));
    }
}
