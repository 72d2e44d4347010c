//! orch against a real OpenStack: its end-to-end suite (`lifecycle`, `reconcile`: drift made
//! behind orch's back repaired, an orphan removed), and the contract that
//! keeps fakecloud as strict as the real services (`contract`). The suite: deploy, scale out and in, update, a
//! failed deploy with compensation, and delete, each followed by a look through the cloud's
//! own API that nothing orch made is left and nothing exists twice. Plus the figures of
//! deploying and deleting on that cloud.
//!
//! The cloud: `ORCH_TEST_CLOUDS`, a comma-separated list of `clouds.yaml` entries (found
//! through `OS_CLIENT_CONFIG_FILE` and the standard places), e.g. `acceptance,acceptance-demo`
//! for the shared testbed's admin and ordinary member; every scenario runs for each of them.
//! `scripts/test.sh` starts the testbed and runs these tests with `--ignored`; without a
//! cloud they are listed as ignored, and run by hand without one they fail, never pass.

#[path = "../common/mod.rs"]
mod common;
mod contract;
mod lifecycle;
mod reconcile;

use std::collections::BTreeMap;

use orch_cloud::{config, OpenStack};

/// One test at a time: the testbed builds one server at a time anyway, and figures taken
/// while other tests run would mean little.
pub(crate) static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NEEDS: &str = "needs a real OpenStack: set ORCH_TEST_CLOUDS (scripts/test.sh does, with the shared testbed)";

/// The clouds to run against, from `ORCH_TEST_CLOUDS`.
pub(crate) fn clouds() -> Vec<String> {
    let names = std::env::var("ORCH_TEST_CLOUDS").unwrap_or_default();
    let names: Vec<String> = names
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(!names.is_empty(), "{NEEDS}");
    names
}

pub(crate) fn cloud_config(cloud: &str) -> orch_cloud::CloudConfig {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    config::from_clouds_yaml(cloud, &config::standard_search_paths(&env))
        .unwrap_or_else(|error| panic!("cloud '{cloud}': {error}"))
}

pub(crate) fn client(cloud: &str) -> OpenStack {
    OpenStack::new(cloud_config(cloud)).unwrap()
}
