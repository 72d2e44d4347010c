//! Host ports leased to container instances. The primary key (host, address, protocol,
//! port) lets exactly one instance hold a port, whichever worker or replica asks; the
//! owner index makes asking again for the same instance's port return the same lease, so
//! a port survives retries and engine restarts.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use sqlx::Row;

use crate::{now, timed, Result, Store, StoreError};

/// Whose port is asked for, and where.
#[derive(Debug, Clone)]
pub struct LeaseRequest<'a> {
    pub host: &'a str,
    pub address: &'a str,
    pub protocol: &'a str,
    pub deployment_id: &'a str,
    pub logical_key: &'a str,
    pub port_name: &'a str,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLease {
    pub logical_key: String,
    pub port_name: String,
    pub protocol: String,
    pub port: u16,
}

/// How often a lease is tried again when another process took the chosen port first.
const RACES: usize = 20;

impl Store {
    /// The port leased to the instance's named port: the one it holds, or the lowest free
    /// one in `range`. `avoid` lists ports found held by something outside orch: a lease on
    /// one of them is given up and another taken.
    #[tracing::instrument(skip(self, request), fields(key = request.logical_key, port = request.port_name))]
    pub async fn lease_port(
        &self,
        request: &LeaseRequest<'_>,
        range: RangeInclusive<u16>,
        avoid: &[u16],
    ) -> Result<u16> {
        if let Some(port) = self.leased_port(request).await? {
            if !avoid.contains(&port) {
                return Ok(port);
            }
            self.release_lease(request).await?;
        }
        for _ in 0..RACES {
            let taken = self.taken_ports(request).await?;
            let Some(port) = range
                .clone()
                .find(|port| !taken.contains(port) && !avoid.contains(port))
            else {
                return Err(StoreError::Conflict(format!(
                    "no free host port in {}-{} on {}",
                    range.start(),
                    range.end(),
                    request.host
                )));
            };
            match self.insert_lease(request, port).await {
                Ok(()) => return Ok(port),
                Err(StoreError::Conflict(_)) => {
                    // The same instance's lease made by a concurrent attempt wins.
                    if let Some(port) = self.leased_port(request).await? {
                        return Ok(port);
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::Conflict(format!(
            "host ports on {} keep being taken; try again",
            request.host
        )))
    }

    async fn leased_port(&self, request: &LeaseRequest<'_>) -> Result<Option<u16>> {
        let row = timed(
            "leases.get",
            sqlx::query(
                "SELECT port FROM port_leases WHERE deployment_id = $1 AND logical_key = $2 AND port_name = $3",
            )
            .bind(request.deployment_id)
            .bind(request.logical_key)
            .bind(request.port_name)
            .fetch_optional(self.pool()),
        )
        .await?;
        row.map(|row| port_of(&row)).transpose()
    }

    async fn taken_ports(&self, request: &LeaseRequest<'_>) -> Result<BTreeSet<u16>> {
        let rows = timed(
            "leases.taken",
            sqlx::query("SELECT port FROM port_leases WHERE host = $1 AND address = $2 AND protocol = $3")
                .bind(request.host)
                .bind(request.address)
                .bind(request.protocol)
                .fetch_all(self.pool()),
        )
        .await?;
        rows.iter().map(port_of).collect()
    }

    async fn insert_lease(&self, request: &LeaseRequest<'_>, port: u16) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO port_leases (host, address, protocol, port, deployment_id, logical_key, port_name, leased_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(request.host)
        .bind(request.address)
        .bind(request.protocol)
        .bind(i64::from(port))
        .bind(request.deployment_id)
        .bind(request.logical_key)
        .bind(request.port_name)
        .bind(now())
        .execute(self.pool());
        match timed("leases.insert", query).await {
            Ok(_) => Ok(()),
            Err(error) if StoreError::is_unique_violation(&error) => Err(StoreError::Conflict("port taken".into())),
            Err(error) => Err(error.into()),
        }
    }

    async fn release_lease(&self, request: &LeaseRequest<'_>) -> Result<()> {
        let query =
            sqlx::query("DELETE FROM port_leases WHERE deployment_id = $1 AND logical_key = $2 AND port_name = $3")
                .bind(request.deployment_id)
                .bind(request.logical_key)
                .bind(request.port_name)
                .execute(self.pool());
        timed("leases.release", query).await?;
        Ok(())
    }

    /// Gives up the leases of the instances under `keys`; no keys: every lease of the
    /// deployment.
    #[tracing::instrument(skip(self, keys))]
    pub async fn release_ports(&self, deployment_id: &str, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            let query = sqlx::query("DELETE FROM port_leases WHERE deployment_id = $1")
                .bind(deployment_id)
                .execute(self.pool());
            timed("leases.release_all", query).await?;
            return Ok(());
        }
        for key in keys {
            let query = sqlx::query("DELETE FROM port_leases WHERE deployment_id = $1 AND logical_key = $2")
                .bind(deployment_id)
                .bind(key)
                .execute(self.pool());
            timed("leases.release", query).await?;
        }
        Ok(())
    }

    /// Every lease of a deployment, by key and port name.
    pub async fn port_leases(&self, deployment_id: &str) -> Result<Vec<PortLease>> {
        let rows = timed(
            "leases.list",
            sqlx::query(
                "SELECT logical_key, port_name, protocol, port FROM port_leases WHERE deployment_id = $1 ORDER BY logical_key, port_name",
            )
            .bind(deployment_id)
            .fetch_all(self.pool()),
        )
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PortLease {
                    logical_key: row.try_get("logical_key")?,
                    port_name: row.try_get("port_name")?,
                    protocol: row.try_get("protocol")?,
                    port: port_of(row)?,
                })
            })
            .collect()
    }
}

fn port_of(row: &sqlx::any::AnyRow) -> Result<u16> {
    let port: i64 = row.try_get("port")?;
    u16::try_from(port).map_err(|_| StoreError::Corrupt("port_leases.port"))
}
