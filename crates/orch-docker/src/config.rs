//! Container hosts, configured like cloud regions: a name, the engine's endpoint, and the
//! host ports orch may lease there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The host a deployment of services uses when it names none.
pub const DEFAULT_HOST: &str = "local";
/// Leased host ports: below Linux's ephemeral range (32768-60999), so that no outgoing
/// connection of the host takes a port an instance is given.
pub const DEFAULT_PORT_RANGE: (u16, u16) = (20_000, 32_000);
/// Instances' files and secrets: under `/run`, a tmpfs on every systemd host.
pub const DEFAULT_PAYLOAD_DIR: &str = "/run/orch/payload";

/// Whether an image missing on a host is pulled from its registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pulled when the host does not have it (as `docker run` does).
    #[default]
    Missing,
    /// Never pulled: images are built or loaded on the host beforehand (air-gapped hosts).
    Never,
}

impl PullPolicy {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "missing" => Some(Self::Missing),
            "never" => Some(Self::Never),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSettings {
    pub name: String,
    /// `unix:///var/run/docker.sock`, or `tcp://host:2376` (with `tls`).
    pub endpoint: String,
    /// A directory with `ca.pem`, `cert.pem` and `key.pem` for TCP with TLS.
    pub tls: Option<PathBuf>,
    /// The address published ports bind to.
    pub address: String,
    pub port_range: (u16, u16),
    pub timeout: Duration,
    /// Where instances' files and secrets are written, to be bind-mounted (on tmpfs, so that
    /// secrets never reach a disk). Only an engine on this machine has one.
    pub payload_dir: Option<PathBuf>,
    pub pull: PullPolicy,
}

impl HostSettings {
    /// The local engine, at `DOCKER_HOST` or the default socket.
    pub fn local(docker_host: Option<&str>, tls: Option<PathBuf>) -> Self {
        Self {
            name: DEFAULT_HOST.to_owned(),
            endpoint: docker_host.unwrap_or("unix:///var/run/docker.sock").to_owned(),
            tls,
            address: "0.0.0.0".to_owned(),
            port_range: DEFAULT_PORT_RANGE,
            timeout: Duration::from_secs(60),
            payload_dir: None,
            pull: PullPolicy::Missing,
        }
        .with_payload_dir(PathBuf::from(DEFAULT_PAYLOAD_DIR))
    }

    /// Files and secrets go to `dir`, when the engine is on this machine.
    pub fn with_payload_dir(mut self, dir: PathBuf) -> Self {
        self.payload_dir = self.is_local().then_some(dir);
        self
    }

    /// Whether orch runs beside the engine, so that it reaches containers by their address.
    pub fn is_local(&self) -> bool {
        self.endpoint.starts_with("unix://")
    }
}

/// Every configured host, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerHosts(pub BTreeMap<String, HostSettings>);

impl ContainerHosts {
    pub fn single(host: HostSettings) -> Self {
        Self(BTreeMap::from([(host.name.clone(), host)]))
    }

    pub fn get(&self, name: &str) -> Option<&HostSettings> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Checks a port range: at least one port, none privileged.
pub fn check_port_range(range: (u16, u16)) -> Result<(), String> {
    match range {
        (low, high) if low < 1024 || high < low => Err(format!(
            "{low}-{high} must be a range of unprivileged ports (1024-65535), low to high"
        )),
        _ => Ok(()),
    }
}
