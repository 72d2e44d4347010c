//! The health gate: an instance counts as ready only on a *fresh* healthy result, one newer
//! than its start, so a dependent never starts on a verdict about an earlier life of its
//! dependency. Exec probes run in the engine; HTTP and TCP probes orch runs itself, so they
//! work for images without a shell.

use std::time::{Duration, Instant};

use bollard::models::{ContainerInspectResponse, HealthStatusEnum};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use orch_core::plan::{instance_name, service_spec_hash};
use orch_core::provider::Report;
use orch_core::template::Probe;

use super::Work;
use crate::error::EngineError;

/// Instances waited for at once.
const PARALLEL_WAITS: usize = 16;
/// How long an instance without a health check may take to be running.
const START_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// What one look at an instance found.
enum Verdict {
    Ready,
    NotYet(String),
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// The engine's own verdict, counted only when its last check began after the start.
fn engine_verdict(info: &ContainerInspectResponse) -> Verdict {
    let state = info.state.as_ref();
    let started = state.and_then(|state| state.started_at.as_deref()).and_then(parse_time);
    let Some(health) = state.and_then(|state| state.health.as_ref()) else {
        return Verdict::NotYet("no health result yet".into());
    };
    let last = health.log.as_ref().and_then(|log| log.last());
    let fresh = match (
        last.and_then(|check| check.start.as_deref()).and_then(parse_time),
        started,
    ) {
        (Some(checked), Some(started)) => checked >= started,
        _ => false,
    };
    match health.status {
        Some(HealthStatusEnum::HEALTHY) if fresh => Verdict::Ready,
        _ => {
            let output = last.and_then(|check| check.output.clone()).unwrap_or_default();
            Verdict::NotYet(format!("health {:?}: {}", health.status, output.trim()))
        }
    }
}

/// The address orch reaches an instance's port at: the container's own address when orch
/// runs beside the engine.
fn container_address(info: &ContainerInspectResponse) -> Option<String> {
    let networks = info.network_settings.as_ref()?.networks.as_ref()?;
    networks
        .values()
        .filter_map(|endpoint| endpoint.ip_address.clone())
        .find(|address| !address.is_empty())
}

impl<R: Report> Work<'_, R> {
    pub(crate) async fn wait(&self, keys: &[String]) -> Result<(), EngineError> {
        // The futures are made first: a closure inside the stream would not be `Send`.
        let work: Vec<_> = keys.iter().map(|key| self.wait_one(key)).collect();
        futures_util::stream::iter(work)
            .buffer_unordered(PARALLEL_WAITS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Waits until the instance is ready (running, and healthy if it has a check) or its
    /// deadline passes.
    pub(crate) async fn wait_one(&self, key: &str) -> Result<(), EngineError> {
        let member = self.member(key)?;
        let check = member.service.healthcheck.as_ref();
        let deadline = check.map_or(START_DEADLINE, |check| Duration::from_secs(check.deadline_s.into()));
        let name = instance_name(self.target.deployment_id, member.service_name, member.index);
        let started = Instant::now();
        loop {
            let info = self.inspect(&name).await?.ok_or_else(|| EngineError::Unhealthy {
                key: key.to_owned(),
                cause: "the container is gone".into(),
            })?;
            let verdict = self.verdict(&info, check.map(|check| &check.probe)).await;
            let why = match verdict {
                Verdict::Ready => return self.mark_ready(key, &info, check.is_some()).await,
                Verdict::NotYet(why) => why,
            };
            if started.elapsed() >= deadline {
                return Err(EngineError::Unhealthy {
                    key: key.to_owned(),
                    cause: format!("not ready within {} s: {why}", deadline.as_secs()),
                });
            }
            self.report.progress(&format!("waiting for {key}: {why}")).await;
            tokio::time::sleep(POLL).await;
        }
    }

    async fn verdict(&self, info: &ContainerInspectResponse, probe: Option<&Probe>) -> Verdict {
        let state = info.state.as_ref();
        if !state.and_then(|state| state.running).unwrap_or(false) {
            let code = state.and_then(|state| state.exit_code).unwrap_or_default();
            return Verdict::NotYet(format!("not running (exit code {code})"));
        }
        match probe {
            None => Verdict::Ready,
            Some(Probe::Exec(_)) => engine_verdict(info),
            Some(Probe::Http { port, path }) => self.probe_http(info, *port, path).await,
            Some(Probe::Tcp { port }) => self.probe_tcp(info, *port).await,
        }
    }

    async fn probe_http(&self, info: &ContainerInspectResponse, port: u16, path: &str) -> Verdict {
        let Some(address) = container_address(info) else {
            return Verdict::NotYet("no address yet".into());
        };
        let url = format!("http://{address}:{port}{path}");
        match self.docker.probe.get(&url).send().await {
            Ok(response) if response.status().is_success() || response.status().is_redirection() => Verdict::Ready,
            Ok(response) => Verdict::NotYet(format!("GET {path} answered {}", response.status())),
            Err(error) => Verdict::NotYet(format!("GET {path}: {error}")),
        }
    }

    async fn probe_tcp(&self, info: &ContainerInspectResponse, port: u16) -> Verdict {
        let Some(address) = container_address(info) else {
            return Verdict::NotYet("no address yet".into());
        };
        let connect = tokio::net::TcpStream::connect((address.as_str(), port));
        match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(_)) => Verdict::Ready,
            Ok(Err(error)) => Verdict::NotYet(format!("port {port}: {error}")),
            Err(_) => Verdict::NotYet(format!("port {port}: no answer")),
        }
    }

    /// Records the instance as ready, with the spec and ports it now has.
    async fn mark_ready(&self, key: &str, info: &ContainerInspectResponse, checked: bool) -> Result<(), EngineError> {
        let member = self.member(key)?;
        let spec_hash = service_spec_hash(self.target.desired, member.service_name);
        let host_ports = self.lease_ports(&member, &[]).await?;
        let id = info.id.clone().unwrap_or_default();
        let status = if checked { "healthy" } else { "running" };
        self.record_instance(&member, &id, &spec_hash, &host_ports, status)
            .await
    }
}
