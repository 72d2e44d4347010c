//! Container hosts: `local` (the engine at `DOCKER_HOST`, else the default socket) and any
//! named in `CONTAINER_HOSTS` as `name=endpoint` pairs; the port range and address that
//! published ports lease and bind on every host.

use std::path::PathBuf;

use orch_docker::config::{
    check_port_range, ContainerHosts, HostSettings, PullPolicy, DEFAULT_HOST, DEFAULT_PAYLOAD_DIR,
};

use super::{invalid, ConfigError, Sources};

impl Sources {
    pub(super) fn load_container_hosts(&self) -> Result<ContainerHosts, ConfigError> {
        let range = self.load_port_range()?;
        let address = self.non_empty("CONTAINER_PUBLISH_ADDRESS").unwrap_or("0.0.0.0");
        if address.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "CONTAINER_PUBLISH_ADDRESS",
                "must be an IP address such as 0.0.0.0 or 127.0.0.1",
            ));
        }
        let tls = self.non_empty("DOCKER_CERT_PATH").map(PathBuf::from);
        let local = HostSettings::local(self.non_empty("DOCKER_HOST"), tls.clone());
        let mut hosts = ContainerHosts::single(local);
        for entry in self
            .get("CONTAINER_HOSTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
        {
            if entry.is_empty() {
                continue;
            }
            let Some((name, endpoint)) = entry.split_once('=') else {
                return Err(invalid("CONTAINER_HOSTS", format!("'{entry}' must be name=endpoint")));
            };
            check_endpoint(endpoint).map_err(|why| invalid("CONTAINER_HOSTS", format!("{name}: {why}")))?;
            let host = HostSettings {
                name: name.to_owned(),
                endpoint: endpoint.to_owned(),
                tls: tls.clone(),
                ..HostSettings::local(None, None)
            };
            hosts.0.insert(name.to_owned(), host);
        }
        check_endpoint(&hosts.0[DEFAULT_HOST].endpoint).map_err(|why| invalid("DOCKER_HOST", why))?;
        let payload_dir = self.load_payload_dir()?;
        let pull = PullPolicy::parse(self.non_empty("CONTAINER_IMAGE_PULL").unwrap_or("missing"))
            .ok_or_else(|| invalid("CONTAINER_IMAGE_PULL", "must be missing or never"))?;
        for host in hosts.0.values_mut() {
            host.pull = pull;
            host.port_range = range;
            address.clone_into(&mut host.address);
            *host = host.clone().with_payload_dir(payload_dir.clone());
        }
        Ok(hosts)
    }

    /// Where instances' files and secrets are written for an engine on this machine: an
    /// absolute path, on tmpfs (a secret written to disk would outlive its container).
    fn load_payload_dir(&self) -> Result<PathBuf, ConfigError> {
        let dir = PathBuf::from(self.non_empty("CONTAINER_PAYLOAD_DIR").unwrap_or(DEFAULT_PAYLOAD_DIR));
        if !dir.is_absolute() || dir.components().any(|part| part == std::path::Component::ParentDir) {
            return Err(invalid(
                "CONTAINER_PAYLOAD_DIR",
                "must be an absolute path without '..'",
            ));
        }
        Ok(dir)
    }

    /// Operators' catalog entries: every YAML file in `CATALOG_DIR`, each problem named with
    /// its file and JSON pointer.
    pub(super) fn load_catalog(&self) -> Result<orch_core::catalog::Catalog, ConfigError> {
        let Some(dir) = self.non_empty("CATALOG_DIR") else {
            return Ok(orch_core::catalog::Catalog::default());
        };
        orch_core::catalog::Catalog::load_dir(std::path::Path::new(dir)).map_err(|problems| {
            let lines: Vec<String> = problems
                .0
                .iter()
                .map(|p| format!("{}: {}", p.pointer, p.detail))
                .collect();
            invalid("CATALOG_DIR", lines.join("; "))
        })
    }

    fn load_port_range(&self) -> Result<(u16, u16), ConfigError> {
        let text = self.non_empty("CONTAINER_PORT_RANGE").unwrap_or("20000-32000");
        let expected = "must be LOW-HIGH, e.g. 20000-32000";
        let (low, high) = text
            .split_once('-')
            .ok_or_else(|| invalid("CONTAINER_PORT_RANGE", expected))?;
        let port = |text: &str| {
            text.trim()
                .parse::<u16>()
                .map_err(|_| invalid("CONTAINER_PORT_RANGE", expected))
        };
        let range = (port(low)?, port(high)?);
        check_port_range(range).map_err(|why| invalid("CONTAINER_PORT_RANGE", why))?;
        Ok(range)
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let valid = endpoint
        .strip_prefix("unix://")
        .is_some_and(|path| path.starts_with('/'))
        || endpoint
            .strip_prefix("tcp://")
            .is_some_and(|rest| rest.rsplit_once(':').is_some());
    match valid {
        true => Ok(()),
        false => Err(format!(
            "'{endpoint}' must be unix:///path/to/docker.sock or tcp://HOST:PORT"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(pairs: &[(&str, &str)]) -> Sources {
        let environment = pairs.iter().map(|(name, value)| (name.to_string(), value.to_string()));
        Sources::gather(None, std::path::Path::new("/nonexistent"), environment).unwrap()
    }

    #[test]
    fn catalog_files_are_checked_with_located_errors() {
        let dir = std::env::temp_dir().join(format!("orch-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mine.yaml");
        std::fs::write(
            &file,
            "mine:\n  description: x\n  service: {image: i, class: nowhere}\n",
        )
        .unwrap();
        let dir_text = dir.display().to_string();
        let error = sources(&[("CATALOG_DIR", &dir_text)]).load_catalog().unwrap_err();
        assert_eq!(error.variable, "CATALOG_DIR");
        assert!(
            error
                .problem
                .contains(&format!("{}#/mine/service/class", file.display())),
            "{}",
            error.problem
        );
        std::fs::write(
            &file,
            "mine:\n  description: x\n  service: {image: local/mine:1, class: admin}\n",
        )
        .unwrap();
        let catalog = sources(&[("CATALOG_DIR", &dir_text)]).load_catalog().unwrap();
        assert!(catalog.get("mine").is_some());
    }

    #[test]
    fn hosts_ranges_and_endpoints_are_read_and_checked() {
        let hosts = sources(&[("CONTAINER_HOSTS", "edge=tcp://10.1.0.5:2376")])
            .load_container_hosts()
            .unwrap();
        assert_eq!(hosts.names().collect::<Vec<_>>(), ["edge", "local"]);
        assert_eq!(hosts.get("local").unwrap().port_range, (20_000, 32_000));
        assert!(hosts.get("local").unwrap().payload_dir.is_some());
        assert_eq!(hosts.get("local").unwrap().pull, PullPolicy::Missing);
        assert_eq!(
            hosts.get("edge").unwrap().payload_dir,
            None,
            "no files on a remote engine"
        );
        let bad = [
            ("CONTAINER_PORT_RANGE", "80-90"),
            ("CONTAINER_PORT_RANGE", "30000-20000"),
            ("CONTAINER_HOSTS", "edge"),
            ("DOCKER_HOST", "ssh://box"),
            ("CONTAINER_PUBLISH_ADDRESS", "everywhere"),
            ("CONTAINER_PAYLOAD_DIR", "run/orch"),
            ("CONTAINER_IMAGE_PULL", "always"),
        ];
        for (name, value) in bad {
            let error = sources(&[(name, value)]).load_container_hosts().unwrap_err();
            assert_eq!(error.variable, name, "{value}");
        }
    }
}
