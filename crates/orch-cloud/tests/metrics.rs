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
}
