//! The one HTTP layer every OpenStack call goes through: Keystone tokens cached
//! and renewed without a thundering herd, endpoints from the catalog behind an SSRF guard,
//! a concurrency limit and a request pace per cloud, a circuit breaker per endpoint,
//! retries with exponential backoff and jitter, `Retry-After` honoured, typed errors and
//! metrics.
//!
//! Retries never repeat a create blindly: a POST is retried only when the cloud provably did
//! not take it (connection refused, 429, 503 with `Retry-After`); otherwise the error is
//! marked ambiguous and the caller looks the resource up by its key before creating again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

mod attempt;
mod breaker;

use attempt::{Failure, Request};
use backon::{ExponentialBuilder, Retryable};
use breaker::Breaker;

use crate::config::{CloudConfig, Credentials};
use crate::error::{CloudError, Result, Service};
use crate::tagging::TagModes;

/// A client for one cloud, in one region. Cheap to clone; clones share the token, the limits
/// and the breakers.
#[derive(Clone)]
pub struct OpenStack {
    inner: Arc<Inner>,
    region: String,
}

struct Inner {
    config: CloudConfig,
    http: reqwest::Client,
    session: Mutex<Option<Arc<Session>>>,
    /// Held while authenticating, so that concurrent callers wait for one token.
    refresh: tokio::sync::Mutex<()>,
    permits: Semaphore,
    /// The request pace, when the cloud has one.
    pace: Option<Pace>,
    breakers: Mutex<HashMap<String, Breaker>>,
    allowed_hosts: Vec<String>,
    authentications: AtomicU64,
    /// Requests sent to the cloud (every attempt, identity included), and of those the ones
    /// that change something (not GET).
    requests: AtomicU64,
    writes: AtomicU64,
    tag_modes: TagModes,
}

struct Session {
    token: SecretString,
    expires_at: DateTime<Utc>,
    renew_at: DateTime<Utc>,
    catalog: Vec<CatalogEntry>,
    project_id: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct CatalogEntry {
    #[serde(rename = "type")]
    service_type: String,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Endpoint {
    interface: String,
    #[serde(default)]
    region_id: Option<String>,
    #[serde(default)]
    region: Option<String>,
    url: String,
}

impl Endpoint {
    fn region(&self) -> &str {
        self.region_id.as_deref().or(self.region.as_deref()).unwrap_or_default()
    }
}

/// A successful response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// One request, described once and sent as often as the retry policy allows.
pub(crate) struct Call<'a> {
    pub service: Service,
    pub method: Method,
    pub path: &'a str,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Value>,
    /// `OpenStack-API-Version` value, e.g. `compute 2.52`.
    pub microversion: Option<&'static str>,
}

impl<'a> Call<'a> {
    pub fn new(service: Service, method: Method, path: &'a str) -> Self {
        Self {
            service,
            method,
            path,
            query: Vec::new(),
            body: None,
            microversion: None,
        }
    }

    pub fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn microversion(mut self, version: &'static str) -> Self {
        self.microversion = Some(version);
        self
    }
}

impl OpenStack {
    /// A client for `config`; authenticates on first use.
    pub fn new(config: CloudConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            // Only configured endpoints are called: a redirect is an answer, not a hop.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.limits.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(config.limits.max_concurrency)
            .user_agent(concat!("orch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| CloudError::Config(format!("cannot build the HTTP client: {error}")))?;
        let mut allowed_hosts: Vec<String> = config.auth_url.host_str().into_iter().map(str::to_owned).collect();
        allowed_hosts.extend(config.allowed_hosts.iter().cloned());
        let region = config.region_name.clone();
        Ok(Self {
            inner: Arc::new(Inner {
                permits: Semaphore::new(config.limits.max_concurrency.max(1)),
                pace: pace(config.limits.requests_per_second),
                config,
                http,
                session: Mutex::new(None),
                refresh: tokio::sync::Mutex::new(()),
                breakers: Mutex::new(HashMap::new()),
                allowed_hosts,
                authentications: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                tag_modes: TagModes::default(),
            }),
            region,
        })
    }

    /// The same client for another region. Fails when the catalog does not know the region,
    /// so that a bad `cloud_region` is refused before any work starts.
    pub async fn in_region(&self, region: &str) -> Result<Self> {
        let session = self.session().await?;
        let known = regions_of(&session.catalog);
        if !known.iter().any(|known| known == region) {
            return Err(CloudError::UnknownRegion {
                region: region.to_owned(),
                known: known.join(", "),
            });
        }
        Ok(Self {
            inner: self.inner.clone(),
            region: region.to_owned(),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Every region in the catalog.
    pub async fn regions(&self) -> Result<Vec<String>> {
        Ok(regions_of(&self.session().await?.catalog))
    }

    /// How many times a token was issued: for tests of caching and renewal.
    pub fn authentications(&self) -> u64 {
        self.inner.authentications.load(Ordering::Relaxed)
    }

    /// How many requests this client (all its clones) sent: for request-economy figures.
    pub fn requests_sent(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// How many of [`Self::requests_sent`] were writes (anything but GET).
    pub fn writes_sent(&self) -> u64 {
        self.inner.writes.load(Ordering::Relaxed)
    }

    pub(crate) fn tag_modes(&self) -> &TagModes {
        &self.inner.tag_modes
    }

    /// The scoped project's id.
    pub async fn project_id(&self) -> Result<String> {
        Ok(self.session().await?.project_id.clone())
    }

    /// Checks that Keystone answers, without issuing a token: for readiness probes, which run
    /// often and must not load the identity service.
    #[tracing::instrument(skip(self))]
    pub async fn ping_identity(&self) -> Result<()> {
        let url = self.inner.config.auth_url.as_str();
        self.check_allowed(url)?;
        let response = self
            .inner
            .http
            .get(url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await;
        let status_label = response
            .as_ref()
            .map_or_else(|_| "error".to_owned(), |r| r.status().as_u16().to_string());
        metrics::counter!("openstack_api_calls_total", "service" => "identity", "method" => "GET", "status" => status_label).increment(1);
        match response {
            Ok(response)
                if response.status().is_success()
                    || response.status().is_redirection()
                    || response.status() == StatusCode::MULTIPLE_CHOICES =>
            {
                Ok(())
            }
            Ok(response) => Err(CloudError::Unavailable {
                service: Service::Identity,
                message: format!("answered {}", response.status()),
                ambiguous: false,
            }),
            Err(_) => Err(CloudError::Unavailable {
                service: Service::Identity,
                message: "cannot be reached".into(),
                ambiguous: false,
            }),
        }
    }

    /// Checks that Keystone answers and the credentials work (a fresh token is issued).
    pub async fn check_identity(&self) -> Result<()> {
        self.authenticate().await.map(|_| ())
    }

    /// The current token, renewed when close to expiry. Concurrent callers share one renewal.
    async fn session(&self) -> Result<Arc<Session>> {
        if let Some(session) = self.current_session() {
            return Ok(session);
        }
        let _guard = self.inner.refresh.lock().await;
        if let Some(session) = self.current_session() {
            return Ok(session);
        }
        self.authenticate().await
    }

    fn current_session(&self) -> Option<Arc<Session>> {
        let session = self.inner.session.lock().expect("session lock").clone()?;
        (Utc::now() < session.renew_at).then_some(session)
    }

    /// Forgets `stale` if it is still the current token (a 401 showed it is no longer valid).
    fn invalidate(&self, stale: &Arc<Session>) {
        let mut current = self.inner.session.lock().expect("session lock");
        if current.as_ref().is_some_and(|session| Arc::ptr_eq(session, stale)) {
            *current = None;
        }
    }

    #[tracing::instrument(skip(self), fields(auth_url = %self.inner.config.auth_url))]
    async fn authenticate(&self) -> Result<Arc<Session>> {
        let config = &self.inner.config;
        let mut url = config.auth_url.clone();
        if !url.path().trim_end_matches('/').ends_with("/v3") {
            url.set_path(&format!("{}/v3", url.path().trim_end_matches('/')));
        }
        let url = format!("{}/auth/tokens", url.as_str().trim_end_matches('/'));
        let body = auth_body(&config.credentials);
        let request = Request {
            service: Service::Identity,
            method: Method::POST,
            url: &url,
            token: None,
            body: Some(&body),
            microversion: None,
            // Keystone refusing a token request changes nothing: it may be sent again.
            idempotent: true,
        };
        let reply = self.with_retries(|| self.attempt(&request)).await?;
        let token = reply
            .headers
            .get("x-subject-token")
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| CloudError::Decode {
                service: Service::Identity,
                message: "no X-Subject-Token header".into(),
            })?;
        let token_body = &reply.body["token"];
        let expires_at: DateTime<Utc> = token_body["expires_at"]
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.with_timezone(&Utc))
            .ok_or_else(|| CloudError::Decode {
                service: Service::Identity,
                message: "token without expires_at".into(),
            })?;
        let catalog: Vec<CatalogEntry> =
            serde_json::from_value(token_body["catalog"].clone()).map_err(|error| CloudError::Decode {
                service: Service::Identity,
                message: format!("catalog: {error}"),
            })?;
        let now = Utc::now();
        // Renew shortly before expiry: five minutes, or half the lifetime of a short token.
        let margin = ((expires_at - now) / 2).min(chrono::Duration::minutes(5));
        let session = Arc::new(Session {
            token: SecretString::from(token.to_owned()),
            expires_at,
            renew_at: expires_at - margin,
            project_id: token_body["project"]["id"].as_str().unwrap_or_default().to_owned(),
            catalog,
        });
        self.inner.authentications.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(expires_at = %session.expires_at, "token issued");
        *self.inner.session.lock().expect("session lock") = Some(session.clone());
        Ok(session)
    }

    /// The base URL of `service` in this client's region and interface, checked against the
    /// allowed hosts.
    fn endpoint(&self, session: &Session, service: Service) -> Result<String> {
        let types = service.catalog_types();
        let interface = &self.inner.config.interface;
        let found = types.iter().find_map(|wanted| {
            session
                .catalog
                .iter()
                .filter(|entry| entry.service_type == *wanted)
                .flat_map(|entry| entry.endpoints.iter())
                .find(|endpoint| endpoint.interface == *interface && endpoint.region() == self.region)
        });
        let Some(endpoint) = found else {
            let known = regions_of(&session.catalog);
            if !known.contains(&self.region) {
                return Err(CloudError::UnknownRegion {
                    region: self.region.clone(),
                    known: known.join(", "),
                });
            }
            return Err(CloudError::NoEndpoint {
                service: service.as_str().into(),
                interface: interface.clone(),
                region: self.region.clone(),
            });
        };
        self.check_allowed(&endpoint.url)?;
        let base = endpoint.url.trim_end_matches('/');
        Ok(match service {
            Service::Network if !base.ends_with("/v2.0") => format!("{base}/v2.0"),
            Service::Image if !base.ends_with("/v2") => format!("{base}/v2"),
            _ => base.to_owned(),
        })
    }

    /// The SSRF guard: only the auth URL's host and the configured allowlist are ever called.
    fn check_allowed(&self, url: &str) -> Result<()> {
        let parsed = url::Url::parse(url).map_err(|_| CloudError::EndpointRefused { url: url.to_owned() })?;
        let allowed = matches!(parsed.scheme(), "http" | "https")
            && parsed.host_str().is_some_and(|host| {
                self.inner
                    .allowed_hosts
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(host))
            });
        if allowed {
            Ok(())
        } else {
            Err(CloudError::EndpointRefused { url: url.to_owned() })
        }
    }

    /// Sends `call` with retries; returns the reply of the first success. A refused token is
    /// renewed once per attempt.
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Reply> {
        self.with_retries(|| async {
            let session = self.session().await.map_err(Failure::Fail)?;
            match self.attempt_call(&call, &session).await {
                Err(Failure::Reauthenticate(_)) => {
                    self.invalidate(&session);
                    let session = self.session().await.map_err(Failure::Fail)?;
                    self.attempt_call(&call, &session)
                        .await
                        .map_err(|failure| match failure {
                            Failure::Reauthenticate(error) => Failure::Fail(error),
                            other => other,
                        })
                }
                outcome => outcome,
            }
        })
        .await
    }

    async fn attempt_call(&self, call: &Call<'_>, session: &Session) -> Result<Reply, Failure> {
        let base = self.endpoint(session, call.service).map_err(Failure::Fail)?;
        let mut url = format!("{base}{}", call.path);
        if !call.query.is_empty() {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            url = format!("{url}?{query}");
        }
        let request = Request {
            service: call.service,
            method: call.method.clone(),
            url: &url,
            token: Some(&session.token),
            body: call.body.as_ref(),
            microversion: call.microversion,
            idempotent: call.method != Method::POST,
        };
        self.attempt(&request).await
    }

    /// Runs `attempt` again while it fails in a way worth another try, up to `max_retries`
    /// times: after the cloud's `Retry-After` when it gave one, else after exponential backoff
    /// with jitter.
    async fn with_retries<F, Fut>(&self, attempt: F) -> Result<Reply>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Reply, Failure>>,
    {
        let limits = &self.inner.config.limits;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(limits.backoff_base)
            .with_max_delay(limits.backoff_max)
            .with_max_times(limits.max_retries as usize)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(Failure::is_retry)
            .adjust(|failure, backoff| backoff.map(|wait| failure.retry_after().unwrap_or(wait)))
            .notify(|failure, wait| {
                let (error, wait_ms) = (failure.error(), wait.as_millis() as u64);
                tracing::warn!(error = %error, wait_ms, "cloud call failed; retrying");
            })
            .await
            .map_err(Failure::into_error)
    }
}

/// Requests evenly spaced at the configured rate (no burst), shared by all clones.
type Pace = governor::DefaultDirectRateLimiter;

fn pace(requests_per_second: f64) -> Option<Pace> {
    if requests_per_second <= 0.0 {
        return None;
    }
    let period = Duration::from_secs_f64(1.0 / requests_per_second);
    governor::Quota::with_period(period).map(governor::RateLimiter::direct)
}

/// An answer's body as `T`; a body that is not is the service's fault, said as such.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(service: Service, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|error| CloudError::Decode {
        service,
        message: error.to_string(),
    })
}

/// The member `key` of an answer's body.
pub(crate) fn field(reply: Reply, key: &str) -> Value {
    match reply.body {
        Value::Object(mut map) => map.remove(key).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn regions_of(catalog: &[CatalogEntry]) -> Vec<String> {
    let mut regions: Vec<String> = catalog
        .iter()
        .flat_map(|entry| entry.endpoints.iter().map(|e| e.region().to_owned()))
        .filter(|r| !r.is_empty())
        .collect();
    regions.sort();
    regions.dedup();
    regions
}

/// The body of a Keystone v3 token request for `credentials` (it holds the secret).
pub fn auth_body(credentials: &Credentials) -> Value {
    match credentials {
        Credentials::Password {
            username,
            user_id,
            user_domain_name,
            user_domain_id,
            password,
            project_name,
            project_id,
            project_domain_name,
            project_domain_id,
        } => {
            let mut user = json!({"password": password.expose_secret()});
            match (user_id, username) {
                (Some(id), _) => user["id"] = json!(id),
                (None, name) => {
                    user["name"] = json!(name);
                    user["domain"] = domain(user_domain_id, user_domain_name);
                }
            }
            let project = match (project_id, project_name) {
                (Some(id), _) => json!({"id": id}),
                (None, name) => json!({"name": name, "domain": domain(project_domain_id, project_domain_name)}),
            };
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": user}}, "scope": {"project": project}}})
        }
        Credentials::ApplicationCredential {
            id,
            name,
            username,
            user_domain_name,
            secret,
        } => {
            let mut credential = json!({"secret": secret.expose_secret()});
            match (id, name) {
                (Some(id), _) => credential["id"] = json!(id),
                (None, name) => {
                    credential["name"] = json!(name);
                    credential["user"] = json!({"name": username, "domain": {"name": user_domain_name.clone().unwrap_or_else(|| "Default".into())}});
                }
            }
            json!({"auth": {"identity": {"methods": ["application_credential"], "application_credential": credential}}})
        }
    }
}

fn domain(id: &Option<String>, name: &Option<String>) -> Value {
    match (id, name) {
        (Some(id), _) => json!({"id": id}),
        (None, Some(name)) => json!({"name": name}),
        (None, None) => json!({"name": "Default"}),
    }
}
