//! The HTTP server: hyper with the limits a public endpoint needs and `axum::serve` does not
//! offer: a deadline for a request's headers (which also closes an idle keep-alive
//! connection), a cap on open connections (logged and counted when reached, so that
//! thousands of idle sockets cannot starve `/health`), and a graceful shutdown that lets
//! requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::tls::TlsConfig;

/// How long requests in flight may take to finish once shutdown begins.
const DRAIN: Duration = Duration::from_secs(30);

/// The connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request's headers must have arrived within this, counted from when the server
    /// waits for them (so an idle keep-alive connection is closed after it too).
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves; with `tls`, over TLS only.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<TlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(tls) = &tls {
        tls.reload_on_hangup();
    }
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only, as axum is built here; hyper's own builder, since the version-detecting
    // one waits for a silent client's first bytes with no deadline.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut saturated = false;
    loop {
        if permits.available_permits() == 0 && !saturated {
            metrics::counter!("api_connections_saturated_total").increment(1);
            tracing::warn!(
                max = limits.max_connections,
                "the connection limit is reached: new connections wait"
            );
        }
        saturated = permits.available_permits() == 0;
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most often: wait a little rather than spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = router.clone().map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            request.map(Body::new)
        });
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        let handshake_deadline = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let service = TowerToHyperService::new(service);
            let served = match tls {
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    // The handshake has the headers' deadline: a silent client holds no slot.
                    let Ok(Ok(stream)) = tokio::time::timeout(handshake_deadline, acceptor.accept(stream)).await else {
                        tracing::debug!(%peer, "TLS handshake failed or timed out");
                        return;
                    };
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after {DRAIN:?}; stopping anyway");
    }
    Ok(())
}
