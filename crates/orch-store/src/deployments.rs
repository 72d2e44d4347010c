//! Deployments, their events and their operations.
//!
//! Every status change that asks for work is one transaction: the deployment's new status,
//! the `operations` outbox row the workflow layer executes, and the `deployment_events` row
//! that records who asked. The partial unique index on `operations` makes a second operation
//! on the same deployment fail inside the database, whichever replica it reaches.

use orch_core::{DeploymentStatus, OperationKind, Template};
use serde_json::{json, Value};
use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

use crate::records::{operation_state, DEPLOYMENT_COLUMNS, OPERATION_COLUMNS};
use crate::{now, timed, Actor, DeploymentRecord, EventRecord, OperationRecord, Page, Result, Store, StoreError};

/// What a new deployment is made from, already validated.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub name: String,
    /// The stored template it came from; `None` for an inline template.
    pub template_id: Option<String>,
    pub template: Template,
    pub parameters: Value,
    pub cloud_region: String,
    pub container_host: String,
    pub rollback: bool,
    /// Whether reconcile repairs its drift at once.
    pub auto_heal: bool,
    /// Its secrets, sealed as they are stored.
    pub secrets: Vec<crate::secrets::NewSecret>,
}

/// Filters of the deployment list. Soft-deleted deployments are listed only when asked for
/// by `status = DELETED`.
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    pub status: Option<DeploymentStatus>,
    pub name: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// How a delete request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Nothing had been created yet: the pending create was cancelled and the deployment is
    /// deleted at once.
    Deleted,
    /// A delete operation was recorded for the workflow layer (or was already under way).
    Deleting,
    /// Another operation was in flight: it is being cancelled (this one, by id), and the
    /// delete is recorded as it ends.
    AfterCancel(String),
}

/// A request as its event shows it: a configure run's `extra_vars` by name only, since any
/// read key may read events and a variable may hold a password.
fn redacted(payload: &Value) -> Value {
    let mut shown = payload.clone();
    if let Some(vars) = shown.get_mut("extra_vars").and_then(Value::as_object_mut) {
        for value in vars.values_mut() {
            *value = Value::from("(redacted)");
        }
    }
    shown
}

pub(crate) async fn insert_event(
    tx: &mut Transaction<'static, Any>,
    deployment_id: &str,
    action: &str,
    actor: &Actor,
    detail: Value,
    at: &str,
) -> Result<()> {
    let query = sqlx::query(
        "INSERT INTO deployment_events (deployment_id, action, actor, request_id, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(deployment_id)
    .bind(action)
    .bind(actor.key_id.clone())
    .bind(actor.request_id.clone())
    .bind(detail.to_string())
    .bind(at)
    .execute(&mut **tx);
    timed("events.insert", query).await?;
    Ok(())
}

pub(crate) async fn insert_operation(
    tx: &mut Transaction<'static, Any>,
    deployment_id: &str,
    kind: OperationKind,
    payload: &Value,
    actor: &Actor,
    at: &str,
) -> Result<OperationRecord, sqlx::Error> {
    let id = Uuid::now_v7().to_string();
    let query = sqlx::query(
        "INSERT INTO operations (id, deployment_id, kind, state, payload, actor, request_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(deployment_id)
    .bind(kind.as_str())
    .bind(operation_state::PENDING)
    .bind(payload.to_string())
    .bind(actor.key_id.clone())
    .bind(actor.request_id.clone())
    .bind(at)
    .execute(&mut **tx);
    timed("operations.insert", query).await?;
    Ok(OperationRecord {
        id,
        deployment_id: deployment_id.to_owned(),
        kind,
        state: operation_state::PENDING.to_owned(),
        payload: payload.clone(),
        actor: actor.key_id.clone(),
        request_id: actor.request_id.clone(),
        error: None,
        created_at: at.to_owned(),
        started_at: None,
        finished_at: None,
        cancel_requested_at: None,
    })
}

/// `'A', 'B'` for an `IN (…)` list of our own status constants (never user input).
fn status_list(statuses: &[DeploymentStatus]) -> String {
    statuses
        .iter()
        .map(|status| format!("'{}'", status.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Records a new deployment in `PENDING` with its `create` operation and first event.
    #[tracing::instrument(skip_all, fields(deployment = %new.name))]
    pub async fn create_deployment(
        &self,
        new: &NewDeployment,
        actor: &Actor,
    ) -> Result<(DeploymentRecord, OperationRecord)> {
        let id = Uuid::now_v7().to_string();
        let at = now();
        let mut tx = self.begin().await?;
        let sql = format!(
            "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, $8, $9, $9, NULL, $10, $11, 0, NULL)"
        );
        let insert = sqlx::query(&sql)
            .bind(&id)
            .bind(&new.name)
            .bind(DeploymentStatus::Pending.as_str())
            .bind(new.template_id.clone())
            .bind(new.template.to_value().to_string())
            .bind(new.parameters.to_string())
            .bind(&new.cloud_region)
            .bind(i64::from(new.rollback))
            .bind(&at)
            .bind(&new.container_host)
            .bind(i64::from(new.auto_heal))
            .execute(&mut *tx);
        match timed("deployments.insert", insert).await {
            Ok(_) => {}
            Err(error) if StoreError::is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!(
                    "a deployment named '{}' already exists",
                    new.name
                )));
            }
            Err(error) => return Err(error.into()),
        }
        if let Some(template_id) = &new.template_id {
            // The template may have been deleted since the request resolved it.
            let live = timed(
                "templates.exists",
                sqlx::query("SELECT 1 FROM deployment_templates WHERE id = $1 AND deleted_at IS NULL")
                    .bind(template_id)
                    .fetch_optional(&mut *tx),
            )
            .await?;
            if live.is_none() {
                return Err(StoreError::NotFound(format!("template '{template_id}'")));
            }
        }
        self.insert_secrets(&mut tx, &id, &new.secrets, &at).await?;
        let operation = insert_operation(&mut tx, &id, OperationKind::Create, &json!({}), actor, &at).await?;
        let detail = json!({
            "operation_id": operation.id,
            "template": new.template.name,
            "template_id": new.template_id,
            "parameters": new.parameters,
            "cloud_region": new.cloud_region,
            "container_host": new.container_host,
            "rollback": new.rollback,
            "auto_heal": new.auto_heal,
        });
        insert_event(&mut tx, &id, "deployment.created", actor, detail, &at).await?;
        tx.commit().await?;
        let record = DeploymentRecord {
            id,
            name: new.name.clone(),
            status: DeploymentStatus::Pending,
            status_reason: None,
            template_id: new.template_id.clone(),
            template: new.template.clone(),
            parameters: new.parameters.clone(),
            cloud_region: new.cloud_region.clone(),
            container_host: new.container_host.clone(),
            rollback: new.rollback,
            auto_heal: new.auto_heal,
            drift_count: 0,
            drift_checked_at: None,
            created_at: at.clone(),
            updated_at: at,
            deleted_at: None,
        };
        Ok((record, operation))
    }

    /// A deployment by id, including a soft-deleted one (its history stays readable).
    #[tracing::instrument(skip(self))]
    pub async fn deployment(&self, id: &str) -> Result<DeploymentRecord> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1");
        match timed(
            "deployments.get",
            sqlx::query(&sql).bind(id).fetch_optional(self.pool()),
        )
        .await?
        {
            Some(row) => DeploymentRecord::from_row(&row),
            None => Err(StoreError::NotFound(format!("deployment '{id}'"))),
        }
    }

    /// Deployments matching `filter`, newest first.
    #[tracing::instrument(skip(self))]
    pub async fn deployments(&self, filter: &DeploymentFilter) -> Result<Page<DeploymentRecord>> {
        let mut conditions = vec![if filter.status == Some(DeploymentStatus::Deleted) {
            "deleted_at IS NOT NULL"
        } else {
            "deleted_at IS NULL"
        }];
        let mut binds: Vec<String> = Vec::new();
        if let Some(status) = filter.status.filter(|status| *status != DeploymentStatus::Deleted) {
            binds.push(status.as_str().to_owned());
            conditions.push("status = $1");
        }
        let name_condition;
        if let Some(name) = &filter.name {
            binds.push(name.clone());
            name_condition = format!("name = ${}", binds.len());
            conditions.push(&name_condition);
        }
        let filter_sql = conditions.join(" AND ");
        let list_sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE {filter_sql} ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
            binds.len() + 1,
            binds.len() + 2
        );
        let count_sql = format!("SELECT COUNT(*) AS total FROM deployments WHERE {filter_sql}");
        let mut list = sqlx::query(&list_sql);
        let mut count = sqlx::query(&count_sql);
        for bind in &binds {
            list = list.bind(bind.clone());
            count = count.bind(bind.clone());
        }
        let rows = timed(
            "deployments.list",
            list.bind(filter.limit).bind(filter.offset).fetch_all(self.pool()),
        )
        .await?;
        let total: i64 = timed("deployments.count", count.fetch_one(self.pool()))
            .await?
            .try_get("total")?;
        Ok(Page {
            items: rows.iter().map(DeploymentRecord::from_row).collect::<Result<_>>()?,
            total,
        })
    }

    /// Moves a live deployment into the status of `kind` and records the operation, if the
    /// deployment's status allows it and no other operation is in flight.
    #[tracing::instrument(skip(self, payload, actor))]
    pub async fn request_operation(
        &self,
        id: &str,
        kind: OperationKind,
        payload: &Value,
        actor: &Actor,
    ) -> Result<(DeploymentRecord, OperationRecord)> {
        self.request_operation_from(id, kind, payload, actor, kind.allowed_from())
            .await
    }

    /// Records again the last failed (or cancelled) operation of a FAILED deployment. Its workflow resumes
    /// from what exists: every resource is found by its key before anything is created.
    #[tracing::instrument(skip(self, actor))]
    pub async fn retry_operation(&self, id: &str, actor: &Actor) -> Result<(DeploymentRecord, OperationRecord)> {
        let failed = self
            .operations(id)
            .await?
            .into_iter()
            .rev()
            .find(|operation| [operation_state::FAILED, operation_state::CANCELLED].contains(&operation.state.as_str()))
            .ok_or_else(|| StoreError::Conflict("there is no failed operation to retry".into()))?;
        self.request_operation_from(id, failed.kind, &failed.payload, actor, &[DeploymentStatus::Failed])
            .await
    }

    async fn request_operation_from(
        &self,
        id: &str,
        kind: OperationKind,
        payload: &Value,
        actor: &Actor,
        allowed_from: &[DeploymentStatus],
    ) -> Result<(DeploymentRecord, OperationRecord)> {
        let at = now();
        let mut tx = self.begin().await?;
        let sql = format!(
            "UPDATE deployments SET status = $2, status_reason = NULL, updated_at = $3 \
             WHERE id = $1 AND deleted_at IS NULL AND status IN ({})",
            status_list(allowed_from)
        );
        let update = sqlx::query(&sql)
            .bind(id)
            .bind(kind.status_while_running().as_str())
            .bind(&at)
            .execute(&mut *tx);
        if timed("deployments.transition", update).await?.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(self.explain_refusal(id, kind, allowed_from).await);
        }
        let operation = match insert_operation(&mut tx, id, kind, payload, actor, &at).await {
            Ok(operation) => operation,
            Err(error) if StoreError::is_unique_violation(&error) => {
                tx.rollback().await?;
                return Err(self.explain_refusal(id, kind, allowed_from).await);
            }
            Err(error) => return Err(error.into()),
        };
        let detail = json!({"operation_id": operation.id, "kind": kind.as_str(), "request": redacted(payload)});
        insert_event(&mut tx, id, "operation.requested", actor, detail, &at).await?;
        tx.commit().await?;
        Ok((self.deployment(id).await?, operation))
    }

    /// Says why `kind` cannot start on deployment `id`: not found, wrong status, or another
    /// operation in flight.
    async fn explain_refusal(&self, id: &str, kind: OperationKind, allowed_from: &[DeploymentStatus]) -> StoreError {
        let deployment = match self.deployment(id).await {
            Ok(deployment) if deployment.deleted_at.is_none() => deployment,
            Ok(_) => return StoreError::NotFound(format!("deployment '{id}'")),
            Err(error) => return error,
        };
        match self.operation_in_flight(id).await {
            Ok(Some(operation)) => StoreError::Conflict(format!(
                "operation '{}' ({}) is in flight on this deployment; wait for it to finish",
                operation.kind.as_str(),
                operation.id
            )),
            Ok(None) => {
                let allowed: Vec<&str> = allowed_from.iter().map(|status| status.as_str()).collect();
                StoreError::Conflict(format!(
                    "deployment is {}; {} needs it to be {}",
                    deployment.status,
                    kind.as_str(),
                    allowed.join(" or ")
                ))
            }
            Err(error) => error,
        }
    }

    /// Deletes a deployment: at once when its create was never picked up, else by recording
    /// a delete operation.
    #[tracing::instrument(skip(self, actor))]
    pub async fn delete_deployment(&self, id: &str, actor: &Actor) -> Result<(DeploymentRecord, DeleteOutcome)> {
        let at = now();
        let mut tx = self.begin().await?;
        // Taking the pending create away from the relay is the first write, so the relay and
        // this request cannot both win.
        let cancel = sqlx::query(
            "UPDATE operations SET state = $2, finished_at = $3, error = 'cancelled by delete' \
             WHERE deployment_id = $1 AND kind = 'create' AND state = $4",
        )
        .bind(id)
        .bind(operation_state::CANCELLED)
        .bind(&at)
        .bind(operation_state::PENDING)
        .execute(&mut *tx);
        if timed("operations.cancel", cancel).await?.rows_affected() == 1 {
            let delete = sqlx::query(
                "UPDATE deployments SET status = $2, deleted_at = $3, updated_at = $3 WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(id)
            .bind(DeploymentStatus::Deleted.as_str())
            .bind(&at)
            .execute(&mut *tx);
            timed("deployments.delete", delete).await?;
            crate::secrets::erase_secrets(&mut tx, id).await?;
            let detail = json!({"immediate": true, "reason": "no workflow had started; nothing existed in the cloud"});
            insert_event(&mut tx, id, "deployment.deleted", actor, detail, &at).await?;
            tx.commit().await?;
            return Ok((self.deployment(id).await?, DeleteOutcome::Deleted));
        }
        tx.rollback().await?;
        match self
            .request_operation(id, OperationKind::Delete, &json!({}), actor)
            .await
        {
            Ok((record, _)) => Ok((record, DeleteOutcome::Deleting)),
            Err(StoreError::Conflict(why)) => match self.operation_in_flight(id).await? {
                Some(running) if running.kind == OperationKind::Delete => {
                    Ok((self.deployment(id).await?, DeleteOutcome::Deleting))
                }
                Some(_) => {
                    let cancelled = self.request_cancel(id, true, actor).await?;
                    Ok((self.deployment(id).await?, DeleteOutcome::AfterCancel(cancelled.id)))
                }
                None => Err(StoreError::Conflict(why)),
            },
            Err(error) => Err(error),
        }
    }

    /// The operation in flight (pending or running) on a deployment, if any.
    #[tracing::instrument(skip(self))]
    pub async fn operation_in_flight(&self, deployment_id: &str) -> Result<Option<OperationRecord>> {
        let sql = format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE deployment_id = $1 AND state IN ($2, $3)");
        let row = timed(
            "operations.in_flight",
            sqlx::query(&sql)
                .bind(deployment_id)
                .bind(operation_state::PENDING)
                .bind(operation_state::RUNNING)
                .fetch_optional(self.pool()),
        )
        .await?;
        row.as_ref().map(OperationRecord::from_row).transpose()
    }

    /// Every operation of a deployment, oldest first.
    #[tracing::instrument(skip(self))]
    pub async fn operations(&self, deployment_id: &str) -> Result<Vec<OperationRecord>> {
        let sql =
            format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE deployment_id = $1 ORDER BY created_at, id");
        let rows = timed(
            "operations.list",
            sqlx::query(&sql).bind(deployment_id).fetch_all(self.pool()),
        )
        .await?;
        rows.iter().map(OperationRecord::from_row).collect()
    }

    /// A deployment's history, oldest first.
    #[tracing::instrument(skip(self))]
    pub async fn events(&self, deployment_id: &str, limit: i64, offset: i64) -> Result<Page<EventRecord>> {
        let rows = timed(
            "events.list",
            sqlx::query(
                "SELECT id, action, actor, request_id, detail, created_at FROM deployment_events \
                 WHERE deployment_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
            )
            .bind(deployment_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(self.pool()),
        )
        .await?;
        let total: i64 = timed(
            "events.count",
            sqlx::query("SELECT COUNT(*) AS total FROM deployment_events WHERE deployment_id = $1")
                .bind(deployment_id)
                .fetch_one(self.pool()),
        )
        .await?
        .try_get("total")?;
        Ok(Page {
            items: rows.iter().map(EventRecord::from_row).collect::<Result<_>>()?,
            total,
        })
    }

    /// Number of deployments per status, soft-deleted ones as `DELETED`.
    #[tracing::instrument(skip(self))]
    pub async fn count_by_status(&self) -> Result<Vec<(DeploymentStatus, i64)>> {
        let rows = timed(
            "deployments.count_by_status",
            sqlx::query("SELECT status, COUNT(*) AS total FROM deployments GROUP BY status").fetch_all(self.pool()),
        )
        .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                let status = status.parse().map_err(|_| StoreError::Corrupt("deployments.status"))?;
                Ok((status, row.try_get("total")?))
            })
            .collect()
    }
}

impl Store {
    /// When the oldest operation still waiting for its workflow was accepted, and when the
    /// oldest running one started: the relay's lag and a stuck operation, for the metrics.
    #[tracing::instrument(skip(self))]
    pub async fn oldest_operations(&self) -> Result<(Option<String>, Option<String>)> {
        let query = sqlx::query(
            "SELECT (SELECT MIN(created_at) FROM operations WHERE state = $1) AS pending, \
                    (SELECT MIN(started_at) FROM operations WHERE state = $2) AS running",
        )
        .bind(operation_state::PENDING)
        .bind(operation_state::RUNNING)
        .fetch_one(self.pool());
        let row = timed("operations.oldest", query).await?;
        Ok((row.try_get("pending")?, row.try_get("running")?))
    }
}

/// A cloud resource as the workflow layer records it the moment the cloud returns its id.
impl Store {
    /// Marks a pending operation as running (the relay's claim). Returns `None` when it was
    /// not pending any more (cancelled, or claimed by another relay).
    #[tracing::instrument(skip(self))]
    pub async fn claim_operation(&self, operation_id: &str) -> Result<Option<OperationRecord>> {
        let at = now();
        let mut tx = self.begin().await?;
        let claimed = sqlx::query("UPDATE operations SET state = $2, started_at = $3 WHERE id = $1 AND state = $4")
            .bind(operation_id)
            .bind(operation_state::RUNNING)
            .bind(&at)
            .bind(operation_state::PENDING)
            .execute(&mut *tx);
        if timed("operations.claim", claimed).await?.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let sql = format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE id = $1");
        let row = timed(
            "operations.get",
            sqlx::query(&sql).bind(operation_id).fetch_one(&mut *tx),
        )
        .await?;
        let operation = OperationRecord::from_row(&row)?;
        if operation.kind == OperationKind::Create {
            let started =
                sqlx::query("UPDATE deployments SET status = $2, updated_at = $3 WHERE id = $1 AND status = $4")
                    .bind(&operation.deployment_id)
                    .bind(DeploymentStatus::InProgress.as_str())
                    .bind(&at)
                    .bind(DeploymentStatus::Pending.as_str())
                    .execute(&mut *tx);
            timed("deployments.transition", started).await?;
        }
        let detail = json!({"operation_id": operation.id, "kind": operation.kind.as_str()});
        insert_event(
            &mut tx,
            &operation.deployment_id,
            "operation.started",
            &Actor::default(),
            detail,
            &at,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(operation))
    }

    /// Ends a running operation and moves its deployment to `status`, with `reason` (the
    /// cause of a failure) shown in the API and the events. `DELETED` also soft-deletes.
    #[tracing::instrument(skip(self))]
    pub async fn finish_operation(
        &self,
        operation_id: &str,
        succeeded: bool,
        status: DeploymentStatus,
        reason: Option<&str>,
    ) -> Result<DeploymentRecord> {
        let at = now();
        let mut tx = self.begin().await?;
        let state = if succeeded {
            operation_state::SUCCEEDED
        } else {
            operation_state::FAILED
        };
        // An operation that ends short of its goal after a cancel was asked for was cancelled.
        let finished = sqlx::query(
            "UPDATE operations SET state = CASE WHEN cancel_requested_at IS NOT NULL AND $2 = 'FAILED' THEN 'CANCELLED' ELSE $2 END, \
             finished_at = $3, error = $4 WHERE id = $1 AND state = $5",
        )
                .bind(operation_id)
                .bind(state)
                .bind(&at)
                .bind(reason)
                .bind(operation_state::RUNNING)
                .execute(&mut *tx);
        if timed("operations.finish", finished).await?.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "operation '{operation_id}' is not running"
            )));
        }
        let row = timed(
            "operations.get",
            sqlx::query("SELECT deployment_id, kind, delete_requested_at FROM operations WHERE id = $1")
                .bind(operation_id)
                .fetch_one(&mut *tx),
        )
        .await?;
        let deployment_id: String = row.try_get("deployment_id")?;
        let kind: String = row.try_get("kind")?;
        let delete_after = row.try_get::<Option<String>, _>("delete_requested_at")?.is_some();
        // A DELETE that found this operation running: the delete follows in this transaction.
        let status = match delete_after && status != DeploymentStatus::Deleted {
            true => DeploymentStatus::Deleting,
            false => status,
        };
        let deleted_at = (status == DeploymentStatus::Deleted).then_some(at.as_str());
        let update = sqlx::query(
            "UPDATE deployments SET status = $2, status_reason = $3, updated_at = $4, deleted_at = COALESCE($5, deleted_at) WHERE id = $1",
        )
        .bind(&deployment_id)
        .bind(status.as_str())
        .bind(reason)
        .bind(&at)
        .bind(deleted_at)
        .execute(&mut *tx);
        timed("deployments.transition", update).await?;
        if status == DeploymentStatus::Deleted {
            crate::secrets::erase_secrets(&mut tx, &deployment_id).await?;
        }
        let action = if succeeded {
            "operation.succeeded"
        } else {
            "operation.failed"
        };
        let detail = json!({"operation_id": operation_id, "kind": kind, "status": status.as_str(), "reason": reason});
        insert_event(&mut tx, &deployment_id, action, &Actor::default(), detail, &at).await?;
        if status == DeploymentStatus::Deleting {
            crate::cancel::record_delete_after(&mut tx, &deployment_id, operation_id, &at).await?;
        }
        tx.commit().await?;
        self.deployment(&deployment_id).await
    }

    /// Pending operations, oldest first: the relay's work list.
    #[tracing::instrument(skip(self))]
    pub async fn pending_operations(&self, limit: i64) -> Result<Vec<OperationRecord>> {
        let sql =
            format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE state = $1 ORDER BY created_at, id LIMIT $2");
        let rows = timed(
            "operations.pending",
            sqlx::query(&sql)
                .bind(operation_state::PENDING)
                .bind(limit)
                .fetch_all(self.pool()),
        )
        .await?;
        rows.iter().map(OperationRecord::from_row).collect()
    }
}

impl Store {
    /// One operation by id.
    #[tracing::instrument(skip(self))]
    pub async fn operation(&self, operation_id: &str) -> Result<OperationRecord> {
        let sql = format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE id = $1");
        match timed(
            "operations.get",
            sqlx::query(&sql).bind(operation_id).fetch_optional(self.pool()),
        )
        .await?
        {
            Some(row) => OperationRecord::from_row(&row),
            None => Err(StoreError::NotFound(format!("operation '{operation_id}'"))),
        }
    }

    /// Sets the template and parameters a deployment now stands for (after an update or a
    /// scale), with an event.
    #[tracing::instrument(skip(self, template, parameters))]
    pub async fn set_desired(
        &self,
        deployment_id: &str,
        template_id: Option<&str>,
        template: &Template,
        parameters: &Value,
    ) -> Result<()> {
        let at = now();
        let mut tx = self.begin().await?;
        let update = sqlx::query(
            "UPDATE deployments SET template_id = $2, template = $3, parameters = $4, updated_at = $5 WHERE id = $1",
        )
        .bind(deployment_id)
        .bind(template_id)
        .bind(template.to_value().to_string())
        .bind(parameters.to_string())
        .bind(&at)
        .execute(&mut *tx);
        timed("deployments.set_desired", update).await?;
        let detail = json!({"template": template.name, "parameters": parameters});
        insert_event(
            &mut tx,
            deployment_id,
            "deployment.desired_state_changed",
            &Actor::default(),
            detail,
            &at,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends an event written by the workflow layer (progress, compensation).
    #[tracing::instrument(skip(self, detail))]
    pub async fn record_event(&self, deployment_id: &str, action: &str, detail: Value) -> Result<()> {
        let at = now();
        let mut tx = self.begin().await?;
        insert_event(&mut tx, deployment_id, action, &Actor::default(), detail, &at).await?;
        tx.commit().await?;
        Ok(())
    }
}
