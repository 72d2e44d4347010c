//! One HTTP attempt: the SSRF guard, the endpoint's breaker, a concurrency permit and the
//! request pace, the exchange itself with its metrics, and what the answer means: done, worth
//! another try (and after how long), a token to renew, or a failure of a given kind.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::breaker::endpoint_key;
use super::{OpenStack, Reply};
use crate::error::{cloud_message, CloudError, Service};

/// One request as sent, once per attempt.
pub(super) struct Request<'a> {
    pub service: Service,
    pub method: Method,
    pub url: &'a str,
    pub token: Option<&'a SecretString>,
    pub body: Option<&'a Value>,
    pub microversion: Option<&'static str>,
    /// Whether sending it twice does no harm (anything but a POST).
    pub idempotent: bool,
}

/// Why an attempt did not succeed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Worth another try, after `after` when the cloud said so.
    Retry {
        after: Option<Duration>,
        error: CloudError,
    },
    /// The token was refused: renew it and try once more.
    Reauthenticate(CloudError),
    Fail(CloudError),
}

impl Failure {
    pub(super) fn is_retry(&self) -> bool {
        matches!(self, Self::Retry { .. })
    }

    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retry { after, .. } => *after,
            _ => None,
        }
    }

    pub(super) fn error(&self) -> &CloudError {
        match self {
            Self::Retry { error, .. } | Self::Reauthenticate(error) | Self::Fail(error) => error,
        }
    }

    pub(super) fn into_error(self) -> CloudError {
        match self {
            Self::Retry { error, .. } | Self::Reauthenticate(error) | Self::Fail(error) => error,
        }
    }
}

type Exchanged = (StatusCode, HeaderMap, String);

impl OpenStack {
    pub(super) async fn attempt(&self, request: &Request<'_>) -> Result<Reply, Failure> {
        self.check_allowed(request.url).map_err(Failure::Fail)?;
        let breaker_key = endpoint_key(request.url, request.service);
        if !self.breaker_allows(&breaker_key) {
            return Err(Failure::Fail(CloudError::Unavailable {
                service: request.service,
                message: "the circuit is open after repeated failures; failing fast until a probe succeeds".into(),
                ambiguous: false,
            }));
        }
        let _permit = self.admit().await;
        match self.exchange(request).await {
            Ok((status, headers, text)) => {
                self.breaker_record(&breaker_key, !status.is_server_error());
                let max_retry_after = self.inner.config.limits.max_retry_after;
                answer(status, headers, text, request, max_retry_after)
            }
            Err(error) => {
                self.breaker_record(&breaker_key, false);
                Err(transport_failure(&error, request))
            }
        }
    }

    /// Waits for a concurrency permit and for the request pace.
    async fn admit(&self) -> tokio::sync::SemaphorePermit<'_> {
        let permit = self.inner.permits.acquire().await.expect("semaphore is never closed");
        if let Some(pace) = &self.inner.pace {
            pace.until_ready().await;
        }
        permit
    }

    /// Sends the request and reads the whole answer, counting and timing it.
    async fn exchange(&self, request: &Request<'_>) -> Result<Exchanged, reqwest::Error> {
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), request.url)
            .header("accept", "application/json");
        if let Some(token) = request.token {
            builder = builder.header("x-auth-token", token.expose_secret());
        }
        if let Some(version) = request.microversion {
            builder = builder.header("openstack-api-version", version);
        }
        if let Some(body) = request.body {
            builder = builder.json(body);
        }
        let started = Instant::now();
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        if request.method != Method::GET {
            self.inner.writes.fetch_add(1, Ordering::Relaxed);
        }
        let result = match builder.send().await {
            Ok(response) => {
                let (status, headers) = (response.status(), response.headers().clone());
                response.text().await.map(|text| (status, headers, text))
            }
            Err(error) => Err(error),
        };
        let status_label = result
            .as_ref()
            .map_or_else(|_| "error".to_owned(), |(status, _, _)| status.as_u16().to_string());
        let service = request.service.as_str();
        metrics::counter!("openstack_api_calls_total", "service" => service, "method" => request.method.to_string(), "status" => status_label).increment(1);
        metrics::histogram!("openstack_api_call_duration_seconds", "service" => service)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// A request that never got an answer. A refused connection never reached the cloud; anything
/// later may have, so a create that timed out is ambiguous and not sent again.
fn transport_failure(error: &reqwest::Error, request: &Request<'_>) -> Failure {
    let unsent = error.is_connect();
    let message = if error.is_timeout() {
        "the request timed out"
    } else {
        "the connection failed"
    };
    let error = CloudError::Unavailable {
        service: request.service,
        message: message.to_owned(),
        ambiguous: !unsent && !request.idempotent,
    };
    if unsent || request.idempotent {
        Failure::Retry { after: None, error }
    } else {
        Failure::Fail(error)
    }
}

fn answer(
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    request: &Request<'_>,
    max_retry_after: Duration,
) -> Result<Reply, Failure> {
    if status.is_success() {
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        return Ok(Reply { status, headers, body });
    }
    // Redirects are never followed: only configured endpoints are called, and the token
    // must not travel to wherever a redirect points.
    if status.is_redirection() {
        let location = headers
            .get("location")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("nowhere");
        return Err(Failure::Fail(CloudError::BadRequest {
            service: request.service,
            message: format!(
                "answered {status}, a redirect to {location}, which orch does not follow; configure the endpoint itself"
            ),
        }));
    }
    let retry_after = headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(|seconds| Duration::from_secs(seconds).min(max_retry_after));
    Err(classify(status, &text, retry_after, request))
}

/// What a refusal means, by status and the cloud's own words.
fn classify(status: StatusCode, text: &str, retry_after: Option<Duration>, request: &Request<'_>) -> Failure {
    let service = request.service;
    let message = cloud_message(text);
    let quota = |message: String| Failure::Fail(CloudError::QuotaExceeded { service, message });
    let unavailable = |message: String, ambiguous: bool| CloudError::Unavailable {
        service,
        message,
        ambiguous,
    };
    match status {
        StatusCode::UNAUTHORIZED if request.token.is_some() => {
            Failure::Reauthenticate(CloudError::Unauthorized { service, message })
        }
        StatusCode::UNAUTHORIZED => Failure::Fail(CloudError::Unauthorized { service, message }),
        StatusCode::NOT_FOUND => Failure::Fail(CloudError::NotFound { service, message }),
        StatusCode::CONFLICT if message.contains("Quota exceeded") || text.contains("OverQuota") => quota(message),
        StatusCode::CONFLICT => Failure::Fail(CloudError::Conflict { service, message }),
        StatusCode::FORBIDDEN if message.to_ascii_lowercase().contains("quota") => quota(message),
        StatusCode::FORBIDDEN => Failure::Fail(CloudError::Forbidden { service, message }),
        StatusCode::PAYLOAD_TOO_LARGE
            if text.contains("overLimit") || message.contains("Limit") || message.contains("quota") =>
        {
            quota(message)
        }
        // The cloud refused the request outright, so even a create may be sent again.
        StatusCode::TOO_MANY_REQUESTS => Failure::Retry {
            after: retry_after,
            error: unavailable(message, false),
        },
        StatusCode::SERVICE_UNAVAILABLE if retry_after.is_some() => Failure::Retry {
            after: retry_after,
            error: unavailable(message, false),
        },
        status if status.is_server_error() && request.idempotent => Failure::Retry {
            after: None,
            error: unavailable(message, false),
        },
        status if status.is_server_error() => Failure::Fail(unavailable(message, true)),
        _ => Failure::Fail(CloudError::BadRequest { service, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, token: Option<&SecretString>) -> Request<'_> {
        Request {
            service: Service::Compute,
            method: method.clone(),
            url: "http://cloud/compute/v2.1/servers",
            token,
            body: None,
            microversion: None,
            idempotent: method != Method::POST,
        }
    }

    #[test]
    fn a_create_is_sent_again_only_when_the_cloud_provably_did_not_take_it() {
        let post = request(Method::POST, None);
        let limited = classify(
            StatusCode::TOO_MANY_REQUESTS,
            "slow down",
            Some(Duration::from_secs(2)),
            &post,
        );
        assert!(limited.is_retry() && limited.retry_after() == Some(Duration::from_secs(2)));
        let busy = classify(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            Some(Duration::from_secs(1)),
            &post,
        );
        assert!(busy.is_retry() && !busy.error().is_ambiguous());
        let lost = classify(StatusCode::BAD_GATEWAY, "proxy", None, &post);
        assert!(
            !lost.is_retry() && lost.error().is_ambiguous(),
            "a 502 to a create may hide a create"
        );
        let get = request(Method::GET, None);
        assert!(classify(StatusCode::BAD_GATEWAY, "proxy", None, &get).is_retry());
    }

    #[test]
    fn refusals_keep_their_kind() {
        let token = SecretString::from("t".to_owned());
        let get = request(Method::GET, Some(&token));
        let kind = |status: StatusCode, text: &str| classify(status, text, None, &get).into_error().kind();
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, "", None, &get),
            Failure::Reauthenticate(_)
        ));
        assert_eq!(
            kind(StatusCode::NOT_FOUND, r#"{"itemNotFound": {"message": "x"}}"#),
            "not_found"
        );
        assert_eq!(
            kind(
                StatusCode::FORBIDDEN,
                r#"{"forbidden": {"message": "Quota exceeded for cores"}}"#
            ),
            "quota_exceeded"
        );
        assert_eq!(
            kind(
                StatusCode::CONFLICT,
                r#"{"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources"}}"#
            ),
            "quota_exceeded"
        );
        assert_eq!(
            kind(StatusCode::CONFLICT, r#"{"NeutronError": {"message": "in use"}}"#),
            "conflict"
        );
        assert_eq!(
            kind(StatusCode::BAD_REQUEST, r#"{"badRequest": {"message": "no"}}"#),
            "bad_request"
        );
    }
}
