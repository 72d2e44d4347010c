//! An instance's files and secrets on the engine's host, bind-mounted read-only:
//! `<dir>/<deployment>/<service>-<index>/files/<n>` at each file's path, and
//! `…/secrets/<name>` (0400, owned as the service asks) as `/run/secrets`. `dir` is on
//! tmpfs, so a secret never reaches a disk, and read-only root file systems still work.
//!
//! The directory is written anew before each container is made: into a fresh directory that
//! is then renamed into place, so a crash never leaves a half-written one to be mounted.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bollard::models::{Mount, MountType};
use orch_core::provider::Report;
use orch_core::template::payload::SECRETS_DIR;
use orch_core::template::render::{render, InstanceContext};
use orch_core::template::Service;
use secrecy::{ExposeSecret, SecretString};

use super::instances::Member;
use super::Work;
use crate::error::EngineError;

impl<R: Report> Work<'_, R> {
    /// Writes the member's files (rendered for it) and secrets, and gives their mounts.
    pub(crate) async fn payload(&self, member: &Member<'_>) -> Result<Vec<Mount>, EngineError> {
        let service = member.service;
        if !Payload::wanted(service) {
            return Ok(Vec::new());
        }
        let Some(dir) = self.engine.settings.payload_dir.as_deref() else {
            return Err(EngineError::Unsupported(
                "carry files or secrets to an engine on another machine",
            ));
        };
        let payload = Payload::new(dir, self.target.deployment_id, member.service_name, member.index);
        let context = InstanceContext::new(member.service_name, member.index, &self.target.desired.services);
        let files = service
            .files
            .iter()
            .map(|file| render(&file.content, &context))
            .collect();
        let secrets = match service.secrets.is_empty() {
            true => BTreeMap::new(),
            false => self.report.secrets().await?,
        };
        let contents = Contents {
            files,
            secrets: &secrets,
        };
        payload.write(member.key, service, contents).await?;
        Ok(payload.mounts(service))
    }

    /// Removes an instance's files and secrets.
    pub(crate) async fn remove_payload(&self, key: &str, service: &str, index: u32) -> Result<(), EngineError> {
        match self.engine.settings.payload_dir.as_deref() {
            Some(dir) => {
                Payload::new(dir, self.target.deployment_id, service, index)
                    .remove(key)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Removes the files and secrets of every instance of the deployment.
    pub(crate) async fn remove_all_payloads(&self) -> Result<(), EngineError> {
        match self.engine.settings.payload_dir.as_deref() {
            Some(dir) => remove_deployment(dir, self.target.deployment_id).await,
            None => Ok(()),
        }
    }
}

/// The rendered content of an instance's files and the secrets it mounts.
pub(crate) struct Contents<'a> {
    pub files: Vec<String>,
    pub secrets: &'a BTreeMap<String, SecretString>,
}

/// One instance's directory.
pub(crate) struct Payload {
    root: PathBuf,
}

impl Payload {
    pub(crate) fn new(dir: &Path, deployment_id: &str, service: &str, index: u32) -> Self {
        Self {
            root: deployment_dir(dir, deployment_id).join(format!("{service}-{index}")),
        }
    }

    /// Whether the service has anything to mount.
    pub(crate) fn wanted(service: &Service) -> bool {
        !service.files.is_empty() || !service.secrets.is_empty()
    }

    /// The bind mounts of `service`'s files and secrets.
    pub(crate) fn mounts(&self, service: &Service) -> Vec<Mount> {
        let bind = |source: PathBuf, target: &str| Mount {
            target: Some(target.to_owned()),
            source: Some(source.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Default::default()
        };
        let mut mounts: Vec<Mount> = (service.files.iter().enumerate())
            .map(|(index, file)| bind(self.root.join("files").join(index.to_string()), &file.path))
            .collect();
        if !service.secrets.is_empty() {
            mounts.push(bind(self.root.join("secrets"), SECRETS_DIR));
        }
        mounts
    }

    /// Writes the directory for `service` with `contents`, replacing an older one.
    pub(crate) async fn write(&self, key: &str, service: &Service, contents: Contents<'_>) -> Result<(), EngineError> {
        let mut secrets = Vec::new();
        for mount in &service.secrets {
            let value = contents.secrets.get(&mount.name).ok_or_else(|| EngineError::Payload {
                key: key.to_owned(),
                message: format!("the deployment has no secret '{}'", mount.name),
            })?;
            secrets.push((mount.clone(), value.clone()));
        }
        let modes: Vec<u32> = service.files.iter().map(|file| file.mode).collect();
        let root = self.root.clone();
        let files = contents.files;
        let written = tokio::task::spawn_blocking(move || write_dir(&root, &files, &modes, &secrets)).await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(self.failed(key, &error)),
            Err(join) => Err(EngineError::Payload {
                key: key.to_owned(),
                message: join.to_string(),
            }),
        }
    }

    /// Removes the directory (an instance that is gone).
    pub(crate) async fn remove(&self, key: &str) -> Result<(), EngineError> {
        remove_tree(&self.root).await.map_err(|error| self.failed(key, &error))
    }

    fn failed(&self, key: &str, error: &io::Error) -> EngineError {
        EngineError::Payload {
            key: key.to_owned(),
            message: format!("{}: {error}", self.root.display()),
        }
    }
}

fn deployment_dir(dir: &Path, deployment_id: &str) -> PathBuf {
    dir.join(deployment_id)
}

/// Removes every instance's directory of a deployment.
pub(crate) async fn remove_deployment(dir: &Path, deployment_id: &str) -> Result<(), EngineError> {
    let root = deployment_dir(dir, deployment_id);
    remove_tree(&root).await.map_err(|error| EngineError::Payload {
        key: "*".to_owned(),
        message: format!("{}: {error}", root.display()),
    })
}

async fn remove_tree(path: &Path) -> io::Result<()> {
    let path = path.to_owned();
    let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(path))
        .await
        .map_err(io::Error::other)?;
    match removed {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn write_dir(
    root: &Path,
    files: &[String],
    modes: &[u32],
    secrets: &[(orch_core::template::SecretMount, SecretString)],
) -> io::Result<()> {
    let parent = root.parent().expect("an instance's directory has a parent");
    std::fs::create_dir_all(parent)?;
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
    let fresh = parent.join(format!(
        ".{}.{}",
        root.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir(&fresh)?;
    let files_dir = fresh.join("files");
    std::fs::create_dir(&files_dir)?;
    for (index, (content, mode)) in files.iter().zip(modes).enumerate() {
        let path = files_dir.join(index.to_string());
        std::fs::write(&path, content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
    }
    if !secrets.is_empty() {
        let secrets_dir = fresh.join("secrets");
        std::fs::create_dir(&secrets_dir)?;
        for (mount, value) in secrets {
            let path = secrets_dir.join(&mount.name);
            std::fs::write(&path, value.expose_secret())?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
            std::os::unix::fs::chown(&path, Some(mount.uid), Some(mount.gid))?;
        }
        // Anyone may list the names; only each file's owner reads its value.
        std::fs::set_permissions(&secrets_dir, std::fs::Permissions::from_mode(0o555))?;
    }
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
    match std::fs::remove_dir_all(root) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    std::fs::rename(&fresh, root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::Template;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn files_and_secrets_are_written_with_their_modes_and_removed() {
        let template = Template::parse_text(
            "name: s\nsecrets: {token: {}}\nservices:\n  web:\n    image: x\n    class: gateway\n    files: [{path: /etc/a.conf, content: x, mode: \"0640\"}]\n    secrets: [{name: token, uid: 1234, gid: 1234}]\n",
        )
        .unwrap();
        let service = &template.services["web"];
        let dir = std::env::temp_dir().join(format!("orch-payload-{}", std::process::id()));
        let payload = Payload::new(&dir, "d", "web", 0);
        let secrets = BTreeMap::from([("token".to_owned(), SecretString::from("s3cret"))]);
        for content in ["first", "second"] {
            let contents = Contents {
                files: vec![content.to_owned()],
                secrets: &secrets,
            };
            payload.write("container:web:0", service, contents).await.unwrap();
        }
        let file = dir.join("d/web-0/files/0");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "second");
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o640);
        let secret = std::fs::metadata(dir.join("d/web-0/secrets/token")).unwrap();
        assert_eq!((secret.mode() & 0o777, secret.uid()), (0o400, 1234));
        let targets: Vec<_> = payload.mounts(service).into_iter().map(|m| m.target.unwrap()).collect();
        assert_eq!(targets, ["/etc/a.conf", "/run/secrets"]);
        let none = BTreeMap::new();
        let missing = Contents {
            files: vec![String::new()],
            secrets: &none,
        };
        assert!(payload.write("k", service, missing).await.is_err());
        remove_deployment(&dir, "d").await.unwrap();
        assert!(!dir.join("d").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
