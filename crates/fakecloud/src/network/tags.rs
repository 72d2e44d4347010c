//! Neutron's tag routes: show, replace, clear, add, remove and check one tag.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{bad_request, collection_named, fail, not_found};
use crate::{service, Authorized, Shared};

fn with_tags(
    cloud: &Shared,
    collection: &str,
    id: &str,
    change: impl FnOnce(&mut Vec<Value>) -> Result<(), Response>,
) -> Result<Vec<Value>, Response> {
    let (kind, singular) = collection_named(collection)?;
    let mut world = cloud.world();
    let Some(resource) = world.neutron_mut(kind).get_mut(id) else {
        return Err(not_found(singular, id));
    };
    let mut tags = resource["tags"].as_array().cloned().unwrap_or_default();
    change(&mut tags)?;
    resource["tags"] = Value::Array(tags.clone());
    Ok(tags)
}

fn valid_tag(tag: &str) -> Result<(), Response> {
    if tag.is_empty() || tag.len() > 255 || tag.contains(',') {
        Err(bad_request(format!("'{tag}' is not a valid tag")))
    } else {
        Ok(())
    }
}

/// What a request does to a resource's tags.
enum TagAction {
    Show,
    Replace(Vec<Value>),
    Clear,
    Add(String),
    Remove(String),
    Check(String),
}

/// The one tag handler behind Neutron's six tag routes.
fn tag_action(cloud: &Shared, collection: &str, id: &str, action: TagAction) -> Response {
    let tag_not_found = |tag: &str| {
        fail(
            StatusCode::NOT_FOUND,
            "TagNotFound",
            format!("Tag {tag} could not be found."),
        )
    };
    let changed = with_tags(cloud, collection, id, |tags| match &action {
        TagAction::Show => Ok(()),
        TagAction::Replace(new_tags) => {
            tags.clone_from(new_tags);
            Ok(())
        }
        TagAction::Clear => {
            tags.clear();
            Ok(())
        }
        TagAction::Add(tag) => {
            valid_tag(tag)?;
            if !tags.iter().any(|t| t == tag.as_str()) {
                tags.push(json!(tag));
            }
            Ok(())
        }
        TagAction::Remove(tag) => {
            let before = tags.len();
            tags.retain(|t| t != tag.as_str());
            if tags.len() == before {
                Err(tag_not_found(tag))
            } else {
                Ok(())
            }
        }
        TagAction::Check(tag) if tags.iter().any(|t| t == tag.as_str()) => Ok(()),
        TagAction::Check(tag) => Err(tag_not_found(tag)),
    });
    match (changed, action) {
        (Err(response), _) => response,
        (Ok(tags), TagAction::Show | TagAction::Replace(_)) => Json(json!({"tags": tags})).into_response(),
        (Ok(_), TagAction::Add(_)) => StatusCode::CREATED.into_response(),
        (Ok(_), _) => StatusCode::NO_CONTENT.into_response(),
    }
}

pub(super) async fn show_tags(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    tag_action(&cloud, &collection, &id, TagAction::Show)
}

pub(super) async fn replace_tags(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path((collection, id)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> Response {
    let Some(tags) = body.and_then(|Json(body)| body["tags"].as_array().cloned()) else {
        return bad_request("tags is required");
    };
    if let Some(Err(response)) = tags
        .iter()
        .map(|tag| valid_tag(tag.as_str().unwrap_or_default()))
        .find(Result::is_err)
    {
        return response;
    }
    tag_action(&cloud, &collection, &id, TagAction::Replace(tags))
}

pub(super) async fn clear_tags(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path((collection, id)): Path<(String, String)>,
) -> Response {
    tag_action(&cloud, &collection, &id, TagAction::Clear)
}

type OneTag = Path<(String, String, String)>;

pub(super) async fn add_tag(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path((collection, id, tag)): OneTag,
) -> Response {
    tag_action(&cloud, &collection, &id, TagAction::Add(tag))
}

pub(super) async fn remove_tag(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path((collection, id, tag)): OneTag,
) -> Response {
    tag_action(&cloud, &collection, &id, TagAction::Remove(tag))
}

pub(super) async fn check_tag(
    State(cloud): State<Shared>,
    _: Authorized<service::Network>,
    Path((collection, id, tag)): OneTag,
) -> Response {
    tag_action(&cloud, &collection, &id, TagAction::Check(tag))
}
