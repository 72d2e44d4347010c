//! The Kubernetes manifests (`deploy/k8s/`): each overlay renders with `kubectl kustomize`
//! and every object validates strictly against Kubernetes 1.37's schemas
//! (`kubernetes-validate`; both pinned in `.venv/k8s` by scripts/test.sh). Beyond the
//! schemas, the policy docs/deploy.md promises holds: probes, resources, non-root on a
//! read-only root, and a ServiceMonitor whose ports exist. No cluster is started.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).to_path_buf()
}

fn tool(name: &str) -> PathBuf {
    let path = root().join(".venv/k8s/bin").join(name);
    assert!(
        path.exists(),
        "{name} is needed: scripts/test.sh installs it in .venv/k8s"
    );
    path
}

/// The overlay rendered by kustomize, as YAML text and as its objects.
fn render(overlay: &str) -> (String, Vec<Value>) {
    let output = Command::new(tool("kubectl"))
        .arg("kustomize")
        .arg(root().join("deploy/k8s/overlays").join(overlay))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{overlay}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let objects = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .collect();
    (text, objects)
}

fn validate(overlay: &str, text: &str) {
    let file = super::scratch_dir().join(format!("{overlay}.yaml"));
    std::fs::write(&file, text).unwrap();
    let output = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--quiet", "--kubernetes-version", "1.37.0"])
        .arg(&file)
        .output()
        .unwrap();
    let said = super::said(&output);
    assert!(output.status.success() && !said.contains("ERROR"), "{overlay}:\n{said}");
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |object| object["kind"] == kind)
}

/// Every pod of every Deployment: non-root, no privilege escalation, a read-only root, no
/// capabilities, probes, requests and a memory limit, and `serve` or `worker`.
fn check_pods(overlay: &str, objects: &[Value]) {
    let deployments: Vec<&Value> = of_kind(objects, "Deployment").collect();
    assert_eq!(deployments.len(), 2, "{overlay}: serve and worker");
    for deployment in deployments {
        let name = deployment["metadata"]["name"].as_str().unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{overlay} {name}");
        for container in pod["containers"].as_array().unwrap() {
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{overlay} {name}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{overlay} {name}");
            assert_eq!(security["capabilities"]["drop"][0], "ALL", "{overlay} {name}");
            for probe in ["readinessProbe", "livenessProbe"] {
                assert!(
                    container[probe]["httpGet"]["path"].is_string(),
                    "{overlay} {name}: {probe}"
                );
            }
            assert!(
                container["resources"]["requests"]["cpu"].is_string(),
                "{overlay} {name}"
            );
            assert!(
                container["resources"]["limits"]["memory"].is_string(),
                "{overlay} {name}"
            );
            let command = container["args"][0].as_str().unwrap();
            assert!(["serve", "worker"].contains(&command), "{overlay} {name}: {command}");
        }
    }
}

/// The ServiceMonitor selects Services that exist, on ports they have.
fn check_service_monitor(objects: &[Value]) {
    let monitor = of_kind(objects, "ServiceMonitor")
        .next()
        .expect("production monitors orch");
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
    let selected: Vec<&Value> = of_kind(objects, "Service")
        .filter(|service| {
            selector
                .iter()
                .all(|(label, value)| &service["metadata"]["labels"][label] == value)
        })
        .collect();
    assert_eq!(selected.len(), 2, "the API's and the workers' Services");
    for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
        let port = &endpoint["port"];
        let found = selected.iter().any(|service| {
            service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| &p["name"] == port)
        });
        assert!(found, "no selected Service has the port {port}");
    }
}

#[test]
fn kubernetes_manifests_render_and_validate_for_every_overlay() {
    for overlay in ["development", "production"] {
        let (text, objects) = render(overlay);
        validate(overlay, &text);
        check_pods(overlay, &objects);
        assert_eq!(of_kind(&objects, "PodDisruptionBudget").count(), 2, "{overlay}");
        assert_eq!(of_kind(&objects, "HorizontalPodAutoscaler").count(), 1, "{overlay}");
    }
    let (_, production) = render("production");
    check_service_monitor(&production);
    let image =
        &of_kind(&production, "Deployment").next().unwrap()["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "registry.example.com/orch:0.1.0");
    let (_, development) = render("development");
    let secret = of_kind(&development, "Secret")
        .next()
        .expect("development generates its Secret");
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    for deployment in of_kind(&development, "Deployment") {
        let sources = &deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"];
        assert_eq!(
            sources[1]["secretRef"]["name"], secret_name,
            "the pods read the generated Secret"
        );
    }
}
