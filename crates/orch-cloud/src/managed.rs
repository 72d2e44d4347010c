//! Find before create: a retried or re-run activity never makes a second copy of anything.
//! Every resource orch creates carries a deterministic name, unique per deployment
//! (`orch-<deployment id>-<key>`), and its keys: Neutron and Nova tags `orch_deployment=<id>`
//! and `orch_key=<key>` (plus `orch_managed`), Cinder metadata with the same keys. Before a
//! create the resource is looked up by its tags and, failing that, by its name: a cloud may
//! drop tags, and a crash can fall between a create and its tagging. What is found by name
//! alone is tagged and adopted. Cleanup lists by tag and by name, so it finds what a lost
//! response never reported and what never got its tags.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use crate::client::OpenStack;
use crate::compute::{Server, ServerCreate, ServerFilter};
use crate::error::{CloudError, Result};
use crate::network::{Network, NeutronResource, Port, Router, SecurityGroup, Subnet, SubnetCreate};
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

    /// `orch-<deployment id>-<key with ':' as '-'>`: unique per deployment (a prefix of the
    /// id would not be: time-ordered ids of deployments made close together share it), and
    /// readable in the cloud's own console.
    pub fn name(&self) -> String {
        name_of(&self.deployment_id, &self.logical_key)
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

/// The name of the resource `logical_key` of a deployment (see [`ResourceKey::name`]); also
/// for a prefix of a key, e.g. `volume:web:0:` for the volumes of `server:web:0`.
pub fn name_of(deployment_id: &str, logical_key: &str) -> String {
    format!("{}{}", name_prefix(deployment_id), logical_key.replace(':', "-"))
}

/// What the name of every resource of a deployment starts with.
pub fn name_prefix(deployment_id: &str) -> String {
    format!("orch-{deployment_id}-")
}

pub fn deployment_tag(deployment_id: &str) -> String {
    format!("orch_deployment={deployment_id}")
}

/// The logical key in a resource's tags.
pub fn key_of(tags: &[String]) -> Option<&str> {
    tags.iter().find_map(|tag| tag.strip_prefix("orch_key="))
}

/// A resource of orch's found in the cloud, whatever the database knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ManagedResource {
    /// `server`, `volume`, `router`, `subnet`, `network`, `security_group`, `port`.
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub deployment_id: Option<String>,
    pub logical_key: Option<String>,
    /// A server's or volume's status; empty for the rest.
    pub status: String,
    /// A server's flavor, by name.
    pub flavor: Option<String>,
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

fn deployment_of(tags: &[String]) -> Option<String> {
    tags.iter()
        .find_map(|tag| tag.strip_prefix("orch_deployment="))
        .map(str::to_owned)
}

/// Whether a resource with `tags` may be the one of `key`: it carries that key, or no key at
/// all (its tags never arrived).
fn may_be(tags: &[String], key: &ResourceKey) -> bool {
    key_of(tags).is_none_or(|found| found == key.logical_key)
}

fn managed<T: NeutronResource>(resource: &T) -> ManagedResource {
    ManagedResource {
        kind: T::KIND,
        id: resource.id().to_owned(),
        name: resource.name().to_owned(),
        deployment_id: deployment_of(resource.tags()),
        logical_key: key_of(resource.tags()).map(str::to_owned),
        status: String::new(),
        flavor: None,
    }
}

/// Ports that belong to the network rather than to anyone's server: DHCP, router interfaces
/// and gateways, OVN's metadata port. Neutron removes them with their subnet or router.
fn owned_by_network(port: &Port) -> bool {
    port.device_owner.starts_with("network:")
}

impl OpenStack {
    /// The Neutron resource of `key`: by its tags, else by its name, in which case it is
    /// tagged before it is returned.
    pub async fn find_neutron<T: NeutronResource>(&self, key: &ResourceKey) -> Result<Option<T>> {
        if let Some(found) = first(self.list_neutron::<T>(&key.tag_filter()).await?, key) {
            return Ok(Some(found));
        }
        let named: Vec<T> = self
            .list_neutron::<T>(&[("name", key.name())])
            .await?
            .into_iter()
            .filter(|resource| may_be(resource.tags(), key))
            .collect();
        let Some(mut found) = first(named, key) else {
            return Ok(None);
        };
        self.tag_untagged(&mut found, key).await?;
        Ok(Some(found))
    }

    /// Puts the key's tags on a resource found by name without them.
    async fn tag_untagged<T: NeutronResource>(&self, resource: &mut T, key: &ResourceKey) -> Result<()> {
        let missing: Vec<String> = key
            .tags()
            .into_iter()
            .filter(|tag| !resource.tags().contains(tag))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        tracing::warn!(kind = T::KIND, id = resource.id(), key = %key.logical_key, "found by name without its tags; tagging it");
        let mut tags = resource.tags().to_vec();
        tags.extend(missing);
        self.set_tags(T::COLLECTION, resource.id(), &tags).await?;
        *resource.tags_mut() = tags;
        Ok(())
    }

    async fn ensure_neutron<T, Create, CreateFuture>(&self, key: &ResourceKey, create: Create) -> Result<(T, bool)>
    where
        T: NeutronResource,
        Create: Fn() -> CreateFuture,
        CreateFuture: Future<Output = Result<T>>,
    {
        find_or_create(|| self.find_neutron::<T>(key), create).await
    }

    pub async fn find_network(&self, key: &ResourceKey) -> Result<Option<Network>> {
        self.find_neutron(key).await
    }

    /// The network for `key`, adopted when it exists.
    pub async fn ensure_network(&self, key: &ResourceKey) -> Result<(Network, bool)> {
        let (name, tags) = (key.name(), key.tags());
        self.ensure_neutron(key, || self.create_network(&name, &tags)).await
    }

    /// The subnet for `key` (its name and tags are set from the key).
    pub async fn ensure_subnet(&self, key: &ResourceKey, request: &SubnetCreate) -> Result<(Subnet, bool)> {
        let request = SubnetCreate {
            name: key.name(),
            tags: key.tags(),
            ..request.clone()
        };
        self.ensure_neutron(key, || self.create_subnet(&request)).await
    }

    pub async fn ensure_router(&self, key: &ResourceKey, external_network_id: Option<&str>) -> Result<(Router, bool)> {
        let (name, tags) = (key.name(), key.tags());
        self.ensure_neutron(key, || self.create_router(&name, external_network_id, &tags))
            .await
    }

    pub async fn find_port(&self, key: &ResourceKey) -> Result<Option<Port>> {
        self.find_neutron(key).await
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
        self.ensure_neutron(key, || {
            self.create_port(&name, network_id, subnet_id, security_group_ids, &tags)
        })
        .await
    }

    /// The ports of `keys` that exist on `network_id`, by logical key: one list call for the
    /// whole set. A port is known by its tags or, when they never arrived, by its name; such
    /// a port is tagged here.
    pub async fn find_ports(&self, network_id: &str, keys: &[ResourceKey]) -> Result<HashMap<String, Port>> {
        let on_network: Vec<Port> = self.list_neutron(&[("network_id", network_id.to_owned())]).await?;
        let mut found = HashMap::new();
        for key in keys {
            let candidates: Vec<Port> = on_network
                .iter()
                .filter(|port| {
                    key_of(&port.tags) == Some(&key.logical_key) || (port.name == key.name() && may_be(&port.tags, key))
                })
                .cloned()
                .collect();
            if let Some(mut port) = first(candidates, key) {
                self.tag_untagged(&mut port, key).await?;
                found.insert(key.logical_key.clone(), port);
            }
        }
        Ok(found)
    }

    pub async fn ensure_security_group(&self, key: &ResourceKey, description: &str) -> Result<(SecurityGroup, bool)> {
        let (name, tags) = (key.name(), key.tags());
        self.ensure_neutron(key, || self.create_security_group(&name, description, &tags))
            .await
    }

    /// The live server carrying `key`, by its tags or else by its name; servers being
    /// deleted do not count. One found by name alone is tagged.
    pub async fn find_server(&self, key: &ResourceKey) -> Result<Option<Server>> {
        let live = |servers: Vec<Server>| -> Vec<Server> { servers.into_iter().filter(Server::is_live).collect() };
        let tagged = live(
            self.list_servers(&ServerFilter {
                tags: key.tags(),
                ..ServerFilter::default()
            })
            .await?,
        );
        if let Some(found) = first(tagged, key) {
            return Ok(Some(found));
        }
        let named: Vec<Server> = live(
            self.list_servers(&ServerFilter {
                name: Some(key.name()),
                ..ServerFilter::default()
            })
            .await?,
        )
        .into_iter()
        .filter(|server| may_be(&server.tags, key))
        .collect();
        let Some(mut found) = first(named, key) else {
            return Ok(None);
        };
        if key_of(&found.tags).is_none() {
            tracing::warn!(id = %found.id, key = %key.logical_key, "server found by name without its tags; tagging it");
            let mut tags = found.tags.clone();
            tags.extend(key.tags());
            self.set_server_tags(&found.id, &tags).await?;
            found.tags = tags;
        }
        Ok(Some(found))
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

    /// The volume of `key`, by its metadata or else by its name (then given the metadata).
    pub async fn find_volume(&self, key: &ResourceKey) -> Result<Option<Volume>> {
        let live = |volumes: Vec<Volume>| -> Vec<Volume> {
            volumes
                .into_iter()
                .filter(|volume| volume.status != "deleting")
                .collect()
        };
        if let Some(found) = first(live(self.list_volumes(None, &key.metadata()).await?), key) {
            return Ok(Some(found));
        }
        let named: Vec<Volume> = live(self.list_volumes(Some(&key.name()), &BTreeMap::new()).await?)
            .into_iter()
            .filter(|volume| {
                volume
                    .metadata
                    .get("orch_key")
                    .is_none_or(|found| *found == key.logical_key)
            })
            .collect();
        let Some(found) = first(named, key) else {
            return Ok(None);
        };
        if !found.metadata.contains_key("orch_key") {
            tracing::warn!(id = %found.id, key = %key.logical_key, "volume found by name without its metadata; adding it");
            self.set_volume_metadata(&found.id, &key.metadata()).await?;
        }
        Ok(Some(found))
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

    /// Every resource of a deployment, found by its tags or metadata and by its name (so
    /// that what never got its tags is found too): what cleanup deletes. Listed in the order
    /// cleanup deletes them, dependents first.
    pub async fn list_by_deployment(&self, deployment_id: &str) -> Result<Vec<ManagedResource>> {
        let tag = deployment_tag(deployment_id);
        let prefix = name_prefix(deployment_id);
        let ours = |name: &str, tags: &[String]| tags.contains(&tag) || name.starts_with(&prefix);
        let mut found = self.servers_of(&tag, &prefix).await?;
        found.extend(
            self.volumes_of(|volume: &Volume| {
                volume.metadata.get("orch_deployment").map(String::as_str) == Some(deployment_id)
                    || volume.name.as_deref().is_some_and(|name| name.starts_with(&prefix))
            })
            .await?,
        );
        let project = self.project_id().await?;
        let scope = vec![("project_id", project)];
        let networks: Vec<Network> = self.neutron_of(&scope, &ours).await?;
        // Ours by tag or name, and whatever else serves a server on our networks.
        let mut ports: Vec<Port> = self.neutron_of(&scope, &ours).await?;
        for network in &networks {
            let on_network: Vec<Port> = self.list_neutron(&[("network_id", network.id.clone())]).await?;
            ports.extend(on_network.into_iter().filter(|port| !owned_by_network(port)));
        }
        found.extend(dedup(ports.iter().map(managed)));
        found.extend(self.routers_groups_subnets(&scope, &ours).await?);
        found.extend(networks.iter().map(managed));
        for resource in &mut found {
            resource.deployment_id.get_or_insert_with(|| deployment_id.to_owned());
        }
        Ok(found)
    }

    /// Every resource orch manages in this region, for orphan detection.
    pub async fn list_managed(&self) -> Result<Vec<ManagedResource>> {
        let is_managed =
            |name: &str, tags: &[String]| tags.iter().any(|t| t == MANAGED_TAG) || name.starts_with("orch-");
        let mut found = self.servers_of(MANAGED_TAG, "orch-").await?;
        found.extend(
            self.volumes_of(|volume: &Volume| volume.metadata.contains_key(MANAGED_TAG))
                .await?,
        );
        let project = self.project_id().await?;
        let scope = vec![("project_id", project)];
        let ports: Vec<Port> = self.neutron_of(&scope, &is_managed).await?;
        found.extend(ports.iter().map(managed));
        found.extend(self.routers_groups_subnets(&scope, &is_managed).await?);
        let networks: Vec<Network> = self.neutron_of(&scope, &is_managed).await?;
        found.extend(networks.iter().map(managed));
        Ok(found)
    }

    /// The routers, security groups and subnets that `wanted` picks, in the order of deletion.
    async fn routers_groups_subnets(
        &self,
        scope: &[(&'static str, String)],
        wanted: &(dyn Fn(&str, &[String]) -> bool + Sync),
    ) -> Result<Vec<ManagedResource>> {
        let routers: Vec<Router> = self.neutron_of(scope, wanted).await?;
        let groups: Vec<SecurityGroup> = self.neutron_of(scope, wanted).await?;
        let subnets: Vec<Subnet> = self.neutron_of(scope, wanted).await?;
        let mut found: Vec<ManagedResource> = routers.iter().map(managed).collect();
        found.extend(groups.iter().map(managed));
        found.extend(subnets.iter().map(managed));
        Ok(found)
    }

    /// Live servers carrying `tag` or named with `prefix`.
    async fn servers_of(&self, tag: &str, prefix: &str) -> Result<Vec<ManagedResource>> {
        let mut servers = self
            .list_servers(&ServerFilter {
                tags: vec![tag.to_owned()],
                ..ServerFilter::default()
            })
            .await?;
        servers.extend(
            self.list_servers(&ServerFilter {
                name_prefix: Some(prefix.to_owned()),
                ..ServerFilter::default()
            })
            .await?,
        );
        Ok(dedup(servers.iter().filter(|server| server.status != "DELETED").map(
            |server| ManagedResource {
                kind: "server",
                id: server.id.clone(),
                name: server.name.clone(),
                deployment_id: deployment_of(&server.tags),
                logical_key: key_of(&server.tags).map(str::to_owned),
                status: server.status.clone(),
                flavor: server.flavor["original_name"].as_str().map(str::to_owned),
            },
        )))
    }

    /// The project's volumes that `wanted` picks.
    async fn volumes_of(&self, wanted: impl Fn(&Volume) -> bool) -> Result<Vec<ManagedResource>> {
        let volumes = self.list_volumes(None, &BTreeMap::new()).await?;
        Ok(volumes
            .iter()
            .filter(|volume| wanted(volume))
            .map(|volume| ManagedResource {
                kind: "volume",
                id: volume.id.clone(),
                name: volume.name.clone().unwrap_or_default(),
                deployment_id: volume.metadata.get("orch_deployment").cloned(),
                logical_key: volume.metadata.get("orch_key").cloned(),
                status: volume.status.clone(),
                flavor: None,
            })
            .collect())
    }

    /// The project's resources of one kind whose name and tags `wanted` picks.
    async fn neutron_of<T: NeutronResource>(
        &self,
        scope: &[(&'static str, String)],
        wanted: &(dyn Fn(&str, &[String]) -> bool + Sync),
    ) -> Result<Vec<T>> {
        let all: Vec<T> = self.list_neutron(scope).await?;
        Ok(all
            .into_iter()
            .filter(|resource| wanted(resource.name(), resource.tags()))
            .collect())
    }
}

/// The resources in their first order, each once.
fn dedup(resources: impl Iterator<Item = ManagedResource>) -> Vec<ManagedResource> {
    let mut seen = std::collections::HashSet::new();
    resources.filter(|resource| seen.insert(resource.id.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_without_a_key_may_be_anyones_but_one_with_another_key_is_not() {
        let key = ResourceKey::new("d1", "network").unwrap();
        assert!(may_be(&[], &key));
        assert!(may_be(&key.tags(), &key));
        assert!(!may_be(&ResourceKey::new("d1", "router").unwrap().tags(), &key));
    }

    #[test]
    fn keys_make_names_tags_and_metadata() {
        let key = ResourceKey::new("0194a7c2-1111-7222-8333-944455556666", "server:web:0").unwrap();
        assert_eq!(key.name(), "orch-0194a7c2-1111-7222-8333-944455556666-server-web-0");
        assert!(key.name().starts_with(&name_prefix(&key.deployment_id)));
        assert_eq!(key.tags()[1], "orch_deployment=0194a7c2-1111-7222-8333-944455556666");
        assert_eq!(key_of(&key.tags()), Some("server:web:0"));
        assert_eq!(key.metadata()["orch_key"], "server:web:0");
        assert!(ResourceKey::new("d", "server/web/0").is_err());
        assert!(ResourceKey::new("d", &"k".repeat(60)).is_err());
    }
}
