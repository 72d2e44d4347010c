//! schemathesis (pinned in scripts/common.sh) against `orch serve` on SQLite and on
//! PostgreSQL: every check, the stateful phase included, bounded in time; zero failures.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{scratch_dir, serve, KEY};

/// A PostgreSQL database of the test's own on the test server (`TEST_DATABASE_URL`, else
/// 127.0.0.1:5432), made with psql; its URL.
fn postgres_database(name: &str) -> String {
    let admin =
        std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let made = Command::new("psql")
        .arg(&admin)
        .args([
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {name}"),
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("psql (scripts/test.sh installs PostgreSQL)");
    assert!(made.status.success(), "psql: {}", String::from_utf8_lossy(&made.stderr));
    let (server, _database) = admin.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

fn run_schemathesis(url: &str, report: &Path) -> (bool, String) {
    let st = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/schemathesis/bin/st"));
    assert!(
        st.exists(),
        "schemathesis is needed: scripts/test.sh installs it in .venv/schemathesis"
    );
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli/schemathesis.toml");
    // One worker: hypothesis's caches are not safe across threads (a flaky internal error).
    let output = Command::new(st)
        .args([
            "--config-file",
            config,
            "run",
            &format!("{url}/openapi.json"),
            "--checks",
            "all",
        ])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args([
            "--max-time",
            "60",
            "--max-examples",
            "40",
            "--seed",
            "20261202",
            "--workers",
            "1",
        ])
        .args(["--header", &format!("X-API-Key: {KEY}")])
        .args(["--report", "junit", "--report-dir"])
        .arg(report)
        .env("NO_COLOR", "1")
        // Its cache (`.schemathesis/`) goes beside the report, not into the source tree.
        .current_dir(report.parent().unwrap())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = super::said(&output);
    (output.status.success(), said)
}

#[test]
fn schemathesis_finds_no_failure_on_sqlite_or_postgresql() {
    let database = format!("orch_test_schemathesis_{}", std::process::id());
    for database_url in [None, Some(postgres_database(&database))] {
        let dir = scratch_dir();
        let mut env = vec![
            ("RATE_LIMIT_PER_MINUTE", "1000000".to_owned()),
            ("AUTH_FAILURES_PER_MINUTE", "1000000".to_owned()),
            ("LOG_LEVEL", "warn".to_owned()),
        ];
        if let Some(url) = &database_url {
            env.push(("DATABASE_URL", url.clone()));
        }
        let (child, url) = serve(&dir, &env, Stdio::null());
        let (passed, said) = run_schemathesis(&url, &dir.join("schemathesis"));
        drop(child);
        let on = if database_url.is_some() { "PostgreSQL" } else { "SQLite" };
        assert!(passed, "schemathesis on {on}:\n{said}");
    }
}
