//! Updates that change what existing servers have: volumes a group gains are made and
//! attached to the servers it already has, which stay as they are.

use orch_core::{DeploymentStatus, OperationKind, Template};
use serde_json::{json, Value};

use super::harness;

fn web(volumes: Value) -> Value {
    json!({
      "name": "growing",
      "vm_config": {"web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 2, "volumes": volumes}},
      "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24"}}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_added_to_a_group_are_attached_to_the_servers_it_has() {
    let h = harness(|_| {}).await;
    let before = Template::parse(&web(json!([])), "", None).unwrap();
    let id = h.create("growing", before, true).await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let servers = |inventory: &Value| -> Vec<String> {
        let mut ids: Vec<String> = (inventory["servers"].as_array().unwrap().iter())
            .map(|server| server["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let servers_before = servers(&h.inventory().await);

    let payload = json!({"template_id": null, "template": web(json!([{"size_gb": 1}])), "parameters": {}});
    let updated = h.operate(&id, OperationKind::Update, &payload).await;
    assert_eq!(
        updated.status,
        DeploymentStatus::Completed,
        "{:?}",
        updated.status_reason
    );
    let inventory = h.inventory().await;
    assert_eq!(servers(&inventory), servers_before, "the servers stay as they are");
    let volumes = inventory["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    let mut attached_to: Vec<String> = volumes
        .iter()
        .map(|volume| {
            assert_eq!(volume["status"], "in-use", "{volume}");
            volume["attachments"][0]["server_id"].as_str().unwrap().to_owned()
        })
        .collect();
    attached_to.sort();
    assert_eq!(attached_to, servers_before, "one volume on each server");
    let recorded = h.store.resources(&id).await.unwrap();
    let in_use = recorded
        .iter()
        .filter(|r| r.kind == "volume" && r.status == "in-use")
        .count();
    assert_eq!(in_use, 2, "{recorded:?}");
}
