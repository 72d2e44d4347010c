//! Images: found on the host, or pulled from their registry when the host's policy
//! (`CONTAINER_IMAGE_PULL`) allows it. `Prepare` makes sure of every image before the first
//! instance is made, so a stack never starts half-way for want of its last image; a create
//! that still finds one missing (a scale after someone removed it) pulls it too.

use std::collections::BTreeSet;
use std::time::Duration;

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::TryStreamExt;
use orch_core::provider::Report;

use super::Work;
use crate::client::Engine;
use crate::config::PullPolicy;
use crate::error::EngineError;

/// A pull may take minutes on a slow link; the engine's own timeout is for its answers.
const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl<R: Report> Work<'_, R> {
    /// Every image the desired services use, on the host.
    pub(crate) async fn images(&self) -> Result<(), EngineError> {
        let images: BTreeSet<&str> = (self.target.desired.services.values())
            .map(|service| service.image.as_str())
            .collect();
        for image in images {
            ensure_image(self.engine, image).await?;
        }
        Ok(())
    }
}

/// The image on the host: there already, or pulled now.
pub(crate) async fn ensure_image(engine: &Engine, image: &str) -> Result<(), EngineError> {
    let found = engine
        .call("images.inspect", image, |docker| async move {
            docker.inspect_image(image).await
        })
        .await;
    match found {
        Ok(_) => return Ok(()),
        Err(error) if error.is_not_found() => {}
        Err(error) => return Err(error),
    }
    let missing = |reason: String| EngineError::ImageMissing {
        image: image.to_owned(),
        host: engine.host().to_owned(),
        reason,
    };
    if engine.settings.pull == PullPolicy::Never {
        return Err(missing(
            "pulls are off (CONTAINER_IMAGE_PULL=never): build or load it there".to_owned(),
        ));
    }
    pull(engine, image).await.map_err(missing)
}

/// Pulls `image`; the registry's refusal (unknown image, no access, unreachable) is the
/// error, in the engine's words. The engine retries layers itself; orch does not retry a
/// registry that said no, so that a typo fails the deploy at once.
async fn pull(engine: &Engine, image: &str) -> Result<(), String> {
    let (from_image, tag) = pull_reference(image);
    tracing::info!(image, host = engine.host(), "pulling an image");
    let pulled = engine
        .call("images.pull", image, |docker| {
            let options = CreateImageOptionsBuilder::default()
                .from_image(from_image)
                .tag(tag)
                .build();
            async move {
                let stream = docker
                    .with_timeout(PULL_TIMEOUT)
                    .create_image(Some(options), None, None);
                match stream.try_collect::<Vec<_>>().await {
                    Ok(_) => Ok(Ok(())),
                    Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                    | Err(bollard::errors::Error::DockerStreamError { error: message }) => Ok(Err(message)),
                    Err(other) => Err(other),
                }
            }
        })
        .await;
    match pulled {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(format!("cannot be pulled: {message}")),
        Err(error) => Err(format!("cannot be pulled: {error}")),
    }
}

/// What the engine's pull takes: the name, and the tag (or `""` with a digest). A name
/// without either means `latest`; an empty tag would pull every tag of the repository.
fn pull_reference(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => (&image[..image.len() - tag.len() - 1], tag),
        None => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::pull_reference;

    #[test]
    fn a_reference_pulls_its_one_tag() {
        assert_eq!(pull_reference("busybox"), ("busybox", "latest"));
        assert_eq!(pull_reference("prom/prometheus:v3.9.0"), ("prom/prometheus", "v3.9.0"));
        assert_eq!(
            pull_reference("127.0.0.1:5000/team/app"),
            ("127.0.0.1:5000/team/app", "latest"),
            "a registry's port is not a tag"
        );
        assert_eq!(pull_reference("127.0.0.1:5000/app:1.2"), ("127.0.0.1:5000/app", "1.2"));
        assert_eq!(pull_reference("app@sha256:abc"), ("app@sha256:abc", ""));
    }
}
