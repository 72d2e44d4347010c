//! The API's one error type and its RFC 9457 `application/problem+json` rendering. Bodies
//! say what went wrong for the client and never carry internals (SQL, paths, stacks): those
//! go to the log, under the request's id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use orch_core::{Problem, Problems};
use orch_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request has {} invalid value(s){}", .0.0.len(), shown_of(.0.0.len()))]
    Validation(Problems),
    #[error("invalid query parameters")]
    InvalidQuery(Vec<QueryProblem>),
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid API key is required")]
    Unauthorized,
    #[error("this API key has expired; ask its operator for a new one")]
    KeyExpired,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(String),
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    #[error("rate limit exceeded; retry in {retry_after_seconds} s")]
    RateLimited { retry_after_seconds: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("an internal error occurred; quote the request id when reporting it")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A problem with one query parameter (RFC 9457's `parameter` member).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueryProblem {
    pub parameter: String,
    pub detail: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDocument {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For validation failures: every problem, each with a JSON pointer into the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Problem>>,
    /// For invalid query strings: every problem, each naming its parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<QueryProblem>>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::InvalidQuery(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::KeyExpired => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::Validation(_) | Self::InvalidQuery(_) => "validation-error",
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::KeyExpired => "key-expired",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::RateLimited { .. } => "rate-limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal-error",
        }
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(message) => Self::Conflict(message),
            // No key configured, or not the one a secret was sealed with: the operator's to fix.
            StoreError::Secret(message) => Self::Unavailable(message),
            other => Self::internal(other),
        }
    }
}

/// Problems listed in one answer: a body with thousands of mistakes gets the first ones and
/// their count, not an answer ten times its size.
pub const MAX_PROBLEMS_SHOWN: usize = 100;

fn shown_of(total: usize) -> String {
    match total > MAX_PROBLEMS_SHOWN {
        true => format!("; the first {MAX_PROBLEMS_SHOWN} are listed"),
        false => String::new(),
    }
}

impl From<Problems> for ApiError {
    fn from(problems: Problems) -> Self {
        Self::Validation(problems)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(source) = &self {
            // The cause goes to the log (inside the request's span), never to the client.
            tracing::error!(error = %source, cause = ?source.source(), "request failed");
        }
        let document = ProblemDocument {
            kind: format!("urn:orch:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            errors: match &self {
                Self::Validation(problems) => Some(problems.0.iter().take(MAX_PROBLEMS_SHOWN).cloned().collect()),
                _ => None,
            },
            parameters: match &self {
                Self::InvalidQuery(problems) => Some(problems.clone()),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&document).expect("problem documents serialize");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Self::RateLimited { retry_after_seconds } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
        }
        if matches!(self, Self::Unauthorized | Self::KeyExpired) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
