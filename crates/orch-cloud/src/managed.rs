//! Find before create (invariant 1). Every resource orch creates carries a deterministic
//! name and its keys: Neutron and Nova tags `orch_deployment=<id>` and `orch_key=<key>` (plus
//! `orch_managed`), Cinder metadata with the same keys. Before a create the resource is looked
//! up by those keys and adopted when found, so a retried or re-run activity never makes a
//! second copy, and cleanup finds what a lost response never reported.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use crate::client::OpenStack;
use crate::compute::{Server, ServerCreate, ServerFilter};
use crate::error::{CloudError, Result};
use crate::network::{Network, Port, Router, SecurityGroup, Subnet, SubnetCreate};
use crate::volume::Volume;

pub const MANAGED_TAG: &str = "orch_managed";

/// Which deployment a resource belongs to and what it is in it, e.g. `server:web:0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKey {
    pub deployment_id: String,
    pub logical_key: String,
}

impl ResourceKey {
    /// Keys go into Nova tags, which allow neither `/` nor `,` and at most 60 characters.
    pub fn new(deployment_id: &str, logical_key: &str) -> Result<Self> {
        let valid = |text: &str| !text.is_empty() && !text.contains(['/', ',']) && text.is_ascii();
        if !valid(deployment_id)
            || !valid(logical_key)
            || "orch_deployment=".len() + deployment_id.len() > 60
            || "orch_key=".len() + logical_key.len() > 60
        {
            return Err(CloudError::Config(format!("'{logical_key}' of '{deployment_id}' cannot be a resource key: ASCII, no '/' or ',', tags of at most 60 characters")));
        }
        Ok(Self {
            deployment_id: deployment_id.to_owned(),
            logical_key: logical_key.to_owned(),
        })
    }

    /// `orch-<first 8 of the deployment id>-<key with ':' as '-'>`: unique, readable in the
    /// cloud's own console.
    pub fn name(&self) -> String {
        let short: String = self
            .deployment_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect();
        format!("orch-{short}-{}", self.logical_key.replace(':', "-"))
    }

    pub fn tags(&self) -> Vec<String> {
        vec![
            MANAGED_TAG.to_owned(),
            deployment_tag(&self.deployment_id),
            format!("orch_key={}", self.logical_key),
        ]
    }

    /// The same keys as Cinder metadata.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_TAG.to_owned(), "true".to_owned()),
            ("orch_deployment".to_owned(), self.deployment_id.clone()),
            ("orch_key".to_owned(), self.logical_key.clone()),
        ])
    }

    /// `request` with this key's name, tags and metadata.
    pub fn server_request(&self, request: &ServerCreate) -> ServerCreate {
        let mut request = request.clone();
        request.name = self.name();
        request.tags = self.tags();
        request.metadata.extend(self.metadata());
        request
    }

    fn tag_filter(&self) -> Vec<(&'static str, String)> {
        vec![("tags", self.tags().join(","))]
    }
}

pub fn deployment_tag(deployment_id: &str) -> String {
    format!("orch_deployment={deployment_id}")
}

/// The logical key in a resource's tags.
pub fn key_of(tags: &[String]) -> Option<&str> {
    tags.iter().find_map(|tag| tag.strip_prefix("orch_key="))
}

/// A resource of orch's found in the cloud, whatever the database knows.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedResource {
    /// `server`, `volume`, `router`, `subnet`, `network`, `security_group`, `port`.
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub deployment_id: Option<String>,
    pub logical_key: Option<String>,
}

/// Looks for the resource, creates it when absent, and after an ambiguous failure (the
/// create may have happened) looks again before another create. Returns the resource and
/// whether it was adopted rather than created.
pub async fn find_or_create<T, Find, FindFuture, Create, CreateFuture>(find: Find, create: Create) -> Result<(T, bool)>
where
    Find: Fn() -> FindFuture,
    FindFuture: Future<Output = Result<Option<T>>>,
    Create: Fn() -> CreateFuture,
    CreateFuture: Future<Output = Result<T>>,
{
    const ATTEMPTS: u32 = 4;
    let mut attempt = 0;
    loop {
        if let Some(found) = find().await? {
            return Ok((found, true));
        }
        match create().await {
            Ok(created) => return Ok((created, false)),
            Err(error) if error.is_retryable() && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                tracing::warn!(error = %error, attempt, "create failed; looking for the resource before trying again");
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Like [`find_or_create`] when the first look was already done for many resources at once (one
/// list call per batch instead of one per resource): `found` is what that look returned. After
/// a create that may have happened, it looks again by key before creating again.
pub async fn create_unless_found<T, Find, FindFuture, Create, CreateFuture>(
    found: Option<T>,
    find: Find,
    create: Create,
) -> Result<(T, bool)>
where
    Find: Fn() -> FindFuture,
    FindFuture: Future<Output = Result<Option<T>>>,
    Create: Fn() -> CreateFuture,
    CreateFuture: Future<Output = Result<T>>,
{
    if let Some(found) = found {
        return Ok((found, true));
    }
    match create().await {
        Ok(created) => Ok((created, false)),
        Err(error) if error.is_retryable() => find_or_create(find, create).await,
        Err(error) => Err(error),
    }
}

fn first<T>(mut found: Vec<T>, key: &ResourceKey) -> Option<T> {
    if found.len() > 1 {
        tracing::warn!(deployment_id = %key.deployment_id, key = %key.logical_key, count = found.len(), "more than one resource carries this key; adopting the first");
    }
    (!found.is_empty()).then(|| found.remove(0))
}

impl OpenStack {
    pub async fn find_network(&self, key: &ResourceKey) -> Result<Option<Network>> {
        Ok(first(self.list_networks(&key.tag_filter()).await?, key))
    }

    /// The network for `key`, adopted when it exists.
    pub async fn ensure_network(&self, key: &ResourceKey) -> Result<(Network, bool)> {
        let (name, tags) = (key.name(), key.tags());
        find_or_create(|| self.find_network(key), || self.create_network(&name, &tags)).await
    }

    pub async fn find_subnet(&self, key: &ResourceKey) -> Result<Option<Subnet>> {
        Ok(first(self.list_subnets(&key.tag_filter()).await?, key))
    }

    /// The subnet for `key` (its name and tags are set from the key).
    pub async fn ensure_subnet(&self, key: &ResourceKey, request: &SubnetCreate) -> Result<(Subnet, bool)> {
        let request = SubnetCreate {
            name: key.name(),
            tags: key.tags(),
            ..request.clone()
        };
        find_or_create(|| self.find_subnet(key), || self.create_subnet(&request)).await
    }

    pub async fn find_router(&self, key: &ResourceKey) -> Result<Option<Router>> {
        Ok(first(self.list_routers(&key.tag_filter()).await?, key))
    }

    pub async fn ensure_router(&self, key: &ResourceKey, external_network_id: Option<&str>) -> Result<(Router, bool)> {
        let (name, tags) = (key.name(), key.tags());
        find_or_create(
            || self.find_router(key),
            || self.create_router(&name, external_network_id, &tags),
        )
        .await
    }

    pub async fn find_port(&self, key: &ResourceKey) -> Result<Option<Port>> {
        Ok(first(self.list_ports(&key.tag_filter()).await?, key))
    }

    /// The port for `key`: a server's interface on a chosen subnet.
    pub async fn ensure_port(
        &self,
        key: &ResourceKey,
        network_id: &str,
        subnet_id: Option<&str>,
        security_group_ids: &[String],
    ) -> Result<(Port, bool)> {
        let (name, tags) = (key.name(), key.tags());
        find_or_create(
            || self.find_port(key),
            || self.create_port(&name, network_id, subnet_id, security_group_ids, &tags),
        )
        .await
    }

    pub async fn find_security_group(&self, key: &ResourceKey) -> Result<Option<SecurityGroup>> {
        Ok(first(self.list_security_groups(&key.tag_filter()).await?, key))
    }

    pub async fn ensure_security_group(&self, key: &ResourceKey, description: &str) -> Result<(SecurityGroup, bool)> {
        let (name, tags) = (key.name(), key.tags());
        find_or_create(
            || self.find_security_group(key),
            || self.create_security_group(&name, description, &tags),
        )
        .await
    }

    /// The live server carrying `key`; servers being deleted do not count.
    pub async fn find_server(&self, key: &ResourceKey) -> Result<Option<Server>> {
        let servers = self
            .list_servers(&ServerFilter {
                tags: key.tags(),
                ..ServerFilter::default()
            })
            .await?;
        let live: Vec<Server> = servers
            .into_iter()
            .filter(|server| server.status != "DELETED" && server.task_state.as_deref() != Some("deleting"))
            .collect();
        Ok(first(live, key))
    }

    /// Boots the server for `key` unless it exists; returns its id.
    pub async fn ensure_server(&self, key: &ResourceKey, request: &ServerCreate) -> Result<(String, bool)> {
        let request = key.server_request(request);
        find_or_create(
            || async { Ok(self.find_server(key).await?.map(|server| server.id)) },
            || self.create_server(&request),
        )
        .await
    }

    pub async fn find_volume(&self, key: &ResourceKey) -> Result<Option<Volume>> {
        let volumes = self.list_volumes(None, &key.metadata()).await?;
        Ok(first(
            volumes
                .into_iter()
                .filter(|volume| volume.status != "deleting")
                .collect(),
            key,
        ))
    }

    pub async fn ensure_volume(
        &self,
        key: &ResourceKey,
        size_gb: u32,
        volume_type: Option<&str>,
    ) -> Result<(Volume, bool)> {
        let (name, metadata) = (key.name(), key.metadata());
        find_or_create(
            || self.find_volume(key),
            || self.create_volume(&name, size_gb, volume_type, &metadata),
        )
        .await
    }

    /// Every resource of a deployment, found by its tags or metadata: what cleanup deletes.
    pub async fn list_by_deployment(&self, deployment_id: &str) -> Result<Vec<ManagedResource>> {
        let tag = deployment_tag(deployment_id);
        let metadata = BTreeMap::from([("orch_deployment".to_owned(), deployment_id.to_owned())]);
        self.list_tagged(vec![("tags", tag.clone())], vec![tag], metadata).await
    }

    /// Every resource orch manages in this region, for orphan detection.
    pub async fn list_managed(&self) -> Result<Vec<ManagedResource>> {
        let metadata = BTreeMap::from([(MANAGED_TAG.to_owned(), "true".to_owned())]);
        self.list_tagged(
            vec![("tags", MANAGED_TAG.to_owned())],
            vec![MANAGED_TAG.to_owned()],
            metadata,
        )
        .await
    }

    async fn list_tagged(
        &self,
        neutron_filter: Vec<(&'static str, String)>,
        server_tags: Vec<String>,
        volume_metadata: BTreeMap<String, String>,
    ) -> Result<Vec<ManagedResource>> {
        let deployment_of = |tags: &[String]| {
            tags.iter()
                .find_map(|tag| tag.strip_prefix("orch_deployment="))
                .map(str::to_owned)
        };
        let resource = |kind: &'static str, id: String, name: String, tags: &[String]| ManagedResource {
            kind,
            id,
            name,
            deployment_id: deployment_of(tags),
            logical_key: key_of(tags).map(str::to_owned),
        };
        let mut found = Vec::new();
        // Listed in the order cleanup deletes them: dependents first.
        for server in self
            .list_servers(&ServerFilter {
                tags: server_tags,
                ..ServerFilter::default()
            })
            .await?
        {
            if server.status != "DELETED" {
                found.push(resource("server", server.id.clone(), server.name.clone(), &server.tags));
            }
        }
        for volume in self.list_volumes(None, &volume_metadata).await? {
            let tags: Vec<String> = volume
                .metadata
                .iter()
                .map(|(k, v)| {
                    if k == MANAGED_TAG {
                        k.clone()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            found.push(resource(
                "volume",
                volume.id.clone(),
                volume.name.clone().unwrap_or_default(),
                &tags,
            ));
        }
        for port in self.list_ports(&neutron_filter).await? {
            found.push(resource("port", port.id.clone(), port.name.clone(), &port.tags));
        }
        for router in self.list_routers(&neutron_filter).await? {
            found.push(resource("router", router.id.clone(), router.name.clone(), &router.tags));
        }
        for group in self.list_security_groups(&neutron_filter).await? {
            found.push(resource(
                "security_group",
                group.id.clone(),
                group.name.clone(),
                &group.tags,
            ));
        }
        for subnet in self.list_subnets(&neutron_filter).await? {
            found.push(resource("subnet", subnet.id.clone(), subnet.name.clone(), &subnet.tags));
        }
        for network in self.list_networks(&neutron_filter).await? {
            found.push(resource(
                "network",
                network.id.clone(),
                network.name.clone(),
                &network.tags,
            ));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_make_names_tags_and_metadata() {
        let key = ResourceKey::new("0194a7c2-1111-7222-8333-944455556666", "server:web:0").unwrap();
        assert_eq!(key.name(), "orch-0194a7c2-server-web-0");
        assert_eq!(key.tags()[1], "orch_deployment=0194a7c2-1111-7222-8333-944455556666");
        assert_eq!(key_of(&key.tags()), Some("server:web:0"));
        assert_eq!(key.metadata()["orch_key"], "server:web:0");
        assert!(ResourceKey::new("d", "server/web/0").is_err());
        assert!(ResourceKey::new("d", &"k".repeat(60)).is_err());
    }
}
