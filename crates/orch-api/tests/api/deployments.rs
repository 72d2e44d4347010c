//! `/deployments`: create, read, list, update, delete, configure, scale, events, and the
//! operations outbox behind them.

use std::collections::HashSet;

use orch_core::DeploymentStatus;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::db_test;
use crate::harness::{expect_problem, pointers, spawn_app, spawn_app_customized, web_app_stack, Db, TestApp, READ_KEY};

async fn events_of(app: &TestApp, id: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!("/deployments/{id}/events?limit=100"))
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

async fn create_and_read(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let response = app
        .request(Method::POST, "/deployments")
        .header("X-Request-Id", "req-create-1")
        .json(&json!({"name": "my-app", "template": "web-app-stack", "cloud_region": "us-west-1", "parameters": {"web_count": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["x-request-id"], "req-create-1");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "PENDING");
    assert_eq!(accepted["name"], "my-app");
    let id = accepted["id"].as_str().unwrap();
    assert_eq!(location, format!("/deployments/{id}"));

    let deployment: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(deployment["status"], "PENDING");
    assert_eq!(deployment["cloud_region"], "us-west-1");
    assert_eq!(deployment["parameters"], json!({"web_count": 2}));
    assert_eq!(deployment["rollback"], true);
    assert_eq!(deployment["template"]["name"], "web-app-stack");
    assert_eq!(deployment["resources"]["vm_ids"], json!([]));
    assert_eq!(deployment["resources"]["network_id"], Value::Null);
    assert_eq!(deployment["operation"]["kind"], "create");
    assert_eq!(deployment["operation"]["state"], "PENDING");
    assert_eq!(deployment["operation"]["id"], accepted["operation_id"]);

    // The outbox row is there for the workflow layer.
    let operations = app.store.operations(id).await.unwrap();
    assert_eq!(operations.len(), 1);
    assert_eq!(operations[0].kind, orch_core::OperationKind::Create);
    assert_eq!(operations[0].request_id.as_deref(), Some("req-create-1"));

    // The event names the key (by id, never the key) and the request.
    let events = events_of(&app, id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["action"], "deployment.created");
    assert_eq!(events[0]["request_id"], "req-create-1");
    assert_eq!(events[0]["actor"].as_str().unwrap().len(), 12);
    assert!(!events[0].to_string().contains(crate::harness::WRITE_KEY));

    // Inline templates work and the region defaults.
    let mut inline = web_app_stack();
    inline.as_object_mut().unwrap().remove("name");
    let response = app
        .post(
            "/deployments",
            &json!({"name": "inline-1", "template": inline, "rollback": false}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deployment: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(deployment["template"]["name"], "inline-1");
    assert_eq!(deployment["template_id"], Value::Null);
    assert_eq!(deployment["cloud_region"], "RegionOne");
    assert_eq!(deployment["rollback"], false);

    // Resources recorded by the workflow layer appear in seed 001's shape.
    let attributes = json!({"group": "web", "name": "my-app-web-0", "ip": "10.0.1.10"});
    for (key, kind, cloud_id, attributes) in [
        ("network", "network", "net-123", json!({})),
        ("server/web/0", "server", "vm-456", attributes),
    ] {
        app.store
            .record_resource(&orch_store::resources::ResourceUpsert {
                deployment_id: &id,
                logical_key: key,
                kind,
                cloud_id: Some(cloud_id),
                status: "ACTIVE",
                attributes: &attributes,
            })
            .await
            .unwrap();
    }
    let deployment: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(deployment["resources"]["network_id"], "net-123");
    assert_eq!(deployment["resources"]["vm_ids"], json!(["vm-456"]));
    assert_eq!(
        deployment["resources"]["groups"]["web"]["servers"][0]["ip"],
        "10.0.1.10"
    );

    expect_problem(app.get("/deployments/does-not-exist").await, StatusCode::NOT_FOUND).await;
}
db_test!(create_and_read_a_deployment, create_and_read);

async fn validation(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let problem = expect_problem(
        app.post(
            "/deployments",
            &json!({"name": "bad name", "template": "web-app-stack", "parameters": {"web_count": -1}, "rollback": "no", "colour": 1}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/name", "/rollback", "/colour"]);
    let id_like = json!({"name": "019ad6e2-7b9c-7f3e-8a1d-2c4b6e8f0a12", "template": "web-app-stack"});
    let problem = expect_problem(
        app.post("/deployments", &id_like).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/name"], "a name may not shadow an id");

    // Parameters are checked against the template: unknown ones, wrong types, bounds.
    let problem = expect_problem(
        app.post(
            "/deployments",
            &json!({"name": "ok", "template": "web-app-stack", "parameters": {"web_count": "2", "cache_count": 1, "db_flavor": "", "app_count": 1001}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let mut found = pointers(&problem);
    found.sort();
    assert_eq!(
        found,
        [
            "/parameters/app_count",
            "/parameters/cache_count",
            "/parameters/db_flavor",
            "/parameters/web_count"
        ]
    );

    let problem = expect_problem(
        app.post("/deployments", &json!({"name": "ok", "template": "missing"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/template"]);

    let mut inline = web_app_stack();
    inline["network_config"]["subnets"]["web"] = json!("192.168.0.0/24");
    let problem = expect_problem(
        app.post("/deployments", &json!({"name": "ok", "template": inline}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/template/network_config/subnets/web"]);

    let listed: Value = app.get("/deployments").await.json().await.unwrap();
    assert_eq!(listed["total"], 0, "a refused request writes nothing");
}
db_test!(invalid_deployments_are_refused_with_pointers, validation);

async fn listing(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let mut ids = Vec::new();
    for index in 0..5 {
        ids.push(app.create_deployment(&format!("list-{index}")).await);
    }
    app.complete_pending_operation(&ids[1], DeploymentStatus::Completed)
        .await;
    app.complete_pending_operation(&ids[3], DeploymentStatus::Completed)
        .await;

    let page: Value = app.get("/deployments?limit=2").await.json().await.unwrap();
    assert_eq!(page["total"], 5);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 0);
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["list-4", "list-3"], "newest first");
    let page: Value = app.get("/deployments?limit=2&offset=4").await.json().await.unwrap();
    assert_eq!(page["items"][0]["name"], "list-0");

    let completed: Value = app.get("/deployments?status=COMPLETED").await.json().await.unwrap();
    assert_eq!(completed["total"], 2);
    let by_name: Value = app.get("/deployments?name=list-2").await.json().await.unwrap();
    assert_eq!(by_name["total"], 1);
    assert_eq!(by_name["items"][0]["id"], json!(ids[2]));
    let both: Value = app
        .get("/deployments?status=COMPLETED&name=list-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(both["total"], 1);
    let default: Value = app.get("/deployments").await.json().await.unwrap();
    assert_eq!(default["limit"], 20);

    let problem = expect_problem(
        app.get("/deployments?limit=101&offset=-1&status=RUNNING&sort=name")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let parameters: Vec<&str> = problem["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["parameter"].as_str().unwrap())
        .collect();
    assert_eq!(parameters, ["limit", "offset", "status", "sort"]);
}
db_test!(list_filters_and_paginates, listing);

async fn conflicts(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let id = app.create_deployment("conflicts").await;
    let scale = json!({"target_count": 3, "vm_type": "web"});
    let configure = json!({"playbook": "site.yml"});

    // Names are unique among live deployments.
    let duplicate = app
        .post(
            "/deployments",
            &json!({"name": "conflicts", "template": "web-app-stack"}),
        )
        .await;
    expect_problem(duplicate, StatusCode::CONFLICT).await;

    // PENDING: scale and configure need COMPLETED.
    let problem = expect_problem(
        app.post(&format!("/deployments/{id}/scale"), &scale).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        problem["detail"].as_str().unwrap().contains("operation 'create'"),
        "{problem}"
    );

    // Claimed by a workflow.
    let operation = app.store.operation_in_flight(&id).await.unwrap().unwrap();
    app.store.claim_operation(&operation.id).await.unwrap().unwrap();
    let deployment: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(deployment["status"], "IN_PROGRESS");
    app.store
        .finish_operation(&operation.id, true, DeploymentStatus::Completed, None)
        .await
        .unwrap();

    // COMPLETED: one operation at a time.
    let accepted = app.post(&format!("/deployments/{id}/scale"), &scale).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["status"], "SCALING");
    assert_eq!(accepted["deployment_id"], json!(id));
    for (path, body) in [("scale", &scale), ("configure", &configure)] {
        let problem = expect_problem(
            app.post(&format!("/deployments/{id}/{path}"), body).await,
            StatusCode::CONFLICT,
        )
        .await;
        assert!(problem["detail"].as_str().unwrap().contains("in flight"), "{problem}");
    }
    let patch = app
        .send_json(
            Method::PATCH,
            &format!("/deployments/{id}"),
            &json!({"parameters": {"web_count": 1}}),
        )
        .await;
    expect_problem(patch, StatusCode::CONFLICT).await;
    app.complete_pending_operation(&id, DeploymentStatus::Completed).await;

    let configured = app.post(&format!("/deployments/{id}/configure"), &json!({"playbook": "configure-web.yml", "inventory": {"web_servers": ["10.0.1.10"]}, "extra_vars": {"app_port": 8080, "db_password": "hunter2-secret"}})).await;
    assert_eq!(configured.status(), StatusCode::ACCEPTED);
    assert_eq!(configured.json::<Value>().await.unwrap()["status"], "CONFIGURING");
    let operations = app.store.operations(&id).await.unwrap();
    let configure = operations.last().unwrap();
    assert_eq!(configure.payload["extra_vars"]["app_port"], 8080);
    let events = serde_json::to_string(&events_of(&app, &id).await).unwrap();
    assert!(
        !events.contains("hunter2-secret") && events.contains("db_password"),
        "extra_vars show in events by name only: {events}"
    );

    // The run and its output are readable through the API.
    let run = app
        .store
        .start_configuration_run(&id, &configure.id, "configure-web.yml")
        .await
        .unwrap();
    app.store
        .finish_configuration_run(
            &run,
            false,
            Some("install nginx"),
            "TASK [install nginx]\nfatal: [h]: FAILED!",
        )
        .await
        .unwrap();
    let runs: Value = app
        .get(&format!("/deployments/{id}/configurations"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(runs["items"][0]["status"], "FAILED");
    let shown: Value = app
        .get(&format!("/deployments/{id}/configurations/{run}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["failed_task"], "install nginx");
    assert!(shown["output"].as_str().unwrap().contains("fatal"));
    expect_problem(
        app.get(&format!("/deployments/{id}/configurations/nope")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
db_test!(one_operation_at_a_time, conflicts);

/// SSH host keys recorded by configure runs: listed, and forgotten by a write key (an event
/// says who); a read key may only look.
async fn host_keys_are_listed_and_forgotten(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let id = app.create_deployment("keyed").await;
    let key = orch_store::host_keys::HostKey {
        host: "10.0.1.4".into(),
        server_id: Some("server-1".into()),
        known_hosts: "10.0.1.4 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITest\n".into(),
        first_seen_at: String::new(),
    };
    app.store.record_host_keys(&id, &[key]).await.unwrap();
    let listed: Value = app
        .get(&format!("/deployments/{id}/host-keys"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["host"], "10.0.1.4");
    assert_eq!(listed["items"][0]["server_id"], "server-1");
    assert!(listed["items"][0]["known_hosts"]
        .as_str()
        .unwrap()
        .contains("ssh-ed25519"));
    let path = format!("/deployments/{id}/host-keys/10.0.1.4");
    let as_reader = app
        .client
        .delete(app.url(&path))
        .header("X-API-Key", READ_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(as_reader.status(), StatusCode::FORBIDDEN);
    let forgotten = app.request(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(forgotten.status(), StatusCode::NO_CONTENT);
    assert!(app.store.host_keys(&id).await.unwrap().is_empty());
    let events = events_of(&app, &id).await;
    assert!(
        events
            .iter()
            .any(|event| event["action"] == "host-key.forgotten" && event["actor"].is_string()),
        "{events:?}"
    );
    expect_problem(
        app.request(Method::DELETE, &path).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_problem(app.get("/deployments/nope/host-keys").await, StatusCode::NOT_FOUND).await;
}
db_test!(host_keys, host_keys_are_listed_and_forgotten);

async fn operation_validation(db: Db) {
    let app = spawn_app(db).await;
    let mut template = web_app_stack();
    template["vm_config"]["web"]["min_count"] = json!(2);
    template["vm_config"]["web"]["max_count"] = json!(10);
    assert_eq!(app.post("/templates", &template).await.status(), StatusCode::CREATED);
    let id = app.create_deployment("bounded").await;
    app.complete_pending_operation(&id, DeploymentStatus::Completed).await;
    let events_before = events_of(&app, &id).await.len();

    for (body, pointer) in [
        (json!({"target_count": 1, "vm_type": "web"}), "/target_count"),
        (json!({"target_count": 11, "vm_type": "web"}), "/target_count"),
        (json!({"target_count": 2, "vm_type": "cache"}), "/vm_type"),
        (json!({"target_count": "2", "vm_type": "web"}), "/target_count"),
    ] {
        let problem = expect_problem(
            app.post(&format!("/deployments/{id}/scale"), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(pointers(&problem), [pointer], "{body}");
    }
    for (body, pointer) in [
        (json!({"playbook": "../../etc/shadow.yml"}), "/playbook"),
        (json!({"playbook": "/etc/site.yml"}), "/playbook"),
        (json!({"playbook": "site.yml", "extra_vars": [1]}), "/extra_vars"),
        (
            json!({"playbook": "site.yml", "timeout_seconds": 0}),
            "/timeout_seconds",
        ),
        // Nothing that would run code on the worker or reach another host.
        (
            json!({"playbook": "site.yml", "extra_vars": {"ansible_connection": "local"}}),
            "/extra_vars/ansible_connection",
        ),
        (
            json!({"playbook": "site.yml", "extra_vars": {"Ansible_SSH_Common_Args": "-o ProxyCommand=x"}}),
            "/extra_vars/Ansible_SSH_Common_Args",
        ),
        (
            json!({"playbook": "site.yml", "extra_vars": {"hostvars": {}}}),
            "/extra_vars/hostvars",
        ),
        (
            json!({"playbook": "site.yml", "extra_vars": {"not a name": 1}}),
            "/extra_vars/not a name",
        ),
        (
            json!({"playbook": "site.yml", "inventory": {"web": ["-oProxyCommand"]}}),
            "/inventory/web/0",
        ),
        (
            json!({"playbook": "site.yml", "inventory": {"web": ["10.0.1.7", "192.168.99.1"]}}),
            "/inventory/web/1",
        ),
        (
            json!({"playbook": "site.yml", "inventory": {"web": ["evil.example.com"]}}),
            "/inventory/web/0",
        ),
    ] {
        let problem = expect_problem(
            app.post(&format!("/deployments/{id}/configure"), &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(pointers(&problem), [pointer], "{body}");
    }
    let problem = expect_problem(
        app.send_json(
            Method::PATCH,
            &format!("/deployments/{id}"),
            &json!({"parameters": {"web_count": 1}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/parameters/web_count"]);

    let deployment: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(deployment["status"], "COMPLETED", "refused requests change nothing");
    assert_eq!(events_of(&app, &id).await.len(), events_before);
    expect_problem(
        app.post(
            "/deployments/missing/scale",
            &json!({"target_count": 2, "vm_type": "web"}),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
db_test!(scale_and_configure_are_validated, operation_validation);

async fn update(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let id = app.create_deployment("updatable").await;
    app.complete_pending_operation(&id, DeploymentStatus::Completed).await;
    for (key, flavor) in [
        ("server:web:0", "m1.small"),
        ("server:web:1", "m1.small"),
        ("server:db:0", "m1.large"),
    ] {
        app.store
            .record_resource(&orch_store::resources::ResourceUpsert {
                deployment_id: &id,
                logical_key: key,
                kind: "server",
                cloud_id: Some(key),
                status: "ACTIVE",
                attributes: &json!({"flavor": flavor}),
            })
            .await
            .unwrap();
    }
    let mut bigger = web_app_stack();
    bigger["vm_config"]["cache"] = json!({"flavor": "m1.small", "image": "cirros", "count": 1, "subnet": "app"});
    // A dry run shows the plan and changes nothing.
    let planned = app
        .send_json(
            Method::PATCH,
            &format!("/deployments/{id}"),
            &json!({"template": bigger, "parameters": {"web_count": 1, "db_flavor": "m1.xlarge"}, "dry_run": true}),
        )
        .await;
    assert_eq!(planned.status(), StatusCode::OK);
    let plan: Value = planned.json().await.unwrap();
    assert_eq!(plan["plan"]["servers"]["delete"], json!(["server:web:1"]));
    assert_eq!(plan["plan"]["servers"]["resize"], json!([["server:db:0", "m1.xlarge"]]));
    assert!(plan["plan"]["servers"]["create"]
        .as_array()
        .unwrap()
        .contains(&json!("server:cache:0")));
    let steps: Vec<&str> = plan["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|planned| {
            assert_eq!(planned["on"], "cloud");
            let step = &planned["step"];
            step.as_object()
                .map_or_else(|| step.as_str().unwrap(), |s| s.keys().next().unwrap())
        })
        .collect();
    assert_eq!(
        steps,
        ["Prepare", "Create", "Wait", "Attach", "Resize", "Delete"],
        "the steps the update's workflow would run"
    );
    assert!(
        app.store.operation_in_flight(&id).await.unwrap().is_none(),
        "a dry run records nothing"
    );
    let reason_of = |plan: &Value, action: &str, key: &str| {
        let changes = plan["plan"]["changes"].as_array().unwrap();
        let found = changes
            .iter()
            .find(|change| change["action"] == action && change["key"] == key);
        found.map(|change| change["reason"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        reason_of(&plan, "delete", "server:web:1").as_deref(),
        Some("beyond the 1 server group 'web' asks for")
    );
    assert_eq!(
        reason_of(&plan, "resize", "server:db:0").as_deref(),
        Some("flavor m1.large -> m1.xlarge")
    );
    // The deployment's own spec against its record: the app servers were never recorded.
    let own: Value = app.get(&format!("/deployments/{id}/plan")).await.json().await.unwrap();
    assert_eq!(
        reason_of(&own, "create", "server:app:0").as_deref(),
        Some("group 'app' asks for 3 servers; 0 exist"),
        "{own}"
    );
    assert_eq!(reason_of(&own, "delete", "server:web:1"), None, "{own}");
    expect_problem(app.get("/deployments/nope/plan").await, StatusCode::NOT_FOUND).await;
    let response = app
        .send_json(
            Method::PATCH,
            &format!("/deployments/{id}"),
            &json!({"template": bigger, "parameters": {"cache_count": 2}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "UPDATING");
    let operation = app.store.operation_in_flight(&id).await.unwrap().unwrap();
    assert_eq!(operation.kind, orch_core::OperationKind::Update);
    assert_eq!(operation.payload["parameters"], json!({"cache_count": 2}));
    assert_eq!(operation.payload["template"]["vm_config"]["cache"]["count"], 1);
    let problem = expect_problem(
        app.send_json(Method::PATCH, &format!("/deployments/{id}"), &json!({}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), [""]);
}
db_test!(update_records_the_new_desired_state, update);

async fn soft_delete(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;

    // PENDING and never picked up: deleted at once, history kept.
    let id = app.create_deployment("short-lived").await;
    let body = delete_of(&app, &id).await;
    assert_eq!(body["status"], "DELETED");
    let deployment: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(deployment["status"], "DELETED");
    assert!(deployment["deleted_at"].is_string());
    let operations = app.store.operations(&id).await.unwrap();
    assert_eq!(operations[0].state, "CANCELLED", "the relay will not start it");
    let actions: Vec<String> = events_of(&app, &id)
        .await
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["deployment.created", "deployment.deleted"]);
    let live: Value = app.get("/deployments").await.json().await.unwrap();
    assert_eq!(live["total"], 0);
    let deleted: Value = app.get("/deployments?status=DELETED").await.json().await.unwrap();
    assert_eq!(deleted["total"], 1);
    expect_problem(
        app.request(Method::DELETE, &format!("/deployments/{id}"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    // The name is free again.
    app.create_deployment("short-lived").await;

    // COMPLETED: a delete operation for the workflow layer.
    let id = app.create_deployment("long-lived").await;
    app.complete_pending_operation(&id, DeploymentStatus::Completed).await;
    let body = delete_of(&app, &id).await;
    assert_eq!(body["status"], "DELETING");
    assert!(body["operation_id"].is_string());
    app.complete_pending_operation(&id, DeploymentStatus::Deleted).await;
    let deployment: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(deployment["status"], "DELETED");
    assert!(deployment["deleted_at"].is_string());

    // A read key can read the history of a deleted deployment.
    let events = app
        .client
        .get(app.url(&format!("/deployments/{id}/events")))
        .header("X-API-Key", READ_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let events: Value = events.json().await.unwrap();
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "deployment.created",
            "operation.started",
            "operation.succeeded",
            "operation.requested",
            "operation.started",
            "operation.succeeded"
        ]
    );
    let paged: Value = app
        .get(&format!("/deployments/{id}/events?limit=2&offset=2"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paged["total"], 6);
    assert_eq!(paged["items"][0]["action"], "operation.succeeded");
    assert_eq!(paged["items"][1]["action"], "operation.requested");
}
db_test!(delete_is_soft_and_keeps_history, soft_delete);

async fn concurrent_creates(db: Db) {
    let app = std::sync::Arc::new(spawn_app(db).await);
    app.create_seed_template().await;
    let mut tasks = Vec::new();
    for index in 0..200 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let response = app
                .post(
                    "/deployments",
                    &json!({"name": format!("burst-{index}"), "template": "web-app-stack"}),
                )
                .await;
            (response.status(), response.json::<Value>().await.unwrap())
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert!(ids.insert(body["id"].as_str().unwrap().to_owned()));
    }
    let listed: Value = app.get("/deployments?limit=1").await.json().await.unwrap();
    assert_eq!(listed["total"], 200);
    let pending = app.store.pending_operations(1000).await.unwrap();
    assert_eq!(pending.len(), 200, "every accepted request has its operation");
    let deployments: HashSet<String> = pending
        .iter()
        .map(|operation| operation.deployment_id.clone())
        .collect();
    assert_eq!(deployments, ids);

    // The same name sent 20 times at once is created once.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            app.post(
                "/deployments",
                &json!({"name": "same-name", "template": "web-app-stack"}),
            )
            .await
            .status()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|status| **status == StatusCode::ACCEPTED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|status| **status == StatusCode::CONFLICT)
            .count(),
        19,
        "{statuses:?}"
    );
    let same: Value = app.get("/deployments?name=same-name").await.json().await.unwrap();
    assert_eq!(same["total"], 1);
}
db_test!(concurrent_creates_are_neither_lost_nor_duplicated, concurrent_creates);

async fn regions(db: Db) {
    let check: orch_api::RegionCheck = std::sync::Arc::new(|region: String| {
        Box::pin(async move {
            match region.as_str() {
                "RegionOne" => orch_api::Region::Known,
                "down" => orch_api::Region::Unreachable {
                    why: "identity unreachable".to_owned(),
                },
                _ => orch_api::Region::Unknown {
                    why: format!("region '{region}' is not in the service catalog; known regions: RegionOne"),
                },
            }
        })
    });
    let app = spawn_app_customized(db, |_| {}, |state| state.region_check = Some(check)).await;
    app.create_seed_template().await;
    let problem = expect_problem(
        app.post(
            "/deployments",
            &json!({"name": "far", "template": "web-app-stack", "cloud_region": "us-west-1"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pointers(&problem), ["/cloud_region"]);
    assert!(problem["errors"][0]["detail"].as_str().unwrap().contains("RegionOne"));
    let problem = expect_problem(
        app.post(
            "/deployments",
            &json!({"name": "far", "template": "web-app-stack", "cloud_region": "down"}),
        )
        .await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(
        !problem["detail"].as_str().unwrap().contains("identity unreachable"),
        "internals stay in the log"
    );
    let listed: Value = app.get("/deployments").await.json().await.unwrap();
    assert_eq!(listed["total"], 0);
    assert_eq!(
        app.post("/deployments", &json!({"name": "near", "template": "web-app-stack"}))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
}
db_test!(unknown_regions_are_refused_at_request_time, regions);

async fn retry(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let id = app.create_deployment("flaky").await;
    expect_problem(
        app.post(&format!("/deployments/{id}/retry"), &json!({})).await,
        StatusCode::CONFLICT,
    )
    .await;
    let operation = app.store.operation_in_flight(&id).await.unwrap().unwrap();
    app.store.claim_operation(&operation.id).await.unwrap().unwrap();
    app.store
        .finish_operation(&operation.id, false, DeploymentStatus::Failed, Some("quota exceeded"))
        .await
        .unwrap();
    let failed: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["status_reason"], "quota exceeded");
    let response = app.post(&format!("/deployments/{id}/retry"), &json!({})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "PENDING");
    let retried = app.store.operation_in_flight(&id).await.unwrap().unwrap();
    assert_eq!(retried.kind, orch_core::OperationKind::Create);
    assert_ne!(retried.id, operation.id);
    expect_problem(
        app.post(&format!("/deployments/{id}/retry"), &json!({})).await,
        StatusCode::CONFLICT,
    )
    .await;
}
db_test!(a_failed_deployment_can_be_retried, retry);

async fn delete_of(app: &TestApp, id: &str) -> Value {
    let response = app
        .request(Method::DELETE, &format!("/deployments/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.json().await.unwrap()
}

async fn cancel(db: Db) {
    let app = spawn_app(db).await;
    app.create_seed_template().await;
    let id = app.create_deployment("cancel").await;
    let cancel = format!("/deployments/{id}/cancel");
    expect_problem(
        app.post("/deployments/nope/cancel", &json!({})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let operation = app.store.operation_in_flight(&id).await.unwrap().unwrap();
    app.store.claim_operation(&operation.id).await.unwrap().unwrap();
    let accepted = app.post(&cancel, &json!({})).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(
        (accepted["operation_id"].as_str(), accepted["status"].as_str()),
        (Some(operation.id.as_str()), Some("IN_PROGRESS"))
    );
    let shown: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert!(shown["operation"]["cancel_requested_at"].is_string(), "{shown}");
    let actions: Vec<Value> = events_of(&app, &id)
        .await
        .into_iter()
        .map(|event| event["action"].clone())
        .collect();
    assert!(actions.contains(&json!("operation.cancel_requested")), "{actions:?}");

    // The workflow stops short and says so: the operation was cancelled, not failed.
    app.store
        .finish_operation(&operation.id, false, DeploymentStatus::Failed, Some("cancelled"))
        .await
        .unwrap();
    assert_eq!(app.store.operation(&operation.id).await.unwrap().state, "CANCELLED");
    let problem = expect_problem(app.post(&cancel, &json!({})).await, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no operation is in flight"),
        "{problem}"
    );

    // A DELETE that finds an operation running cancels it first; the delete follows it.
    assert_eq!(
        app.post(&format!("/deployments/{id}/retry"), &json!({})).await.status(),
        StatusCode::ACCEPTED
    );
    let retried = app.store.operation_in_flight(&id).await.unwrap().unwrap();
    app.store.claim_operation(&retried.id).await.unwrap().unwrap();
    let deleting = delete_of(&app, &id).await;
    assert_eq!(deleting["cancelling"], json!(retried.id));
    assert!(deleting.get("operation_id").is_none(), "{deleting}");
    app.store
        .finish_operation(&retried.id, false, DeploymentStatus::Failed, Some("cancelled"))
        .await
        .unwrap();
    let shown: Value = app.get(&format!("/deployments/{id}")).await.json().await.unwrap();
    assert_eq!(shown["status"], "DELETING");
    let delete = app.store.operation_in_flight(&id).await.unwrap().unwrap();
    assert_eq!(delete.kind, orch_core::OperationKind::Delete);
    // A second DELETE answers with that delete; a delete cannot be cancelled.
    assert_eq!(delete_of(&app, &id).await["operation_id"], json!(delete.id));
    let problem = expect_problem(app.post(&cancel, &json!({})).await, StatusCode::CONFLICT).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("a delete cannot be cancelled"),
        "{problem}"
    );
}
db_test!(a_running_operation_is_cancelled_and_a_delete_waits_for_it, cancel);
