//! Configuration with Ansible: `ConfigureWorkflow` runs `ansible-playbook` on a deployment's
//! servers. The playbook must lie inside the configured playbook directory (checked again here,
//! after resolving symlinks); the inventory is generated from the servers (group per server
//! group, the server's IP as host) unless the request gives one; `extra_vars` go to
//! ansible-playbook as a JSON file, never through a shell. The output is stored and served by
//! the API; a failure names the failing task.

#![allow(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use orch_core::ConfigureRequest;
use serde_json::{json, Map, Value};
use temporalio_common::RetryPolicy;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{ActivityOptions, ApplicationFailure, WorkflowContext, WorkflowResult};
use tokio::io::AsyncReadExt;

use crate::activities::{Finish, OperationRef, OrchActivities, Outcome};
use crate::known_hosts;
use orch_store::host_keys::HostKey;
use orch_store::ResourceRecord;

/// Largest output kept per run.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// Where playbooks are and how Ansible reaches the servers.
#[derive(Debug, Clone)]
pub struct AnsibleSettings {
    /// Only playbooks inside this directory run.
    pub playbook_dir: PathBuf,
    pub ansible_playbook: PathBuf,
    /// User and private key for SSH to the servers, when set.
    pub ssh_user: Option<String>,
    pub ssh_key_path: Option<PathBuf>,
    /// The servers' SSH port, when not 22.
    pub ssh_port: Option<u16>,
}

impl Default for AnsibleSettings {
    fn default() -> Self {
        let local = Path::new(".venv/tools/bin/ansible-playbook");
        Self {
            playbook_dir: PathBuf::from("playbooks"),
            ansible_playbook: if local.exists() {
                local.to_path_buf()
            } else {
                PathBuf::from("ansible-playbook")
            },
            ssh_user: None,
            ssh_key_path: None,
            ssh_port: None,
        }
    }
}

/// How a playbook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybookResult {
    pub succeeded: bool,
    pub failed_task: Option<String>,
    pub output: String,
    /// The `known_hosts` file as ssh left it: the keys it started from and those it met.
    pub known_hosts: String,
}

/// The task whose failure ended the run: the last `TASK [name]` before a `fatal:` or
/// `failed:` line.
pub fn failing_task(output: &str) -> Option<String> {
    let mut current = None;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("TASK [") {
            current = rest.split(']').next().map(str::to_owned);
        }
        if line.starts_with("fatal:") || line.starts_with("failed:") {
            return current;
        }
    }
    None
}

/// An inventory in Ansible's YAML/JSON format: `{"all": {"children": {group: {"hosts": {...}}}}}`.
fn inventory(groups: &Map<String, Value>, settings: &AnsibleSettings) -> Value {
    let children: Map<String, Value> = groups
        .iter()
        .map(|(group, hosts)| {
            let hosts: Map<String, Value> = hosts
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|host| Some((host.as_str()?.to_owned(), json!({}))))
                .collect();
            (group.clone(), json!({"hosts": hosts}))
        })
        .collect();
    let mut vars = Map::new();
    if let Some(user) = &settings.ssh_user {
        vars.insert("ansible_user".into(), json!(user));
    }
    if let Some(key) = &settings.ssh_key_path {
        vars.insert("ansible_ssh_private_key_file".into(), json!(key));
    }
    if let Some(port) = settings.ssh_port {
        vars.insert("ansible_port".into(), json!(port));
    }
    json!({"all": {"children": children, "vars": vars}})
}

/// Resolves `playbook` inside `dir`, refusing anything that leaves it (also through symlinks).
fn resolve_playbook(dir: &Path, playbook: &str) -> Result<PathBuf, String> {
    orch_core::deployment::check_playbook_path(playbook)?;
    let root = dir
        .canonicalize()
        .map_err(|_| format!("the playbook directory {} does not exist", dir.display()))?;
    let path = root
        .join(playbook)
        .canonicalize()
        .map_err(|_| format!("playbook '{playbook}' not found in the playbook directory"))?;
    if path.starts_with(&root) {
        Ok(path)
    } else {
        Err(format!("playbook '{playbook}' leaves the playbook directory"))
    }
}

/// Runs ansible-playbook without a shell, with a timeout; kills it when the time is up. ssh
/// trusts `known_hosts` and nothing else: a host not in it is trusted on first contact and
/// added, a host whose key differs is refused.
pub async fn run_playbook(
    settings: &AnsibleSettings,
    request: &ConfigureRequest,
    groups: &Map<String, Value>,
    known_hosts: &str,
) -> Result<PlaybookResult, String> {
    let playbook = resolve_playbook(&settings.playbook_dir, &request.playbook)?;
    let work = std::env::temp_dir().join(format!("orch-ansible-{}", crate::process_unique()));
    std::fs::create_dir_all(&work).map_err(|error| format!("cannot create a work directory: {error}"))?;
    let result = run_in(&work, settings, request, groups, &playbook, known_hosts).await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn run_in(
    work: &Path,
    settings: &AnsibleSettings,
    request: &ConfigureRequest,
    groups: &Map<String, Value>,
    playbook: &Path,
    known_hosts: &str,
) -> Result<PlaybookResult, String> {
    let write = |name: &str, content: String| {
        let path = work.join(name);
        std::fs::write(&path, content)
            .map(|()| path)
            .map_err(|error| error.to_string())
    };
    let inventory_path = write("inventory.json", inventory(groups, settings).to_string())?;
    let vars_path = write("extra-vars.json", Value::Object(request.extra_vars.clone()).to_string())?;
    let known_hosts_path = write("known_hosts", known_hosts.to_owned())?;
    let mut child = tokio::process::Command::new(&settings.ansible_playbook)
        .arg("-i")
        .arg(&inventory_path)
        .arg("--extra-vars")
        .arg(format!("@{}", vars_path.display()))
        .arg(playbook)
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .env(
            "ANSIBLE_SSH_COMMON_ARGS",
            crate::known_hosts::ssh_options(&known_hosts_path),
        )
        // A connection of this run is never reused by another run, which would skip the
        // host-key check, so connections are shared only inside the run's directory.
        .env("ANSIBLE_SSH_ARGS", "-C -o ControlMaster=auto -o ControlPersist=10s")
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", work.join("cp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {}: {error}", settings.ansible_playbook.display()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let run = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (read_out, read_err, status) =
            tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err), child.wait());
        read_out.and(read_err).map_err(|error| error.to_string())?;
        let status = status.map_err(|error| error.to_string())?;
        out.extend_from_slice(&err);
        Ok::<_, String>((status, out))
    };
    let result = tokio::time::timeout(Duration::from_secs(request.timeout_seconds.into()), run).await;
    drop(child);
    let known_hosts = std::fs::read_to_string(&known_hosts_path).unwrap_or_default();
    let (succeeded, output) = match result {
        Ok(result) => {
            let (status, output) = result?;
            (status.success(), String::from_utf8_lossy(&output).into_owned())
        }
        Err(_) => (
            false,
            format!(
                "ansible-playbook did not finish within {} s and was stopped",
                request.timeout_seconds
            ),
        ),
    };
    let output = truncated(output);
    Ok(PlaybookResult {
        succeeded,
        failed_task: if succeeded { None } else { failing_task(&output) },
        output,
        known_hosts,
    })
}

fn truncated(mut output: String) -> String {
    if output.len() > MAX_OUTPUT_BYTES {
        let cut = (0..=MAX_OUTPUT_BYTES)
            .rev()
            .find(|i| output.is_char_boundary(*i))
            .unwrap_or(0);
        output.truncate(cut);
        output.push_str("\n[output truncated]");
    }
    output
}

/// Activities of configuration, beside the deployment activities.
pub struct ConfigureActivities {
    pub store: orch_store::Store,
    pub ansible: AnsibleSettings,
}

#[activities]
impl ConfigureActivities {
    /// Runs the operation's playbook and stores the run; fails (not retried) naming the task.
    #[activity]
    pub async fn run_ansible(
        self: Arc<Self>,
        ctx: ActivityContext,
        operation: OperationRef,
    ) -> Result<(), ActivityError> {
        let fatal = |message: String| ActivityError::application(ApplicationFailure::non_retryable(message));
        let retryable = |message: String| ActivityError::application(ApplicationFailure::new(message));
        let store = &self.store;
        let record = store
            .operation(&operation.operation_id)
            .await
            .map_err(|error| retryable(error.to_string()))?;
        let request = ConfigureRequest::parse(&record.payload).map_err(|problems| fatal(problems.to_string()))?;
        let deployment_id = &operation.deployment_id;
        let resources = store
            .resources(deployment_id)
            .await
            .map_err(|error| retryable(error.to_string()))?;
        let servers = servers_by_address(&resources);
        let groups = request.inventory.clone().unwrap_or_else(|| groups_of(&resources));
        let trusted = self
            .trusted_host_keys(deployment_id, &servers)
            .await
            .map_err(|error| retryable(error.to_string()))?;
        let run_id = store
            .start_configuration_run(deployment_id, &operation.operation_id, &request.playbook)
            .await
            .map_err(|error| retryable(error.to_string()))?;
        let heartbeats = async {
            loop {
                let _ = ctx.record_heartbeat(run_id.clone()).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        };
        let known = known_hosts::file(&trusted);
        let result = tokio::select! {
            result = run_playbook(&self.ansible, &request, &groups, &known) => result,
            () = heartbeats => unreachable!("the heartbeat loop never ends"),
        };
        let result = match result {
            Ok(result) => result,
            Err(message) => PlaybookResult {
                succeeded: false,
                failed_task: None,
                output: message,
                known_hosts: String::new(),
            },
        };
        let met = known_hosts::first_met(&result.known_hosts, &trusted, &servers);
        store
            .record_host_keys(deployment_id, &met)
            .await
            .map_err(|error| retryable(error.to_string()))?;
        for key in &met {
            tracing::info!(deployment_id, host = %key.host, "SSH host key recorded on first contact");
        }
        store
            .finish_configuration_run(&run_id, result.succeeded, result.failed_task.as_deref(), &result.output)
            .await
            .map_err(|error| retryable(error.to_string()))?;
        if result.succeeded {
            return Ok(());
        }
        let refused = known_hosts::refused_hosts(&result.output);
        if !refused.is_empty() {
            return Err(fatal(format!(
                "the SSH host key of {} is not the one recorded on first contact (run {run_id}); \
                 if the change is expected, forget the old key: DELETE /deployments/{deployment_id}/host-keys/HOST",
                refused.join(", ")
            )));
        }
        let cause = match &result.failed_task {
            Some(task) => format!("ansible-playbook failed at task '{task}' (run {run_id})"),
            None => format!(
                "ansible-playbook failed: {} (run {run_id})",
                result.output.lines().last().unwrap_or("no output")
            ),
        };
        Err(fatal(cause))
    }
}

impl ConfigureActivities {
    /// The deployment's recorded host keys still trusted; the keys of servers that were
    /// replaced or removed are forgotten (the new server has a new key).
    async fn trusted_host_keys(
        &self,
        deployment_id: &str,
        servers: &known_hosts::Servers,
    ) -> Result<Vec<HostKey>, orch_store::StoreError> {
        let (trusted, stale) = known_hosts::trusted(self.store.host_keys(deployment_id).await?, servers);
        for host in stale {
            match (self.store)
                .forget_host_key(
                    deployment_id,
                    &host,
                    "its server was replaced",
                    &orch_store::Actor::default(),
                )
                .await
            {
                Ok(()) | Err(orch_store::StoreError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
            tracing::info!(deployment_id, %host, "SSH host key forgotten: its server was replaced");
        }
        Ok(trusted)
    }
}

/// Each server's address → its id.
fn servers_by_address(resources: &[ResourceRecord]) -> known_hosts::Servers {
    resources
        .iter()
        .filter(|resource| resource.kind == "server")
        .filter_map(|resource| {
            let ip = resource.attributes["ip"].as_str()?;
            Some((ip.to_owned(), resource.cloud_id.clone()?))
        })
        .collect()
}

/// The inventory made from the servers: a group per server group, the server's IP as host.
fn groups_of(resources: &[ResourceRecord]) -> Map<String, Value> {
    let mut groups = Map::new();
    for resource in resources.iter().filter(|resource| resource.kind == "server") {
        let (Some(group), Some(ip)) = (
            resource.attributes["group"].as_str(),
            resource.attributes["ip"].as_str(),
        ) else {
            continue;
        };
        if let Value::Array(hosts) = groups.entry(group.to_owned()).or_insert_with(|| json!([])) {
            hosts.push(json!(ip));
        }
    }
    groups
}

#[workflow]
#[derive(Default)]
pub struct ConfigureWorkflow;

#[workflow_methods]
impl ConfigureWorkflow {
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>, operation: OperationRef) -> WorkflowResult<String> {
        let short = crate::workflows::short();
        if ctx
            .execute_activity(OrchActivities::begin, operation.clone(), short.clone())
            .await?
            .is_none()
        {
            return Ok("cancelled before it started".into());
        }
        let long = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(7 * 3600))
            .heartbeat_timeout(Duration::from_secs(30))
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_secs(5))
                    .maximum_attempts(3)
                    .build(),
            )
            .build();
        let outcome = match ctx
            .execute_activity(ConfigureActivities::run_ansible, operation.clone(), long)
            .await
        {
            Ok(()) => Outcome::Completed,
            Err(error) => Outcome::Failed(crate::workflows::failure_message(&error)),
        };
        let summary = format!("{outcome:?}");
        ctx.execute_activity(OrchActivities::finish, Finish { operation, outcome }, short)
            .await?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failing_task_is_named() {
        let output = "PLAY [all]\n\nTASK [Gathering Facts]\nok: [localhost]\n\nTASK [install nginx]\nfatal: [localhost]: FAILED! => {}\n";
        assert_eq!(failing_task(output).as_deref(), Some("install nginx"));
        assert_eq!(failing_task("TASK [x]\nok: [h]\n"), None);
    }

    #[test]
    fn playbooks_cannot_leave_their_directory() {
        let dir = std::env::temp_dir().join(format!("orch-playbooks-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("roles")).unwrap();
        std::fs::write(dir.join("site.yml"), "- hosts: all\n").unwrap();
        let outside = std::env::temp_dir().join(format!("orch-outside-{}.yml", std::process::id()));
        std::fs::write(&outside, "- hosts: all\n").unwrap();
        let _ = std::os::unix::fs::symlink(&outside, dir.join("roles/escape.yml"));
        assert!(resolve_playbook(&dir, "site.yml").is_ok());
        assert!(resolve_playbook(&dir, "../x.yml").is_err());
        assert!(resolve_playbook(&dir, "missing.yml").unwrap_err().contains("not found"));
        assert!(resolve_playbook(&dir, "roles/escape.yml")
            .unwrap_err()
            .contains("leaves"));
    }

    #[test]
    fn the_inventory_groups_hosts() {
        let groups: Map<String, Value> = serde_json::from_value(json!({"web": ["10.0.1.3", "10.0.1.4"]})).unwrap();
        let settings = AnsibleSettings {
            ssh_user: Some("ubuntu".into()),
            ..AnsibleSettings::default()
        };
        let inventory = inventory(&groups, &settings);
        assert_eq!(inventory["all"]["children"]["web"]["hosts"]["10.0.1.4"], json!({}));
        assert_eq!(inventory["all"]["vars"]["ansible_user"], "ubuntu");
    }
}
