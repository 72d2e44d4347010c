//! `spawn_app()`: the real server on port 0 with a fresh database of its own (a temporary
//! SQLite file, or a new PostgreSQL database when `TEST_DATABASE_URL` names a server), spoken
//! to over HTTP.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use orch_api::{ApiConfig, ApiKeys, AppState};
use orch_store::{Store, StoreOptions};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use tokio::sync::oneshot;

pub const WRITE_KEY: &str = "test-writer-key-000001";
pub const READ_KEY: &str = "test-reader-key-000001";
/// The key the test store seals secrets with.
pub const SECRET_KEY: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

/// Which database a test runs on.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite,
    Postgres(String),
}

impl Db {
    /// The PostgreSQL server from `TEST_DATABASE_URL`, else the local one on 127.0.0.1:5432
    /// when it answers. Without either, the PostgreSQL variant fails and says so: a test that
    /// passes without running would hide that half of the suite never ran.
    pub fn postgres() -> Self {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            if !url.is_empty() {
                return Self::Postgres(url);
            }
        }
        let local = "127.0.0.1:5432".parse().expect("an address");
        if std::net::TcpStream::connect_timeout(&local, std::time::Duration::from_secs(1)).is_ok() {
            return Self::Postgres("postgres://postgres@127.0.0.1:5432/postgres".into());
        }
        panic!(
            "no PostgreSQL for the PostgreSQL variant of this test: set TEST_DATABASE_URL, start one on \
             127.0.0.1:5432, or run ./scripts/test.sh, which starts one"
        );
    }

    /// A fresh, empty database URL for one test.
    async fn fresh_url(&self) -> String {
        let name = format!("orch_test_{}", uuid::Uuid::new_v4().simple());
        match self {
            Self::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                format!("sqlite://{}/orch.db", dir.display())
            }
            Self::Postgres(admin_url) => {
                let mut admin = sqlx::PgConnection::connect(admin_url)
                    .await
                    .expect("the test PostgreSQL (TEST_DATABASE_URL, or 127.0.0.1:5432) must accept connections");
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create test database");
                let (base, query) = admin_url
                    .split_once('?')
                    .map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
                let (server, _) = base.rsplit_once('/').expect("TEST_DATABASE_URL has a database path");
                match query {
                    Some(query) => format!("{server}/{name}?{query}"),
                    None => format!("{server}/{name}"),
                }
            }
        }
    }
}

/// Runs one async test body on SQLite and, when configured, on PostgreSQL.
#[macro_export]
macro_rules! db_test {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::harness::Db::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::harness::Db::postgres()).await;
            }
        }
    };
}

pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub store: Store,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub fn test_config() -> ApiConfig {
    let mut config = ApiConfig::with_keys(ApiKeys::parse(&format!("{WRITE_KEY}:write,{READ_KEY}:read")).unwrap());
    config.rate_limit_per_minute = NonZeroU32::new(100_000).unwrap();
    config
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

pub async fn spawn_app_with(db: Db, configure: impl FnOnce(&mut ApiConfig)) -> TestApp {
    spawn_app_customized(db, configure, |_| {}).await
}

/// Like `spawn_app_with`, and lets the test change the state (region check, readiness checks).
pub async fn spawn_app_customized(
    db: Db,
    configure: impl FnOnce(&mut ApiConfig),
    customize: impl FnOnce(&mut AppState),
) -> TestApp {
    let url = db.fresh_url().await;
    let keys = orch_store::secrets::SecretKeys::parse(SECRET_KEY, &[]).unwrap();
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .expect("connect the test database")
        .with_secret_keys(Some(std::sync::Arc::new(keys)));
    let mut config = test_config();
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, signal) = oneshot::channel::<()>();
    let mut state = AppState::new(store.clone(), config);
    customize(&mut state);
    let server = tokio::spawn(orch_api::serve(listener, state, async move {
        let _ = signal.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        store,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// A request with the write key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-API-Key", WRITE_KEY)
    }

    /// `/metrics` as Prometheus text.
    pub async fn metrics_text(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    pub async fn send_json(&self, method: Method, path: &str, body: &Value) -> Response {
        self.request(method, path).json(body).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.send_json(Method::POST, path, body).await
    }

    /// Creates the seed's `web-app-stack` template.
    pub async fn create_seed_template(&self) -> Value {
        let response = self.post("/templates", &web_app_stack()).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    /// Creates a deployment of `web-app-stack` and returns its id.
    pub async fn create_deployment(&self, name: &str) -> String {
        let response = self
            .post(
                "/deployments",
                &json!({"name": name, "template": "web-app-stack", "cloud_region": "RegionOne"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{:?}", response.text().await);
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Plays the workflow layer: claims the deployment's pending operation and finishes it.
    pub async fn complete_pending_operation(&self, deployment_id: &str, status: orch_core::DeploymentStatus) {
        let operation = self
            .store
            .operation_in_flight(deployment_id)
            .await
            .unwrap()
            .expect("an operation is pending");
        self.store
            .claim_operation(&operation.id)
            .await
            .unwrap()
            .expect("claimable");
        self.store
            .finish_operation(&operation.id, true, status, None)
            .await
            .unwrap();
    }

    /// Stops the server the way SIGTERM does.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub fn web_app_stack() -> Value {
    json!({
      "name": "web-app-stack",
      "description": "3-tier web application",
      "vm_config": {
        "web": {"flavor": "m1.small", "image": "ubuntu-22.04", "count": 2},
        "app": {"flavor": "m1.medium", "image": "ubuntu-22.04", "count": 3},
        "db": {"flavor": "m1.large", "image": "ubuntu-22.04", "count": 1}
      },
      "network_config": {
        "cidr": "10.0.0.0/16",
        "subnets": {"web": "10.0.1.0/24", "app": "10.0.2.0/24", "db": "10.0.3.0/24"}
      }
    })
}

/// Asserts an RFC 9457 problem response with `status` and returns its body.
pub async fn expect_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].as_str().unwrap().starts_with("urn:orch:problem:"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// The JSON pointers of a 422 body.
pub fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["pointer"].as_str().unwrap().to_owned())
        .collect()
}
