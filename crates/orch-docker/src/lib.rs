//! orch's container provider: the services of a template, as containers, networks and
//! volumes on a Docker Engine host, behind the same provider boundary as the cloud
//! (`orch_core::provider`). Every engine call goes through [`client::Engine`]; what the
//! engine is asked to make is shaped in [`spec`]; the steps are carried out in
//! [`provider`].
#![warn(clippy::too_many_lines)]

pub mod client;
pub mod config;
pub mod error;
pub mod provider;
mod spec;

pub use client::{engine_calls, Engine};
pub use config::{ContainerHosts, HostSettings, DEFAULT_HOST};
pub use error::EngineError;
pub use provider::events::ContainerEvent;
pub use provider::Docker;
