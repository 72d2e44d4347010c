//! Keys and scopes, rate limits, body limits, CORS and the IP allowlist.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::harness::{expect_problem, spawn_app, spawn_app_with, Db, TestApp, READ_KEY, WRITE_KEY};

async fn auth_matrix(db: Db) {
    let app = spawn_app(db).await;
    let client = &app.client;
    let body = json!({"name": "t-1"});

    // No key, an unknown key, a malformed header: 401 with a challenge.
    for request in [
        client.get(app.url("/deployments")),
        client
            .get(app.url("/deployments"))
            .header("X-API-Key", "not-a-configured-key"),
        client
            .get(app.url("/deployments"))
            .header("Authorization", "Basic dGVzdA=="),
        client
            .get(app.url("/deployments"))
            .header("Authorization", format!("Bearer {WRITE_KEY}x")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        expect_problem(response, StatusCode::UNAUTHORIZED).await;
    }

    // Both headers work for both scopes on GET.
    for key in [READ_KEY, WRITE_KEY] {
        let by_header = client
            .get(app.url("/deployments"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(by_header.status(), StatusCode::OK);
        let by_bearer = client.get(app.url("/templates")).bearer_auth(key).send().await.unwrap();
        assert_eq!(by_bearer.status(), StatusCode::OK);
    }

    // A read key may not write, whatever the method; nothing is written.
    for (method, path) in [
        (Method::POST, "/deployments"),
        (Method::PUT, "/templates/x"),
        (Method::PATCH, "/deployments/x"),
        (Method::DELETE, "/deployments/x"),
        (Method::POST, "/deployments/x/scale"),
    ] {
        let response = client
            .request(method, app.url(path))
            .header("X-API-Key", READ_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_problem(response, StatusCode::FORBIDDEN).await;
    }
    let response = client
        .post(app.url("/templates"))
        .bearer_auth(READ_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::FORBIDDEN).await;
    let templates: serde_json::Value = app.get("/templates").await.json().await.unwrap();
    assert_eq!(templates["total"], 0);

    // The write key writes (here: a validation error, which is past authorization).
    let response = client
        .post(app.url("/templates"))
        .bearer_auth(WRITE_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Health and metrics are open by default.
    for path in ["/health", "/health/ready", "/metrics", "/openapi.json"] {
        assert_eq!(
            client.get(app.url(path)).send().await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
}
db_test!(auth_matrix_is_enforced, auth_matrix);

async fn metrics_behind_auth(db: Db) {
    let app = spawn_app_with(db, |config| config.metrics_require_auth = true).await;
    expect_problem(
        app.client.get(app.url("/metrics")).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let response = app
        .client
        .get(app.url("/metrics"))
        .header("X-API-Key", READ_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.client.get(app.url("/health")).send().await.unwrap().status(),
        StatusCode::OK
    );
}
db_test!(metrics_can_require_a_key, metrics_behind_auth);

async fn rate_limit(db: Db) {
    let app = spawn_app_with(db, |config| {
        config.rate_limit_per_minute = std::num::NonZeroU32::new(3).unwrap()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.get("/deployments").await.status(), StatusCode::OK);
    }
    let limited = app.get("/deployments").await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    expect_problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    // The limit is per key: the read key still has its own budget.
    let other = app
        .client
        .get(app.url("/deployments"))
        .header("X-API-Key", READ_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    // Open endpoints are not limited.
    assert_eq!(
        app.client.get(app.url("/health")).send().await.unwrap().status(),
        StatusCode::OK
    );
}
db_test!(rate_limit_answers_429_with_retry_after, rate_limit);

async fn guessing(db: Db) {
    let app = spawn_app(db).await;
    let guess = |key: String| {
        let request = app.client.get(app.url("/deployments")).header("X-API-Key", key);
        async move { request.send().await.unwrap() }
    };
    let limit = orch_api::AUTH_FAILURES_PER_MINUTE.get();
    for n in 0..limit {
        assert_eq!(
            guess(format!("wrong-key-{n:016}")).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let blocked = guess("wrong-key-once-more-0000".into()).await;
    assert!(blocked.headers().contains_key("retry-after"));
    expect_problem(blocked, StatusCode::TOO_MANY_REQUESTS).await;
    // Blocked means blocked: a right key from the address tells a guesser nothing either.
    expect_problem(guess(WRITE_KEY.into()).await, StatusCode::TOO_MANY_REQUESTS).await;
    // Open endpoints still answer.
    assert_eq!(
        app.client.get(app.url("/health")).send().await.unwrap().status(),
        StatusCode::OK
    );
}
db_test!(failed_authentications_are_limited_per_address, guessing);

async fn body_limit(db: Db) {
    let app = spawn_app_with(db, |config| config.max_body_bytes = 2048).await;
    let big = json!({"name": "big", "description": "x".repeat(4096), "vm_config": {}, "network_config": {}});
    let problem = expect_problem(app.post("/templates", &big).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(problem["detail"].as_str().unwrap().contains("2048"));
    let templates: serde_json::Value = app.get("/templates").await.json().await.unwrap();
    assert_eq!(templates["total"], 0);
    // Malformed JSON and foreign media types are refused clearly.
    let response = app
        .request(Method::POST, "/deployments")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::BAD_REQUEST).await;
    let response = app
        .request(Method::POST, "/deployments")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    // No Content-Type at all is not taken for JSON.
    let response = app
        .request(Method::POST, "/deployments")
        .body("{}")
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Content-Type header is missing"),
        "{problem}"
    );
}
db_test!(oversized_and_malformed_bodies_are_refused, body_limit);

async fn cors(db: Db) {
    let app = spawn_app_with(db, |config| {
        config.cors_origins = vec!["https://console.example.com".into()]
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/deployments"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "x-api-key,content-type")
            .send()
    };
    let allowed = preflight("https://console.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://console.example.com"
    );
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
}
db_test!(cors_allows_only_listed_origins, cors);

async fn ip_allowlist(db: Db) {
    let closed = spawn_app_with(db.clone(), |config| {
        config.ip_allowlist = vec!["10.0.0.0/8".parse().unwrap()]
    })
    .await;
    expect_problem(closed.get("/deployments").await, StatusCode::FORBIDDEN).await;
    expect_problem(
        closed.client.get(closed.url("/health")).send().await.unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    // A CORS preflight is no way around the list.
    let preflight = closed
        .client
        .request(Method::OPTIONS, closed.url("/deployments"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::FORBIDDEN);
    let open = spawn_app_with(db, |config| config.ip_allowlist = vec!["127.0.0.0/8".parse().unwrap()]).await;
    assert_eq!(open.get("/deployments").await.status(), StatusCode::OK);
}
db_test!(ip_allowlist_refuses_other_networks, ip_allowlist);

/// Reads until the server closes the connection, or `within` passes; the bytes read.
async fn until_closed(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    });
    read.await.ok().map(|()| answer)
}

async fn slow_clients(db: Db) {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(db, |config| {
        config.header_timeout = std::time::Duration::from_secs(1);
        config.request_timeout = std::time::Duration::from_secs(2);
        config.max_connections = 4;
    })
    .await;
    let address = app
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let connect = || tokio::net::TcpStream::connect(address.clone());
    // Headers that never end, and connections that say nothing, hold a slot for a second.
    let mut partial = connect().await.unwrap();
    partial.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(connect().await.unwrap());
    }
    let started = std::time::Instant::now();
    // Every slot is taken: a new client waits until one is freed, then is served.
    let waiting = {
        let (client, url) = (app.client.clone(), app.url("/health"));
        tokio::spawn(async move {
            let asked = std::time::Instant::now();
            let status = client.get(url).send().await.unwrap().status();
            (status, asked.elapsed())
        })
    };
    assert!(
        until_closed(&mut partial, std::time::Duration::from_secs(5))
            .await
            .is_some(),
        "partial headers are cut off"
    );
    for stream in &mut idle {
        assert!(
            until_closed(stream, std::time::Duration::from_secs(5)).await.is_some(),
            "an idle connection is closed"
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let (status, waited) = waiting.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        waited > std::time::Duration::from_millis(500),
        "it waited for a free slot: {waited:?}"
    );
    // A body that trickles in is answered 408 once the request's time is up.
    let mut trickle = connect().await.unwrap();
    let head = format!("POST /deployments HTTP/1.1\r\nHost: x\r\nX-API-Key: {WRITE_KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{");
    trickle.write_all(head.as_bytes()).await.unwrap();
    let answer = until_closed(&mut trickle, std::time::Duration::from_secs(6))
        .await
        .unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
db_test!(slow_and_idle_clients_are_cut_off, slow_clients);

async fn proxies(db: Db) {
    let behind = |forwarded: &'static str, app: &TestApp| {
        let request = app
            .request(Method::GET, "/deployments")
            .header("x-forwarded-for", forwarded);
        async move { request.send().await.unwrap().status() }
    };
    // The header names the client only when the peer (here 127.0.0.1) is a trusted proxy,
    // and only the address the proxy itself saw: what a client wrote in front counts not.
    let trusting = spawn_app_with(db.clone(), |config| {
        config.ip_allowlist = vec!["10.0.0.0/8".parse().unwrap()];
        config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    assert_eq!(behind("10.1.2.3", &trusting).await, StatusCode::OK);
    assert_eq!(behind("192.168.1.1", &trusting).await, StatusCode::FORBIDDEN);
    assert_eq!(
        behind("10.9.9.9, 192.168.1.1", &trusting).await,
        StatusCode::FORBIDDEN,
        "a forged hop in front"
    );
    let trusting_none = spawn_app_with(db, |config| config.ip_allowlist = vec!["10.0.0.0/8".parse().unwrap()]).await;
    assert_eq!(
        behind("10.1.2.3", &trusting_none).await,
        StatusCode::FORBIDDEN,
        "the header alone is not believed"
    );
}
db_test!(forwarded_addresses_count_only_from_trusted_proxies, proxies);
