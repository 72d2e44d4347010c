//! Per-request plumbing: the request-id policy and the request's span (for tower-http's
//! request-id and trace layers), the latency metric, and the body extractor that reads JSON
//! (or YAML) into a `Value` with problem+json errors.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;
use tower_http::request_id::MakeRequestId;
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Whether a client-supplied id is short and plain enough to put in logs and events.
fn is_plain(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// A client's id is kept when it is plain; anything else is dropped here, and the request
/// gets a fresh one from [`NewRequestId`] like a request that came without.
pub async fn drop_unplain_request_id(mut request: Request) -> Request {
    let plain = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_none_or(|value| value.to_str().is_ok_and(is_plain));
    if !plain {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

/// A UUID v4 for each request that has no id.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<tower_http::request_id::RequestId> {
        HeaderValue::from_str(&Uuid::new_v4().to_string())
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// The request's id, as set by the request-id layer.
pub fn request_id(extensions: &axum::http::Extensions) -> Option<String> {
    let id = extensions.get::<tower_http::request_id::RequestId>()?;
    id.header_value().to_str().ok().map(str::to_owned)
}

/// The route template, never the raw path: ids in paths would explode label cardinality.
fn endpoint<B>(request: &axum::http::Request<B>) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned())
}

/// The span of a request, which carries its id into every log line, and the caller's key
/// id once it is known.
pub fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let request_id = request_id(request.extensions()).unwrap_or_default();
    tracing::info_span!("request", request_id = %request_id, method = %request.method(), endpoint = %endpoint(request), key_id = tracing::field::Empty)
}

/// `api_request_duration_seconds{endpoint,method,status}`.
pub async fn record_latency(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let (endpoint, method) = (endpoint(&request), request.method().to_string());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("api_request_duration_seconds", "endpoint" => endpoint, "method" => method, "status" => status)
        .record(started.elapsed().as_secs_f64());
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
            None if YAML => {
                return Err(ApiError::UnsupportedMediaType(
                    "the Content-Type header is missing: send application/json or application/yaml",
                ))
            }
            None => {
                return Err(ApiError::UnsupportedMediaType(
                    "the Content-Type header is missing: send application/json",
                ))
            }
            Some("application/json") => false,
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
            yaml_as_json(&bytes)?
        } else {
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|error| ApiError::BadRequest(format!("the body is not valid JSON: {error}")))?
        };
        Ok(Self(value))
    }
}

/// A YAML body as JSON. Malformed YAML is a bad request; well-formed YAML that JSON cannot
/// carry is an invalid body (422): a key that is a list, or an integer beyond 64 bits (which
/// the YAML reader reports as an `i128` or `u128`, naming where it is).
fn yaml_as_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let invalid = |error: &dyn std::fmt::Display| {
        ApiError::Validation(orch_core::Problems::single(
            "",
            format!("holds what JSON cannot carry: {error}"),
        ))
    };
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_slice(bytes).map_err(|error| {
        let message = error.to_string();
        if message.contains(" as i128") || message.contains(" as u128") {
            invalid(&message)
        } else {
            ApiError::BadRequest(format!("the body is not valid YAML: {message}"))
        }
    })?;
    serde_json::to_value(yaml).map_err(|error| invalid(&error))
}

/// Path parameters, like axum's, but a path that cannot be decoded (`/deployments/%FF`) is a
/// problem+json 400 like every other error, not a plain-text answer.
pub struct Path<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "the path cannot be read: {}",
                rejection.body_text()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_plain() {
        assert!(is_plain("abc-123") && is_plain("a.b:c_d"));
        assert!(!is_plain("a b\"c") && !is_plain("") && !is_plain(&"x".repeat(129)));
        let made = NewRequestId.make_request_id(&axum::http::Request::new(())).unwrap();
        assert!(Uuid::parse_str(made.header_value().to_str().unwrap()).is_ok());
    }

    #[test]
    fn yaml_bodies_read_as_json_bodies_do() {
        let big = yaml_as_json(b"n: -18650638356303004990609278852992598016\n");
        assert!(matches!(big, Err(ApiError::Validation(_))), "{big:?}");
        assert_eq!(yaml_as_json(b"n: 3\n").unwrap()["n"], 3);
        assert!(matches!(yaml_as_json(b"a: [unclosed"), Err(ApiError::BadRequest(_))));
        assert!(matches!(yaml_as_json(b"? [a, b]\n: c\n"), Err(ApiError::Validation(_))));
    }
}
