//! SSH host keys per deployment: recorded the first time Ansible reaches a host, enforced on
//! every later run, forgotten when the server behind the address is replaced or an operator
//! says so.

use sqlx::Row;

use crate::deployments::insert_event;
use crate::{now, timed, Actor, Result, Store, StoreError};

/// The host keys of one host, as `known_hosts` lines.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostKey {
    /// The address Ansible connected to.
    pub host: String,
    /// The server that had the address when the key was recorded; `None` for an address given
    /// in an inventory.
    pub server_id: Option<String>,
    /// `known_hosts` lines, one per key.
    pub known_hosts: String,
    pub first_seen_at: String,
}

impl Store {
    /// A deployment's recorded host keys, by host.
    #[tracing::instrument(skip(self))]
    pub async fn host_keys(&self, deployment_id: &str) -> Result<Vec<HostKey>> {
        let rows = timed(
            "ssh_host_keys.list",
            sqlx::query(
                "SELECT host, server_id, known_hosts, first_seen_at FROM ssh_host_keys \
                 WHERE deployment_id = $1 ORDER BY host",
            )
            .bind(deployment_id)
            .fetch_all(self.pool()),
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(HostKey {
                    host: row.try_get("host")?,
                    server_id: row.try_get("server_id")?,
                    known_hosts: row.try_get("known_hosts")?,
                    first_seen_at: row.try_get("first_seen_at")?,
                })
            })
            .collect()
    }

    /// Records the keys of hosts met for the first time; a host already recorded keeps its
    /// keys, so a run can never replace a key it was refused for.
    #[tracing::instrument(skip(self, keys))]
    pub async fn record_host_keys(&self, deployment_id: &str, keys: &[HostKey]) -> Result<()> {
        let mut tx = self.begin().await?;
        for key in keys {
            let query = sqlx::query(
                "INSERT INTO ssh_host_keys (deployment_id, host, server_id, known_hosts, first_seen_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (deployment_id, host) DO NOTHING",
            )
            .bind(deployment_id)
            .bind(&key.host)
            .bind(&key.server_id)
            .bind(&key.known_hosts)
            .bind(now())
            .execute(&mut *tx);
            timed("ssh_host_keys.record", query).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the keys of `host`, so that the next run trusts whatever key it presents; the
    /// deployment's events say who did it and why.
    #[tracing::instrument(skip(self))]
    pub async fn forget_host_key(&self, deployment_id: &str, host: &str, why: &str, actor: &Actor) -> Result<()> {
        let mut tx = self.begin().await?;
        let query = sqlx::query("DELETE FROM ssh_host_keys WHERE deployment_id = $1 AND host = $2")
            .bind(deployment_id)
            .bind(host)
            .execute(&mut *tx);
        if timed("ssh_host_keys.forget", query).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("host key of '{host}'")));
        }
        let detail = serde_json::json!({"host": host, "reason": why});
        insert_event(&mut tx, deployment_id, "host-key.forgotten", actor, detail, &now()).await?;
        tx.commit().await?;
        Ok(())
    }
}
