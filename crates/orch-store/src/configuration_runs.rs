//! Configuration runs: one row per ansible-playbook run, with its output.

use sqlx::Row;

use crate::{now, timed, Result, Store, StoreError};

/// One ansible-playbook run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConfigurationRun {
    pub id: String,
    pub deployment_id: String,
    pub operation_id: String,
    pub playbook: String,
    /// `RUNNING`, `SUCCEEDED` or `FAILED`.
    pub status: String,
    pub failed_task: Option<String>,
    pub output: String,
    pub started_at: String,
    pub finished_at: Option<String>,
}

impl ConfigurationRun {
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self> {
        Ok(Self {
            id: row.try_get("id")?,
            deployment_id: row.try_get("deployment_id")?,
            operation_id: row.try_get("operation_id")?,
            playbook: row.try_get("playbook")?,
            status: row.try_get("status")?,
            failed_task: row.try_get("failed_task")?,
            output: row.try_get("output")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

const RUN_COLUMNS: &str =
    "id, deployment_id, operation_id, playbook, status, failed_task, output, started_at, finished_at";

impl Store {
    /// Starts (or, for a retried activity, restarts) the run of a configure operation; the run
    /// id is the operation id, so there is one run per operation.
    #[tracing::instrument(skip(self))]
    pub async fn start_configuration_run(
        &self,
        deployment_id: &str,
        operation_id: &str,
        playbook: &str,
    ) -> Result<String> {
        let query = sqlx::query(
            "INSERT INTO configuration_runs (id, deployment_id, operation_id, playbook, status, output, started_at) \
             VALUES ($1, $2, $1, $3, 'RUNNING', '', $4) \
             ON CONFLICT (id) DO UPDATE SET status = 'RUNNING', output = '', failed_task = NULL, finished_at = NULL, started_at = excluded.started_at",
        )
        .bind(operation_id)
        .bind(deployment_id)
        .bind(playbook)
        .bind(now())
        .execute(self.pool());
        timed("configuration_runs.start", query).await?;
        Ok(operation_id.to_owned())
    }

    #[tracing::instrument(skip(self, output))]
    pub async fn finish_configuration_run(
        &self,
        run_id: &str,
        succeeded: bool,
        failed_task: Option<&str>,
        output: &str,
    ) -> Result<()> {
        let query = sqlx::query(
            "UPDATE configuration_runs SET status = $2, failed_task = $3, output = $4, finished_at = $5 WHERE id = $1",
        )
        .bind(run_id)
        .bind(if succeeded { "SUCCEEDED" } else { "FAILED" })
        .bind(failed_task)
        .bind(output)
        .bind(now())
        .execute(self.pool());
        timed("configuration_runs.finish", query).await?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    pub async fn configuration_run(&self, deployment_id: &str, run_id: &str) -> Result<ConfigurationRun> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM configuration_runs WHERE deployment_id = $1 AND id = $2");
        match timed(
            "configuration_runs.get",
            sqlx::query(&sql)
                .bind(deployment_id)
                .bind(run_id)
                .fetch_optional(self.pool()),
        )
        .await?
        {
            Some(row) => ConfigurationRun::from_row(&row),
            None => Err(StoreError::NotFound(format!("configuration run '{run_id}'"))),
        }
    }

    /// A deployment's runs, newest first, without their output.
    #[tracing::instrument(skip(self))]
    pub async fn configuration_runs(&self, deployment_id: &str) -> Result<Vec<ConfigurationRun>> {
        let sql = "SELECT id, deployment_id, operation_id, playbook, status, failed_task, '' AS output, started_at, finished_at \
                   FROM configuration_runs WHERE deployment_id = $1 ORDER BY started_at DESC";
        let rows = timed(
            "configuration_runs.list",
            sqlx::query(sql).bind(deployment_id).fetch_all(self.pool()),
        )
        .await?;
        rows.iter().map(ConfigurationRun::from_row).collect()
    }
}
