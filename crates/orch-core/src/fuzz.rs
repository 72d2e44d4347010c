//! Property-based fuzzing of every reader of outside input: templates (as JSON values and as
//! text) and the request bodies. Inputs are the example templates mutated at random paths,
//! and arbitrary JSON built from the readers' own vocabulary, so that the cases reach deep
//! validation, not only the first type check. Whatever the input, a reader answers with a
//! value or with problems located in the input, never a panic; a template it accepts reads
//! back the same. Each property runs a bounded number of cases (`PROPTEST_CASES` raises it).

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::deployment::{ConfigureRequest, CreateDeploymentRequest, ScaleRequest, UpdateDeploymentRequest};
use crate::problem::Problems;
use crate::reconcile::CleanupRequest;
use crate::Template;

/// Field names the readers know, so that generated objects often look almost right.
const VOCABULARY: &[&str] = &[
    "name",
    "description",
    "vm_config",
    "network_config",
    "services",
    "security_groups",
    "parameters",
    "flavor",
    "image",
    "count",
    "min",
    "max",
    "cidr",
    "subnets",
    "subnet",
    "dns_nameservers",
    "gateway",
    "volumes",
    "size_gb",
    "metadata",
    "user_data",
    "rules",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group",
    "catalog",
    "ports",
    "env",
    "secrets",
    "healthcheck",
    "depends_on",
    "networks",
    "command",
    "template",
    "template_id",
    "playbook",
    "inventory",
    "extra_vars",
    "timeout_seconds",
    "target_count",
    "vm_type",
    "service",
    "dry_run",
    "auto_heal",
    "region",
    "type",
    "default",
    "web",
    "app",
    "db",
    "http",
    "gateway_ip",
    "enable_dhcp",
    "router",
    "replicas",
    "image_pull",
];

/// The documents mutations start from, read once.
fn seeds() -> Vec<Value> {
    static SEEDS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(read_seeds).clone()
}

fn read_seeds() -> Vec<Value> {
    let text = |yaml: &str| serde_yaml_ng::from_str::<Value>(yaml).expect("the examples parse");
    vec![
        text(include_str!("../../../examples/web-app-stack.yaml")),
        text(include_str!("../../../examples/two-tier-services.yaml")),
        text(include_str!("../../../examples/data-stack.yaml")),
        json!({"name": "rich", "key_pair": "ops",
               "security_groups": {"web": {"description": "web", "rules": [
                   {"protocol": "tcp", "port_range_min": 443, "port_range_max": 443, "remote_ip_prefix": "0.0.0.0/0"},
                   {"protocol": "tcp", "port_range_min": 22, "port_range_max": 22, "remote_group": "web"}]}},
               "vm_config": {"web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 2, "security_groups": ["web"],
                                     "metadata": {"role": "web"}, "volumes": [{"size_gb": 10}], "user_data": "#!/bin/sh\n"}},
               "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": {"cidr": "10.0.1.0/24", "gateway_ip": "10.0.1.1",
                                                                     "dns_nameservers": ["10.0.0.2"]}}}}),
    ]
}

/// Arbitrary JSON whose keys mostly come from [`VOCABULARY`].
fn any_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![4 => proptest::sample::select(VOCABULARY).prop_map(str::to_owned), 1 => ".{0,12}"];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..70_000).prop_map(Value::from),
        any::<f64>().prop_map(|number| json!(number)),
        ".{0,24}".prop_map(Value::from),
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(/[0-9]{1,2})?".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every JSON pointer in `value`, the root included.
fn pointers(value: &Value, at: &str, all: &mut Vec<String>) {
    all.push(at.to_owned());
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                pointers(child, &crate::problem::child(at, key), all);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                pointers(child, &format!("{at}/{index}"), all);
            }
        }
        _ => {}
    }
}

/// One change at a path of a document: its value replaced, removed, or a key added beside it.
#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, Value),
    Remove(usize),
    Add(usize, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let key = proptest::sample::select(VOCABULARY).prop_map(str::to_owned);
    prop_oneof![
        3 => (any::<usize>(), any_json()).prop_map(|(at, value)| Mutation::Replace(at, value)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        2 => (any::<usize>(), key, any_json()).prop_map(|(at, key, value)| Mutation::Add(at, key, value)),
    ]
}

fn apply(document: &mut Value, mutation: &Mutation) {
    let mut all = Vec::new();
    pointers(document, "", &mut all);
    let pick = |at: usize| all[at % all.len()].clone();
    match mutation {
        Mutation::Replace(at, value) => {
            if let Some(target) = document.pointer_mut(&pick(*at)) {
                *target = value.clone();
            }
        }
        Mutation::Remove(at) => {
            let pointer = pick(*at);
            if let Some((parent, key)) = pointer.rsplit_once('/') {
                match document.pointer_mut(parent) {
                    Some(Value::Object(map)) => {
                        map.remove(&key.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(index) = key.parse::<usize>() {
                            items.remove(index);
                        }
                    }
                    _ => {}
                }
            }
        }
        Mutation::Add(at, key, value) => {
            if let Some(Value::Object(map)) = document.pointer_mut(&pick(*at)) {
                map.insert(key.clone(), value.clone());
            }
        }
    }
}

fn mutated_template() -> impl Strategy<Value = Value> {
    (0..seeds().len(), proptest::collection::vec(mutation(), 1..5)).prop_map(|(seed, mutations)| {
        let mut document = seeds().swap_remove(seed);
        for mutation in &mutations {
            apply(&mut document, mutation);
        }
        document
    })
}

/// Problems are located: each names a place whose parent exists in the input (the place
/// itself may be a missing required field), and says what is wrong.
fn assert_located(input: &Value, problems: &Problems) {
    assert!(!problems.is_empty(), "an error always carries problems");
    for problem in &problems.0 {
        assert!(!problem.detail.trim().is_empty(), "{problem:?}");
        if problem.pointer.is_empty() {
            continue;
        }
        assert!(problem.pointer.starts_with('/'), "{problem:?}");
        let parent = problem.pointer.rsplit_once('/').map_or("", |(parent, _)| parent);
        assert!(
            input.pointer(parent).is_some(),
            "{problem:?} is not located in the input {input}"
        );
    }
}

/// A template read from `document`: accepted, it reads back the same from its own output;
/// refused, every problem is located.
fn check_template(document: &Value) {
    match Template::parse(document, "", Some("fuzzed")) {
        Ok(template) => {
            let written = template.to_value();
            let again = Template::parse(&written, "", Some("fuzzed"));
            assert_eq!(again.as_ref(), Ok(&template), "{written}");
        }
        Err(problems) => assert_located(document, &problems),
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Mutations start from valid documents, so that most cases fail deep inside, not at once.
#[test]
fn every_seed_is_a_valid_template() {
    for seed in seeds() {
        if let Err(problems) = Template::parse(&seed, "", Some("seed")) {
            panic!("{problems:?} in {seed}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_templates_parse_or_yield_located_problems(document in mutated_template()) {
        check_template(&document);
    }

    #[test]
    fn arbitrary_json_templates_parse_or_yield_located_problems(document in any_json()) {
        check_template(&document);
    }

    #[test]
    fn template_text_never_panics(text in "(.|\n){0,200}") {
        if let Err(problems) = Template::parse_text(&text) {
            prop_assert!(!problems.is_empty());
        }
    }

    #[test]
    fn request_bodies_parse_or_yield_located_problems(body in any_json(), template in mutated_template()) {
        let located = |result: Result<(), Problems>| {
            if let Err(problems) = result {
                assert_located(&body, &problems);
            }
        };
        located(CreateDeploymentRequest::parse(&body).map(drop));
        located(UpdateDeploymentRequest::parse(&body, "fuzzed").map(drop));
        located(ConfigureRequest::parse(&body).map(drop));
        located(CleanupRequest::parse(&body).map(drop));
        if let Ok(template) = Template::parse(&template, "", Some("fuzzed")) {
            located(ScaleRequest::parse(&body, &template).map(drop));
        }
    }
}

/// A template with `n` items in one of its lists or maps.
fn with_items(what: &str, n: usize) -> Value {
    let names = |prefix: &str| (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
    let mut document = seeds().swap_remove(3);
    let web = "/vm_config/web";
    let (at, items): (&str, Value) = match what {
        "groups" => (
            "/vm_config",
            names("g")
                .into_iter()
                .map(|g| (g, document.pointer(web).unwrap().clone()))
                .collect::<Map<_, _>>()
                .into(),
        ),
        "subnets" => (
            "/network_config/subnets",
            names("s")
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s, json!(format!("10.{}.{}.0/24", i / 256 % 256, i % 256))))
                .collect::<Map<_, _>>()
                .into(),
        ),
        "security group names" => ("/vm_config/web/security_groups", json!(names("sg"))),
        "metadata" => (
            "/vm_config/web/metadata",
            names("k")
                .into_iter()
                .map(|k| (k, json!("v")))
                .collect::<Map<_, _>>()
                .into(),
        ),
        "rules" => (
            "/security_groups/web/rules",
            json!(vec![
                json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"});
                n
            ]),
        ),
        "parameters" => {
            let parameters: Map<_, _> = names("web_count_").into_iter().map(|p| (p, json!(2))).collect();
            return json!({"name": "linear", "template": document, "parameters": parameters});
        }
        "dns servers" => (
            "/network_config/subnets/web/dns_nameservers",
            json!(vec!["10.0.0.2"; n]),
        ),
        "volumes" => ("/vm_config/web/volumes", json!(vec![json!({"size_gb": 1}); n])),
        _ => ("/unknown", json!(null)),
    };
    if at == "/unknown" {
        let map = document.as_object_mut().unwrap();
        map.extend(names("unknown_field_").into_iter().map(|k| (k, json!(1))));
    } else {
        *document.pointer_mut(at).unwrap_or_else(|| panic!("{at}")) = items;
    }
    document
}

/// Reading time grows linearly with the input, accepted or refused: eight times the items
/// take far less than the 64 times a quadratic reader would. Each figure is the fastest of
/// five runs, so that other tests on the same cores do not count, with slack for timer
/// noise on tiny inputs.
#[test]
fn reading_time_grows_linearly_with_every_list() {
    use std::time::{Duration, Instant};
    let time = |document: &Value| {
        (0..5)
            .map(|_| {
                let started = Instant::now();
                match document.get("template") {
                    Some(_) => drop(std::hint::black_box(CreateDeploymentRequest::parse(document))),
                    None => drop(std::hint::black_box(Template::parse(document, "", None))),
                }
                started.elapsed()
            })
            .min()
            .expect("five runs")
    };
    for what in [
        "groups",
        "subnets",
        "security group names",
        "metadata",
        "rules",
        "parameters",
        "dns servers",
        "volumes",
        "unknown fields",
    ] {
        let (small, large) = (time(&with_items(what, 1_000)), time(&with_items(what, 8_000)));
        assert!(
            large < small * 24 + Duration::from_millis(10),
            "{what}: 1,000 items take {small:?}, 8,000 take {large:?}"
        );
    }
}
