//! The lifecycle on a real cloud, each step checked through the cloud's own API.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::{web_app_stack, Orch};
use crate::{client, clouds, ONE_AT_A_TIME};
use orch_cloud::compute::ServerFilter;
use orch_cloud::managed::name_prefix;
use orch_cloud::network::{Network, NeutronResource, Port, Router, SecurityGroup, Subnet};
use orch_cloud::OpenStack;
use orch_core::{DeploymentStatus, OperationKind, Template};
use orch_workflows::AnsibleSettings;
use serde_json::{json, Value};

pub(crate) async fn orch(cloud: &str) -> Orch {
    let mut orch = Orch::start(client(cloud), AnsibleSettings::default()).await;
    orch.patience = Duration::from_secs(600);
    orch
}

/// What the cloud holds of one deployment, by kind, as names; read through the cloud's
/// own API by every means orch could have marked a resource: its tags and its name.
async fn holdings(cloud: &OpenStack, deployment_id: &str) -> BTreeMap<&'static str, Vec<String>> {
    let prefix = name_prefix(deployment_id);
    let tag = format!("orch_deployment={deployment_id}");
    let ours = |name: &str, tags: &[String]| name.starts_with(&prefix) || tags.contains(&tag);
    let mut found = BTreeMap::new();
    let servers = cloud.list_servers(&ServerFilter::default()).await.unwrap();
    found.insert(
        "server",
        servers
            .iter()
            .filter(|server| server.is_live() && ours(&server.name, &server.tags))
            .map(|server| server.name.clone())
            .collect(),
    );
    let volumes = cloud.list_volumes(None, &BTreeMap::new()).await.unwrap();
    found.insert(
        "volume",
        volumes
            .iter()
            .filter(|volume| {
                volume.name.as_deref().is_some_and(|name| name.starts_with(&prefix))
                    || volume.metadata.get("orch_deployment").map(String::as_str) == Some(deployment_id)
            })
            .map(|volume| volume.name.clone().unwrap_or_default())
            .collect(),
    );
    let project = vec![("project_id", cloud.project_id().await.unwrap())];
    found.insert("port", names_of::<Port>(cloud, &project, &ours).await);
    found.insert("router", names_of::<Router>(cloud, &project, &ours).await);
    found.insert(
        "security_group",
        names_of::<SecurityGroup>(cloud, &project, &ours).await,
    );
    found.insert("subnet", names_of::<Subnet>(cloud, &project, &ours).await);
    found.insert("network", names_of::<Network>(cloud, &project, &ours).await);
    found
}

async fn names_of<T: NeutronResource>(
    cloud: &OpenStack,
    scope: &[(&'static str, String)],
    ours: &dyn Fn(&str, &[String]) -> bool,
) -> Vec<String> {
    let all: Vec<T> = cloud.list_neutron(scope).await.unwrap();
    all.iter()
        .filter(|resource| ours(resource.name(), resource.tags()))
        .map(|resource| resource.name().to_owned())
        .collect()
}

/// How many of each kind the cloud holds, after checking that no name is there twice.
async fn counts(cloud: &OpenStack, deployment_id: &str) -> BTreeMap<&'static str, usize> {
    let held = holdings(cloud, deployment_id).await;
    for (kind, names) in &held {
        let unique: BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "a {kind} exists twice: {names:?}");
    }
    held.into_iter().map(|(kind, names)| (kind, names.len())).collect()
}

pub(crate) async fn assert_nothing_left(cloud: &OpenStack, deployment_id: &str) {
    let held = holdings(cloud, deployment_id).await;
    let left: Vec<_> = held.iter().filter(|(_, names)| !names.is_empty()).collect();
    assert!(left.is_empty(), "left on the cloud: {left:?}");
}

fn expected(servers: usize, subnets: usize, groups: usize, volumes: usize) -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("server", servers),
        ("port", servers),
        ("volume", volumes),
        ("router", 1),
        ("security_group", groups),
        ("subnet", subnets),
        ("network", 1),
    ])
}

/// The seed's stack with what a real deployment also has: a gateway to the external network,
/// a security group with rules, and a volume on the database server.
fn full_stack() -> Template {
    let mut document = web_app_stack().to_value();
    document["network_config"]["router"] = json!({"external_network": "public"});
    document["security_groups"] = json!({"web": {"description": "web tier", "rules": [
        {"protocol": "tcp", "port_range_min": 443, "port_range_max": 443, "remote_ip_prefix": "0.0.0.0/0"},
        {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_group": "web"}
    ]}});
    document["vm_config"]["web"]["security_groups"] = json!(["web"]);
    document["vm_config"]["web"]["min_count"] = json!(1);
    document["vm_config"]["db"]["volumes"] = json!([{"size_gb": 1}]);
    Template::parse(&document, "", None).unwrap()
}

pub(crate) async fn server_id(orch: &Orch, id: &str, key: &str) -> String {
    let resources = orch.store.resources(id).await.unwrap();
    let server = resources
        .into_iter()
        .find(|resource| resource.logical_key == key)
        .unwrap();
    server.cloud_id.unwrap()
}

pub(crate) fn assert_status(
    deployment: &orch_store::DeploymentRecord,
    status: DeploymentStatus,
    cloud: &str,
    step: &str,
) {
    assert_eq!(
        deployment.status, status,
        "{cloud}, {step}: {:?}",
        deployment.status_reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real OpenStack: ORCH_TEST_CLOUDS"]
async fn web_app_stack_deploys_scales_updates_and_deletes_leaving_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    for name in clouds() {
        let cloud = client(&name);
        let orch = orch(&name).await;
        let id = orch.create("real-web-app", full_stack(), true).await;
        assert_status(&orch.settle(&id).await, DeploymentStatus::Completed, &name, "deploy");
        assert_eq!(counts(&cloud, &id).await, expected(6, 3, 1, 1), "{name}, deploy");

        orch.request(&id, OperationKind::Scale, json!({"target_count": 3, "vm_type": "web"}))
            .await;
        assert_status(&orch.settle(&id).await, DeploymentStatus::Completed, &name, "scale out");
        assert_eq!(counts(&cloud, &id).await, expected(7, 3, 1, 1), "{name}, scale out");
        orch.request(&id, OperationKind::Scale, json!({"target_count": 1, "vm_type": "web"}))
            .await;
        assert_status(&orch.settle(&id).await, DeploymentStatus::Completed, &name, "scale in");
        assert_eq!(counts(&cloud, &id).await, expected(5, 3, 1, 1), "{name}, scale in");
        let web: Vec<String> = orch
            .store
            .resources(&id)
            .await
            .unwrap()
            .into_iter()
            .filter(|resource| resource.kind == "server" && resource.logical_key.starts_with("server:web:"))
            .map(|resource| resource.logical_key)
            .collect();
        assert_eq!(web, ["server:web:0"], "{name}: the oldest stays");

        // Update: a cache group joins on a new subnet, web grows back and gains a volume per
        // server, and db is rebuilt from another image, in place. (Not a resize: the
        // testbed's fake virt driver fails confirmResize and leaves the server in ERROR.)
        let db_before = server_id(&orch, &id, "server:db:0").await;
        let mut updated = full_stack().to_value();
        updated["vm_config"]["web"]["count"] = json!(2);
        updated["vm_config"]["web"]["volumes"] = json!([{"size_gb": 1}]);
        updated["vm_config"]["db"]["image"] = json!("cirros");
        updated["network_config"]["subnets"]["cache"] = json!("10.0.4.0/24");
        updated["vm_config"]["cache"] = json!({"flavor": "m1.tiny", "image": "cirros", "count": 1});
        let payload = json!({"template_id": null, "template": updated, "parameters": {}});
        orch.request(&id, OperationKind::Update, payload).await;
        assert_status(&orch.settle(&id).await, DeploymentStatus::Completed, &name, "update");
        assert_eq!(counts(&cloud, &id).await, expected(7, 4, 1, 3), "{name}, update");
        assert_eq!(
            server_id(&orch, &id, "server:db:0").await,
            db_before,
            "{name}: rebuilt in place"
        );
        let cirros = cloud.find_image("cirros").await.unwrap();
        let db = cloud.get_server(&db_before).await.unwrap();
        assert_eq!(db.image["id"], cirros.id.as_str(), "{name}: db runs the new image");
        assert_eq!(db.status, "ACTIVE", "{name}");

        orch.store
            .delete_deployment(&id, &orch_store::Actor::default())
            .await
            .unwrap();
        assert_status(&orch.settle(&id).await, DeploymentStatus::Deleted, &name, "delete");
        assert_nothing_left(&cloud, &id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real OpenStack: ORCH_TEST_CLOUDS"]
async fn a_deploy_that_fails_after_its_servers_exist_compensates_and_leaves_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    for name in clouds() {
        let cloud = client(&name);
        let orch = orch(&name).await;
        // Everything is made up to the volumes, whose type the cloud does not know.
        let mut document = full_stack().to_value();
        document["vm_config"]["db"]["volumes"] = json!([{"size_gb": 1, "volume_type": "no-such-type"}]);
        let template = Template::parse(&document, "", None).unwrap();
        let id = orch.create("real-broken", template, true).await;
        let failed = orch.settle(&id).await;
        assert_status(&failed, DeploymentStatus::Failed, &name, "failed deploy");
        let reason = failed.status_reason.unwrap_or_default();
        assert!(reason.contains("no-such-type"), "{name}: {reason}");
        assert!(!reason.contains("compensation failed"), "{name}: {reason}");
        let events = orch.event_actions(&id).await;
        assert!(
            events.contains(&"compensation.started".to_owned()),
            "{name}: {events:?}"
        );
        assert_nothing_left(&cloud, &id).await;
    }
}

/// Times and request counts on the real cloud: `web-app-stack` and ten servers, each deployed
/// and deleted. Prints a table and writes `target/realcloud-figures.json`. Measures, asserts
/// only that the work was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real OpenStack: ORCH_TEST_CLOUDS"]
async fn figures_of_deploying_and_deleting_on_the_real_cloud() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let name = clouds().remove(0);
    let mut ten = web_app_stack();
    ten.vm_config.retain(|group, _| group == "web");
    ten.vm_config.get_mut("web").unwrap().count = 10;
    let mut rows = Vec::new();
    for (label, template, servers) in [("web-app-stack", web_app_stack(), 6), ("10 servers", ten, 10)] {
        let cloud = client(&name);
        let orch = Orch::start(cloud.clone(), AnsibleSettings::default()).await;
        let mut orch = orch;
        orch.patience = Duration::from_secs(600);
        let id = orch.create("real-figures", template, true).await;
        let started = Instant::now();
        assert_status(&orch.settle(&id).await, DeploymentStatus::Completed, &name, label);
        let deploy_s = started.elapsed().as_secs_f64();
        let (deploy_requests, deploy_writes) = (cloud.requests_sent(), cloud.writes_sent());
        orch.store
            .delete_deployment(&id, &orch_store::Actor::default())
            .await
            .unwrap();
        let started = Instant::now();
        assert_status(&orch.settle(&id).await, DeploymentStatus::Deleted, &name, label);
        let delete_s = started.elapsed().as_secs_f64();
        let delete_requests = cloud.requests_sent() - deploy_requests;
        let delete_writes = cloud.writes_sent() - deploy_writes;
        assert_nothing_left(&cloud, &id).await;
        rows.push(json!({
            "stack": label, "servers": servers,
            "deploy_s": round(deploy_s), "delete_s": round(delete_s),
            "deploy_requests_per_server": round(deploy_requests as f64 / servers as f64),
            "deploy_writes_per_server": round(deploy_writes as f64 / servers as f64),
            "delete_requests_per_server": round(delete_requests as f64 / servers as f64),
            "delete_writes_per_server": round(delete_writes as f64 / servers as f64),
        }));
    }
    print_figures(&name, &rows);
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn print_figures(cloud: &str, rows: &[Value]) {
    println!("figures on cloud '{cloud}':");
    println!("| stack | servers | deploy (s) | delete (s) | requests/server deploy (writes) | requests/server delete (writes) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} ({}) | {} ({}) |",
            row["stack"].as_str().unwrap(),
            row["servers"],
            row["deploy_s"],
            row["delete_s"],
            row["deploy_requests_per_server"],
            row["deploy_writes_per_server"],
            row["delete_requests_per_server"],
            row["delete_writes_per_server"]
        );
    }
    let path = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/realcloud-figures.json"
    ));
    let document = json!({"cloud": cloud, "runs": rows});
    std::fs::write(path, serde_json::to_string_pretty(&document).unwrap()).unwrap();
    println!("written to {}", path.display());
}
