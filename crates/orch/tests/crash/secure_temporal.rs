//! A Temporal frontend that insists on TLS, a client certificate and an API key, as a
//! secured or hosted Temporal does: a TLS proxy in front of a dev server, which refuses a
//! handshake without a certificate its CA issued and every call without the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};

/// The server name on the proxy's certificate: orch must be told it (`TEMPORAL_TLS_SERVER_NAME`).
pub const SERVER_NAME: &str = "temporal.test";

/// What the proxy let through and what it refused.
#[derive(Default)]
pub struct Counts {
    pub calls: AtomicUsize,
    pub calls_refused: AtomicUsize,
    pub handshakes_refused: AtomicUsize,
}

impl Counts {
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// A fresh CA, the proxy's certificate for [`SERVER_NAME`], and a client certificate, as PEM
/// files in `dir` (the openssl CLI).
pub struct Certificates {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certificates {
    pub fn issue(dir: &Path) -> Self {
        super::common::new_ca(dir, "temporal-test-ca");
        let server = format!("subjectAltName=DNS:{SERVER_NAME}\nextendedKeyUsage=serverAuth\n");
        super::common::issue(dir, "server", "server", &server);
        super::common::issue(dir, "client", "client", "extendedKeyUsage=clientAuth\n");
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

fn tls_config(certificates: &Certificates) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&certificates.ca).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let chain = CertificateDer::pem_file_iter(&certificates.server_cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&certificates.server_key).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// A call refused as a gRPC server refuses it: `UNAUTHENTICATED` in a trailers-only answer.
fn unauthenticated() -> Response<BoxBody<Bytes, hyper::Error>> {
    Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "16")
        .header("grpc-message", "missing or wrong API key")
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .unwrap()
}

/// Serves one client connection: every call with the key goes to `upstream` on a connection
/// of its own, every other call is refused.
async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    upstream: SocketAddr,
    api_key: &'static str,
    counts: Arc<Counts>,
) {
    let Ok(upstream) = TcpStream::connect(upstream).await else {
        return;
    };
    let Ok((sender, connection)) =
        hyper::client::conn::http2::handshake::<_, _, Incoming>(TokioExecutor::new(), TokioIo::new(upstream)).await
    else {
        return;
    };
    tokio::spawn(connection);
    let expected = format!("Bearer {api_key}");
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut sender = sender.clone();
        let counts = counts.clone();
        let authorized = request
            .headers()
            .get("authorization")
            .is_some_and(|value| value.as_bytes() == expected.as_bytes());
        async move {
            if !authorized {
                counts.calls_refused.fetch_add(1, Ordering::SeqCst);
                return Ok::<_, hyper::Error>(unauthenticated());
            }
            counts.calls.fetch_add(1, Ordering::SeqCst);
            Ok(sender.send_request(request).await?.map(BodyExt::boxed))
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// Starts the proxy on 127.0.0.1 in front of the dev server at `upstream`; its address and
/// counts. It runs until the runtime stops.
pub async fn start(upstream: &str, certificates: &Certificates, api_key: &'static str) -> (SocketAddr, Arc<Counts>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(certificates)));
    let upstream: SocketAddr = upstream.parse().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let shared = counts.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counts) = (acceptor.clone(), shared.clone());
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => serve_connection(tls, upstream, api_key, counts).await,
                    Err(_) => {
                        counts.handshakes_refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (address, counts)
}
