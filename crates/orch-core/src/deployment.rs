//! Deployment lifecycle vocabulary and the validation of the requests that start operations.

use std::fmt;
use std::str::FromStr;

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::names::{check_name, check_not_an_id};
use crate::problem::{child, Problems};
use crate::reader::{self, Object};
use crate::template::payload::MAX_SECRET_BYTES;
use crate::template::{Template, MAX_GROUP_COUNT};

/// Where a deployment is in its life. `PENDING` to `COMPLETED` is the lifecycle of a create;
/// `UPDATING`, `SCALING` and `CONFIGURING` mark the other operations in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
    Updating,
    Scaling,
    Configuring,
    Deleting,
    Deleted,
}

impl DeploymentStatus {
    pub const ALL: [DeploymentStatus; 9] = [
        Self::Pending,
        Self::InProgress,
        Self::Completed,
        Self::Failed,
        Self::Updating,
        Self::Scaling,
        Self::Configuring,
        Self::Deleting,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Updating => "UPDATING",
            Self::Scaling => "SCALING",
            Self::Configuring => "CONFIGURING",
            Self::Deleting => "DELETING",
            Self::Deleted => "DELETED",
        }
    }
}

impl fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeploymentStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|status| status.as_str()).collect();
                format!("'{text}' is not a status; use one of {}", names.join(", "))
            })
    }
}

/// Work that a workflow carries out; one row of the `operations` outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OperationKind {
    Create,
    Update,
    Delete,
    Configure,
    Scale,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Configure => "configure",
            Self::Scale => "scale",
        }
    }

    /// The status a deployment shows while this operation runs.
    pub fn status_while_running(self) -> DeploymentStatus {
        match self {
            Self::Create => DeploymentStatus::Pending,
            Self::Update => DeploymentStatus::Updating,
            Self::Delete => DeploymentStatus::Deleting,
            Self::Configure => DeploymentStatus::Configuring,
            Self::Scale => DeploymentStatus::Scaling,
        }
    }

    /// Statuses from which this operation may start; anything else is a conflict.
    pub fn allowed_from(self) -> &'static [DeploymentStatus] {
        use DeploymentStatus::*;
        match self {
            Self::Create => &[],
            Self::Update => &[Completed, Failed],
            Self::Scale | Self::Configure => &[Completed],
            Self::Delete => &[Pending, InProgress, Completed, Failed, Updating, Scaling, Configuring],
        }
    }
}

impl FromStr for OperationKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [Self::Create, Self::Update, Self::Delete, Self::Configure, Self::Scale]
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| format!("'{text}' is not an operation kind"))
    }
}

/// A validated scale request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScaleRequest {
    pub target_count: u32,
    pub vm_type: String,
}

impl ScaleRequest {
    /// Reads `{target_count, vm_type}` (a server group) or `{target_count, service}` and
    /// checks it against the deployment's template: the group or service exists and the
    /// target respects its bounds.
    pub fn parse(body: &Value, template: &Template) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let Some(mut object) = Object::new(body, "", &mut problems) else {
            return Err(problems);
        };
        let target_count = object
            .required("target_count", &mut problems)
            .and_then(|value| reader::integer(value, "/target_count", 0, MAX_GROUP_COUNT.into(), &mut problems));
        let (field, value) = match (object.optional("vm_type"), object.optional("service")) {
            (Some(group), None) => ("/vm_type", Some(group)),
            (None, Some(service)) => ("/service", Some(service)),
            (Some(_), Some(_)) => {
                problems.push("/service", "give vm_type (a server group) or service, not both");
                ("/service", None)
            }
            (None, None) => {
                problems.push("/vm_type", "is required (or service, for a containerised service)");
                ("/vm_type", None)
            }
        };
        let vm_type = value
            .and_then(|value| reader::string(value, field, &mut problems))
            .map(str::to_owned);
        object.finish(&mut problems);
        let (Some(target_count), Some(vm_type)) = (target_count, vm_type) else {
            return Err(problems);
        };
        let bounds = match (field, template.vm_config.get(&vm_type), template.services.get(&vm_type)) {
            ("/vm_type", Some(group), _) => Some((group.min_count, group.max_count, "min_count", "max_count")),
            ("/service", _, Some(service)) => Some((
                service.min_instances,
                service.max_instances,
                "min_instances",
                "max_instances",
            )),
            _ => None,
        };
        match bounds {
            None => {
                let (what, names): (&str, Vec<&str>) = match field {
                    "/vm_type" => ("group", template.vm_config.keys().map(String::as_str).collect()),
                    _ => ("service", template.services.keys().map(String::as_str).collect()),
                };
                problems.push(
                    field,
                    format!(
                        "'{vm_type}' is not a {what} of this deployment; {what}s: {}",
                        names.join(", ")
                    ),
                );
            }
            Some((min, max, min_name, max_name)) => {
                if target_count < min {
                    problems.push("/target_count", format!("{target_count} is below its {min_name} {min}"));
                }
                if let Some(max) = max.filter(|max| target_count > *max) {
                    problems.push("/target_count", format!("{target_count} is above its {max_name} {max}"));
                }
            }
        }
        if field == "/vm_type" && problems.is_empty() {
            check_scaled_layout(template, &vm_type, target_count, &mut problems);
        }
        problems.into_result(Self { target_count, vm_type })
    }
}

/// The deployment as the scale would leave it still fits: its subnet has addresses for every
/// server, and the total stays within bounds (the rules a template's own counts obey).
fn check_scaled_layout(template: &Template, group: &str, target_count: u32, problems: &mut Problems) {
    let mut scaled = template.clone();
    if let Some(scaled_group) = scaled.vm_config.get_mut(group) {
        scaled_group.count = target_count;
        // The bounds were checked against the request above.
        scaled_group.min_count = 0;
        scaled_group.max_count = None;
    }
    let mut found = Problems::default();
    crate::template::check_group_bounds(&scaled, "/template", |_| "/target_count".to_owned(), &mut found);
    for problem in found.0 {
        problems.push("/target_count", problem.detail);
    }
}

/// A template named in a request: a stored template's id or name, or the document inline.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateRef {
    Stored(String),
    Inline(Box<Template>),
}

impl TemplateRef {
    fn read(value: &Value, pointer: &str, default_name: Option<&str>, problems: &mut Problems) -> Option<Self> {
        match value {
            Value::String(reference) if reference.trim().is_empty() => {
                problems.push(pointer, "must name a stored template or be a template object");
                None
            }
            Value::String(reference) => Some(Self::Stored(reference.clone())),
            Value::Object(_) => match Template::parse(value, pointer, default_name) {
                Ok(template) => Some(Self::Inline(Box::new(template))),
                Err(found) => {
                    problems.extend(found);
                    None
                }
            },
            other => {
                problems.push(
                    pointer,
                    format!("must be a template name, id or object, not {}", reader::kind(other)),
                );
                None
            }
        }
    }
}

/// Longest cloud region name.
pub const MAX_REGION_LEN: usize = 64;

/// `POST /deployments`, read and checked on its own; the template reference and the
/// parameters are checked against the template once it is resolved.
#[derive(Debug, Clone)]
pub struct CreateDeploymentRequest {
    pub name: String,
    pub template: TemplateRef,
    pub parameters: Map<String, Value>,
    pub cloud_region: Option<String>,
    /// Where the services run (default: the first configured container host).
    pub container_host: Option<String>,
    pub rollback: bool,
    /// Whether each reconcile pass that finds drift repairs it at once (default: it reports).
    pub auto_heal: bool,
    /// Values of the template's secrets, by name (checked against the template once it is
    /// resolved); never stored but sealed, never shown.
    pub secrets: BTreeMap<String, SecretString>,
}

impl CreateDeploymentRequest {
    pub fn parse(body: &Value) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let Some(mut object) = Object::new(body, "", &mut problems) else {
            return Err(problems);
        };
        let name = object.required("name", &mut problems).and_then(|value| {
            let name = reader::string(value, "/name", &mut problems)?;
            match check_name(name).and_then(|()| check_not_an_id(name)) {
                Ok(()) => Some(name.to_owned()),
                Err(rule) => {
                    problems.push("/name", rule);
                    None
                }
            }
        });
        let template = object.required("template", &mut problems).and_then(|value| {
            TemplateRef::read(
                value,
                "/template",
                Some(name.as_deref().unwrap_or("inline")),
                &mut problems,
            )
        });
        let parameters = read_parameters(object.optional("parameters"), &mut problems);
        let cloud_region = object
            .optional("cloud_region")
            .and_then(|value| read_region(value, "/cloud_region", &mut problems));
        let container_host = object
            .optional("container_host")
            .and_then(|value| read_region(value, "/container_host", &mut problems));
        let rollback = match object.optional("rollback") {
            Some(value) => reader::boolean(value, "/rollback", &mut problems),
            None => Some(true),
        };
        let auto_heal = match object.optional("auto_heal") {
            Some(value) => reader::boolean(value, "/auto_heal", &mut problems),
            None => Some(false),
        };
        let secrets = object
            .optional("secrets")
            .map_or(Some(BTreeMap::new()), |value| read_secret_values(value, &mut problems));
        object.finish(&mut problems);
        match (name, template, parameters, rollback.zip(auto_heal), secrets) {
            (Some(name), Some(template), Some(parameters), Some((rollback, auto_heal)), Some(secrets))
                if problems.is_empty() =>
            {
                Ok(Self {
                    name,
                    template,
                    parameters,
                    cloud_region,
                    container_host,
                    rollback,
                    auto_heal,
                    secrets,
                })
            }
            _ => Err(problems),
        }
    }
}

/// `secrets`: names to values. A problem never quotes the value.
fn read_secret_values(value: &Value, problems: &mut Problems) -> Option<BTreeMap<String, SecretString>> {
    let map = reader::object(value, "/secrets", problems)?;
    let mut secrets = BTreeMap::new();
    for (name, value) in map {
        let pointer = child("/secrets", name);
        if let Err(rule) = crate::names::check_key(name) {
            problems.push(&pointer, format!("name {rule}"));
            continue;
        }
        match value.as_str() {
            Some(text) if !text.is_empty() && text.len() <= MAX_SECRET_BYTES && !text.contains('\0') => {
                secrets.insert(name.clone(), SecretString::from(text.to_owned()));
            }
            _ => problems.push(
                pointer,
                format!("must be a string of 1 to {MAX_SECRET_BYTES} bytes without NUL"),
            ),
        }
    }
    Some(secrets)
}

/// What the deployment's secrets will hold: each declared secret with the value the request
/// supplies, or none, to be generated. A secret the template declares `supplied` must be
/// given; one it does not declare must not.
pub fn check_secret_values(
    template: &Template,
    supplied: &BTreeMap<String, SecretString>,
) -> Result<Vec<(String, Option<SecretString>)>, Problems> {
    let mut problems = Problems::default();
    for name in supplied.keys().filter(|name| !template.secrets.contains_key(*name)) {
        problems.push(child("/secrets", name), "the template declares no such secret");
    }
    let mut values = Vec::new();
    for (name, spec) in &template.secrets {
        match supplied.get(name) {
            Some(value) => values.push((name.clone(), Some(value.clone()))),
            None if spec.supplied => problems.push(
                child("/secrets", name),
                "is required: the template declares it supplied",
            ),
            None => values.push((name.clone(), None)),
        }
    }
    problems.into_result(values)
}

/// `PATCH /deployments/{id}`: a new template, changed parameters, or both. Parameters merge
/// into the current ones (RFC 7396 style: `null` removes an override).
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateDeploymentRequest {
    pub template: Option<TemplateRef>,
    pub parameters: Option<Map<String, Value>>,
    /// Only show the plan; change nothing.
    pub dry_run: bool,
}

impl UpdateDeploymentRequest {
    pub fn parse(body: &Value, deployment_name: &str) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let Some(mut object) = Object::new(body, "", &mut problems) else {
            return Err(problems);
        };
        let template = object
            .optional("template")
            .map(|value| TemplateRef::read(value, "/template", Some(deployment_name), &mut problems));
        let parameters = object
            .optional("parameters")
            .map(|value| read_parameters(Some(value), &mut problems));
        let dry_run = match object.optional("dry_run") {
            Some(value) => reader::boolean(value, "/dry_run", &mut problems).unwrap_or(false),
            None => false,
        };
        object.finish(&mut problems);
        if template.is_none() && parameters.is_none() {
            problems.push("", "give 'template', 'parameters' or both");
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            template: template.flatten(),
            parameters: parameters.flatten(),
            dry_run,
        })
    }

    /// The parameters after this update: `patch` merged into `current`.
    pub fn merged_parameters(&self, current: &Value) -> Map<String, Value> {
        let mut merged = current.as_object().cloned().unwrap_or_default();
        for (key, value) in self.parameters.iter().flatten() {
            if value.is_null() {
                merged.remove(key);
            } else {
                merged.insert(key.clone(), value.clone());
            }
        }
        merged
    }
}

fn read_parameters(value: Option<&Value>, problems: &mut Problems) -> Option<Map<String, Value>> {
    match value {
        None => Some(Map::new()),
        Some(value) => reader::object(value, "/parameters", problems).cloned(),
    }
}

/// A region or container host name.
fn read_region(value: &Value, pointer: &str, problems: &mut Problems) -> Option<String> {
    let region = reader::string(value, pointer, problems)?;
    let valid = !region.is_empty()
        && region.len() <= MAX_REGION_LEN
        && region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Some(region.to_owned())
    } else {
        problems.push(
            pointer,
            format!("must be 1 to {MAX_REGION_LEN} letters, digits, '-', '_' or '.'"),
        );
        None
    }
}

/// Longest playbook path inside the playbook directory.
pub const MAX_PLAYBOOK_LEN: usize = 255;
/// Longest configure run, in seconds.
pub const MAX_CONFIGURE_TIMEOUT_SECONDS: u32 = 6 * 3600;

/// A validated configure request.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ConfigureRequest {
    /// A playbook file relative to the configured playbook directory.
    pub playbook: String,
    /// Inventory groups and their hosts; when absent, one is generated from the servers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub inventory: Option<Map<String, Value>>,
    #[schema(value_type = Object)]
    pub extra_vars: Map<String, Value>,
    pub timeout_seconds: u32,
}

impl ConfigureRequest {
    pub const DEFAULT_TIMEOUT_SECONDS: u32 = 1_800;

    pub fn parse(body: &Value) -> Result<Self, Problems> {
        let mut problems = Problems::default();
        let Some(mut object) = Object::new(body, "", &mut problems) else {
            return Err(problems);
        };
        let playbook = object
            .required("playbook", &mut problems)
            .and_then(|value| reader::string(value, "/playbook", &mut problems))
            .and_then(|path| match check_playbook_path(path) {
                Ok(()) => Some(path.to_owned()),
                Err(rule) => {
                    problems.push("/playbook", rule);
                    None
                }
            });
        let inventory = object
            .optional("inventory")
            .and_then(|value| read_inventory(value, "/inventory", &mut problems));
        let extra_vars = object
            .optional("extra_vars")
            .and_then(|value| reader::object(value, "/extra_vars", &mut problems).cloned())
            .unwrap_or_default();
        for name in extra_vars.keys() {
            if let Err(rule) = check_extra_var(name) {
                problems.push(child("/extra_vars", name), rule);
            }
        }
        let timeout_seconds = match object.optional("timeout_seconds") {
            Some(value) => reader::integer(
                value,
                "/timeout_seconds",
                1,
                MAX_CONFIGURE_TIMEOUT_SECONDS.into(),
                &mut problems,
            ),
            None => Some(Self::DEFAULT_TIMEOUT_SECONDS),
        };
        object.finish(&mut problems);
        match (playbook, timeout_seconds) {
            (Some(playbook), Some(timeout_seconds)) if problems.is_empty() => Ok(Self {
                playbook,
                inventory,
                extra_vars,
                timeout_seconds,
            }),
            _ => Err(problems),
        }
    }
}

/// Variables a request may not set: Ansible's own (`ansible_connection`,
/// `ansible_ssh_common_args`, `ansible_become_*`, ... would let a write key run code on the
/// worker or reach other hosts) and its magic variables.
const RESERVED_VARS: [&str; 12] = [
    "hostvars",
    "groups",
    "group_names",
    "inventory_hostname",
    "inventory_hostname_short",
    "inventory_dir",
    "inventory_file",
    "playbook_dir",
    "role_path",
    "omit",
    "play_hosts",
    "environment",
];

/// An `extra_vars` name: an identifier (as Ansible's own names are), not one of Ansible's.
pub fn check_extra_var(name: &str) -> Result<(), String> {
    let identifier = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128;
    if !identifier {
        return Err("must be a variable name: letters, digits and '_', not starting with a digit".into());
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("ansible_") || RESERVED_VARS.contains(&lower.as_str()) {
        return Err(format!(
            "'{name}' is Ansible's own variable, which a request may not set"
        ));
    }
    Ok(())
}

/// A playbook is named relative to the playbook directory and may not leave it: no absolute
/// paths, no `..`, no hidden files, and only `.yml`/`.yaml` files.
pub fn check_playbook_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_PLAYBOOK_LEN {
        return Err(format!("must be 1 to {MAX_PLAYBOOK_LEN} characters"));
    }
    if path.starts_with('/') || path.contains('\\') {
        return Err("must be a path relative to the playbook directory".into());
    }
    for segment in path.split('/') {
        if segment.is_empty() || segment.starts_with('.') {
            return Err("must not contain empty, '.', '..' or hidden path segments".into());
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err("may only contain letters, digits, '.', '_', '-' and '/'".into());
        }
    }
    if !(path.ends_with(".yml") || path.ends_with(".yaml")) {
        return Err("must name a .yml or .yaml file".into());
    }
    Ok(())
}

fn read_inventory(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Map<String, Value>> {
    let map = reader::object(value, pointer, problems)?;
    for (group, hosts) in map {
        let group_pointer = child(pointer, group);
        if group.is_empty() || !group.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            problems.push(
                &group_pointer,
                "inventory group names may only contain letters, digits and '_'",
            );
        }
        if let Some(hosts) = reader::array(hosts, &group_pointer, problems) {
            for (index, host) in hosts.iter().enumerate() {
                let host_pointer = child(&group_pointer, &index.to_string());
                if let Some(host) = reader::string(host, &host_pointer, problems) {
                    // A host that starts with '-' would be read as an ssh option.
                    if host.is_empty()
                        || host.len() > 255
                        || host.starts_with('-')
                        || !host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
                    {
                        problems.push(host_pointer, "must be a host name or IP address");
                    }
                }
            }
        }
    }
    Some(map.clone())
}

/// What an operation works towards: the template and parameters the deployment stands for
/// once it succeeds. An update brings its own; a scale sets its group's count; the others keep
/// the deployment's.
pub fn desired_inputs(
    kind: OperationKind,
    payload: &Value,
    template: &Template,
    parameters: &Value,
) -> Result<(Template, Value), Problems> {
    match kind {
        OperationKind::Update => {
            let template = Template::parse(&payload["template"], "/template", None)?;
            Ok((template, payload["parameters"].clone()))
        }
        OperationKind::Scale => {
            let request: ScaleRequest = serde_json::from_value(payload.clone())
                .map_err(|error| Problems::single("", format!("not a scale request: {error}")))?;
            let mut parameters = parameters.as_object().cloned().unwrap_or_default();
            let suffix = match template.services.contains_key(&request.vm_type) {
                true => "instances",
                false => "count",
            };
            parameters.insert(
                format!("{}_{suffix}", request.vm_type),
                Value::from(request.target_count),
            );
            Ok((template.clone(), Value::Object(parameters)))
        }
        _ => Ok((template.clone(), parameters.clone())),
    }
}

/// The template an operation works towards, its parameters applied.
pub fn desired_template(
    kind: OperationKind,
    payload: &Value,
    template: &Template,
    parameters: &Value,
) -> Result<Template, Problems> {
    let (template, parameters) = desired_inputs(kind, payload, template, parameters)?;
    crate::apply_parameters(&template, &parameters, "/parameters")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_round_trip_through_text() {
        for status in DeploymentStatus::ALL {
            assert_eq!(status.as_str().parse::<DeploymentStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), json!(status.as_str()));
        }
        assert!("RUNNING".parse::<DeploymentStatus>().is_err());
    }

    #[test]
    fn create_request_collects_every_problem() {
        let problems = CreateDeploymentRequest::parse(&json!({
            "name": "", "template": 7, "parameters": [], "rollback": "yes", "extra": true
        }))
        .unwrap_err();
        let pointers: Vec<&str> = problems.0.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(pointers, ["/name", "/template", "/parameters", "/rollback", "/extra"]);
    }

    #[test]
    fn create_request_reads_the_seed_example() {
        let request = CreateDeploymentRequest::parse(&json!({
            "name": "my-app", "template": "web-app-stack", "cloud_region": "us-west-1", "parameters": {"web_count": 2}
        }))
        .unwrap();
        assert_eq!(request.template, TemplateRef::Stored("web-app-stack".into()));
        assert!(request.rollback);
        assert_eq!(request.cloud_region.as_deref(), Some("us-west-1"));
    }

    #[test]
    fn secret_values_are_checked_against_the_template_without_being_quoted() {
        let problems = CreateDeploymentRequest::parse(&json!({
            "name": "a", "template": "t", "secrets": {"Bad": "x", "db": "", "api": 7}
        }))
        .unwrap_err();
        let pointers: Vec<&str> = problems.0.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(pointers, ["/secrets/Bad", "/secrets/api", "/secrets/db"]);
        let template = Template::parse_text(
            "name: s\nsecrets: {token: {}, api: {supplied: true}}\nservices:\n  w: {image: x, class: gateway, secrets: [token, api]}\n",
        )
        .unwrap();
        let given = BTreeMap::from([("extra".to_owned(), SecretString::from("hunter2"))]);
        let problems = check_secret_values(&template, &given).unwrap_err();
        assert_eq!(problems.0.len(), 2, "{problems:?}");
        assert!(!format!("{problems:?}").contains("hunter2"));
        let given = BTreeMap::from([("api".to_owned(), SecretString::from("hunter2"))]);
        let values = check_secret_values(&template, &given).unwrap();
        assert_eq!(values.len(), 2);
        assert!(values.iter().any(|(name, value)| name == "token" && value.is_none()));
    }

    #[test]
    fn update_merges_parameters() {
        let update =
            UpdateDeploymentRequest::parse(&json!({"parameters": {"web_count": 4, "db_flavor": null}}), "d").unwrap();
        let merged = update.merged_parameters(&json!({"db_flavor": "m1.large", "app_count": 1}));
        assert_eq!(Value::Object(merged), json!({"web_count": 4, "app_count": 1}));
        assert!(UpdateDeploymentRequest::parse(&json!({}), "d").is_err());
    }

    #[test]
    fn playbook_paths_cannot_escape() {
        assert!(check_playbook_path("site.yml").is_ok());
        assert!(check_playbook_path("roles/web/main.yaml").is_ok());
        for bad in [
            "../etc/passwd.yml",
            "/etc/x.yml",
            "a/../../b.yml",
            ".hidden.yml",
            "a//b.yml",
            "x.sh",
            "a b.yml",
            "",
        ] {
            assert!(check_playbook_path(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn configure_request_is_validated() {
        let request = ConfigureRequest::parse(&json!({
            "playbook": "configure-web.yml",
            "inventory": {"web_servers": ["10.0.1.10", "10.0.1.11"]},
            "extra_vars": {"app_port": 8080}
        }))
        .unwrap();
        assert_eq!(request.timeout_seconds, ConfigureRequest::DEFAULT_TIMEOUT_SECONDS);
        let problems =
            ConfigureRequest::parse(&json!({"playbook": "../x.yml", "inventory": {"g": ["a;rm -rf"]}, "extra": 1}))
                .unwrap_err();
        let pointers: Vec<&str> = problems.0.iter().map(|p| p.pointer.as_str()).collect();
        assert_eq!(pointers, ["/playbook", "/inventory/g/0", "/extra"]);
    }

    #[test]
    fn scale_respects_group_bounds() {
        let template = Template::parse(
            &json!({"name": "t", "vm_config": {"web": {"flavor": "f", "image": "i", "count": 2, "min_count": 1, "max_count": 4}},
                    "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24"}}}),
            "",
            None,
        )
        .unwrap();
        assert!(ScaleRequest::parse(&json!({"target_count": 3, "vm_type": "web"}), &template).is_ok());
        for (body, pointer) in [
            (json!({"target_count": 0, "vm_type": "web"}), "/target_count"),
            (json!({"target_count": 5, "vm_type": "web"}), "/target_count"),
            (json!({"target_count": 1, "vm_type": "db"}), "/vm_type"),
            (json!({"target_count": -1, "vm_type": "web"}), "/target_count"),
        ] {
            let problems = ScaleRequest::parse(&body, &template).unwrap_err();
            assert_eq!(problems.0[0].pointer, pointer, "{body}");
        }
    }

    #[test]
    fn a_scale_must_fit_its_subnet() {
        let template = Template::parse(
            &json!({"name": "t", "vm_config": {"web": {"flavor": "f", "image": "i", "count": 2}},
                    "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/28"}}}),
            "",
            None,
        )
        .unwrap();
        assert!(ScaleRequest::parse(&json!({"target_count": 5, "vm_type": "web"}), &template).is_ok());
        let problems = ScaleRequest::parse(&json!({"target_count": 50, "vm_type": "web"}), &template).unwrap_err();
        assert_eq!(problems.0.len(), 1, "{problems:?}");
        assert_eq!(problems.0[0].pointer, "/target_count");
        assert!(problems.0[0].detail.contains("has room for 12 servers"), "{problems:?}");
    }
}
