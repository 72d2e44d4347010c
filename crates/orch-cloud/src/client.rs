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
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::config::{CloudConfig, Credentials};
use crate::error::{cloud_message, CloudError, Result, Service};
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
    /// The earliest time the next request may start.
    pace: tokio::sync::Mutex<Instant>,
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

/// Consecutive failures of one endpoint, and whether its circuit is open.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// When the one request let through an open circuit (the probe) was sent.
    probe_sent: Option<Instant>,
}

impl Breaker {
    /// Whether a request may go now. An open circuit lets one probe through after its
    /// cooldown; a probe that never reports (its caller was dropped mid-request) counts as
    /// lost after `probe_timeout`, and another is let through, so the circuit cannot stay
    /// open for good.
    fn allows(&mut self, now: Instant, probe_timeout: Duration) -> bool {
        match self.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if self.probe_sent.is_some_and(|sent| now < sent + probe_timeout) => false,
            Some(_) => {
                self.probe_sent = Some(now);
                true
            }
        }
    }

    /// Takes an outcome; returns whether the circuit opened (`Some(true)`) or closed
    /// (`Some(false)`) because of it.
    fn record(&mut self, healthy: bool, now: Instant, threshold: u32, cooldown: Duration) -> Option<bool> {
        if healthy {
            let was_open = self.open_until.is_some();
            *self = Self::default();
            return was_open.then_some(false);
        }
        self.failures += 1;
        let probing = self.probe_sent.is_some();
        if !probing && self.failures < threshold {
            return None;
        }
        let opened = self.open_until.is_none() || probing;
        self.open_until = Some(now + cooldown);
        self.probe_sent = None;
        opened.then_some(true)
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

/// What one attempt came to.
enum Attempt {
    Done(Reply),
    Retry { after: Option<Duration>, error: CloudError },
    Reauthenticate(CloudError),
    Fail(CloudError),
}

impl OpenStack {
    /// A client for `config`; authenticates on first use.
    pub fn new(config: CloudConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
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
                pace: tokio::sync::Mutex::new(Instant::now()),
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
                service: "identity",
                message: format!("answered {}", response.status()),
                ambiguous: false,
            }),
            Err(_) => Err(CloudError::Unavailable {
                service: "identity",
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
        let mut attempt = 0;
        let reply = loop {
            let outcome = self
                .attempt("identity", Method::POST, &url, None, Some(&body), None, true)
                .await;
            match outcome {
                Attempt::Done(reply) => break reply,
                Attempt::Retry { after, error } if attempt < config.limits.max_retries => {
                    attempt += 1;
                    tracing::warn!(error = %error, attempt, "authentication failed; retrying");
                    tokio::time::sleep(after.unwrap_or_else(|| self.backoff(attempt))).await;
                }
                Attempt::Retry { error, .. } | Attempt::Fail(error) | Attempt::Reauthenticate(error) => {
                    return Err(error)
                }
            }
        };
        let token = reply
            .headers
            .get("x-subject-token")
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| CloudError::Decode {
                service: "identity",
                message: "no X-Subject-Token header".into(),
            })?;
        let token_body = &reply.body["token"];
        let expires_at: DateTime<Utc> = token_body["expires_at"]
            .as_str()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.with_timezone(&Utc))
            .ok_or_else(|| CloudError::Decode {
                service: "identity",
                message: "token without expires_at".into(),
            })?;
        let catalog: Vec<CatalogEntry> =
            serde_json::from_value(token_body["catalog"].clone()).map_err(|error| CloudError::Decode {
                service: "identity",
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
        let types: &[&str] = match service {
            "volume" => &["block-storage", "volumev3", "volume"],
            other => std::slice::from_ref(match other {
                "compute" => &"compute",
                "network" => &"network",
                "image" => &"image",
                _ => &"identity",
            }),
        };
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
                service: service.into(),
                interface: interface.clone(),
                region: self.region.clone(),
            });
        };
        self.check_allowed(&endpoint.url)?;
        let base = endpoint.url.trim_end_matches('/');
        Ok(match service {
            "network" if !base.ends_with("/v2.0") => format!("{base}/v2.0"),
            "image" if !base.ends_with("/v2") => format!("{base}/v2"),
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

    fn backoff(&self, attempt: u32) -> Duration {
        let limits = &self.inner.config.limits;
        let ceiling = limits
            .backoff_base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(limits.backoff_max);
        ceiling.mul_f64(rand::random::<f64>().max(0.1))
    }

    /// Sends `call` with retries; returns the reply of the first success.
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Reply> {
        let idempotent = call.method != Method::POST;
        let limits = &self.inner.config.limits;
        let mut attempt = 0;
        let mut reauthenticated = false;
        loop {
            let session = self.session().await?;
            let base = self.endpoint(&session, call.service)?;
            let mut url = format!("{base}{}", call.path);
            if !call.query.is_empty() {
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())))
                    .finish();
                url = format!("{url}?{query}");
            }
            let outcome = self
                .attempt(
                    call.service,
                    call.method.clone(),
                    &url,
                    Some(&session),
                    call.body.as_ref(),
                    call.microversion,
                    idempotent,
                )
                .await;
            match outcome {
                Attempt::Done(reply) => return Ok(reply),
                Attempt::Fail(error) => return Err(error),
                Attempt::Reauthenticate(error) => {
                    if reauthenticated {
                        return Err(error);
                    }
                    reauthenticated = true;
                    self.invalidate(&session);
                }
                Attempt::Retry { after, error } => {
                    attempt += 1;
                    if attempt > limits.max_retries {
                        return Err(error);
                    }
                    let wait = after.unwrap_or_else(|| self.backoff(attempt));
                    tracing::warn!(service = call.service, method = %call.method, error = %error, attempt, wait_ms = wait.as_millis() as u64, "cloud call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Waits for a concurrency permit and for the request pace.
    async fn admit(&self) -> tokio::sync::SemaphorePermit<'_> {
        let permit = self.inner.permits.acquire().await.expect("semaphore is never closed");
        let rate = self.inner.config.limits.requests_per_second;
        if rate > 0.0 {
            let start = {
                let mut next = self.inner.pace.lock().await;
                let start = (*next).max(Instant::now());
                *next = start + Duration::from_secs_f64(1.0 / rate);
                start
            };
            tokio::time::sleep_until(start.into()).await;
        }
        permit
    }

    /// Whether the endpoint's circuit lets a request through now.
    fn breaker_allows(&self, key: &str) -> bool {
        let limits = &self.inner.config.limits;
        let mut breakers = self.inner.breakers.lock().expect("breaker lock");
        let breaker = breakers.entry(key.to_owned()).or_default();
        breaker.allows(Instant::now(), limits.request_timeout)
    }

    fn breaker_record(&self, key: &str, healthy: bool) {
        let limits = &self.inner.config.limits;
        let mut breakers = self.inner.breakers.lock().expect("breaker lock");
        let breaker = breakers.entry(key.to_owned()).or_default();
        match breaker.record(
            healthy,
            Instant::now(),
            limits.breaker_threshold,
            limits.breaker_cooldown,
        ) {
            Some(true) => tracing::warn!(endpoint = key, failures = breaker.failures, "circuit opened"),
            Some(false) => tracing::info!(endpoint = key, "circuit closed"),
            None => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        service: Service,
        method: Method,
        url: &str,
        session: Option<&Arc<Session>>,
        body: Option<&Value>,
        microversion: Option<&'static str>,
        idempotent: bool,
    ) -> Attempt {
        if let Err(error) = self.check_allowed(url) {
            return Attempt::Fail(error);
        }
        let breaker_key = endpoint_key(url, service);
        if !self.breaker_allows(&breaker_key) {
            return Attempt::Fail(CloudError::Unavailable {
                service,
                message: "the circuit is open after repeated failures; failing fast until a probe succeeds".into(),
                ambiguous: false,
            });
        }
        let _permit = self.admit().await;
        let mut request = self
            .inner
            .http
            .request(method.clone(), url)
            .header("accept", "application/json");
        if let Some(session) = session {
            request = request.header("x-auth-token", session.token.expose_secret());
        }
        if let Some(version) = microversion {
            request = request.header("openstack-api-version", version);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        if method != Method::GET {
            self.inner.writes.fetch_add(1, Ordering::Relaxed);
        }
        let result = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                response.text().await.map(|text| (status, headers, text))
            }
            Err(error) => Err(error),
        };
        let elapsed = started.elapsed().as_secs_f64();
        let status_label = result
            .as_ref()
            .map_or_else(|_| "error".to_owned(), |(status, _, _)| status.as_u16().to_string());
        metrics::counter!("openstack_api_calls_total", "service" => service, "method" => method.to_string(), "status" => status_label).increment(1);
        metrics::histogram!("openstack_api_call_duration_seconds", "service" => service).record(elapsed);

        let (status, headers, text) = match result {
            Ok(parts) => parts,
            Err(error) => {
                self.breaker_record(&breaker_key, false);
                // A refused connection never reached the cloud; anything later may have.
                let unsent = error.is_connect();
                let message = if error.is_timeout() {
                    "the request timed out".to_owned()
                } else {
                    "the connection failed".to_owned()
                };
                let error = CloudError::Unavailable {
                    service,
                    message,
                    ambiguous: !unsent && !idempotent,
                };
                return if unsent || idempotent {
                    Attempt::Retry { after: None, error }
                } else {
                    Attempt::Fail(error)
                };
            }
        };
        let healthy = !(status.is_server_error());
        self.breaker_record(&breaker_key, healthy);
        if status.is_success() {
            let body = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            return Attempt::Done(Reply { status, headers, body });
        }
        let message = cloud_message(&text);
        let retry_after = headers
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        match status {
            StatusCode::UNAUTHORIZED if session.is_some() => {
                Attempt::Reauthenticate(CloudError::Unauthorized { service, message })
            }
            StatusCode::UNAUTHORIZED => Attempt::Fail(CloudError::Unauthorized { service, message }),
            StatusCode::NOT_FOUND => Attempt::Fail(CloudError::NotFound { service, message }),
            StatusCode::CONFLICT if message.contains("Quota exceeded") || text.contains("OverQuota") => {
                Attempt::Fail(CloudError::QuotaExceeded { service, message })
            }
            StatusCode::CONFLICT => Attempt::Fail(CloudError::Conflict { service, message }),
            StatusCode::FORBIDDEN if message.to_ascii_lowercase().contains("quota") => {
                Attempt::Fail(CloudError::QuotaExceeded { service, message })
            }
            StatusCode::FORBIDDEN => Attempt::Fail(CloudError::Forbidden { service, message }),
            StatusCode::PAYLOAD_TOO_LARGE
                if text.contains("overLimit") || message.contains("Limit") || message.contains("quota") =>
            {
                Attempt::Fail(CloudError::QuotaExceeded { service, message })
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE if retry_after.is_some() => {
                let limit = self.inner.config.limits.max_retry_after;
                let wait = retry_after.expect("checked").min(limit);
                // The cloud refused the request outright, so even a create may be sent again.
                Attempt::Retry {
                    after: Some(wait),
                    error: CloudError::Unavailable {
                        service,
                        message,
                        ambiguous: false,
                    },
                }
            }
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                after: None,
                error: CloudError::Unavailable {
                    service,
                    message,
                    ambiguous: false,
                },
            },
            status if status.is_server_error() => {
                let error = CloudError::Unavailable {
                    service,
                    message,
                    ambiguous: !idempotent,
                };
                if idempotent {
                    Attempt::Retry { after: None, error }
                } else {
                    Attempt::Fail(error)
                }
            }
            _ => Attempt::Fail(CloudError::BadRequest { service, message }),
        }
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

/// Breakers are per service endpoint: scheme, host, port and service.
fn endpoint_key(url: &str, service: Service) -> String {
    let parsed = url::Url::parse(url).ok();
    let origin = parsed.map(|url| url.origin().ascii_serialization()).unwrap_or_default();
    format!("{service}@{origin}")
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

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(10);
    const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

    fn opened(now: Instant) -> Breaker {
        let mut breaker = Breaker::default();
        for _ in 0..4 {
            assert_eq!(breaker.record(false, now, 5, COOLDOWN), None);
        }
        assert_eq!(breaker.record(false, now, 5, COOLDOWN), Some(true));
        breaker
    }

    #[test]
    fn a_circuit_opens_after_the_threshold_and_lets_one_probe_through_after_the_cooldown() {
        let now = Instant::now();
        let mut breaker = opened(now);
        assert!(!breaker.allows(now + Duration::from_secs(1), PROBE_TIMEOUT));
        let later = now + COOLDOWN;
        assert!(breaker.allows(later, PROBE_TIMEOUT), "the probe");
        assert!(!breaker.allows(later, PROBE_TIMEOUT), "only one");
        assert_eq!(
            breaker.record(true, later, 5, COOLDOWN),
            Some(false),
            "a healthy probe closes it"
        );
        assert!(breaker.allows(later, PROBE_TIMEOUT));
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_again() {
        let now = Instant::now();
        let mut breaker = opened(now);
        let later = now + COOLDOWN;
        assert!(breaker.allows(later, PROBE_TIMEOUT));
        assert_eq!(breaker.record(false, later, 5, COOLDOWN), Some(true));
        assert!(!breaker.allows(later + Duration::from_secs(1), PROBE_TIMEOUT));
        assert!(breaker.allows(later + COOLDOWN, PROBE_TIMEOUT), "the next probe");
    }

    #[test]
    fn a_probe_that_never_reports_does_not_keep_the_circuit_open_for_good() {
        let now = Instant::now();
        let mut breaker = opened(now);
        let probe = now + COOLDOWN;
        assert!(breaker.allows(probe, PROBE_TIMEOUT));
        // Its caller was dropped: no record ever comes.
        assert!(!breaker.allows(probe + Duration::from_secs(30), PROBE_TIMEOUT));
        assert!(
            breaker.allows(probe + PROBE_TIMEOUT, PROBE_TIMEOUT),
            "after the request timeout the probe counts as lost"
        );
    }
}
