//! The service catalog: ready-made services (image, named ports, class, the probe that works
//! for that image, resources, volumes) that a template names with `catalog: NAME` and
//! overrides where it needs to. The built-in entries are in `builtin.yaml`; operators add
//! their own from a directory of YAML files, read at start-up with located errors.
//!
//! A template keeps the merged service and the entry's name, so a stored deployment means
//! the same thing after the catalog changes.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::problem::{child, Problems};
use crate::reader::{self, Object};
use crate::template::services::read_catalog_service;
use crate::template::Service;

const BUILTIN: &str = include_str!("builtin.yaml");

/// One catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CatalogEntry {
    pub name: String,
    pub description: String,
    /// What to know before using it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What it needs that orch does not provide (ArgoCD: a Kubernetes API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires: Option<String>,
    /// The service as a template would write it.
    pub service: Service,
    /// The entry as written, for merging a template's overrides onto it.
    #[serde(skip)]
    pub document: Value,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub entries: BTreeMap<String, CatalogEntry>,
}

static INSTALLED: OnceLock<Catalog> = OnceLock::new();

/// The catalog templates are read against: the built-in entries, plus those given to
/// [`install`] before the first template was read.
pub fn installed() -> &'static Catalog {
    INSTALLED.get_or_init(Catalog::builtin)
}

/// Adds operators' entries (replacing built-in ones of the same name). Only before the first
/// template is read; later it is refused, so no two templates see different catalogs.
pub fn install(extra: Catalog) -> Result<(), String> {
    let mut catalog = Catalog::builtin();
    catalog.entries.extend(extra.entries);
    INSTALLED
        .set(catalog)
        .map_err(|_| "the catalog is in use already; install it before reading templates".to_owned())
}

impl Catalog {
    /// The built-in entries; they are checked by a unit test, so this cannot fail.
    pub fn builtin() -> Self {
        Self::parse_text(BUILTIN, "builtin.yaml").expect("the built-in catalog reads")
    }

    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.get(name)
    }

    /// Entries from YAML text; problems are located as `<origin>#<pointer>`.
    pub fn parse_text(text: &str, origin: &str) -> Result<Self, Problems> {
        let value: Value = serde_yaml_ng::from_str(text)
            .map_err(|error| Problems::single(format!("{origin}#"), format!("is not valid YAML: {error}")))?;
        let mut problems = Problems::default();
        let mut entries = BTreeMap::new();
        let prefix = format!("{origin}#");
        if let Some(map) = reader::object(&value, &prefix, &mut problems) {
            for (name, entry) in map {
                let pointer = child(&prefix, name);
                if let Err(rule) = crate::names::check_key(name) {
                    problems.push(&pointer, format!("name '{name}' {rule}"));
                    continue;
                }
                if let Some(entry) = read_entry(name, entry, &pointer, &mut problems) {
                    entries.insert(name.clone(), entry);
                }
            }
        }
        problems.into_result(Self { entries })
    }

    /// Every `*.yaml` and `*.yml` file of `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<Self, Problems> {
        let listing = std::fs::read_dir(dir)
            .map_err(|error| Problems::single(dir.display().to_string(), format!("cannot be read: {error}")))?;
        let mut files: Vec<_> = listing
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
            .collect();
        files.sort();
        let mut catalog = Self::default();
        let mut problems = Problems::default();
        for file in files {
            let origin = file.display().to_string();
            let read = std::fs::read_to_string(&file)
                .map_err(|error| Problems::single(format!("{origin}#"), format!("cannot be read: {error}")))
                .and_then(|text| Self::parse_text(&text, &origin));
            match read {
                Ok(more) => catalog.entries.extend(more.entries),
                Err(more) => problems.extend(more),
            }
        }
        problems.into_result(catalog)
    }
}

fn read_entry(name: &str, value: &Value, pointer: &str, problems: &mut Problems) -> Option<CatalogEntry> {
    let mut object = Object::new(value, pointer, problems)?;
    let description = object
        .required("description", problems)
        .and_then(|value| reader::text(value, &object.pointer_to("description"), 1_024, problems));
    let requires = object
        .optional("requires")
        .and_then(|value| reader::text(value, &object.pointer_to("requires"), 1_024, problems));
    let notes = match object.optional("notes") {
        Some(value) => read_notes(value, &object.pointer_to("notes"), problems),
        None => Some(Vec::new()),
    };
    let document = object.required("service", problems).cloned();
    let service = document
        .as_ref()
        .and_then(|value| read_catalog_service(value, &object.pointer_to("service"), problems));
    object.finish(problems);
    Some(CatalogEntry {
        name: name.to_owned(),
        description: description?,
        notes: notes?,
        requires,
        service: service?,
        document: document?,
    })
}

fn read_notes(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<String>> {
    let items = reader::array(value, pointer, problems)?;
    let notes: Vec<Option<String>> = items
        .iter()
        .enumerate()
        .map(|(index, item)| reader::text(item, &child(pointer, &index.to_string()), 1_024, problems))
        .collect();
    notes.into_iter().collect()
}

/// A template's service written over its catalog entry: the template's fields replace the
/// entry's, except `env` and `resources`, which merge key by key.
pub(crate) fn merged(entry: &CatalogEntry, overrides: &Map<String, Value>) -> Value {
    let mut base = entry.document.as_object().cloned().unwrap_or_default();
    for (key, value) in overrides {
        match (key.as_str(), base.get_mut(key), value) {
            ("env" | "resources", Some(Value::Object(into)), Value::Object(from)) => {
                into.extend(from.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{Probe, Template};

    #[test]
    fn every_builtin_entry_reads_and_is_documented() {
        let catalog = Catalog::builtin();
        assert!(catalog.entries.len() >= 23, "{}", catalog.entries.len());
        let docs = include_str!("../../../../docs/catalog.md");
        for name in catalog.entries.keys() {
            assert!(docs.contains(&format!("| `{name}` |")), "docs/catalog.md lacks {name}");
        }
        let prometheus = catalog.get("prometheus").unwrap();
        assert_eq!(prometheus.service.image, "prom/prometheus:v3.9.0");
        assert_eq!(
            prometheus.service.healthcheck.as_ref().unwrap().probe,
            Probe::Http {
                port: 9090,
                path: "/-/ready".into()
            }
        );
        assert!(catalog
            .get("argocd")
            .unwrap()
            .requires
            .as_deref()
            .unwrap()
            .contains("Kubernetes"));
    }

    #[test]
    fn a_template_names_an_entry_and_overrides_what_it_needs() {
        let text = "name: o\nservices:\n  metrics:\n    catalog: prometheus\n    instances: 2\n    resources: {memory: 2GiB}\n    env: {TZ: UTC}\n";
        let template = Template::parse_text(text).unwrap();
        let metrics = &template.services["metrics"];
        assert_eq!(metrics.catalog.as_deref(), Some("prometheus"));
        assert_eq!(metrics.image, "prom/prometheus:v3.9.0");
        assert_eq!(
            (metrics.instances, metrics.resources.memory, metrics.resources.cpus),
            (2, Some(2 << 30), Some(1.0))
        );
        assert_eq!(metrics.volumes[0].target, "/prometheus");
        assert_eq!(
            Template::parse(&template.to_value(), "", None).unwrap(),
            template,
            "stored merged, read back the same"
        );
        let unknown = Template::parse_text("name: o\nservices:\n  m: {catalog: prometheus2}\n").unwrap_err();
        assert_eq!(unknown.0[0].pointer, "/services/m/catalog");
        assert!(unknown.0[0].detail.contains("prometheus"), "{unknown:?}");
        let bad = Template::parse_text("name: o\nservices:\n  m: {catalog: redis, ports: [{container: 0, name: x}]}\n")
            .unwrap_err();
        assert_eq!(bad.0[0].pointer, "/services/m/ports/0/container");
    }

    #[test]
    fn operator_entries_are_checked_with_their_file_and_pointer() {
        let problems = Catalog::parse_text(
            "mine:\n  description: x\n  service: {image: i, class: cloud}\n",
            "/etc/orch/catalog/mine.yaml",
        )
        .unwrap_err();
        assert_eq!(problems.0[0].pointer, "/etc/orch/catalog/mine.yaml#/mine/service/class");
        let problems = Catalog::parse_text("Bad Name: {}\n", "x.yaml").unwrap_err();
        assert_eq!(problems.0[0].pointer, "x.yaml#/Bad Name");
        let nested = Catalog::parse_text("a:\n  description: x\n  service: {catalog: redis}\n", "x.yaml").unwrap_err();
        assert!(
            nested.0.iter().any(|p| p.pointer == "x.yaml#/a/service/catalog"),
            "{nested:?}"
        );
        let fine = Catalog::parse_text(
            "mine:\n  description: mine\n  service: {image: local/mine:1, class: admin}\n",
            "m.yaml",
        )
        .unwrap();
        assert_eq!(fine.get("mine").unwrap().service.instances, 1);
    }

    #[test]
    fn the_example_stacks_read() {
        let examples = [
            include_str!("../../../../examples/observability-stack.yaml"),
            include_str!("../../../../examples/data-stack.yaml"),
            include_str!("../../../../examples/messaging-stack.yaml"),
            include_str!("../../../../examples/orch-observability.yaml"),
        ];
        for text in examples {
            let template = crate::Template::parse_text(text).unwrap_or_else(|problems| panic!("{problems:?}"));
            assert!(template.services.values().all(|service| service.catalog.is_some()));
        }
    }
}
