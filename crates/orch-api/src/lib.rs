//! orch's HTTP API.
//!
//! # Layout
//! - this file: [`ApiConfig`], [`AppState`], [`router`] (routes, middleware order) and [`serve`]
//!   (graceful shutdown).
//! - [`routes`]: handlers for deployments, templates, health, metrics; each is also an
//!   OpenAPI operation, so `/openapi.json` is generated from the routes that exist.
//! - [`auth`]: API keys and scopes, the IP allowlist, the per-key rate limit.
//! - [`request`]: request id, access log, latency metric, body extractor.
//! - [`error`]: [`ApiError`] and its problem+json rendering.
//! - [`views`]: response bodies.
//!
//! Handlers never talk to a cloud: operations are recorded in the store's outbox and carried
//! out by the workflow layer.

// Functions stay short enough to read at once (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use ipnet::IpNet;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use orch_store::Store;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::Level;

pub mod auth;
pub mod error;
pub mod request;
pub mod routes;
pub mod server;
pub mod tls;
pub mod views;

pub use auth::{ApiKeys, Scope};
pub use error::ApiError;

/// Failed authentications an address may make in a minute before it waits, by default.
pub const AUTH_FAILURES_PER_MINUTE: NonZeroU32 = NonZeroU32::new(30).expect("non-zero");

/// What the API needs to know, already validated by the binary's configuration loader.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub api_keys: ApiKeys,
    pub rate_limit_per_minute: NonZeroU32,
    /// Failed authentications an address may make in a minute; then everything it sends is
    /// answered 429 until the minute is over.
    pub auth_failures_per_minute: NonZeroU32,
    /// Allowed browser origins; empty means no cross-origin access, `*` means any.
    pub cors_origins: Vec<String>,
    /// When not empty, only these networks may connect.
    pub ip_allowlist: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` names the client (for the allowlist and the limit on
    /// failed authentications); the header is ignored from anyone else.
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    /// Whether `/metrics` needs an API key.
    pub metrics_require_auth: bool,
    /// The region used when a request names none.
    pub default_region: String,
    /// The container hosts a deployment of services may name; the first is the default.
    pub container_hosts: Vec<String>,
    /// A request's headers must have arrived within this (an idle keep-alive connection is
    /// closed after it too).
    pub header_timeout: Duration,
    /// A request, its body included, must be answered within this (408 otherwise).
    pub request_timeout: Duration,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
    /// When set, the API is served over TLS only.
    pub tls: Option<tls::TlsConfig>,
    /// How long a resource stays orphaned before `GET /orphans` lists it and a cleanup may
    /// remove it.
    pub orphan_grace_seconds: u64,
}

impl ApiConfig {
    /// A configuration with the documented defaults and the given keys.
    pub fn with_keys(api_keys: ApiKeys) -> Self {
        Self {
            api_keys,
            rate_limit_per_minute: NonZeroU32::new(100).expect("non-zero"),
            auth_failures_per_minute: AUTH_FAILURES_PER_MINUTE,
            cors_origins: Vec::new(),
            ip_allowlist: Vec::new(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024 * 1024,
            metrics_require_auth: false,
            default_region: "RegionOne".into(),
            container_hosts: vec!["local".into()],
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            tls: None,
            orphan_grace_seconds: 600,
        }
    }
}

/// A dependency check for `/health/ready`: `Ok` or a short reason that is safe to show.
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What the cloud says of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Region {
    Known,
    /// Not in the catalog; `why` names the regions it knows, and is shown to the client.
    Unknown {
        why: String,
    },
    /// The cloud could not be asked; `why` is logged, not shown.
    Unreachable {
        why: String,
    },
}

/// Asks the cloud whether it knows a region.
pub type RegionCheck = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Region> + Send>> + Send + Sync>;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ApiConfig>,
    pub rate_limiter: auth::KeyRateLimiter,
    /// Failed authentications per client address.
    pub auth_failures: auth::FailedAuthLimiter,
    pub metrics: PrometheusHandle,
    /// Checks beyond the database (Temporal, the cloud), by name.
    pub readiness_checks: Arc<Vec<(String, ReadinessCheck)>>,
    /// When a cloud is configured: refuses unknown regions at request time.
    pub region_check: Option<RegionCheck>,
}

impl AppState {
    pub fn new(store: Store, config: ApiConfig) -> Self {
        Self {
            rate_limiter: auth::KeyRateLimiter::per_minute(config.rate_limit_per_minute),
            auth_failures: auth::FailedAuthLimiter::per_minute(config.auth_failures_per_minute),
            store,
            config: Arc::new(config),
            metrics: metrics_handle(),
            readiness_checks: Arc::new(Vec::new()),
            region_check: None,
        }
    }
}

/// What a metric is, for its `# TYPE` and help text.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    /// Every histogram orch records is in seconds.
    Histogram,
}

/// The help text of every metric orch records, whichever crate records it: one list, so
/// that a scrape passes `promtool check metrics` and the names are documented together.
const METRICS: &[(&str, Kind, &str)] = &[
    (
        "api_request_duration_seconds",
        Kind::Histogram,
        "API requests by route template, method and status.",
    ),
    (
        "database_query_duration_seconds",
        Kind::Histogram,
        "Database queries by operation.",
    ),
    (
        "openstack_api_call_duration_seconds",
        Kind::Histogram,
        "OpenStack API calls by service.",
    ),
    (
        "openstack_api_calls_total",
        Kind::Counter,
        "OpenStack API calls by service, method and status.",
    ),
    (
        "engine_request_duration_seconds",
        Kind::Histogram,
        "Docker Engine requests.",
    ),
    (
        "engine_requests_total",
        Kind::Counter,
        "Docker Engine requests, by outcome.",
    ),
    (
        "workflow_execution_duration_seconds",
        Kind::Histogram,
        "Operations from their start to their end, by workflow.",
    ),
    (
        "deployment_duration_seconds",
        Kind::Histogram,
        "Deployments from their request to the end of their create, by the status they ended in.",
    ),
    (
        "activity_failures_total",
        Kind::Counter,
        "Failed activity attempts by activity and kind of failure.",
    ),
    (
        "container_drift_repairs_total",
        Kind::Counter,
        "Container instances found lost and asked to be repaired.",
    ),
    (
        "api_auth_blocked_total",
        Kind::Counter,
        "Requests refused because their address failed to authenticate too often.",
    ),
    (
        "api_connections_saturated_total",
        Kind::Counter,
        "Times the API reached its connection cap.",
    ),
    (
        "api_keys_expired_refused_total",
        Kind::Counter,
        "Requests refused for an expired API key.",
    ),
    (
        "orch_deployments",
        Kind::Gauge,
        "Deployments by status, counted from the database at each scrape.",
    ),
    (
        "orch_oldest_pending_operation_seconds",
        Kind::Gauge,
        "Age of the oldest accepted operation no workflow has claimed yet (the relay's lag); 0 when none waits.",
    ),
    (
        "orch_oldest_running_operation_seconds",
        Kind::Gauge,
        "Age of the oldest running operation; 0 when none runs.",
    ),
    (
        "orch_relay_leader",
        Kind::Gauge,
        "1 in the orch serve replica that relays accepted operations to Temporal, 0 in those standing by.",
    ),
    (
        "openstack_circuit_open",
        Kind::Gauge,
        "1 while the circuit of an OpenStack endpoint is open (its calls fail fast), else 0.",
    ),
    (
        "orch_orphaned_resources",
        Kind::Gauge,
        "Resources with orch's mark that no deployment holds, past their grace period.",
    ),
];

fn describe_metrics() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, metrics::Unit::Seconds, help),
        }
    }
}

/// Buckets of what takes seconds to hours: deployments and workflows.
const LONG_BUCKETS: [f64; 13] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// The process-wide Prometheus recorder. Every crate records through the `metrics` facade;
/// this renders all of it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
                .expect("bucket list is not empty")
                .set_buckets_for_metric(Matcher::Full("deployment_duration_seconds".into()), &LONG_BUCKETS)
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("workflow_execution_duration_seconds".into()),
                    &LONG_BUCKETS,
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be incomplete");
            }
            describe_metrics();
            handle
        })
        .clone()
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = routes::documented_routes(&state).split_for_parts();
    let openapi = Arc::new(routes::with_standard_errors(openapi));
    let cors = cors_layer(&state.config.cors_origins);
    api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let openapi = openapi.clone();
            async move { axum::Json(openapi.as_ref().clone()) }
        }),
    )
    .fallback(|| async { ApiError::NotFound("route".into()) })
    .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
    // Listed inside-out (each `.layer` wraps what is above it): the request-id layers run
    // first, so every response, those of the allowlist and CORS layers included, has an id,
    // an access log line (the trace layer's, in the request's span) and a latency figure.
    .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
    // The whole request, its body included: a body that trickles in is cut off.
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        state.config.request_timeout,
    ))
    // The allowlist wraps CORS, so that a preflight from outside the list is refused too.
    .layer(cors)
    .layer(from_fn_with_state(state.clone(), auth::enforce_ip_allowlist))
    .layer(from_fn(request::record_latency))
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(request::request_span)
            .on_request(())
            .on_response(
                DefaultOnResponse::new()
                    .level(Level::INFO)
                    .latency_unit(LatencyUnit::Millis),
            ),
    )
    .layer(PropagateRequestIdLayer::new(request_id_header()))
    .layer(SetRequestIdLayer::new(request_id_header(), request::NewRequestId))
    .layer(axum::middleware::map_request(request::drop_unplain_request_id))
    .with_state(state)
}

fn request_id_header() -> HeaderName {
    HeaderName::from_static(request::REQUEST_ID_HEADER)
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static(request::REQUEST_ID_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static(request::REQUEST_ID_HEADER),
            header::RETRY_AFTER,
            header::LOCATION,
        ])
}

/// `/metrics` alone and without a key, for a listener only the machine and its containers
/// reach: `orch dev --with-observability` binds one on the container engine's bridge, for
/// the Prometheus it deploys.
pub async fn serve_metrics(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", axum::routing::get(routes::system::metrics))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// `/metrics` and `/health` of a process without the API (`orch worker`): what this process
/// recorded, its cloud, engine and database calls and its workflows' durations. The
/// deployment counts stay with the API, which reads them from the database.
pub async fn serve_process_metrics(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = metrics_handle();
    let metrics = move || {
        let handle = handle.clone();
        async move {
            handle.run_upkeep();
            let content_type = [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )];
            (content_type, handle.render())
        }
    };
    let app = Router::new().route("/metrics", axum::routing::get(metrics)).route(
        "/health",
        axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting, lets the
/// requests in flight finish, and closes the database pool.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let limits = server::ConnectionLimits {
        header_timeout: state.config.header_timeout,
        max_connections: state.config.max_connections,
    };
    let tls = state.config.tls.clone();
    server::serve_with_limits(listener, router(state), limits, tls, shutdown).await?;
    store.close().await;
    Ok(())
}
