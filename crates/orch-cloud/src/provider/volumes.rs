//! What needs a ready server: its volumes, created (found by key first), waited for until
//! Cinder settles them, and attached once.

use std::time::Duration;

use orch_core::provider::{Observed, Report, Target};
use serde_json::json;
use tokio::time::Instant;

use super::{key, spec_of};
use crate::error::Result;
use crate::volume::Volume;
use crate::{CloudError, OpenStack};

/// How long a volume may take to become available.
const VOLUME_READY: Duration = Duration::from_secs(600);

pub(super) async fn attach(cloud: &OpenStack, target: Target<'_>, keys: &[String], report: &impl Report) -> Result<()> {
    for server_key in keys {
        let Some(server_id) = target.recorded_id(server_key) else {
            continue;
        };
        let spec = spec_of(target.desired, server_key)?;
        for (volume_key, size, volume_type) in &spec.volumes {
            let attributes = json!({"server": server_key, "size_gb": size});
            let (volume, _) = cloud
                .ensure_volume(&key(target.deployment_id, volume_key)?, *size, volume_type.as_deref())
                .await?;
            report
                .record(Observed::new(
                    volume_key,
                    "volume",
                    &volume.id,
                    "creating",
                    attributes.clone(),
                ))
                .await?;
            // Nova may have taken an earlier attempt's attach before Cinder shows it.
            if settle(cloud, &volume.id, server_id, report).await? == Settled::Available
                && !cloud.list_attachments(server_id).await?.contains(&volume.id)
            {
                cloud.attach_volume(server_id, &volume.id).await?;
            }
            report
                .record(Observed::new(volume_key, "volume", &volume.id, "in-use", attributes))
                .await?;
        }
    }
    Ok(())
}

/// Where a volume came to rest.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// Ready to attach.
    Available,
    /// Attached to this server already (by an earlier attempt).
    AttachedHere,
}

/// Waits until the volume is available or attached to `server_id`. A volume in `error` (or
/// attached to another server) fails at once, and one that settles in neither within
/// [`VOLUME_READY`] names the status it was left in.
async fn settle(cloud: &OpenStack, volume_id: &str, server_id: &str, report: &impl Report) -> Result<Settled> {
    let deadline = Instant::now() + VOLUME_READY;
    let mut interval = Duration::from_millis(200);
    loop {
        let volume = cloud.get_volume(volume_id).await?;
        if let Some(settled) = settled(&volume, server_id)? {
            return Ok(settled);
        }
        if Instant::now() >= deadline {
            return Err(CloudError::WaitTimeout {
                what: format!("volume {volume_id} to be available (it is {})", volume.status),
            });
        }
        report.progress(volume_id).await;
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_secs(5));
    }
}

fn settled(volume: &Volume, server_id: &str) -> Result<Option<Settled>> {
    let attached_here = volume
        .attachments
        .iter()
        .any(|attachment| attachment["server_id"] == server_id);
    match volume.status.as_str() {
        _ if attached_here => Ok(Some(Settled::AttachedHere)),
        "available" => Ok(Some(Settled::Available)),
        "in-use" => Err(CloudError::ResourceFailed {
            what: format!("volume {}", volume.id),
            message: "is attached to another server".into(),
        }),
        status if status.starts_with("error") => Err(CloudError::ResourceFailed {
            what: format!("volume {}", volume.id),
            message: format!("went to {status}"),
        }),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(status: &str, server: Option<&str>) -> Volume {
        serde_json::from_value(json!({
            "id": "v1",
            "status": status,
            "attachments": server.map(|server| vec![json!({"server_id": server})]).unwrap_or_default(),
        }))
        .unwrap()
    }

    #[test]
    fn a_volume_is_attached_once_and_never_in_error() {
        assert_eq!(
            settled(&volume("available", None), "s1").unwrap(),
            Some(Settled::Available)
        );
        assert_eq!(
            settled(&volume("in-use", Some("s1")), "s1").unwrap(),
            Some(Settled::AttachedHere),
            "an earlier attempt attached it"
        );
        assert_eq!(
            settled(&volume("attaching", Some("s1")), "s1").unwrap(),
            Some(Settled::AttachedHere)
        );
        assert_eq!(
            settled(&volume("creating", None), "s1").unwrap(),
            None,
            "still settling"
        );
        let error = settled(&volume("error", None), "s1").unwrap_err();
        assert_eq!(error.kind(), "resource_failed", "{error}");
        assert!(settled(&volume("in-use", Some("s2")), "s1").is_err(), "someone else's");
    }
}
