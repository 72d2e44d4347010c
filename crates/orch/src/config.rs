//! Configuration: documented defaults, overridden by a TOML config file (`--config` or
//! `ORCH_CONFIG`), overridden by a `.env` file in the working directory, overridden by the
//! process environment. Every value is checked at start-up; an invalid one stops the process
//! with one line naming the variable and the problem. Secrets are held in `SecretString` and
//! never printed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use orch_api::{ApiConfig, ApiKeys};
use secrecy::{ExposeSecret, SecretString};

/// Every variable orch reads, with its default (`None`: unset by default) and whether it is
/// a secret. The README's configuration table mirrors this list.
pub const VARIABLES: &[(&str, Option<&str>, bool)] = &[
    ("DATABASE_URL", Some(orch_store::DEFAULT_DATABASE_URL), true),
    ("API_HOST", Some("127.0.0.1"), false),
    ("API_PORT", Some("8000"), false),
    ("API_KEYS", None, true),
    ("RATE_LIMIT_PER_MINUTE", Some("100"), false),
    ("AUTH_FAILURES_PER_MINUTE", Some("30"), false),
    ("LOG_LEVEL", Some("info"), false),
    ("LOG_FORMAT", Some("json"), false),
    ("CORS_ORIGINS", Some(""), false),
    ("IP_ALLOWLIST", Some(""), false),
    ("TRUSTED_PROXIES", Some(""), false),
    ("MAX_BODY_BYTES", Some("1048576"), false),
    ("API_HEADER_TIMEOUT_SECONDS", Some("10"), false),
    ("API_REQUEST_TIMEOUT_SECONDS", Some("60"), false),
    ("API_MAX_CONNECTIONS", Some("10000"), false),
    ("TLS_CERT_FILE", None, false),
    ("TLS_KEY_FILE", None, false),
    ("METRICS_REQUIRE_AUTH", Some("false"), false),
    ("TEMPORAL_HOST", None, false),
    ("TEMPORAL_NAMESPACE", Some("default"), false),
    ("TEMPORAL_TASK_QUEUE", Some("orch"), false),
    ("WORKER_METRICS_PORT", None, false),
    ("TEMPORAL_TLS", None, false),
    ("TEMPORAL_TLS_CA_FILE", None, false),
    ("TEMPORAL_TLS_CERT_FILE", None, false),
    ("TEMPORAL_TLS_KEY_FILE", None, false),
    ("TEMPORAL_TLS_SERVER_NAME", None, false),
    ("TEMPORAL_API_KEY", None, true),
    ("PLAYBOOK_DIR", Some("playbooks"), false),
    ("ANSIBLE_PLAYBOOK", None, false),
    ("ANSIBLE_USER", None, false),
    ("ANSIBLE_SSH_KEY_PATH", None, false),
    ("ANSIBLE_SSH_PORT", None, false),
    ("OPENSTACK_AUTH_URL", None, false),
    ("OPENSTACK_USERNAME", None, false),
    ("OPENSTACK_PASSWORD", None, true),
    ("OPENSTACK_PROJECT_NAME", None, false),
    ("OPENSTACK_USER_DOMAIN_NAME", Some("Default"), false),
    ("OPENSTACK_PROJECT_DOMAIN_NAME", Some("Default"), false),
    ("OPENSTACK_REGION_NAME", Some("RegionOne"), false),
    ("OPENSTACK_ALLOWED_HOSTS", Some(""), false),
    ("OPENSTACK_MAX_CONCURRENCY", Some("64"), false),
    ("OPENSTACK_REQUESTS_PER_SECOND", Some("50"), false),
    ("OPENSTACK_TIMEOUT_SECONDS", Some("60"), false),
    ("OPENSTACK_MAX_RETRIES", Some("5"), false),
    ("DOCKER_HOST", None, false),
    ("DOCKER_CERT_PATH", None, false),
    ("CONTAINER_HOSTS", Some(""), false),
    ("CONTAINER_PORT_RANGE", Some("20000-32000"), false),
    ("CONTAINER_PUBLISH_ADDRESS", Some("0.0.0.0"), false),
    ("CONTAINER_PAYLOAD_DIR", Some("/run/orch/payload"), false),
    ("CONTAINER_IMAGE_PULL", Some("missing"), false),
    ("ORCH_SECRET_KEY", None, true),
    ("ORCH_SECRET_KEY_PREVIOUS", None, true),
    ("RECONCILE_INTERVAL_SECONDS", Some("300"), false),
    ("ORPHAN_GRACE_SECONDS", Some("600"), false),
    ("CATALOG_DIR", None, false),
];

mod containers;
mod temporal;

/// One line: which variable, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

fn invalid(variable: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Credentials for the OpenStack cloud (`OPENSTACK_*`), used by the cloud layer.
#[derive(Debug, Clone)]
pub struct OpenStackConfig {
    pub auth_url: url::Url,
    pub username: String,
    pub password: SecretString,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
    pub region_name: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: SecretString,
    pub api_host: IpAddr,
    pub api_port: u16,
    pub api: ApiConfig,
    pub log_level: String,
    pub log_format: LogFormat,
    pub temporal_host: Option<String>,
    pub temporal_namespace: String,
    pub temporal_task_queue: String,
    /// TLS, mTLS and an API key towards Temporal.
    pub temporal_security: orch_workflows::TemporalSecurity,
    /// Where playbooks are and how ansible-playbook reaches the servers.
    pub ansible: orch_workflows::AnsibleSettings,
    pub openstack: Option<OpenStackConfig>,
    /// How hard orch may push the cloud, whichever way the cloud is configured.
    pub cloud_limits: CloudLimits,
    /// Where containerised services may run.
    pub container_hosts: orch_docker::ContainerHosts,
    /// How often the reconcile pass runs per location (its Temporal Schedule), and the worker
    /// compares the container hosts with the store (besides watching their events).
    pub reconcile_interval: std::time::Duration,
    /// Where `orch worker` serves `/metrics` and `/health` (on `API_HOST`); none: nowhere.
    pub worker_metrics_port: Option<u16>,
    /// Operators' catalog entries, from `CATALOG_DIR`.
    pub catalog: orch_core::catalog::Catalog,
    /// The keys secrets are sealed with (`ORCH_SECRET_KEY`, `ORCH_SECRET_KEY_PREVIOUS`).
    pub secret_keys: Option<std::sync::Arc<orch_store::secrets::SecretKeys>>,
}

/// The cloud client's limits and SSRF allowlist, from `OPENSTACK_*` settings.
#[derive(Debug, Clone)]
pub struct CloudLimits {
    pub allowed_hosts: Vec<String>,
    pub max_concurrency: usize,
    pub requests_per_second: f64,
    pub timeout_seconds: u64,
    pub max_retries: u32,
}

/// Where a value came from, for `orch config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    DotEnv,
    Environment,
}

/// The raw values by variable name, each with its source.
#[derive(Debug, Default)]
pub struct Sources {
    values: BTreeMap<String, (String, Source)>,
}

impl Sources {
    /// Layers defaults, the config file, `.env` (in `dotenv_dir`) and `environment`.
    pub fn gather(
        config_file: Option<&Path>,
        dotenv_dir: &Path,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut sources = Self::default();
        for (name, default, _) in VARIABLES {
            if let Some(default) = default {
                sources.set(name, default.to_string(), Source::Default);
            }
        }
        if let Some(path) = config_file {
            for (name, value) in read_config_file(path)? {
                sources.set(&name, value, Source::File);
            }
        }
        let dotenv = dotenv_dir.join(".env");
        if dotenv.is_file() {
            let entries = dotenvy::from_path_iter(&dotenv).map_err(|error| invalid(".env", error.to_string()))?;
            for entry in entries {
                let (name, value) = entry.map_err(|error| invalid(".env", dotenv_problem(&error)))?;
                if is_known(&name) {
                    sources.set(&name, value, Source::DotEnv);
                }
            }
        }
        for (name, value) in environment {
            if is_known(&name) {
                sources.set(&name, value, Source::Environment);
            }
        }
        Ok(sources)
    }

    /// Gives `name` a value when no source set one (e.g. the key `orch dev` generates).
    pub fn set_if_absent(&mut self, name: &str, value: String) {
        if !self.values.contains_key(name) {
            self.set(name, value, Source::Default);
        }
    }

    fn set(&mut self, name: &str, value: String, source: Source) {
        self.values.insert(name.to_owned(), (value, source));
    }

    /// The value, with empty strings counting as unset for variables without a default.
    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|(value, _)| value.as_str())
    }

    fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|value| !value.trim().is_empty())
    }

    /// Every variable with its value (secrets redacted) and source, for `orch config`.
    pub fn describe(&self) -> Vec<(String, String, Source)> {
        VARIABLES
            .iter()
            .filter_map(|(name, _, secret)| {
                let (value, source) = self.values.get(*name)?;
                let shown = if *secret { redact(name, value) } else { value.clone() };
                Some((name.to_string(), shown, *source))
            })
            .collect()
    }

    /// Every setting, checked; the first one that is wrong is named with what it should be.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let database_url = self.load_database_url()?;
        let api_host = self.parse_var("API_HOST", "", "an IP address such as 127.0.0.1 or 0.0.0.0")?;
        let api_port = self.parse_var("API_PORT", "", "a port number from 0 to 65535")?;
        let api = self.load_api()?;
        let (log_level, log_format) = self.load_logging()?;
        let temporal_host = self.load_temporal_host()?;
        let temporal_security = self.load_temporal_security()?;
        let openstack = self.load_openstack()?;
        let cloud_limits = self.load_cloud_limits()?;
        let ansible = self.load_ansible()?;
        let container_hosts = self.load_container_hosts()?;
        let catalog = self.load_catalog()?;
        let reconcile_seconds: u64 = self.parse_var("RECONCILE_INTERVAL_SECONDS", "300", "a number of seconds")?;
        if !(1..=86_400).contains(&reconcile_seconds) {
            return Err(invalid("RECONCILE_INTERVAL_SECONDS", "must be from 1 to 86400 (a day)"));
        }
        let orphan_grace_seconds: u64 = self.parse_var("ORPHAN_GRACE_SECONDS", "600", "a number of seconds")?;
        if orphan_grace_seconds > 30 * 86_400 {
            return Err(invalid("ORPHAN_GRACE_SECONDS", "must be at most 2592000 (30 days)"));
        }
        let default_region = match &openstack {
            Some(cloud) => cloud.region_name.clone(),
            None => self
                .non_empty("OPENSTACK_REGION_NAME")
                .unwrap_or("RegionOne")
                .to_owned(),
        };
        Ok(Config {
            database_url: SecretString::from(database_url.to_owned()),
            api_host,
            api_port,
            api: ApiConfig {
                default_region,
                // `local` first: it is the default.
                container_hosts: std::iter::once(orch_docker::DEFAULT_HOST)
                    .chain(
                        container_hosts
                            .names()
                            .filter(|name| *name != orch_docker::DEFAULT_HOST),
                    )
                    .map(str::to_owned)
                    .collect(),
                orphan_grace_seconds,
                ..api
            },
            log_level,
            log_format,
            temporal_host,
            temporal_namespace: self.non_empty("TEMPORAL_NAMESPACE").unwrap_or("default").to_owned(),
            temporal_task_queue: self.non_empty("TEMPORAL_TASK_QUEUE").unwrap_or("orch").to_owned(),
            temporal_security,
            ansible,
            openstack,
            cloud_limits,
            container_hosts,
            reconcile_interval: std::time::Duration::from_secs(reconcile_seconds),
            worker_metrics_port: self.load_worker_metrics_port()?,
            catalog,
            secret_keys: self.load_secret_keys()?,
        })
    }

    /// `ORCH_SECRET_KEY` (64 hex digits) and the previous keys still opened after a rotation
    /// (`ORCH_SECRET_KEY_PREVIOUS`, comma-separated).
    fn load_secret_keys(&self) -> Result<Option<std::sync::Arc<orch_store::secrets::SecretKeys>>, ConfigError> {
        let previous: Vec<&str> = (self
            .non_empty("ORCH_SECRET_KEY_PREVIOUS")
            .unwrap_or_default()
            .split(','))
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .collect();
        let Some(current) = self.non_empty("ORCH_SECRET_KEY") else {
            if !previous.is_empty() {
                return Err(invalid(
                    "ORCH_SECRET_KEY",
                    "is required when ORCH_SECRET_KEY_PREVIOUS is set",
                ));
            }
            return Ok(None);
        };
        orch_store::secrets::SecretKeys::parse(current, &previous)
            .map(|keys| Some(std::sync::Arc::new(keys)))
            .map_err(|why| invalid("ORCH_SECRET_KEY", why))
    }

    /// `name` read as a `T`, `default` when unset.
    fn parse_var<T: std::str::FromStr>(&self, name: &str, default: &str, expected: &str) -> Result<T, ConfigError> {
        parse(name, self.get(name).unwrap_or(default), expected)
    }

    fn load_database_url(&self) -> Result<&str, ConfigError> {
        let database_url = self
            .non_empty("DATABASE_URL")
            .unwrap_or(orch_store::DEFAULT_DATABASE_URL);
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if !known.iter().any(|scheme| database_url.starts_with(scheme)) {
            return Err(invalid("DATABASE_URL", "must start with sqlite:// or postgres://"));
        }
        Ok(database_url)
    }

    /// The API's settings; the default region is the cloud's, filled in by `load`.
    fn load_api(&self) -> Result<ApiConfig, ConfigError> {
        let Some(spec) = self.non_empty("API_KEYS") else {
            return Err(invalid(
                "API_KEYS",
                "is not set; give at least one key, e.g. API_KEYS=<random key>:write",
            ));
        };
        let api_keys = ApiKeys::parse(spec).map_err(|problem| invalid("API_KEYS", problem))?;
        let rate_limit_per_minute: NonZeroU32 =
            self.parse_var("RATE_LIMIT_PER_MINUTE", "", "a whole number above 0")?;
        let auth_failures_per_minute: NonZeroU32 =
            self.parse_var("AUTH_FAILURES_PER_MINUTE", "", "a whole number above 0")?;
        let max_body_bytes: usize = self.parse_var("MAX_BODY_BYTES", "", "a number of bytes")?;
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(invalid("MAX_BODY_BYTES", "must be between 1024 and 67108864"));
        }
        let metrics_require_auth = parse_bool(
            "METRICS_REQUIRE_AUTH",
            self.get("METRICS_REQUIRE_AUTH").unwrap_or("false"),
        )?;
        let cors_origins = parse_origins(self.get("CORS_ORIGINS").unwrap_or_default())?;
        let ip_allowlist: Vec<IpNet> = orch_api::auth::parse_ip_allowlist(self.get("IP_ALLOWLIST").unwrap_or_default())
            .map_err(|problem| invalid("IP_ALLOWLIST", problem))?;
        let trusted_proxies: Vec<IpNet> =
            orch_api::auth::parse_ip_allowlist(self.get("TRUSTED_PROXIES").unwrap_or_default())
                .map_err(|problem| invalid("TRUSTED_PROXIES", problem))?;
        let (header_timeout, request_timeout, max_connections) = self.load_connection_limits()?;
        let tls = self.load_tls()?;
        Ok(ApiConfig {
            api_keys,
            rate_limit_per_minute,
            auth_failures_per_minute,
            cors_origins,
            ip_allowlist,
            trusted_proxies,
            max_body_bytes,
            metrics_require_auth,
            default_region: String::new(),
            container_hosts: Vec::new(),
            header_timeout,
            request_timeout,
            max_connections,
            tls,
            orphan_grace_seconds: 600,
        })
    }

    /// `TLS_CERT_FILE` and `TLS_KEY_FILE`, both or neither, read now so that a bad file
    /// stops orch at start with its name.
    fn load_tls(&self) -> Result<Option<orch_api::tls::TlsConfig>, ConfigError> {
        match (self.non_empty("TLS_CERT_FILE"), self.non_empty("TLS_KEY_FILE")) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                let files = orch_api::tls::TlsFiles {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                };
                orch_api::tls::TlsConfig::load(files)
                    .map(Some)
                    .map_err(|why| invalid("TLS_CERT_FILE", why))
            }
            (Some(_), None) => Err(invalid("TLS_KEY_FILE", "is needed with TLS_CERT_FILE")),
            (None, Some(_)) => Err(invalid("TLS_CERT_FILE", "is needed with TLS_KEY_FILE")),
        }
    }

    /// How long a request's headers and a whole request may take, and how many connections
    /// may be open at once.
    fn load_connection_limits(&self) -> Result<(Duration, Duration, usize), ConfigError> {
        let seconds = |name: &str, range: std::ops::RangeInclusive<u64>| -> Result<Duration, ConfigError> {
            let value: u64 = self.parse_var(name, "", "a whole number of seconds")?;
            match range.contains(&value) {
                true => Ok(Duration::from_secs(value)),
                false => Err(invalid(
                    name,
                    format!("must be {} to {} seconds", range.start(), range.end()),
                )),
            }
        };
        let header_timeout = seconds("API_HEADER_TIMEOUT_SECONDS", 1..=300)?;
        let request_timeout = seconds("API_REQUEST_TIMEOUT_SECONDS", 1..=3600)?;
        let max_connections: usize = self.parse_var("API_MAX_CONNECTIONS", "", "a whole number")?;
        if !(1..=1_000_000).contains(&max_connections) {
            return Err(invalid("API_MAX_CONNECTIONS", "must be 1 to 1000000"));
        }
        Ok((header_timeout, request_timeout, max_connections))
    }

    fn load_logging(&self) -> Result<(String, LogFormat), ConfigError> {
        let log_level = self.get("LOG_LEVEL").unwrap_or("info").to_owned();
        if tracing_subscriber::EnvFilter::builder().parse(&log_level).is_err() {
            return Err(invalid(
                "LOG_LEVEL",
                "must be a level (error, warn, info, debug, trace) or a filter such as info,orch_api=debug",
            ));
        }
        let log_format = match self.get("LOG_FORMAT").unwrap_or("json").to_ascii_lowercase().as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            _ => return Err(invalid("LOG_FORMAT", "must be 'json' or 'pretty'")),
        };
        Ok((log_level, log_format))
    }

    fn load_cloud_limits(&self) -> Result<CloudLimits, ConfigError> {
        let cloud_limits = CloudLimits {
            allowed_hosts: self
                .get("OPENSTACK_ALLOWED_HOSTS")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|host| !host.is_empty())
                .map(str::to_owned)
                .collect(),
            max_concurrency: self.parse_var("OPENSTACK_MAX_CONCURRENCY", "64", "a number of requests")?,
            requests_per_second: self.parse_var("OPENSTACK_REQUESTS_PER_SECOND", "50", "a number")?,
            timeout_seconds: self.parse_var("OPENSTACK_TIMEOUT_SECONDS", "60", "a number of seconds")?,
            max_retries: self.parse_var("OPENSTACK_MAX_RETRIES", "5", "a number")?,
        };
        if cloud_limits.max_concurrency == 0 || cloud_limits.max_concurrency > 10_000 {
            return Err(invalid("OPENSTACK_MAX_CONCURRENCY", "must be between 1 and 10000"));
        }
        if !(cloud_limits.requests_per_second >= 0.0 && cloud_limits.requests_per_second.is_finite()) {
            return Err(invalid("OPENSTACK_REQUESTS_PER_SECOND", "must be 0 (no limit) or more"));
        }
        if cloud_limits.timeout_seconds == 0 {
            return Err(invalid("OPENSTACK_TIMEOUT_SECONDS", "must be at least 1"));
        }
        Ok(cloud_limits)
    }

    fn load_worker_metrics_port(&self) -> Result<Option<u16>, ConfigError> {
        let Some(port) = self.non_empty("WORKER_METRICS_PORT") else {
            return Ok(None);
        };
        match parse::<u16>("WORKER_METRICS_PORT", port, "a port number from 1 to 65535")? {
            0 => Err(invalid("WORKER_METRICS_PORT", "must be a port number from 1 to 65535")),
            port => Ok(Some(port)),
        }
    }

    fn load_ansible(&self) -> Result<orch_workflows::AnsibleSettings, ConfigError> {
        let mut ansible = orch_workflows::AnsibleSettings {
            playbook_dir: std::path::PathBuf::from(self.non_empty("PLAYBOOK_DIR").unwrap_or("playbooks")),
            ssh_user: self.non_empty("ANSIBLE_USER").map(str::to_owned),
            ssh_key_path: self.non_empty("ANSIBLE_SSH_KEY_PATH").map(std::path::PathBuf::from),
            ..orch_workflows::AnsibleSettings::default()
        };
        if let Some(binary) = self.non_empty("ANSIBLE_PLAYBOOK") {
            ansible.ansible_playbook = std::path::PathBuf::from(binary);
        }
        if let Some(port) = self.non_empty("ANSIBLE_SSH_PORT") {
            let port: u16 = parse("ANSIBLE_SSH_PORT", port, "a port number from 1 to 65535")?;
            if port == 0 {
                return Err(invalid("ANSIBLE_SSH_PORT", "must be a port number from 1 to 65535"));
            }
            ansible.ssh_port = Some(port);
        }
        if let Some(key) = ansible.ssh_key_path.as_ref().filter(|key| !key.is_file()) {
            return Err(invalid(
                "ANSIBLE_SSH_KEY_PATH",
                format!("{} is not a file", key.display()),
            ));
        }
        Ok(ansible)
    }

    /// Either no `OPENSTACK_AUTH_URL` (no cloud configured) or a complete set of credentials.
    fn load_openstack(&self) -> Result<Option<OpenStackConfig>, ConfigError> {
        let Some(auth_url) = self.non_empty("OPENSTACK_AUTH_URL") else {
            return Ok(None);
        };
        let auth_url = url::Url::parse(auth_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .ok_or_else(|| {
                invalid(
                    "OPENSTACK_AUTH_URL",
                    "must be an http(s) URL such as https://keystone.example.com:5000/v3",
                )
            })?;
        let required = |name: &str| {
            self.non_empty(name)
                .map(str::to_owned)
                .ok_or_else(|| invalid(name, "is required when OPENSTACK_AUTH_URL is set"))
        };
        Ok(Some(OpenStackConfig {
            auth_url,
            username: required("OPENSTACK_USERNAME")?,
            password: SecretString::from(required("OPENSTACK_PASSWORD")?),
            project_name: required("OPENSTACK_PROJECT_NAME")?,
            user_domain_name: required("OPENSTACK_USER_DOMAIN_NAME")?,
            project_domain_name: required("OPENSTACK_PROJECT_DOMAIN_NAME")?,
            region_name: required("OPENSTACK_REGION_NAME")?,
        }))
    }
}

fn is_known(name: &str) -> bool {
    VARIABLES.iter().any(|(known, _, _)| *known == name)
}

fn parse<T: std::str::FromStr>(name: &str, value: &str, expected: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(name, format!("'{value}' is not {expected}")))
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(invalid(name, format!("'{value}' is not true or false"))),
    }
}

fn parse_origins(spec: &str) -> Result<Vec<String>, ConfigError> {
    spec.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            if origin == "*" {
                return Ok(origin.to_owned());
            }
            let url = url::Url::parse(origin).map_err(|_| {
                invalid(
                    "CORS_ORIGINS",
                    format!("'{origin}' is not an origin such as https://app.example.com"),
                )
            })?;
            let is_origin = matches!(url.scheme(), "http" | "https")
                && url.path() == "/"
                && url.query().is_none()
                && !origin.ends_with('/');
            if is_origin {
                Ok(origin.to_owned())
            } else {
                Err(invalid(
                    "CORS_ORIGINS",
                    format!("'{origin}' must be scheme://host[:port] with no path"),
                ))
            }
        })
        .collect()
}

/// Secrets are shown only as their shape: a database URL keeps everything but its password.
/// Query parameters of a database URL that carry a secret (libpq and sqlx read these).
const SECRET_URL_PARAMETERS: [&str; 4] = ["password", "sslpassword", "passfile", "sslkey"];

fn redact(name: &str, value: &str) -> String {
    if name == "DATABASE_URL" {
        if let Ok(mut url) = url::Url::parse(value) {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(key, value)| {
                    let secret = SECRET_URL_PARAMETERS.contains(&key.to_ascii_lowercase().as_str());
                    (
                        key.into_owned(),
                        if secret { "***".to_owned() } else { value.into_owned() },
                    )
                })
                .collect();
            if !pairs.is_empty() {
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            return url.to_string();
        }
    }
    if value.is_empty() {
        String::new()
    } else {
        "***".to_owned()
    }
}

/// The database URL for connecting; the only place the secret is exposed.
pub fn database_url(config: &Config) -> &str {
    config.database_url.expose_secret()
}

/// A database URL safe to log.
pub fn redacted_database_url(config: &Config) -> String {
    redact("DATABASE_URL", config.database_url.expose_secret())
}

fn dotenv_problem(error: &dotenvy::Error) -> String {
    match error {
        dotenvy::Error::LineParse(_, index) => format!("cannot parse the line at byte {index}"),
        other => other.to_string(),
    }
}

/// Reads a TOML config file of `VARIABLE = value` pairs (names in any case).
fn read_config_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let label = format!("config file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|error| invalid(&label, error.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| invalid(&label, error.message().to_owned()))?;
    let mut values = Vec::new();
    for (key, value) in table {
        let name = key.to_ascii_uppercase();
        if !is_known(&name) {
            return Err(invalid(&label, format!("unknown setting '{key}'")));
        }
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or(()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| invalid(&name, "lists in the config file may only hold strings"))?
                .join(","),
            _ => return Err(invalid(&name, "must be a string, number, boolean or list of strings")),
        };
        values.push((name, text));
    }
    Ok(values)
}

/// The config file named by `--config` or `ORCH_CONFIG`.
pub fn config_file_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("ORCH_CONFIG").map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "k-0123456789abcdef";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The sources of a process with a write key and `pairs` in its environment.
    fn keyed(pairs: &[(&str, &str)]) -> Sources {
        let key = format!("{KEY}:write");
        let mut all = vec![("API_KEYS", key.as_str())];
        all.extend_from_slice(pairs);
        Sources::gather(None, &temp_dir(), env(&all)).unwrap()
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("orch-config-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    #[test]
    fn defaults_apply_when_only_keys_are_set() {
        let dir = temp_dir();
        let config = Sources::gather(None, &dir, env(&[("API_KEYS", &format!("{KEY}:write"))]))
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(config.api_port, 8000);
        assert_eq!(config.api.rate_limit_per_minute.get(), 100);
        assert_eq!(database_url(&config), orch_store::DEFAULT_DATABASE_URL);
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.openstack.is_none());
    }

    #[test]
    fn environment_beats_dotenv_beats_file_beats_defaults() {
        let dir = temp_dir();
        let file = dir.join("orch.toml");
        std::fs::write(
            &file,
            format!(
                "api_port = 9001\nrate_limit_per_minute = 7\nLOG_FORMAT = \"pretty\"\napi_keys = [\"{KEY}:write\"]\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join(".env"), "API_PORT=9002\nRATE_LIMIT_PER_MINUTE=8\n").unwrap();
        let sources = Sources::gather(Some(&file), &dir, env(&[("API_PORT", "9003")])).unwrap();
        let config = sources.load().unwrap();
        assert_eq!(config.api_port, 9003);
        assert_eq!(config.api.rate_limit_per_minute.get(), 8);
        assert_eq!(config.log_format, LogFormat::Pretty);
        let described = sources.describe();
        let port = described.iter().find(|(name, _, _)| name == "API_PORT").unwrap();
        assert_eq!(port.2, Source::Environment);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let dir = temp_dir();
        for (name, value, expected) in [
            ("API_PORT", "http", "API_PORT"),
            ("RATE_LIMIT_PER_MINUTE", "0", "RATE_LIMIT_PER_MINUTE"),
            ("LOG_FORMAT", "xml", "LOG_FORMAT"),
            ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
            ("IP_ALLOWLIST", "10.0.0.0/40", "IP_ALLOWLIST"),
            ("TRUSTED_PROXIES", "the-load-balancer", "TRUSTED_PROXIES"),
            ("CORS_ORIGINS", "https://a.example/path", "CORS_ORIGINS"),
            ("TEMPORAL_HOST", "nohost", "TEMPORAL_HOST"),
            ("OPENSTACK_AUTH_URL", "ftp://x", "OPENSTACK_AUTH_URL"),
            ("MAX_BODY_BYTES", "10", "MAX_BODY_BYTES"),
            ("API_HEADER_TIMEOUT_SECONDS", "0", "API_HEADER_TIMEOUT_SECONDS"),
            ("API_REQUEST_TIMEOUT_SECONDS", "soon", "API_REQUEST_TIMEOUT_SECONDS"),
            ("API_MAX_CONNECTIONS", "0", "API_MAX_CONNECTIONS"),
            ("TLS_CERT_FILE", "/nonexistent/cert.pem", "TLS_KEY_FILE"),
            ("TLS_KEY_FILE", "/nonexistent/key.pem", "TLS_CERT_FILE"),
            ("OPENSTACK_MAX_CONCURRENCY", "0", "OPENSTACK_MAX_CONCURRENCY"),
            ("OPENSTACK_REQUESTS_PER_SECOND", "fast", "OPENSTACK_REQUESTS_PER_SECOND"),
            ("API_KEYS", "short:write", "API_KEYS"),
        ] {
            let mut pairs = vec![("API_KEYS".to_owned(), format!("{KEY}:write"))];
            pairs.push((name.to_owned(), value.to_owned()));
            let error = Sources::gather(None, &dir, pairs).unwrap().load().unwrap_err();
            assert_eq!(error.variable, expected, "{error}");
        }
        let missing = Sources::gather(None, &dir, Vec::new()).unwrap().load().unwrap_err();
        assert_eq!(missing.variable, "API_KEYS");
    }

    #[test]
    fn openstack_needs_complete_credentials() {
        let error = keyed(&[("OPENSTACK_AUTH_URL", "http://127.0.0.1:5000/v3")])
            .load()
            .unwrap_err();
        assert_eq!(error.variable, "OPENSTACK_USERNAME");
    }

    #[test]
    fn secrets_are_never_shown() {
        let sources = keyed(&[
            ("DATABASE_URL", "postgres://orch:hunter2@db:5432/orch"),
            ("OPENSTACK_PASSWORD", "s3cret"),
            ("TEMPORAL_API_KEY", "temporal-s3cret"),
        ]);
        let shown = format!("{:?}", sources.describe());
        assert!(
            !shown.contains(KEY) && !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(shown.contains("postgres://orch:***@db:5432/orch"), "{shown}");
        // A password in the query string, as libpq and sqlx also read it.
        let in_query = redact(
            "DATABASE_URL",
            "postgres://orch@db/orch?sslmode=require&password=hunter2",
        );
        assert_eq!(in_query, "postgres://orch@db/orch?sslmode=require&password=***");
        let config = keyed(&[
            ("DATABASE_URL", "postgres://orch:hunter2@db/orch"),
            ("TEMPORAL_API_KEY", "temporal-s3cret"),
        ])
        .load()
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(KEY) && !debug.contains("hunter2") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[test]
    fn temporal_tls_is_implied_by_its_settings_and_checked_at_start() {
        let dir = temp_dir();
        let pem = |name: &str, kind: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("-----BEGIN {kind}-----\nAAAA\n-----END {kind}-----\n")).unwrap();
            path.display().to_string()
        };
        let (ca, cert, key) = (
            pem("ca.pem", "CERTIFICATE"),
            pem("c.pem", "CERTIFICATE"),
            pem("k.pem", "PRIVATE KEY"),
        );
        let plain = keyed(&[]).load().unwrap().temporal_security;
        assert!(plain.tls.is_none() && plain.api_key.is_none());
        let keyed_only = keyed(&[("TEMPORAL_API_KEY", "k")]).load().unwrap().temporal_security;
        assert!(keyed_only.tls.is_some(), "an API key never travels in the clear");
        let mtls = keyed(&[
            ("TEMPORAL_TLS_CA_FILE", &ca),
            ("TEMPORAL_TLS_CERT_FILE", &cert),
            ("TEMPORAL_TLS_KEY_FILE", &key),
            ("TEMPORAL_TLS_SERVER_NAME", "temporal.internal"),
        ])
        .load()
        .unwrap()
        .temporal_security;
        let tls = mtls.tls.unwrap();
        assert!(tls.server_ca.is_some() && tls.client_identity.is_some());
        assert_eq!(tls.server_name.as_deref(), Some("temporal.internal"));
        for (pairs, variable, words) in [
            (
                vec![("TEMPORAL_TLS_CERT_FILE", cert.as_str())],
                "TEMPORAL_TLS_KEY_FILE",
                "is needed",
            ),
            (
                vec![("TEMPORAL_TLS_CA_FILE", key.as_str())],
                "TEMPORAL_TLS_CA_FILE",
                "no PEM CERTIFICATE",
            ),
            (
                vec![("TEMPORAL_TLS_CA_FILE", "/nonexistent.pem")],
                "TEMPORAL_TLS_CA_FILE",
                "cannot read",
            ),
            (
                vec![("TEMPORAL_TLS", "false"), ("TEMPORAL_API_KEY", "k")],
                "TEMPORAL_TLS",
                "need TLS",
            ),
            (vec![("TEMPORAL_TLS", "maybe")], "TEMPORAL_TLS", "not true or false"),
        ] {
            let error = keyed(&pairs).load().unwrap_err();
            assert_eq!(error.variable, variable, "{error}");
            assert!(error.problem.contains(words), "{error}");
        }
    }

    #[test]
    fn config_file_rejects_unknown_settings() {
        let dir = temp_dir();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "api_prot = 1\n").unwrap();
        let error = Sources::gather(Some(&file), &dir, Vec::new()).unwrap_err();
        assert!(error.to_string().contains("unknown setting 'api_prot'"), "{error}");
    }
}
