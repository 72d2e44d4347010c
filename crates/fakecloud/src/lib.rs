//! fakecloud: an OpenStack-compatible cloud simulator for orch's tests, benchmarks and local
//! quick start. It speaks the real request and response shapes of Keystone v3, Nova v2.1,
//! Neutron v2.0, Cinder v3 and Glance v2 for the calls orch (and `python-openstackclient`)
//! use, behaves like a cloud (boot delays, fixed IPs from subnet pools, quotas, 404/409), and
//! injects faults on request: errors, rate limits, outages, lost responses.
//!
//! # Layout
//! - this file: [`FakeCloud`] (start, stop, URL), the fault and statistics middleware, the
//!   admin API under `/_fake`.
//! - [`config`]: [`FakeConfig`], all settings.
//! - [`world`]: the simulated resources and their life (status transitions over time).
//! - [`identity`], [`compute`], [`network`], [`volume`], [`image`]: one module per service.
//!
//! Every service lives under its own path prefix on one port; the Keystone catalog points at
//! them: `/identity/v3`, `/compute/v2.1`, `/networking`, `/volume/v3/{project}`, `/image`.

// Functions stay short enough to read at once (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]
// Handlers answer failures with ready-made responses; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod compute;
pub mod config;
pub mod identity;
pub mod image;
pub mod network;
pub mod volume;
pub mod world;

pub use config::{FakeConfig, TagsInCreate};
use world::World;

/// The services fakecloud simulates, by the names used in settings and statistics.
pub const SERVICES: [&str; 5] = ["identity", "compute", "network", "volume", "image"];

/// Everything the handlers share.
pub struct Cloud {
    pub config: RwLock<FakeConfig>,
    pub world: Mutex<World>,
    stats: Mutex<BTreeMap<(String, String, u16), u64>>,
    limiter: Mutex<TokenBucket>,
    outages: Mutex<BTreeMap<String, Instant>>,
    /// The externally visible base URL, e.g. `http://127.0.0.1:5000`.
    pub base_url: String,
}

pub type Shared = Arc<Cloud>;

impl Cloud {
    pub fn config(&self) -> FakeConfig {
        self.config.read().expect("config lock").clone()
    }

    /// The world with its clocks advanced to now.
    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        let config = self.config();
        let mut world = self.world.lock().expect("world lock");
        world.advance(&config);
        world
    }
}

/// A running fakecloud. Dropping it stops the server.
pub struct FakeCloud {
    pub url: String,
    pub address: SocketAddr,
    pub cloud: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// An outage scheduled at start: `service` answers 503 from `start_ms` for `duration_ms`.
#[derive(Debug, Clone)]
pub struct PlannedOutage {
    pub service: String,
    pub start_ms: u64,
    pub duration_ms: u64,
}

impl FakeCloud {
    /// Starts on `address` (port 0 picks one).
    pub async fn start(address: SocketAddr, config: FakeConfig) -> std::io::Result<Self> {
        Self::start_with(address, config, Vec::new()).await
    }

    pub async fn start_with(
        address: SocketAddr,
        config: FakeConfig,
        outages: Vec<PlannedOutage>,
    ) -> std::io::Result<Self> {
        config.validate().map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let url = format!("http://{address}");
        let cloud = Arc::new(Cloud {
            world: Mutex::new(World::new()),
            limiter: Mutex::new(TokenBucket::new(config.rate_limit_rps)),
            config: RwLock::new(config),
            stats: Mutex::new(BTreeMap::new()),
            outages: Mutex::new(BTreeMap::new()),
            base_url: url.clone(),
        });
        for outage in outages {
            let cloud = cloud.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(outage.start_ms)).await;
                cloud.outages.lock().expect("outages lock").insert(
                    outage.service,
                    Instant::now() + Duration::from_millis(outage.duration_ms),
                );
            });
        }
        let app = router(cloud.clone());
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = signal.await;
                })
                .await;
        });
        Ok(Self {
            url,
            address,
            cloud,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// Keystone's URL, as `auth_url` in `clouds.yaml`.
    pub fn auth_url(&self) -> String {
        format!("{}/identity/v3", self.url)
    }

    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn router(cloud: Shared) -> Router {
    let services = Router::new()
        .merge(identity::routes())
        .merge(compute::routes())
        .merge(network::routes())
        .merge(volume::routes())
        .merge(image::routes())
        .layer(from_fn_with_state(cloud.clone(), faults));
    let admin = Router::new()
        .route("/_fake/config", get(get_config).put(put_config))
        .route("/_fake/inventory", get(inventory))
        .route("/_fake/stats", get(stats).delete(reset_stats))
        .route("/_fake/outage", post(start_outage))
        .route("/_fake/tokens/revoke", post(revoke_tokens));
    services.merge(admin).with_state(cloud)
}

/// The service a path belongs to.
fn service_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    match first {
        "identity" => "identity",
        "compute" => "compute",
        "networking" => "network",
        "volume" => "volume",
        "image" => "image",
        _ => "unknown",
    }
}

/// Counts every request, and injects rate limits, outages and random errors before the
/// service sees the request.
async fn faults(State(cloud): State<Shared>, request: Request, next: Next) -> Response {
    let service = service_of(request.uri().path());
    let method = request.method().clone();
    // A refused request never reaches the service: nothing it asked for happens.
    let response = match injected_fault(&cloud, service) {
        Some(refused) => refused,
        None => next.run(request).await,
    };
    let key = (service.to_owned(), method.to_string(), response.status().as_u16());
    *cloud.stats.lock().expect("stats lock").entry(key).or_default() += 1;
    response
}

fn injected_fault(cloud: &Cloud, service: &'static str) -> Option<Response> {
    let config = cloud.config();
    if config.rate_limit_rps > 0.0 {
        let mut limiter = cloud.limiter.lock().expect("limiter lock");
        limiter.set_rate(config.rate_limit_rps);
        if let Err(wait) = limiter.take() {
            let mut response = error(
                service,
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit exceeded; retry later.",
            );
            let seconds = wait.as_secs() + 1;
            response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
            return Some(response);
        }
    }
    let outage_until = cloud.outages.lock().expect("outages lock").get(service).copied();
    if let Some(until) = outage_until {
        if Instant::now() < until {
            let mut response = error(service, StatusCode::SERVICE_UNAVAILABLE, "The service is unavailable.");
            let seconds = until.saturating_duration_since(Instant::now()).as_secs() + 1;
            response.headers_mut().insert("retry-after", HeaderValue::from(seconds));
            return Some(response);
        }
    }
    let rate = config.error_rate_for(service);
    if rate > 0.0 && rand::random::<f64>() < rate {
        let status = if rand::random::<bool>() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Some(error(service, status, "An injected fault occurred."));
    }
    None
}

/// An error body in the shape each service really uses.
pub fn error(service: &str, status: StatusCode, message: &str) -> Response {
    let code = status.as_u16();
    let body = match service {
        "identity" => {
            json!({"error": {"code": code, "message": message, "title": status.canonical_reason().unwrap_or("Error")}})
        }
        "network" => json!({"NeutronError": {"type": neutron_error_type(status), "message": message, "detail": ""}}),
        "image" => {
            return (
                status,
                format!("{code} {}\n\n{message}\n\n", status.canonical_reason().unwrap_or("")),
            )
                .into_response();
        }
        _ => {
            let key = match status {
                StatusCode::NOT_FOUND => "itemNotFound",
                StatusCode::BAD_REQUEST => "badRequest",
                StatusCode::CONFLICT => "conflictingRequest",
                StatusCode::FORBIDDEN => "forbidden",
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => "overLimit",
                StatusCode::SERVICE_UNAVAILABLE => "serviceUnavailable",
                _ if service == "volume" => "computeFault",
                _ => "computeFault",
            };
            json!({ key: {"code": code, "message": message} })
        }
    };
    (status, Json(body)).into_response()
}

fn neutron_error_type(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::TOO_MANY_REQUESTS => "OverLimit",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        _ => "HTTPInternalServerError",
    }
}

/// A token bucket refilled at `rate` per second, holding at most one second's worth.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            tokens: rate.max(1.0),
            updated: Instant::now(),
        }
    }

    fn set_rate(&mut self, rate: f64) {
        if (rate - self.rate).abs() > f64::EPSILON {
            *self = Self::new(rate);
        }
    }

    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Sleeps for the configured create latency and says whether this create's response is to
/// be lost (the resource is made, the client sees a 503).
pub async fn create_delay(cloud: &Cloud) -> bool {
    let (latency, lose) = {
        let mut config = cloud.config.write().expect("config lock");
        let lose = config.lose_create_responses > 0;
        if lose {
            config.lose_create_responses -= 1;
        }
        (config.create_latency_ms, lose)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    lose
}

async fn get_config(State(cloud): State<Shared>) -> Json<FakeConfig> {
    Json(cloud.config())
}

async fn put_config(State(cloud): State<Shared>, Json(patch): Json<Value>) -> Response {
    let merged = cloud.config().merged(&patch);
    match merged {
        Ok(config) => {
            *cloud.config.write().expect("config lock") = config.clone();
            Json(config).into_response()
        }
        Err(message) => (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response(),
    }
}

async fn inventory(State(cloud): State<Shared>) -> Json<Value> {
    let world = cloud.world();
    Json(world.inventory(&cloud.base_url))
}

async fn stats(State(cloud): State<Shared>) -> Json<Value> {
    let stats = cloud.stats.lock().expect("stats lock");
    let mut total = 0;
    let requests: Vec<Value> = stats
        .iter()
        .map(|((service, method, status), count)| {
            total += count;
            json!({"service": service, "method": method, "status": status, "count": count})
        })
        .collect();
    Json(json!({"total": total, "requests": requests}))
}

async fn reset_stats(State(cloud): State<Shared>) -> StatusCode {
    cloud.stats.lock().expect("stats lock").clear();
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OutageRequest {
    service: String,
    duration_ms: u64,
}

async fn start_outage(State(cloud): State<Shared>, Json(request): Json<OutageRequest>) -> Response {
    if !SERVICES.contains(&request.service.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("unknown service; use one of {}", SERVICES.join(", "))})),
        )
            .into_response();
    }
    let until = Instant::now() + Duration::from_millis(request.duration_ms);
    cloud
        .outages
        .lock()
        .expect("outages lock")
        .insert(request.service, until);
    StatusCode::NO_CONTENT.into_response()
}

/// Revokes every token, as an expiry or a Keystone restart would.
async fn revoke_tokens(State(cloud): State<Shared>) -> StatusCode {
    cloud.world.lock().expect("world lock").tokens.clear();
    StatusCode::NO_CONTENT
}

/// Answers 401 unless the request carries a valid token.
pub fn authorize(cloud: &Cloud, service: &str, headers: &axum::http::HeaderMap) -> Result<(), Response> {
    let token = headers.get("x-auth-token").and_then(|value| value.to_str().ok());
    let valid = token.is_some_and(|token| cloud.world.lock().expect("world lock").token_valid(token));
    if valid {
        Ok(())
    } else {
        Err(error(
            service,
            StatusCode::UNAUTHORIZED,
            "The request you have made requires authentication.",
        ))
    }
}

/// A service, as named in its error bodies.
pub trait ServiceName: Send + Sync {
    const NAME: &'static str;
}

/// The services, as type parameters of [`Authorized`].
pub mod service {
    macro_rules! services {
        ($($service:ident => $name:literal),*) => {$(
            pub enum $service {}
            impl super::ServiceName for $service {
                const NAME: &'static str = $name;
            }
        )*};
    }

    services!(Compute => "compute", Network => "network", Volume => "volume", Image => "image", Identity => "identity");
}

/// Extracted by every handler that needs a valid token: a request without one is answered
/// 401 in the shape of service `S`, before the handler runs.
pub struct Authorized<S>(std::marker::PhantomData<S>);

impl<S: ServiceName> axum::extract::FromRequestParts<Shared> for Authorized<S> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, cloud: &Shared) -> Result<Self, Response> {
        authorize(cloud, S::NAME, &parts.headers).map(|()| Self(std::marker::PhantomData))
    }
}

/// `GET` and `HEAD` are reads; everything else changes state.
pub fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}
