//! orch's pure domain: what a template is, how parameters change it, which requests are
//! valid, and the deployment lifecycle. Nothing here does I/O, so everything is unit-tested
//! beside the code.
//!
//! # Layout
//! - [`template`]: the template document, its strict reader and its validation.
//! - [`parameters`]: `<group>_count|_flavor|_image` overrides.
//! - [`deployment`]: statuses, operation kinds, scale and configure requests.
//! - [`names`]: the safe character sets for names.
//! - [`problem`]: validation problems located by JSON pointers.
//! - [`reconcile`]: which marked resources are orphans, and how a deployment drifted.
//! - `fuzz` (tests only): property-based fuzzing of every reader of outside input.

// Functions stay short enough to read at once (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

pub mod catalog;
pub mod compose;
pub mod deployment;
#[cfg(test)]
mod fuzz;
pub mod names;
pub mod parameters;
pub mod plan;
pub mod problem;
pub mod provider;
mod reader;
pub mod reconcile;
pub mod template;

pub use deployment::{
    check_secret_values, ConfigureRequest, CreateDeploymentRequest, DeploymentStatus, OperationKind, ScaleRequest,
    TemplateRef, UpdateDeploymentRequest,
};
pub use parameters::apply_parameters;
pub use problem::{Problem, Problems};
pub use template::Template;
