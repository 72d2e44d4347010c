//! Changes Nova makes to a server in place (resize, rebuild), waited for by one poller: it
//! confirms when Nova asks, fails on ERROR or on a change that did not take (with Nova's
//! fault), and gives up after a deadline, naming the state the server was left in.

use std::time::Duration;

use orch_core::provider::Report;

use crate::compute::Server;
use crate::error::{CloudError, Result};
use crate::OpenStack;

/// How long a change in place may take, confirmation included.
const DEADLINE: Duration = Duration::from_secs(30 * 60);

/// What a server changing in place shows.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    Done,
    /// Nova waits for a confirmation (a resize's VERIFY_RESIZE).
    Confirm,
    Wait,
    Failed(String),
}

/// The change waited for: `goal` completes "server NAME to be ..." in a timeout, and `judge`
/// reads the server's state, given whether it has left ACTIVE since the change was asked
/// for (a server back to ACTIVE unchanged after that did not take the change).
pub(super) struct Change<'a> {
    pub goal: String,
    pub judge: &'a (dyn Fn(&Server, bool) -> Progress + Sync),
}

pub(super) async fn until_changed(
    cloud: &OpenStack,
    server_id: &str,
    change: Change<'_>,
    report: &impl Report,
) -> Result<Server> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut left_active = false;
    loop {
        let server = cloud.get_server(server_id).await?;
        left_active |= server.status != "ACTIVE";
        match (change.judge)(&server, left_active) {
            Progress::Done => return Ok(server),
            Progress::Confirm => cloud.confirm_resize(server_id).await?,
            Progress::Failed(message) => {
                let fault = server
                    .fault_message()
                    .map(|fault| format!(" ({fault})"))
                    .unwrap_or_default();
                return Err(CloudError::ResourceFailed {
                    what: format!("server {}", server.name),
                    message: format!("{message}{fault}"),
                });
            }
            Progress::Wait if tokio::time::Instant::now() >= deadline => {
                return Err(CloudError::WaitTimeout {
                    what: format!("server {} to be {} (it is {})", server.name, change.goal, server.status),
                });
            }
            Progress::Wait => {}
        }
        report.progress(server_id).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
