//! orch's state: repositories over sqlx for SQLite (the embedded default) and PostgreSQL,
//! with embedded migrations, behaving the same on both.
//!
//! # Layout
//! - this file: [`Store`] (connect, migrate, ping), [`StoreError`], time and metrics helpers.
//! - [`templates`]: the `deployment_templates` repository.
//! - [`deployments`]: deployments, and every status change together with its `operations`
//!   outbox row and its `deployment_events` row in one transaction.
//! - [`host_keys`]: SSH host keys per deployment, trusted on first contact.
//! - [`leadership`]: leases on roles one process at a time plays (the relay).
//! - [`records`]: the rows as Rust types.
//!
//! One set of SQL serves both databases through sqlx's `Any` driver: `$n` placeholders (which
//! SQLite accepts), text timestamps and text JSON. Only the migrations differ.

// Functions stay short enough to read at once (the threshold is in clippy.toml).
#![warn(clippy::too_many_lines)]

use backon::{ExponentialBuilder, Retryable};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

mod cancel;
pub mod configuration_runs;
pub mod deployments;
pub mod host_keys;
pub mod leadership;
pub mod leases;
pub mod reconcile;
pub mod records;
pub mod resources;
pub mod secrets;
pub mod templates;

pub use records::*;

/// The default database when `DATABASE_URL` is unset: a SQLite file under `./data/`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/orch.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state; the message says how, for the client.
    #[error("{0}")]
    Conflict(String),
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON document no longer parses; this is a bug or a manual edit.
    #[error("corrupt stored document in {0}")]
    Corrupt(&'static str),
    /// A secret cannot be sealed or opened: no key, or not the key it was sealed with. The
    /// message names the secret and the key's id, never a value.
    #[error("{0}")]
    Secret(String),
}

impl StoreError {
    /// True when the database could not be reached at all (refused, timed out, not started):
    /// worth waiting for, unlike a bad URL or a failed migration.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut))
    }

    /// True when the database rejected a write because of a unique index.
    pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
        matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Connection pool and repositories. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The keys secrets are sealed with; none: templates with secrets are refused.
    keys: Option<std::sync::Arc<secrets::SecretKeys>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish()
    }
}

/// Options for [`Store::connect`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`), creating a SQLite file and its
    /// directory when missing, and applies the migrations.
    #[tracing::instrument(skip_all, fields(backend))]
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        tracing::Span::current().record("backend", tracing::field::debug(backend));
        let url = match backend {
            Backend::Sqlite => prepare_sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        // Statements are timed by metrics instead of logged: a log line per query drowns the
        // request logs.
        let connect_options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers work beside the one writer; the busy timeout makes
                        // concurrent writers queue instead of failing.
                        connection
                            .execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 15000; PRAGMA foreign_keys = ON;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect_options)
            .await?;
        let store = Self {
            pool,
            backend,
            keys: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations not yet applied. PostgreSQL serialises concurrent migrators with
    /// an advisory lock; SQLite has none, so a process that raced another one (both saw the
    /// migration missing, the other applied it first) tries again and finds it applied.
    async fn migrate(&self) -> Result<()> {
        let once = || async {
            match self.backend {
                Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await,
                Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&self.pool).await,
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_times(8)
            .with_jitter();
        once.retry(backoff)
            .when(|_| self.backend == Backend::Sqlite)
            .notify(|error, wait| {
                tracing::warn!(error = %error, wait_ms = wait.as_millis() as u64, "migrations raced another process; trying again");
            })
            .await?;
        Ok(())
    }

    /// [`Store::connect`], waiting up to `patience` for a database that is not ready yet (a
    /// PostgreSQL still starting, as under compose or systemd), with a log line per try.
    pub async fn connect_patiently(url: &str, options: &StoreOptions, patience: Duration) -> Result<Self> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(5))
            .with_total_delay(Some(patience))
            .without_max_times();
        (|| Self::connect(url, options))
            .retry(backoff)
            .when(StoreError::is_unreachable)
            .notify(|error, wait| {
                tracing::warn!(error = %error, wait_ms = wait.as_millis() as u64, "the database is not reachable yet; trying again");
            })
            .await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A trivial query, for readiness checks.
    #[tracing::instrument(skip_all)]
    pub async fn ping(&self) -> Result<()> {
        timed("ping", sqlx::query("SELECT 1").execute(&self.pool)).await?;
        Ok(())
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction. SQLite takes the write lock at once (`BEGIN IMMEDIATE`),
    /// so a transaction never fails half-way when another writer got there first.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

fn backend_of(url: &str) -> Result<Backend> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::UnsupportedUrl(
            "expected sqlite://PATH or postgres://…".into(),
        ))
    }
}

/// Adds `mode=rwc` so that SQLite creates the file, and creates its directory.
fn prepare_sqlite_url(url: &str) -> Result<String> {
    let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::UnsupportedUrl(
            "an in-memory SQLite database would lose all state; give a file path".into(),
        ));
    }
    if let Some(parent) = Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|error| StoreError::UnsupportedUrl(format!("cannot create the database directory: {error}")))?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// The current time as stored: RFC 3339, UTC, microseconds, so text order is time order.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Seconds from a stored time `since` to `now`, never negative; none for a time that does
/// not read.
pub fn seconds_between(since: &str, now: chrono::DateTime<chrono::Utc>) -> Option<f64> {
    let since = chrono::DateTime::parse_from_rfc3339(since).ok()?;
    let elapsed = now.signed_duration_since(since.with_timezone(&chrono::Utc));
    Some(elapsed.num_milliseconds().max(0) as f64 / 1000.0)
}

/// Runs one query future and records `database_query_duration_seconds{operation}`.
pub(crate) async fn timed<T>(operation: &'static str, query: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let result = query.await;
    metrics::histogram!("database_query_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = std::env::temp_dir().join(format!("orch-store-url-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/x.db", dir.display());
        assert_eq!(prepare_sqlite_url(&url).unwrap(), format!("{url}?mode=rwc"));
        assert!(dir.is_dir());
        assert!(prepare_sqlite_url("sqlite::memory:").is_err());
        assert!(backend_of("mysql://x").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processes_that_start_at_once_on_a_fresh_sqlite_file_both_migrate() {
        for _ in 0..5 {
            let dir = std::env::temp_dir().join(format!("orch-store-race-{}", uuid::Uuid::new_v4()));
            let url = format!("sqlite://{}/orch.db", dir.display());
            let options = StoreOptions::default();
            let (first, second) = tokio::join!(Store::connect(&url, &options), Store::connect(&url, &options));
            first.unwrap();
            second.unwrap();
        }
    }

    #[tokio::test]
    async fn a_database_that_never_comes_is_waited_for_then_named() {
        // Nothing listens on port 9 (discard) here.
        let url = "postgres://orch@127.0.0.1:9/orch";
        let started = Instant::now();
        let options = StoreOptions {
            acquire_timeout: Duration::from_millis(300),
            ..StoreOptions::default()
        };
        let error = Store::connect_patiently(url, &options, Duration::from_secs(2))
            .await
            .err()
            .unwrap();
        assert!(error.is_unreachable(), "{error:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "it waited: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn timestamps_sort_as_text() {
        let first = now();
        std::thread::sleep(Duration::from_millis(2));
        let second = now();
        assert!(first < second);
        assert_eq!(first.len(), "2026-11-22T07:28:11.000000Z".len());
    }
}
