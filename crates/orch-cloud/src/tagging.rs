//! Tags that stick. A real Neutron (2026.1, ML2/OVN) advertises `tag-creation` and still
//! refuses `tags` in the create of networks, subnets, routers and security groups (400), and
//! accepts them for ports only to drop them silently. Only `PUT /{collection}/{id}/tags` is
//! sure to work. So orch never trusts that a create's tags took effect: the first create of
//! each collection sends them in the body only when the cloud advertises `tag-creation`, then
//! looks at what the created resource carries, and remembers per cloud and region whether
//! later creates send tags in the body or put them after the create.
//!
//! Between a create and its tag `PUT` a resource exists untagged; `managed` finds such a
//! resource by its deterministic name and tags it, so a crash in that window leaks nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Call, OpenStack};
use crate::error::{CloudError, Result, Service};

/// How a collection takes tags on one cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagMode {
    /// Tags sent in the create body are kept.
    InCreate,
    /// Tags sent in the create body are refused or dropped: create, then `PUT .../tags`.
    AfterCreate,
}

/// What is known per (region, collection), and per region whether `tag-creation` is
/// advertised. Shared by every clone of a client.
#[derive(Debug, Default)]
pub(crate) struct TagModes {
    modes: Mutex<HashMap<(String, String), TagMode>>,
    advertised: Mutex<HashMap<String, bool>>,
}

/// The outcome of one create attempt with tags in the body.
enum Tried {
    Kept(Value),
    /// Created, but without (all) the tags.
    Dropped(Value),
    /// Refused because of the tags: nothing was created.
    Refused,
}

fn carries(resource: &Value, tags: &[String]) -> bool {
    let present: Vec<&str> = resource["tags"]
        .as_array()
        .map(|tags| tags.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    tags.iter().all(|tag| present.contains(&tag.as_str()))
}

fn refused_for_tags(error: &CloudError) -> bool {
    matches!(error, CloudError::BadRequest { message, .. } if message.contains("tags"))
}

impl OpenStack {
    /// How `collection` (as in the URL, e.g. `ports`) took tags on this cloud so far; `None`
    /// before its first create.
    pub fn tag_mode(&self, collection: &str) -> Option<TagMode> {
        let modes = self.tag_modes().modes.lock().expect("tag modes lock");
        modes.get(&(self.region().to_owned(), collection.to_owned())).copied()
    }

    fn learn(&self, collection: &str, mode: TagMode) {
        let mut modes = self.tag_modes().modes.lock().expect("tag modes lock");
        let previous = modes.insert((self.region().to_owned(), collection.to_owned()), mode);
        if previous != Some(mode) {
            tracing::info!(
                collection,
                region = self.region(),
                ?mode,
                "learnt how the cloud takes tags"
            );
        }
    }

    /// Whether the region's Neutron advertises `tag-creation`; asked once per region.
    async fn advertises_tag_creation(&self) -> Result<bool> {
        if let Some(known) = self.tag_modes().advertised.lock().expect("tag lock").get(self.region()) {
            return Ok(*known);
        }
        let reply = self
            .send(Call::new(Service::Network, Method::GET, "/extensions"))
            .await?;
        let advertised = reply.body["extensions"]
            .as_array()
            .is_some_and(|extensions| extensions.iter().any(|e| e["alias"] == "tag-creation"));
        self.tag_modes()
            .advertised
            .lock()
            .expect("tag lock")
            .insert(self.region().to_owned(), advertised);
        Ok(advertised)
    }

    /// Whether the next create of `collection` should carry its tags in the body.
    async fn tags_in_body(&self, collection: &str) -> Result<bool> {
        match self.tag_mode(collection) {
            Some(mode) => Ok(mode == TagMode::InCreate),
            None => self.advertises_tag_creation().await,
        }
    }

    /// Replaces a resource's tags and checks that the cloud kept them.
    pub async fn set_tags(&self, collection: &str, id: &str, tags: &[String]) -> Result<()> {
        let path = format!("/{collection}/{id}/tags");
        let reply = self
            .send(Call::new(Service::Network, Method::PUT, &path).json(json!({"tags": tags})))
            .await?;
        // Neutron answers the tags it now holds; an empty body is taken on trust.
        if reply.body.is_null() || carries(&reply.body, tags) {
            Ok(())
        } else {
            Err(CloudError::Decode {
                service: Service::Network,
                message: format!("the tags of {collection}/{id} did not stick"),
            })
        }
    }

    /// Creates one Neutron resource carrying `tags`, whichever way this cloud takes them.
    /// Returns the resource as the cloud holds it, tags included.
    pub(crate) async fn neutron_create_tagged(
        &self,
        collection: &str,
        singular: &str,
        body: Value,
        tags: &[String],
    ) -> Result<Value> {
        if tags.is_empty() {
            return self.neutron_create(collection, singular, body).await;
        }
        if self.tags_in_body(collection).await? {
            match self
                .try_create_with_tags(collection, singular, body.clone(), tags)
                .await?
            {
                Tried::Kept(resource) => {
                    self.learn(collection, TagMode::InCreate);
                    return Ok(resource);
                }
                Tried::Dropped(mut resource) => {
                    self.learn(collection, TagMode::AfterCreate);
                    self.tag_created(collection, &mut resource, tags).await?;
                    return Ok(resource);
                }
                Tried::Refused => self.learn(collection, TagMode::AfterCreate),
            }
        }
        let mut resource = self.neutron_create(collection, singular, body).await?;
        self.tag_created(collection, &mut resource, tags).await?;
        Ok(resource)
    }

    async fn try_create_with_tags(
        &self,
        collection: &str,
        singular: &str,
        mut body: Value,
        tags: &[String],
    ) -> Result<Tried> {
        body["tags"] = json!(tags);
        match self.neutron_create(collection, singular, body).await {
            Ok(resource) if carries(&resource, tags) => Ok(Tried::Kept(resource)),
            Ok(resource) => Ok(Tried::Dropped(resource)),
            Err(error) if refused_for_tags(&error) => Ok(Tried::Refused),
            Err(error) => Err(error),
        }
    }

    async fn tag_created(&self, collection: &str, resource: &mut Value, tags: &[String]) -> Result<()> {
        let id = resource["id"].as_str().unwrap_or_default().to_owned();
        self.set_tags(collection, &id, tags).await?;
        resource["tags"] = json!(tags);
        Ok(())
    }

    /// Neutron's bulk create (all or nothing) of `items`, each carrying its `tags`.
    pub(crate) async fn neutron_bulk_create_tagged(
        &self,
        collection: &str,
        plural: &str,
        items: Vec<Value>,
        tags: &[Vec<String>],
    ) -> Result<Vec<Value>> {
        if self.tags_in_body(collection).await? {
            let with_tags: Vec<Value> = items
                .iter()
                .zip(tags)
                .map(|(item, tags)| {
                    let mut item = item.clone();
                    item["tags"] = json!(tags);
                    item
                })
                .collect();
            match self.neutron_bulk_create(collection, plural, with_tags).await {
                Ok(created) if created.iter().zip(tags).all(|(r, t)| carries(r, t)) => {
                    self.learn(collection, TagMode::InCreate);
                    return Ok(created);
                }
                Ok(mut created) => {
                    self.learn(collection, TagMode::AfterCreate);
                    self.tag_all_created(collection, &mut created, tags).await?;
                    return Ok(created);
                }
                Err(error) if refused_for_tags(&error) => self.learn(collection, TagMode::AfterCreate),
                Err(error) => return Err(error),
            }
        }
        let mut created = self.neutron_bulk_create(collection, plural, items).await?;
        self.tag_all_created(collection, &mut created, tags).await?;
        Ok(created)
    }

    /// Tags resources created untagged, concurrently (the client's limits pace the calls).
    async fn tag_all_created(&self, collection: &str, created: &mut [Value], tags: &[Vec<String>]) -> Result<()> {
        let mut puts = tokio::task::JoinSet::new();
        for (resource, tags) in created.iter().zip(tags) {
            let (cloud, collection, tags) = (self.clone(), collection.to_owned(), tags.clone());
            let id = resource["id"].as_str().unwrap_or_default().to_owned();
            puts.spawn(async move { cloud.set_tags(&collection, &id, &tags).await });
        }
        while let Some(done) = puts.join_next().await {
            done.map_err(|error| CloudError::Decode {
                service: Service::Network,
                message: format!("a tag request failed: {error}"),
            })??;
        }
        for (resource, tags) in created.iter_mut().zip(tags) {
            resource["tags"] = json!(tags);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_carries_tags_only_when_all_are_present() {
        let tags = vec!["a".to_owned(), "b".to_owned()];
        assert!(carries(&json!({"tags": ["b", "a", "c"]}), &tags));
        assert!(!carries(&json!({"tags": ["a"]}), &tags));
        assert!(!carries(&json!({"tags": []}), &tags));
        assert!(!carries(&json!({}), &tags));
    }

    #[test]
    fn only_a_bad_request_about_tags_counts_as_refused() {
        let refused = CloudError::BadRequest {
            service: Service::Network,
            message: "Attribute 'tags' not allowed in POST".into(),
        };
        let other = CloudError::BadRequest {
            service: Service::Network,
            message: "Invalid input for cidr".into(),
        };
        assert!(refused_for_tags(&refused));
        assert!(!refused_for_tags(&other));
    }
}
