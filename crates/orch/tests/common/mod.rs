//! Shared by the binary's tests.

use std::io::{BufRead, BufReader};
use std::ops::{Deref, DerefMut};
use std::process::Child;

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
