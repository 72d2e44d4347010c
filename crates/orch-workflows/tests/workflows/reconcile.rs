//! Reconcile: orphans made behind orch's back are found, listed and removed (and nothing
//! without orch's marks is touched); drift made behind its back is found and repaired; the
//! schedule is one per location however many replicas ask for it.

use std::time::{Duration, Instant};

use orch_cloud::{CloudConfig, OpenStack, ResourceKey};
use orch_core::reconcile::Drift;
use orch_core::DeploymentStatus;
use orch_store::reconcile::{run_kind, OrphanRecord};
use orch_store::{operation_state, Actor};
use serde_json::json;

use super::common::{guarded_web, ingress_rules, until_server};
use temporalio_client::schedules::ScheduleOverlapPolicy;

use super::{harness, Harness};

/// A deployment id no store ever had.
const STRANGER: &str = "01900000-0000-7000-8000-00000000beef";

/// orch's own client, as someone working behind orch's back would use the cloud.
fn outsider(h: &Harness) -> OpenStack {
    OpenStack::new(CloudConfig::password(&h.cloud.auth_url(), "admin", "fakecloud", "admin").unwrap()).unwrap()
}

/// The orphans the store knows (in their grace period or not).
async fn known_orphans(h: &Harness, location: &str) -> Vec<OrphanRecord> {
    h.store.orphans(0, Some(location)).await.unwrap()
}

fn network_ids(inventory: &serde_json::Value) -> Vec<String> {
    inventory["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|network| network["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphans_are_found_listed_and_removed_and_nothing_unmarked_is_touched() {
    let h = harness(|_| {}).await;
    let id = h.create("keeper", guarded_web("m1.small", 1), true).await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let cloud = outsider(&h);
    // A network of a deployment no store knows, and a security group of the live
    // deployment under a key it does not hold.
    let (stray_network, _) = cloud
        .ensure_network(&ResourceKey::new(STRANGER, "network").unwrap())
        .await
        .unwrap();
    let (stray_group, _) = cloud
        .ensure_security_group(&ResourceKey::new(&id, "security-group:stray").unwrap(), "")
        .await
        .unwrap();
    // A network named like orch's but without its marks: someone else's.
    let (handmade, _) = cloud
        .ensure_network(&ResourceKey::new(STRANGER, "handmade").unwrap())
        .await
        .unwrap();
    {
        let mut world = h.cloud.cloud.world();
        let network = world
            .neutron
            .get_mut("networks")
            .unwrap()
            .get_mut(&handmade.id)
            .unwrap();
        network["tags"] = json!([]);
    }

    let pass = h.reconcile_run(run_kind::RECONCILE).await;
    assert_eq!(pass.state, operation_state::SUCCEEDED, "{:?}", pass.error);
    let place = &pass.result["locations"]["cloud:RegionOne"];
    assert_eq!(place["new_orphans"], 2, "{place}");
    let found = known_orphans(&h, "cloud:RegionOne").await;
    let judged: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|orphan| {
            (
                orphan.resource_id.as_str(),
                orphan.kind.as_str(),
                orphan.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(judged.len(), 2, "{judged:?}");
    assert!(judged.contains(&(stray_network.id.as_str(), "network", "unknown_deployment")));
    assert!(judged.contains(&(stray_group.id.as_str(), "security_group", "key_not_held")));
    assert!(h.event_actions(&id).await.contains(&"orphan.found".to_owned()));
    assert!(
        h.store.orphans(600, None).await.unwrap().is_empty(),
        "within the grace period nothing is listed"
    );

    // In its grace period an orphan stays; past it, it goes, and only it.
    h.age_orphans(&[&stray_network.id]).await;
    let cleanup = h.reconcile_run(run_kind::CLEANUP).await;
    assert_eq!(cleanup.state, operation_state::SUCCEEDED, "{:?}", cleanup.error);
    let removed = &cleanup.result["locations"]["cloud:RegionOne"]["removed"];
    assert_eq!(removed, &json!([stray_network.id]), "{}", cleanup.result);
    let networks = network_ids(&h.inventory().await);
    assert!(!networks.contains(&stray_network.id));
    assert!(networks.contains(&handmade.id), "unmarked: left alone");
    assert_eq!(h.count("servers").await, 1, "the live deployment keeps its server");
    h.age_orphans(&[&stray_group.id]).await;
    h.reconcile_run(run_kind::CLEANUP).await;
    let groups = h.inventory().await["security_groups"].clone();
    assert!(
        !groups
            .as_array()
            .unwrap()
            .iter()
            .any(|group| group["id"] == stray_group.id.as_str()),
        "{groups}"
    );
    assert!(known_orphans(&h, "cloud:RegionOne").await.is_empty());
    let deployment = h.store.deployment(&id).await.unwrap();
    assert_eq!(deployment.drift_count, 0);
    assert!(deployment.drift_checked_at.is_some(), "the pass compared it too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_container_labelled_for_no_deployment_is_an_orphan_and_goes() {
    super::containers::busybox_image();
    let h = harness(|_| {}).await;
    let label = format!("orch.deployment={STRANGER}-{}", super::common::unique());
    let docker = |args: &[&str]| {
        let output = std::process::Command::new("docker").args(args).output().unwrap();
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    let labelled = docker(&[
        "run",
        "-d",
        "--label",
        &label,
        super::containers::BUSYBOX,
        "sleep",
        "600",
    ]);
    let plain = docker(&["run", "-d", super::containers::BUSYBOX, "sleep", "600"]);
    let _cleanup = Removal(vec![labelled.clone(), plain.clone()]);

    h.reconcile_run(run_kind::RECONCILE).await;
    let found = known_orphans(&h, "containers:local").await;
    let ours: Vec<&OrphanRecord> = found.iter().filter(|orphan| orphan.resource_id == labelled).collect();
    assert_eq!(ours.len(), 1, "{found:?}");
    assert_eq!(ours[0].kind, "container");
    assert_eq!(ours[0].reason, "unknown_deployment");
    assert!(
        !found.iter().any(|orphan| orphan.resource_id == plain),
        "unlabelled: not ours"
    );

    h.age_orphans(&[&labelled]).await;
    let cleanup = h.reconcile_run(run_kind::CLEANUP).await;
    assert_eq!(
        cleanup.result["locations"]["containers:local"]["removed"],
        json!([labelled]),
        "{}",
        cleanup.result
    );
    let left = docker(&["ps", "-aq", "--no-trunc"]);
    assert!(!left.contains(&labelled), "the orphan is gone");
    assert!(left.contains(&plain), "the unlabelled container stays");
}

/// Removes the test's containers, also when it fails.
struct Removal(Vec<String>);

impl Drop for Removal {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = std::process::Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

fn problems(drift: &[Drift]) -> Vec<(String, &'static str)> {
    drift
        .iter()
        .map(|found| (found.key.clone(), found.problem.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drift_behind_orchs_back_is_found_and_repaired() {
    let h = harness(|_| {}).await;
    let id = h.create("drifting", guarded_web("m1.small", 4), true).await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let recorded = h.store.resources(&id).await.unwrap();
    let server = |key: &str| {
        let found = recorded.iter().find(|resource| resource.logical_key == key).unwrap();
        found.cloud_id.clone().unwrap()
    };
    let gone = server("server:web:0");
    let cloud = outsider(&h);
    cloud.delete_server(&gone).await.unwrap();
    let group = server("security-group:web");
    let rules = ingress_rules(&cloud, &group).await;
    assert_eq!(rules.len(), 2);
    let ssh = rules.iter().find(|rule| rule.port_range_min == Some(22)).unwrap();
    cloud.delete_security_group_rule(&ssh.id).await.unwrap();
    {
        let mut world = h.cloud.cloud.world();
        world.servers.get_mut(&server("server:web:1")).unwrap().fails = true;
        world.servers.get_mut(&server("server:web:2")).unwrap().stopped = true;
        let large = h
            .cloud
            .cloud
            .config()
            .flavors
            .into_iter()
            .find(|f| f.name == "m1.large")
            .unwrap();
        world.servers.get_mut(&server("server:web:3")).unwrap().flavor = large;
    }
    until_server(&cloud, &gone, None).await;

    let pass = h.reconcile_run(run_kind::RECONCILE).await;
    assert_eq!(pass.result["locations"]["cloud:RegionOne"]["drifted"], json!([id]));
    let drift: Vec<Drift> = h
        .store
        .drift(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|record| Drift {
            key: record.logical_key,
            kind: record.kind,
            id: record.resource_id,
            problem: serde_json::from_value(record.detail).unwrap(),
        })
        .collect();
    let expected = [
        ("security-group:web", "rules_missing"),
        ("server:web:0", "gone"),
        ("server:web:1", "error"),
        ("server:web:2", "stopped"),
        ("server:web:3", "resized"),
    ];
    assert_eq!(
        problems(&drift),
        expected.map(|(key, problem)| (key.to_owned(), problem))
    );
    let deployment = h.store.deployment(&id).await.unwrap();
    assert_eq!(deployment.drift_count, 5);
    assert_eq!(
        serde_json::to_value(&drift[0].problem).unwrap()["rules"],
        json!(["ingress IPv4 tcp 22-22 10.0.0.0/8"]),
        "the missing rule, named"
    );
    assert_eq!(deployment.status, DeploymentStatus::Completed, "reported, not repaired");
    assert!(h.event_actions(&id).await.contains(&"drift.found".to_owned()));

    h.store.request_repair(&id, &Actor::default()).await.unwrap();
    let repaired = h.settle(&id).await;
    assert_eq!(
        repaired.status,
        DeploymentStatus::Completed,
        "{:?}",
        repaired.status_reason
    );
    let inventory = h.inventory().await;
    let servers = inventory["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 4, "{servers:?}");
    for server in servers {
        assert_eq!(server["status"], "ACTIVE", "{server}");
        assert_eq!(server["flavor"]["original_name"], "m1.small", "{server}");
    }
    assert_eq!(ingress_rules(&cloud, &group).await.len(), 2, "the rule is made again");
    let now = h.store.resources(&id).await.unwrap();
    let made_again = now.iter().find(|r| r.logical_key == "server:web:0").unwrap();
    assert_ne!(
        made_again.cloud_id.as_deref(),
        Some(gone.as_str()),
        "a new server, recorded"
    );
    for key in ["server:web:1", "server:web:2", "server:web:3"] {
        let kept = now.iter().find(|r| r.logical_key == key).unwrap();
        assert_eq!(kept.cloud_id, Some(server(key)), "{key} repaired in place");
    }
    h.reconcile_run(run_kind::RECONCILE).await;
    assert_eq!(h.store.deployment(&id).await.unwrap().drift_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_auto_healing_deployment_is_repaired_by_the_pass() {
    let h = harness(|_| {}).await;
    let id = h.orch.create_auto_healing("healing", guarded_web("m1.small", 1)).await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let server = h.store.resources(&id).await.unwrap();
    let server = server
        .iter()
        .find(|r| r.kind == "server")
        .unwrap()
        .cloud_id
        .clone()
        .unwrap();
    let cloud = outsider(&h);
    cloud.delete_server(&server).await.unwrap();
    until_server(&cloud, &server, None).await;
    let pass = h.reconcile_run(run_kind::RECONCILE).await;
    assert_eq!(pass.result["locations"]["cloud:RegionOne"]["healed"], json!([id]));
    let healed = h.settle(&id).await;
    assert_eq!(healed.status, DeploymentStatus::Completed, "{:?}", healed.status_reason);
    assert_eq!(h.count("servers").await, 1);
    let now = h.store.resources(&id).await.unwrap();
    let made = now.iter().find(|r| r.kind == "server").unwrap();
    assert_ne!(made.cloud_id.as_deref(), Some(server.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_schedule_per_location_and_it_runs_the_pass() {
    let h = harness(|_| {}).await;
    let locations = vec!["cloud:RegionOne".to_owned()];
    // Two replicas start at once, then one again with another interval.
    let (first, second) = tokio::join!(
        orch_workflows::ensure_schedules(&h.client, &h.task_queue, &locations, Duration::from_secs(3600)),
        orch_workflows::ensure_schedules(&h.client, &h.task_queue, &locations, Duration::from_secs(3600)),
    );
    first.unwrap();
    second.unwrap();
    orch_workflows::ensure_schedules(&h.client, &h.task_queue, &locations, Duration::from_secs(1800))
        .await
        .unwrap();
    let id = orch_workflows::schedule_id(&h.task_queue, "cloud:RegionOne");
    let handle = h.client.get_schedule_handle(id.clone());
    let description = handle.describe(Default::default()).await.unwrap();
    let spec = description.raw().schedule.clone().unwrap().spec.unwrap();
    assert_eq!(spec.interval.len(), 1);
    assert_eq!(spec.interval[0].interval.as_ref().unwrap().seconds, 1800);
    // Triggered, it runs one pass, recorded as the schedule's.
    handle
        .trigger(ScheduleOverlapPolicy::Skip, Default::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        let pool = sqlx::SqlitePool::connect(&h.database_url).await.unwrap();
        let row: Option<(String,)> = sqlx::query_as("SELECT id FROM reconcile_runs WHERE actor = 'schedule'")
            .fetch_optional(&pool)
            .await
            .unwrap();
        if let Some((run_id,)) = row {
            break h.until_run_finished(&run_id).await;
        }
        assert!(Instant::now() < deadline, "the schedule started no pass");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(recorded.id.starts_with(&id), "{}", recorded.id);
    assert_eq!(recorded.state, operation_state::SUCCEEDED, "{:?}", recorded.error);
    assert!(recorded.result["locations"]["cloud:RegionOne"].is_object());
    handle.delete(Default::default()).await.unwrap();
}
