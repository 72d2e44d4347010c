//! Shared by the binary's tests.

use std::io::{BufRead, BufReader};
use std::process::Child;

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
