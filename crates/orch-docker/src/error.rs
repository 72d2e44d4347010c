//! The container provider's error type. Each variant says whether trying again can help, so
//! the workflow stops at once on what no retry fixes (a missing image, a failed health gate).

use orch_core::provider::{Classified, RecordFailed};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("container host '{0}' is not configured")]
    UnknownHost(String),
    /// The engine did not answer, or failed (5xx): a retry may help.
    #[error("container host '{host}': {message}")]
    Unavailable { host: String, message: String },
    #[error("{what}: not found")]
    NotFound { what: String },
    #[error("{what}: conflict: {message}")]
    Conflict { what: String, message: String },
    /// The engine refused the request as invalid; its own words.
    #[error("{what}: refused: {message}")]
    Refused { what: String, message: String },
    /// Not on the host, and not pulled: why is in `reason`.
    #[error("image '{image}' is not on container host '{host}' and {reason}")]
    ImageMissing {
        image: String,
        host: String,
        reason: String,
    },
    #[error("{key}: {cause}")]
    Unhealthy { key: String, cause: String },
    #[error("no free host port for {key}: {message}")]
    Ports { key: String, message: String },
    #[error("containers do not {0}")]
    Unsupported(&'static str),
    /// The files or secrets of an instance could not be written on the engine's host.
    #[error("{key}: files and secrets: {message}")]
    Payload { key: String, message: String },
    /// 304: the engine had nothing to do (a start of a running container).
    #[error("{what}: unchanged")]
    Unchanged { what: String },
    #[error(transparent)]
    Record(#[from] RecordFailed),
}

impl Classified for EngineError {
    fn kind(&self) -> &'static str {
        match self {
            Self::UnknownHost(_) => "unknown_host",
            Self::Unavailable { .. } => "engine_unavailable",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Refused { .. } => "bad_request",
            Self::ImageMissing { .. } => "image_missing",
            Self::Unhealthy { .. } => "unhealthy",
            Self::Ports { .. } => "ports_exhausted",
            Self::Unsupported(_) => "invalid",
            Self::Payload { .. } => "payload",
            Self::Unchanged { .. } => "unchanged",
            Self::Record(_) => "store",
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Conflict { .. } => true,
            Self::Record(failed) => failed.retryable,
            _ => false,
        }
    }
}

impl EngineError {
    /// Classifies an engine answer about `what` (a container, network or volume name).
    pub(crate) fn from_bollard(host: &str, what: &str, error: bollard::errors::Error) -> Self {
        use bollard::errors::Error as Bollard;
        match error {
            Bollard::DockerResponseServerError { status_code, message } => match status_code {
                304 => Self::Unchanged { what: what.to_owned() },
                404 => Self::NotFound { what: what.to_owned() },
                409 => Self::Conflict {
                    what: what.to_owned(),
                    message,
                },
                400 | 403 | 422 => Self::Refused {
                    what: what.to_owned(),
                    message,
                },
                _ => Self::Unavailable {
                    host: host.to_owned(),
                    message: format!("{what}: engine answered {status_code}: {message}"),
                },
            },
            other => Self::Unavailable {
                host: host.to_owned(),
                message: format!("{what}: {other}"),
            },
        }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// A start that failed because something else holds a published port.
    pub(crate) fn is_port_taken(&self) -> bool {
        let text = self.to_string();
        text.contains("port is already allocated") || text.contains("address already in use")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        }
    }

    #[test]
    fn engine_answers_keep_their_kind() {
        let cases = [
            (404, "not_found", false),
            (409, "conflict", true),
            (400, "bad_request", false),
            (500, "engine_unavailable", true),
        ];
        for (status, kind, retryable) in cases {
            let error = EngineError::from_bollard("local", "d-web-0", answer(status, "no"));
            assert_eq!((error.kind(), error.is_retryable()), (kind, retryable), "{status}");
        }
        let missing = EngineError::ImageMissing {
            image: "x".into(),
            host: "local".into(),
            reason: "cannot be pulled: not found".into(),
        };
        assert!(!missing.is_retryable());
    }
}
