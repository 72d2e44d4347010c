//! Updates that change what existing servers have: volumes a group gains are made and
//! attached to the servers it already has, which stay as they are; an image change rebuilds
//! them; a subnet's new range replaces it, and its servers (and those of a group that moved
//! to another subnet) are made again with their volumes.

use orch_core::{DeploymentStatus, OperationKind, Template};
use serde_json::{json, Value};

use super::{harness, Harness};

/// Updates the deployment to `template` and checks that it completed.
async fn update_to(h: &Harness, id: &str, template: Value) {
    let payload = json!({"template_id": null, "template": template, "parameters": {}});
    let updated = h.operate(id, OperationKind::Update, &payload).await;
    assert_eq!(
        updated.status,
        DeploymentStatus::Completed,
        "{:?}",
        updated.status_reason
    );
}

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

    update_to(&h, &id, web(json!([{"size_gb": 1}]))).await;
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

/// An image change rebuilds the group's servers in place: the same servers (ids, addresses),
/// now on the new image, in batches; the dry run names each rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_image_change_rebuilds_the_servers_in_place() {
    let h = harness(|config| config.boot_delay_ms = 200).await;
    let template = |image: &str| {
        let mut document = web(json!([]));
        document["vm_config"]["web"]["count"] = json!(4);
        document["vm_config"]["web"]["image"] = json!(image);
        document
    };
    let id = h
        .create(
            "rebuilt",
            Template::parse(&template("ubuntu-22.04"), "", None).unwrap(),
            true,
        )
        .await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let before = h.inventory().await["servers"].clone();
    let images: Vec<&Value> = before
        .as_array()
        .unwrap()
        .iter()
        .map(|server| &server["image"]["id"])
        .collect();
    assert!(images.windows(2).all(|pair| pair[0] == pair[1]));

    let recorded: Vec<orch_core::provider::Observed> = (h.store.resources(&id).await.unwrap().into_iter())
        .map(Into::into)
        .collect();
    let desired = Template::parse(&template("cirros"), "", None).unwrap();
    let plan = orch_core::plan::Plan::for_operation(OperationKind::Update, &recorded, &desired, None);
    let reasons: Vec<String> = plan
        .changes(&recorded, &desired)
        .into_iter()
        .map(|change| change.reason)
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|reason| reason == "image ubuntu-22.04 -> cirros, rebuilt in place"),
        "{reasons:?}"
    );

    update_to(&h, &id, template("cirros")).await;
    let after = h.inventory().await["servers"].clone();
    let ids = |servers: &Value| -> Vec<String> {
        let mut ids: Vec<String> = (servers.as_array().unwrap().iter())
            .map(|server| server["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&after), ids(&before), "rebuilt in place, not replaced");
    for server in after.as_array().unwrap() {
        assert_ne!(&server["image"]["id"], images[0], "{server}");
        assert_eq!(server["status"], "ACTIVE");
    }
    let recorded = h.store.resources(&id).await.unwrap();
    assert!(
        (recorded.iter().filter(|r| r.kind == "server")).all(|r| r.attributes["image"] == "cirros"),
        "{recorded:?}"
    );
}

fn two_tier(web_cidr: &str, db_subnet: &str, subnets: Value) -> Value {
    let mut subnets = subnets;
    subnets["web"] = json!(web_cidr);
    json!({
      "name": "moving",
      "vm_config": {
        "web": {"flavor": "m1.small", "image": "cirros", "count": 1, "volumes": [{"size_gb": 1}]},
        "db": {"flavor": "m1.small", "image": "cirros", "count": 1, "subnet": db_subnet}
      },
      "network_config": {"cidr": "10.0.0.0/16", "subnets": subnets}
    })
}

/// The ranges of the subnets the cloud holds, sorted.
fn subnet_cidrs(inventory: &Value) -> Vec<String> {
    let mut cidrs: Vec<String> = (inventory["subnets"].as_array().unwrap().iter())
        .map(|subnet| subnet["cidr"].as_str().unwrap().to_owned())
        .collect();
    cidrs.sort();
    cidrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_cidr_replaces_the_subnet_and_a_moved_group_leaves_the_dropped_one() {
    let h = harness(|_| {}).await;
    let before = two_tier("10.0.1.0/24", "db", json!({"db": "10.0.3.0/24"}));
    let id = h
        .create("moving", Template::parse(&before, "", None).unwrap(), true)
        .await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let volume_before = h.inventory().await["volumes"][0]["id"].clone();

    // web's subnet gets another range; db moves to a new subnet and its old one goes.
    let after = two_tier("10.0.5.0/24", "data", json!({"data": "10.0.4.0/24"}));
    let plan = h.store.resources(&id).await.unwrap();
    let recorded: Vec<orch_core::provider::Observed> = plan.into_iter().map(Into::into).collect();
    let desired = Template::parse(&after, "", None).unwrap();
    let plan = orch_core::plan::Plan::for_operation(OperationKind::Update, &recorded, &desired, None);
    let mut changes: Vec<(String, String)> = plan
        .changes(&recorded, &desired)
        .into_iter()
        .map(|change| (change.action.to_owned(), change.key))
        .collect();
    changes.sort();
    let expected = [
        ("create", "subnet:data"),
        ("create", "subnet:web"),
        ("prune", "router-interface:db"),
        ("prune", "subnet:db"),
        ("recreate", "server:db:0"),
        ("recreate", "server:web:0"),
        ("replace", "subnet:web"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(a, k)| (a.to_string(), k.to_string())).collect();
    assert_eq!(changes, expected, "the dry run lists exactly these");

    update_to(&h, &id, after).await;
    let inventory = h.inventory().await;
    assert_eq!(subnet_cidrs(&inventory), ["10.0.4.0/24", "10.0.5.0/24"]);
    let servers = inventory["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "{servers:?}");
    let addresses: Vec<String> = servers
        .iter()
        .flat_map(|server| server["addresses"].as_object().unwrap().values())
        .flat_map(|addresses| addresses.as_array().unwrap().iter())
        .map(|address| address["addr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(addresses.len(), 2, "{addresses:?}");
    assert!(addresses.iter().any(|ip| ip.starts_with("10.0.5.")), "{addresses:?}");
    assert!(addresses.iter().any(|ip| ip.starts_with("10.0.4.")), "{addresses:?}");
    let volumes = inventory["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0]["id"], volume_before, "the volume is kept");
    assert_eq!(volumes[0]["status"], "in-use", "and attached to the new server");
    let recorded = h.store.resources(&id).await.unwrap();
    assert!(!recorded.iter().any(|r| r.logical_key == "subnet:db"), "{recorded:?}");
    let again = orch_core::plan::Plan::for_operation(
        OperationKind::Update,
        &recorded.into_iter().map(Into::into).collect::<Vec<_>>(),
        &desired,
        None,
    );
    assert!(
        again.servers.is_empty() && again.replace_subnets.is_empty(),
        "{again:?}"
    );
}
