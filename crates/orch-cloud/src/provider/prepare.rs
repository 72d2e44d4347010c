//! The shared resources of a deployment: its network, subnets, router with interfaces, and
//! security groups with their rules. Few per deployment, so made one after another: Neutron
//! serialises changes to one router or one group anyway.

use std::collections::HashMap;

use orch_core::provider::{Report, Target};
use orch_core::template::SecurityRule;
use serde_json::json;

use super::{key, report_active};
use crate::error::Result;
use crate::network::{SecurityGroupRule, SubnetCreate};
use crate::OpenStack;

pub(super) async fn prepare(cloud: &OpenStack, target: Target<'_>, report: &impl Report) -> Result<()> {
    let id = target.deployment_id;
    let (network, _) = cloud.ensure_network(&key(id, "network")?).await?;
    report_active(report, "network", "network", &network.id, json!({"name": network.name})).await?;
    let subnets = ensure_subnets(cloud, target, &network.id, report).await?;
    if target.desired.wants_router() {
        ensure_router(cloud, target, &subnets, report).await?;
    }
    let groups = ensure_security_groups(cloud, target, report).await?;
    ensure_rules(cloud, target, &groups, report).await
}

/// The subnets, as (name, id).
async fn ensure_subnets(
    cloud: &OpenStack,
    target: Target<'_>,
    network_id: &str,
    report: &impl Report,
) -> Result<Vec<(String, String)>> {
    let mut subnets = Vec::new();
    for (name, spec) in target.desired.subnets() {
        let logical_key = format!("subnet:{name}");
        let request = SubnetCreate {
            network_id: network_id.to_owned(),
            cidr: spec.cidr.to_string(),
            gateway_ip: spec.gateway_ip.map(|ip| ip.to_string()),
            dns_nameservers: spec.dns_nameservers.iter().map(ToString::to_string).collect(),
            enable_dhcp: spec.enable_dhcp,
            ..SubnetCreate::default()
        };
        let (subnet, _) = cloud
            .ensure_subnet(&key(target.deployment_id, &logical_key)?, &request)
            .await?;
        let attributes = json!({"name": subnet.name, "cidr": subnet.cidr, "gateway_ip": subnet.gateway_ip});
        report_active(report, &logical_key, "subnet", &subnet.id, attributes).await?;
        subnets.push((name.clone(), subnet.id));
    }
    Ok(subnets)
}

async fn ensure_router(
    cloud: &OpenStack,
    target: Target<'_>,
    subnets: &[(String, String)],
    report: &impl Report,
) -> Result<()> {
    let router = target.desired.network_config.as_ref().map(|network| &network.router);
    let external = match router.and_then(|router| router.external_network.as_ref()) {
        Some(name) => Some(cloud.find_external_network(name).await?.id),
        None => None,
    };
    let (router, _) = cloud
        .ensure_router(&key(target.deployment_id, "router")?, external.as_deref())
        .await?;
    report_active(report, "router", "router", &router.id, json!({"name": router.name})).await?;
    // Interfaces of one router conflict with each other on the cloud side: one at a time.
    for (name, subnet_id) in subnets {
        cloud.add_router_interface(&router.id, subnet_id).await?;
        let attributes = json!({"router_id": router.id, "subnet": name});
        report_active(
            report,
            &format!("router-interface:{name}"),
            "router_interface",
            subnet_id,
            attributes,
        )
        .await?;
    }
    Ok(())
}

/// The security groups, by template name -> id.
async fn ensure_security_groups(
    cloud: &OpenStack,
    target: Target<'_>,
    report: &impl Report,
) -> Result<HashMap<String, String>> {
    let mut groups = HashMap::new();
    for (name, group) in &target.desired.security_groups {
        let logical_key = format!("security-group:{name}");
        let description = group.description.clone().unwrap_or_default();
        let (made, _) = cloud
            .ensure_security_group(&key(target.deployment_id, &logical_key)?, &description)
            .await?;
        report_active(
            report,
            &logical_key,
            "security_group",
            &made.id,
            json!({"name": made.name}),
        )
        .await?;
        groups.insert(name.clone(), made.id);
    }
    Ok(groups)
}

/// Rules of one group conflict with each other: created one after another. Each group is
/// recorded again with its rules' signatures, which the reconcile pass compares with the
/// cloud's.
async fn ensure_rules(
    cloud: &OpenStack,
    target: Target<'_>,
    groups: &HashMap<String, String>,
    report: &impl Report,
) -> Result<()> {
    for (name, group) in &target.desired.security_groups {
        let mut signatures = Vec::new();
        for rule in &group.rules {
            let request = rule_request(&groups[name], rule, groups);
            cloud.ensure_security_group_rule(&request).await?;
            signatures.push(request.signature());
        }
        let logical_key = format!("security-group:{name}");
        let made = key(target.deployment_id, &logical_key)?.name();
        let attributes = json!({"name": made, "rules": signatures});
        report_active(report, &logical_key, "security_group", &groups[name], attributes).await?;
    }
    Ok(())
}

fn rule_request(group_id: &str, rule: &SecurityRule, groups: &HashMap<String, String>) -> SecurityGroupRule {
    let remote_ip = rule.remote_ip_prefix.map(|net| net.to_string());
    let ethertype = if remote_ip.as_deref().is_some_and(|ip| ip.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    SecurityGroupRule {
        security_group_id: group_id.to_owned(),
        direction: rule.direction.clone(),
        ethertype: Some(ethertype.to_owned()),
        protocol: rule.protocol.clone(),
        port_range_min: rule.port_range_min,
        port_range_max: rule.port_range_max,
        remote_ip_prefix: remote_ip,
        remote_group_id: rule.remote_group.as_ref().map(|remote| groups[remote].clone()),
        ..SecurityGroupRule::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(remote_ip_prefix: Option<&str>, remote_group: Option<&str>) -> SecurityRule {
        SecurityRule {
            direction: "ingress".into(),
            protocol: Some("tcp".into()),
            port_range_min: Some(5432),
            port_range_max: Some(5432),
            remote_ip_prefix: remote_ip_prefix.map(|net| net.parse().unwrap()),
            remote_group: remote_group.map(str::to_owned),
        }
    }

    #[test]
    fn a_rule_names_its_family_and_its_remote_group_by_id() {
        let groups = HashMap::from([
            ("web".to_owned(), "g-web".to_owned()),
            ("db".to_owned(), "g-db".to_owned()),
        ]);
        let v6 = rule_request("g-db", &rule(Some("2001:db8::/32"), None), &groups);
        assert_eq!(v6.ethertype.as_deref(), Some("IPv6"));
        assert_eq!(v6.remote_ip_prefix.as_deref(), Some("2001:db8::/32"));
        let from_web = rule_request("g-db", &rule(None, Some("web")), &groups);
        assert_eq!(from_web.ethertype.as_deref(), Some("IPv4"));
        assert_eq!(from_web.remote_group_id.as_deref(), Some("g-web"));
        assert_eq!(from_web.security_group_id, "g-db");
        assert_eq!(
            (from_web.port_range_min, from_web.port_range_max),
            (Some(5432), Some(5432))
        );
    }
}
