//! Cancelling the operation in flight. The request is a mark on the operation row, so it
//! holds whether or not a workflow has picked the operation up yet, and survives any
//! restart: the operation's forward steps watch for it and stop, and the workflow then
//! compensates (a create's resources go; a scale or update returns to the previous spec).
//! A DELETE that finds an operation in flight asks for the same, and for a delete once the
//! cancelled operation has ended (recorded by `finish_operation`, in its transaction).

use serde_json::json;
use sqlx::{Any, Transaction};

use crate::deployments::{insert_event, insert_operation};
use crate::records::{operation_state, OPERATION_COLUMNS};
use crate::{now, timed, Actor, OperationRecord, Result, Store, StoreError};
use orch_core::OperationKind;

impl Store {
    /// Asks the operation in flight on deployment `id` to stop; with `then_delete`, the
    /// deployment is deleted once it has. Asking twice is the same as asking once. A delete
    /// cannot be cancelled, nor a configure run (its playbook ends at its own timeout).
    #[tracing::instrument(skip(self, actor))]
    pub async fn request_cancel(&self, id: &str, then_delete: bool, actor: &Actor) -> Result<OperationRecord> {
        let at = now();
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT {OPERATION_COLUMNS} FROM operations o WHERE deployment_id = $1 AND state IN ($2, $3) \
             AND EXISTS (SELECT 1 FROM deployments d WHERE d.id = o.deployment_id AND d.deleted_at IS NULL)"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(operation_state::PENDING)
            .bind(operation_state::RUNNING)
            .fetch_optional(&mut *tx);
        let Some(row) = timed("operations.in_flight", row).await? else {
            tx.rollback().await?;
            self.deployment(id).await?;
            return Err(StoreError::Conflict(
                "no operation is in flight on this deployment".into(),
            ));
        };
        let operation = OperationRecord::from_row(&row)?;
        if let Some(why) = not_cancellable(operation.kind) {
            tx.rollback().await?;
            return Err(StoreError::Conflict(why.into()));
        }
        let mark = sqlx::query(
            "UPDATE operations SET cancel_requested_at = COALESCE(cancel_requested_at, $2), \
             delete_requested_at = CASE WHEN $3 = 'yes' THEN COALESCE(delete_requested_at, $2) ELSE delete_requested_at END \
             WHERE id = $1",
        )
        .bind(&operation.id)
        .bind(&at)
        .bind(if then_delete { "yes" } else { "no" })
        .execute(&mut *tx);
        timed("operations.cancel", mark).await?;
        let detail = json!({"operation_id": operation.id, "kind": operation.kind.as_str(), "then_delete": then_delete});
        insert_event(&mut tx, id, "operation.cancel_requested", actor, detail, &at).await?;
        tx.commit().await?;
        self.operation(&operation.id).await
    }

    /// Whether a cancel was asked for the operation.
    #[tracing::instrument(skip(self))]
    pub async fn cancel_requested(&self, operation_id: &str) -> Result<bool> {
        Ok(self.operation(operation_id).await?.cancel_requested_at.is_some())
    }
}

fn not_cancellable(kind: OperationKind) -> Option<&'static str> {
    match kind {
        OperationKind::Delete => Some("a delete cannot be cancelled; it is under way"),
        OperationKind::Configure => Some("a configure run cannot be cancelled; it ends at its playbook's timeout"),
        _ => None,
    }
}

/// The delete a DELETE asked for behind a cancelled operation, recorded as the cancelled
/// operation ends (the caller's transaction has just moved the deployment to DELETING).
pub(crate) async fn record_delete_after(
    tx: &mut Transaction<'static, Any>,
    deployment_id: &str,
    cancelled: &str,
    at: &str,
) -> Result<()> {
    let actor = Actor::default();
    let delete = insert_operation(tx, deployment_id, OperationKind::Delete, &json!({}), &actor, at).await?;
    let detail = json!({"operation_id": delete.id, "kind": "delete", "after": cancelled});
    insert_event(tx, deployment_id, "operation.requested", &actor, detail, at).await?;
    Ok(())
}
