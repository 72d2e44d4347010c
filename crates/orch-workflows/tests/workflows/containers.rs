//! Containerised services on the real local Docker Engine, through the real workflows:
//! health-gated deploys in dependency order, leased ports, isolated networks, scale,
//! update, a failed health gate, and deletes that leave the engine as it was. Images are
//! built locally (no registry is reachable); every test removes what it made, even when it
//! fails.

use std::process::Command;
use std::sync::OnceLock;

use orch_core::{DeploymentStatus, OperationKind, Template};
use serde_json::{json, Value};

use super::harness;

const TWO_TIER: &str = include_str!("../../../../examples/two-tier-services.yaml");
pub const BUSYBOX: &str = "local/busybox:latest";

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("docker {args:?}: {error}; scripts/test.sh installs and starts the engine"));
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `local/busybox:latest`, built once from Debian's static busybox (no registry needed).
pub fn busybox_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if Command::new("docker").args(["image", "inspect", BUSYBOX]).output().is_ok_and(|o| o.status.success()) {
            return;
        }
        let context = std::env::temp_dir().join(format!("orch-busybox-{}", super::common::unique()));
        std::fs::create_dir_all(&context).unwrap();
        std::fs::copy("/usr/bin/busybox", context.join("busybox")).expect("apt-get install busybox-static");
        std::fs::write(
            context.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN [\"/bin/mkdir\", \"-p\", \"/www\", \"/tmp\"]\nRUN [\"/bin/sh\", \"-c\", \"echo ok > /www/index.html\"]\n",
        )
        .unwrap();
        docker(&["build", "-q", "-t", BUSYBOX, context.to_str().unwrap()]);
    });
}

/// Removes everything labelled for the deployments when dropped, so a failed test leaves
/// the engine clean.
pub struct EngineGuard(pub Vec<String>);

impl Drop for EngineGuard {
    fn drop(&mut self) {
        for id in &self.0 {
            let filter = format!("label=orch.deployment={id}");
            for kind in ["container", "network", "volume"] {
                let listed = Command::new("docker")
                    .args([kind, "ls", "-q", "--filter", &filter])
                    .output();
                let Ok(listed) = listed else { continue };
                for object in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                    let mut remove = vec![kind, "rm"];
                    if kind == "container" {
                        remove.push("-f");
                    }
                    remove.push(object);
                    let _ = Command::new("docker").args(&remove).output();
                }
            }
        }
    }
}

/// What the engine holds of a deployment: containers, networks and volumes by name.
fn labelled(id: &str) -> Vec<String> {
    let filter = format!("label=orch.deployment={id}");
    let mut found = Vec::new();
    for kind in ["container", "network", "volume"] {
        let format = if kind == "container" { "{{.Names}}" } else { "{{.Name}}" };
        let mut args = vec![kind, "ls", "--filter", &filter, "--format", format];
        if kind == "container" {
            args.insert(2, "-a");
        }
        found.extend(docker(&args).lines().filter(|line| !line.is_empty()).map(str::to_owned));
    }
    found.sort();
    found
}

fn host_ports(resources: &[orch_store::ResourceRecord], service: &str) -> Vec<u64> {
    resources
        .iter()
        .filter(|resource| resource.kind == "container" && resource.attributes["service"] == service)
        .map(|resource| resource.attributes["host_ports"]["http"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_tier_stack_deploys_health_gated_scales_and_leaves_nothing() {
    busybox_image();
    let orch = harness(|_| {}).await;
    let mut document = Template::parse_text(TWO_TIER).unwrap().to_value();
    document["services"]["cache"]["volumes"] = json!([{"name": "data", "target": "/data"}]);
    document["services"]["web"]["env"] = json!({"ME": "{{orch.instance}}", "PEERS": "{{orch.peers:8080}}"});
    let template = Template::parse(&document, "", None).unwrap();
    let first = orch
        .create(&format!("tt-{}", super::common::unique()), template.clone(), true)
        .await;
    let second = orch
        .create(&format!("tt-{}", super::common::unique()), template, true)
        .await;
    let _guard = EngineGuard(vec![first.clone(), second.clone()]);
    // Both at once: the relay starts both, then both are waited for.
    assert_eq!(
        orch.settle(&first).await.status,
        DeploymentStatus::Completed,
        "{:?}",
        orch.store.deployment(&first).await.unwrap().status_reason
    );
    assert_eq!(orch.settle(&second).await.status, DeploymentStatus::Completed);

    let resources = orch.store.resources(&first).await.unwrap();
    let containers: Vec<&orch_store::ResourceRecord> = resources.iter().filter(|r| r.kind == "container").collect();
    assert_eq!(containers.len(), 3);
    assert!(containers.iter().all(|c| c.status == "healthy"), "{containers:?}");
    let mut ports = host_ports(&resources, "web");
    ports.extend(host_ports(&orch.store.resources(&second).await.unwrap(), "web"));
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        4,
        "two deployments, two instances each, four ports: {ports:?}"
    );
    assert!(ports.iter().all(|port| (20_000..=32_000).contains(port)));

    // The published port answers on the host; web reaches cache by name; cache's network
    // has no way out.
    let page = reqwest::get(format!("http://127.0.0.1:{}/", ports[0]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page.trim(), "ok");
    let get_from_web_0 = |url: &str| docker(&["exec", &format!("{first}-web-0"), "wget", "-q", "-O", "-", url]);
    assert_eq!(get_from_web_0("http://cache:6379/"), "ok");
    let env = docker(&["inspect", "-f", "{{json .Config.Env}}", &format!("{first}-web-1")]);
    assert!(
        env.contains("\"ME=web-1\"") && env.contains("\"PEERS=web-0:8080,web-1:8080\""),
        "per-instance values are filled in: {env}"
    );
    assert_eq!(
        get_from_web_0("http://web-1:8080/"),
        "ok",
        "each instance also answers to <service>-<index>"
    );
    assert_eq!(
        docker(&["network", "inspect", "-f", "{{.Internal}}", &format!("{first}-data")]),
        "true"
    );
    assert_eq!(
        docker(&["network", "inspect", "-f", "{{.Internal}}", &format!("{first}-gateway")]),
        "false"
    );
    // Nothing leaves the internal network: cache cannot reach web's address on the gateway
    // network, which web-1, on that network, reaches.
    let web_address = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{first}-gateway\").IPAddress}}}}"),
        &format!("{first}-web-0"),
    ]);
    let fetch = |from: &str| {
        let url = format!("http://{web_address}:8080/");
        let output = Command::new("docker")
            // busybox's own `wget -T` crashes; its `timeout` bounds the attempt instead.
            .args(["exec", from, "timeout", "3", "wget", "-q", "-O", "-", &url])
            .output()
            .unwrap();
        output.status.success()
    };
    assert!(fetch(&format!("{first}-web-1")), "web-1 reaches web-0 at {web_address}");
    assert!(
        !fetch(&format!("{first}-cache-0")),
        "cache, on the internal network, does not"
    );
    assert!(
        labelled(&first).contains(&format!("{first}-cache-0-data")),
        "the instance's volume: {:?}",
        labelled(&first)
    );
    let inspect = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}}",
        &format!("{first}-web-1"),
    ]);
    assert_eq!(inspect, "false [ALL] [no-new-privileges:true] 67108864");

    // Scale out and in through the same workflow as servers.
    let scaled = orch
        .operate(
            &first,
            OperationKind::Scale,
            &json!({"target_count": 3, "vm_type": "web"}),
        )
        .await;
    assert_eq!(scaled.status, DeploymentStatus::Completed, "{:?}", scaled.status_reason);
    assert_eq!(orch.store.port_leases(&first).await.unwrap().len(), 3);
    let scaled = orch
        .operate(
            &first,
            OperationKind::Scale,
            &json!({"target_count": 1, "vm_type": "web"}),
        )
        .await;
    assert_eq!(scaled.status, DeploymentStatus::Completed);
    let names: Vec<String> = labelled(&first)
        .into_iter()
        .filter(|name| name.contains("-web-"))
        .collect();
    assert_eq!(names, [format!("{first}-web-0")], "newest removed first");
    assert_eq!(
        orch.store.port_leases(&first).await.unwrap().len(),
        1,
        "leases go with their instances"
    );

    for id in [&first, &second] {
        let deleted = orch.operate(id, OperationKind::Delete, &Value::Null).await;
        assert_eq!(deleted.status, DeploymentStatus::Deleted);
        assert!(labelled(id).is_empty(), "left on the engine: {:?}", labelled(id));
        assert!(orch.store.port_leases(id).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_replaces_changed_instances_one_at_a_time() {
    busybox_image();
    let orch = harness(|_| {}).await;
    let template = Template::parse_text(TWO_TIER).unwrap();
    let id = orch
        .create(&format!("up-{}", super::common::unique()), template.clone(), true)
        .await;
    let _guard = EngineGuard(vec![id.clone()]);
    assert_eq!(orch.settle(&id).await.status, DeploymentStatus::Completed);
    let before = host_ports(&orch.store.resources(&id).await.unwrap(), "web");
    let cache_before = docker(&["inspect", "-f", "{{.Id}}", &format!("{id}-cache-0")]);

    let mut changed = template.to_value();
    changed["services"]["web"]["env"] = json!({"GREETING": "hello"});
    let updated = orch
        .operate(
            &id,
            OperationKind::Update,
            &json!({"template": changed, "parameters": {}}),
        )
        .await;
    assert_eq!(
        updated.status,
        DeploymentStatus::Completed,
        "{:?}",
        updated.status_reason
    );
    let env = docker(&["inspect", "-f", "{{json .Config.Env}}", &format!("{id}-web-1")]);
    assert!(env.contains("GREETING=hello"), "{env}");
    assert_eq!(
        host_ports(&orch.store.resources(&id).await.unwrap(), "web"),
        before,
        "a replacement keeps its ports"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.Id}}", &format!("{id}-cache-0")]),
        cache_before,
        "unchanged services stay"
    );

    // A replacement that never gets healthy fails the update, which goes back to the spec
    // before: the instances run the last good spec again, on their ports.
    let mut broken = changed.clone();
    broken["services"]["web"]["command"] = json!(["/bin/sleep", "3600"]);
    broken["services"]["web"]["healthcheck"]["deadline_s"] = json!(4);
    let failed = orch
        .operate(
            &id,
            OperationKind::Update,
            &json!({"template": broken, "parameters": {}}),
        )
        .await;
    assert_eq!(failed.status, DeploymentStatus::Failed);
    let reason = failed.status_reason.unwrap();
    assert!(
        reason.contains("not ready within 4 s") && reason.contains("reverted to the previous spec"),
        "{reason}"
    );
    let resources = orch.store.resources(&id).await.unwrap();
    assert_eq!(host_ports(&resources, "web"), before);
    let web: Vec<_> = resources.iter().filter(|r| r.attributes["service"] == "web").collect();
    assert!(web.iter().all(|r| r.status == "healthy"), "{web:?}");
    let command = docker(&["inspect", "-f", "{{json .Config.Cmd}}", &format!("{id}-web-0")]);
    assert!(command.contains("httpd"), "the previous spec runs again: {command}");
    assert_eq!(
        orch.operate(&id, OperationKind::Delete, &Value::Null).await.status,
        DeploymentStatus::Deleted
    );
    assert!(labelled(&id).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_fails_the_deploy_and_leaves_nothing() {
    busybox_image();
    let orch = harness(|_| {}).await;
    let mut document = Template::parse_text(TWO_TIER).unwrap().to_value();
    document["services"]["cache"]["healthcheck"] = json!({"exec": ["/bin/false"], "interval_s": 1, "deadline_s": 6});
    let template = Template::parse(&document, "", None).unwrap();
    let id = orch
        .create(&format!("sick-{}", super::common::unique()), template, true)
        .await;
    let _guard = EngineGuard(vec![id.clone()]);
    let failed = orch.settle(&id).await;
    assert_eq!(failed.status, DeploymentStatus::Failed);
    let reason = failed.status_reason.unwrap();
    assert!(
        reason.contains("container:cache:0") && reason.contains("not ready within 6 s"),
        "{reason}"
    );
    assert!(labelled(&id).is_empty(), "compensation left {:?}", labelled(&id));
    assert!(orch.store.port_leases(&id).await.unwrap().is_empty());
    assert!(
        orch.store
            .resources(&id)
            .await
            .unwrap()
            .iter()
            .all(|r| r.kind != "container"),
        "nothing is recorded as live"
    );
}

fn reconciler(orch: &super::common::Orch) -> orch_workflows::reconcile::Reconciler {
    orch_workflows::reconcile::Reconciler {
        store: orch.store.clone(),
        containers: super::common::local_engine(),
        interval: std::time::Duration::from_secs(3600),
    }
}

/// The two-tier example deployed to COMPLETED, with the guard that removes it.
async fn two_tier_deployed(orch: &super::common::Orch, prefix: &str) -> (String, EngineGuard) {
    busybox_image();
    let name = format!("{prefix}-{}", super::common::unique());
    let id = orch.create(&name, Template::parse_text(TWO_TIER).unwrap(), true).await;
    let guard = EngineGuard(vec![id.clone()]);
    assert_eq!(orch.settle(&id).await.status, DeploymentStatus::Completed);
    (id, guard)
}

fn running(name: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", name]) == "true"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_or_stopped_instance_is_noticed_and_repaired_on_its_ports() {
    let orch = harness(|_| {}).await;
    let (id, _guard) = two_tier_deployed(&orch, "heal").await;
    let ports = host_ports(&orch.store.resources(&id).await.unwrap(), "web");
    let reconciler = reconciler(&orch);
    assert!(reconciler.pass().await.unwrap().is_empty(), "nothing drifted yet");

    docker(&["rm", "-f", &format!("{id}-web-1")]);
    docker(&["stop", "-t", "1", &format!("{id}-cache-0")]);
    assert_eq!(reconciler.pass().await.unwrap(), vec![id.clone()]);
    let repaired = orch.settle(&id).await;
    assert_eq!(
        repaired.status,
        DeploymentStatus::Completed,
        "{:?}",
        repaired.status_reason
    );
    assert!(running(&format!("{id}-web-1")) && running(&format!("{id}-cache-0")));
    assert_eq!(
        host_ports(&orch.store.resources(&id).await.unwrap(), "web"),
        ports,
        "back on its ports"
    );
    let events = orch.event_actions(&id).await;
    assert!(events.iter().any(|action| action == "containers.drifted"), "{events:?}");
    assert!(reconciler.pass().await.unwrap().is_empty(), "repaired for good");
    assert_eq!(
        orch.operate(&id, OperationKind::Delete, &Value::Null).await.status,
        DeploymentStatus::Deleted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_events_bring_a_repair_without_waiting_for_the_next_look() {
    let orch = harness(|_| {}).await;
    let (id, _guard) = two_tier_deployed(&orch, "watch").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watching = tokio::spawn(reconciler(&orch).run(async move {
        let _ = stopped.await;
    }));
    // The first look happens at once; give the watch a moment to subscribe.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    docker(&["rm", "-f", &format!("{id}-web-0")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while orch.store.operation_in_flight(&id).await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the removal was not noticed within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    watching.await.unwrap();
    assert_eq!(orch.settle(&id).await.status, DeploymentStatus::Completed);
    assert!(running(&format!("{id}-web-0")));
    assert_eq!(
        orch.operate(&id, OperationKind::Delete, &Value::Null).await.status,
        DeploymentStatus::Deleted
    );
}

/// A registry of the test's own on 127.0.0.1 (Debian's docker-registry, which
/// scripts/test.sh installs; the engine reaches a loopback registry without TLS), stopped
/// and emptied when dropped.
struct Registry {
    child: std::process::Child,
    dir: std::path::PathBuf,
    address: String,
}

impl Registry {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("orch-registry-{}", super::common::unique()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: \"{address}\"}}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .args(["serve", config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/test.sh installs it: ensure_registry)");
        let registry = Self { child, dir, address };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.address).is_err() {
            assert!(std::time::Instant::now() < deadline, "the registry never listened");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        registry
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Untags an image when dropped, so a failed test leaves no pulled copy behind.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["image", "rm", "-f", &self.0]).output();
    }
}

fn two_tier_on(image: &str) -> Template {
    let mut document = Template::parse_text(TWO_TIER).unwrap().to_value();
    for service in document["services"].as_object_mut().unwrap().values_mut() {
        service["image"] = Value::from(image);
    }
    Template::parse(&document, "", None).unwrap()
}

/// An image the host lacks is pulled from its registry before the first instance is made;
/// one the registry does not have fails the deploy at once, in the registry's words, and
/// leaves nothing; with pulls off, the host's images are all there is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_pulled_and_an_unknown_one_fails_the_deploy_at_once() {
    busybox_image();
    let registry = Registry::start();
    let image = format!("{}/orch-test/busybox:{}", registry.address, super::common::unique());
    docker(&["tag", BUSYBOX, &image]);
    let _image = ImageGuard(image.clone());
    docker(&["push", "-q", &image]);
    docker(&["image", "rm", &image]);

    let orch = harness(|_| {}).await;
    let id = orch
        .create(&format!("pull-{}", super::common::unique()), two_tier_on(&image), true)
        .await;
    let _guard = EngineGuard(vec![id.clone()]);
    let done = orch.settle(&id).await;
    assert_eq!(done.status, DeploymentStatus::Completed, "{:?}", done.status_reason);
    docker(&["image", "inspect", &image]);

    let unknown = format!("{}/orch-test/nothing:1", registry.address);
    let id = orch
        .create(
            &format!("nopull-{}", super::common::unique()),
            two_tier_on(&unknown),
            true,
        )
        .await;
    let _guard = EngineGuard(vec![id.clone()]);
    let started = std::time::Instant::now();
    let failed = orch.settle(&id).await;
    assert_eq!(failed.status, DeploymentStatus::Failed);
    let reason = failed.status_reason.unwrap();
    assert!(
        reason.contains(&unknown) && reason.contains("cannot be pulled"),
        "{reason}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "not retried for long"
    );
    assert!(labelled(&id).is_empty(), "left {:?}", labelled(&id));

    docker(&["image", "rm", &image]);
    let cloud = orch_cloud::OpenStack::new(
        orch_cloud::CloudConfig::password(&orch.cloud.auth_url(), "admin", "fakecloud", "admin").unwrap(),
    )
    .unwrap();
    let never = super::common::local_engine_with(|host| host.pull = orch_docker::config::PullPolicy::Never);
    let offline = super::common::Orch::start_with(cloud, never, orch_workflows::AnsibleSettings::default()).await;
    let id = offline
        .create(&format!("never-{}", super::common::unique()), two_tier_on(&image), true)
        .await;
    let _guard = EngineGuard(vec![id.clone()]);
    let failed = offline.settle(&id).await;
    let reason = failed.status_reason.unwrap_or_default();
    assert!(reason.contains("CONTAINER_IMAGE_PULL=never"), "{reason}");
    assert!(
        Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .is_ok_and(|o| !o.status.success()),
        "nothing was pulled"
    );
}
