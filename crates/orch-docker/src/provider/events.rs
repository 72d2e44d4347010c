//! The engine's events, for noticing at once when an instance stops or goes. The daemon
//! keeps only its last events, so this is a hint to look, never the record: the reconciler
//! also lists by label on start and periodically.

use std::collections::HashMap;

use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::{Stream, StreamExt};

use super::Docker;
use crate::error::EngineError;
use crate::spec::LABEL_DEPLOYMENT;

/// What the engine says happened to one of orch's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub deployment_id: String,
    /// `die`, `stop`, `kill`, `oom` or `destroy`.
    pub action: String,
}

impl Docker {
    /// Events of containers orch made that stopped or went, until the engine closes the
    /// stream (a daemon restart ends it: look again, then watch again).
    pub fn container_events(
        &self,
    ) -> Result<impl Stream<Item = Result<ContainerEvent, EngineError>> + Send + 'static, EngineError> {
        let engine = self.engine()?.clone();
        let filters = HashMap::from([
            ("type", vec!["container"]),
            ("label", vec![LABEL_DEPLOYMENT]),
            ("event", vec!["die", "stop", "kill", "oom", "destroy"]),
        ]);
        let options = EventsOptionsBuilder::new().filters(&filters).build();
        let host = engine.host().to_owned();
        let stream = engine.docker.events(Some(options)).filter_map(move |event| {
            let host = host.clone();
            async move {
                match event {
                    Ok(message) => {
                        let attributes = message.actor.and_then(|actor| actor.attributes).unwrap_or_default();
                        let deployment_id = attributes.get(LABEL_DEPLOYMENT)?.clone();
                        let action = message.action.unwrap_or_default();
                        Some(Ok(ContainerEvent { deployment_id, action }))
                    }
                    Err(error) => Some(Err(EngineError::from_bollard(&host, "events", error))),
                }
            }
        });
        Ok(stream)
    }
}
