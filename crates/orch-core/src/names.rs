//! Name rules. Names end up in cloud resource names, tags, log lines and URLs, so they are
//! restricted to a character set that is safe in all of them.

/// Longest deployment or template name; it must fit into cloud resource names with a suffix.
pub const MAX_NAME_LEN: usize = 63;
/// Longest key inside a template (group, subnet, security group).
pub const MAX_KEY_LEN: usize = 32;

/// Deployment and template names: 1–63 characters of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    check(
        name,
        MAX_NAME_LEN,
        |c| c.is_ascii_alphanumeric(),
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
        "letters, digits, '.', '_' and '-', starting with a letter or digit",
    )
}

/// A name given in a request may not have the form of an id (a UUID: 8-4-4-4-12 hex
/// digits): ids and names share the same URLs, and such a name would shadow another
/// record's id. Checked when a name is given, not when a stored record is read.
pub fn check_not_an_id(name: &str) -> Result<(), String> {
    let groups: Vec<&str> = name.split('-').collect();
    let shaped = groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|group| group.chars().all(|c| c.is_ascii_hexdigit()));
    match shaped {
        true => Err("must not look like an id (a UUID): ids and names share the same URLs".to_owned()),
        false => Ok(()),
    }
}

/// Keys inside a template (groups, subnets, security groups): 1–32 characters of
/// `a-z 0-9 _ -`, starting with a lowercase letter.
pub fn check_key(key: &str) -> Result<(), String> {
    check(
        key,
        MAX_KEY_LEN,
        |c| c.is_ascii_lowercase(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'),
        "lowercase letters, digits, '_' and '-', starting with a lowercase letter",
    )
}

fn check(
    name: &str,
    max_len: usize,
    first_ok: impl Fn(char) -> bool,
    rest_ok: impl Fn(char) -> bool,
    rule: &str,
) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => Err("must not be empty".into()),
        Some(_) if name.len() > max_len => Err(format!("must be at most {max_len} characters")),
        Some(first) if first_ok(first) && chars.all(rest_ok) => Ok(()),
        Some(_) => Err(format!("may only contain {rule}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_safe_set_only() {
        assert!(check_name("my-app_1.prod").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-leading").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name("../etc").is_err());
        assert!(check_name(&"a".repeat(63)).is_ok());
        assert!(check_name(&"a".repeat(64)).is_err());
        assert!(check_not_an_id("019ad6e2-7b9c-7f3e-8a1d-2c4b6e8f0a12").is_err());
        assert!(check_not_an_id("019AD6E2-7B9C-7F3E-8A1D-2C4B6E8F0A12").is_err());
        assert!(check_not_an_id("web-app-stack").is_ok());
        assert!(check_not_an_id("019ad6e2-7b9c-7f3e-8a1d-2c4b6e8f0a1").is_ok());
    }

    #[test]
    fn keys_are_lowercase_identifiers() {
        assert!(check_key("web").is_ok());
        assert!(check_key("web_2-x").is_ok());
        assert!(check_key("Web").is_err());
        assert!(check_key("2web").is_err());
        assert!(check_key(&"a".repeat(33)).is_err());
    }
}
