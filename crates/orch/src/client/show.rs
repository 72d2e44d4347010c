//! What the CLI prints: JSON for scripts, or text for people, with aligned tables.

use comfy_table::presets::NOTHING;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

use super::Output;

pub(super) fn print(output: Output, value: &Value, text: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        Output::Text => println!("{}", text(value)),
    }
}

/// A borderless table, as `kubectl get` prints one.
fn table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    table.to_string()
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn cells(value: &Value, keys: &[&str]) -> Vec<String> {
    keys.iter().map(|key| text(value, key)).collect()
}

fn items(page: &Value) -> impl Iterator<Item = &Value> {
    page["items"].as_array().into_iter().flatten()
}

const DEPLOYMENT_COLUMNS: [&str; 5] = ["id", "name", "status", "cloud_region", "created_at"];

/// A page of deployments, and how many there are in all.
pub(super) fn deployments(page: &Value) -> String {
    let rows = items(page).map(|deployment| cells(deployment, &DEPLOYMENT_COLUMNS));
    let shown = items(page).count();
    format!("{}\n{shown} of {}", table(&DEPLOYMENT_COLUMNS, rows), page["total"])
}

/// One deployment: its summary, its cause when it failed, and its servers.
pub(super) fn details(deployment: &Value) -> String {
    let mut out = table(&DEPLOYMENT_COLUMNS, [cells(deployment, &DEPLOYMENT_COLUMNS)]);
    if let Some(reason) = deployment["status_reason"].as_str() {
        out.push_str(&format!("\ncause: {reason}"));
    }
    if let Some(network) = deployment["resources"]["network_id"].as_str() {
        out.push_str(&format!("\nnetwork: {network}"));
    }
    let groups = deployment["resources"]["groups"].as_object().into_iter().flatten();
    let servers: Vec<Vec<String>> = groups
        .flat_map(|(group, detail)| {
            let servers = detail["servers"].as_array().into_iter().flatten();
            servers.map(move |server| [vec![group.clone()], cells(server, &["id", "name", "ip", "status"])].concat())
        })
        .collect();
    if !servers.is_empty() {
        out.push('\n');
        out.push_str(&table(&["group", "id", "name", "ip", "status"], servers));
    }
    let instances = instances(deployment);
    if !instances.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["service", "name", "container", "host", "health", "ports"],
            instances,
        ));
    }
    out
}

/// One row per instance of every service: its container (short id), health and host ports.
fn instances(deployment: &Value) -> Vec<Vec<String>> {
    let services = deployment["resources"]["services"].as_object().into_iter().flatten();
    services
        .flat_map(|(service, detail)| {
            detail["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |instance| {
                    let container: String = text(instance, "container_id").chars().take(12).collect();
                    let ports = instance["host_ports"].as_object().into_iter().flatten();
                    let ports: Vec<String> = ports.map(|(name, port)| format!("{name}={port}")).collect();
                    vec![
                        service.clone(),
                        text(instance, "name"),
                        container,
                        text(instance, "host"),
                        text(instance, "health"),
                        ports.join(","),
                    ]
                })
        })
        .collect()
}

/// What `deploy` or `delete` accepted, without `--wait`.
pub(super) fn accepted(accepted: &Value) -> String {
    let keys: Vec<&str> = ["id", "deployment_id", "name", "status", "operation_id"]
        .into_iter()
        .filter(|key| !accepted[*key].is_null())
        .collect();
    table(&keys, [cells(accepted, &keys)])
}

pub(super) fn events(page: &Value) -> String {
    let columns = ["created_at", "action", "detail"];
    table(&columns, items(page).map(|event| cells(event, &columns)))
}

/// A plan's changes, each with its reason; or that there are none.
pub(super) fn plan(plan: &Value) -> String {
    let changes = plan["plan"]["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        return "nothing to change: what is recorded matches the spec".to_owned();
    }
    let columns = ["action", "key", "reason"];
    table(&columns, changes.iter().map(|change| cells(change, &columns)))
}

/// Orphans, oldest first; or that there are none.
pub(super) fn orphans(list: &Value) -> String {
    if items(list).next().is_none() {
        return format!("no orphans (orphaned for {} s or more)", list["grace_seconds"]);
    }
    let columns = [
        "location",
        "kind",
        "id",
        "name",
        "deployment_tag",
        "reason",
        "first_seen",
    ];
    table(&columns, items(list).map(|orphan| cells(orphan, &columns)))
}

/// A deployment's drift; or that it has none.
pub(super) fn drift(drift: &Value) -> String {
    let checked = text(drift, "checked_at");
    if items(drift).next().is_none() {
        return format!("no drift (last looked: {checked})");
    }
    let columns = ["logical_key", "kind", "resource_id", "problem", "first_seen_at"];
    let found = table(&columns, items(drift).map(|item| cells(item, &columns)));
    format!(
        "{found}
last looked: {checked}; `orch reconcile NAME` repairs it"
    )
}

/// What a reconcile pass or a cleanup found and did, per location.
pub(super) fn run(run: &Value) -> String {
    let columns = [
        "location",
        "orphans",
        "new_orphans",
        "removed",
        "drifted",
        "healed",
        "error",
    ];
    let places = run["result"]["locations"].as_object().into_iter().flatten();
    let rows = places.map(|(_, place)| {
        let count = |key: &str| place[key].as_array().map_or(0, Vec::len).to_string();
        vec![
            text(place, "location"),
            text(place, "orphans"),
            text(place, "new_orphans"),
            count("removed"),
            count("drifted"),
            count("healed"),
            text(place, "error"),
        ]
    });
    format!(
        "{} {}: {}
{}",
        run["kind"].as_str().unwrap_or("run"),
        text(run, "id"),
        text(run, "state"),
        table(&columns, rows)
    )
}

pub(super) fn templates(page: &Value) -> String {
    let columns = ["id", "name", "version"];
    table(&columns, items(page).map(|template| cells(template, &columns)))
}

pub(super) fn catalog(page: &Value) -> String {
    let columns = ["name", "class", "image", "description"];
    table(&columns, items(page).map(|entry| cells(entry, &columns)))
}

pub(super) fn template(template: &Value) -> String {
    let columns = ["id", "name", "version"];
    table(&columns, [cells(template, &columns)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up_whatever_the_lengths() {
        let page = json!({"total": 2, "items": [
            {"id": "d1", "name": "shop", "status": "COMPLETED", "cloud_region": "RegionOne", "created_at": "t1"},
            {"id": "d2-longer", "name": "x", "status": "FAILED", "cloud_region": "RegionOne", "created_at": "t2"},
        ]});
        let printed = deployments(&page);
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 4, "{printed}");
        let column = |line: &str, text: &str| line.find(text).unwrap();
        assert_eq!(column(lines[1], "shop"), column(lines[2], "x"), "{printed}");
        assert_eq!(column(lines[0], "status"), column(lines[1], "COMPLETED"), "{printed}");
        assert_eq!(lines[3], "2 of 2");
    }

    #[test]
    fn a_deployment_shows_its_cause_and_servers() {
        let deployment = json!({"id": "d1", "name": "shop", "status": "FAILED", "status_reason": "quota",
            "resources": {"network_id": "n1", "groups": {"web": {"servers": [{"id": "s1", "name": "web-0", "ip": null, "status": "ERROR"}]}}}});
        let printed = details(&deployment);
        assert!(
            printed.contains("cause: quota") && printed.contains("network: n1"),
            "{printed}"
        );
        let server = printed.lines().last().unwrap();
        assert!(
            server.contains("web") && server.contains("s1") && server.contains("ERROR") && server.contains('-'),
            "{printed}"
        );
    }

    #[test]
    fn a_deployment_shows_its_instances_with_their_ports() {
        let deployment = json!({"id": "d1", "name": "tt", "status": "COMPLETED", "resources": {"services": {"web": {"instances": [
            {"index": 0, "name": "d1-web-0", "container_id": "0123456789abcdef", "host": "local", "health": "healthy", "host_ports": {"http": 20001}}
        ]}}}});
        let printed = details(&deployment);
        let row = printed.lines().last().unwrap();
        for part in ["web", "d1-web-0", "0123456789ab", "local", "healthy", "http=20001"] {
            assert!(row.contains(part), "{part} in {printed}");
        }
        assert!(!row.contains("0123456789abc"), "ids are shortened: {printed}");
    }
}
