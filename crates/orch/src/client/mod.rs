//! The command-line client: `orch deploy|get|list|events|delete|scale|configure|reconcile|
//! orphans|drift|templates`
//! against a running orch (`ORCH_URL`, `ORCH_API_KEY`). `--wait` follows an operation with a
//! progress bar per resource kind and exits non-zero, printing the cause, when it fails.

mod api;
mod follow;
mod reconcile;
mod show;

use anyhow::{anyhow, bail, Context};
use api::{urlencode, Api};
use clap::{Args, Subcommand, ValueEnum};
use follow::wait;
use orch_core::Template;
use reqwest::Method;
use serde_json::{json, Map, Value};
use show::print;

pub use reconcile::OrphansCommand;

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
        /// Repair drift at every reconcile pass (default: report it).
        #[arg(long)]
        auto_heal: bool,
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
    /// Show what an update to the deployment's own spec would change, from what is
    /// recorded, and why.
    Plan { deployment: String },
    /// Stop the operation in flight: a create's resources go (it ends FAILED, `cancelled`),
    /// a scale or update returns to the previous spec (COMPLETED).
    Cancel {
        deployment: String,
        #[arg(long)]
        wait: bool,
    },
    /// Run a reconcile pass over every location now (orphans and drift); with a deployment,
    /// repair that deployment's drift.
    Reconcile {
        deployment: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// List the resources carrying orch's marks that no deployment holds (past their grace
    /// period); `orch orphans cleanup` removes them.
    Orphans {
        #[command(subcommand)]
        action: Option<OrphansCommand>,
        /// Only this location, e.g. cloud:RegionOne or containers:local.
        #[arg(long)]
        location: Option<String>,
    },
    /// How a deployment differs from what its providers hold, as the last pass saw it.
    Drift { deployment: String },
    /// Delete a deployment and everything it created; an operation in flight is cancelled
    /// first.
    Delete {
        deployment: String,
        #[arg(long)]
        wait: bool,
    },
    /// Set the number of servers of a group, or of instances of a service.
    Scale {
        deployment: String,
        /// The server group to scale.
        #[arg(long, required_unless_present = "service", conflicts_with = "service")]
        group: Option<String>,
        /// The containerised service to scale.
        #[arg(long)]
        service: Option<String>,
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
    /// Docker Compose files from and for orch.
    #[command(subcommand)]
    Compose(ComposeCommand),
    /// The services a template can name with `catalog:`.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// A deployment's secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Print a generated secret's value, once: the server refuses every later reveal (needs
    /// a write key; the reveal is recorded in the deployment's events).
    Reveal { deployment: String, name: String },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// List the entries.
    List,
    /// Show one entry in full.
    Show { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ComposeCommand {
    /// Write a deployment's services as a Compose file to stdout (`> docker-compose.yml`),
    /// or with `--dir` as DIR/docker-compose.yml beside the configuration files it reads;
    /// what Compose cannot carry over is said on stderr.
    Export {
        deployment: String,
        /// A directory for docker-compose.yml and its configs/ (created if missing).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Turn a Compose file into a template on stdout, where it can; what it could not carry
    /// over is said on stderr. Config files it names are read from beside it.
    Import {
        file: std::path::PathBuf,
        /// The template's name when the file names no project (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
    },
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

pub async fn run(command: ClientCommand, connection: Connection) -> anyhow::Result<()> {
    // An import reads a local file and needs no server.
    if let ClientCommand::Compose(ComposeCommand::Import { file, name }) = &command {
        return compose_import(file, name.as_deref());
    }
    let api = Api::new(&connection)?;
    let output = connection.output;
    match command {
        ClientCommand::Deploy {
            template,
            name,
            params,
            region,
            no_rollback,
            auto_heal,
            wait: follow,
        } => {
            let template = template_value(&template)?;
            let mut body = json!({"name": name, "template": template, "parameters": pairs(&params, "--param")?,
                                  "rollback": !no_rollback, "auto_heal": auto_heal});
            if let Some(region) = region {
                body["cloud_region"] = json!(region);
            }
            let (_, accepted) = api.call(Method::POST, "/deployments", Some(&body)).await?;
            let id = accepted["id"].as_str().unwrap_or_default().to_owned();
            finish_operation(&api, &id, accepted, output, follow).await?;
        }
        ClientCommand::Get { deployment } => show_deployment(&api, output, &deployment, Shown::Details).await?,
        ClientCommand::Plan { deployment } => show_deployment(&api, output, &deployment, Shown::Plan).await?,
        ClientCommand::Events { deployment } => show_deployment(&api, output, &deployment, Shown::Events).await?,
        ClientCommand::List { status, name, limit } => list(&api, output, status, name, limit).await?,
        ClientCommand::Delete {
            deployment,
            wait: follow,
        } => delete(&api, output, &deployment, follow).await?,
        ClientCommand::Cancel {
            deployment,
            wait: follow,
        } => cancel(&api, output, &deployment, follow).await?,
        command @ (ClientCommand::Reconcile { .. } | ClientCommand::Orphans { .. } | ClientCommand::Drift { .. }) => {
            reconcile::run(&api, output, command).await?
        }
        ClientCommand::Scale {
            deployment,
            group,
            service,
            count,
            wait: follow,
        } => {
            let body = match (group, service) {
                (Some(group), _) => json!({"target_count": count, "vm_type": group}),
                (None, service) => json!({"target_count": count, "service": service}),
            };
            operation(&api, output, &deployment, "scale", &body, follow).await?;
        }
        ClientCommand::Configure {
            deployment,
            playbook,
            extra_vars,
            wait: follow,
        } => {
            let body = json!({"playbook": playbook, "extra_vars": pairs(&extra_vars, "--extra-var")?});
            operation(&api, output, &deployment, "configure", &body, follow).await?;
        }
        ClientCommand::Templates(command) => templates(&api, output, command).await?,
        ClientCommand::Compose(ComposeCommand::Export { deployment, dir }) => {
            compose_export(&api, &deployment, dir.as_deref()).await?
        }
        ClientCommand::Compose(ComposeCommand::Import { file, name }) => compose_import(&file, name.as_deref())?,
        ClientCommand::Secret(command) => secret(&api, output, command).await?,
        ClientCommand::Catalog(CatalogCommand::List) => print(output, &api.get("/catalog").await?, show::catalog),
        ClientCommand::Catalog(CatalogCommand::Show { name }) => {
            let entry = api.get(&format!("/catalog/{}", urlencode(&name))).await?;
            print(output, &entry, |entry| {
                serde_json::to_string_pretty(entry).unwrap_or_default()
            });
        }
    }
    Ok(())
}

/// What `get`, `plan` and `events` show of a deployment.
enum Shown {
    Details,
    Plan,
    Events,
}

async fn show_deployment(api: &Api, output: Output, deployment: &str, shown: Shown) -> anyhow::Result<()> {
    let id = api.resolve(deployment).await?;
    match shown {
        Shown::Details => print(output, &api.get(&format!("/deployments/{id}")).await?, show::details),
        Shown::Plan => print(output, &api.get(&format!("/deployments/{id}/plan")).await?, show::plan),
        Shown::Events => {
            let page = api.get(&format!("/deployments/{id}/events?limit=100")).await?;
            print(output, &page, show::events);
        }
    }
    Ok(())
}

async fn secret(api: &Api, output: Output, command: SecretCommand) -> anyhow::Result<()> {
    let SecretCommand::Reveal { deployment, name } = command;
    let id = api.resolve(&deployment).await?;
    let path = format!("/deployments/{id}/secrets/{}/reveal", urlencode(&name));
    let (_, revealed) = api.call(Method::POST, &path, None).await?;
    print(output, &revealed, |revealed| {
        revealed["value"].as_str().unwrap_or_default().to_owned()
    });
    Ok(())
}

async fn templates(api: &Api, output: Output, command: TemplatesCommand) -> anyhow::Result<()> {
    match command {
        TemplatesCommand::List => {
            print(output, &api.get("/templates?limit=100").await?, show::templates);
        }
        TemplatesCommand::Show { name } => {
            let template = api.get(&format!("/templates/{}", urlencode(&name))).await?;
            print(output, &template, |t| {
                serde_json::to_string_pretty(t).unwrap_or_default()
            });
        }
        TemplatesCommand::Apply { file } => apply_template(api, output, &file).await?,
    }
    Ok(())
}

/// The deployment's services, its parameters applied, as a Compose file.
async fn compose_export(api: &Api, deployment: &str, dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    let id = api.resolve(deployment).await?;
    let record = api.get(&format!("/deployments/{id}")).await?;
    let invalid =
        |problems: orch_core::problem::Problems| anyhow!("the deployment's template no longer reads: {problems}");
    let template = Template::parse(&record["template"], "/template", None).map_err(invalid)?;
    let effective = orch_core::apply_parameters(&template, &record["parameters"], "/parameters").map_err(invalid)?;
    if effective.services.is_empty() {
        bail!("deployment '{deployment}' has no services to export");
    }
    // Compose project names are lowercase letters, digits, '-' and '_'.
    let project: String = record["name"]
        .as_str()
        .unwrap_or("orch")
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' })
        .collect();
    let export = orch_core::compose::export(&effective, &project);
    for note in &export.notes {
        eprintln!("note: {note}");
    }
    let document = serde_yaml_ng::to_string(&export.document)?;
    let Some(dir) = dir else {
        if !export.files.is_empty() {
            eprintln!("note: the services' configuration files are not written; --dir DIR writes them beside the Compose file");
        }
        print!("{document}");
        return Ok(());
    };
    std::fs::create_dir_all(dir.join("configs")).with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, content) in &export.files {
        std::fs::write(dir.join(path), content).with_context(|| format!("cannot write {path}"))?;
    }
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, document).with_context(|| format!("cannot write {}", file.display()))?;
    eprintln!(
        "wrote {} and {} configuration file(s)",
        file.display(),
        export.files.len()
    );
    Ok(())
}

/// A Compose file as a template. Config files are read only from the Compose file's own
/// directory tree: a path that leads out of it is refused.
fn compose_import(file: &std::path::Path, name: Option<&str>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let compose: Value = serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not YAML", file.display()))?;
    let base = file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .canonicalize()?;
    let read_config = |path: &str| -> Result<String, String> {
        let resolved = base
            .join(path)
            .canonicalize()
            .map_err(|error| format!("{path}: {error}"))?;
        if !resolved.starts_with(&base) {
            return Err(format!("{path} is outside the Compose file's directory"));
        }
        std::fs::read_to_string(&resolved).map_err(|error| format!("{path}: {error}"))
    };
    let stem = file.file_stem().and_then(|stem| stem.to_str()).unwrap_or("imported");
    let imported = orch_core::compose::import::import(&compose, name.unwrap_or(stem), &read_config)
        .map_err(|problems| anyhow!("the file does not make a valid template: {problems}"))?;
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    print!("{}", serde_yaml_ng::to_string(&imported.template.to_value())?);
    Ok(())
}

/// A template file, read and checked here so that its problems are named before anything
/// is sent; anything else is a stored template's name or id.
fn template_value(template: &str) -> anyhow::Result<Value> {
    let path = std::path::Path::new(template);
    if path.is_file() {
        Ok(read_template(path)?.to_value())
    } else {
        Ok(Value::String(template.to_owned()))
    }
}

fn read_template(path: &std::path::Path) -> anyhow::Result<Template> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Template::parse_text(&text).map_err(|problems| {
        let lines: Vec<String> = problems
            .0
            .iter()
            .map(|p| format!("  {}: {}", p.pointer, p.detail))
            .collect();
        anyhow!("{} is not a valid template:\n{}", path.display(), lines.join("\n"))
    })
}

async fn list(
    api: &Api,
    output: Output,
    status: Option<String>,
    name: Option<String>,
    limit: u32,
) -> anyhow::Result<()> {
    let mut path = format!("/deployments?limit={limit}");
    if let Some(status) = status {
        path.push_str(&format!("&status={}", urlencode(&status)));
    }
    if let Some(name) = name {
        path.push_str(&format!("&name={}", urlencode(&name)));
    }
    print(output, &api.get(&path).await?, show::deployments);
    Ok(())
}

async fn delete(api: &Api, output: Output, deployment: &str, follow: bool) -> anyhow::Result<()> {
    let id = api.resolve(deployment).await?;
    let (_, accepted) = api.call(Method::DELETE, &format!("/deployments/{id}"), None).await?;
    let result = if follow && accepted["status"] != "DELETED" {
        wait(api, &id, output, true).await?
    } else {
        accepted
    };
    print(output, &result, show::accepted);
    Ok(())
}

/// `POST /deployments/{id}/cancel`; with `--wait`, until the operation has stopped. A create
/// that ends FAILED because it was cancelled is what was asked for.
async fn cancel(api: &Api, output: Output, deployment: &str, follow: bool) -> anyhow::Result<()> {
    let id = api.resolve(deployment).await?;
    let (_, accepted) = api
        .call(Method::POST, &format!("/deployments/{id}/cancel"), None)
        .await?;
    if !follow {
        print(output, &accepted, show::accepted);
        return Ok(());
    }
    match wait(api, &id, output, false).await {
        Ok(deployment) => print(output, &deployment, show::details),
        Err(error) => {
            let deployment = api.get(&format!("/deployments/{id}")).await?;
            let reason = deployment["status_reason"].as_str().unwrap_or_default();
            if !reason.starts_with("cancelled") {
                return Err(error);
            }
            // `wait` has printed the JSON already.
            if output == Output::Text {
                print(output, &deployment, show::details);
            }
        }
    }
    Ok(())
}

/// `POST /deployments/{id}/{action}` (scale, configure), followed with `--wait`.
async fn operation(
    api: &Api,
    output: Output,
    deployment: &str,
    action: &str,
    body: &Value,
    follow: bool,
) -> anyhow::Result<()> {
    let id = api.resolve(deployment).await?;
    let (_, accepted) = api
        .call(Method::POST, &format!("/deployments/{id}/{action}"), Some(body))
        .await?;
    finish_operation(api, &id, accepted, output, follow).await
}

/// Creates or replaces a stored template from a file.
async fn apply_template(api: &Api, output: Output, file: &std::path::Path) -> anyhow::Result<()> {
    let template = read_template(file)?;
    let body = template.to_value();
    let path = format!("/templates/{}", urlencode(&template.name));
    let stored = match api.call(Method::PUT, &path, Some(&body)).await {
        Ok((_, stored)) => stored,
        Err(error) if error.to_string().starts_with("404") => {
            api.call(Method::POST, "/templates", Some(&body)).await?.1
        }
        Err(error) => return Err(error),
    };
    print(output, &stored, show::template);
    Ok(())
}

async fn finish_operation(api: &Api, id: &str, accepted: Value, output: Output, follow: bool) -> anyhow::Result<()> {
    if follow {
        let deployment = wait(api, id, output, false).await?;
        print(output, &deployment, show::details);
    } else {
        print(output, &accepted, show::accepted);
    }
    Ok(())
}
