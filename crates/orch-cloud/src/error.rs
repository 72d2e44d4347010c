//! The cloud layer's error type. Each variant says whether trying again can help, so that
//! the workflow layer can fail fast on what no retry will fix (an unknown flavor, a quota).

/// Which OpenStack service a call goes to (and which answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Identity,
    Compute,
    Network,
    Volume,
    Image,
}

impl Service {
    /// The name in errors and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Compute => "compute",
            Self::Network => "network",
            Self::Volume => "volume",
            Self::Image => "image",
        }
    }

    /// The catalog types that offer the service, in order of preference.
    pub fn catalog_types(self) -> &'static [&'static str] {
        match self {
            Self::Identity => &["identity"],
            Self::Compute => &["compute"],
            Self::Network => &["network"],
            Self::Volume => &["block-storage", "volumev3", "volume"],
            Self::Image => &["image"],
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{service}: not found: {message}")]
    NotFound { service: Service, message: String },
    #[error("{service}: conflict: {message}")]
    Conflict { service: Service, message: String },
    #[error("{service}: quota exceeded: {message}")]
    QuotaExceeded { service: Service, message: String },
    #[error("{service}: authentication failed: {message}")]
    Unauthorized { service: Service, message: String },
    #[error("{service}: forbidden: {message}")]
    Forbidden { service: Service, message: String },
    /// The cloud refused the request as invalid; `message` is the cloud's own words.
    #[error("{service}: bad request: {message}")]
    BadRequest { service: Service, message: String },
    /// The service failed, timed out, is rate limiting beyond our patience, or its circuit is
    /// open. `ambiguous` is true when a create may have taken effect (the response was lost),
    /// so the caller must look before creating again.
    #[error("{service}: unavailable: {message}")]
    Unavailable {
        service: Service,
        message: String,
        ambiguous: bool,
    },
    /// A catalog or configured URL points outside the allowed hosts (SSRF guard).
    #[error("refused to call {url}: host is not the auth URL's nor in the allowlist")]
    EndpointRefused { url: String },
    #[error("region '{region}' is not in the service catalog; known regions: {known}")]
    UnknownRegion { region: String, known: String },
    #[error("the catalog has no {service} endpoint for interface '{interface}' in region '{region}'")]
    NoEndpoint {
        service: String,
        interface: String,
        region: String,
    },
    #[error("cloud configuration: {0}")]
    Config(String),
    #[error("{service}: unexpected response: {message}")]
    Decode { service: Service, message: String },
    #[error("timed out waiting for {what}")]
    WaitTimeout { what: String },
    /// A teardown stopped with resources left; a later attempt may finish it.
    #[error("could not delete everything ({message}); left: {}", left.join(", "))]
    Incomplete { left: Vec<String>, message: String },
    /// A resource reached a state it cannot leave, e.g. a server in ERROR.
    #[error("{what} failed: {message}")]
    ResourceFailed { what: String, message: String },
    /// The store could not record what the cloud made; the cloud call itself succeeded.
    #[error(transparent)]
    Record(orch_core::provider::RecordFailed),
}

impl CloudError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::WaitTimeout { .. } | Self::Incomplete { .. } => true,
            Self::Record(failed) => failed.retryable,
            _ => false,
        }
    }

    /// Whether a create may have happened although it reported an error.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Unavailable { ambiguous: true, .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// A short, stable name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::BadRequest { .. } => "bad_request",
            Self::Unavailable { .. } => "unavailable",
            Self::EndpointRefused { .. } => "endpoint_refused",
            Self::UnknownRegion { .. } => "unknown_region",
            Self::NoEndpoint { .. } => "no_endpoint",
            Self::Config(_) => "config",
            Self::Decode { .. } => "decode",
            Self::WaitTimeout { .. } => "wait_timeout",
            Self::Incomplete { .. } => "incomplete",
            Self::ResourceFailed { .. } => "resource_failed",
            Self::Record(_) => "record",
        }
    }
}

pub type Result<T, E = CloudError> = std::result::Result<T, E>;

/// Pulls the human message out of any OpenStack error body: Nova and Cinder
/// (`{"itemNotFound": {"message": …}}`), Neutron (`{"NeutronError": {"message": …}}`),
/// Keystone (`{"error": {"message": …}}`) or plain text (Glance).
pub fn cloud_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|value| {
        let object = value.as_object()?;
        object
            .values()
            .find_map(|inner| inner.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .or_else(|| object.get("message").and_then(|m| m.as_str()).map(str::to_owned))
    });
    let text = message.unwrap_or_else(|| body.trim().to_owned());
    text.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_of_every_error_shape() {
        assert_eq!(
            cloud_message(r#"{"itemNotFound": {"code": 404, "message": "Instance x could not be found."}}"#),
            "Instance x could not be found."
        );
        assert_eq!(
            cloud_message(r#"{"NeutronError": {"type": "NetworkNotFound", "message": "Network n", "detail": ""}}"#),
            "Network n"
        );
        assert_eq!(
            cloud_message(r#"{"error": {"code": 401, "message": "auth", "title": "Unauthorized"}}"#),
            "auth"
        );
        assert_eq!(
            cloud_message("404 Not Found\n\nNo image found\n"),
            "404 Not Found\n\nNo image found"
        );
    }

    #[test]
    fn retryability() {
        let lost = CloudError::Unavailable {
            service: Service::Compute,
            message: "x".into(),
            ambiguous: true,
        };
        assert!(lost.is_retryable() && lost.is_ambiguous());
        let quota = CloudError::QuotaExceeded {
            service: Service::Compute,
            message: "x".into(),
        };
        assert!(!quota.is_retryable());
    }
}
