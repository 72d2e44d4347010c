//! What needs a ready server: its volumes, created (found by key first), waited for and
//! attached once.

use std::time::Duration;

use orch_core::provider::{Observed, Report, Target};
use serde_json::json;

use super::{key, spec_of};
use crate::error::Result;
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
            // Any other outcome than a timeout: already attached by an earlier attempt.
            let ready = cloud.wait_volume(&volume.id, Some("available"), VOLUME_READY).await;
            if let Err(error @ CloudError::WaitTimeout { .. }) = ready {
                return Err(error);
            }
            if !cloud.list_attachments(server_id).await?.contains(&volume.id) {
                cloud.attach_volume(server_id, &volume.id).await?;
            }
            report
                .record(Observed::new(volume_key, "volume", &volume.id, "in-use", attributes))
                .await?;
            report.progress(volume_key).await;
        }
    }
    Ok(())
}
