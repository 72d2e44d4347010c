//! A deployment's secrets: made when it is created (generated, or supplied in the body),
//! added when an update declares new ones, and a generated one revealed once to a writer.

use std::collections::BTreeMap;

use axum::extract::State;

use crate::request::Path;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::Json;
use orch_core::template::payload::DEFAULT_SECRET_LENGTH;
use orch_core::{check_secret_values, Problems, Template};
use orch_store::secrets::{generate_value, NewSecret, SecretSource};
use secrecy::{ExposeSecret, SecretString};

use super::RequestActor;
use crate::error::{ApiResult, ProblemDocument};
use crate::views::RevealedSecret;
use crate::AppState;

/// The secrets of a new deployment: each supplied value, or one generated now.
pub(crate) fn for_create(template: &Template, supplied: &BTreeMap<String, SecretString>) -> ApiResult<Vec<NewSecret>> {
    let values = check_secret_values(template, supplied)?;
    Ok(values
        .into_iter()
        .map(|(name, value)| match value {
            Some(value) => NewSecret {
                name,
                source: SecretSource::Supplied,
                value,
            },
            None => generated(template, name),
        })
        .collect())
}

/// The secrets an updated template declares that the deployment lacks: generated now; a
/// supplied one cannot be given by an update.
pub(crate) async fn for_update(state: &AppState, id: &str, template: &Template) -> ApiResult<Vec<NewSecret>> {
    let known = state.store.secrets_of(id).await?;
    let mut problems = Problems::default();
    let mut secrets = Vec::new();
    for (name, spec) in &template.secrets {
        if known.iter().any(|info| &info.name == name) {
            continue;
        }
        if spec.supplied {
            problems.push(
                format!("/template/secrets/{name}"),
                "a supplied secret is given when the deployment is created, not by an update",
            );
        } else {
            secrets.push(generated(template, name.clone()));
        }
    }
    Ok(problems.into_result(secrets)?)
}

fn generated(template: &Template, name: String) -> NewSecret {
    let length = template.secrets[&name].length.unwrap_or(DEFAULT_SECRET_LENGTH);
    NewSecret {
        name,
        source: SecretSource::Generated,
        value: generate_value(length),
    }
}

#[utoipa::path(post, path = "/deployments/{id}/secrets/{name}/reveal", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"), ("name" = String, Path, description = "Secret name")),
    security(("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The generated value, this once; the event `secret.revealed` records who asked", body = RevealedSecret),
        (status = 403, description = "A read-only key", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Revealed already, or supplied by the caller", body = ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn reveal(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    RequestActor(actor): RequestActor,
) -> ApiResult<(HeaderMap, Json<RevealedSecret>)> {
    super::deployments::live_deployment(&state.store, &id).await?;
    let value = state.store.reveal_secret(&id, &name, &actor).await?;
    tracing::info!(deployment_id = %id, secret = %name, "secret revealed");
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let revealed = RevealedSecret {
        name,
        value: value.expose_secret().to_owned(),
    };
    Ok((headers, Json(revealed)))
}
