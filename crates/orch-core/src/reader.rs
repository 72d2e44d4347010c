//! A strict reader over `serde_json::Value` that records every problem with its JSON pointer
//! and keeps going, so that one response can list all of them. Serde's derive stops at the
//! first error, which is why the input documents are read by hand.

use serde_json::{Map, Value};

use crate::problem::{child, Problems};

/// Reads the fields of one JSON object, remembering which keys were read so that any other
/// key can be reported as unknown (a typo must not be silently ignored).
pub(crate) struct Object<'a> {
    map: &'a Map<String, Value>,
    pointer: String,
    known: Vec<&'static str>,
}

impl<'a> Object<'a> {
    /// Returns `None` (and records a problem) when `value` is not an object.
    pub fn new(value: &'a Value, pointer: &str, problems: &mut Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self {
                map,
                pointer: pointer.to_owned(),
                known: Vec::new(),
            }),
            _ => {
                problems.push(pointer, format!("must be an object, not {}", kind(value)));
                None
            }
        }
    }

    pub fn pointer_to(&self, key: &str) -> String {
        child(&self.pointer, key)
    }

    /// An optional field; JSON `null` counts as absent.
    pub fn optional(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// Whether the object has a non-null `key` (without marking it read).
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|value| !value.is_null())
    }

    /// A required field; records "is required" when it is absent or null.
    pub fn required(&mut self, key: &'static str, problems: &mut Problems) -> Option<&'a Value> {
        let value = self.optional(key);
        if value.is_none() {
            problems.push(self.pointer_to(key), "is required");
        }
        value
    }

    /// Reports every key that was not read.
    pub fn finish(self, problems: &mut Problems) {
        for key in self.map.keys() {
            if !self.known.contains(&key.as_str()) {
                problems.push(
                    child(&self.pointer, key),
                    format!("unknown field; expected one of: {}", self.known.join(", ")),
                );
            }
        }
    }
}

/// The JSON type name of a value, for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn string<'a>(value: &'a Value, pointer: &str, problems: &mut Problems) -> Option<&'a str> {
    match value {
        Value::String(text) => Some(text),
        other => {
            problems.push(pointer, format!("must be a string, not {}", kind(other)));
            None
        }
    }
}

/// A non-empty string of at most `max_len` bytes without control characters.
pub(crate) fn text(value: &Value, pointer: &str, max_len: usize, problems: &mut Problems) -> Option<String> {
    let text = string(value, pointer, problems)?;
    if text.trim().is_empty() {
        problems.push(pointer, "must not be empty");
        None
    } else if text.len() > max_len {
        problems.push(pointer, format!("must be at most {max_len} bytes long"));
        None
    } else if text.chars().any(char::is_control) {
        problems.push(pointer, "must not contain control characters");
        None
    } else {
        Some(text.to_owned())
    }
}

pub(crate) fn boolean(value: &Value, pointer: &str, problems: &mut Problems) -> Option<bool> {
    match value {
        Value::Bool(flag) => Some(*flag),
        other => {
            problems.push(pointer, format!("must be a boolean, not {}", kind(other)));
            None
        }
    }
}

/// An integer in `min..=max`.
pub(crate) fn integer(value: &Value, pointer: &str, min: u64, max: u64, problems: &mut Problems) -> Option<u32> {
    match value.as_u64() {
        Some(number) if (min..=max).contains(&number) => u32::try_from(number).ok(),
        Some(_) => {
            problems.push(pointer, format!("must be between {min} and {max}"));
            None
        }
        None if value.as_i64().is_some() => {
            problems.push(pointer, format!("must be between {min} and {max}"));
            None
        }
        None => {
            problems.push(pointer, format!("must be an integer, not {}", describe_number(value)));
            None
        }
    }
}

fn describe_number(value: &Value) -> &'static str {
    if value.is_f64() {
        "a fraction"
    } else {
        kind(value)
    }
}

/// The most items any array or object of a request may hold, checked before any item is
/// read, so that no input makes validation slow; most lists have a lower limit of their own.
pub const MAX_ITEMS: usize = 10_000;

/// The first character of `text` that hides what it says: a control character (except
/// newline, carriage return and tab when `multiline`), or a bidirectional override or
/// isolate, which make text read differently from what it holds.
pub(crate) fn hidden_character(text: &str, multiline: bool) -> Option<char> {
    text.chars().find(|&c| {
        let allowed_space = multiline && matches!(c, '\n' | '\r' | '\t');
        (c.is_control() && !allowed_space)
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// Whether `len` items are within `max`; a problem at `pointer` otherwise.
pub(crate) fn at_most(len: usize, max: usize, pointer: &str, problems: &mut Problems) -> bool {
    if len > max {
        problems.push(pointer, format!("must hold at most {max} items, not {len}"));
        return false;
    }
    true
}

pub(crate) fn array<'a>(value: &'a Value, pointer: &str, problems: &mut Problems) -> Option<&'a [Value]> {
    match value {
        Value::Array(items) if !at_most(items.len(), MAX_ITEMS, pointer, problems) => None,
        Value::Array(items) => Some(items),
        other => {
            problems.push(pointer, format!("must be an array, not {}", kind(other)));
            None
        }
    }
}

pub(crate) fn object<'a>(value: &'a Value, pointer: &str, problems: &mut Problems) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) if !at_most(map.len(), MAX_ITEMS, pointer, problems) => None,
        Value::Object(map) => Some(map),
        other => {
            problems.push(pointer, format!("must be an object, not {}", kind(other)));
            None
        }
    }
}
