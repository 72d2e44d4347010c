//! fakecloud's behaviour: credentials, stock flavors and images, quotas, timings and faults.
//! Set by flags at start and changed at run time with `PUT /_fake/config` (a partial object
//! is merged into the current settings).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeConfig {
    pub username: String,
    pub password: String,
    pub project_name: String,
    pub domain_name: String,
    pub region: String,
    /// Added to every create request (POST that makes a resource) before it answers.
    pub create_latency_ms: u64,
    /// Time from a server's create until it leaves BUILD.
    pub boot_delay_ms: u64,
    /// Time a deleted server or volume stays visible (task state `deleting`) before it is gone.
    pub delete_delay_ms: u64,
    /// Time a volume stays `creating`.
    pub volume_delay_ms: u64,
    /// Share of servers that end in ERROR instead of ACTIVE.
    pub server_error_rate: f64,
    /// Share of volumes that end in `error` instead of `available`.
    pub volume_error_rate: f64,
    /// Share of requests (to any service but the admin API) answered 500 or 503.
    pub error_rate: f64,
    /// Per service (`identity`, `compute`, `network`, `volume`, `image`): overrides `error_rate`.
    pub error_rate_by_service: BTreeMap<String, f64>,
    /// Requests per second over all services; beyond it 429 with `Retry-After`. 0 is off.
    pub rate_limit_rps: f64,
    /// Token lifetime.
    pub token_ttl_seconds: u64,
    /// The next N creates take effect but answer 503, as if the response was lost.
    pub lose_create_responses: u32,
    /// What Neutron does with `tags` in a create body.
    pub tags_in_create: TagsInCreate,
    pub quotas: Quotas,
    pub flavors: Vec<Flavor>,
    pub images: Vec<Image>,
}

/// What Neutron does with `tags` sent in a create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagsInCreate {
    /// As the real Neutron 2026.1 with ML2/OVN does, although it advertises `tag-creation`:
    /// 400 "Attribute 'tags' not allowed in POST" for networks, subnets, routers and security
    /// groups; ports (single or bulk) are created and their tags silently dropped. Tags stick
    /// only through `PUT /v2.0/{collection}/{id}/tags`.
    #[default]
    RefuseOrDrop,
    /// Kept, as Neutron's `tag-creation` extension documents.
    Keep,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    pub instances: u64,
    pub cores: u64,
    pub ram: u64,
    pub volumes: u64,
    pub gigabytes: u64,
    pub networks: u64,
    pub subnets: u64,
    pub routers: u64,
    pub ports: u64,
    pub security_groups: u64,
    pub security_group_rules: u64,
    pub key_pairs: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            instances: 10_000,
            cores: 40_000,
            ram: 80_000_000,
            volumes: 10_000,
            gigabytes: 1_000_000,
            networks: 1_000,
            subnets: 1_000,
            routers: 1_000,
            ports: 20_000,
            security_groups: 1_000,
            security_group_rules: 10_000,
            key_pairs: 1_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub vcpus: u64,
    /// MiB.
    pub ram: u64,
    /// GiB.
    pub disk: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub id: String,
    pub name: String,
    pub min_disk: u64,
}

impl Default for FakeConfig {
    fn default() -> Self {
        let flavor = |id: &str, name: &str, vcpus, ram, disk| Flavor {
            id: id.into(),
            name: name.into(),
            vcpus,
            ram,
            disk,
        };
        Self {
            username: "admin".into(),
            password: "fakecloud".into(),
            project_name: "admin".into(),
            domain_name: "Default".into(),
            region: "RegionOne".into(),
            create_latency_ms: 0,
            boot_delay_ms: 2_000,
            delete_delay_ms: 2_000,
            volume_delay_ms: 500,
            server_error_rate: 0.0,
            volume_error_rate: 0.0,
            error_rate: 0.0,
            error_rate_by_service: BTreeMap::new(),
            rate_limit_rps: 0.0,
            token_ttl_seconds: 3_600,
            lose_create_responses: 0,
            tags_in_create: TagsInCreate::default(),
            quotas: Quotas::default(),
            flavors: vec![
                flavor("1", "m1.tiny", 1, 512, 1),
                flavor("2", "m1.small", 1, 2048, 20),
                flavor("3", "m1.medium", 2, 4096, 40),
                flavor("4", "m1.large", 4, 8192, 80),
                flavor("5", "m1.xlarge", 8, 16384, 160),
            ],
            images: vec![
                Image {
                    id: "5d0b0f3c-0b8e-4a8e-9b1a-2a2f0c7d9e01".into(),
                    name: "ubuntu-22.04".into(),
                    min_disk: 3,
                },
                Image {
                    id: "6e1c1a4d-1c9f-4b9f-8c2b-3b3a1d8e0f02".into(),
                    name: "cirros".into(),
                    min_disk: 1,
                },
            ],
        }
    }
}

impl FakeConfig {
    /// Merges a partial JSON object into these settings; unknown or mistyped fields fail.
    pub fn merged(&self, patch: &serde_json::Value) -> Result<Self, String> {
        let serde_json::Value::Object(patch) = patch else {
            return Err("the configuration must be a JSON object".into());
        };
        let mut current = serde_json::to_value(self).expect("config serializes");
        let object = current.as_object_mut().expect("config is an object");
        for (key, value) in patch {
            object.insert(key.clone(), value.clone());
        }
        let merged: Self = serde_json::from_value(current).map_err(|error| error.to_string())?;
        merged.validate()?;
        Ok(merged)
    }

    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("server_error_rate", self.server_error_rate),
            ("volume_error_rate", self.volume_error_rate),
            ("error_rate", self.error_rate),
        ];
        for (name, rate) in rates
            .into_iter()
            .chain(self.error_rate_by_service.iter().map(|(k, v)| (k.as_str(), *v)))
        {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        for service in self.error_rate_by_service.keys() {
            if !crate::SERVICES.contains(&service.as_str()) {
                return Err(format!(
                    "unknown service '{service}'; use one of {}",
                    crate::SERVICES.join(", ")
                ));
            }
        }
        if self.rate_limit_rps < 0.0 {
            return Err("rate_limit_rps must not be negative".into());
        }
        Ok(())
    }

    pub fn error_rate_for(&self, service: &str) -> f64 {
        self.error_rate_by_service
            .get(service)
            .copied()
            .unwrap_or(self.error_rate)
    }
}
