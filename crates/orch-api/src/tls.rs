//! TLS for the API (rustls): the certificate chain and key from PEM files, checked at start
//! (a bad file stops orch with its name), and read again on SIGHUP, so a renewed certificate
//! is served without a restart; a renewal that does not read keeps the one in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Where the certificate chain and its key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The server configuration in use, replaced on reload.
#[derive(Clone)]
pub struct TlsConfig {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").field("files", &self.files).finish()
    }
}

fn read(files: &TlsFiles) -> Result<ServerConfig, String> {
    let unreadable = |path: &Path, error: &dyn std::fmt::Display| format!("{}: {error}", path.display());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|error| unreadable(&files.cert, &error))?
        .collect::<Result<_, _>>()
        .map_err(|error| unreadable(&files.cert, &error))?;
    if chain.is_empty() {
        return Err(format!("{}: holds no certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|error| unreadable(&files.key, &error))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| {
            format!(
                "{} and {} do not go together: {error}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl TlsConfig {
    /// Reads both files; the error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let config = read(&files)?;
        Ok(Self {
            files,
            current: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().expect("the lock is never poisoned").clone()
    }

    /// Reads the files again; on an error the configuration in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let config = read(&self.files)?;
        *self.current.write().expect("the lock is never poisoned") = Arc::new(config);
        Ok(())
    }

    /// Reloads on every SIGHUP, for as long as the server runs.
    pub fn reload_on_hangup(&self) {
        let tls = self.clone();
        tokio::spawn(async move {
            let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP: the certificate is not reloaded");
                return;
            };
            while hangups.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!(cert = %tls.files.cert.display(), "TLS certificate reloaded"),
                    Err(why) => tracing::error!(%why, "TLS certificate not reloaded; the one in use stays"),
                }
            }
        });
    }
}
