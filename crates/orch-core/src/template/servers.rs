//! Reading server groups: flavor, image, count and its bounds, subnet, security groups, key
//! pair, user data, metadata and volumes.

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::problem::{child, Problems};
use crate::reader::{self, Object};

pub(super) fn read_groups(value: &Value, pointer: &str, problems: &mut Problems) -> Option<BTreeMap<String, VmGroup>> {
    read_named(value, pointer, problems, Some("server group"), read_group)
}

pub(super) fn read_group(value: &Value, pointer: &str, problems: &mut Problems) -> Option<VmGroup> {
    let mut object = Object::new(value, pointer, problems)?;
    let text_field = |object: &mut Object, key: &'static str, problems: &mut Problems| {
        object
            .optional(key)
            .and_then(|value| reader::text(value, &object.pointer_to(key), MAX_REF_LEN, problems))
    };
    let flavor = object
        .required("flavor", problems)
        .and_then(|value| reader::text(value, &object.pointer_to("flavor"), MAX_REF_LEN, problems));
    let image = object
        .required("image", problems)
        .and_then(|value| reader::text(value, &object.pointer_to("image"), MAX_REF_LEN, problems));
    let count = object
        .required("count", problems)
        .and_then(|value| reader::integer(value, &object.pointer_to("count"), 0, MAX_GROUP_COUNT.into(), problems));
    let min_count = match object.optional("min_count") {
        Some(value) => reader::integer(
            value,
            &object.pointer_to("min_count"),
            0,
            MAX_GROUP_COUNT.into(),
            problems,
        ),
        None => Some(0),
    };
    let max_count = object.optional("max_count").map(|value| {
        reader::integer(
            value,
            &object.pointer_to("max_count"),
            0,
            MAX_GROUP_COUNT.into(),
            problems,
        )
    });
    let subnet = object.optional("subnet").and_then(|value| {
        let pointer = object.pointer_to("subnet");
        reader::string(value, &pointer, problems)
            .filter(|name| read_key(name, &pointer, problems))
            .map(str::to_owned)
    });
    let security_groups = match object.optional("security_groups") {
        Some(value) => read_names(value, &object.pointer_to("security_groups"), problems),
        None => Some(Vec::new()),
    };
    let volumes = match object.optional("volumes") {
        Some(value) => read_volumes(value, &object.pointer_to("volumes"), problems),
        None => Some(Vec::new()),
    };
    let key_pair = text_field(&mut object, "key_pair", problems);
    let user_data = object
        .optional("user_data")
        .and_then(|value| read_user_data(value, &object.pointer_to("user_data"), problems));
    let metadata = match object.optional("metadata") {
        Some(value) => read_metadata(value, &object.pointer_to("metadata"), problems),
        None => Some(BTreeMap::new()),
    };
    object.finish(problems);
    Some(VmGroup {
        flavor: flavor?,
        image: image?,
        count: count?,
        min_count: min_count?,
        max_count: max_count.map(|max| max.ok_or(())).transpose().ok()?,
        subnet,
        security_groups: security_groups?,
        volumes: volumes?,
        key_pair,
        user_data,
        metadata: metadata?,
    })
}

/// Cloud-init data: free text within its size, with nothing in it that hides what it says.
fn read_user_data(value: &Value, pointer: &str, problems: &mut Problems) -> Option<String> {
    let data = reader::string(value, pointer, problems)?;
    if data.len() > MAX_USER_DATA_BYTES {
        problems.push(pointer, format!("must be at most {MAX_USER_DATA_BYTES} bytes"));
        return None;
    }
    if let Some(c) = reader::hidden_character(data, true) {
        let code = u32::from(c);
        problems.push(
            pointer,
            format!("holds the character U+{code:04X}, which hides what the text says"),
        );
        return None;
    }
    Some(data.to_owned())
}

pub(super) fn read_names(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<String>> {
    let items = reader::array(value, pointer, problems)?;
    if !reader::at_most(items.len(), MAX_GROUPS_PER_SERVER, pointer, problems) {
        return None;
    }
    let mut names = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (index, item) in items.iter().enumerate() {
        let item_pointer = child(pointer, &index.to_string());
        if let Some(name) = reader::string(item, &item_pointer, problems) {
            if !seen.insert(name) {
                problems.push(item_pointer, format!("'{name}' is listed twice"));
            } else if read_key(name, &item_pointer, problems) {
                names.push(name.to_owned());
            }
        }
    }
    Some(names)
}

pub(super) fn read_volumes(value: &Value, pointer: &str, problems: &mut Problems) -> Option<Vec<VolumeSpec>> {
    let items = reader::array(value, pointer, problems)?;
    if items.len() > MAX_VOLUMES_PER_SERVER {
        problems.push(pointer, format!("must list at most {MAX_VOLUMES_PER_SERVER} volumes"));
    }
    let mut volumes = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_pointer = child(pointer, &index.to_string());
        let Some(mut object) = Object::new(item, &item_pointer, problems) else {
            continue;
        };
        let size_gb = object
            .required("size_gb", problems)
            .and_then(|value| reader::integer(value, &object.pointer_to("size_gb"), 1, MAX_VOLUME_GB, problems));
        let volume_type = object
            .optional("volume_type")
            .and_then(|value| reader::text(value, &object.pointer_to("volume_type"), MAX_REF_LEN, problems));
        object.finish(problems);
        if let Some(size_gb) = size_gb {
            volumes.push(VolumeSpec { size_gb, volume_type });
        }
    }
    Some(volumes)
}

pub(super) fn read_metadata(value: &Value, pointer: &str, problems: &mut Problems) -> Option<BTreeMap<String, String>> {
    let map = reader::object(value, pointer, problems)?;
    if !reader::at_most(map.len(), MAX_METADATA_ITEMS, pointer, problems) {
        return None;
    }
    let mut metadata = BTreeMap::new();
    for (key, value) in map {
        let item_pointer = child(pointer, key);
        if key.is_empty() || key.len() > 255 {
            problems.push(&item_pointer, "keys must be 1 to 255 characters");
        } else if reader::hidden_character(key, false).is_some() {
            problems.push(
                &item_pointer,
                "keys may not hold control or bidirectional-override characters",
            );
        } else if key.starts_with("orch_") {
            problems.push(&item_pointer, "keys starting with 'orch_' are reserved for orch");
        } else if let Some(text) = reader::string(value, &item_pointer, problems) {
            if text.len() > 255 {
                problems.push(&item_pointer, "values must be at most 255 characters");
            } else if reader::hidden_character(text, false).is_some() {
                problems.push(
                    &item_pointer,
                    "values may not hold control or bidirectional-override characters",
                );
            } else {
                metadata.insert(key.clone(), text.to_owned());
            }
        }
    }
    Some(metadata)
}
