//! orch's cloud layer: a direct REST client for OpenStack (Keystone v3, Nova v2.1,
//! Neutron v2.0, Cinder v3, Glance v2) over reqwest with rustls.
//!
//! # Layout
//! - [`client`]: [`OpenStack`], the one HTTP layer: tokens, catalog, SSRF guard, limits,
//!   breakers, retries, metrics.
//! - [`config`]: [`CloudConfig`] from `clouds.yaml`, `OS_*` or `OPENSTACK_*`.
//! - [`compute`], [`network`], [`volume`]: the calls, with serde types.
//! - [`managed`]: deterministic names, tags and find-before-create (`ensure_*`), and listing
//!   a deployment's or all managed resources for cleanup and orphan detection.
//! - [`tagging`]: tags that stick: in the create body where the cloud keeps them, else a
//!   `PUT .../tags` after it, learnt per collection and region.
//! - [`teardown`]: deleting in the order the cloud requires, retrying refusals that clear
//!   by themselves, and naming what is left when it cannot finish.
//! - [`provider`]: OpenStack behind the provider boundary: the planner's steps carried out
//!   with Neutron, Nova and Cinder.
//! - [`error`]: [`CloudError`], which says whether a retry can help.

// Functions stay short enough to read at once (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

pub mod client;
pub mod compute;
pub mod config;
pub mod error;
pub mod managed;
pub mod network;
pub mod provider;
pub mod tagging;
pub mod teardown;
pub mod volume;

pub use client::OpenStack;
pub use config::{ClientLimits, CloudConfig, Credentials};
pub use error::CloudError;
pub use managed::{ManagedResource, ResourceKey};
