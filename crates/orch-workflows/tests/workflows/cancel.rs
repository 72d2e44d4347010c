//! Cancel: an operation stopped mid-way compensates what it made. A deploy ends FAILED
//! `cancelled` with nothing left in the cloud; a scale returns to the previous spec and ends
//! COMPLETED; a DELETE that finds a deploy running cancels it, then deletes.

use std::time::{Duration, Instant};

use orch_core::{DeploymentStatus, OperationKind};
use orch_store::deployments::DeleteOutcome;
use orch_store::{operation_state, Actor};
use serde_json::json;

use super::{harness, web_app_stack, Harness};

/// Servers stay in BUILD this long once the cloud is slowed: a cancel lands mid-wait.
const SLOW_BOOT_MS: u64 = 60_000;

async fn slow_boots(h: &Harness) {
    let answer = reqwest::Client::new()
        .put(format!("{}/_fake/config", h.cloud.url))
        .json(&json!({"boot_delay_ms": SLOW_BOOT_MS}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
}

/// Waits until the cloud holds more than `count` servers.
async fn servers_beyond(h: &Harness, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.count("servers").await <= count {
        assert!(Instant::now() < deadline, "no server was made");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn last_operation_state(h: &Harness, id: &str) -> String {
    h.store.operations(id).await.unwrap().pop().unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deploy_cancelled_midway_leaves_nothing_and_ends_failed_cancelled() {
    let h = harness(|config| config.boot_delay_ms = SLOW_BOOT_MS).await;
    // Kept on failure, but a cancel compensates all the same.
    let id = h.create("cancel-deploy", web_app_stack(), false).await;
    orch_workflows::relay_once(&h.store, &h.client, &h.task_queue)
        .await
        .unwrap();
    servers_beyond(&h, 0).await;
    let asked = Instant::now();
    let operation = h.store.request_cancel(&id, false, &Actor::default()).await.unwrap();
    assert!(operation.cancel_requested_at.is_some());
    let again = h.store.request_cancel(&id, false, &Actor::default()).await.unwrap();
    assert_eq!(
        again.cancel_requested_at, operation.cancel_requested_at,
        "asking twice is asking once"
    );
    let done = h.settle(&id).await;
    assert!(
        asked.elapsed() < Duration::from_millis(SLOW_BOOT_MS / 2),
        "the wait for BUILD servers stopped at the cancel"
    );
    assert_eq!(done.status, DeploymentStatus::Failed);
    assert!(
        done.status_reason
            .as_deref()
            .unwrap_or_default()
            .starts_with("cancelled"),
        "{:?}",
        done.status_reason
    );
    assert_eq!(last_operation_state(&h, &id).await, operation_state::CANCELLED);
    h.assert_empty().await;
    let refused = h.store.request_cancel(&id, false, &Actor::default()).await.unwrap_err();
    assert!(refused.to_string().contains("no operation is in flight"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_scale_returns_to_the_previous_spec_and_ends_completed() {
    let h = harness(|_| {}).await;
    let mut template = web_app_stack();
    template.vm_config.retain(|group, _| group == "web");
    let id = h.create("cancel-scale", template, true).await;
    assert_eq!(h.settle(&id).await.status, DeploymentStatus::Completed);
    let before = h.count("servers").await;
    slow_boots(&h).await;
    h.request(&id, OperationKind::Scale, json!({"target_count": 5, "vm_type": "web"}))
        .await;
    orch_workflows::relay_once(&h.store, &h.client, &h.task_queue)
        .await
        .unwrap();
    servers_beyond(&h, before).await;
    h.store.request_cancel(&id, false, &Actor::default()).await.unwrap();
    let done = h.settle(&id).await;
    assert_eq!(done.status, DeploymentStatus::Completed, "{:?}", done.status_reason);
    assert_eq!(
        done.status_reason.as_deref(),
        Some("cancelled; reverted to the previous spec")
    );
    assert_eq!(
        done.parameters.get("web_count"),
        None,
        "it still stands for the old count"
    );
    assert_eq!(h.count("servers").await, before, "the servers the scale made are gone");
    assert_eq!(last_operation_state(&h, &id).await, operation_state::CANCELLED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_during_a_deploy_cancels_it_then_deletes() {
    let h = harness(|config| config.boot_delay_ms = SLOW_BOOT_MS).await;
    let id = h.create("delete-midway", web_app_stack(), true).await;
    orch_workflows::relay_once(&h.store, &h.client, &h.task_queue)
        .await
        .unwrap();
    servers_beyond(&h, 0).await;
    let (_, outcome) = h.store.delete_deployment(&id, &Actor::default()).await.unwrap();
    assert!(matches!(outcome, DeleteOutcome::AfterCancel(_)), "{outcome:?}");
    // The create ends (cancelled), and the delete it left behind runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        orch_workflows::relay_once(&h.store, &h.client, &h.task_queue)
            .await
            .unwrap();
        let done = h.store.deployment(&id).await.unwrap();
        if done.status == DeploymentStatus::Deleted {
            break done;
        }
        assert!(Instant::now() < deadline, "still {:?}", done.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(done.deleted_at.is_some());
    let kinds: Vec<(OperationKind, String)> = (h.store.operations(&id).await.unwrap().into_iter())
        .map(|operation| (operation.kind, operation.state))
        .collect();
    assert_eq!(
        kinds,
        [
            (OperationKind::Create, operation_state::CANCELLED.to_owned()),
            (OperationKind::Delete, operation_state::SUCCEEDED.to_owned())
        ]
    );
    h.assert_empty().await;
}
