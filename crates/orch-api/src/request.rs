//! Per-request plumbing: the request id, the request's tracing span and access log line, the
//! latency metric, and the body extractor that reads JSON (or YAML) into a `Value` with
//! problem+json errors.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request's id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// A client-supplied id is kept when it is short and plain; anything else is replaced, so
/// that ids are safe to put in logs and events.
fn accept_request_id(value: Option<&HeaderValue>) -> String {
    value
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

/// Gives every request an id, a span that carries it into every log line, one access-log
/// line, the `api_request_duration_seconds` metric, and the id in the response.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = accept_request_id(request.headers().get(REQUEST_ID_HEADER));
    // The route template, never the raw path: ids in paths would explode label cardinality.
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let span = tracing::info_span!("request", request_id = %request_id, method = %method, endpoint = %endpoint, key_id = tracing::field::Empty);
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status();
    metrics::histogram!(
        "api_request_duration_seconds",
        "endpoint" => endpoint,
        "method" => method.to_string(),
        "status" => status.as_u16().to_string()
    )
    .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request completed"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A request body read as a JSON value. `application/json` (or no content type) is JSON;
/// `application/yaml` is accepted where `YAML` is true. Syntax errors are 400, oversize
/// bodies 413, other media types 415, all as problem+json.
pub struct Body<const YAML: bool = false>(pub Value);

impl<const YAML: bool> FromRequest<AppState> for Body<YAML> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
        let is_yaml = match content_type.as_deref() {
            None | Some("application/json") => false,
            Some("application/yaml" | "application/x-yaml" | "text/yaml") if YAML => true,
            Some(_) if YAML => {
                return Err(ApiError::UnsupportedMediaType(
                    "send application/json or application/yaml",
                ))
            }
            Some(_) => return Err(ApiError::UnsupportedMediaType("send application/json")),
        };
        let limit = state.config.max_body_bytes;
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::BadRequest("the request body could not be read".into())
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::BadRequest(
                "the request body is empty; send a JSON object".into(),
            ));
        }
        let value = if is_yaml {
            serde_yaml_ng::from_slice::<Value>(&bytes)
                .map_err(|error| ApiError::BadRequest(format!("the body is not valid YAML: {error}")))?
        } else {
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|error| ApiError::BadRequest(format!("the body is not valid JSON: {error}")))?
        };
        Ok(Self(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        assert_eq!(accept_request_id(Some(&HeaderValue::from_static("abc-123"))), "abc-123");
        let replaced = accept_request_id(Some(&HeaderValue::from_static("a b\"c")));
        assert!(Uuid::parse_str(&replaced).is_ok());
        let long = "x".repeat(129);
        assert_ne!(accept_request_id(Some(&HeaderValue::from_str(&long).unwrap())), long);
        assert!(Uuid::parse_str(&accept_request_id(None)).is_ok());
    }
}
