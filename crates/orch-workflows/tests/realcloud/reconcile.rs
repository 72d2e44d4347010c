//! Reconcile on a real cloud: a server deleted, one shut off and a security group rule
//! deleted behind orch's back are found as drift and repaired, and a tagged network of no
//! deployment is found and removed.

use orch_cloud::ResourceKey;
use orch_core::DeploymentStatus;
use orch_store::reconcile::run_kind;
use serde_json::json;

use crate::common::{guarded_web, ingress_rules, until_server};

use crate::lifecycle::{assert_nothing_left, assert_status, orch, server_id};
use crate::{client, clouds, ONE_AT_A_TIME};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a real OpenStack: ORCH_TEST_CLOUDS"]
async fn drift_is_repaired_and_an_orphan_removed_on_the_real_cloud() {
    let _turn = ONE_AT_A_TIME.lock().await;
    for name in clouds() {
        let cloud = client(&name);
        let orch = orch(&name).await;
        let id = orch.create("real-drift", guarded_web("m1.tiny", 2), true).await;
        assert_status(&orch.settle(&id).await, DeploymentStatus::Completed, &name, "deploy");
        let (gone, stopped) = (
            server_id(&orch, &id, "server:web:0").await,
            server_id(&orch, &id, "server:web:1").await,
        );
        cloud.delete_server(&gone).await.unwrap();
        cloud.stop_server(&stopped).await.unwrap();
        let group = server_id(&orch, &id, "security-group:web").await;
        assert_eq!(ingress_rules(&cloud, &group).await.len(), 2, "{name}");
        let ssh = ingress_rules(&cloud, &group).await;
        let ssh = ssh.iter().find(|rule| rule.port_range_min == Some(22)).unwrap();
        cloud.delete_security_group_rule(&ssh.id).await.unwrap();
        let stranger = format!("0190aaaa-0000-7000-8000-{:012}", std::process::id());
        let (stray, _) = cloud
            .ensure_network(&ResourceKey::new(&stranger, "network").unwrap())
            .await
            .unwrap();
        until_server(&cloud, &gone, None).await;
        until_server(&cloud, &stopped, Some("SHUTOFF")).await;

        let pass = orch.reconcile_run(run_kind::RECONCILE).await;
        let location = format!("cloud:{}", cloud.region());
        assert_eq!(
            pass.result["locations"][&location]["drifted"],
            json!([id]),
            "{name}: {}",
            pass.result
        );
        let drift: Vec<(String, String)> = (orch.store.drift(&id).await.unwrap().into_iter())
            .map(|found| (found.logical_key, found.problem))
            .collect();
        let expected = [
            ("security-group:web", "rules_missing"),
            ("server:web:0", "gone"),
            ("server:web:1", "stopped"),
        ];
        assert_eq!(
            drift,
            expected.map(|(key, problem)| (key.to_owned(), problem.to_owned())),
            "{name}"
        );
        let orphans = orch.store.orphans(0, Some(&location)).await.unwrap();
        assert!(
            orphans.iter().any(|orphan| orphan.resource_id == stray.id),
            "{name}: {orphans:?}"
        );

        orch.store
            .request_repair(&id, &orch_store::Actor::default())
            .await
            .unwrap();
        assert_status(&orch.settle(&id).await, DeploymentStatus::Completed, &name, "repair");
        let made_again = server_id(&orch, &id, "server:web:0").await;
        assert_ne!(made_again, gone, "{name}");
        for server in [&made_again, &stopped] {
            assert_eq!(cloud.get_server(server).await.unwrap().status, "ACTIVE", "{name}");
        }
        assert_eq!(ingress_rules(&cloud, &group).await.len(), 2, "{name}: the rule is back");
        orch.reconcile_run(run_kind::RECONCILE).await;
        assert!(
            orch.store.drift(&id).await.unwrap().is_empty(),
            "{name}: nothing drifts now"
        );

        orch.age_orphans(&[&stray.id]).await;
        let cleanup = orch.reconcile_run(run_kind::CLEANUP).await;
        let removed = &cleanup.result["locations"][&location]["removed"];
        assert!(
            removed.as_array().unwrap().contains(&json!(stray.id)),
            "{name}: {}",
            cleanup.result
        );
        let left = cloud.list_networks(&[]).await.unwrap();
        assert!(
            !left.iter().any(|network| network.id == stray.id),
            "{name}: the orphan is gone"
        );

        orch.store
            .delete_deployment(&id, &orch_store::Actor::default())
            .await
            .unwrap();
        assert_status(&orch.settle(&id).await, DeploymentStatus::Deleted, &name, "delete");
        assert_nothing_left(&cloud, &id).await;
    }
}
