//! Templates with `services:`: accepted as written, stored and read back, placed on a
//! container host instead of a region, refused with located problems; and the host port
//! leases every instance's published ports come from.

use orch_store::leases::LeaseRequest;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::db_test;
use crate::harness::{expect_problem, pointers, spawn_app, Db, TestApp};

const TWO_TIER: &str = include_str!("../../../../examples/two-tier-services.yaml");

/// Stores the two-tier example as YAML, as a user would.
async fn store_two_tier(app: &TestApp) -> Value {
    let stored = app
        .request(reqwest::Method::POST, "/templates")
        .header("content-type", "application/yaml")
        .body(TWO_TIER)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::CREATED);
    stored.json().await.unwrap()
}

async fn a_services_template_is_stored_and_deployed_on_a_container_host(db: Db) {
    let app = spawn_app(db).await;
    let stored = store_two_tier(&app).await;
    assert_eq!(stored["services"]["web"]["instances"], 2);
    assert!(stored.get("vm_config").is_none(), "no servers: {stored}");
    let read: Value = app.get("/templates/two-tier").await.json().await.unwrap();
    assert_eq!(read["services"], stored["services"], "read back as written");

    let accepted = app
        .post("/deployments", &json!({"name": "tt", "template": "two-tier"}))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let id = accepted.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deployment: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(deployment["container_host"], "local");
    assert_eq!(deployment["cloud_region"], "", "services alone need no cloud");

    let unknown = app
        .post(
            "/deployments",
            &json!({"name": "tt2", "template": "two-tier", "container_host": "mars"}),
        )
        .await;
    let problem = expect_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/container_host"]);
    let scale = app
        .post(
            &format!("/deployments/{id}/scale"),
            &json!({"target_count": 3, "service": "nope"}),
        )
        .await;
    let problem = expect_problem(scale, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/service"]);
    app.stop().await;
}
db_test!(
    services_template,
    a_services_template_is_stored_and_deployed_on_a_container_host
);

async fn a_bad_services_template_changes_nothing(db: Db) {
    let app = spawn_app(db).await;
    let template = json!({"name": "bad", "services": {
        "a": {"image": "x", "class": "data", "depends_on": [{"service": "b", "condition": "healthy"}]},
        "b": {"image": "x", "class": "gateway", "depends_on": ["a", "ghost"]},
    }});
    let problem = expect_problem(
        app.post("/templates", &template).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let found = pointers(&problem);
    for expected in [
        "/services/a/depends_on/0",
        "/services/b/depends_on/1",
        "/services/a/depends_on",
    ] {
        assert!(found.contains(&expected.to_owned()), "missing {expected} in {found:?}");
    }
    let field = json!({"name": "bad", "services": {"b": {"image": "x", "class": "gateway", "ports": [{"container": 0, "name": "p"}]}}});
    let problem = expect_problem(app.post("/templates", &field).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/services/b/ports/0/container"]);
    let list: Value = app.get("/templates").await.json().await.unwrap();
    assert_eq!(list["total"], 0, "nothing was stored");
    app.stop().await;
}
db_test!(bad_services_template, a_bad_services_template_changes_nothing);

async fn leases_never_give_one_port_twice(db: Db) {
    let app = spawn_app(db).await;
    store_two_tier(&app).await;
    let id = app
        .post("/deployments", &json!({"name": "leases", "template": "two-tier"}))
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let keys: Vec<String> = (0..20).map(|index| format!("container:web:{index}")).collect();
    fn lease<'a>(id: &'a str, key: &'a str) -> LeaseRequest<'a> {
        LeaseRequest {
            host: "local",
            address: "0.0.0.0",
            protocol: "tcp",
            deployment_id: id,
            logical_key: key,
            port_name: "http",
        }
    }
    let request = |key: &'static str| lease(&id, key);
    // Twenty instances at once, from a range of exactly twenty ports.
    let leases = futures_util::future::join_all(keys.iter().map(|key| {
        let store = app.store.clone();
        let request = lease(&id, key);
        async move { store.lease_port(&request, 21_000..=21_019, &[]).await }
    }))
    .await;
    let mut ports: Vec<u16> = leases.into_iter().map(Result::unwrap).collect();
    let again = app
        .store
        .lease_port(&lease(&id, &keys[3]), 21_000..=21_019, &[])
        .await
        .unwrap();
    assert_eq!(again, ports[3], "asking again gives the same port");
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 20, "distinct ports: {ports:?}");
    let full = app
        .store
        .lease_port(&request("container:web:20"), 21_000..=21_019, &[])
        .await;
    assert!(full.unwrap_err().to_string().contains("no free host port"));

    // A port held outside orch is given up for another; a released one is free again.
    app.store.release_ports(&id, &keys[..1]).await.unwrap();
    let held = app
        .store
        .lease_port(&lease(&id, &keys[1]), 21_000..=21_019, &[])
        .await
        .unwrap();
    let moved = app
        .store
        .lease_port(&lease(&id, &keys[1]), 21_000..=21_019, &[held])
        .await
        .unwrap();
    assert_ne!(moved, held, "moved off a port held outside orch");
    assert_eq!(app.store.port_leases(&id).await.unwrap().len(), 19);
    app.store.release_ports(&id, &[]).await.unwrap();
    assert!(app.store.port_leases(&id).await.unwrap().is_empty());
    app.stop().await;
}
db_test!(port_leases, leases_never_give_one_port_twice);

async fn the_catalog_is_listed_and_named_by_templates(db: Db) {
    let app = spawn_app(db).await;
    let list: Value = app.get("/catalog").await.json().await.unwrap();
    assert!(list["total"].as_u64().unwrap() >= 23, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for expected in [
        "prometheus",
        "grafana",
        "loki",
        "tempo",
        "alloy",
        "redis",
        "kafka",
        "argocd",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let prometheus: Value = app.get("/catalog/prometheus").await.json().await.unwrap();
    assert_eq!(prometheus["service"]["image"], "prom/prometheus:v3.9.0");
    assert_eq!(prometheus["service"]["healthcheck"]["http"]["path"], "/-/ready");
    expect_problem(app.get("/catalog/nope").await, StatusCode::NOT_FOUND).await;

    let template = json!({"name": "metrics", "services": {"metrics": {"catalog": "prometheus", "instances": 2}}});
    let stored = app.post("/templates", &template).await;
    assert_eq!(stored.status(), StatusCode::CREATED);
    let stored: Value = stored.json().await.unwrap();
    assert_eq!(stored["services"]["metrics"]["catalog"], "prometheus");
    assert_eq!(stored["services"]["metrics"]["image"], "prom/prometheus:v3.9.0");
    assert_eq!(stored["services"]["metrics"]["instances"], 2);
    let unknown = json!({"name": "m2", "services": {"m": {"catalog": "prometheus2"}}});
    let problem = expect_problem(app.post("/templates", &unknown).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/services/m/catalog"]);
    app.stop().await;
}
db_test!(catalog, the_catalog_is_listed_and_named_by_templates);
