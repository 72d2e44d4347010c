//! SSH host keys, trusted on first use per deployment: the `known_hosts` file a run starts
//! from (the deployment's recorded keys, minus those of replaced servers), the keys a run
//! met for the first time, and the hosts whose key changed.

use std::collections::{BTreeMap, HashMap};

use orch_store::host_keys::HostKey;

/// The server at each address of a deployment: address → server id.
pub type Servers = HashMap<String, String>;

/// The recorded keys still trusted, and the hosts whose key is forgotten because the server
/// that had the address is gone or was replaced (a new server brings a new key).
pub fn trusted(recorded: Vec<HostKey>, servers: &Servers) -> (Vec<HostKey>, Vec<String>) {
    let (mut kept, mut stale) = (Vec::new(), Vec::new());
    for key in recorded {
        match &key.server_id {
            Some(id) if servers.get(&key.host) != Some(id) => stale.push(key.host),
            _ => kept.push(key),
        }
    }
    (kept, stale)
}

/// The `known_hosts` file made of `keys`.
pub fn file(keys: &[HostKey]) -> String {
    keys.iter().map(|key| key.known_hosts.as_str()).collect()
}

/// The address of a `known_hosts` host field: `10.0.1.4`, or `[10.0.1.4]:2222` for another
/// port.
fn address(field: &str) -> &str {
    field
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("]:"))
        .map_or(field, |(host, _port)| host)
}

/// The keys of hosts met for the first time in `after` (the file as ssh left it), grouped
/// per host; hosts already in `before` are left out.
pub fn first_met(after: &str, before: &[HostKey], servers: &Servers) -> Vec<HostKey> {
    let mut lines: BTreeMap<&str, String> = BTreeMap::new();
    for line in after.lines() {
        let Some(field) = line.split_whitespace().next() else {
            continue;
        };
        if field.starts_with('#') || field.starts_with('|') {
            continue;
        }
        for host in field.split(',').map(address) {
            if before.iter().all(|key| key.host != host) {
                let entry = lines.entry(host).or_default();
                entry.push_str(line);
                entry.push('\n');
            }
        }
    }
    lines
        .into_iter()
        .map(|(host, known_hosts)| HostKey {
            host: host.to_owned(),
            server_id: servers.get(host).cloned(),
            known_hosts,
            first_seen_at: String::new(),
        })
        .collect()
}

/// The hosts Ansible could not reach because their key is not the recorded one.
pub fn refused_hosts(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|line| line.contains("UNREACHABLE!") && line.contains("Host key verification failed"))
        .filter_map(|line| {
            let rest = line.strip_prefix("fatal: [")?;
            Some(rest.split(']').next()?.to_owned())
        })
        .collect()
}

/// The options that make ssh trust a new host's key once and refuse a changed one, with
/// nothing but `file` consulted or written.
pub fn ssh_options(file: &std::path::Path) -> String {
    format!(
        "-o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o HashKnownHosts=no -o UpdateHostKeys=no -o CheckHostIP=no",
        file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, server: Option<&str>, line: &str) -> HostKey {
        HostKey {
            host: host.into(),
            server_id: server.map(str::to_owned),
            known_hosts: format!("{line}\n"),
            first_seen_at: String::new(),
        }
    }

    #[test]
    fn a_replaced_server_loses_its_recorded_key() {
        let servers = Servers::from([("10.0.1.4".into(), "s-new".into()), ("10.0.1.5".into(), "s5".into())]);
        let recorded = vec![
            key("10.0.1.4", Some("s-old"), "10.0.1.4 ssh-ed25519 AAAA"),
            key("10.0.1.5", Some("s5"), "10.0.1.5 ssh-ed25519 BBBB"),
            key("10.0.1.9", None, "10.0.1.9 ssh-ed25519 CCCC"),
            key("10.0.1.7", Some("s7"), "10.0.1.7 ssh-ed25519 DDDD"),
        ];
        let (kept, stale) = trusted(recorded, &servers);
        assert_eq!(stale, ["10.0.1.4", "10.0.1.7"]);
        assert_eq!(file(&kept), "10.0.1.5 ssh-ed25519 BBBB\n10.0.1.9 ssh-ed25519 CCCC\n");
    }

    #[test]
    fn only_hosts_met_for_the_first_time_are_recorded() {
        let servers = Servers::from([("10.0.1.4".into(), "s4".into())]);
        let before = vec![key("10.0.1.5", Some("s5"), "10.0.1.5 ssh-ed25519 BBBB")];
        let after = "10.0.1.5 ssh-ed25519 BBBB\n[10.0.1.4]:2222 ssh-ed25519 AAAA\n\
                     [10.0.1.4]:2222 ecdsa-sha2-nistp256 EEEE\n# comment\n\n|1|hashed ssh-rsa FFFF\n";
        let met = first_met(after, &before, &servers);
        assert_eq!(met.len(), 1);
        assert_eq!(met[0].host, "10.0.1.4");
        assert_eq!(met[0].server_id.as_deref(), Some("s4"));
        assert_eq!(
            met[0].known_hosts,
            "[10.0.1.4]:2222 ssh-ed25519 AAAA\n[10.0.1.4]:2222 ecdsa-sha2-nistp256 EEEE\n"
        );
    }

    #[test]
    fn hosts_refused_for_a_changed_key_are_named() {
        let output =
            "TASK [x]\nfatal: [127.0.0.3]: UNREACHABLE! => {\"msg\": \"Failed to connect to the host via ssh: \
                      @@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@ ... Host key verification failed.\"}\n\
                      fatal: [127.0.0.4]: UNREACHABLE! => {\"msg\": \"Connection refused\"}\n";
        assert_eq!(refused_hosts(output), ["127.0.0.3"]);
    }
}
