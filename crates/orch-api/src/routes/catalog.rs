//! `/catalog`: the services a template can name with `catalog:`.

use axum::Json;
use orch_core::catalog::{installed, CatalogEntry};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ProblemDocument};
use crate::request::Path;

/// An entry in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogSummary {
    pub name: String,
    pub description: String,
    pub class: String,
    pub image: String,
    /// The named ports.
    pub ports: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CatalogList {
    pub items: Vec<CatalogSummary>,
    pub total: usize,
}

impl From<&CatalogEntry> for CatalogSummary {
    fn from(entry: &CatalogEntry) -> Self {
        Self {
            name: entry.name.clone(),
            description: entry.description.clone(),
            class: entry.service.class.as_str().to_owned(),
            image: entry.service.image.clone(),
            ports: entry.service.ports.iter().map(|port| port.name.clone()).collect(),
            requires: entry.requires.clone(),
        }
    }
}

#[utoipa::path(get, path = "/catalog", tag = "catalog",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = CatalogList)))]
pub async fn list() -> Json<CatalogList> {
    let entries = &installed().entries;
    Json(CatalogList {
        items: entries.values().map(CatalogSummary::from).collect(),
        total: entries.len(),
    })
}

#[utoipa::path(get, path = "/catalog/{name}", tag = "catalog",
    params(("name" = String, Path, description = "Entry name")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, body = CatalogEntry),
              (status = 404, body = ProblemDocument, content_type = "application/problem+json")))]
pub async fn get(Path(name): Path<String>) -> ApiResult<Json<CatalogEntry>> {
    installed()
        .get(&name)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("catalog entry '{name}'")))
}
