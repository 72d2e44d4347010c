//! `--wait`: follows a deployment until no operation is in flight, with a progress bar per
//! resource kind; a failure ends it with the cause.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use super::api::Api;
use super::Output;

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
pub(super) async fn wait(api: &Api, id: &str, output: Output, until_deleted: bool) -> anyhow::Result<Value> {
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
