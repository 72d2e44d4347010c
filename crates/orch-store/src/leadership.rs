//! Leadership: a lease on a role that one process at a time should play, such as the relay.
//! The holder renews the lease before it expires; when it stops renewing (it died, or lost
//! the database), another process takes the role once the lease has run out, and a holder
//! that stops gracefully hands it on at once. Leases compare times written by the
//! processes' own clocks, so the replicas' clocks must agree to within a small part of the
//! lease; a role played twice for a moment must be harmless (the relay is idempotent).

use std::time::Duration;

use crate::{now, timed, Result, Store};

fn later(after: Duration) -> String {
    let at = chrono::Utc::now() + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Store {
    /// Takes or renews the lease on `role` for `holder` for `lease`; whether `holder` now
    /// plays the role.
    #[tracing::instrument(skip(self))]
    pub async fn lead(&self, role: &str, holder: &str, lease: Duration) -> Result<bool> {
        let expires_at = later(lease);
        let taken = sqlx::query(
            "UPDATE leadership SET holder = $2, expires_at = $3 WHERE role = $1 AND (holder = $2 OR expires_at < $4)",
        )
        .bind(role)
        .bind(holder)
        .bind(&expires_at)
        .bind(now())
        .execute(self.pool());
        if timed("leadership.renew", taken).await?.rows_affected() == 1 {
            return Ok(true);
        }
        // No row yet, or another holder's lease still runs: only an insert can tell.
        let first = sqlx::query(
            "INSERT INTO leadership (role, holder, expires_at) VALUES ($1, $2, $3) ON CONFLICT (role) DO NOTHING",
        )
        .bind(role)
        .bind(holder)
        .bind(&expires_at)
        .execute(self.pool());
        Ok(timed("leadership.claim", first).await?.rows_affected() == 1)
    }

    /// Gives up the role, so that another process takes it at once.
    #[tracing::instrument(skip(self))]
    pub async fn resign(&self, role: &str, holder: &str) -> Result<()> {
        let query = sqlx::query("DELETE FROM leadership WHERE role = $1 AND holder = $2")
            .bind(role)
            .bind(holder)
            .execute(self.pool());
        timed("leadership.resign", query).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_holder_at_a_time_until_its_lease_runs_out_or_it_resigns() {
        let dir = std::env::temp_dir().join(format!("orch-store-lead-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/orch.db", dir.display());
        let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
        let lease = Duration::from_millis(300);
        assert!(
            store.lead("relay", "a", lease).await.unwrap(),
            "the first asks and gets it"
        );
        assert!(!store.lead("relay", "b", lease).await.unwrap(), "a holds it");
        assert!(store.lead("relay", "a", lease).await.unwrap(), "a renews");
        assert!(store.lead("other", "b", lease).await.unwrap(), "roles are apart");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(store.lead("relay", "b", lease).await.unwrap(), "a's lease ran out");
        assert!(
            !store.lead("relay", "a", lease).await.unwrap(),
            "and a cannot take it back"
        );
        store.resign("relay", "a").await.unwrap();
        assert!(
            !store.lead("relay", "a", lease).await.unwrap(),
            "only the holder resigns"
        );
        store.resign("relay", "b").await.unwrap();
        assert!(
            store.lead("relay", "a", lease).await.unwrap(),
            "at once after b resigned"
        );
    }
}
