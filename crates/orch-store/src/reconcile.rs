//! Reconcile's state: the passes and cleanups asked for (an outbox like `operations`, which
//! the relay turns into workflows), the orphans each location holds, and each live
//! deployment's drift as the last pass saw it.

use std::collections::{HashMap, HashSet};

use orch_core::reconcile::{Drift, Holding, Marked, OrphanReason};
use orch_core::OperationKind;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use crate::records::operation_state;
use crate::{now, timed, Actor, OperationRecord, Result, Store, StoreError};

/// What a run does.
pub mod run_kind {
    /// Finds orphans and drift everywhere.
    pub const RECONCILE: &str = "reconcile";
    /// Removes the orphans past their grace period.
    pub const CLEANUP: &str = "cleanup";
}

/// One reconcile pass or orphan cleanup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconcileRun {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub result: Value,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

const RUN_COLUMNS: &str = "id, kind, state, actor, request_id, result, error, created_at, started_at, finished_at";

impl ReconcileRun {
    fn from_row(row: &AnyRow) -> Result<Self> {
        let result: String = row.try_get("result")?;
        Ok(Self {
            id: row.try_get("id")?,
            kind: row.try_get("kind")?,
            state: row.try_get("state")?,
            actor: row.try_get("actor")?,
            request_id: row.try_get("request_id")?,
            result: serde_json::from_str(&result).map_err(|_| StoreError::Corrupt("reconcile_runs.result"))?,
            error: row.try_get("error")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// A marked resource no deployment holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrphanRecord {
    pub location: String,
    pub resource_id: String,
    pub kind: String,
    pub name: String,
    pub deployment_tag: String,
    pub logical_key: Option<String>,
    pub reason: String,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub removed_at: Option<String>,
    pub removed_by: Option<String>,
}

const ORPHAN_COLUMNS: &str = "location, resource_id, kind, name, deployment_tag, logical_key, reason, first_seen_at, last_seen_at, removed_at, removed_by";

impl OrphanRecord {
    fn from_row(row: &AnyRow) -> Result<Self> {
        Ok(Self {
            location: row.try_get("location")?,
            resource_id: row.try_get("resource_id")?,
            kind: row.try_get("kind")?,
            name: row.try_get("name")?,
            deployment_tag: row.try_get("deployment_tag")?,
            logical_key: row.try_get("logical_key")?,
            reason: row.try_get("reason")?,
            first_seen_at: row.try_get("first_seen_at")?,
            last_seen_at: row.try_get("last_seen_at")?,
            removed_at: row.try_get("removed_at")?,
            removed_by: row.try_get("removed_by")?,
        })
    }

    /// The orphan as a provider removes it.
    pub fn marked(&self) -> Marked {
        Marked {
            kind: self.kind.clone(),
            id: self.resource_id.clone(),
            name: self.name.clone(),
            deployment_id: self.deployment_tag.clone(),
            key: self.logical_key.clone(),
        }
    }
}

/// One drifted resource of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftRecord {
    pub logical_key: String,
    pub kind: String,
    pub resource_id: String,
    pub problem: String,
    pub detail: Value,
    pub first_seen_at: String,
}

/// The time `seconds` ago, as stored.
fn seconds_ago(seconds: u64) -> String {
    let then = i64::try_from(seconds)
        .ok()
        .and_then(chrono::TimeDelta::try_seconds)
        .and_then(|ago| chrono::Utc::now().checked_sub_signed(ago))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    then.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Store {
    /// Records a run asked for; the relay starts its workflow.
    #[tracing::instrument(skip(self, actor))]
    pub async fn request_run(&self, kind: &str, actor: &Actor) -> Result<ReconcileRun> {
        let id = Uuid::now_v7().to_string();
        let insert = sqlx::query(
            "INSERT INTO reconcile_runs (id, kind, state, actor, request_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(kind)
        .bind(operation_state::PENDING)
        .bind(actor.key_id.clone())
        .bind(actor.request_id.clone())
        .bind(now())
        .execute(self.pool());
        timed("reconcile_runs.insert", insert).await?;
        self.run(&id).await
    }

    /// A run by id.
    pub async fn run(&self, id: &str) -> Result<ReconcileRun> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM reconcile_runs WHERE id = $1");
        let row = timed(
            "reconcile_runs.get",
            sqlx::query(&sql).bind(id).fetch_optional(self.pool()),
        )
        .await?;
        row.map(|row| ReconcileRun::from_row(&row))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("reconcile run '{id}'")))
    }

    /// Runs asked for whose workflow may not have started yet, oldest first.
    pub async fn pending_runs(&self, limit: i64) -> Result<Vec<ReconcileRun>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM reconcile_runs WHERE state = $1 ORDER BY created_at LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(operation_state::PENDING)
            .bind(limit)
            .fetch_all(self.pool());
        timed("reconcile_runs.pending", rows)
            .await?
            .iter()
            .map(ReconcileRun::from_row)
            .collect()
    }

    /// Marks run `id` running, recording it first when a schedule started it; starting it
    /// again is the same as starting it once.
    #[tracing::instrument(skip(self))]
    pub async fn start_run(&self, id: &str, kind: &str) -> Result<ReconcileRun> {
        let at = now();
        let insert = sqlx::query(
            "INSERT INTO reconcile_runs (id, kind, state, actor, created_at) VALUES ($1, $2, $3, 'schedule', $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(kind)
        .bind(operation_state::PENDING)
        .bind(&at)
        .execute(self.pool());
        timed("reconcile_runs.insert", insert).await?;
        let start = sqlx::query("UPDATE reconcile_runs SET state = $2, started_at = $3 WHERE id = $1 AND state = $4")
            .bind(id)
            .bind(operation_state::RUNNING)
            .bind(&at)
            .bind(operation_state::PENDING)
            .execute(self.pool());
        timed("reconcile_runs.start", start).await?;
        self.run(id).await
    }

    /// Ends run `id` with what it found or did.
    #[tracing::instrument(skip(self, result))]
    pub async fn finish_run(&self, id: &str, result: &Value, error: Option<&str>) -> Result<()> {
        let state = match error {
            None => operation_state::SUCCEEDED,
            Some(_) => operation_state::FAILED,
        };
        let finish = sqlx::query(
            "UPDATE reconcile_runs SET state = $2, result = $3, error = $4, finished_at = $5 WHERE id = $1 AND finished_at IS NULL",
        )
        .bind(id)
        .bind(state)
        .bind(result.to_string())
        .bind(error.map(str::to_owned))
        .bind(now())
        .execute(self.pool());
        timed("reconcile_runs.finish", finish).await?;
        Ok(())
    }

    /// The cloud regions and container hosts any deployment ever used.
    pub async fn locations_in_use(&self) -> Result<(Vec<String>, Vec<String>)> {
        let distinct = |column: &'static str| {
            let sql = format!("SELECT DISTINCT {column} AS place FROM deployments WHERE {column} <> '' ORDER BY place");
            async move {
                let rows = timed("deployments.locations", sqlx::query(&sql).fetch_all(self.pool())).await?;
                rows.iter()
                    .map(|row| Ok(row.try_get::<String, _>("place")?))
                    .collect::<Result<Vec<String>>>()
            }
        };
        Ok((distinct("cloud_region").await?, distinct("container_host").await?))
    }

    /// What the store holds of each of `deployment_ids`; one it never had is absent.
    pub async fn holdings(&self, deployment_ids: &HashSet<String>) -> Result<HashMap<String, Holding>> {
        let mut holdings = HashMap::new();
        for id in deployment_ids {
            let row = sqlx::query(
                "SELECT deleted_at, (SELECT COUNT(*) FROM operations o WHERE o.deployment_id = d.id AND o.state IN ($2, $3)) AS busy \
                 FROM deployments d WHERE d.id = $1",
            )
            .bind(id)
            .bind(operation_state::PENDING)
            .bind(operation_state::RUNNING)
            .fetch_optional(self.pool());
            let Some(row) = timed("deployments.holding", row).await? else {
                continue;
            };
            let deleted: Option<String> = row.try_get("deleted_at")?;
            let busy = row.try_get::<i64, _>("busy")? > 0;
            let holding = match (deleted, busy) {
                (Some(_), _) => Holding::Deleted,
                (None, true) => Holding::Busy,
                (None, false) => {
                    let resources = self.resources(id).await?;
                    Holding::Live {
                        ids: resources.iter().filter_map(|r| r.cloud_id.clone()).collect(),
                        keys: resources.into_iter().map(|r| r.logical_key).collect(),
                    }
                }
            };
            holdings.insert(id.clone(), holding);
        }
        Ok(holdings)
    }

    /// Records what one pass found orphaned at `location`: new ones from now, known ones
    /// seen again; those it no longer found are marked gone. Returns the new ones.
    #[tracing::instrument(skip(self, found))]
    pub async fn record_orphans(&self, location: &str, found: &[(Marked, OrphanReason)]) -> Result<Vec<Marked>> {
        let at = now();
        let mut tx = self.begin().await?;
        let known = sqlx::query("SELECT resource_id FROM orphans WHERE location = $1 AND removed_at IS NULL")
            .bind(location)
            .fetch_all(&mut *tx);
        let known: HashSet<String> = timed("orphans.known", known)
            .await?
            .iter()
            .map(|row| row.try_get("resource_id"))
            .collect::<std::result::Result<_, _>>()?;
        for (orphan, reason) in found {
            let upsert = sqlx::query(
                "INSERT INTO orphans (location, resource_id, kind, name, deployment_tag, logical_key, reason, first_seen_at, last_seen_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                 ON CONFLICT (location, resource_id) DO UPDATE SET last_seen_at = excluded.last_seen_at, reason = excluded.reason, \
                 first_seen_at = CASE WHEN orphans.removed_at IS NULL THEN orphans.first_seen_at ELSE excluded.first_seen_at END, \
                 removed_at = NULL, removed_by = NULL",
            )
            .bind(location)
            .bind(&orphan.id)
            .bind(&orphan.kind)
            .bind(&orphan.name)
            .bind(&orphan.deployment_id)
            .bind(orphan.key.clone())
            .bind(reason.as_str())
            .bind(&at)
            .execute(&mut *tx);
            timed("orphans.upsert", upsert).await?;
        }
        // Gone by itself (or adopted): kept, so that its kind still counts 0 in metrics.
        let forget = sqlx::query(
            "UPDATE orphans SET removed_at = $2, removed_by = 'gone' WHERE location = $1 AND removed_at IS NULL AND last_seen_at < $2",
        )
        .bind(location)
        .bind(&at)
        .execute(&mut *tx);
        timed("orphans.forget", forget).await?;
        tx.commit().await?;
        Ok(found
            .iter()
            .filter(|(orphan, _)| !known.contains(&orphan.id))
            .map(|(orphan, _)| orphan.clone())
            .collect())
    }

    /// The orphans not removed, first seen at least `grace_seconds` ago, at `location` or
    /// everywhere, oldest first.
    pub async fn orphans(&self, grace_seconds: u64, location: Option<&str>) -> Result<Vec<OrphanRecord>> {
        let sql = format!(
            "SELECT {ORPHAN_COLUMNS} FROM orphans WHERE removed_at IS NULL AND first_seen_at <= $1 \
             AND ($2 = '' OR location = $2) ORDER BY first_seen_at, location, resource_id"
        );
        let rows = sqlx::query(&sql)
            .bind(seconds_ago(grace_seconds))
            .bind(location.unwrap_or_default())
            .fetch_all(self.pool());
        timed("orphans.list", rows)
            .await?
            .iter()
            .map(OrphanRecord::from_row)
            .collect()
    }

    /// Per location and kind, the orphans past their grace period: every pair ever seen, so
    /// that one whose orphans are gone counts 0.
    pub async fn orphan_counts(&self, grace_seconds: u64) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT location, kind, SUM(CASE WHEN removed_at IS NULL AND first_seen_at <= $1 THEN 1 ELSE 0 END) AS total              FROM orphans GROUP BY location, kind ORDER BY location, kind",
        )
        .bind(seconds_ago(grace_seconds))
        .fetch_all(self.pool());
        timed("orphans.count", rows)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("location")?,
                    row.try_get("kind")?,
                    row.try_get::<i64, _>("total")?,
                ))
            })
            .collect()
    }

    /// Records that run `run_id` removed these orphans of `location`.
    pub async fn orphans_removed(&self, location: &str, resource_ids: &[String], run_id: &str) -> Result<()> {
        let at = now();
        let mut tx = self.begin().await?;
        for id in resource_ids {
            let update = sqlx::query(
                "UPDATE orphans SET removed_at = $3, removed_by = $4 WHERE location = $1 AND resource_id = $2 AND removed_at IS NULL",
            )
            .bind(location)
            .bind(id)
            .bind(&at)
            .bind(run_id)
            .execute(&mut *tx);
            timed("orphans.removed", update).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces deployment `id`'s drift with what a pass found; returns the findings that
    /// are new (not found, with the same problem, by the pass before).
    #[tracing::instrument(skip(self, found))]
    pub async fn record_drift(&self, id: &str, found: &[Drift]) -> Result<Vec<Drift>> {
        let at = now();
        let before: HashMap<(String, String), String> = self
            .drift(id)
            .await?
            .into_iter()
            .map(|record| ((record.logical_key, record.problem), record.first_seen_at))
            .collect();
        let mut tx = self.begin().await?;
        let clear = sqlx::query("DELETE FROM drift WHERE deployment_id = $1")
            .bind(id)
            .execute(&mut *tx);
        timed("drift.clear", clear).await?;
        let mut new = Vec::new();
        for finding in found {
            let seen = before.get(&(finding.key.clone(), finding.problem.as_str().to_owned()));
            if seen.is_none() {
                new.push(finding.clone());
            }
            let detail = serde_json::to_value(&finding.problem).unwrap_or_default();
            let insert = sqlx::query(
                "INSERT INTO drift (deployment_id, logical_key, kind, resource_id, problem, detail, first_seen_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(&finding.key)
            .bind(&finding.kind)
            .bind(&finding.id)
            .bind(finding.problem.as_str())
            .bind(detail.to_string())
            .bind(seen.unwrap_or(&at))
            .execute(&mut *tx);
            timed("drift.insert", insert).await?;
        }
        let count = i64::try_from(found.len()).unwrap_or(i64::MAX);
        let mark = sqlx::query("UPDATE deployments SET drift_count = $2, drift_checked_at = $3 WHERE id = $1")
            .bind(id)
            .bind(count)
            .bind(&at)
            .execute(&mut *tx);
        timed("deployments.drift", mark).await?;
        tx.commit().await?;
        Ok(new)
    }

    /// Asks for a repair of deployment `id`: an update to the spec it stands for, whose plan
    /// first looks at what the providers hold (so it works from the truth at that moment,
    /// not from the last pass), then makes again what is missing, starts what is stopped,
    /// rebuilds what is broken and resizes back what was resized.
    #[tracing::instrument(skip(self, actor))]
    pub async fn request_repair(&self, id: &str, actor: &Actor) -> Result<OperationRecord> {
        let deployment = self.deployment(id).await?;
        if deployment.deleted_at.is_some() {
            return Err(StoreError::NotFound(format!("deployment '{id}'")));
        }
        let payload = json!({
            "template": deployment.template.to_value(),
            "template_id": deployment.template_id,
            "parameters": deployment.parameters,
            "repair": true,
        });
        let (_, operation) = self
            .request_operation(id, OperationKind::Update, &payload, actor)
            .await?;
        Ok(operation)
    }

    /// Deployment `id`'s drift as the last pass saw it.
    pub async fn drift(&self, id: &str) -> Result<Vec<DriftRecord>> {
        let rows = sqlx::query(
            "SELECT logical_key, kind, resource_id, problem, detail, first_seen_at FROM drift \
             WHERE deployment_id = $1 ORDER BY logical_key",
        )
        .bind(id)
        .fetch_all(self.pool());
        timed("drift.list", rows)
            .await?
            .iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(DriftRecord {
                    logical_key: row.try_get("logical_key")?,
                    kind: row.try_get("kind")?,
                    resource_id: row.try_get("resource_id")?,
                    problem: row.try_get("problem")?,
                    detail: serde_json::from_str(&detail).map_err(|_| StoreError::Corrupt("drift.detail"))?,
                    first_seen_at: row.try_get("first_seen_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_ago_sorts_before_now() {
        assert!(seconds_ago(1) < now());
        assert!(seconds_ago(0) <= now());
        assert!(seconds_ago(u64::MAX) < seconds_ago(1));
    }
}
