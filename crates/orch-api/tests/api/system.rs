//! Health, readiness, metrics, the OpenAPI document, request ids, fallbacks, shutdown.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::db_test;
use crate::harness::{expect_problem, spawn_app, Db};

async fn health(db: Db) {
    let app = spawn_app(db).await;
    let live: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live, json!({"status": "ok"}));
    let ready = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        ready,
        json!({"status": "ready", "checks": {"database": {"status": "ok"}}})
    );

    // With the database gone, readiness says so (503) and liveness stays up.
    app.store.close().await;
    let ready = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "unavailable");
    assert_eq!(ready["checks"]["database"]["status"], "failing");
    assert_eq!(
        app.client.get(app.url("/health")).send().await.unwrap().status(),
        StatusCode::OK
    );
    // A failing database is a 500 that says nothing about the database.
    let problem = expect_problem(app.get("/deployments").await, StatusCode::INTERNAL_SERVER_ERROR).await;
    let text = problem.to_string().to_lowercase();
    for leak in ["sql", "pool", "sqlite", "postgres", "/tmp"] {
        assert!(!text.contains(leak), "{text}");
    }
}
db_test!(health_and_readiness, health);

async fn metrics(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let id = app.create_deployment("metered").await;
    assert_eq!(app.get(&format!("/deployments/{id}")).await.status(), StatusCode::OK);
    let text = app.metrics_text().await;
    assert!(
        text.contains(r#"api_request_duration_seconds_bucket{endpoint="/deployments/{id}",method="GET",status="200""#),
        "route templates label the endpoint:\n{text}"
    );
    assert!(
        text.contains(r#"api_request_duration_seconds_count{endpoint="/deployments",method="POST",status="202"}"#),
        "{text}"
    );
    assert!(!text.contains(&id), "raw ids never become labels");
    assert!(
        text.contains(r#"database_query_duration_seconds_bucket{operation="deployments.insert""#),
        "{text}"
    );
    assert!(text.contains(r#"orch_deployments{status="PENDING"} 1"#), "{text}");
    assert!(text.contains(r#"orch_deployments{status="COMPLETED"} 0"#), "{text}");
    // No workflow has claimed the create: it shows as the relay's lag, and nothing runs.
    let gauge = |name: &str| -> f64 {
        let line = text.lines().find_map(|line| line.strip_prefix(&format!("{name} ")));
        line.unwrap_or_else(|| panic!("no {name}:\n{text}")).parse().unwrap()
    };
    assert!(gauge("orch_oldest_pending_operation_seconds") > 0.0, "{text}");
    assert_eq!(gauge("orch_oldest_running_operation_seconds"), 0.0, "{text}");
}
db_test!(metrics_use_the_seed_names, metrics);

/// Fills `{param}` segments with a placeholder value.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "placeholder"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn openapi(db: Db) {
    let app = spawn_app(db).await;
    let document: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), path.clone()));
        }
    }
    operations.sort();
    let expected = [
        ("DELETE", "/deployments/{id}"),
        ("DELETE", "/deployments/{id}/host-keys/{host}"),
        ("DELETE", "/templates/{id_or_name}"),
        ("GET", "/catalog"),
        ("GET", "/catalog/{name}"),
        ("GET", "/deployments"),
        ("GET", "/deployments/{id}"),
        ("GET", "/deployments/{id}/configurations"),
        ("GET", "/deployments/{id}/configurations/{run}"),
        ("GET", "/deployments/{id}/drift"),
        ("GET", "/deployments/{id}/events"),
        ("GET", "/deployments/{id}/host-keys"),
        ("GET", "/deployments/{id}/plan"),
        ("GET", "/health"),
        ("GET", "/health/ready"),
        ("GET", "/metrics"),
        ("GET", "/orphans"),
        ("GET", "/reconcile/{id}"),
        ("GET", "/templates"),
        ("GET", "/templates/{id_or_name}"),
        ("PATCH", "/deployments/{id}"),
        ("POST", "/deployments"),
        ("POST", "/deployments/{id}/cancel"),
        ("POST", "/deployments/{id}/configure"),
        ("POST", "/deployments/{id}/reconcile"),
        ("POST", "/deployments/{id}/retry"),
        ("POST", "/deployments/{id}/scale"),
        ("POST", "/deployments/{id}/secrets/{name}/reveal"),
        ("POST", "/orphans/cleanup"),
        ("POST", "/reconcile"),
        ("POST", "/templates"),
        ("PUT", "/templates/{id_or_name}"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(operations, expected);
    assert_errors_documented(&document);
    // Every documented operation is served: the answer may be 4xx, but never "no such route".
    for (method, path) in &operations {
        let response = app
            .request(Method::from_bytes(method.as_bytes()).unwrap(), &concrete(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_ne!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let body = response.text().await.unwrap();
        assert!(!body.contains("route not found"), "{method} {path}: {body}");
    }
    assert!(document["components"]["securitySchemes"]["api_key"].is_object());
    assert!(document["components"]["schemas"]["ProblemDocument"].is_object());
}
db_test!(openapi_document_matches_the_routes, openapi);

async fn fallbacks(db: Db) {
    let app = spawn_app(db).await;
    let problem = expect_problem(app.get("/nowhere").await, StatusCode::NOT_FOUND).await;
    assert_eq!(problem["detail"], "route not found");
    expect_problem(
        app.request(Method::PUT, "/deployments").send().await.unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    // A path that cannot be decoded is a problem too, not plain text.
    for path in ["/deployments/%FF", "/templates/%C3%28", "/catalog/%FF"] {
        let problem = expect_problem(app.get(path).await, StatusCode::BAD_REQUEST).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .starts_with("the path cannot be read"),
            "{path}: {problem}"
        );
    }
    // Request ids: kept when plain, replaced when not, always echoed.
    let kept = app
        .request(Method::GET, "/deployments")
        .header("X-Request-Id", "abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["x-request-id"], "abc.123");
    let replaced = app
        .request(Method::GET, "/deployments")
        .header("X-Request-Id", "<script>")
        .send()
        .await
        .unwrap();
    assert_ne!(replaced.headers()["x-request-id"], "<script>");
    let generated = app.get("/nowhere").await;
    assert!(uuid::Uuid::parse_str(generated.headers()["x-request-id"].to_str().unwrap()).is_ok());
}
db_test!(unknown_routes_and_request_ids, fallbacks);

async fn shutdown(db: Db) {
    let app = spawn_app(db).await;
    let address = app.address;
    let store = app.store.clone();
    app.stop().await;
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "no longer accepting"
    );
    assert!(store.ping().await.is_err(), "the pool is closed");
}
db_test!(graceful_shutdown_closes_listener_and_pool, shutdown);

/// Every operation documents the errors it can answer, each as problem+json: 400 always;
/// 401, 403 and 429 behind the key check; 404 on a record's path; 413, 415 and 422 with a
/// body; and the list bounds are in the document.
fn assert_errors_documented(document: &Value) {
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            let mut expected = vec!["400"];
            if operation["security"]
                .as_array()
                .is_some_and(|security| !security.is_empty())
            {
                expected.extend(["401", "403", "429"]);
            }
            if path.contains('{') {
                expected.push("404");
            }
            if operation.get("requestBody").is_some() {
                expected.extend(["413", "415", "422"]);
            }
            for status in expected {
                let content = &responses[status]["content"]["application/problem+json"];
                assert!(
                    content.is_object(),
                    "{method} {path} does not document {status}: {responses}"
                );
            }
        }
    }
    let limit = document["paths"]["/deployments"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == "limit")
        .unwrap();
    assert_eq!(
        (limit["schema"]["minimum"].as_i64(), limit["schema"]["maximum"].as_i64()),
        (Some(1), Some(100))
    );
}
