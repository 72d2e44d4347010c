//! Cinder v3: volumes, and waiting for them to become available or go away.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{Call, OpenStack};
use crate::compute::ignore_not_found;
use crate::error::Service;
use crate::error::{CloudError, Result};

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Volume {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub attachments: Vec<Value>,
}

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    crate::client::decode(Service::Volume, value)
}

impl OpenStack {
    #[tracing::instrument(skip(self, metadata))]
    pub async fn create_volume(
        &self,
        name: &str,
        size_gb: u32,
        volume_type: Option<&str>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Volume> {
        let mut volume = json!({"name": name, "size": size_gb, "metadata": metadata});
        if let Some(volume_type) = volume_type {
            volume["volume_type"] = json!(volume_type);
        }
        let reply = self
            .send(Call::new(Service::Volume, Method::POST, "/volumes").json(json!({"volume": volume})))
            .await?;
        decode(reply.body["volume"].clone())
    }

    pub async fn get_volume(&self, id: &str) -> Result<Volume> {
        let path = format!("/volumes/{id}");
        decode(self.send(Call::new(Service::Volume, Method::GET, &path)).await?.body["volume"].clone())
    }

    /// Volumes with this exact name and/or carrying all of `metadata`, following Cinder's
    /// pages (at most 1,000 volumes each).
    pub async fn list_volumes(&self, name: Option<&str>, metadata: &BTreeMap<String, String>) -> Result<Vec<Volume>> {
        let mut volumes: Vec<Volume> = Vec::new();
        loop {
            let mut call = Call::new(Service::Volume, Method::GET, "/volumes/detail").query("limit", "1000");
            if let Some(name) = name {
                call = call.query("name", name);
            }
            if !metadata.is_empty() {
                call = call.query("metadata", json!(metadata).to_string());
            }
            if let Some(last) = volumes.last() {
                call = call.query("marker", last.id.clone());
            }
            let reply = self.send(call).await?;
            let more = reply.body["volumes_links"]
                .as_array()
                .is_some_and(|links| !links.is_empty());
            let page: Vec<Volume> = decode(reply.body["volumes"].clone())?;
            let empty = page.is_empty();
            volumes.extend(page);
            if !more || empty {
                return Ok(volumes);
            }
        }
    }

    /// Adds `metadata` to a volume's (Cinder merges).
    pub async fn set_volume_metadata(&self, id: &str, metadata: &BTreeMap<String, String>) -> Result<()> {
        let path = format!("/volumes/{id}/metadata");
        self.send(Call::new(Service::Volume, Method::POST, &path).json(json!({"metadata": metadata})))
            .await
            .map(|_| ())
    }

    pub async fn delete_volume(&self, id: &str) -> Result<()> {
        let path = format!("/volumes/{id}");
        ignore_not_found(self.send(Call::new(Service::Volume, Method::DELETE, &path)).await)
    }

    /// Polls until the volume is `status` (`None`: until it is gone). `error` ends the wait.
    #[tracing::instrument(skip(self))]
    pub async fn wait_volume(&self, id: &str, status: Option<&str>, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut interval = Duration::from_millis(200);
        loop {
            match (self.get_volume(id).await, status) {
                (Err(error), None) if error.is_not_found() => return Ok(()),
                (Err(error), _) => return Err(error),
                (Ok(volume), Some(wanted)) if volume.status == wanted => return Ok(()),
                (Ok(volume), _) if volume.status.starts_with("error") => {
                    return Err(CloudError::ResourceFailed {
                        what: format!("volume {id}"),
                        message: format!("status {}", volume.status),
                    });
                }
                (Ok(_), _) => {}
            }
            if Instant::now() >= deadline {
                return Err(CloudError::WaitTimeout {
                    what: format!("volume {id} to be {}", status.unwrap_or("deleted")),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_secs(5));
        }
    }
}
