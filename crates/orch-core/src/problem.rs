//! Validation problems: every rule a request breaks, each with the JSON pointer of the value
//! that breaks it, so a client can show all of them at once instead of one per round trip.

use serde::Serialize;
use utoipa::ToSchema;

/// One broken rule, located by an RFC 6901 JSON pointer into the request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// JSON pointer to the offending value, e.g. `/template/vm_config/web/count`.
    pub pointer: String,
    /// What is wrong, in one sentence.
    pub detail: String,
}

/// Every problem found in one input; never empty when returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{} validation problem(s), first: {}", .0.len(), .0.first().map(|p| format!("{}: {}", p.pointer, p.detail)).unwrap_or_default())]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, pointer: impl Into<String>, detail: impl Into<String>) {
        self.0.push(Problem {
            pointer: pointer.into(),
            detail: detail.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Returns `Ok(value)` when no problem was recorded, else the problems.
    pub fn into_result<T>(self, value: T) -> Result<T, Problems> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// Moves every problem of `other` into `self`.
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    pub fn single(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut problems = Problems::default();
        problems.push(pointer, detail);
        problems
    }
}

/// Appends one reference token to a JSON pointer, escaping `~` and `/` as RFC 6901 requires.
pub fn child(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", token.replace('~', "~0").replace('/', "~1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_escapes_reserved_characters() {
        assert_eq!(child("", "a/b~c"), "/a~1b~0c");
        assert_eq!(child("/x", "y"), "/x/y");
    }

    #[test]
    fn into_result_reports_problems() {
        assert_eq!(Problems::default().into_result(3), Ok(3));
        let problems = Problems::single("/name", "must not be empty");
        assert_eq!(problems.clone().into_result(3), Err(problems));
    }
}
