//! Deployment parameters: per-group overrides of a template, `<group>_count`,
//! `<group>_flavor` and `<group>_image`, and per-service ones, `<service>_instances` and
//! `<service>_image`. Anything else is rejected, so a typo cannot silently deploy the
//! template's defaults.

use serde_json::{Map, Value};

use crate::problem::{child, Problems};
use crate::reader;
use crate::template::services::{check_instance_bounds, MAX_INSTANCES, MAX_VALUE_LEN};
use crate::template::{check_group_bounds, Template, MAX_GROUP_COUNT, MAX_REF_LEN};

/// The override a parameter name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Count,
    Flavor,
    Image,
}

const SUFFIXES: [(&str, Field); 3] = [
    ("_count", Field::Count),
    ("_flavor", Field::Flavor),
    ("_image", Field::Image),
];

/// Applies `parameters` (the JSON object at `pointer`, usually `/parameters`) to `template`
/// and returns the effective template, or every problem found. A count that breaks a
/// group's bounds points at the parameter that set it.
pub fn apply_parameters(template: &Template, parameters: &Value, pointer: &str) -> Result<Template, Problems> {
    let mut problems = Problems::default();
    let empty = Map::new();
    let map = match parameters {
        Value::Null => &empty,
        other => match reader::object(other, pointer, &mut problems) {
            Some(map) => map,
            None => return Err(problems),
        },
    };
    let mut effective = template.clone();
    let mut count_set_by = Vec::new();
    for (key, value) in map {
        let key_pointer = child(pointer, key);
        if apply_service_parameter(&mut effective, key, value, &key_pointer, &mut problems) {
            continue;
        }
        let Some((group_name, field)) = split(key, template) else {
            problems.push(key_pointer, unknown_parameter_message(key, template));
            continue;
        };
        let group = effective
            .vm_config
            .get_mut(group_name)
            .expect("split only returns known groups");
        match field {
            Field::Count => {
                if let Some(count) = reader::integer(value, &key_pointer, 0, MAX_GROUP_COUNT.into(), &mut problems) {
                    group.count = count;
                    count_set_by.push((group_name.to_owned(), key_pointer));
                }
            }
            Field::Flavor => {
                if let Some(flavor) = reader::text(value, &key_pointer, MAX_REF_LEN, &mut problems) {
                    group.flavor = flavor;
                }
            }
            Field::Image => {
                if let Some(image) = reader::text(value, &key_pointer, MAX_REF_LEN, &mut problems) {
                    group.image = image;
                }
            }
        }
    }
    if problems.is_empty() {
        check_group_bounds(
            &effective,
            "/template",
            |group| {
                count_set_by
                    .iter()
                    .find(|(name, _)| name == group)
                    .map(|(_, pointer)| pointer.clone())
                    .unwrap_or_else(|| format!("/template/vm_config/{group}/count"))
            },
            &mut problems,
        );
        for (name, service) in &effective.services {
            check_instance_bounds(service, &format!("/template/services/{name}"), &mut problems);
        }
    }
    problems.into_result(effective)
}

/// `<service>_instances` or `<service>_image`; false when `key` names no service.
fn apply_service_parameter(
    template: &mut Template,
    key: &str,
    value: &Value,
    pointer: &str,
    problems: &mut Problems,
) -> bool {
    if let Some(service) = key
        .strip_suffix("_instances")
        .and_then(|name| template.services.get_mut(name))
    {
        if let Some(count) = reader::integer(value, pointer, 0, MAX_INSTANCES.into(), problems) {
            service.instances = count;
        }
        return true;
    }
    let is_group = |name: &str| template.vm_config.contains_key(name);
    let service_image = key.strip_suffix("_image").filter(|name| !is_group(name));
    if let Some(service) = service_image.and_then(|name| template.services.get_mut(name)) {
        if let Some(image) = reader::text(value, pointer, MAX_VALUE_LEN, problems) {
            service.image = image;
        }
        return true;
    }
    false
}

/// Splits `web_count` into (`web`, Count) when `web` is a group of the template.
fn split<'a>(key: &'a str, template: &Template) -> Option<(&'a str, Field)> {
    SUFFIXES.iter().find_map(|(suffix, field)| {
        let group = key.strip_suffix(suffix)?;
        template.vm_config.contains_key(group).then_some((group, *field))
    })
}

fn unknown_parameter_message(key: &str, template: &Template) -> String {
    let groups: Vec<&str> = template.vm_config.keys().map(String::as_str).collect();
    let services: Vec<&str> = template.services.keys().map(String::as_str).collect();
    format!(
        "unknown parameter '{key}'; parameters are <group>_count, <group>_flavor and <group>_image for the groups [{}], <service>_instances and <service>_image for the services [{}]",
        groups.join(", "),
        services.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> Template {
        let value = json!({
          "name": "t",
          "vm_config": {
            "web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 2, "min_count": 1},
            "web_api": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 1}
          },
          "network_config": {"cidr": "10.0.0.0/16", "subnets": {"web": "10.0.1.0/24", "web_api": "10.0.2.0/24"}}
        });
        Template::parse(&value, "", None).unwrap()
    }

    #[test]
    fn overrides_apply_per_group() {
        let params = json!({"web_count": 5, "web_api_flavor": "m1.large", "web_image": "cirros"});
        let effective = apply_parameters(&template(), &params, "/parameters").unwrap();
        assert_eq!(effective.vm_config["web"].count, 5);
        assert_eq!(effective.vm_config["web"].image, "cirros");
        assert_eq!(effective.vm_config["web_api"].flavor, "m1.large");
        assert_eq!(effective.vm_config["web_api"].count, 1);
    }

    #[test]
    fn null_parameters_mean_none() {
        assert_eq!(
            apply_parameters(&template(), &Value::Null, "/parameters").unwrap(),
            template()
        );
    }

    #[test]
    fn unknown_and_mistyped_parameters_are_all_reported() {
        let params = json!({"web_cnt": 5, "db_count": 1, "web_count": "5", "web_flavor": 3});
        let problems = apply_parameters(&template(), &params, "/parameters").unwrap_err();
        let mut pointers: Vec<&str> = problems.0.iter().map(|p| p.pointer.as_str()).collect();
        pointers.sort();
        assert_eq!(
            pointers,
            [
                "/parameters/db_count",
                "/parameters/web_cnt",
                "/parameters/web_count",
                "/parameters/web_flavor"
            ]
        );
    }

    #[test]
    fn counts_below_min_count_point_at_the_parameter() {
        let problems = apply_parameters(&template(), &json!({"web_count": 0}), "/parameters").unwrap_err();
        assert_eq!(problems.0[0].pointer, "/parameters/web_count");
        assert!(problems.0[0].detail.contains("min_count"));
    }

    #[test]
    fn parameters_must_be_an_object() {
        let problems = apply_parameters(&template(), &json!([1]), "/parameters").unwrap_err();
        assert_eq!(problems.0[0].pointer, "/parameters");
    }
}
