//! What every operation may answer besides its own statuses, added to the OpenAPI document
//! in one place so that no operation forgets one: 400 for a malformed path, query or body;
//! 401, 403 and 429 behind the key check; 404 where the path names a record; 413, 415 and
//! 422 where there is a body; 422 where there is a query. Each is a problem+json document.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::Modify;

pub(super) struct StandardErrors;

/// The pattern of deployment and template names (`orch_core::names::check_name`).
pub(super) const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";

/// A template given by a stored template's name or id, or inline.
pub(super) fn template_reference() -> Schema {
    let by_name = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(NAME_PATTERN))
        .description(Some("A stored template's name or id"));
    OneOfBuilder::new()
        .item(by_name)
        .item(Ref::from_schema_name("Template"))
        .into()
}

fn problem(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ProblemDocument")))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", content)
        .build()
        .into()
}

fn add_errors(path: &str, operation: &mut Operation) {
    let protected = operation.security.as_ref().is_some_and(|security| !security.is_empty());
    let has_body = operation.request_body.is_some();
    let has_query =
        (operation.parameters.iter().flatten()).any(|parameter| parameter.parameter_in == ParameterIn::Query);
    let mut errors = vec![(
        "400",
        "The path, query string or body is malformed (a body that is not JSON)",
    )];
    if protected {
        errors.extend([
            ("401", "No API key, an unknown one, or one that has expired"),
            (
                "403",
                "The key's scope does not allow this, or the client's address is not allowed",
            ),
            (
                "429",
                "Too many requests for this key, or too many failed authentications from this address",
            ),
        ]);
    }
    if path.contains('{') {
        errors.push(("404", "Nothing has this id or name"));
    }
    if has_body {
        errors.extend([
            ("413", "The body is larger than MAX_BODY_BYTES"),
            (
                "415",
                "The body is not sent as application/json (or YAML where documented)",
            ),
            ("422", "The body is invalid: every problem, each with a JSON pointer"),
        ]);
    }
    if has_query {
        errors.push((
            "422",
            "The query string is invalid: every problem, each naming its parameter",
        ));
    }
    for (status, description) in errors {
        (operation.responses.responses)
            .entry(status.to_owned())
            .or_insert_with(|| problem(description));
    }
}

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                add_errors(path, operation);
            }
        }
    }
}
