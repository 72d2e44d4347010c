//! `/templates`: create in JSON and YAML, read by id or name, list, replace, delete.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::db_test;
use crate::harness::{expect_problem, pointers, spawn_app, web_app_stack, Db};

async fn crud(db: Db) {
    let app = spawn_app(db).await;
    let created = app.create_seed_template().await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["version"], 1);
    assert_eq!(created["vm_config"], web_app_stack()["vm_config"]);
    assert_eq!(
        created["network_config"]["subnets"],
        web_app_stack()["network_config"]["subnets"]
    );

    // Names are unique.
    let duplicate = expect_problem(app.post("/templates", &web_app_stack()).await, StatusCode::CONFLICT).await;
    assert!(duplicate["detail"].as_str().unwrap().contains("web-app-stack"));

    // By id and by name.
    let by_id: Value = app.get(&format!("/templates/{id}")).await.json().await.unwrap();
    let by_name: Value = app.get("/templates/web-app-stack").await.json().await.unwrap();
    assert_eq!(by_id, by_name);
    expect_problem(app.get("/templates/nope").await, StatusCode::NOT_FOUND).await;

    // YAML in, same model out.
    let yaml = "name: small\nvm_config:\n  web: {flavor: m1.tiny, image: cirros, count: 1, min_count: 1}\nnetwork_config:\n  cidr: 10.9.0.0/16\n  subnets:\n    web: {cidr: 10.9.1.0/24, dns_nameservers: [1.1.1.1]}\nsecurity_groups:\n  web:\n    rules: [{protocol: tcp, port_range_min: 22, port_range_max: 22}]\n";
    let response = app
        .request(Method::POST, "/templates")
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(response.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/templates/"));
    let small: Value = response.json().await.unwrap();
    assert_eq!(small["vm_config"]["web"]["min_count"], 1);
    assert_eq!(small["security_groups"]["web"]["rules"][0]["port_range_max"], 22);

    // List, newest first, paginated.
    let page: Value = app.get("/templates?limit=1").await.json().await.unwrap();
    assert_eq!(page["total"], 2);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["name"], "small");
    let second: Value = app.get("/templates?limit=1&offset=1").await.json().await.unwrap();
    assert_eq!(second["items"][0]["name"], "web-app-stack");

    // Replace bumps the version; a rename onto another template's name conflicts.
    let mut changed = web_app_stack();
    changed["vm_config"]["web"]["count"] = json!(4);
    let replaced: Value = app
        .send_json(Method::PUT, "/templates/web-app-stack", &changed)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(replaced["version"], 2);
    assert_eq!(replaced["vm_config"]["web"]["count"], 4);
    assert_eq!(replaced["id"], json!(id));
    let mut rename = web_app_stack();
    rename["name"] = json!("small");
    expect_problem(
        app.send_json(Method::PUT, &format!("/templates/{id}"), &rename).await,
        StatusCode::CONFLICT,
    )
    .await;

    // Delete; the name is free again afterwards.
    let deleted = app.request(Method::DELETE, "/templates/small").send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    expect_problem(app.get("/templates/small").await, StatusCode::NOT_FOUND).await;
    expect_problem(
        app.request(Method::DELETE, "/templates/small").send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let response = app
        .request(Method::POST, "/templates")
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}
db_test!(templates_crud, crud);

async fn in_use(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let id = app.create_deployment("uses-template").await;
    let conflict = expect_problem(
        app.request(Method::DELETE, "/templates/web-app-stack")
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
    )
    .await;
    assert!(conflict["detail"].as_str().unwrap().contains("1 live deployment"));
    // Once the deployment is gone, the template can go.
    assert_eq!(
        app.request(Method::DELETE, &format!("/deployments/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.request(Method::DELETE, "/templates/web-app-stack")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
}
db_test!(template_in_use_cannot_be_deleted, in_use);

async fn invalid(db: Db) {
    let app = spawn_app(db).await;
    let mut template = web_app_stack();
    template["name"] = json!("no spaces allowed");
    template["vm_config"]["web"]["count"] = json!(-1);
    template["vm_config"]["app"]["subnet"] = json!("missing");
    template["network_config"]["subnets"]["db"] = json!("10.0.2.128/25");
    template["network_config"]["cidr"] = json!("10.0.0.0/33");
    template["colour"] = json!("blue");
    let problem = expect_problem(
        app.post("/templates", &template).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let found = pointers(&problem);
    for expected in ["/name", "/vm_config/web/count", "/network_config/cidr", "/colour"] {
        assert!(
            found.contains(&expected.to_owned()),
            "{expected} missing from {found:?}"
        );
    }
    // With a valid network the layout rules show up too.
    let mut overlapping = web_app_stack();
    overlapping["network_config"]["subnets"]["db"] = json!("10.0.2.128/25");
    overlapping["vm_config"]["app"]["subnet"] = json!("missing");
    let problem = expect_problem(
        app.post("/templates", &overlapping).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let found = pointers(&problem);
    assert!(found.contains(&"/network_config/subnets/db".to_owned()), "{found:?}");
    assert!(found.contains(&"/vm_config/app/subnet".to_owned()), "{found:?}");
    // Leading zeros (octal to other tools) and names shaped like ids are refused.
    let mut octal = web_app_stack();
    octal["network_config"]["cidr"] = json!("010.000.000.000/16");
    octal["network_config"]["subnets"] = json!({"web": "10.0.1.0/24", "app": "10.0.2.0/24", "db": "10.0.3.0/24"});
    let problem = expect_problem(app.post("/templates", &octal).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/network_config/cidr"], "{problem}");
    assert!(problem.to_string().contains("write 10.0.0.0/16"), "{problem}");
    let mut id_like = web_app_stack();
    id_like["name"] = json!("019ad6e2-7b9c-7f3e-8a1d-2c4b6e8f0a12");
    let problem = expect_problem(app.post("/templates", &id_like).await, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(pointers(&problem), ["/name"], "{problem}");
    // Thousands of mistakes: the first hundred are listed, with the count.
    let mut noisy = web_app_stack();
    for n in 0..5_000 {
        noisy[format!("field_{n}")] = json!(n);
    }
    let response = app.post("/templates", &noisy).await;
    let problem = expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 100);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("5000 invalid value(s); the first 100 are listed"),
        "{}",
        problem["detail"]
    );
    let templates: Value = app.get("/templates").await.json().await.unwrap();
    assert_eq!(templates["total"], 0, "nothing is written on a validation error");
    let response = app
        .request(Method::POST, "/templates")
        .header("content-type", "application/yaml")
        .body("name: [unclosed")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::BAD_REQUEST).await;
}
db_test!(invalid_templates_list_every_problem, invalid);
