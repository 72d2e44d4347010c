//! Rebuild: servers whose group now names another image are rebuilt from it in place (Nova
//! `rebuild`: the same id, ports, addresses and volumes). One step is one batch: every
//! server of it is rebuilt, then each is waited for, so the planner's batch size is how many
//! servers of a group are out at once. A server shut off outside orch is started again.

use orch_core::provider::{Observed, Report, Target};
use serde_json::json;

use super::in_place::{until_changed, Change, Progress};
use super::spec_of;
use crate::compute::Server;
use crate::error::Result;
use crate::OpenStack;

/// `left_active`: seen in another state since the rebuild was asked for; a server back to
/// ACTIVE on its old image after that did not take the rebuild.
fn rebuilding(status: &str, image_now: &str, wanted: &str, left_active: bool) -> Progress {
    match status {
        "ACTIVE" if image_now == wanted => Progress::Done,
        "ACTIVE" if left_active => {
            Progress::Failed(format!("the rebuild did not take: the image is still {image_now}"))
        }
        "ERROR" => Progress::Failed("went to ERROR while rebuilding".into()),
        _ => Progress::Wait,
    }
}

fn image_of(server: &Server) -> &str {
    server.image["id"].as_str().unwrap_or_default()
}

pub(super) async fn rebuild(
    cloud: &OpenStack,
    target: Target<'_>,
    keys: &[String],
    report: &impl Report,
) -> Result<()> {
    let mut asked = Vec::new();
    for server_key in keys {
        let Some(server_id) = target.recorded_id(server_key) else {
            continue;
        };
        let spec = spec_of(target.desired, server_key)?;
        let image = cloud.find_image(&spec.image).await?;
        let server = cloud.get_server(server_id).await?;
        // A retried step finds the rebuild under way, or done. A server in ERROR is rebuilt
        // from the image it has (Nova allows it), which is how orch repairs it in place.
        if (image_of(&server) != image.id && server.status == "ACTIVE") || server.status == "ERROR" {
            cloud.rebuild_server(server_id, &image.id).await?;
        }
        asked.push((server_key, server_id, spec, image.id));
    }
    for (server_key, server_id, spec, image_id) in asked {
        let server = until_rebuilt(cloud, server_id, &image_id, report).await?;
        let made = target.recorded_attributes(server_key);
        let flavor = made.map_or(json!(spec.flavor), |made| made["flavor"].clone());
        let attributes = json!({"group": spec.group, "index": spec.index, "name": server.name, "ip": server.ip(), "flavor": flavor, "image": spec.image});
        report
            .record(Observed::new(server_key, "server", server_id, "ACTIVE", attributes))
            .await?;
    }
    Ok(())
}

/// Starts the servers shut off outside orch, and waits for each to be ACTIVE.
pub(super) async fn start(cloud: &OpenStack, target: Target<'_>, keys: &[String], report: &impl Report) -> Result<()> {
    for server_key in keys {
        let Some(server_id) = target.recorded_id(server_key) else {
            continue;
        };
        // A retried step finds the server starting, or started.
        if cloud.get_server(server_id).await?.status == "SHUTOFF" {
            cloud.start_server(server_id).await?;
        }
        let judge = |server: &Server, _: bool| match server.status.as_str() {
            "ACTIVE" => Progress::Done,
            "ERROR" => Progress::Failed("went to ERROR while starting".into()),
            _ => Progress::Wait,
        };
        let change = Change {
            goal: "started".to_owned(),
            judge: &judge,
        };
        until_changed(cloud, server_id, change, report).await?;
        let mut attributes = target.recorded_attributes(server_key).cloned().unwrap_or_default();
        if !attributes.is_object() {
            attributes = json!({});
        }
        report
            .record(Observed::new(server_key, "server", server_id, "ACTIVE", attributes))
            .await?;
    }
    Ok(())
}

/// Waits for a rebuild from `image_id` to end.
async fn until_rebuilt(cloud: &OpenStack, server_id: &str, image_id: &str, report: &impl Report) -> Result<Server> {
    let judge =
        |server: &Server, left_active: bool| rebuilding(&server.status, image_of(server), image_id, left_active);
    let change = Change {
        goal: format!("rebuilt from image {image_id}"),
        judge: &judge,
    };
    until_changed(cloud, server_id, change, report).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_ends_on_its_image_or_says_why_not() {
        assert_eq!(rebuilding("ACTIVE", "new", "new", true), Progress::Done);
        assert_eq!(rebuilding("REBUILD", "new", "new", true), Progress::Wait);
        assert_eq!(
            rebuilding("ACTIVE", "old", "new", false),
            Progress::Wait,
            "not started yet"
        );
        assert!(matches!(rebuilding("ACTIVE", "old", "new", true), Progress::Failed(_)));
        assert!(matches!(rebuilding("ERROR", "old", "new", true), Progress::Failed(_)));
    }
}
