//! Reconcile through the API: a pass asked for and followed, orphans listed past their grace
//! period (and counted in `/metrics`), a cleanup's dry run and its strict body, a
//! deployment's drift and its repair.

use orch_core::reconcile::{Drift, Marked, OrphanReason, Problem};
use orch_core::DeploymentStatus;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::db_test;
use crate::harness::{expect_problem, pointers, spawn_app, spawn_app_with, Db, READ_KEY};

fn stray(id: &str) -> (Marked, OrphanReason) {
    let marked = Marked {
        kind: "network".into(),
        id: id.into(),
        name: format!("orch-x-{id}"),
        deployment_id: "01900000-0000-7000-8000-00000000beef".into(),
        key: Some("network".into()),
    };
    (marked, OrphanReason::UnknownDeployment)
}

async fn reconcile_runs(db: Db) {
    let app = spawn_app(db).await;
    let accepted = app.post("/reconcile", &json!({})).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["kind"], "reconcile");
    assert_eq!(accepted["state"], "PENDING");
    let id = accepted["operation_id"].as_str().unwrap();
    let run: Value = app.get(&format!("/reconcile/{id}")).await.json().await.unwrap();
    assert_eq!(run["id"], id);
    assert_eq!(
        app.store.pending_runs(10).await.unwrap().len(),
        1,
        "the relay's outbox has it"
    );
    expect_problem(app.get("/reconcile/nope").await, StatusCode::NOT_FOUND).await;
    // A read key may look, not ask.
    let refused = app
        .client
        .post(app.url("/reconcile"))
        .header("X-API-Key", READ_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}
db_test!(a_pass_is_recorded_and_followed, reconcile_runs);

async fn orphans_and_cleanup(db: Db) {
    let app = spawn_app_with(db, |config| config.orphan_grace_seconds = 0).await;
    // The metrics recorder is the process's: each test counts under locations of its own.
    let region = format!("cloud:{}", uuid::Uuid::new_v4().simple());
    let host = format!("containers:{}", uuid::Uuid::new_v4().simple());
    let listed: Value = app.get("/orphans").await.json().await.unwrap();
    assert_eq!(listed, json!({"items": [], "grace_seconds": 0}));
    app.store
        .record_orphans(&region, &[stray("n1"), stray("n2")])
        .await
        .unwrap();
    app.store.record_orphans(&host, &[stray("c1")]).await.unwrap();
    let listed: Value = app.get("/orphans").await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 3, "{listed}");
    let only: Value = app
        .get(&format!("/orphans?location={host}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(only["items"][0]["id"], "c1");
    assert_eq!(only["items"][0]["reason"], "unknown_deployment");
    assert!(only["items"][0]["first_seen"].is_string());
    let bad = expect_problem(app.get("/orphans?kind=x").await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(bad.to_string().contains("kind"), "{bad}");

    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(&format!(
            r#"orch_orphaned_resources{{kind="network",region="{region}"}} 2"#
        )),
        "{metrics}"
    );

    // A dry run lists, changes nothing and starts nothing.
    let dry = app.post("/orphans/cleanup", &json!({"dry_run": true})).await;
    assert_eq!(dry.status(), StatusCode::OK);
    let dry: Value = dry.json().await.unwrap();
    assert_eq!(dry["items"].as_array().unwrap().len(), 3);
    assert!(app.store.pending_runs(10).await.unwrap().is_empty());
    let problem = expect_problem(
        app.post("/orphans/cleanup", &json!({"dry_run": "yes", "everything": true}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/dry_run", "/everything"]);
    assert!(
        app.store.pending_runs(10).await.unwrap().is_empty(),
        "bad input changes nothing"
    );
    let accepted = app.post("/orphans/cleanup", &json!({})).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["kind"], "cleanup");

    // Seen no more by the next pass: gone by itself, and counted 0.
    app.store.record_orphans(&region, &[]).await.unwrap();
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(&format!(
            r#"orch_orphaned_resources{{kind="network",region="{region}"}} 0"#
        )),
        "{metrics}"
    );
}
db_test!(orphans_are_listed_counted_and_cleaned_up, orphans_and_cleanup);

async fn grace(db: Db) {
    let app = spawn_app(db).await;
    app.store
        .record_orphans("cloud:RegionOne", &[stray("n1")])
        .await
        .unwrap();
    let listed: Value = app.get("/orphans").await.json().await.unwrap();
    assert_eq!(
        listed,
        json!({"items": [], "grace_seconds": 600}),
        "just found: in its grace period"
    );
}
db_test!(an_orphan_in_its_grace_period_is_not_listed, grace);

async fn drift_and_repair(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let id = app.create_deployment("drifting").await;
    let view: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(
        (view["drifted"].clone(), view["auto_heal"].clone()),
        (json!(false), json!(false))
    );
    let drift: Value = app.get(&format!("/deployments/{id}/drift")).await.json().await.unwrap();
    assert_eq!(drift["items"], json!([]));
    assert_eq!(drift["checked_at"], Value::Null);
    // A repair waits for the create in flight.
    let busy = app.post(&format!("/deployments/{id}/reconcile"), &json!({})).await;
    expect_problem(busy, StatusCode::CONFLICT).await;
    app.complete_pending_operation(&id, DeploymentStatus::Completed).await;

    let found = Drift {
        key: "server:web:0".into(),
        kind: "server".into(),
        id: "s0".into(),
        problem: Problem::Gone,
    };
    let new = app.store.record_drift(&id, std::slice::from_ref(&found)).await.unwrap();
    assert_eq!(new, std::slice::from_ref(&found));
    assert!(
        app.store.record_drift(&id, &[found]).await.unwrap().is_empty(),
        "seen before"
    );
    let view: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(view["drifted"], true);
    assert_eq!(view["drift_count"], 1);
    let drift: Value = app.get(&format!("/deployments/{id}/drift")).await.json().await.unwrap();
    assert_eq!(drift["items"][0]["logical_key"], "server:web:0");
    assert_eq!(drift["items"][0]["problem"], "gone");
    assert!(drift["checked_at"].is_string());

    let accepted = app.post(&format!("/deployments/{id}/reconcile"), &json!({})).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["status"], "UPDATING");
    let operation = app
        .store
        .operation(accepted["operation_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        operation.payload["repair"], true,
        "the plan looks at the providers first"
    );
    expect_problem(app.get("/deployments/nope/drift").await, StatusCode::NOT_FOUND).await;
    let unknown = app
        .send_json(Method::POST, "/deployments/nope/reconcile", &json!({}))
        .await;
    expect_problem(unknown, StatusCode::NOT_FOUND).await;
}
db_test!(drift_is_shown_and_a_repair_is_an_update, drift_and_repair);

async fn auto_heal(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let created = app
        .post(
            "/deployments",
            &json!({"name": "healing", "template": "web-app-stack", "auto_heal": true}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::ACCEPTED);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(view["auto_heal"], true);
    let bad = app
        .post(
            "/deployments",
            &json!({"name": "bad", "template": "web-app-stack", "auto_heal": "always"}),
        )
        .await;
    let problem = expect_problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/auto_heal"]);
}
db_test!(auto_heal_is_asked_for_at_create, auto_heal);
