//! API keys, scopes, the IP allowlist, the per-key rate limit and the limit on failed
//! authentications per client address.
//!
//! Keys are kept only as SHA-256 digests; a presented key is hashed and compared with every
//! configured digest in constant time, so neither timing nor memory reveals a key. A key's
//! id (a prefix of its digest) names it in logs and events.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::AppState;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// GET (and HEAD) only.
    Read,
    /// Everything.
    Write,
}

#[derive(Clone)]
struct KeyEntry {
    digest: [u8; 32],
    scope: Scope,
    /// What the operator calls the key (`name=`), for logs.
    name: Option<String>,
    /// When the key stops working (`expires=`).
    expires: Option<DateTime<Utc>>,
}

/// Why a presented key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefused {
    /// No configured key matches.
    Unknown,
    /// It matches a key whose time is up.
    Expired { key_id: String, name: Option<String> },
}

/// The configured API keys. `Debug` shows only how many there are.
#[derive(Clone, Default)]
pub struct ApiKeys {
    entries: Vec<KeyEntry>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.entries.len())
    }
}

/// The authenticated caller, available to handlers as a request extension.
#[derive(Debug, Clone)]
pub struct Caller {
    /// First 12 hex digits of the key's SHA-256: safe to log and to store in events.
    pub key_id: String,
    pub scope: Scope,
    /// The key's name, when the operator gave it one.
    pub key_name: Option<String>,
}

/// What `API_KEYS` holds of one key, without the key: for the log at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key_id: String,
    pub name: Option<String>,
    pub scope: Scope,
    pub expires: Option<DateTime<Utc>>,
}

/// Shortest plain key accepted; shorter keys are guessable.
pub const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// Parses `API_KEYS`: comma-separated `KEY:SCOPE` or `sha256:HEX:SCOPE` entries, where
    /// SCOPE is `read` or `write`, each optionally followed by `:name=NAME` and
    /// `:expires=DATE` (RFC 3339, or `YYYY-MM-DD` for midnight UTC). Errors never repeat a
    /// key.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut entries: Vec<KeyEntry> = Vec::new();
        for (index, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
        {
            let entry = parse_entry(entry, index + 1)?;
            if let Some(name) = entry
                .name
                .as_ref()
                .filter(|name| entries.iter().any(|e| e.name.as_ref() == Some(name)))
            {
                return Err(format!("entry {}: the name '{name}' is given twice", index + 1));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err("no keys given; write KEY:write[,KEY2:read]".into());
        }
        Ok(Self { entries })
    }

    /// The caller a presented key belongs to. Every entry is compared, whatever matches, so
    /// the time taken does not depend on which key (if any) matched.
    pub fn authenticate(&self, presented: &str, now: DateTime<Utc>) -> Result<Caller, KeyRefused> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&KeyEntry> = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(KeyRefused::Unknown)?;
        let key_id = key_id(&entry.digest);
        if entry.expires.is_some_and(|expires| now >= expires) {
            return Err(KeyRefused::Expired {
                key_id,
                name: entry.name.clone(),
            });
        }
        Ok(Caller {
            key_id,
            scope: entry.scope,
            key_name: entry.name.clone(),
        })
    }

    /// Logs every configured key by id, name, scope and expiry (never the key), with a
    /// warning for one that has expired or expires within a week.
    pub fn log_configured(&self) {
        let now = Utc::now();
        for key in self.describe() {
            let name = key.name.as_deref().unwrap_or("-");
            let expires = key.expires.map_or_else(|| "never".to_owned(), |at| at.to_rfc3339());
            tracing::info!(key_id = %key.key_id, name, scope = ?key.scope, %expires, "API key");
            match key.expires {
                Some(at) if at <= now => {
                    tracing::warn!(key_id = %key.key_id, name, "this API key has expired: it is refused")
                }
                Some(at) if at <= now + chrono::Duration::days(7) => {
                    tracing::warn!(key_id = %key.key_id, name, %expires, "this API key expires within a week");
                }
                _ => {}
            }
        }
    }

    /// Every configured key, without its secret.
    pub fn describe(&self) -> Vec<KeyInfo> {
        self.entries
            .iter()
            .map(|entry| KeyInfo {
                key_id: key_id(&entry.digest),
                name: entry.name.clone(),
                scope: entry.scope,
                expires: entry.expires,
            })
            .collect()
    }
}

/// A key's id: the first 12 hex digits of its SHA-256.
fn key_id(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..6])
}

/// The `sha256:HEX` form of a key, as `API_KEYS` takes it instead of the key itself.
pub fn hashed_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// One `API_KEYS` entry. The scope is the last field that reads `read` or `write` and is
/// followed only by `name=` and `expires=` fields, so a key may itself contain colons.
fn parse_entry(entry: &str, position: usize) -> Result<KeyEntry, String> {
    let fields: Vec<&str> = entry.split(':').collect();
    let scope_at = (1..fields.len())
        .rev()
        .find(|&at| matches!(fields[at], "read" | "write") && fields[at + 1..].iter().all(|field| field.contains('=')))
        .ok_or_else(|| match fields.len() {
            1 => format!("entry {position} has no scope; write KEY:read or KEY:write"),
            // Never quoted: what follows the last ':' may be part of the key.
            _ => format!("entry {position}: the scope after the key must be 'read' or 'write'"),
        })?;
    let scope = match fields[scope_at] {
        "read" => Scope::Read,
        _ => Scope::Write,
    };
    let digest = digest_of(&fields[..scope_at].join(":"), position)?;
    let mut parsed = KeyEntry {
        digest,
        scope,
        name: None,
        expires: None,
    };
    for field in &fields[scope_at + 1..] {
        match field.split_once('=') {
            Some(("name", name)) => parsed.name = Some(key_name(name, position)?),
            Some(("expires", when)) => parsed.expires = Some(expiry(when, position)?),
            _ => return Err(format!("entry {position}: '{field}' is not name=NAME or expires=DATE")),
        }
    }
    Ok(parsed)
}

fn digest_of(secret: &str, position: usize) -> Result<[u8; 32], String> {
    if let Some(hex_digest) = secret.strip_prefix("sha256:") {
        let bytes =
            hex::decode(hex_digest).map_err(|_| format!("entry {position}: the sha256 digest is not hexadecimal"))?;
        return bytes
            .try_into()
            .map_err(|_| format!("entry {position}: a sha256 digest has 64 hex digits"));
    }
    if secret.len() < MIN_KEY_LEN {
        return Err(format!(
            "entry {position}: keys must be at least {MIN_KEY_LEN} characters"
        ));
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "entry {position}: keys must not contain spaces or control characters"
        ));
    }
    Ok(Sha256::digest(secret.as_bytes()).into())
}

fn key_name(name: &str, position: usize) -> Result<String, String> {
    let fits = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match fits {
        true => Ok(name.to_owned()),
        false => Err(format!(
            "entry {position}: a key's name is 1 to 64 letters, digits, '-', '_' or '.'"
        )),
    }
}

fn expiry(when: &str, position: usize) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(when) {
        return Ok(at.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(when, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc())
        .ok_or_else(|| format!("entry {position}: expires must be a date (2027-01-31) or an RFC 3339 time"))
}

/// The key from `X-API-Key` or `Authorization: Bearer`.
fn presented_key(request: &Request) -> Option<&str> {
    let headers = request.headers();
    if let Some(value) = headers.get("x-api-key") {
        return value.to_str().ok();
    }
    let authorization = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = authorization.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The client's address: the TCP peer, or, when the peer is one of `TRUSTED_PROXIES`, the
/// nearest address in `X-Forwarded-For` that is not a trusted proxy (read right to left, so
/// a client cannot put an address of its choosing in front of the proxies' own).
pub fn client_address(request: &Request, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip().to_canonical())?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    Some(
        forwarded
            .iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .or(forwarded.first())
            .copied()
            .unwrap_or(peer),
    )
}

/// Authenticates the caller, enforces the scope and the per-key rate limit.
pub async fn require_api_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = client_address(&request, &state.config.trusted_proxies);
    if let Some(peer) = peer {
        state.auth_failures.check_blocked(peer)?;
    }
    let checked = presented_key(&request).map(|key| state.config.api_keys.authenticate(key, Utc::now()));
    let caller = match checked {
        Some(Ok(caller)) => caller,
        Some(Err(KeyRefused::Expired { key_id, name })) => {
            tracing::warn!(%key_id, name = name.as_deref().unwrap_or("-"), "an expired API key was refused");
            metrics::counter!("api_keys_expired_refused_total").increment(1);
            return Err(
                peer.map_or(ApiError::KeyExpired, |peer| match state.auth_failures.failed(peer) {
                    ApiError::Unauthorized => ApiError::KeyExpired,
                    blocked => blocked,
                }),
            );
        }
        Some(Err(KeyRefused::Unknown)) | None => {
            return Err(peer.map_or(ApiError::Unauthorized, |peer| state.auth_failures.failed(peer)));
        }
    };
    let reads_only = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if caller.scope == Scope::Read && !reads_only {
        return Err(ApiError::Forbidden("this API key may only read (GET)"));
    }
    state.rate_limiter.check(&caller.key_id)?;
    tracing::Span::current().record("key_id", caller.key_id.as_str());
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Refuses clients outside `IP_ALLOWLIST` when one is configured. `X-Forwarded-For` counts
/// only when the TCP peer is a trusted proxy: anyone can write the header.
pub async fn enforce_ip_allowlist(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.config.ip_allowlist.is_empty() {
        let peer = client_address(&request, &state.config.trusted_proxies);
        let allowed = peer.is_some_and(|ip| state.config.ip_allowlist.iter().any(|net| net.contains(&ip)));
        if !allowed {
            return Err(ApiError::Forbidden("your address is not in the IP allowlist"));
        }
    }
    Ok(next.run(request).await)
}

/// One token bucket per key id: `RATE_LIMIT_PER_MINUTE` requests a minute, refilled smoothly.
#[derive(Clone)]
pub struct KeyRateLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
}

impl KeyRateLimiter {
    pub fn per_minute(limit: NonZeroU32) -> Self {
        Self {
            limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(limit))),
        }
    }

    pub fn check(&self, key_id: &str) -> Result<(), ApiError> {
        self.limiter.check_key(&key_id.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }
}

/// Failed authentications per client address: past the limit (a bucket refilled over a
/// minute), the address is refused with 429 for everything, a right key included, until
/// the bucket has room again, so that guessing keys costs time and tells nothing.
#[derive(Clone)]
pub struct FailedAuthLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    blocked: Arc<Mutex<HashMap<IpAddr, Instant>>>,
}

/// Blocked addresses remembered at most; expired ones are dropped first.
const MAX_BLOCKED: usize = 10_000;

fn rate_limited(wait: Duration) -> ApiError {
    ApiError::RateLimited {
        retry_after_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}

impl FailedAuthLimiter {
    pub fn per_minute(limit: NonZeroU32) -> Self {
        Self {
            limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(limit))),
            blocked: Arc::default(),
        }
    }

    fn check_blocked(&self, peer: IpAddr) -> Result<(), ApiError> {
        let mut blocked = self.blocked.lock().expect("the lock is never poisoned");
        match blocked.get(&peer) {
            Some(until) if *until > Instant::now() => Err(rate_limited(*until - Instant::now())),
            Some(_) => {
                blocked.remove(&peer);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failure: 401, or 429 for the one past the limit, which blocks the address.
    fn failed(&self, peer: IpAddr) -> ApiError {
        let Err(not_until) = self.limiter.check_key(&peer) else {
            return ApiError::Unauthorized;
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let mut blocked = self.blocked.lock().expect("the lock is never poisoned");
        if blocked.len() >= MAX_BLOCKED {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(peer, Instant::now() + wait);
        metrics::counter!("api_auth_blocked_total").increment(1);
        tracing::warn!(client = %peer, seconds = wait.as_secs(), "too many failed authentications: the address waits");
        rate_limited(wait)
    }
}

/// Parses `IP_ALLOWLIST`: comma-separated CIDRs or single addresses.
pub fn parse_ip_allowlist(spec: &str) -> Result<Vec<IpNet>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("'{entry}' is not a CIDR or IP address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_keys_authenticate_with_their_scope() {
        let digest = hex::encode(Sha256::digest(b"reader-key-0123456789"));
        let keys = ApiKeys::parse(&format!("writer-key-0123456789:write, sha256:{digest}:read")).unwrap();
        let now = Utc::now();
        assert_eq!(
            keys.authenticate("writer-key-0123456789", now).unwrap().scope,
            Scope::Write
        );
        let reader = keys.authenticate("reader-key-0123456789", now).unwrap();
        assert_eq!(reader.scope, Scope::Read);
        assert_eq!(reader.key_id, &digest[..12]);
        assert_eq!(
            keys.authenticate("writer-key-012345678", now).unwrap_err(),
            KeyRefused::Unknown
        );
    }

    #[test]
    fn keys_have_names_and_expire() {
        let hashed = hashed_key("expiring-key-0123456789");
        let spec = format!("colon:in:the:key-0123:write:name=deploy-bot, {hashed}:read:name=ci:expires=2027-01-31");
        let keys = ApiKeys::parse(&spec).unwrap();
        let before = DateTime::parse_from_rfc3339("2027-01-30T23:59:59Z")
            .unwrap()
            .with_timezone(&Utc);
        let after = DateTime::parse_from_rfc3339("2027-01-31T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let bot = keys.authenticate("colon:in:the:key-0123", after).unwrap();
        assert_eq!((bot.scope, bot.key_name.as_deref()), (Scope::Write, Some("deploy-bot")));
        assert_eq!(
            keys.authenticate("expiring-key-0123456789", before)
                .unwrap()
                .key_name
                .as_deref(),
            Some("ci")
        );
        let refused = keys.authenticate("expiring-key-0123456789", after).unwrap_err();
        assert!(
            matches!(refused, KeyRefused::Expired { name: Some(ref name), .. } if name == "ci"),
            "{refused:?}"
        );
        let described = keys.describe();
        assert_eq!(described[1].expires, Some(after));
        assert_eq!(described[1].key_id, hashed["sha256:".len()..][..12]);
        assert_eq!(hashed_key("x").len(), "sha256:".len() + 64);
    }

    #[test]
    fn bad_key_specs_are_explained_without_the_key() {
        for (spec, expected) in [
            ("", "no keys"),
            ("abcdefghijklmnopq", "no scope"),
            ("abcdefghijklmnopq:admin", "must be 'read' or 'write'"),
            ("abcdefghijklmnopq:read:owner=me", "not name=NAME"),
            ("abcdefghijklmnopq:read:name=a b", "name is 1 to 64"),
            ("abcdefghijklmnopq:read:expires=soon", "expires must be a date"),
            (
                "abcdefghijklmnopq:read:name=x,bcdefghijklmnopqr:read:name=x",
                "given twice",
            ),
            ("short:write", "at least 16"),
            ("sha256:zz:read", "not hexadecimal"),
            ("sha256:abcd:read", "64 hex digits"),
        ] {
            let error = ApiKeys::parse(spec).unwrap_err();
            assert!(error.contains(expected), "{spec}: {error}");
            assert!(!error.contains("abcdefghijklmnopq"), "{error}");
        }
        assert_eq!(
            format!("{:?}", ApiKeys::parse("abcdefghijklmnopq:read").unwrap()),
            "ApiKeys(1 configured)"
        );
    }

    #[test]
    fn allowlist_accepts_cidrs_and_addresses() {
        let list = parse_ip_allowlist("10.0.0.0/8, 127.0.0.1,::1").unwrap();
        assert_eq!(list.len(), 3);
        assert!(list[1].contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(parse_ip_allowlist("10.0.0.0/33").is_err());
    }

    #[test]
    fn rate_limiter_says_when_to_retry() {
        let limiter = KeyRateLimiter::per_minute(NonZeroU32::new(2).unwrap());
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        match limiter.check("a") {
            Err(ApiError::RateLimited { retry_after_seconds }) => assert!((1..=30).contains(&retry_after_seconds)),
            other => panic!("expected a rate limit, got {other:?}"),
        }
        assert!(limiter.check("b").is_ok(), "keys have their own buckets");
    }
}
