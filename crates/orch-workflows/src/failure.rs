//! Failures keep their kind across the activity boundary: each becomes a Temporal
//! application failure whose type is the error's own kind and whose non-retryable flag comes
//! from the error, never from its text. Each is counted by activity and kind.

use std::fmt::Display;

use orch_core::provider::{Classified, RecordFailed};
use orch_store::StoreError;
use temporalio_sdk::activities::ActivityError;
use temporalio_sdk::ApplicationFailure;

/// Counts and converts a failure of `activity`.
pub(crate) fn activity_failure(activity: &'static str, error: &(impl Classified + Display)) -> ActivityError {
    let kind = error.kind();
    let retryable = error.is_retryable();
    metrics::counter!("activity_failures_total", "activity" => activity, "kind" => kind).increment(1);
    tracing::warn!(activity, kind, retryable, error = %error, "activity failed");
    ActivityError::application(application_failure(error.to_string(), kind, retryable))
}

fn application_failure(message: String, kind: &str, retryable: bool) -> ApplicationFailure {
    ApplicationFailure::builder(message)
        .type_name(kind.to_owned())
        .non_retryable(!retryable)
        .build()
}

/// A failure of orch's own, outside any provider or store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OrchFailure {
    /// A stored document no longer reads as what the operation needs.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// A cancel was asked for the operation: its forward steps stop.
    #[error("cancelled")]
    Cancelled,
    /// A provider's failure outside a step (a look before planning), with its kind.
    #[error("{message}")]
    Provider {
        kind: &'static str,
        retryable: bool,
        message: String,
    },
}

impl OrchFailure {
    pub(crate) fn of_provider(error: &(impl Classified + Display)) -> Self {
        Self::Provider {
            kind: error.kind(),
            retryable: error.is_retryable(),
            message: error.to_string(),
        }
    }
}

impl Classified for OrchFailure {
    fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::Store(store) => store.kind(),
            Self::Cancelled => "cancelled",
            Self::Provider { kind, .. } => kind,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Invalid(_) | Self::Cancelled => false,
            Self::Store(store) => store.is_retryable(),
            Self::Provider { retryable, .. } => *retryable,
        }
    }
}

/// A store error as an activity reports it: its message only, never the driver's debug text
/// (which is logged instead), so no SQL or path reaches a status reason.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct StoreFailure {
    message: String,
    kind: &'static str,
}

impl From<StoreError> for StoreFailure {
    fn from(error: StoreError) -> Self {
        let kind = match error {
            StoreError::NotFound(_) => "store_not_found",
            StoreError::Corrupt(_) => "store_corrupt",
            // No key, or not the one a secret was sealed with: a retry finds the same keys.
            StoreError::Secret(_) => "secret_unreadable",
            _ => "store",
        };
        if kind != "store_not_found" {
            tracing::error!(error = ?error, "store error in an activity");
        }
        Self {
            kind,
            message: error.to_string(),
        }
    }
}

impl Classified for StoreFailure {
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// A record that is gone stays gone, a corrupt one stays corrupt; the database being
    /// away is a passing thing.
    fn is_retryable(&self) -> bool {
        self.kind == "store"
    }
}

impl StoreFailure {
    pub(crate) fn recording(self, key: &str) -> RecordFailed {
        RecordFailed {
            key: key.to_owned(),
            retryable: self.is_retryable(),
            message: self.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_says_what_and_keeps_its_kind_but_not_its_driver_text() {
        let busy = StoreFailure::from(StoreError::Conflict("another operation is in flight".into()));
        assert_eq!((busy.kind(), busy.is_retryable()), ("store", true));
        let corrupt = StoreFailure::from(StoreError::Corrupt("deployments.template"));
        assert_eq!((corrupt.kind(), corrupt.is_retryable()), ("store_corrupt", false));
        assert_eq!(corrupt.to_string(), "corrupt stored document in deployments.template");
        let gone = StoreFailure::from(StoreError::NotFound("deployment d1".into()));
        assert_eq!((gone.kind(), gone.is_retryable()), ("store_not_found", false));
        let record = StoreFailure::from(StoreError::NotFound("x".into())).recording("server:web:0");
        assert!(!record.retryable && record.to_string().starts_with("recording server:web:0"));
    }

    #[test]
    fn the_failure_type_and_retry_flag_come_from_the_kind() {
        let failure = application_failure("no flavor".into(), "not_found", false);
        assert_eq!(failure.type_name(), Some("not_found"));
        assert!(failure.is_non_retryable());
        let failure = application_failure("outage".into(), "unavailable", true);
        assert!(!failure.is_non_retryable());
    }
}
