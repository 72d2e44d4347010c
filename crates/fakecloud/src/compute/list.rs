//! Listing servers: Nova's filters (name as a regular expression, status, tags, tags-any,
//! changes-since with the servers deleted since), newest first, in pages.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{fail, microversion, render_server_at, with_version};
use crate::world::Server;
use crate::{service, Authorized, Shared};

fn name_matches(pattern: &str, name: &str) -> bool {
    // Escaped literals (`\.`) stand for themselves.
    let unescaped = unescape(pattern);
    let pattern = unescaped.as_str();
    match (pattern.strip_prefix('^'), pattern.ends_with('$')) {
        (Some(rest), true) => rest.trim_end_matches('$') == name,
        (Some(rest), false) => name.starts_with(rest),
        (None, true) => name.ends_with(pattern.trim_end_matches('$')),
        (None, false) => name.contains(pattern),
    }
}

fn unescape(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        })
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc())
        })
}

fn tag_list(value: Option<&String>) -> Vec<String> {
    value
        .map(|tags| tags.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A server list request: Nova's filters and paging.
struct ListQuery<'q> {
    changes_since: Option<DateTime<Utc>>,
    limit: Option<usize>,
    marker: Option<&'q String>,
    name: Option<&'q String>,
    status: Option<&'q String>,
    tags: Vec<String>,
    tags_any: Vec<String>,
}

impl<'q> ListQuery<'q> {
    fn read(query: &'q HashMap<String, String>) -> Result<Self, Response> {
        let changes_since = match query.get("changes-since").or_else(|| query.get("changes_since")) {
            Some(text) => Some(parse_time(text).ok_or_else(|| {
                fail(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid filter field: changes-since. '{text}' is not a valid timestamp"),
                )
            })?),
            None => None,
        };
        let limit = match query.get("limit").map(|limit| limit.parse()) {
            Some(Ok(limit)) => Some(limit),
            Some(Err(_)) => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "Invalid input for query parameters limit.",
                ))
            }
            None => None,
        };
        Ok(Self {
            changes_since,
            limit,
            marker: query.get("marker"),
            name: query.get("name"),
            status: query.get("status"),
            tags: tag_list(query.get("tags")),
            tags_any: tag_list(query.get("tags-any")),
        })
    }

    fn admits(&self, server: &Server, now: DateTime<Utc>) -> bool {
        self.changes_since.is_none_or(|since| server.updated(now) >= since)
            && self.name.is_none_or(|pattern| name_matches(pattern, &server.name))
            && self
                .status
                .is_none_or(|status| server.status(now).eq_ignore_ascii_case(status))
            && self.tags.iter().all(|tag| server.tags.contains(tag))
            && (self.tags_any.is_empty() || self.tags_any.iter().any(|tag| server.tags.contains(tag)))
    }

    /// A server deleted since `changes-since`, as Nova still lists it (DELETED).
    fn admits_deleted(&self, removed_at: DateTime<Utc>, shown: &Value) -> bool {
        let name_ok = self
            .name
            .is_none_or(|pattern| name_matches(pattern, shown["name"].as_str().unwrap_or_default()));
        let shown_tags: Vec<&str> = shown["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        self.changes_since.is_some_and(|since| removed_at >= since)
            && name_ok
            && self.tags.iter().all(|tag| shown_tags.contains(&tag.as_str()))
    }
}

/// (time, id, shown) of every server the query admits, deleted ones included.
type Listed = Vec<(DateTime<Utc>, String, Value)>;

fn listed(cloud: &Shared, query: &ListQuery<'_>, version: (u32, u32)) -> Listed {
    let now = Utc::now();
    let world = cloud.world();
    let mut servers: Listed = world
        .servers
        .values()
        .filter(|server| query.admits(server, now))
        .map(|server| {
            let shown = render_server_at(&world, server, now, &cloud.base_url, version);
            (server.created, server.id.clone(), shown)
        })
        .collect();
    for (removed_at, shown) in &world.deleted_servers {
        if query.admits_deleted(*removed_at, shown) {
            let id = shown["id"].as_str().unwrap_or_default().to_owned();
            servers.push((*removed_at, id, shown.clone()));
        }
    }
    servers
}

/// Nova lists newest first; `marker` continues after the given id; a full page names the id
/// the next one starts after.
fn page(mut servers: Listed, query: &ListQuery<'_>) -> Result<(Vec<Value>, Option<String>), Response> {
    servers.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    if let Some(marker) = query.marker {
        let Some(position) = servers.iter().position(|(_, id, _)| id == marker) else {
            return Err(fail(StatusCode::BAD_REQUEST, format!("marker [{marker}] not found")));
        };
        servers.drain(..=position);
    }
    let next = match query.limit {
        Some(limit) if servers.len() > limit => {
            servers.truncate(limit);
            servers.last().map(|(_, id, _)| id.clone())
        }
        _ => None,
    };
    Ok((servers.into_iter().map(|(_, _, shown)| shown).collect(), next))
}

pub(super) async fn list_servers(
    State(cloud): State<Shared>,
    _: Authorized<service::Compute>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let read = microversion(&headers).and_then(|version| Ok((version, ListQuery::read(&query)?)));
    let (version, query) = match read {
        Ok(read) => read,
        Err(response) => return response,
    };
    let (servers, next) = match page(listed(&cloud, &query, version), &query) {
        Ok(page) => page,
        Err(response) => return response,
    };
    let mut body = json!({"servers": servers});
    if let Some(marker) = next {
        let href = format!(
            "{}/compute/v2.1/servers/detail?limit={}&marker={marker}",
            cloud.base_url,
            query.limit.unwrap_or_default()
        );
        body["servers_links"] = json!([{"href": href, "rel": "next"}]);
    }
    with_version(Json(body).into_response(), version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_filter_follows_nova_regex_usage() {
        assert!(name_matches("^web-0$", "web-0"));
        assert!(!name_matches("^web-0$", "web-01"));
        assert!(name_matches("web", "my-web-1"));
        assert!(name_matches("^my", "my-web-1"));
        assert!(name_matches("^a\\.b$", "a.b"));
    }
}
