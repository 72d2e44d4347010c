//! OpenStack behind the provider boundary (`orch_core::provider`): the planner's steps
//! carried out with Neutron, Nova and Cinder. Shared resources are a network with its
//! subnets, router and security groups; members are servers, each booted with its own port
//! on its group's subnet; what needs a ready member is its volumes.

mod in_place;
mod members;
mod prepare;
mod rebuild;
mod remove;
mod volumes;

use std::collections::HashMap;

use orch_core::plan::Step;
use orch_core::provider::{Classified, Observed, Provider, RecordFailed, Report, Target};
use orch_core::reconcile::Marked;
use orch_core::template::Template;
use serde_json::Value;

use crate::compute::ServerFilter;
use crate::error::Result;
use crate::managed::MANAGED_TAG;
use crate::network::{SecurityGroup, SecurityGroupRule};
use crate::teardown::Patience;
use crate::{CloudError, ManagedResource, OpenStack, ResourceKey};

impl Classified for CloudError {
    fn kind(&self) -> &'static str {
        CloudError::kind(self)
    }

    fn is_retryable(&self) -> bool {
        CloudError::is_retryable(self)
    }
}

impl From<RecordFailed> for CloudError {
    fn from(failed: RecordFailed) -> Self {
        Self::Record(failed)
    }
}

impl Provider for OpenStack {
    type Error = CloudError;

    async fn in_region(&self, region: &str) -> Result<Self> {
        OpenStack::in_region(self, region).await
    }

    async fn carry_out(&self, step: &Step, target: Target<'_>, report: &impl Report) -> Result<()> {
        match step {
            Step::Prepare => prepare::prepare(self, target, report).await,
            Step::Create(keys) => members::create(self, target, keys, report).await,
            Step::Wait(keys) => members::wait(self, target, keys, report).await,
            Step::Attach(keys) => volumes::attach(self, target, keys, report).await,
            Step::Resize(keys) => members::resize(self, target, keys, report).await,
            Step::Rebuild(keys) => rebuild::rebuild(self, target, keys, report).await,
            Step::Start(keys) => rebuild::start(self, target, keys, report).await,
            Step::Evict(keys) => remove::evict(self, target, keys, report).await,
            Step::Delete(keys) => remove::delete(self, target, keys, report).await,
            Step::Prune(keys) => remove::prune(self, target, keys, report).await,
            Step::DeleteAll => remove::delete(self, target, &[], report).await,
            Step::Replace(_) => Err(CloudError::Config(
                "servers are not replaced: an image change rebuilds them".into(),
            )),
        }
    }

    async fn observe(&self, deployment_id: &str) -> Result<Vec<Observed>> {
        let found = self.list_by_deployment(deployment_id).await?;
        let rules = self.rules_of(&found).await?;
        Ok(found
            .into_iter()
            .map(|resource| {
                let key = resource.logical_key.unwrap_or_else(|| resource.name.clone());
                let status = match resource.status.is_empty() {
                    true => "present",
                    false => resource.status.as_str(),
                };
                let mut attributes = serde_json::json!({"name": resource.name, "flavor": resource.flavor});
                if let Some(rules) = rules.get(&resource.id) {
                    attributes["rules"] = serde_json::json!(rules);
                }
                Observed::new(&key, resource.kind, &resource.id, status, attributes)
            })
            .collect())
    }

    async fn marked(&self) -> Result<Vec<Marked>> {
        let found = self.list_managed().await?;
        Ok(found
            .into_iter()
            .filter_map(|resource| {
                Some(Marked {
                    kind: resource.kind.to_owned(),
                    deployment_id: resource.deployment_id?,
                    id: resource.id,
                    name: resource.name,
                    key: resource.logical_key,
                })
            })
            .collect())
    }

    async fn remove_orphans(&self, orphans: &[Marked]) -> Result<()> {
        let doomed: Vec<ManagedResource> = orphans
            .iter()
            .filter_map(|orphan| {
                Some(ManagedResource {
                    kind: crate::teardown::DELETE_ORDER
                        .into_iter()
                        .find(|kind| *kind == orphan.kind)?,
                    id: orphan.id.clone(),
                    name: orphan.name.clone(),
                    deployment_id: Some(orphan.deployment_id.clone()),
                    logical_key: orphan.key.clone(),
                    status: String::new(),
                    flavor: None,
                })
            })
            .collect();
        let scope = ServerFilter {
            tags: vec![MANAGED_TAG.to_owned()],
            ..ServerFilter::default()
        };
        self.tear_down(&doomed, &scope, Patience::default()).await
    }
}

impl OpenStack {
    /// The signatures of the rules of the security groups among `found`, by group id.
    async fn rules_of(&self, found: &[ManagedResource]) -> Result<HashMap<String, Vec<String>>> {
        if !found.iter().any(|resource| resource.kind == "security_group") {
            return Ok(HashMap::new());
        }
        let scope = [("project_id", self.project_id().await?)];
        let groups: Vec<SecurityGroup> = self.list_neutron(&scope).await?;
        Ok(groups
            .into_iter()
            .map(|group| {
                let rules = group.security_group_rules.iter().map(SecurityGroupRule::signature);
                (group.id, rules.collect())
            })
            .collect())
    }
}

fn key(deployment_id: &str, logical_key: &str) -> Result<ResourceKey> {
    ResourceKey::new(deployment_id, logical_key)
}

/// Reports a resource the cloud holds under `logical_key`.
async fn report_active(report: &impl Report, logical_key: &str, kind: &str, id: &str, attributes: Value) -> Result<()> {
    Ok(report
        .record(Observed::new(logical_key, kind, id, "ACTIVE", attributes))
        .await?)
}

/// The group and index of a member key, or a permanent error naming it.
fn member_of(server_key: &str) -> Result<(&str, u32)> {
    orch_core::plan::parse_server_key(server_key)
        .ok_or_else(|| CloudError::Config(format!("'{server_key}' is not a server key")))
}

/// The spec of a member of `template`.
fn spec_of(template: &Template, server_key: &str) -> Result<orch_core::plan::ServerSpec> {
    let (group, index) = member_of(server_key)?;
    if !template.vm_config.contains_key(group) {
        return Err(CloudError::Config(format!("the template has no group '{group}'")));
    }
    Ok(orch_core::plan::server_spec(template, group, index))
}

/// The key of a server's port: `server:web:0` -> `port:web:0`.
fn port_key_of(server_key: &str) -> String {
    server_key.replacen("server:", "port:", 1)
}
