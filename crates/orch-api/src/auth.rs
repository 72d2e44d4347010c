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
}

/// Shortest plain key accepted; shorter keys are guessable.
pub const MIN_KEY_LEN: usize = 16;

impl ApiKeys {
    /// Parses `API_KEYS`: comma-separated `KEY:SCOPE` or `sha256:HEX:SCOPE` entries, where
    /// SCOPE is `read` or `write`. Errors never repeat a key.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (index, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .enumerate()
        {
            let position = index + 1;
            let (secret, scope) = entry
                .rsplit_once(':')
                .ok_or_else(|| format!("entry {position} has no scope; write KEY:read or KEY:write"))?;
            let scope = match scope {
                "read" => Scope::Read,
                "write" => Scope::Write,
                _ => return Err(format!("entry {position} has scope '{scope}'; use 'read' or 'write'")),
            };
            let digest = if let Some(hex_digest) = secret.strip_prefix("sha256:") {
                let bytes = hex::decode(hex_digest)
                    .map_err(|_| format!("entry {position}: the sha256 digest is not hexadecimal"))?;
                bytes
                    .try_into()
                    .map_err(|_| format!("entry {position}: a sha256 digest has 64 hex digits"))?
            } else {
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
                Sha256::digest(secret.as_bytes()).into()
            };
            entries.push(KeyEntry { digest, scope });
        }
        if entries.is_empty() {
            return Err("no keys given; write KEY:write[,KEY2:read]".into());
        }
        Ok(Self { entries })
    }

    /// The caller a presented key belongs to. Every entry is compared, whatever matches, so
    /// the time taken does not depend on which key (if any) matched.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<Scope> = None;
        for entry in &self.entries {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry.scope);
            }
        }
        found.map(|scope| Caller {
            key_id: hex::encode(&digest[..6]),
            scope,
        })
    }
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
    let Some(caller) = presented_key(&request).and_then(|key| state.config.api_keys.authenticate(key)) else {
        return Err(peer.map_or(ApiError::Unauthorized, |peer| state.auth_failures.failed(peer)));
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
        assert_eq!(keys.authenticate("writer-key-0123456789").unwrap().scope, Scope::Write);
        let reader = keys.authenticate("reader-key-0123456789").unwrap();
        assert_eq!(reader.scope, Scope::Read);
        assert_eq!(reader.key_id, &digest[..12]);
        assert!(keys.authenticate("writer-key-012345678").is_none());
    }

    #[test]
    fn bad_key_specs_are_explained_without_the_key() {
        for (spec, expected) in [
            ("", "no keys"),
            ("abcdefghijklmnopq", "no scope"),
            ("abcdefghijklmnopq:admin", "scope 'admin'"),
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
