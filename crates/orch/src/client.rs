//! The command-line client: `orch deploy|get|list|events|delete|scale|configure|templates`
//! against a running orch (`ORCH_URL`, `ORCH_API_KEY`). `--wait` follows an operation with a
//! progress bar per resource kind and exits non-zero, printing the cause, when it fails.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use orch_core::Template;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Where the server is and how to talk to it.
#[derive(Debug, Args)]
pub struct Connection {
    /// The orch API.
    #[arg(long, env = "ORCH_URL", default_value = "http://127.0.0.1:8000", global = true)]
    pub url: String,
    /// API key (default: ./data/dev-api-key, written by `orch dev`).
    #[arg(long, env = "ORCH_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// `text` for people, `json` for scripts.
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a deployment from a template file (JSON or YAML) or a stored template's name.
    Deploy {
        /// A template file, or the name or id of a stored template.
        template: String,
        #[arg(long)]
        name: String,
        /// A parameter, e.g. --param web_count=3 (repeatable).
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Cloud region (default: the server's).
        #[arg(long)]
        region: Option<String>,
        /// Keep what was created when the deploy fails, for inspection.
        #[arg(long)]
        no_rollback: bool,
        /// Follow the deploy until it completes or fails.
        #[arg(long)]
        wait: bool,
    },
    /// Show a deployment (by id or name).
    Get { deployment: String },
    /// List deployments, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show a deployment's history.
    Events { deployment: String },
    /// Delete a deployment and everything it created.
    Delete {
        deployment: String,
        #[arg(long)]
        wait: bool,
    },
    /// Set the number of servers of a group.
    Scale {
        deployment: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        count: u32,
        #[arg(long)]
        wait: bool,
    },
    /// Run an Ansible playbook on a deployment's servers.
    Configure {
        deployment: String,
        #[arg(long)]
        playbook: String,
        /// An extra variable, e.g. --extra-var app_port=8080 (repeatable).
        #[arg(long = "extra-var", value_name = "KEY=VALUE")]
        extra_vars: Vec<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Manage stored templates.
    #[command(subcommand)]
    Templates(TemplatesCommand),
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// List stored templates.
    List,
    /// Show one template.
    Show { name: String },
    /// Create or replace a template from a JSON or YAML file.
    Apply { file: std::path::PathBuf },
}

struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    fn new(connection: &Connection) -> anyhow::Result<Self> {
        let key = match &connection.api_key {
            Some(key) => key.clone(),
            None => std::fs::read_to_string("data/dev-api-key")
                .map(|key| key.trim().to_owned())
                .map_err(|_| anyhow!("no API key: set ORCH_API_KEY or --api-key"))?,
        };
        Ok(Self {
            http: reqwest::Client::new(),
            url: connection.url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// Sends a request; a problem+json answer becomes an error listing every problem.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-API-Key", &self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach orch at {}", self.url))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok((status, value));
        }
        let mut message = value["detail"]
            .as_str()
            .unwrap_or(status.canonical_reason().unwrap_or("error"))
            .to_owned();
        for problem in value["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(value["parameters"].as_array().into_iter().flatten())
        {
            let at = problem["pointer"]
                .as_str()
                .or(problem["parameter"].as_str())
                .unwrap_or("");
            message.push_str(&format!("\n  {at}: {}", problem["detail"].as_str().unwrap_or("")));
        }
        Err(anyhow!("{} {message}", status.as_u16()))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call(Method::GET, path, None).await?.1)
    }

    /// A deployment's id from an id or a name.
    async fn resolve(&self, reference: &str) -> anyhow::Result<String> {
        match self.call(Method::GET, &format!("/deployments/{reference}"), None).await {
            Ok((_, deployment)) => Ok(deployment["id"].as_str().unwrap_or(reference).to_owned()),
            Err(error) if error.to_string().starts_with("404") => {
                let found = self.get(&format!("/deployments?name={}", urlencode(reference))).await?;
                found["items"][0]["id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("no deployment has the id or name '{reference}'"))
            }
            Err(error) => Err(error),
        }
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `key=value` pairs; values that read as JSON (numbers, booleans) keep their type.
fn pairs(items: &[String], flag: &str) -> anyhow::Result<Map<String, Value>> {
    items
        .iter()
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| anyhow!("{flag} '{item}': expected KEY=VALUE"))?;
            let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
            Ok((key.to_owned(), value))
        })
        .collect()
}

fn print(output: Output, value: &Value, text: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        Output::Text => println!("{}", text(value)),
    }
}

fn summary(deployment: &Value) -> String {
    let mut line = format!(
        "{}  {}  {}  region {}  created {}",
        deployment["id"].as_str().unwrap_or(""),
        deployment["name"].as_str().unwrap_or(""),
        deployment["status"].as_str().unwrap_or(""),
        deployment["cloud_region"].as_str().unwrap_or(""),
        deployment["created_at"].as_str().unwrap_or("")
    );
    if let Some(reason) = deployment["status_reason"].as_str() {
        line.push_str(&format!("\n  cause: {reason}"));
    }
    line
}

fn details(deployment: &Value) -> String {
    let mut text = summary(deployment);
    if let Some(network) = deployment["resources"]["network_id"].as_str() {
        text.push_str(&format!("\n  network {network}"));
    }
    for (group, detail) in deployment["resources"]["groups"].as_object().into_iter().flatten() {
        for server in detail["servers"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "\n  {group:<10} {:<36} {:<32} {:<15} {}",
                server["id"].as_str().unwrap_or("-"),
                server["name"].as_str().unwrap_or("-"),
                server["ip"].as_str().unwrap_or("-"),
                server["status"].as_str().unwrap_or("-")
            ));
        }
    }
    text
}

/// Resources a deployment's template asks for, by kind.
fn expected_counts(deployment: &Value) -> BTreeMap<&'static str, u64> {
    let template = &deployment["template"];
    let parameters = &deployment["parameters"];
    let mut counts = BTreeMap::from([
        ("network", 1),
        (
            "subnet",
            template["network_config"]["subnets"]
                .as_object()
                .map_or(0, |s| s.len() as u64),
        ),
    ]);
    if template["network_config"]["router"]["enabled"] != false {
        counts.insert("router", 1);
    }
    let (mut servers, mut volumes) = (0, 0);
    for (group, spec) in template["vm_config"].as_object().into_iter().flatten() {
        let count = parameters[format!("{group}_count")]
            .as_u64()
            .or(spec["count"].as_u64())
            .unwrap_or(0);
        servers += count;
        volumes += count * spec["volumes"].as_array().map_or(0, |v| v.len() as u64);
    }
    counts.insert("server", servers);
    if volumes > 0 {
        counts.insert("volume", volumes);
    }
    counts
}

/// Follows a deployment until no operation is in flight; fails when it ends FAILED.
async fn wait(api: &Api, id: &str, output: Output, until_deleted: bool) -> anyhow::Result<Value> {
    let progress = MultiProgress::new();
    let interactive = output == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut bars: BTreeMap<&'static str, ProgressBar> = BTreeMap::new();
    let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut last_status = String::new();
    loop {
        let deployment = api.get(&format!("/deployments/{id}")).await?;
        let status = deployment["status"].as_str().unwrap_or("").to_owned();
        let ready_kinds = deployment["resources"]["items"].as_array().cloned().unwrap_or_default();
        for (kind, total) in expected_counts(&deployment) {
            let done = ready_kinds
                .iter()
                .filter(|item| item["kind"] == kind && item["status"] == "ACTIVE")
                .count() as u64;
            let bar = bars.entry(kind).or_insert_with(|| {
                let bar = if interactive {
                    progress.add(ProgressBar::new(total))
                } else {
                    ProgressBar::hidden()
                };
                bar.set_style(style.clone());
                bar.set_prefix(format!("{kind}s"));
                bar
            });
            bar.set_length(total.max(done));
            bar.set_position(done);
        }
        if status != last_status {
            if interactive {
                let _ = progress.println(format!("{} {status}", deployment["name"].as_str().unwrap_or(id)));
            } else if output == Output::Text {
                eprintln!("{} {status}", deployment["name"].as_str().unwrap_or(id));
            }
            last_status = status.clone();
        }
        let settled = deployment["operation"].is_null()
            && !matches!(
                status.as_str(),
                "PENDING" | "IN_PROGRESS" | "UPDATING" | "SCALING" | "CONFIGURING" | "DELETING"
            );
        if settled {
            for bar in bars.values() {
                bar.finish();
            }
            if status == "FAILED" {
                let cause = deployment["status_reason"].as_str().unwrap_or("no cause recorded");
                if output == Output::Json {
                    println!("{}", serde_json::to_string_pretty(&deployment)?);
                }
                bail!("{} failed: {cause}", deployment["name"].as_str().unwrap_or(id));
            }
            if until_deleted && status != "DELETED" {
                bail!("{} is {status}, not deleted", deployment["name"].as_str().unwrap_or(id));
            }
            return Ok(deployment);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn run(command: ClientCommand, connection: Connection) -> anyhow::Result<()> {
    let api = Api::new(&connection)?;
    let output = connection.output;
    match command {
        ClientCommand::Deploy {
            template,
            name,
            params,
            region,
            no_rollback,
            wait: follow,
        } => {
            let template_value = if std::path::Path::new(&template).is_file() {
                let text = std::fs::read_to_string(&template).with_context(|| format!("cannot read {template}"))?;
                let parsed = Template::parse_text(&text).map_err(|problems| {
                    let lines: Vec<String> = problems
                        .0
                        .iter()
                        .map(|p| format!("  {}: {}", p.pointer, p.detail))
                        .collect();
                    anyhow!("{template} is not a valid template:\n{}", lines.join("\n"))
                })?;
                parsed.to_value()
            } else {
                Value::String(template)
            };
            let mut body = json!({"name": name, "template": template_value, "parameters": pairs(&params, "--param")?, "rollback": !no_rollback});
            if let Some(region) = region {
                body["cloud_region"] = json!(region);
            }
            let (_, accepted) = api.call(Method::POST, "/deployments", Some(&body)).await?;
            let id = accepted["id"].as_str().unwrap_or_default().to_owned();
            if follow {
                let deployment = wait(&api, &id, output, false).await?;
                print(output, &deployment, details);
            } else {
                print(output, &accepted, |a| {
                    format!(
                        "{} {} {}",
                        a["id"].as_str().unwrap_or(""),
                        a["name"].as_str().unwrap_or(""),
                        a["status"].as_str().unwrap_or("")
                    )
                });
            }
        }
        ClientCommand::Get { deployment } => {
            let id = api.resolve(&deployment).await?;
            print(output, &api.get(&format!("/deployments/{id}")).await?, details);
        }
        ClientCommand::List { status, name, limit } => {
            let mut path = format!("/deployments?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={}", urlencode(&status)));
            }
            if let Some(name) = name {
                path.push_str(&format!("&name={}", urlencode(&name)));
            }
            print(output, &api.get(&path).await?, |page| {
                let lines: Vec<String> = page["items"].as_array().into_iter().flatten().map(summary).collect();
                format!("{}\n{} of {}", lines.join("\n"), lines.len(), page["total"])
            });
        }
        ClientCommand::Events { deployment } => {
            let id = api.resolve(&deployment).await?;
            print(
                output,
                &api.get(&format!("/deployments/{id}/events?limit=100")).await?,
                |page| {
                    page["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|event| {
                            format!(
                                "{}  {:<28} {}",
                                event["created_at"].as_str().unwrap_or(""),
                                event["action"].as_str().unwrap_or(""),
                                event["detail"]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                },
            );
        }
        ClientCommand::Delete {
            deployment,
            wait: follow,
        } => {
            let id = api.resolve(&deployment).await?;
            let (_, accepted) = api.call(Method::DELETE, &format!("/deployments/{id}"), None).await?;
            let result = if follow && accepted["status"] != "DELETED" {
                wait(&api, &id, output, true).await?
            } else {
                accepted
            };
            print(output, &result, |d| {
                format!(
                    "{} {}",
                    d["id"].as_str().unwrap_or(""),
                    d["status"].as_str().unwrap_or("")
                )
            });
        }
        ClientCommand::Scale {
            deployment,
            group,
            count,
            wait: follow,
        } => {
            let id = api.resolve(&deployment).await?;
            let body = json!({"target_count": count, "vm_type": group});
            let (_, accepted) = api
                .call(Method::POST, &format!("/deployments/{id}/scale"), Some(&body))
                .await?;
            finish_operation(&api, &id, accepted, output, follow).await?;
        }
        ClientCommand::Configure {
            deployment,
            playbook,
            extra_vars,
            wait: follow,
        } => {
            let id = api.resolve(&deployment).await?;
            let body = json!({"playbook": playbook, "extra_vars": pairs(&extra_vars, "--extra-var")?});
            let (_, accepted) = api
                .call(Method::POST, &format!("/deployments/{id}/configure"), Some(&body))
                .await?;
            finish_operation(&api, &id, accepted, output, follow).await?;
        }
        ClientCommand::Templates(TemplatesCommand::List) => {
            print(output, &api.get("/templates?limit=100").await?, |page| {
                page["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        format!(
                            "{}  {}  v{}",
                            t["id"].as_str().unwrap_or(""),
                            t["name"].as_str().unwrap_or(""),
                            t["version"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ClientCommand::Templates(TemplatesCommand::Show { name }) => {
            print(
                output,
                &api.get(&format!("/templates/{}", urlencode(&name))).await?,
                |t| serde_json::to_string_pretty(t).unwrap_or_default(),
            );
        }
        ClientCommand::Templates(TemplatesCommand::Apply { file }) => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let template = Template::parse_text(&text).map_err(|problems| {
                let lines: Vec<String> = problems
                    .0
                    .iter()
                    .map(|p| format!("  {}: {}", p.pointer, p.detail))
                    .collect();
                anyhow!("{} is not a valid template:\n{}", file.display(), lines.join("\n"))
            })?;
            let body = template.to_value();
            let path = format!("/templates/{}", urlencode(&template.name));
            let stored = match api.call(Method::PUT, &path, Some(&body)).await {
                Ok((_, stored)) => stored,
                Err(error) if error.to_string().starts_with("404") => {
                    api.call(Method::POST, "/templates", Some(&body)).await?.1
                }
                Err(error) => return Err(error),
            };
            print(output, &stored, |t| {
                format!(
                    "{} {} v{}",
                    t["id"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    t["version"]
                )
            });
        }
    }
    Ok(())
}

async fn finish_operation(api: &Api, id: &str, accepted: Value, output: Output, follow: bool) -> anyhow::Result<()> {
    if follow {
        let deployment = wait(api, id, output, false).await?;
        print(output, &deployment, details);
    } else {
        print(output, &accepted, |a| {
            format!(
                "{} {}",
                a["deployment_id"].as_str().unwrap_or(""),
                a["status"].as_str().unwrap_or("")
            )
        });
    }
    Ok(())
}
