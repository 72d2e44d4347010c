//! Real services from Debian's packages (`scripts/test.sh` builds `local/prometheus:debian`,
//! `local/alertmanager:debian` and `local/redis:debian`; no registry is reachable), deployed
//! from the catalog and the example stacks with only their images overridden: Prometheus
//! wired to Alertmanager by DNS name and reporting it up, Redis behind a generated password
//! that never leaves its secret file.

use std::process::Command;
use std::time::{Duration, Instant};

use orch_core::{DeploymentStatus, OperationKind, Template};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::containers::EngineGuard;
use super::harness;

const OBSERVABILITY: &str = include_str!("../../../../examples/observability-stack.yaml");

fn image_present(image: &str) {
    let found = Command::new("docker").args(["image", "inspect", image]).output();
    assert!(
        found.is_ok_and(|output| output.status.success()),
        "{image} is missing: scripts/test.sh builds it (ensure_service_images)"
    );
}

fn docker_output(args: &[&str]) -> (bool, String) {
    let output = Command::new("docker").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text.trim().to_owned())
}

/// The observability example with the services this machine can run, on local images.
fn observability_template(keep: &[(&str, &str)]) -> Template {
    let mut document = Template::parse_text(OBSERVABILITY).unwrap().to_value();
    document["name"] = Value::from("observability-here");
    let services = document["services"].as_object_mut().unwrap();
    services.retain(|name, _| keep.iter().any(|(kept, _)| kept == name));
    for (name, image) in keep {
        services[*name]["image"] = Value::from(*image);
    }
    // The example scrapes Loki and Tempo too; without them, only what runs here.
    let config = services["prometheus"]["files"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let kept: Vec<&str> = config
        .split("- job_name: ")
        .filter(|part| !part.starts_with("loki") && !part.starts_with("tempo"))
        .collect();
    services["prometheus"]["files"][0]["content"] = Value::from(kept.join("- job_name: "));
    Template::parse(&document, "", None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_alertmanager_by_name_and_reports_it_up() {
    image_present("local/prometheus:debian");
    image_present("local/alertmanager:debian");
    let orch = harness(|_| {}).await;
    let template = observability_template(&[
        ("prometheus", "local/prometheus:debian"),
        ("alertmanager", "local/alertmanager:debian"),
    ]);
    // Two of the same stack side by side: their own networks and host ports.
    let id = orch
        .create(&format!("obs-{}", super::common::unique()), template.clone(), true)
        .await;
    let twin = orch
        .create(&format!("obs-{}", super::common::unique()), template, true)
        .await;
    let _guard = EngineGuard(vec![id.clone(), twin.clone()]);
    for deployment in [&id, &twin] {
        let done = orch.settle(deployment).await;
        assert_eq!(done.status, DeploymentStatus::Completed, "{:?}", done.status_reason);
    }
    let port_of = |resources: &[orch_store::ResourceRecord]| {
        resources
            .iter()
            .find(|resource| resource.kind == "container" && resource.attributes["service"] == "prometheus")
            .unwrap()
            .attributes["host_ports"]["http"]
            .as_u64()
            .unwrap()
    };
    let port = port_of(&orch.store.resources(&id).await.unwrap());
    assert_ne!(port, port_of(&orch.store.resources(&twin).await.unwrap()));
    let (_, networks) = docker_output(&["network", "ls", "--format", "{{.Name}}"]);
    for deployment in [&id, &twin] {
        assert!(networks.contains(&format!("{deployment}-observability")), "{networks}");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let targets = loop {
        let body: Value = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/targets"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let active = body["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
        let up = |job: &str| {
            active
                .iter()
                .any(|target| target["labels"]["job"] == job && target["health"] == "up")
        };
        if up("alertmanager") && up("prometheus") {
            break active;
        }
        assert!(Instant::now() < deadline, "targets never came up: {active:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let alertmanager = targets
        .iter()
        .find(|target| target["labels"]["job"] == "alertmanager")
        .unwrap();
    assert_eq!(
        alertmanager["scrapeUrl"], "http://alertmanager-0:9093/metrics",
        "scraped by its DNS name: {alertmanager}"
    );
    // The configuration file is mounted read-only where the image reads it.
    let (written, _) = docker_output(&[
        "exec",
        &format!("{id}-prometheus-0"),
        "sh",
        "-c",
        "echo x > /etc/prometheus/prometheus.yml",
    ]);
    assert!(!written, "the rendered file is read-only");

    for deployment in [&id, &twin] {
        let deleted = orch.operate(deployment, OperationKind::Delete, &Value::Null).await;
        assert_eq!(deleted.status, DeploymentStatus::Deleted, "{:?}", deleted.status_reason);
        let files = format!("/run/orch/payload/{deployment}");
        assert!(!std::path::Path::new(&files).exists(), "the files are removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_takes_commands_only_with_its_generated_password_which_is_never_shown() {
    image_present("local/redis:debian");
    let orch = harness(|_| {}).await;
    let template =
        Template::parse_text("name: cache\nservices:\n  cache: {catalog: redis, image: \"local/redis:debian\"}\n")
            .unwrap();
    assert!(
        template.secrets.contains_key("redis_password"),
        "the catalog entry's secret is declared"
    );
    let id = orch
        .create_with_secrets(&format!("cache-{}", super::common::unique()), template)
        .await;
    let _guard = EngineGuard(vec![id.clone()]);
    // Health-gated: the probe itself authenticates with the secret file.
    let done = orch.settle(&id).await;
    assert_eq!(done.status, DeploymentStatus::Completed, "{:?}", done.status_reason);

    let secrets = orch.store.secret_values(&id).await.unwrap();
    let password = secrets["redis_password"].expose_secret().to_owned();
    assert_eq!(password.len(), 32);
    let container = format!("{id}-cache-0");
    let (_, refused) = docker_output(&["exec", &container, "redis-cli", "ping"]);
    assert!(refused.contains("NOAUTH"), "without the password: {refused}");
    let (_, wrong) = docker_output(&[
        "exec",
        &container,
        "redis-cli",
        "--no-auth-warning",
        "-a",
        "not-it",
        "ping",
    ]);
    assert!(!wrong.contains("PONG"), "with a wrong password: {wrong}");
    let (_, accepted) = docker_output(&[
        "exec",
        &container,
        "redis-cli",
        "--no-auth-warning",
        "-a",
        &password,
        "ping",
    ]);
    assert_eq!(accepted, "PONG");

    // Mounted as a 0400 file on tmpfs; nowhere in the container's configuration, the
    // deployment's events or its resources.
    let (_, mode) = docker_output(&["exec", &container, "stat", "-c", "%a %U", "/run/secrets/redis_password"]);
    assert_eq!(mode, "400 root");
    let (_, inspect) = docker_output(&["inspect", &container]);
    assert!(!inspect.contains(&password), "docker inspect shows the password");
    let events = orch.store.events(&id, 1000, 0).await.unwrap().items;
    let resources = orch.store.resources(&id).await.unwrap();
    let recorded = format!("{events:?} {resources:?}");
    assert!(!recorded.contains(&password), "the store's records show the password");

    let deleted = orch.operate(&id, OperationKind::Delete, &Value::Null).await;
    assert_eq!(deleted.status, DeploymentStatus::Deleted, "{:?}", deleted.status_reason);
    assert!(
        !std::path::Path::new(&format!("/run/orch/payload/{id}")).exists(),
        "the secret file is removed"
    );
    assert!(
        orch.store.secrets_of(&id).await.unwrap().is_empty(),
        "a deleted deployment's secrets are erased"
    );
}
