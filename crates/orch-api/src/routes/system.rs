//! Liveness, readiness and Prometheus metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use orch_core::DeploymentStatus;
use serde_json::json;

use crate::error::ApiResult;
use crate::views::{CheckView, ReadinessView};
use crate::AppState;

/// How long one readiness check may take before it counts as failing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, description = "The process is up")))]
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/health/ready", tag = "system",
    responses((status = 200, description = "Every dependency answers", body = ReadinessView),
              (status = 503, description = "A dependency is failing", body = ReadinessView)))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut checks = BTreeMap::new();
    let database = match tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "database readiness check failed");
            Err("the database does not answer".to_owned())
        }
        Err(_) => Err("the database did not answer in time".to_owned()),
    };
    checks.insert("database".to_owned(), check_view(database));
    for (name, check) in state.readiness_checks.iter() {
        let result = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
            Ok(result) => result,
            Err(_) => Err("did not answer in time".to_owned()),
        };
        checks.insert(name.clone(), check_view(result));
    }
    let ready = checks.values().all(|check| check.status == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = ReadinessView {
        status: if ready { "ready" } else { "unavailable" },
        checks,
    };
    (status, Json(body))
}

fn check_view(result: Result<(), String>) -> CheckView {
    match result {
        Ok(()) => CheckView {
            status: "ok",
            detail: None,
        },
        Err(detail) => CheckView {
            status: "failing",
            detail: Some(detail),
        },
    }
}

#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    // Counted from the database at scrape time, so every replica reports the same truth;
    // read before any gauge is set, so the gauges are set and rendered without a pause.
    let counts = state.store.count_by_status().await?;
    let orphans = state.store.orphan_counts(state.config.orphan_grace_seconds).await?;
    let (oldest_pending, oldest_running) = state.store.oldest_operations().await?;
    // The recorder is the process's: two scrapes at once (two apps in one test process)
    // must not set each other's gauges between a set and its render.
    static SCRAPE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SCRAPE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for status in DeploymentStatus::ALL {
        let total = counts
            .iter()
            .find(|(counted, _)| *counted == status)
            .map_or(0, |(_, total)| *total);
        metrics::gauge!("orch_deployments", "status" => status.as_str()).set(total as f64);
    }
    metrics::gauge!("orch_oldest_pending_operation_seconds").set(age_seconds(oldest_pending.as_deref()));
    metrics::gauge!("orch_oldest_running_operation_seconds").set(age_seconds(oldest_running.as_deref()));
    for (location, kind, total) in orphans {
        metrics::gauge!("orch_orphaned_resources", "kind" => kind, "region" => location).set(total as f64);
    }
    state.metrics.run_upkeep();
    let text = state.metrics.render();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    ))
}

/// Seconds since the RFC 3339 time `at`; 0 when there is none.
fn age_seconds(at: Option<&str>) -> f64 {
    at.and_then(|at| orch_store::seconds_between(at, chrono::Utc::now()))
        .unwrap_or(0.0)
}
