//! Accepting HTTP/1.1 connections and answering each request through [`crate::api`].

use bytes::Bytes;
use ehub_broker_core::prometheus_client::registry::Registry;
use ehub_broker_core::Broker;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How management requests are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminAuth {
    /// A SAS token with Manage rights (`Authorization: SharedAccessSignature sr=…`), or an
    /// Entra ID token (`Bearer …`) when the core accepts those. The default.
    #[default]
    Sas,
    /// Every request is allowed (development only).
    None,
}

/// The management front's settings.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// How requests are authorized (`GET /health` never needs a token).
    pub auth: AdminAuth,
}

/// The management endpoint.
pub struct Endpoint {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: AdminConfig,
    pub(crate) stopping: CancellationToken,
    pub(crate) metrics: Option<Arc<Registry>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("config", &self.config).finish()
    }
}

/// Time a client gets to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Simultaneous management connections.
const MAX_CONNECTIONS: usize = 256;

impl Endpoint {
    /// An endpoint on `broker`.
    pub fn new(broker: Arc<Broker>, config: AdminConfig) -> Self {
        Endpoint { broker, config, stopping: CancellationToken::new(), metrics: None }
    }

    /// Serves `registry` on `GET /metrics` in the Prometheus (OpenMetrics) text format, after
    /// refreshing the core's state-derived metrics.
    pub fn with_metrics(mut self, registry: Arc<Registry>) -> Self {
        self.metrics = Some(registry);
        self
    }

    /// `GET /health` answers 503 once `token` is cancelled (the broker is stopping).
    pub fn with_stopping(mut self, token: CancellationToken) -> Self {
        self.stopping = token;
        self
    }

    /// Serves until `shutdown` is cancelled, then waits for the requests in progress.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let tracker = TaskTracker::new();
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (sock, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "management endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                tracing::warn!(peer = %peer, "management endpoint: connection limit reached; refusing connection");
                continue;
            };
            let (ep, stop) = (Arc::clone(&this), shutdown.clone());
            tracker.spawn(async move {
                let service = service_fn(move |mut req: http::Request<Incoming>| {
                    let ep = Arc::clone(&ep);
                    // The client's address, for the failed-authorization limit.
                    req.extensions_mut().insert(peer);
                    async move { Ok::<_, Infallible>(ep.handle(req).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(sock), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r {
                        tracing::debug!(peer = %peer, error = %e, "management connection ended with an error");
                    },
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.as_mut().await;
                    }
                }
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
    }

    /// Answers one request.
    pub async fn handle(self: &Arc<Self>, req: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
        crate::api::handle(self, req).await
    }
}
