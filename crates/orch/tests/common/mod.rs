//! Shared by the binary's tests.

use std::io::{BufRead, BufReader};
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command};

/// A child process the test started, killed when the guard goes, so that a failed assertion
/// never leaves an `orch` (or a worker) running.
pub struct Running(pub Child);

impl Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The API URL that `orch serve` or `orch dev` prints as its first line on stdout.
pub fn listening_url(child: &mut Child) -> String {
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut first_line)
        .unwrap();
    first_line
        .trim()
        .strip_prefix("orch listening on ")
        .expect(&first_line)
        .to_owned()
}

/// Removes what is labelled for the deployment when dropped, also when the test fails.
#[allow(dead_code)] // not every test binary runs containers
pub struct EngineGuard(pub String);

impl Drop for EngineGuard {
    fn drop(&mut self) {
        for kind in ["container", "network", "volume"] {
            for name in labelled(kind, &self.0) {
                let force = if kind == "container" { "-f" } else { "--" };
                let _ = Command::new("docker").args([kind, "rm", force, &name]).output();
            }
        }
    }
}

/// Names of what the engine holds labelled for `id`, per kind.
#[allow(dead_code)]
pub fn labelled(kind: &str, id: &str) -> Vec<String> {
    let filter = format!("label=orch.deployment={id}");
    let format = if kind == "container" { "{{.Names}}" } else { "{{.Name}}" };
    let mut args = vec![kind, "ls", "--filter", &filter, "--format", format];
    if kind == "container" {
        args.insert(2, "-a");
    }
    let output = Command::new("docker")
        .args(&args)
        .output()
        .expect("docker CLI (scripts/test.sh installs it)");
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// Runs the openssl CLI (Debian's package) in `dir`; panics with its stderr when it fails.
#[allow(dead_code)] // only the TLS tests issue certificates
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let made = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
    assert!(
        made.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&made.stderr)
    );
}

/// A fresh CA in `dir`, as `ca.pem` and `ca.key`; its certificate's PEM text.
#[allow(dead_code)]
pub fn new_ca(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &subject, "-keyout", "ca.key",
            "-out", "ca.pem",
        ],
    );
    std::fs::read(dir.join("ca.pem")).unwrap()
}

/// A certificate for `subject` issued by the CA in `dir` with `extensions` (lines of an
/// openssl extension file), as `{stem}.pem` and `{stem}.key`.
#[allow(dead_code)]
pub fn issue(dir: &std::path::Path, stem: &str, subject: &str, extensions: &str) {
    let (key, csr, cert, ext) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("{stem}.pem"),
        format!("{stem}.ext"),
    );
    std::fs::write(dir.join(&ext), extensions).unwrap();
    let subject = format!("/CN={subject}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out", &csr,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
}
