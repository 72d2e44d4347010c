//! `orch reconcile`, `orch orphans` and `orch drift`: a pass now (or one deployment's
//! repair), the orphans passes found and their cleanup (a dry run unless `--apply`), and a
//! deployment's drift.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::api::{urlencode, Api};
use super::show::{self, print};
use super::{finish_operation, ClientCommand, Output};

#[derive(Debug, Subcommand)]
pub enum OrphansCommand {
    /// Show what a cleanup would remove; with --apply, remove it.
    Cleanup {
        /// Remove them (without it, nothing is removed).
        #[arg(long)]
        apply: bool,
        /// Follow the cleanup until it ends.
        #[arg(long)]
        wait: bool,
    },
}

/// `orch reconcile`, `orch orphans`, `orch drift`.
pub(super) async fn run(api: &Api, output: Output, command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Reconcile { deployment, wait } => reconcile(api, output, deployment.as_deref(), wait).await,
        ClientCommand::Orphans { action, location } => orphans(api, output, action, location).await,
        ClientCommand::Drift { deployment } => drift(api, output, &deployment).await,
        _ => unreachable!("only reconcile, orphans and drift come here"),
    }
}

/// A pass over every location, or with a deployment, that deployment's repair.
async fn reconcile(api: &Api, output: Output, deployment: Option<&str>, follow: bool) -> anyhow::Result<()> {
    if let Some(deployment) = deployment {
        let id = api.resolve(deployment).await?;
        let path = format!("/deployments/{id}/reconcile");
        let (_, accepted) = api.call(Method::POST, &path, Some(&json!({}))).await?;
        return finish_operation(api, &id, accepted, output, follow).await;
    }
    let (_, accepted) = api.call(Method::POST, "/reconcile", Some(&json!({}))).await?;
    finish_run(api, output, accepted, follow).await
}

async fn orphans(
    api: &Api,
    output: Output,
    command: Option<OrphansCommand>,
    location: Option<String>,
) -> anyhow::Result<()> {
    match command {
        None => {
            let path = match location {
                Some(location) => format!("/orphans?location={}", urlencode(&location)),
                None => "/orphans".to_owned(),
            };
            print(output, &api.get(&path).await?, show::orphans);
        }
        Some(OrphansCommand::Cleanup { apply: false, .. }) => {
            let (_, listed) = api
                .call(Method::POST, "/orphans/cleanup", Some(&json!({"dry_run": true})))
                .await?;
            print(output, &listed, |listed| {
                format!(
                    "{}\ndry run: nothing removed; --apply removes these",
                    show::orphans(listed)
                )
            });
        }
        Some(OrphansCommand::Cleanup { apply: true, wait }) => {
            let (_, accepted) = api
                .call(Method::POST, "/orphans/cleanup", Some(&json!({"dry_run": false})))
                .await?;
            finish_run(api, output, accepted, wait).await?;
        }
    }
    Ok(())
}

async fn drift(api: &Api, output: Output, deployment: &str) -> anyhow::Result<()> {
    let id = api.resolve(deployment).await?;
    print(
        output,
        &api.get(&format!("/deployments/{id}/drift")).await?,
        show::drift,
    );
    Ok(())
}

/// Prints an accepted run, or with `follow` waits for its end and prints what it did.
async fn finish_run(api: &Api, output: Output, accepted: Value, follow: bool) -> anyhow::Result<()> {
    if !follow {
        print(output, &accepted, show::accepted);
        return Ok(());
    }
    let id = accepted["operation_id"].as_str().unwrap_or_default();
    let path = format!("/reconcile/{}", urlencode(id));
    let mut pause = Duration::from_millis(200);
    loop {
        let run = api.get(&path).await?;
        if run["finished_at"].is_string() {
            print(output, &run, show::run);
            if run["state"] == "FAILED" {
                bail!("{}", run["error"].as_str().unwrap_or("the run failed"));
            }
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
