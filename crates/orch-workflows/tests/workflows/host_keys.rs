//! SSH host keys, trusted on first contact and enforced after: configure runs over ssh to a
//! real sshd at the server's address, which then presents another host key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orch_core::{DeploymentStatus, OperationKind, Template};
use orch_store::Actor;
use serde_json::json;

use super::{common, harness_with_ansible, Harness};

/// An sshd of the test's own on `address:port`, stopped when dropped.
struct Sshd {
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client) must be installed");
    assert!(status.success());
}

fn public_key(path: &Path) -> String {
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    public.split_whitespace().nth(1).unwrap().to_owned()
}

impl Sshd {
    /// Starts sshd with `host_key`, admitting `client_key` for the current user.
    fn start(dir: &Path, address: &str, port: u16, host_key: &Path, client_key: &Path) -> Self {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(sshd.exists(), "sshd is needed: scripts/test.sh installs openssh-server");
        // The privilege-separation directory sshd insists on, which only a service start makes.
        let _ = std::fs::create_dir_all("/run/sshd");
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {address}:{port}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\nUsePAM no\n\
                 StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect((address, port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "sshd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

impl Harness {
    /// Runs reach.yml over ssh and waits for the result.
    async fn reach(&self, id: &str) -> orch_store::DeploymentRecord {
        self.store
            .request_operation(
                id,
                OperationKind::Configure,
                &json!({"playbook": "reach.yml"}),
                &Actor::default(),
            )
            .await
            .unwrap();
        self.settle(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_key_is_trusted_on_first_contact_and_a_changed_one_is_refused() {
    let dir: PathBuf = std::env::temp_dir().join(format!("orch-sshd-{}", common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let (client_key, first_key, second_key) = (dir.join("client"), dir.join("host-a"), dir.join("host-b"));
    for key in [&client_key, &first_key, &second_key] {
        keygen(key);
    }
    let port = free_port();
    let h = harness_with_ansible(
        |_| {},
        super::fast_limits(),
        |ansible| {
            ansible.ssh_user = Some(current_user());
            ansible.ssh_key_path = Some(client_key.clone());
            ansible.ssh_port = Some(port);
        },
    )
    .await;
    // Servers on loopback addresses, so that the generated inventory reaches the local sshd.
    let template = Template::parse(
        &json!({"name": "reachable", "vm_config": {"app": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 1}},
                "network_config": {"cidr": "127.0.0.0/16", "subnets": {"app": "127.0.5.0/24"}}}),
        "",
        None,
    )
    .unwrap();
    let id = h.create("reachable", template, true).await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let server = h
        .store
        .resources(&id)
        .await
        .unwrap()
        .into_iter()
        .find(|resource| resource.kind == "server")
        .unwrap();
    let address = server.attributes["ip"].as_str().unwrap().to_owned();

    let sshd = Sshd::start(&dir, &address, port, &first_key, &client_key);
    let first = h.reach(&id).await;
    assert_eq!(first.status, DeploymentStatus::Completed, "{:?}", first.status_reason);
    let recorded = h.store.host_keys(&id).await.unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].host, address);
    assert_eq!(recorded[0].server_id, server.cloud_id);
    assert!(
        recorded[0].known_hosts.contains(&public_key(&first_key)),
        "{recorded:?}"
    );
    let again = h.reach(&id).await;
    assert_eq!(again.status, DeploymentStatus::Completed, "{:?}", again.status_reason);
    assert_eq!(
        h.store.host_keys(&id).await.unwrap(),
        recorded,
        "a known host's key stays as it was"
    );

    // The same address now answers with another key: refused, and nothing recorded changes.
    drop(sshd);
    let sshd = Sshd::start(&dir, &address, port, &second_key, &client_key);
    let refused = h.reach(&id).await;
    assert_eq!(refused.status, DeploymentStatus::Failed);
    let reason = refused.status_reason.unwrap();
    assert!(
        reason.contains(&address) && reason.contains("not the one recorded on first contact"),
        "{reason}"
    );
    assert_eq!(h.store.host_keys(&id).await.unwrap(), recorded);

    // The operator knows why it changed and forgets the old key: the next run records the new.
    h.store
        .forget_host_key(&id, &address, "asked for", &Actor::default())
        .await
        .unwrap();
    h.store.retry_operation(&id, &Actor::default()).await.unwrap();
    let trusted = h.settle(&id).await;
    assert_eq!(
        trusted.status,
        DeploymentStatus::Completed,
        "{:?}",
        trusted.status_reason
    );
    let recorded = h.store.host_keys(&id).await.unwrap();
    assert!(
        recorded[0].known_hosts.contains(&public_key(&second_key)),
        "{recorded:?}"
    );
    assert!(!recorded[0].known_hosts.contains(&public_key(&first_key)));
    drop(sshd);
    let _ = std::fs::remove_dir_all(&dir);
}
