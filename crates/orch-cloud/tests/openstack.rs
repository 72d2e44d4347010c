//! The OpenStack client against fakecloud: every call it makes, and its behaviour under
//! injected faults (500s, 429s, outages, expired and revoked tokens, lost responses, quotas).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fakecloud::{FakeCloud, FakeConfig};
use orch_cloud::compute::{ServerCreate, ServerFilter};
use orch_cloud::error::Service;
use orch_cloud::network::{SecurityGroupRule, SubnetCreate};
use orch_cloud::{ClientLimits, CloudConfig, CloudError, OpenStack, ResourceKey};
use serde_json::{json, Value};

const UBUNTU: &str = "ubuntu-22.04";

async fn start(configure: impl FnOnce(&mut FakeConfig)) -> FakeCloud {
    let mut config = FakeConfig {
        boot_delay_ms: 200,
        delete_delay_ms: 100,
        volume_delay_ms: 100,
        ..FakeConfig::default()
    };
    configure(&mut config);
    FakeCloud::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap()
}

fn fast_limits() -> ClientLimits {
    ClientLimits {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        requests_per_second: 0.0,
        ..ClientLimits::default()
    }
}

fn client_for(cloud: &FakeCloud, limits: ClientLimits) -> OpenStack {
    let mut config = CloudConfig::password(&cloud.auth_url(), "admin", "fakecloud", "admin").unwrap();
    config.limits = limits;
    OpenStack::new(config).unwrap()
}

async fn admin(cloud: &FakeCloud, path: &str) -> Value {
    reqwest::get(format!("{}{path}", cloud.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn set_config(cloud: &FakeCloud, patch: Value) {
    let response = reqwest::Client::new()
        .put(format!("{}/_fake/config", cloud.url))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text().await);
}

/// Requests fakecloud answered with `status`, from its statistics.
async fn answered(cloud: &FakeCloud, status: u16) -> u64 {
    let stats = admin(cloud, "/_fake/stats").await;
    stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

async fn wait_active(client: &OpenStack, id: &str) -> orch_cloud::compute::Server {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let server = client.get_server(id).await.unwrap();
        if server.status != "BUILD" {
            return server;
        }
        assert!(Instant::now() < deadline, "server {id} stayed in BUILD");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_call_works_against_fakecloud() {
    let cloud = start(|_| {}).await;
    let client = client_for(&cloud, fast_limits());
    let key = |k: &str| ResourceKey::new("dep-1", k).unwrap();

    // Network, subnet, router with gateway and interface, security group and rules.
    let (network, adopted) = client.ensure_network(&key("network")).await.unwrap();
    assert!(!adopted);
    assert_eq!(network.name, "orch-dep-1-network");
    assert!(network.tags.contains(&"orch_deployment=dep-1".to_owned()));
    let subnet_request = SubnetCreate {
        network_id: network.id.clone(),
        cidr: "10.0.1.0/24".into(),
        dns_nameservers: vec!["1.1.1.1".into()],
        enable_dhcp: true,
        ..SubnetCreate::default()
    };
    let (subnet, _) = client.ensure_subnet(&key("subnet:web"), &subnet_request).await.unwrap();
    assert_eq!(subnet.gateway_ip.as_deref(), Some("10.0.1.1"));
    assert_eq!(subnet.dns_nameservers, ["1.1.1.1"]);
    let public = client.find_external_network("public").await.unwrap();
    let (router, _) = client.ensure_router(&key("router"), Some(&public.id)).await.unwrap();
    assert_eq!(
        router.external_gateway_info.as_ref().unwrap()["network_id"],
        json!(public.id)
    );
    client.add_router_interface(&router.id, &subnet.id).await.unwrap();
    client.add_router_interface(&router.id, &subnet.id).await.unwrap();
    assert!(client.router_interface(&router.id, &subnet.id).await.unwrap().is_some());
    let (group, _) = client.ensure_security_group(&key("sg:web"), "web tier").await.unwrap();
    let rule = SecurityGroupRule {
        security_group_id: group.id.clone(),
        direction: "ingress".into(),
        protocol: Some("tcp".into()),
        port_range_min: Some(443),
        port_range_max: Some(443),
        remote_ip_prefix: Some("0.0.0.0/0".into()),
        ..SecurityGroupRule::default()
    };
    let first_rule = client.ensure_security_group_rule(&rule).await.unwrap();
    let second_rule = client.ensure_security_group_rule(&rule).await.unwrap();
    assert_eq!(first_rule.id, second_rule.id, "an identical rule is adopted");

    // Flavors and images by name or id; unknown ones are NotFound.
    let flavor = client.find_flavor("m1.small").await.unwrap();
    assert_eq!(client.find_flavor(&flavor.id).await.unwrap(), flavor);
    let image = client.find_image(UBUNTU).await.unwrap();
    assert_eq!(client.find_image(&image.id).await.unwrap().name, UBUNTU);
    assert!(client.find_flavor("m9.huge").await.unwrap_err().is_not_found());
    assert!(client.find_image("windows").await.unwrap_err().is_not_found());

    // Key pairs.
    client
        .create_keypair("ops", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake ops@example")
        .await
        .unwrap();
    assert_eq!(client.list_keypairs().await.unwrap()[0].name, "ops");

    // A server: created, listed by tag and by changes-since, with an address from the pool.
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let request = ServerCreate {
        flavor_id: flavor.id.clone(),
        image_id: image.id.clone(),
        network_ids: vec![network.id.clone()],
        security_groups: vec![group.name.clone()],
        key_name: Some("ops".into()),
        user_data: Some("#cloud-config\n".into()),
        metadata: BTreeMap::from([("team".to_owned(), "web".to_owned())]),
        ..ServerCreate::default()
    };
    let (server_id, _) = client.ensure_server(&key("server:web:0"), &request).await.unwrap();
    let server = wait_active(&client, &server_id).await;
    assert_eq!(server.status, "ACTIVE");
    assert!(server.ip().unwrap().starts_with("10.0.1."), "{:?}", server.addresses);
    assert_eq!(server.metadata["orch_key"], "server:web:0");
    let by_tag = client
        .list_servers(&ServerFilter {
            tags: vec!["orch_deployment=dep-1".into()],
            ..ServerFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_tag.len(), 1);
    let changed = client
        .list_servers(&ServerFilter {
            changes_since: Some(since),
            ..ServerFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(changed.len(), 1);
    let by_name = client
        .list_servers(&ServerFilter {
            name: Some(server.name.clone()),
            ..ServerFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_name[0].id, server_id);
    let metadata = client
        .set_server_metadata(&server_id, &BTreeMap::from([("tier".to_owned(), "1".to_owned())]))
        .await
        .unwrap();
    assert_eq!(metadata["team"], "web");
    assert_eq!(metadata["tier"], "1");

    // Resize and confirm.
    client
        .resize_server(&server_id, &client.find_flavor("m1.medium").await.unwrap().id)
        .await
        .unwrap();
    assert_eq!(client.get_server(&server_id).await.unwrap().status, "VERIFY_RESIZE");
    client.confirm_resize(&server_id).await.unwrap();
    let resized = client.get_server(&server_id).await.unwrap();
    assert_eq!(resized.status, "ACTIVE");
    assert_eq!(resized.flavor["original_name"], "m1.medium");

    // A volume: created, waited for, attached, detached, deleted.
    let (volume, _) = client.ensure_volume(&key("volume:web:0:0"), 10, None).await.unwrap();
    assert_eq!(volume.size, 10);
    client
        .wait_volume(&volume.id, Some("available"), Duration::from_secs(5))
        .await
        .unwrap();
    client.attach_volume(&server_id, &volume.id).await.unwrap();
    assert_eq!(
        client.list_attachments(&server_id).await.unwrap(),
        std::slice::from_ref(&volume.id)
    );
    assert_eq!(client.get_volume(&volume.id).await.unwrap().status, "in-use");
    client.detach_volume(&server_id, &volume.id).await.unwrap();

    // Everything of the deployment is found by its tags or names, and on its network the
    // port Nova made for the server, in the order of deletion.
    let managed = client.list_by_deployment("dep-1").await.unwrap();
    let kinds: Vec<&str> = managed.iter().map(|resource| resource.kind).collect();
    assert_eq!(
        kinds,
        [
            "server",
            "volume",
            "port",
            "router",
            "security_group",
            "subnet",
            "network"
        ]
    );
    let everywhere = client.list_managed().await.unwrap();
    assert!(
        managed
            .iter()
            .filter(|resource| resource.kind != "port")
            .all(|resource| everywhere.contains(resource)),
        "{everywhere:?}"
    );
    client.delete_server(&server_id).await.unwrap();
    client.delete_volume(&volume.id).await.unwrap();
    client
        .wait_volume(&volume.id, None, Duration::from_secs(5))
        .await
        .unwrap();
    client.remove_router_interface(&router.id, &subnet.id).await.unwrap();
    client.delete_router(&router.id).await.unwrap();
    client.delete_security_group(&group.id).await.unwrap();
    // Neutron refuses while the server's port is still there; deletes are idempotent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while client.delete_subnet(&subnet.id).await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.delete_network(&network.id).await.unwrap();
    client.delete_network(&network.id).await.unwrap();
    client.delete_server(&server_id).await.unwrap();
    client.delete_keypair("ops").await.unwrap();
    let inventory = admin(&cloud, "/_fake/inventory").await;
    for (kind, items) in inventory.as_object().unwrap() {
        assert_eq!(items.as_array().unwrap().len(), 0, "{kind} left behind: {items}");
    }
    assert_eq!(client.authentications(), 1, "one token served every call");
}

#[tokio::test]
async fn a_call_that_keeps_failing_is_tried_max_retries_plus_once() {
    let cloud = start(|config| {
        config.error_rate_by_service.insert("network".into(), 1.0);
    })
    .await;
    let limits = ClientLimits {
        breaker_threshold: 50,
        max_retries: 3,
        ..fast_limits()
    };
    let client = client_for(&cloud, limits);
    client.check_identity().await.unwrap();
    let before = client.requests_sent();
    let error = client.list_networks(&[]).await.unwrap_err();
    assert!(
        matches!(error, CloudError::Unavailable { ambiguous: false, .. }),
        "{error:?}"
    );
    assert_eq!(client.requests_sent() - before, 4, "one try and three retries");
}

#[tokio::test]
async fn injected_500s_are_retried() {
    let cloud = start(|config| {
        config.error_rate_by_service.insert("network".into(), 0.3);
    })
    .await;
    // A threshold high enough that random faults do not open the circuit in this test.
    let client = client_for(
        &cloud,
        ClientLimits {
            breaker_threshold: 50,
            // At 30% faults, eleven tries in a row fail once in 600,000 calls.
            max_retries: 10,
            ..fast_limits()
        },
    );
    for _ in 0..20 {
        client.list_networks(&[]).await.unwrap();
    }
    assert!(
        answered(&cloud, 500).await + answered(&cloud, 503).await > 0,
        "faults were injected"
    );
}

#[tokio::test]
async fn rate_limits_are_honoured_with_retry_after() {
    let cloud = start(|config| config.rate_limit_rps = 2.0).await;
    let client = client_for(&cloud, fast_limits());
    client.list_flavors().await.unwrap();
    let started = Instant::now();
    for _ in 0..4 {
        client.list_flavors().await.unwrap();
    }
    assert!(answered(&cloud, 429).await > 0, "fakecloud limited the client");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After was waited for: {:?}",
        started.elapsed()
    );

    // Paced below the cloud's limit, the client is never refused.
    let polite = start(|config| config.rate_limit_rps = 20.0).await;
    let client = client_for(
        &polite,
        ClientLimits {
            requests_per_second: 10.0,
            ..fast_limits()
        },
    );
    for _ in 0..25 {
        client.list_flavors().await.unwrap();
    }
    assert_eq!(answered(&polite, 429).await, 0);
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_and_closes() {
    let cloud = start(|_| {}).await;
    let limits = ClientLimits {
        max_retries: 1,
        breaker_threshold: 2,
        breaker_cooldown: Duration::from_millis(400),
        max_retry_after: Duration::from_millis(100),
        ..fast_limits()
    };
    let client = client_for(&cloud, limits);
    client.list_flavors().await.unwrap();
    let outage = reqwest::Client::new()
        .post(format!("{}/_fake/outage", cloud.url))
        .json(&json!({"service": "compute", "duration_ms": 2500}))
        .send()
        .await
        .unwrap();
    assert!(outage.status().is_success());
    // 503 with Retry-After: the client waits (at most max_retry_after), and gives up after its
    // one retry.
    let error = client.list_flavors().await.unwrap_err();
    assert!(matches!(error, CloudError::Unavailable { .. }), "{error}");
    let calls_before = answered(&cloud, 503).await;
    let started = Instant::now();
    let error = client.list_flavors().await.unwrap_err();
    assert!(error.to_string().contains("circuit is open"), "{error}");
    assert!(started.elapsed() < Duration::from_millis(100), "failed fast");
    assert_eq!(
        answered(&cloud, 503).await,
        calls_before,
        "no request reached the cloud"
    );
    // Other services keep working: the breaker is per endpoint.
    client.list_networks(&[]).await.unwrap();
    // After the outage and the cooldown, a probe closes the circuit.
    tokio::time::sleep(Duration::from_millis(2700)).await;
    client.list_flavors().await.unwrap();
    client.list_flavors().await.unwrap();
}

#[tokio::test]
async fn tokens_renew_before_expiry_and_after_revocation_once() {
    let cloud = start(|config| config.token_ttl_seconds = 2).await;
    let client = client_for(&cloud, fast_limits());
    client.list_flavors().await.unwrap();
    client.list_flavors().await.unwrap();
    assert_eq!(client.authentications(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.list_flavors().await.unwrap();
    assert_eq!(client.authentications(), 2, "renewed shortly before expiry");

    // A revoked token (401) is replaced once, however many calls notice it at the same time.
    set_config(&cloud, json!({"token_ttl_seconds": 3600})).await;
    client.list_flavors().await.unwrap();
    let before = client.authentications();
    reqwest::Client::new()
        .post(format!("{}/_fake/tokens/revoke", cloud.url))
        .send()
        .await
        .unwrap();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.list_flavors().await.map(|_| ()) })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        client.authentications(),
        before + 1,
        "no thundering herd of re-authentications"
    );
    assert!(answered(&cloud, 401).await >= 1);

    // Wrong credentials are Unauthorized, not retried.
    let mut config = CloudConfig::password(&cloud.auth_url(), "admin", "wrong", "admin").unwrap();
    config.limits = fast_limits();
    let error = OpenStack::new(config).unwrap().list_flavors().await.unwrap_err();
    assert!(matches!(error, CloudError::Unauthorized { .. }), "{error}");
}

#[tokio::test]
async fn a_lost_create_response_is_adopted_not_duplicated() {
    let cloud = start(|_| {}).await;
    let client = client_for(&cloud, fast_limits());
    let key = ResourceKey::new("dep-lost", "network").unwrap();
    set_config(&cloud, json!({"lose_create_responses": 1})).await;
    let (network, adopted) = client.ensure_network(&key).await.unwrap();
    assert!(adopted, "the network created by the lost call was found and adopted");
    let inventory = admin(&cloud, "/_fake/inventory").await;
    assert_eq!(inventory["networks"].as_array().unwrap().len(), 1);
    assert_eq!(inventory["networks"][0]["id"], json!(network.id));

    let flavor = client.find_flavor("m1.tiny").await.unwrap();
    let image = client.find_image("cirros").await.unwrap();
    let request = ServerCreate {
        flavor_id: flavor.id,
        image_id: image.id,
        network_ids: vec![network.id.clone()],
        ..ServerCreate::default()
    };
    set_config(&cloud, json!({"lose_create_responses": 1})).await;
    let server_key = ResourceKey::new("dep-lost", "server:web:0").unwrap();
    let (server_id, adopted) = client.ensure_server(&server_key, &request).await.unwrap();
    assert!(adopted);
    let (again, adopted_again) = client.ensure_server(&server_key, &request).await.unwrap();
    assert_eq!((again, adopted_again), (server_id, true));
    let inventory = admin(&cloud, "/_fake/inventory").await;
    assert_eq!(inventory["servers"].as_array().unwrap().len(), 1, "no duplicate server");

    set_config(&cloud, json!({"lose_create_responses": 1})).await;
    let (volume, adopted) = client
        .ensure_volume(&ResourceKey::new("dep-lost", "volume:web:0:0").unwrap(), 1, None)
        .await
        .unwrap();
    assert!(adopted);
    assert_eq!(
        admin(&cloud, "/_fake/inventory").await["volumes"][0]["id"],
        json!(volume.id)
    );
}

#[tokio::test]
async fn quotas_surface_as_quota_exceeded() {
    let cloud = start(|config| {
        config.quotas.instances = 1;
        config.quotas.networks = 1;
        config.quotas.volumes = 1;
    })
    .await;
    let client = client_for(&cloud, fast_limits());
    let (network, _) = client
        .ensure_network(&ResourceKey::new("q", "network").unwrap())
        .await
        .unwrap();
    let error = client
        .ensure_network(&ResourceKey::new("q", "network:two").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CloudError::QuotaExceeded {
                service: Service::Network,
                ..
            }
        ),
        "{error}"
    );
    let request = ServerCreate {
        flavor_id: "1".into(),
        image_id: client.find_image("cirros").await.unwrap().id,
        network_ids: vec![network.id],
        ..ServerCreate::default()
    };
    client
        .ensure_server(&ResourceKey::new("q", "server:a:0").unwrap(), &request)
        .await
        .unwrap();
    let error = client
        .ensure_server(&ResourceKey::new("q", "server:a:1").unwrap(), &request)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CloudError::QuotaExceeded {
                service: Service::Compute,
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("instances"),
        "the cloud's own words: {error}"
    );
    assert!(!error.is_retryable());
    client
        .ensure_volume(&ResourceKey::new("q", "volume:a").unwrap(), 1, None)
        .await
        .unwrap();
    let error = client
        .ensure_volume(&ResourceKey::new("q", "volume:b").unwrap(), 1, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CloudError::QuotaExceeded {
                service: Service::Volume,
                ..
            }
        ),
        "{error}"
    );
    let error = client
        .create_server(&ServerCreate {
            flavor_id: "999".into(),
            ..request.clone()
        })
        .await
        .unwrap_err();
    assert!(matches!(error, CloudError::BadRequest { .. }), "{error}");
}

#[tokio::test]
async fn only_allowed_hosts_are_called_and_regions_are_checked() {
    let cloud = start(|_| {}).await;
    // The catalog points at 127.0.0.1; an auth URL on "localhost" does not allow that host.
    let auth_url = cloud.auth_url().replace("127.0.0.1", "localhost");
    let mut config = CloudConfig::password(&auth_url, "admin", "fakecloud", "admin").unwrap();
    config.limits = fast_limits();
    let error = OpenStack::new(config.clone())
        .unwrap()
        .list_flavors()
        .await
        .unwrap_err();
    assert!(matches!(error, CloudError::EndpointRefused { .. }), "{error}");
    assert_eq!(
        answered(&cloud, 200).await,
        0,
        "nothing outside the allowlist was called"
    );
    config.allowed_hosts = vec!["127.0.0.1".into()];
    let client = OpenStack::new(config).unwrap();
    client.list_flavors().await.unwrap();

    assert_eq!(client.regions().await.unwrap(), ["RegionOne"]);
    assert_eq!(client.in_region("RegionOne").await.unwrap().region(), "RegionOne");
    let error = client.in_region("us-west-1").await.err().unwrap();
    assert!(matches!(error, CloudError::UnknownRegion { .. }), "{error}");
    assert!(error.to_string().contains("RegionOne"));
}

#[tokio::test]
async fn application_credentials_authenticate() {
    let cloud = start(|_| {}).await;
    let mut config = CloudConfig::password(&cloud.auth_url(), "x", "x", "x").unwrap();
    config.credentials = orch_cloud::Credentials::ApplicationCredential {
        id: Some(fakecloud::identity::APPLICATION_CREDENTIAL_ID.into()),
        name: None,
        username: None,
        user_domain_name: None,
        secret: "fakecloud".to_owned().into(),
    };
    let client = OpenStack::new(config).unwrap();
    client.check_identity().await.unwrap();
    assert!(!client.project_id().await.unwrap().is_empty());
}

#[tokio::test]
async fn servers_that_fail_show_the_fault() {
    let cloud = start(|config| config.server_error_rate = 1.0).await;
    let client = client_for(&cloud, fast_limits());
    let (network, _) = client
        .ensure_network(&ResourceKey::new("f", "network").unwrap())
        .await
        .unwrap();
    let request = ServerCreate {
        flavor_id: "1".into(),
        image_id: client.find_image("cirros").await.unwrap().id,
        network_ids: vec![network.id],
        ..ServerCreate::default()
    };
    let (id, _) = client
        .ensure_server(&ResourceKey::new("f", "server:a:0").unwrap(), &request)
        .await
        .unwrap();
    let server = wait_active(&client, &id).await;
    assert_eq!(server.status, "ERROR");
    assert!(server.fault_message().unwrap().contains("No valid host"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_are_paced_below_the_cloud_limit() {
    let cloud = start(|config| config.rate_limit_rps = 100.0).await;
    let client = client_for(
        &cloud,
        ClientLimits {
            requests_per_second: 50.0,
            ..fast_limits()
        },
    );
    client.list_flavors().await.unwrap();
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.list_flavors().await.map(|_| ()) })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(answered(&cloud, 429).await, 0);
}

/// The tags of every create reach the cloud, however it treats tags in a create body: put
/// after the create where it refuses or drops them (as real Neutron 2026.1 does), sent with
/// it where it keeps them, and learnt once per collection.
#[tokio::test]
async fn tags_stick_whether_the_cloud_refuses_drops_or_keeps_them_in_a_create() {
    use orch_cloud::tagging::TagMode;
    for (mode, expected) in [
        (
            fakecloud::TagsInCreate::RefuseOrDrop,
            [TagMode::AfterCreate, TagMode::AfterCreate],
        ),
        (fakecloud::TagsInCreate::Keep, [TagMode::InCreate, TagMode::InCreate]),
    ] {
        let cloud = start(|config| config.tags_in_create = mode).await;
        let client = client_for(&cloud, fast_limits());
        let deployment = "dep-tags";
        let (network, adopted) = client
            .ensure_network(&ResourceKey::new(deployment, "network").unwrap())
            .await
            .unwrap();
        assert!(!adopted);
        let port_key = ResourceKey::new(deployment, "port:web:0").unwrap();
        let ports = client
            .create_ports(&[orch_cloud::network::PortCreate {
                name: port_key.name(),
                network_id: network.id.clone(),
                tags: port_key.tags(),
                ..Default::default()
            }])
            .await
            .unwrap();
        assert_eq!(ports[0].tags, port_key.tags(), "{mode:?}");
        assert_eq!(
            [client.tag_mode("networks").unwrap(), client.tag_mode("ports").unwrap()],
            expected,
            "{mode:?}"
        );
        // What the cloud itself holds, not what the client believes.
        let inventory = admin(&cloud, "/_fake/inventory").await;
        for kind in ["networks", "ports"] {
            for resource in inventory[kind].as_array().unwrap() {
                assert!(
                    resource["tags"]
                        .as_array()
                        .unwrap()
                        .contains(&json!(format!("orch_deployment={deployment}"))),
                    "{mode:?}: {resource}"
                );
            }
        }
    }
}

/// A crash between a create and its tagging leaves a resource without tags: it is found by
/// its name, tagged and adopted, never made twice, and teardown finds it too.
#[tokio::test]
async fn a_resource_that_never_got_its_tags_is_adopted_by_name_and_torn_down() {
    let cloud = start(|_| {}).await;
    let client = client_for(&cloud, fast_limits());
    let deployment = "dep-untagged";
    let network_key = ResourceKey::new(deployment, "network").unwrap();
    let bare = client.create_network(&network_key.name(), &[]).await;
    // An empty tag list still goes through `PUT .../tags`; the network exists untagged.
    let bare = bare.unwrap();
    assert!(bare.tags.is_empty());
    let (network, adopted) = client.ensure_network(&network_key).await.unwrap();
    assert!(adopted, "found by name");
    assert_eq!(network.id, bare.id);
    assert_eq!(
        client.find_network(&network_key).await.unwrap().unwrap().tags,
        network_key.tags(),
        "and tagged"
    );
    let port_key = ResourceKey::new(deployment, "port:web:0").unwrap();
    let untagged_port = client
        .create_port(&port_key.name(), &network.id, None, &[], &[])
        .await
        .unwrap();
    let found = client
        .find_ports(&network.id, std::slice::from_ref(&port_key))
        .await
        .unwrap();
    assert_eq!(found["port:web:0"].id, untagged_port.id);
    assert_eq!(found["port:web:0"].tags, port_key.tags());
    // A port nobody recorded nor tagged, on the deployment's network: teardown finds it.
    let stray = client
        .create_port("someone-elses", &network.id, None, &[], &[])
        .await
        .unwrap();
    let managed = client.list_by_deployment(deployment).await.unwrap();
    assert!(managed.iter().any(|resource| resource.id == stray.id), "{managed:?}");
    client
        .tear_down(
            &managed,
            &ServerFilter::default(),
            orch_cloud::teardown::Patience::default(),
        )
        .await
        .unwrap();
    let inventory = admin(&cloud, "/_fake/inventory").await;
    for kind in ["networks", "ports"] {
        assert_eq!(inventory[kind], json!([]), "{kind} left");
    }
}

/// A teardown the cloud keeps refusing (here: someone else's router still has an interface on
/// the deployment's subnet) retries for its patience, then names everything it left.
#[tokio::test]
async fn a_teardown_the_cloud_keeps_refusing_names_what_it_left() {
    let cloud = start(|_| {}).await;
    let client = client_for(&cloud, fast_limits());
    let deployment = "dep-stuck";
    let (network, _) = client
        .ensure_network(&ResourceKey::new(deployment, "network").unwrap())
        .await
        .unwrap();
    let request = SubnetCreate {
        network_id: network.id.clone(),
        cidr: "10.8.0.0/24".into(),
        ..SubnetCreate::default()
    };
    let (subnet, _) = client
        .ensure_subnet(&ResourceKey::new(deployment, "subnet:web").unwrap(), &request)
        .await
        .unwrap();
    let foreign = client.create_router("someone-elses", None, &[]).await.unwrap();
    client.add_router_interface(&foreign.id, &subnet.id).await.unwrap();
    let managed = client.list_by_deployment(deployment).await.unwrap();
    let patience = orch_cloud::teardown::Patience {
        refused: Duration::from_secs(3),
        gone: Duration::from_secs(5),
    };
    let started = Instant::now();
    let error = client
        .tear_down(&managed, &ServerFilter::default(), patience)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "refusals are retried for a while"
    );
    let CloudError::Incomplete { left, message } = &error else {
        panic!("{error:?}");
    };
    assert!(message.contains("conflict"), "{message}");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0].starts_with("subnet orch-dep-stuck-subnet-web"), "{left:?}");
    assert!(left[1].starts_with("network orch-dep-stuck-network"), "{left:?}");
    assert!(error.is_retryable(), "a later attempt may finish the work");
}

#[tokio::test]
async fn volumes_are_listed_across_cinder_pages() {
    let cloud = start(|_| {}).await;
    let client = client_for(&cloud, fast_limits());
    let mine = BTreeMap::from([("orch_deployment".to_owned(), "d-pages".to_owned())]);
    let creates = (0..1_003).map(|n| {
        let (client, mine) = (client.clone(), mine.clone());
        async move {
            client
                .create_volume(&format!("v-{n}"), 1, None, &mine)
                .await
                .unwrap()
                .id
        }
    });
    let mut made: Vec<String> = futures_join(creates).await;
    let before = client.requests_sent();
    let mut listed: Vec<String> = client
        .list_volumes(None, &mine)
        .await
        .unwrap()
        .into_iter()
        .map(|volume| volume.id)
        .collect();
    assert_eq!(client.requests_sent() - before, 2, "two pages of at most 1,000");
    made.sort();
    listed.sort();
    assert_eq!(listed, made, "every volume once, none missed at the page boundary");
}

/// Runs the futures 50 at a time.
async fn futures_join<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let mut set = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    for future in futures {
        if set.len() >= 50 {
            out.push(set.join_next().await.unwrap().unwrap());
        }
        set.spawn(future);
    }
    while let Some(done) = set.join_next().await {
        out.push(done.unwrap());
    }
    out
}

/// A server on 127.0.0.1 that answers every request with `answer`, counting connections.
async fn canned(answer: String) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (address, connections)
}

/// Only configured endpoints are called: a cloud that redirects elsewhere is refused with
/// what it asked, and nothing (no password, no token) reaches where it pointed.
#[tokio::test]
async fn redirects_are_refused_never_followed() {
    let (elsewhere, reached) = canned("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".to_owned()).await;
    let redirect = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{elsewhere}/v3/auth/tokens\r\ncontent-length: 0\r\n\r\n"
    );
    let (redirecting, _) = canned(redirect).await;
    let config = CloudConfig::password(&format!("http://{redirecting}/v3"), "admin", "secret", "admin").unwrap();
    let client = OpenStack::new(config).unwrap();
    let error = client.list_servers(&ServerFilter::default()).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("redirect") && message.contains(&elsewhere.to_string()),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}
