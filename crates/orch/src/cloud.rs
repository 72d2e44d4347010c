//! Which cloud orch talks to: orch's own `OPENSTACK_*` settings when given, else the
//! standard `OS_CLOUD` (`clouds.yaml`) or `OS_*` variables; none means no cloud is configured.

use std::collections::BTreeMap;
use std::sync::Arc;

use orch_api::{ReadinessCheck, Region, RegionCheck};
use orch_cloud::{CloudConfig, CloudError, Credentials, OpenStack};
use secrecy::ExposeSecret;

use crate::config::{Config, ConfigError};

/// The cloud client, when a cloud is configured.
pub fn client(config: &Config, environment: &BTreeMap<String, String>) -> Result<Option<OpenStack>, ConfigError> {
    let invalid = |variable: &str, error: CloudError| ConfigError {
        variable: variable.to_owned(),
        problem: error.to_string(),
    };
    let cloud_config = match &config.openstack {
        Some(openstack) => {
            let mut cloud = CloudConfig::password(
                openstack.auth_url.as_str(),
                &openstack.username,
                openstack.password.expose_secret(),
                &openstack.project_name,
            )
            .map_err(|error| invalid("OPENSTACK_AUTH_URL", error))?;
            if let Credentials::Password {
                user_domain_name,
                project_domain_name,
                ..
            } = &mut cloud.credentials
            {
                *user_domain_name = Some(openstack.user_domain_name.clone());
                *project_domain_name = Some(openstack.project_domain_name.clone());
            }
            cloud.region_name = openstack.region_name.clone();
            cloud
        }
        None => match CloudConfig::from_env(environment).map_err(|error| invalid("OS_CLOUD/OS_*", error))? {
            Some(cloud) => cloud,
            None => return Ok(None),
        },
    };
    OpenStack::new(cloud_config)
        .map(Some)
        .map_err(|error| invalid("OPENSTACK_AUTH_URL", error))
}

/// Refuses regions the cloud's catalog does not list.
pub fn region_check(cloud: &OpenStack) -> RegionCheck {
    let cloud = cloud.clone();
    Arc::new(move |region: String| {
        let cloud = cloud.clone();
        Box::pin(async move {
            match cloud.in_region(&region).await {
                Ok(_) => Region::Known,
                Err(error @ CloudError::UnknownRegion { .. }) => Region::Unknown { why: error.to_string() },
                Err(error) => Region::Unreachable { why: error.to_string() },
            }
        })
    })
}

/// `/health/ready` asks Keystone, without issuing a token.
pub fn readiness_check(cloud: &OpenStack) -> ReadinessCheck {
    let cloud = cloud.clone();
    Arc::new(move || {
        let cloud = cloud.clone();
        Box::pin(async move {
            cloud
                .ping_identity()
                .await
                .map_err(|_| "the cloud's identity endpoint does not answer".to_owned())
        })
    })
}
