//! A deployment's secrets through the API: generated or supplied when it is created, listed
//! without their values, a generated one revealed once to a write key (and recorded), and
//! never in any other answer. Bad secret input is refused with located problems and stores
//! nothing.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::db_test;
use std::sync::Arc;

use orch_store::secrets::SecretKeys;
use orch_store::StoreError;
use secrecy::ExposeSecret;

use crate::harness::{expect_problem, pointers, spawn_app, spawn_app_customized, Db, READ_KEY, SECRET_KEY};

const SUPPLIED: &str = "supplied-value-7f3a";

fn template() -> Value {
    json!({
        "name": "with-secrets",
        "secrets": {"db_password": {"length": 24}, "api_token": {"supplied": true}},
        "services": {
            "db": {"image": "local/busybox:latest", "class": "data", "secrets": ["db_password", "api_token"]}
        }
    })
}

async fn secrets_are_sealed_listed_without_values_and_revealed_once(db: Db) {
    let app = spawn_app(db).await;
    let body = json!({"name": "s1", "template": template(), "secrets": {"api_token": SUPPLIED}});
    let accepted = app.post("/deployments", &body).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED, "{:?}", accepted.text().await);
    let id = accepted.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let view: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    let listed: Vec<(&str, &str)> = view["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|secret| (secret["name"].as_str().unwrap(), secret["source"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("api_token", "supplied"), ("db_password", "generated")]);
    assert!(!view.to_string().contains(SUPPLIED), "the view shows a value: {view}");

    let reveal = format!("/deployments/{id}/secrets/db_password/reveal");
    let read_only = app
        .client
        .post(app.url(&reveal))
        .header("X-API-Key", READ_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(read_only.status(), StatusCode::FORBIDDEN, "a read key reveals nothing");
    let first = app.request(Method::POST, &reveal).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["cache-control"], "no-store");
    let value = first.json::<Value>().await.unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(value.len(), 24);
    let stored = app.store.secret_values(&id).await.unwrap();
    assert_eq!(stored["db_password"].expose_secret(), value);
    let again = expect_problem(
        app.request(Method::POST, &reveal).send().await.unwrap(),
        StatusCode::CONFLICT,
    )
    .await;
    assert!(again["detail"].as_str().unwrap().contains("only once"), "{again}");
    let supplied = app
        .request(Method::POST, &format!("/deployments/{id}/secrets/api_token/reveal"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        supplied.status(),
        StatusCode::CONFLICT,
        "orch gives no supplied secret back"
    );
    let missing = app
        .request(Method::POST, &format!("/deployments/{id}/secrets/nope/reveal"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Recorded, without the value, anywhere the API answers.
    let events = app
        .get(&format!("/deployments/{id}/events"))
        .await
        .text()
        .await
        .unwrap();
    assert!(events.contains("secret.revealed"), "{events}");
    let view = app.get(&format!("/deployments/{id}")).await.text().await.unwrap();
    for text in [&events, &view] {
        assert!(
            !text.contains(&value) && !text.contains(SUPPLIED),
            "a value leaked: {text}"
        );
    }
    let view: Value = serde_json::from_str(&view).unwrap();
    assert!(view["secrets"][1]["revealed_at"].is_string(), "{view}");

    // Deleted before any workflow ran: deleted at once, its secrets erased with it.
    let deleted = app
        .request(Method::DELETE, &format!("/deployments/{id}"))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{:?}", deleted.text().await);
    assert!(
        app.store.secrets_of(&id).await.unwrap().is_empty(),
        "erased with the deployment"
    );
}
db_test!(
    secrets_lifecycle,
    secrets_are_sealed_listed_without_values_and_revealed_once
);

async fn bad_secret_input_is_located_and_stores_nothing(db: Db) {
    let app = spawn_app(db).await;
    let missing = app
        .post("/deployments", &json!({"name": "s2", "template": template()}))
        .await;
    let problem = expect_problem(missing, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/secrets/api_token"]);
    let body = json!({"name": "s2", "template": template(), "secrets": {"api_token": SUPPLIED, "other": "x"}});
    let unknown = expect_problem(app.post("/deployments", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&unknown), ["/secrets/other"]);
    assert!(!unknown.to_string().contains(SUPPLIED));
    let mut undeclared = template();
    undeclared["secrets"] = json!({});
    let body = json!({"name": "s2", "template": undeclared});
    let problem = expect_problem(app.post("/deployments", &body).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        pointers(&problem),
        ["/template/services/db/secrets/0", "/template/services/db/secrets/1"]
    );
    let listed: Value = app.get("/deployments").await.json().await.unwrap();
    assert_eq!(listed["total"], 0, "nothing was stored");

    // Without a key, secrets cannot be sealed: refused, nothing stored.
    let keyless = spawn_app_customized(
        Db::Sqlite,
        |_| {},
        |state| {
            state.store = state.store.clone().with_secret_keys(None);
        },
    )
    .await;
    let body = json!({"name": "s3", "template": template(), "secrets": {"api_token": SUPPLIED}});
    let refused = keyless.post("/deployments", &body).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = refused.text().await.unwrap();
    assert!(text.contains("ORCH_SECRET_KEY") && !text.contains(SUPPLIED), "{text}");
    let listed: Value = keyless.get("/deployments").await.json().await.unwrap();
    assert_eq!(listed["total"], 0);
}
db_test!(bad_secrets, bad_secret_input_is_located_and_stores_nothing);

/// A key rotation: the new key current, the old one previous; every secret is sealed again
/// under the new key, after which the old key is no longer needed, and opens nothing alone.
async fn secrets_survive_a_key_rotation(db: Db) {
    let app = spawn_app(db).await;
    let body = json!({"name": "s4", "template": template(), "secrets": {"api_token": SUPPLIED}});
    let accepted = app.post("/deployments", &body).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let id = accepted.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.store.secret_values(&id).await.unwrap();

    let new_key = SecretKeys::random_hex();
    let rotating = app
        .store
        .clone()
        .with_secret_keys(Some(Arc::new(SecretKeys::parse(&new_key, &[SECRET_KEY]).unwrap())));
    assert_eq!(rotating.reseal_secrets().await.unwrap(), 2);
    assert_eq!(
        rotating.reseal_secrets().await.unwrap(),
        0,
        "nothing is left to seal again"
    );
    let rotated = app
        .store
        .clone()
        .with_secret_keys(Some(Arc::new(SecretKeys::parse(&new_key, &[]).unwrap())));
    let after = rotated.secret_values(&id).await.unwrap();
    for (name, value) in &before {
        assert_eq!(after[name].expose_secret(), value.expose_secret(), "{name}");
    }
    let error = app.store.secret_values(&id).await.unwrap_err();
    assert!(
        matches!(error, StoreError::Secret(_)),
        "the old key alone opens nothing: {error}"
    );
    assert!(!error.to_string().contains(SUPPLIED));
}
db_test!(key_rotation, secrets_survive_a_key_rotation);
