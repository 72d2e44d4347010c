//! The HTTP side of the CLI: the key, the requests, problem+json answers turned into errors
//! that list every problem, and deployments found by id or name.

use anyhow::{anyhow, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::Connection;

pub(super) struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    pub(super) fn new(connection: &Connection) -> anyhow::Result<Self> {
        let key = match &connection.api_key {
            Some(key) => key.clone(),
            None => std::fs::read_to_string("data/dev-api-key")
                .map(|key| key.trim().to_owned())
                .map_err(|_| anyhow!("no API key: set ORCH_API_KEY or --api-key"))?,
        };
        // The key goes to ORCH_URL alone: a redirect elsewhere is not followed.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            url: connection.url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// Sends a request; a problem+json answer becomes an error listing every problem.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("X-API-Key", &self.key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach orch at {}", self.url))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok((status, value));
        }
        let mut message = value["detail"]
            .as_str()
            .unwrap_or(status.canonical_reason().unwrap_or("error"))
            .to_owned();
        for problem in value["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(value["parameters"].as_array().into_iter().flatten())
        {
            let at = problem["pointer"]
                .as_str()
                .or(problem["parameter"].as_str())
                .unwrap_or("");
            message.push_str(&format!("\n  {at}: {}", problem["detail"].as_str().unwrap_or("")));
        }
        Err(anyhow!("{} {message}", status.as_u16()))
    }

    pub(super) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call(Method::GET, path, None).await?.1)
    }

    /// A deployment's id from an id or a name.
    pub(super) async fn resolve(&self, reference: &str) -> anyhow::Result<String> {
        match self.call(Method::GET, &format!("/deployments/{reference}"), None).await {
            Ok((_, deployment)) => Ok(deployment["id"].as_str().unwrap_or(reference).to_owned()),
            Err(error) if error.to_string().starts_with("404") => {
                let found = self.get(&format!("/deployments?name={}", urlencode(reference))).await?;
                found["items"][0]["id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("no deployment has the id or name '{reference}'"))
            }
            Err(error) => Err(error),
        }
    }
}

pub(super) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
