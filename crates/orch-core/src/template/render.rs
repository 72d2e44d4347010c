//! Per-instance values: an env value or command word may hold `{{orch.NAME}}` tokens that
//! are filled in for each instance when it is made, so that the instances of one service
//! can differ where they must (a Kafka node id and its quorum) while sharing one spec.
//!
//! - `{{orch.service}}`: the service's name; `{{orch.index}}`: the instance's index;
//!   `{{orch.instance}}`: its own DNS name, `<service>-<index>`; `{{orch.instances}}`: how
//!   many there are.
//! - `{{orch.peers:PORT}}`: every instance's `name:PORT`, comma-separated;
//!   `{{orch.voters:PORT}}`: `index@name:PORT` for each (Kafka's controller quorum).
//!
//! Other `{{...}}` text is left alone (Go templates in configuration stay as written).

const OPEN: &str = "{{orch.";
const CLOSE: &str = "}}";

/// Which instance a value is rendered for.
#[derive(Debug, Clone, Copy)]
pub struct InstanceContext<'a> {
    pub service: &'a str,
    pub index: u32,
    pub instances: u32,
}

/// Checks every `{{orch.…}}` token of `text`; the first unknown one is the error.
pub fn check(text: &str) -> Result<(), String> {
    let context = InstanceContext {
        service: "s",
        index: 0,
        instances: 1,
    };
    tokens(text).try_for_each(|token| value_of(token, &context).map(|_| ()))
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
        "'{{{{orch.{token}}}}}' is not a per-instance value; use orch.service, orch.index, orch.instance, orch.instances, orch.peers:PORT or orch.voters:PORT"
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
}
