//! Where the cloud is and how to talk to it: credentials from `clouds.yaml` (with
//! `secure.yaml` merged), from the standard `OS_*` variables, or from orch's own
//! `OPENSTACK_*` variables; and the client's limits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;

use crate::error::{CloudError, Result};

/// How to authenticate with Keystone v3.
#[derive(Debug, Clone)]
pub enum Credentials {
    Password {
        /// User by name (with a domain) or by id.
        username: Option<String>,
        user_id: Option<String>,
        user_domain_name: Option<String>,
        user_domain_id: Option<String>,
        password: SecretString,
        /// Project by name (with a domain) or by id.
        project_name: Option<String>,
        project_id: Option<String>,
        project_domain_name: Option<String>,
        project_domain_id: Option<String>,
    },
    ApplicationCredential {
        id: Option<String>,
        name: Option<String>,
        /// Needed with `name`: the credential's owner.
        username: Option<String>,
        user_domain_name: Option<String>,
        secret: SecretString,
    },
}

/// Limits of the client towards one cloud. The defaults suit a mid-size public cloud.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Per request, from send to the end of the body.
    pub request_timeout: Duration,
    /// Retries after the first attempt, for retryable failures.
    pub max_retries: u32,
    /// First backoff; doubled per retry, with full jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured before giving up.
    pub max_retry_after: Duration,
    /// Requests in flight at once, over all services.
    pub max_concurrency: usize,
    /// Requests started per second, over all services.
    pub requests_per_second: f64,
    /// Consecutive failures that open an endpoint's circuit.
    pub breaker_threshold: u32,
    /// How long an open circuit fails fast before letting one probe through.
    pub breaker_cooldown: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            max_retries: 5,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
            max_concurrency: 64,
            requests_per_second: 50.0,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CloudConfig {
    pub auth_url: url::Url,
    pub credentials: Credentials,
    pub region_name: String,
    /// `public` (default), `internal` or `admin`.
    pub interface: String,
    /// Hosts besides the auth URL's that catalog endpoints may point at.
    pub allowed_hosts: Vec<String>,
    pub limits: ClientLimits,
}

impl CloudConfig {
    /// A password configuration with the default domain, region and limits.
    pub fn password(auth_url: &str, username: &str, password: &str, project_name: &str) -> Result<Self> {
        Ok(Self {
            auth_url: parse_auth_url(auth_url)?,
            credentials: Credentials::Password {
                username: Some(username.to_owned()),
                user_id: None,
                user_domain_name: Some("Default".into()),
                user_domain_id: None,
                password: SecretString::from(password.to_owned()),
                project_name: Some(project_name.to_owned()),
                project_id: None,
                project_domain_name: Some("Default".into()),
                project_domain_id: None,
            },
            region_name: "RegionOne".into(),
            interface: "public".into(),
            allowed_hosts: Vec::new(),
            limits: ClientLimits::default(),
        })
    }

    /// From environment variables: `OS_CLOUD` (a `clouds.yaml` entry) first, then `OS_*`,
    /// then orch's own `OPENSTACK_*`. `None` when none of them is set.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Option<Self>> {
        if let Some(cloud) = env.get("OS_CLOUD").filter(|v| !v.is_empty()) {
            return from_clouds_yaml(cloud, &standard_search_paths(env)).map(Some);
        }
        for prefix in ["OS_", "OPENSTACK_"] {
            let get = |name: &str| env.get(&format!("{prefix}{name}")).filter(|v| !v.is_empty()).cloned();
            let Some(auth_url) = get("AUTH_URL") else { continue };
            let mut values = BTreeMap::new();
            for name in [
                "USERNAME",
                "USER_ID",
                "PASSWORD",
                "PROJECT_NAME",
                "PROJECT_ID",
                "TENANT_NAME",
                "USER_DOMAIN_NAME",
                "USER_DOMAIN_ID",
                "PROJECT_DOMAIN_NAME",
                "PROJECT_DOMAIN_ID",
                "APPLICATION_CREDENTIAL_ID",
                "APPLICATION_CREDENTIAL_NAME",
                "APPLICATION_CREDENTIAL_SECRET",
                "REGION_NAME",
                "INTERFACE",
                "ENDPOINT_TYPE",
            ] {
                if let Some(value) = get(name) {
                    values.insert(name.to_ascii_lowercase(), Value::String(value));
                }
            }
            if let Some(tenant) = values.remove("tenant_name") {
                values.entry("project_name".into()).or_insert(tenant);
            }
            values.insert("auth_url".into(), Value::String(auth_url));
            let source = format!("{prefix}* variables");
            return from_flat(&values, &source).map(Some);
        }
        Ok(None)
    }
}

fn parse_auth_url(text: &str) -> Result<url::Url> {
    let url = url::Url::parse(text).map_err(|_| CloudError::Config(format!("auth_url '{text}' is not a URL")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(CloudError::Config("auth_url must be an http(s) URL with a host".into()));
    }
    Ok(url)
}

/// `clouds.yaml` locations in the order openstacksdk searches them.
pub fn standard_search_paths(env: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(file) = env.get("OS_CLIENT_CONFIG_FILE") {
        paths.push(PathBuf::from(file));
    }
    paths.push(PathBuf::from("clouds.yaml"));
    if let Some(home) = env.get("HOME") {
        paths.push(Path::new(home).join(".config/openstack/clouds.yaml"));
    }
    paths.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    paths
}

fn read_yaml(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_yaml_ng::from_str(&text)
            .map(Some)
            .map_err(|error| CloudError::Config(format!("{}: {error}", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CloudError::Config(format!("{}: {error}", path.display()))),
    }
}

/// Merges `overlay` into `base`, objects key by key (how `secure.yaml` adds secrets).
fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, overlay) => *base = overlay.clone(),
    }
}

/// Reads cloud `name` from the first `clouds.yaml` found in `paths`, with the `secure.yaml`
/// beside it merged in.
pub fn from_clouds_yaml(name: &str, paths: &[PathBuf]) -> Result<CloudConfig> {
    for path in paths {
        let Some(mut document) = read_yaml(path)? else { continue };
        let secure = path.with_file_name("secure.yaml");
        if let Some(secrets) = read_yaml(&secure)? {
            merge(&mut document, &secrets);
        }
        let cloud = document["clouds"]
            .get(name)
            .cloned()
            .ok_or_else(|| CloudError::Config(format!("{} has no cloud named '{name}'", path.display())))?;
        let mut values = BTreeMap::new();
        if let Value::Object(auth) = &cloud["auth"] {
            values.extend(auth.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        for key in ["region_name", "interface", "auth_type"] {
            if let Some(value) = cloud.get(key) {
                values.insert(key.to_owned(), value.clone());
            }
        }
        return from_flat(&values, &path.display().to_string());
    }
    Err(CloudError::Config(format!("no clouds.yaml found for OS_CLOUD={name}")))
}

/// Builds a configuration from flat keys (`auth_url`, `username`, `application_credential_id`, …).
fn from_flat(values: &BTreeMap<String, Value>, source: &str) -> Result<CloudConfig> {
    let text = |key: &str| {
        values.get(key).and_then(|value| match value {
            Value::String(text) if !text.is_empty() => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        })
    };
    let auth_url = text("auth_url").ok_or_else(|| CloudError::Config(format!("{source}: auth_url is required")))?;
    let credentials = if let Some(secret) = text("application_credential_secret") {
        let (id, name) = (text("application_credential_id"), text("application_credential_name"));
        if id.is_none() && name.is_none() {
            return Err(CloudError::Config(format!(
                "{source}: application_credential_id or _name is required with a secret"
            )));
        }
        Credentials::ApplicationCredential {
            id,
            name,
            username: text("username"),
            user_domain_name: text("user_domain_name"),
            secret: SecretString::from(secret),
        }
    } else {
        let password = text("password").ok_or_else(|| CloudError::Config(format!("{source}: password is required")))?;
        if text("username").is_none() && text("user_id").is_none() {
            return Err(CloudError::Config(format!("{source}: username or user_id is required")));
        }
        if text("project_name").is_none() && text("project_id").is_none() {
            return Err(CloudError::Config(format!(
                "{source}: project_name or project_id is required"
            )));
        }
        let domain = text("domain_name");
        Credentials::Password {
            username: text("username"),
            user_id: text("user_id"),
            user_domain_name: text("user_domain_name")
                .or(domain.clone())
                .or_else(|| text("user_domain_id").is_none().then(|| "Default".into())),
            user_domain_id: text("user_domain_id"),
            password: SecretString::from(password),
            project_name: text("project_name"),
            project_id: text("project_id"),
            project_domain_name: text("project_domain_name")
                .or(domain)
                .or_else(|| text("project_domain_id").is_none().then(|| "Default".into())),
            project_domain_id: text("project_domain_id"),
        }
    };
    let interface = text("interface")
        .or_else(|| text("endpoint_type"))
        .unwrap_or_else(|| "public".into());
    let interface = interface.trim_end_matches("URL").to_owned();
    if !matches!(interface.as_str(), "public" | "internal" | "admin") {
        return Err(CloudError::Config(format!(
            "{source}: interface must be public, internal or admin"
        )));
    }
    Ok(CloudConfig {
        auth_url: parse_auth_url(&auth_url)?,
        credentials,
        region_name: text("region_name").unwrap_or_else(|| "RegionOne".into()),
        interface,
        allowed_hosts: Vec::new(),
        limits: ClientLimits::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn os_variables_take_precedence_over_openstack_ones() {
        let config = CloudConfig::from_env(&env(&[
            ("OS_AUTH_URL", "http://keystone.example:5000/v3"),
            ("OS_USERNAME", "alice"),
            ("OS_PASSWORD", "pw"),
            ("OS_PROJECT_NAME", "demo"),
            ("OS_REGION_NAME", "RegionTwo"),
            ("OPENSTACK_AUTH_URL", "http://other.example/v3"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(config.auth_url.host_str(), Some("keystone.example"));
        assert_eq!(config.region_name, "RegionTwo");
        let Credentials::Password {
            username,
            user_domain_name,
            ..
        } = &config.credentials
        else {
            panic!()
        };
        assert_eq!(username.as_deref(), Some("alice"));
        assert_eq!(user_domain_name.as_deref(), Some("Default"));
        assert!(CloudConfig::from_env(&env(&[])).unwrap().is_none());
    }

    #[test]
    fn seed_variables_work() {
        let config = CloudConfig::from_env(&env(&[
            ("OPENSTACK_AUTH_URL", "http://openstack:5000/v3"),
            ("OPENSTACK_USERNAME", "admin"),
            ("OPENSTACK_PASSWORD", "secret"),
            ("OPENSTACK_PROJECT_NAME", "admin"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(config.interface, "public");
    }

    #[test]
    fn clouds_yaml_merges_secure_yaml() {
        let dir = std::env::temp_dir().join(format!("orch-cloud-yaml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("clouds.yaml"), "clouds:\n  fake:\n    region_name: RegionOne\n    interface: internal\n    auth:\n      auth_url: http://127.0.0.1:5000/identity/v3\n      application_credential_id: abc\n").unwrap();
        std::fs::write(
            dir.join("secure.yaml"),
            "clouds:\n  fake:\n    auth:\n      application_credential_secret: s3cret\n",
        )
        .unwrap();
        let config = from_clouds_yaml("fake", &[dir.join("clouds.yaml")]).unwrap();
        assert_eq!(config.interface, "internal");
        let Credentials::ApplicationCredential { id, secret, .. } = &config.credentials else {
            panic!()
        };
        assert_eq!(id.as_deref(), Some("abc"));
        assert_eq!(secret.expose_secret(), "s3cret");
        assert!(from_clouds_yaml("other", &[dir.join("clouds.yaml")]).is_err());
        assert!(!format!("{config:?}").contains("s3cret"), "secrets never print");
    }

    #[test]
    fn incomplete_credentials_are_explained() {
        let error = CloudConfig::from_env(&env(&[
            ("OS_AUTH_URL", "http://k/v3"),
            ("OS_USERNAME", "a"),
            ("OS_PASSWORD", "p"),
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("project_name"), "{error}");
        let error = CloudConfig::from_env(&env(&[
            ("OS_AUTH_URL", "ftp://k/v3"),
            ("OS_USERNAME", "a"),
            ("OS_PASSWORD", "p"),
            ("OS_PROJECT_NAME", "x"),
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("http"), "{error}");
    }
}
