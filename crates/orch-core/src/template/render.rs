//! Per-instance values: an env value or command word may hold `{{orch.NAME}}` tokens that
//! are filled in for each instance when it is made, so that the instances of one service
//! can differ where they must (a Kafka node id and its quorum) while sharing one spec.
//!
//! - `{{orch.service}}`: the service's name; `{{orch.index}}`: the instance's index;
//!   `{{orch.instance}}`: its own DNS name, `<service>-<index>`; `{{orch.instances}}`: how
//!   many there are.
//! - `{{orch.peers:PORT}}`: every instance's `name:PORT`, comma-separated;
//!   `{{orch.voters:PORT}}`: `index@name:PORT` for each (Kafka's controller quorum).
//! - `{{orch.peers:SERVICE:PORT}}`: the same for another service of the deployment: how a
//!   dependent is wired to its dependencies (Prometheus's scrape targets, Grafana's sources).
//!
//! Other `{{...}}` text is left alone (Go templates in configuration stay as written).

use std::collections::BTreeMap;

use super::services::Service;

const OPEN: &str = "{{orch.";
const CLOSE: &str = "}}";

/// Which instance a value is rendered for.
#[derive(Debug, Clone, Copy)]
pub struct InstanceContext<'a> {
    pub service: &'a str,
    pub index: u32,
    pub instances: u32,
    /// The deployment's services, for `{{orch.peers:SERVICE:PORT}}`; none when a text is
    /// only checked.
    pub others: Option<&'a BTreeMap<String, Service>>,
}

impl<'a> InstanceContext<'a> {
    /// Instance `index` of `service`, one of `services`.
    pub fn new(service: &'a str, index: u32, services: &'a BTreeMap<String, Service>) -> Self {
        Self {
            service,
            index,
            instances: services.get(service).map_or(0, |own| own.instances),
            others: Some(services),
        }
    }
}

/// Checks every `{{orch.…}}` token of `text`; the first unknown one is the error. Which
/// services exist is checked with the whole template (`services_named`).
pub fn check(text: &str) -> Result<(), String> {
    let context = InstanceContext {
        service: "s",
        index: 0,
        instances: 1,
        others: None,
    };
    tokens(text).try_for_each(|token| value_of(token, &context).map(|_| ()))
}

/// The other services `text` is wired to, by `{{orch.peers:SERVICE:PORT}}`.
pub fn services_named(text: &str) -> impl Iterator<Item = &str> {
    tokens(text).filter_map(|token| {
        let (service, _) = token.strip_prefix("peers:")?.split_once(':')?;
        Some(service)
    })
}

/// `text` with every token filled in for `context` (tokens were checked when the template
/// was read, so an unknown one is left as it is).
pub fn render(text: &str, context: &InstanceContext<'_>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else {
            break;
        };
        let token = &after[..end];
        out.push_str(&rest[..start]);
        match value_of(token, context) {
            Ok(value) => out.push_str(&value),
            Err(_) => out.push_str(&rest[start..start + OPEN.len() + end + CLOSE.len()]),
        }
        rest = &after[end + CLOSE.len()..];
    }
    out.push_str(rest);
    out
}

fn tokens(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices(OPEN).filter_map(move |(start, _)| {
        let after = &text[start + OPEN.len()..];
        after.find(CLOSE).map(|end| &after[..end])
    })
}

fn value_of(token: &str, context: &InstanceContext<'_>) -> Result<String, String> {
    let name = |index: u32| format!("{}-{index}", context.service);
    let port = |text: &str| -> Result<u16, String> {
        text.parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| format!("'{{{{orch.{token}}}}}' needs a port from 1 to 65535"))
    };
    let all = 0..context.instances;
    if let Some((service, number)) = token.strip_prefix("peers:").and_then(|rest| rest.split_once(':')) {
        let port = port(number)?;
        crate::names::check_key(service).map_err(|rule| format!("'{{{{orch.{token}}}}}': service name {rule}"))?;
        // Read without the template (`check`), any service will do; `services_named` checks.
        let count = context
            .others
            .map_or(Some(1), |others| others.get(service).map(|other| other.instances))
            .ok_or_else(|| format!("'{{{{orch.{token}}}}}': no service '{service}'"))?;
        let members: Vec<String> = (0..count).map(|index| format!("{service}-{index}:{port}")).collect();
        return Ok(members.join(","));
    }
    match token.split_once(':') {
        None => match token {
            "service" => Ok(context.service.to_owned()),
            "index" => Ok(context.index.to_string()),
            "instance" => Ok(name(context.index)),
            "instances" => Ok(context.instances.to_string()),
            _ => Err(unknown(token)),
        },
        Some((list @ ("peers" | "voters"), number)) => {
            let port = port(number)?;
            // Kafka's voters are `id@host:port`; peers are `host:port`.
            let id = |index: u32| {
                if list == "voters" {
                    format!("{index}@")
                } else {
                    String::new()
                }
            };
            let members: Vec<String> = all
                .map(|index| format!("{}{}:{port}", id(index), name(index)))
                .collect();
            Ok(members.join(","))
        }
        Some(_) => Err(unknown(token)),
    }
}

fn unknown(token: &str) -> String {
    format!(
        "'{{{{orch.{token}}}}}' is not a per-instance value; use orch.service, orch.index, orch.instance, orch.instances, orch.peers:PORT, orch.peers:SERVICE:PORT or orch.voters:PORT"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_filled_in_per_instance_and_other_braces_are_left_alone() {
        let context = InstanceContext {
            service: "kafka",
            index: 1,
            instances: 3,
            others: None,
        };
        assert_eq!(
            render("node {{orch.index}} of {{orch.instances}}", &context),
            "node 1 of 3"
        );
        assert_eq!(
            render("PLAINTEXT://{{orch.instance}}:9092", &context),
            "PLAINTEXT://kafka-1:9092"
        );
        assert_eq!(
            render("{{orch.voters:9093}}", &context),
            "0@kafka-0:9093,1@kafka-1:9093,2@kafka-2:9093"
        );
        assert_eq!(
            render("{{orch.peers:80}}", &context),
            "kafka-0:80,kafka-1:80,kafka-2:80"
        );
        assert_eq!(render("{{ .Labels.alertname }}", &context), "{{ .Labels.alertname }}");
        assert_eq!(render("{{orch.index", &context), "{{orch.index");
        assert!(check("{{orch.index}}-{{orch.peers:9092}}").is_ok());
        assert!(check("{{orch.nodes}}").unwrap_err().contains("orch.nodes"));
        assert!(check("{{orch.peers:0}}").is_err());
        assert!(check("plain").is_ok());
    }

    #[test]
    fn another_services_peers_are_its_instances() {
        let template = crate::Template::parse_text(
            "name: s\nservices:\n  am: {image: x, class: observability, instances: 2}\n  p: {image: x, class: observability}\n",
        )
        .unwrap();
        let context = InstanceContext {
            service: "p",
            index: 0,
            instances: 1,
            others: Some(&template.services),
        };
        assert_eq!(render("[{{orch.peers:am:9093}}]", &context), "[am-0:9093,am-1:9093]");
        assert_eq!(
            services_named("{{orch.peers:am:1}} {{orch.peers:2}}").collect::<Vec<_>>(),
            ["am"]
        );
        assert!(check("{{orch.peers:am:0}}").is_err());
        assert!(check("{{orch.peers:Bad:80}}").is_err());
    }
}
