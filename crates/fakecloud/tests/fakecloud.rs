//! fakecloud as its clients see it: the binary, the admin API, the behaviour of a cloud, and
//! contract checks of its response bodies against the fields the OpenStack API reference
//! documents for each call.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use fakecloud::{FakeCloud, FakeConfig};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const UBUNTU_ID: &str = "5d0b0f3c-0b8e-4a8e-9b1a-2a2f0c7d9e01";
const CIRROS_ID: &str = "6e1c1a4d-1c9f-4b9f-8c2b-3b3a1d8e0f02";

struct Session {
    cloud: FakeCloud,
    http: Client,
    token: String,
    project_id: String,
}

async fn session(configure: impl FnOnce(&mut FakeConfig)) -> Session {
    let mut config = FakeConfig {
        boot_delay_ms: 300,
        delete_delay_ms: 200,
        ..FakeConfig::default()
    };
    configure(&mut config);
    let cloud = FakeCloud::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let http = Client::new();
    let response = http
        .post(format!("{}/auth/tokens", cloud.auth_url()))
        .json(&password_auth("fakecloud"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let token = response.headers()["x-subject-token"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let project_id = body["token"]["project"]["id"].as_str().unwrap().to_owned();
    Session {
        cloud,
        http,
        token,
        project_id,
    }
}

fn password_auth(password: &str) -> Value {
    json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": password}}},
                    "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}})
}

impl Session {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.cloud.url))
            .header("x-auth-token", &self.token)
            .header("openstack-api-version", "compute 2.52");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self, path: &str, body: Value) -> Value {
        let (status, _, reply) = self.call(Method::POST, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {reply}");
        reply
    }
}

/// Asserts that `value` has every field of the reference example.
fn has_fields(value: &Value, fields: &[&str]) {
    let object = value.as_object().unwrap_or_else(|| panic!("not an object: {value}"));
    let missing: Vec<&&str> = fields.iter().filter(|field| !object.contains_key(**field)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in {value}");
}

#[tokio::test]
async fn keystone_token_and_catalog_have_the_reference_shape() {
    let session = session(|_| {}).await;
    let response = session
        .http
        .post(format!("{}/auth/tokens", session.cloud.auth_url()))
        .json(&password_auth("fakecloud"))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let token = &body["token"];
    has_fields(
        token,
        &[
            "methods",
            "user",
            "audit_ids",
            "expires_at",
            "issued_at",
            "project",
            "is_domain",
            "roles",
            "catalog",
        ],
    );
    has_fields(&token["user"], &["domain", "id", "name", "password_expires_at"]);
    has_fields(&token["catalog"][0], &["endpoints", "id", "type", "name"]);
    has_fields(
        &token["catalog"][0]["endpoints"][0],
        &["id", "interface", "region", "region_id", "url"],
    );
    let types: Vec<&str> = token["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["type"].as_str().unwrap())
        .collect();
    for wanted in ["identity", "compute", "network", "volumev3", "image"] {
        assert!(types.contains(&wanted), "{types:?}");
    }
    let refused = session
        .http
        .post(format!("{}/auth/tokens", session.cloud.auth_url()))
        .json(&password_auth("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = refused.json().await.unwrap();
    has_fields(&body["error"], &["code", "message", "title"]);
    let (status, _, _) = Session {
        token: "bogus".into(),
        ..session
    }
    .call(Method::GET, "/compute/v2.1/flavors", None)
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn nova_servers_behave_and_look_like_nova() {
    let s = session(|_| {}).await;
    let network = s
        .create("/networking/v2.0/networks", json!({"network": {"name": "n"}}))
        .await["network"]
        .clone();
    let network_id = network["id"].as_str().unwrap();
    s.create(
        "/networking/v2.0/subnets",
        json!({"subnet": {"network_id": network_id, "cidr": "10.5.0.0/24", "ip_version": 4}}),
    )
    .await;
    let since = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (status, headers, created) = s
        .call(Method::POST, "/compute/v2.1/servers", Some(json!({"server": {"name": "vm", "flavorRef": "1", "imageRef": UBUNTU_ID, "networks": [{"uuid": network_id}], "tags": ["a"]}})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(headers["location"].to_str().unwrap().contains("/servers/"));
    has_fields(
        &created["server"],
        &["id", "links", "OS-DCF:diskConfig", "security_groups", "adminPass"],
    );
    let id = created["server"]["id"].as_str().unwrap().to_owned();
    let rebuild = |image: &str| json!({"rebuild": {"imageRef": image}});
    let action = format!("/compute/v2.1/servers/{id}/action");
    let (status, _, body) = s.call(Method::POST, &action, Some(rebuild(CIRROS_ID))).await;
    assert_eq!(status, StatusCode::CONFLICT, "no rebuild while it builds: {body}");
    has_fields(&body["conflictingRequest"], &["code", "message"]);

    let (_, _, shown) = s.call(Method::GET, &format!("/compute/v2.1/servers/{id}"), None).await;
    let server = &shown["server"];
    assert_eq!(server["status"], "BUILD");
    has_fields(
        server,
        &[
            "id",
            "name",
            "status",
            "tenant_id",
            "user_id",
            "metadata",
            "hostId",
            "image",
            "flavor",
            "created",
            "updated",
            "addresses",
            "accessIPv4",
            "accessIPv6",
            "links",
            "OS-DCF:diskConfig",
            "progress",
            "OS-EXT-AZ:availability_zone",
            "config_drive",
            "key_name",
            "OS-SRV-USG:launched_at",
            "OS-SRV-USG:terminated_at",
            "OS-EXT-STS:task_state",
            "OS-EXT-STS:vm_state",
            "OS-EXT-STS:power_state",
            "os-extended-volumes:volumes_attached",
            "security_groups",
            "locked",
            "tags",
        ],
    );
    has_fields(
        &server["flavor"],
        &[
            "vcpus",
            "ram",
            "disk",
            "ephemeral",
            "swap",
            "original_name",
            "extra_specs",
        ],
    );
    has_fields(
        &server["addresses"]["n"][0],
        &["addr", "version", "OS-EXT-IPS:type", "OS-EXT-IPS-MAC:mac_addr"],
    );
    assert_eq!(server["addresses"]["n"][0]["addr"], "10.5.0.3", "the DHCP port took .2");

    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, _, listed) = s
        .call(
            Method::GET,
            &format!("/compute/v2.1/servers/detail?changes-since={since}&tags=a"),
            None,
        )
        .await;
    assert_eq!(listed["servers"][0]["status"], "ACTIVE");

    // A rebuild keeps the server and takes the new image, REBUILD until it has booted.
    let (status, _, body) = s.call(Method::POST, &action, Some(rebuild("no-such-image"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, _) = s.call(Method::POST, &action, Some(rebuild(CIRROS_ID))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, _, shown) = s.call(Method::GET, &format!("/compute/v2.1/servers/{id}"), None).await;
    assert_eq!(
        (
            shown["server"]["status"].as_str(),
            shown["server"]["image"]["id"].as_str()
        ),
        (Some("REBUILD"), Some(CIRROS_ID))
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, _, shown) = s.call(Method::GET, &format!("/compute/v2.1/servers/{id}"), None).await;
    assert_eq!(shown["server"]["status"], "ACTIVE");

    let (status, _, _) = s
        .call(Method::DELETE, &format!("/compute/v2.1/servers/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, _, deleting) = s.call(Method::GET, &format!("/compute/v2.1/servers/{id}"), None).await;
    assert_eq!(deleting["server"]["OS-EXT-STS:task_state"], "deleting");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, missing) = s.call(Method::GET, &format!("/compute/v2.1/servers/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    has_fields(&missing["itemNotFound"], &["code", "message"]);
    let (_, _, changes) = s
        .call(
            Method::GET,
            &format!("/compute/v2.1/servers/detail?changes-since={since}"),
            None,
        )
        .await;
    assert_eq!(
        changes["servers"][0]["status"], "DELETED",
        "changes-since reports deletions"
    );

    // Bad requests in Nova's words.
    let (status, _, body) = s
        .call(
            Method::POST,
            "/compute/v2.1/servers",
            Some(json!({"server": {"name": "x", "flavorRef": "99", "imageRef": UBUNTU_ID, "networks": "none"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["badRequest"]["message"], "Flavor 99 could not be found.");
}

#[tokio::test]
async fn quotas_are_answered_the_way_each_service_answers_them() {
    let s = session(|config| {
        config.quotas.instances = 1;
        config.quotas.networks = 1;
        config.quotas.volumes = 0;
    })
    .await;
    let server = json!({"server": {"name": "a", "flavorRef": "1", "imageRef": UBUNTU_ID, "networks": "none"}});
    s.create("/compute/v2.1/servers", server.clone()).await;
    let (status, _, body) = s.call(Method::POST, "/compute/v2.1/servers", Some(server)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["forbidden"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"));
    s.create("/networking/v2.0/networks", json!({"network": {"name": "one"}}))
        .await;
    let (status, _, body) = s
        .call(
            Method::POST,
            "/networking/v2.0/networks",
            Some(json!({"network": {"name": "two"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["NeutronError"]["type"], "OverQuota");
    let (status, _, body) = s
        .call(
            Method::POST,
            &format!("/volume/v3/{}/volumes", s.project_id),
            Some(json!({"volume": {"size": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["overLimit"]["message"]
        .as_str()
        .unwrap()
        .contains("VolumeLimitExceeded"));
}

/// As the real Neutron 2026.1 with ML2/OVN: it advertises `tag-creation`, yet refuses tags in
/// the create of networks, subnets, routers and security groups, and drops them from ports.
#[tokio::test]
async fn neutron_refuses_tags_in_creates_and_drops_them_from_ports_as_the_real_one_does() {
    let s = session(|_| {}).await;
    let (_, _, extensions) = s.call(Method::GET, "/networking/v2.0/extensions", None).await;
    assert!(extensions["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["alias"] == "tag-creation"));
    let network = s
        .create("/networking/v2.0/networks", json!({"network": {"name": "n"}}))
        .await["network"]
        .clone();
    let network_id = network["id"].as_str().unwrap();
    for (path, body) in [
        ("networks", json!({"network": {"name": "m", "tags": ["a"]}})),
        (
            "subnets",
            json!({"subnet": {"network_id": network_id, "cidr": "10.7.0.0/24", "ip_version": 4, "tags": ["a"]}}),
        ),
        ("routers", json!({"router": {"name": "r", "tags": ["a"]}})),
        (
            "security-groups",
            json!({"security_group": {"name": "g", "tags": ["a"]}}),
        ),
    ] {
        let (status, _, refused) = s
            .call(Method::POST, &format!("/networking/v2.0/{path}"), Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {refused}");
        assert_eq!(
            refused["NeutronError"]["message"],
            "Attribute 'tags' not allowed in POST"
        );
    }
    let (_, _, listed) = s.call(Method::GET, "/networking/v2.0/networks?name=m", None).await;
    assert_eq!(listed["networks"], json!([]), "a refused create makes nothing");
    let single = json!({"port": {"network_id": network_id, "name": "p", "tags": ["a"]}});
    assert_eq!(
        s.create("/networking/v2.0/ports", single).await["port"]["tags"],
        json!([])
    );
    let bulk = json!({"ports": [{"network_id": network_id, "name": "q", "tags": ["a"]}]});
    assert_eq!(
        s.create("/networking/v2.0/ports", bulk).await["ports"][0]["tags"],
        json!([])
    );

    let keeping = session(|config| config.tags_in_create = fakecloud::TagsInCreate::Keep).await;
    let kept = keeping
        .create(
            "/networking/v2.0/networks",
            json!({"network": {"name": "k", "tags": ["a"]}}),
        )
        .await;
    assert_eq!(kept["network"]["tags"], json!(["a"]));
}

#[tokio::test]
async fn neutron_refuses_what_is_in_use_and_lists_by_tags() {
    let s = session(|_| {}).await;
    let network = s
        .create("/networking/v2.0/networks", json!({"network": {"name": "n"}}))
        .await["network"]
        .clone();
    let (status, _, tags) = s
        .call(
            Method::PUT,
            &format!("/networking/v2.0/networks/{}/tags", network["id"].as_str().unwrap()),
            Some(json!({"tags": ["x", "y"]})),
        )
        .await;
    assert_eq!((status, tags), (StatusCode::OK, json!({"tags": ["x", "y"]})));
    has_fields(
        &network,
        &[
            "id",
            "name",
            "tenant_id",
            "project_id",
            "admin_state_up",
            "mtu",
            "status",
            "subnets",
            "shared",
            "router:external",
            "availability_zone_hints",
            "availability_zones",
            "ipv4_address_scope",
            "ipv6_address_scope",
            "description",
            "port_security_enabled",
            "tags",
            "created_at",
            "updated_at",
            "revision_number",
        ],
    );
    let network_id = network["id"].as_str().unwrap();
    let subnet = s
        .create(
            "/networking/v2.0/subnets",
            json!({"subnet": {"network_id": network_id, "cidr": "10.6.0.0/24", "ip_version": 4}}),
        )
        .await["subnet"]
        .clone();
    has_fields(
        &subnet,
        &[
            "id",
            "name",
            "network_id",
            "ip_version",
            "cidr",
            "gateway_ip",
            "allocation_pools",
            "dns_nameservers",
            "host_routes",
            "enable_dhcp",
            "tags",
        ],
    );
    assert_eq!(
        subnet["allocation_pools"],
        json!([{"start": "10.6.0.2", "end": "10.6.0.254"}])
    );
    let (status, _, body) = s
        .call(
            Method::POST,
            "/networking/v2.0/subnets",
            Some(json!({"subnet": {"network_id": network_id, "cidr": "10.6.0.128/25", "ip_version": 4}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let router = s
        .create("/networking/v2.0/routers", json!({"router": {"name": "r"}}))
        .await["router"]
        .clone();
    has_fields(
        &router,
        &[
            "id",
            "name",
            "status",
            "external_gateway_info",
            "admin_state_up",
            "routes",
            "tags",
        ],
    );
    let router_id = router["id"].as_str().unwrap();
    let subnet_id = subnet["id"].as_str().unwrap();
    let (status, _, interface) = s
        .call(
            Method::PUT,
            &format!("/networking/v2.0/routers/{router_id}/add_router_interface"),
            Some(json!({"subnet_id": subnet_id})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    has_fields(
        &interface,
        // Neutron 2026.1 no longer answers `tenant_id` here (the contract test checks it).
        &["id", "project_id", "subnet_id", "subnet_ids", "port_id", "network_id"],
    );
    // Bulk create: all or nothing.
    let bulk = json!({"ports": [{"network_id": network_id, "name": "a"}, {"network_id": network_id, "name": "b", "fixed_ips": [{"subnet_id": subnet_id}]}]});
    let created = s.create("/networking/v2.0/ports", bulk).await;
    assert_eq!(created["ports"].as_array().unwrap().len(), 2);
    let broken = json!({"ports": [{"network_id": network_id, "name": "c"}, {"network_id": "missing", "name": "d"}]});
    let (status, _, _) = s.call(Method::POST, "/networking/v2.0/ports", Some(broken)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, named) = s.call(Method::GET, "/networking/v2.0/ports?name=c", None).await;
    assert_eq!(named["ports"], json!([]), "a failed bulk create leaves nothing");
    let (status, _, body) = s
        .call(Method::DELETE, &format!("/networking/v2.0/networks/{network_id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["NeutronError"]["type"], "NetworkInUse");
    let (status, _, body) = s
        .call(Method::DELETE, &format!("/networking/v2.0/routers/{router_id}"), None)
        .await;
    assert_eq!(
        (status, body["NeutronError"]["type"].as_str()),
        (StatusCode::CONFLICT, Some("RouterInUse"))
    );
    let (_, _, listed) = s.call(Method::GET, "/networking/v2.0/networks?tags=x,y", None).await;
    assert_eq!(listed["networks"].as_array().unwrap().len(), 1);
    let (_, _, listed) = s.call(Method::GET, "/networking/v2.0/networks?tags=x,z", None).await;
    assert_eq!(listed["networks"].as_array().unwrap().len(), 0);
    let (status, _, missing) = s.call(Method::GET, "/networking/v2.0/networks/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    has_fields(&missing["NeutronError"], &["type", "message", "detail"]);
    let group = s
        .create(
            "/networking/v2.0/security-groups",
            json!({"security_group": {"name": "g"}}),
        )
        .await["security_group"]
        .clone();
    assert_eq!(
        group["security_group_rules"].as_array().unwrap().len(),
        2,
        "default egress rules"
    );
    let rule = json!({"security_group_rule": {"security_group_id": group["id"], "direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}});
    let created = s.create("/networking/v2.0/security-group-rules", rule.clone()).await["security_group_rule"].clone();
    has_fields(
        &created,
        &[
            "id",
            "security_group_id",
            "direction",
            "ethertype",
            "protocol",
            "port_range_min",
            "port_range_max",
            "remote_ip_prefix",
            "remote_group_id",
        ],
    );
    let (status, _, body) = s
        .call(Method::POST, "/networking/v2.0/security-group-rules", Some(rule))
        .await;
    assert_eq!(
        (status, body["NeutronError"]["type"].as_str()),
        (StatusCode::CONFLICT, Some("SecurityGroupRuleExists"))
    );
}

#[tokio::test]
async fn cinder_and_glance_look_like_cinder_and_glance() {
    let s = session(|config| config.volume_delay_ms = 100).await;
    let volume = s
        .create(
            &format!("/volume/v3/{}/volumes", s.project_id),
            json!({"volume": {"size": 2, "name": "v", "metadata": {"k": "v"}}}),
        )
        .await["volume"]
        .clone();
    has_fields(
        &volume,
        &[
            "id",
            "name",
            "status",
            "size",
            "availability_zone",
            "created_at",
            "attachments",
            "bootable",
            "encrypted",
            "volume_type",
            "metadata",
            "links",
            "multiattach",
        ],
    );
    assert_eq!(volume["status"], "creating");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (_, _, listed) = s
        .call(
            Method::GET,
            &format!(
                "/volume/v3/{}/volumes/detail?metadata={}",
                s.project_id,
                urlencode(r#"{"k":"v"}"#)
            ),
            None,
        )
        .await;
    assert_eq!(listed["volumes"][0]["status"], "available");
    let (_, _, images) = s.call(Method::GET, "/image/v2/images?name=cirros", None).await;
    has_fields(
        &images["images"][0],
        &[
            "id",
            "name",
            "status",
            "visibility",
            "min_disk",
            "min_ram",
            "disk_format",
            "container_format",
            "size",
            "tags",
            "self",
            "file",
            "schema",
        ],
    );
    let (_, _, flavors) = s.call(Method::GET, "/compute/v2.1/flavors/detail", None).await;
    let names: Vec<&str> = flavors["flavors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["m1.tiny", "m1.small", "m1.medium", "m1.large", "m1.xlarge"]);
    has_fields(
        &flavors["flavors"][0],
        &[
            "id",
            "name",
            "vcpus",
            "ram",
            "disk",
            "OS-FLV-EXT-DATA:ephemeral",
            "swap",
            "rxtx_factor",
            "os-flavor-access:is_public",
            "links",
        ],
    );
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn admin_api_changes_behaviour_and_counts_requests() {
    let s = session(|_| {}).await;
    let admin = |path: &str| format!("{}{path}", s.cloud.url);
    let config: Value = s
        .http
        .get(admin("/_fake/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["boot_delay_ms"], 300);
    let changed = s
        .http
        .put(admin("/_fake/config"))
        .json(&json!({"error_rate_by_service": {"image": 1.0}, "create_latency_ms": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    let (status, _, _) = s.call(Method::GET, "/image/v2/images", None).await;
    assert!(status == StatusCode::INTERNAL_SERVER_ERROR || status == StatusCode::SERVICE_UNAVAILABLE);
    for bad in [
        json!({"error_rate": 2.0}),
        json!({"no_such_setting": 1}),
        json!({"error_rate_by_service": {"dns": 0.1}}),
    ] {
        let refused = s.http.put(admin("/_fake/config")).json(&bad).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    s.http
        .put(admin("/_fake/config"))
        .json(&json!({"error_rate_by_service": {}, "rate_limit_rps": 1.0}))
        .send()
        .await
        .unwrap();
    let mut limited = None;
    for _ in 0..5 {
        let (status, headers, _) = s.call(Method::GET, "/compute/v2.1/flavors", None).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(headers["retry-after"].to_str().unwrap().to_owned());
        }
    }
    assert!(limited.is_some_and(|after| after.parse::<u64>().unwrap() >= 1));
    s.http
        .put(admin("/_fake/config"))
        .json(&json!({"rate_limit_rps": 0.0}))
        .send()
        .await
        .unwrap();
    s.http
        .post(admin("/_fake/outage"))
        .json(&json!({"service": "network", "duration_ms": 60000}))
        .send()
        .await
        .unwrap();
    let (status, headers, _) = s.call(Method::GET, "/networking/v2.0/networks", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let stats: Value = s
        .http
        .get(admin("/_fake/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let count = |service: &str, status: u16| -> u64 {
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["service"] == service && r["status"] == status)
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    assert!(count("compute", 429) >= 1);
    assert_eq!(count("network", 503), 1);
    assert_eq!(count("identity", 201), 1);
    let inventory: Value = s
        .http
        .get(admin("/_fake/inventory"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for kind in [
        "servers",
        "networks",
        "subnets",
        "routers",
        "ports",
        "security_groups",
        "volumes",
    ] {
        assert_eq!(
            inventory[kind],
            json!([]),
            "{kind}: the cloud's own resources are not listed"
        );
    }
}

#[test]
fn the_binary_prints_its_address_first_and_validates_flags() {
    let exe = env!("CARGO_BIN_EXE_fakecloud");
    let child = Command::new(exe)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--boot-delay-ms",
            "10",
            "--outage",
            "compute:0:100",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed when it goes, even when an assertion below fails.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let config: Value = reqwest::blocking::get(format!("{url}/_fake/config"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(config["boot_delay_ms"], 10);
    drop(child);
    for bad in [
        vec!["--error-rate", "1.5"],
        vec!["--outage", "dns:0:1"],
        vec!["--listen", "nowhere"],
    ] {
        let output = Command::new(exe).args(&bad).output().unwrap();
        assert!(!output.status.success(), "{bad:?} was accepted");
    }
}
