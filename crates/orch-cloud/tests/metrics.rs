//! Every cloud call is counted and timed under the names operators alert on.

use fakecloud::{FakeCloud, FakeConfig};
use metrics_exporter_prometheus::PrometheusBuilder;
use orch_cloud::{ClientLimits, CloudConfig, OpenStack};

#[tokio::test]
async fn calls_are_counted_by_service_method_and_status() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();
    let cloud = FakeCloud::start("127.0.0.1:0".parse().unwrap(), FakeConfig::default())
        .await
        .unwrap();
    let mut config = CloudConfig::password(&cloud.auth_url(), "admin", "fakecloud", "admin").unwrap();
    config.limits = ClientLimits {
        requests_per_second: 0.0,
        ..ClientLimits::default()
    };
    let client = OpenStack::new(config).unwrap();
    client.list_flavors().await.unwrap();
    assert!(client.get_server("missing").await.unwrap_err().is_not_found());
    let text = handle.render();
    for expected in [
        r#"openstack_api_calls_total{service="identity",method="POST",status="201"} 1"#,
        r#"openstack_api_calls_total{service="compute",method="GET",status="200"} 1"#,
        r#"openstack_api_calls_total{service="compute",method="GET",status="404"} 1"#,
        r#"openstack_api_call_duration_seconds{service="compute",quantile="0.5"}"#,
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    let circuit = circuit_state(&cloud, &handle).await;
    assert_eq!(
        circuit,
        (Some(1.0), Some(0.0)),
        "open during the outage, closed after it"
    );
}

/// `openstack_circuit_open` of the compute endpoint while an outage has opened its circuit,
/// and once a probe after the outage has closed it.
async fn circuit_state(
    cloud: &FakeCloud,
    handle: &metrics_exporter_prometheus::PrometheusHandle,
) -> (Option<f64>, Option<f64>) {
    let limits = ClientLimits {
        requests_per_second: 0.0,
        max_retries: 0,
        breaker_threshold: 1,
        breaker_cooldown: std::time::Duration::from_millis(300),
        max_retry_after: std::time::Duration::from_millis(50),
        ..ClientLimits::default()
    };
    let mut config = CloudConfig::password(&cloud.auth_url(), "admin", "fakecloud", "admin").unwrap();
    config.limits = limits;
    let client = OpenStack::new(config).unwrap();
    let gauge = || {
        let text = handle.render();
        text.lines()
            .find(|line| line.starts_with("openstack_circuit_open{") && line.contains("compute@"))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    };
    let outage = reqwest::Client::new()
        .post(format!("{}/_fake/outage", cloud.url))
        .json(&serde_json::json!({"service": "compute", "duration_ms": 500}))
        .send()
        .await
        .unwrap();
    assert!(outage.status().is_success());
    assert!(client.list_flavors().await.is_err());
    let open = gauge();
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    client.list_flavors().await.unwrap();
    (open, gauge())
}
