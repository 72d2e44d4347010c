//! Nova v2.1 and Glance v2: servers, flavors, images, key pairs, volume attachments.
//! Calls that need server tags send microversion 2.52 (tags on create, 2.26 for filters).

use std::collections::BTreeMap;

use base64::Engine;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::client::{decode, field, Call, OpenStack, Reply};
use crate::error::Service;
use crate::error::{CloudError, Result};

/// The microversion orch speaks to Nova: server tags on create and in filters.
pub const COMPUTE_MICROVERSION: &str = "compute 2.52";

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Server {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub addresses: BTreeMap<String, Vec<ServerAddress>>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub updated: String,
    #[serde(default)]
    pub fault: Option<Value>,
    #[serde(default)]
    pub flavor: Value,
    /// `{"id": ...}`, or `""` for a server booted from a volume.
    #[serde(default)]
    pub image: Value,
    #[serde(rename = "OS-EXT-STS:task_state", default)]
    pub task_state: Option<String>,
}

impl Server {
    /// Neither deleted nor being deleted (real Nova lists a deleted server for a while).
    pub fn is_live(&self) -> bool {
        self.status != "DELETED" && self.task_state.as_deref() != Some("deleting")
    }

    /// The first fixed IPv4 address, if any.
    pub fn ip(&self) -> Option<&str> {
        self.addresses
            .values()
            .flatten()
            .find(|address| address.version == 4)
            .map(|address| address.addr.as_str())
    }

    /// Why the server is in ERROR, in Nova's words.
    pub fn fault_message(&self) -> Option<String> {
        self.fault
            .as_ref()
            .and_then(|fault| fault["message"].as_str())
            .map(str::to_owned)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ServerAddress {
    pub addr: String,
    #[serde(default)]
    pub version: u8,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub vcpus: u64,
    #[serde(default)]
    pub ram: u64,
    #[serde(default)]
    pub disk: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Image {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct KeyPair {
    pub name: String,
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub public_key: String,
}

/// What to boot.
#[derive(Debug, Clone, Default)]
pub struct ServerCreate {
    pub name: String,
    pub flavor_id: String,
    pub image_id: String,
    pub network_ids: Vec<String>,
    /// Pre-created ports (each on a chosen subnet); used instead of `network_ids` when given.
    pub port_ids: Vec<String>,
    pub security_groups: Vec<String>,
    pub key_name: Option<String>,
    /// Plain text; encoded as base64 for Nova.
    pub user_data: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
}

/// Filters of the server list. `changes_since` is how batched polling asks only for what
/// changed since the last cycle.
#[derive(Debug, Clone, Default)]
pub struct ServerFilter {
    /// Exact name.
    pub name: Option<String>,
    /// Names starting with this.
    pub name_prefix: Option<String>,
    /// Servers carrying every one of these tags.
    pub tags: Vec<String>,
    /// RFC 3339 time.
    pub changes_since: Option<String>,
    pub status: Option<String>,
}

impl OpenStack {
    #[tracing::instrument(skip(self, request), fields(name = %request.name))]
    pub async fn create_server(&self, request: &ServerCreate) -> Result<String> {
        let mut server = json!({
            "name": request.name,
            "flavorRef": request.flavor_id,
            "imageRef": request.image_id,
            "networks": request.network_ids.iter().map(|id| json!({"uuid": id})).collect::<Vec<_>>(),
            "metadata": request.metadata,
        });
        if !request.port_ids.is_empty() {
            server["networks"] = json!(request
                .port_ids
                .iter()
                .map(|id| json!({"port": id}))
                .collect::<Vec<_>>());
        } else if request.network_ids.is_empty() {
            server["networks"] = json!("none");
        }
        if !request.security_groups.is_empty() {
            server["security_groups"] = json!(request
                .security_groups
                .iter()
                .map(|name| json!({"name": name}))
                .collect::<Vec<_>>());
        }
        if !request.tags.is_empty() {
            server["tags"] = json!(request.tags);
        }
        if let Some(key) = &request.key_name {
            server["key_name"] = json!(key);
        }
        if let Some(data) = &request.user_data {
            server["user_data"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
        }
        let reply = self
            .send(
                Call::new(Service::Compute, Method::POST, "/servers")
                    .json(json!({"server": server}))
                    .microversion(COMPUTE_MICROVERSION),
            )
            .await?;
        field(reply, "server")["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CloudError::Decode {
                service: Service::Compute,
                message: "create answered without a server id".into(),
            })
    }

    #[tracing::instrument(skip(self))]
    pub async fn get_server(&self, id: &str) -> Result<Server> {
        let path = format!("/servers/{id}");
        let reply = self
            .send(Call::new(Service::Compute, Method::GET, &path).microversion(COMPUTE_MICROVERSION))
            .await?;
        decode(Service::Compute, field(reply, "server"))
    }

    /// Servers matching `filter`, with details, following Nova's pagination.
    #[tracing::instrument(skip(self))]
    pub async fn list_servers(&self, filter: &ServerFilter) -> Result<Vec<Server>> {
        let mut servers: Vec<Server> = Vec::new();
        loop {
            let mut call = Call::new(Service::Compute, Method::GET, "/servers/detail")
                .microversion(COMPUTE_MICROVERSION)
                .query("limit", "1000");
            // Nova's name filter is a regular expression.
            if let Some(name) = &filter.name {
                call = call.query("name", format!("^{}$", regex_escape(name)));
            } else if let Some(prefix) = &filter.name_prefix {
                call = call.query("name", format!("^{}", regex_escape(prefix)));
            }
            if !filter.tags.is_empty() {
                call = call.query("tags", filter.tags.join(","));
            }
            if let Some(since) = &filter.changes_since {
                call = call.query("changes-since", since.clone());
            }
            if let Some(status) = &filter.status {
                call = call.query("status", status.clone());
            }
            if let Some(last) = servers.last() {
                call = call.query("marker", last.id.clone());
            }
            let page: Vec<Server> = decode(Service::Compute, field(self.send(call).await?, "servers"))?;
            let full = page.len() == 1000;
            servers.extend(page);
            if !full {
                return Ok(servers);
            }
        }
    }

    /// Replaces a server's tags.
    pub async fn set_server_tags(&self, id: &str, tags: &[String]) -> Result<()> {
        let path = format!("/servers/{id}/tags");
        self.send(
            Call::new(Service::Compute, Method::PUT, &path)
                .json(json!({"tags": tags}))
                .microversion(COMPUTE_MICROVERSION),
        )
        .await
        .map(|_| ())
    }

    /// Deletes a server; a server that is already gone counts as deleted.
    #[tracing::instrument(skip(self))]
    pub async fn delete_server(&self, id: &str) -> Result<()> {
        let path = format!("/servers/{id}");
        ignore_not_found(self.send(Call::new(Service::Compute, Method::DELETE, &path)).await)
    }

    #[tracing::instrument(skip(self))]
    pub async fn resize_server(&self, id: &str, flavor_id: &str) -> Result<()> {
        let path = format!("/servers/{id}/action");
        self.send(Call::new(Service::Compute, Method::POST, &path).json(json!({"resize": {"flavorRef": flavor_id}})))
            .await
            .map(|_| ())
    }

    /// One of a server's actions (`POST /servers/{id}/action`).
    async fn server_action(&self, id: &str, body: Value) -> Result<()> {
        let path = format!("/servers/{id}/action");
        self.send(Call::new(Service::Compute, Method::POST, &path).json(body))
            .await
            .map(|_| ())
    }

    /// Rebuilds a server from another image; it keeps its id, ports and volumes.
    #[tracing::instrument(skip(self))]
    pub async fn rebuild_server(&self, id: &str, image_id: &str) -> Result<()> {
        self.server_action(id, json!({"rebuild": {"imageRef": image_id}})).await
    }

    /// Starts a server that is shut off (`os-start`).
    #[tracing::instrument(skip(self))]
    pub async fn start_server(&self, id: &str) -> Result<()> {
        self.server_action(id, json!({"os-start": null})).await
    }

    /// Shuts a server off (`os-stop`). orch never stops a server itself; its tests play
    /// someone who does.
    #[tracing::instrument(skip(self))]
    pub async fn stop_server(&self, id: &str) -> Result<()> {
        self.server_action(id, json!({"os-stop": null})).await
    }

    #[tracing::instrument(skip(self))]
    pub async fn confirm_resize(&self, id: &str) -> Result<()> {
        self.server_action(id, json!({"confirmResize": null})).await
    }

    /// Merges `metadata` into the server's metadata.
    #[tracing::instrument(skip(self, metadata))]
    pub async fn set_server_metadata(
        &self,
        id: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let path = format!("/servers/{id}/metadata");
        let reply = self
            .send(Call::new(Service::Compute, Method::POST, &path).json(json!({"metadata": metadata})))
            .await?;
        decode(Service::Compute, field(reply, "metadata"))
    }

    #[tracing::instrument(skip(self))]
    pub async fn list_flavors(&self) -> Result<Vec<Flavor>> {
        decode(
            Service::Compute,
            field(
                self.send(Call::new(Service::Compute, Method::GET, "/flavors/detail"))
                    .await?,
                "flavors",
            ),
        )
    }

    /// A flavor by id or, failing that, by name. Not found is a `BadRequest`-class error:
    /// no retry will make an unknown flavor exist.
    #[tracing::instrument(skip(self))]
    pub async fn find_flavor(&self, name_or_id: &str) -> Result<Flavor> {
        let flavors = self.list_flavors().await?;
        flavors
            .iter()
            .find(|flavor| flavor.id == name_or_id)
            .or_else(|| flavors.iter().find(|flavor| flavor.name == name_or_id))
            .cloned()
            .ok_or_else(|| CloudError::NotFound {
                service: Service::Compute,
                message: format!("no flavor has the name or id '{name_or_id}'"),
            })
    }

    /// An image by id or name, through Glance.
    #[tracing::instrument(skip(self))]
    pub async fn find_image(&self, name_or_id: &str) -> Result<Image> {
        let path = format!("/images/{name_or_id}");
        match self.send(Call::new(Service::Image, Method::GET, &path)).await {
            Ok(reply) => return decode(Service::Image, reply.body),
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error),
        }
        let reply = self
            .send(Call::new(Service::Image, Method::GET, "/images").query("name", name_or_id))
            .await?;
        let images: Vec<Image> = decode(Service::Image, field(reply, "images"))?;
        images.into_iter().next().ok_or_else(|| CloudError::NotFound {
            service: Service::Image,
            message: format!("no image has the name or id '{name_or_id}'"),
        })
    }

    #[tracing::instrument(skip(self, public_key))]
    pub async fn create_keypair(&self, name: &str, public_key: &str) -> Result<KeyPair> {
        let body = json!({"keypair": {"name": name, "public_key": public_key}});
        decode(
            Service::Compute,
            field(
                self.send(Call::new(Service::Compute, Method::POST, "/os-keypairs").json(body))
                    .await?,
                "keypair",
            ),
        )
    }

    #[tracing::instrument(skip(self))]
    pub async fn list_keypairs(&self) -> Result<Vec<KeyPair>> {
        let reply = self
            .send(Call::new(Service::Compute, Method::GET, "/os-keypairs"))
            .await?;
        let wrapped: Vec<Map<String, Value>> = decode(Service::Compute, field(reply, "keypairs"))?;
        wrapped
            .into_iter()
            .map(|mut item| decode(Service::Compute, item.remove("keypair").unwrap_or_default()))
            .collect()
    }

    #[tracing::instrument(skip(self))]
    pub async fn delete_keypair(&self, name: &str) -> Result<()> {
        let path = format!("/os-keypairs/{name}");
        ignore_not_found(self.send(Call::new(Service::Compute, Method::DELETE, &path)).await)
    }

    #[tracing::instrument(skip(self))]
    pub async fn attach_volume(&self, server_id: &str, volume_id: &str) -> Result<()> {
        let path = format!("/servers/{server_id}/os-volume_attachments");
        let body = json!({"volumeAttachment": {"volumeId": volume_id}});
        self.send(Call::new(Service::Compute, Method::POST, &path).json(body))
            .await
            .map(|_| ())
    }

    /// Volume ids attached to a server.
    #[tracing::instrument(skip(self))]
    pub async fn list_attachments(&self, server_id: &str) -> Result<Vec<String>> {
        let path = format!("/servers/{server_id}/os-volume_attachments");
        let reply = self.send(Call::new(Service::Compute, Method::GET, &path)).await?;
        let attachments: Vec<Value> = decode(Service::Compute, field(reply, "volumeAttachments"))?;
        Ok(attachments
            .iter()
            .filter_map(|a| a["volumeId"].as_str().map(str::to_owned))
            .collect())
    }

    #[tracing::instrument(skip(self))]
    pub async fn detach_volume(&self, server_id: &str, volume_id: &str) -> Result<()> {
        let path = format!("/servers/{server_id}/os-volume_attachments/{volume_id}");
        ignore_not_found(self.send(Call::new(Service::Compute, Method::DELETE, &path)).await)
    }
}

/// A delete of something already gone has done its job.
pub(crate) fn ignore_not_found(result: Result<Reply>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(error) if error.is_not_found() => Ok(()),
        Err(error) => Err(error),
    }
}

/// Escapes a literal for Nova's regular-expression name filter.
fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.^$|?*+()[]{}".contains(c);
            special.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}
