//! The one layer every engine call goes through: a connection per host with the API version
//! negotiated, a timeout per call, retries with backoff for what a retry can fix, a bound on
//! calls in flight, and the same metrics as the cloud client.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bollard::Docker;
use tokio::sync::Semaphore;

use crate::config::HostSettings;
use crate::error::EngineError;

/// Engine calls made by this process, for `orch bench` and tests.
static CALLS: AtomicU64 = AtomicU64::new(0);

/// How many engine calls this process has made.
pub fn engine_calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

/// Calls in flight per host: a burst of creates must not swamp the daemon.
const CALLS_IN_FLIGHT: usize = 16;

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) docker: Docker,
    pub(crate) settings: Arc<HostSettings>,
    limit: Arc<Semaphore>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("host", &self.settings.name).finish()
    }
}

impl Engine {
    /// Connects to the host's engine and agrees on an API version both sides speak.
    pub async fn connect(settings: Arc<HostSettings>) -> Result<Self, EngineError> {
        let unavailable = |error: bollard::errors::Error| EngineError::Unavailable {
            host: settings.name.clone(),
            message: format!("cannot connect to {}: {error}", settings.endpoint),
        };
        let timeout = settings.timeout.as_secs();
        let docker = match (settings.endpoint.strip_prefix("unix://"), &settings.tls) {
            (Some(path), _) => Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION),
            (None, Some(tls)) => Docker::connect_with_ssl(
                &settings.endpoint,
                &tls.join("key.pem"),
                &tls.join("cert.pem"),
                &tls.join("ca.pem"),
                timeout,
                bollard::API_DEFAULT_VERSION,
            ),
            (None, None) => Docker::connect_with_http(&settings.endpoint, timeout, bollard::API_DEFAULT_VERSION),
        }
        .map_err(unavailable)?;
        CALLS.fetch_add(1, Ordering::Relaxed);
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        Ok(Self {
            docker,
            settings,
            limit: Arc::new(Semaphore::new(CALLS_IN_FLIGHT)),
        })
    }

    pub fn host(&self) -> &str {
        &self.settings.name
    }

    /// One engine call about `what`, retried with backoff while the engine is unavailable.
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, what: &str, request: F) -> Result<T, EngineError>
    where
        F: Fn(Docker) -> Fut,
        Fut: Future<Output = Result<T, bollard::errors::Error>>,
    {
        let attempt = || async {
            let _permit = self.limit.acquire().await.expect("the semaphore is never closed");
            CALLS.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let result = request(self.docker.clone()).await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(bollard::errors::Error::DockerResponseServerError { status_code, .. }) if *status_code < 500 => {
                    "refused"
                }
                Err(_) => "error",
            };
            let labels = [("host", self.settings.name.clone()), ("op", op.to_owned())];
            metrics::histogram!("engine_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
            let mut labels = labels.to_vec();
            labels.push(("outcome", outcome.to_owned()));
            metrics::counter!("engine_requests_total", &labels).increment(1);
            result.map_err(|error| EngineError::from_bollard(&self.settings.name, what, error))
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(4)
                    .with_jitter(),
            )
            .when(|error| matches!(error, EngineError::Unavailable { .. }) && !error.is_port_taken())
            .notify(|error, delay| tracing::warn!(op, %error, ?delay, "engine call failed; trying again"))
            .await
    }
}
