//! The listeners: accept connections, cap their number, and shut down cleanly.

use crate::connection::{Admitted, NewConn};
use crate::limits::AmqpLimits;
use crate::metrics::AmqpMetrics;
use ehub_amqp_codec::Error as AmqpError;
use ehub_broker_core::Broker;
use ehub_model::conditions;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// What a listener speaks.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// AMQP 1.0 straight on TCP (the emulator's port 5672).
    Amqp,
    /// AMQP over WebSockets: an HTTP upgrade on `/$servicebus/websocket` with subprotocol
    /// `AMQPWSB10`, then AMQP in binary messages (the service's port 443, without TLS).
    AmqpWebSocket,
    /// AMQP 1.0 over TLS (the service's port 5671).
    AmqpTls(Arc<rustls::ServerConfig>),
    /// AMQP over WebSockets over TLS (the service's port 443).
    AmqpWebSocketTls(Arc<rustls::ServerConfig>),
}

/// A bound socket and the protocol served on it.
#[derive(Debug)]
pub struct Listener {
    /// The bound socket.
    pub socket: TcpListener,
    /// What it serves.
    pub protocol: Protocol,
}

/// Time a client gets to complete the TLS handshake and the WebSocket upgrade.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves AMQP on `listener` until `shutdown` is cancelled; then closes every connection with
/// `amqp:connection:forced`, waits for the connection tasks, and flushes and fsyncs storage.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_listeners(broker, vec![Listener { socket: listener, protocol: Protocol::Amqp }], shutdown).await
}

/// [`serve`] on several listeners at once, sharing the core's connection limits.
pub async fn serve_listeners(
    broker: Arc<Broker>,
    listeners: Vec<Listener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_listeners_with(broker, listeners, shutdown, ServeOptions::default()).await
}

/// The AMQP front's settings besides the listeners.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Where connections, sessions, links and refusals are counted.
    pub metrics: Arc<AmqpMetrics>,
    /// Per-connection limits and idle rules.
    pub limits: AmqpLimits,
}

/// Connections refused over a limit that are still told why (an AMQP `close` with
/// `amqp:resource-limit-exceeded` after their `open`) at once; past this they are dropped.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// Time a refused connection gets to send its `open` and read the refusal.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// [`serve_listeners`] with `options`.
pub async fn serve_listeners_with(
    broker: Arc<Broker>,
    listeners: Vec<Listener>,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> std::io::Result<()> {
    let tracker = TaskTracker::new();
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            tokio::spawn(accept_loop(
                Arc::clone(&broker),
                l,
                Arc::clone(&refusals),
                tracker.clone(),
                shutdown.clone(),
                options.clone(),
            ))
        })
        .collect();
    for a in acceptors {
        a.await.map_err(std::io::Error::other)?;
    }
    tracker.close();
    tracker.wait().await;
    let b = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || b.shutdown_storage()).await.map_err(std::io::Error::other)?;
    info!("broker stopped");
    Ok(())
}

async fn accept_loop(
    broker: Arc<Broker>,
    listener: Listener,
    refusals: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    options: ServeOptions,
) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.socket.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = sock.set_nodelay(true);
        let admitted = broker.admission().admit(peer.ip());
        let (broker, stop, protocol, options) =
            (Arc::clone(&broker), shutdown.clone(), listener.protocol.clone(), options.clone());
        match admitted {
            Ok(slot) => {
                tracker.spawn(async move {
                    let task = NewConn::new(broker, peer, options, Admitted::Slot(slot));
                    run_connection(task, sock, protocol, stop).await;
                });
            }
            Err(why) => {
                let limit = broker.admission().limit(why);
                warn!(peer = %peer, limit = why.as_str(), max = limit, "connection refused: limit reached");
                options.metrics.refuse(why.as_str());
                // Tell the client why when few refusals are in flight; drop it otherwise, so
                // that a flood costs nothing but the accept.
                let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() else { continue };
                let error = AmqpError::new(conditions::RESOURCE_LIMIT_EXCEEDED, why.description(limit));
                tracker.spawn(async move {
                    let task = NewConn::new(broker, peer, options, Admitted::Refused(error));
                    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, run_connection(task, sock, protocol, stop)).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Runs one connection over its protocol's stack. Each stack's future is boxed: unboxed, every
/// connection's task would be as large as the largest (WebSockets over TLS, ~15 KB), where a
/// plain AMQP connection needs ~3 KB; this keeps an idle connection's memory small.
async fn run_connection(task: NewConn, sock: TcpStream, protocol: Protocol, stop: CancellationToken) {
    let peer = task.peer().to_owned();
    match protocol {
        Protocol::Amqp => Box::pin(task.run(sock, stop)).await,
        Protocol::AmqpWebSocket => {
            if let Some(ws) = Box::pin(upgrade(sock, &peer, &stop)).await {
                Box::pin(task.run(ws, stop)).await
            }
        }
        Protocol::AmqpTls(config) => {
            if let Some(tls) = Box::pin(handshake(config, sock, &peer, &stop)).await {
                Box::pin(task.run(tls, stop)).await
            }
        }
        Protocol::AmqpWebSocketTls(config) => {
            let Some(tls) = Box::pin(handshake(config, sock, &peer, &stop)).await else { return };
            if let Some(ws) = Box::pin(upgrade(tls, &peer, &stop)).await {
                Box::pin(task.run(ws, stop)).await
            }
        }
    }
}

/// The server side of a TLS handshake, within [`UPGRADE_TIMEOUT`].
async fn handshake(
    config: Arc<rustls::ServerConfig>,
    sock: TcpStream,
    peer: &str,
    stop: &CancellationToken,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(sock);
    let r = tokio::select! {
        _ = stop.cancelled() => return None,
        r = tokio::time::timeout(UPGRADE_TIMEOUT, accept) => r,
    };
    match r {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            debug!(peer = %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(peer = %peer, "TLS handshake timed out");
            None
        }
    }
}

/// The WebSocket upgrade to `/$servicebus/websocket`, within [`UPGRADE_TIMEOUT`].
async fn upgrade<S>(sock: S, peer: &str, stop: &CancellationToken) -> Option<ehub_amqp_endpoint::websocket::WsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let r = tokio::select! {
        _ = stop.cancelled() => return None,
        r = tokio::time::timeout(UPGRADE_TIMEOUT, ehub_amqp_endpoint::websocket::accept(sock)) => r,
    };
    match r {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err(e)) => {
            debug!(peer = %peer, error = %e, "WebSocket upgrade refused");
            None
        }
        Err(_) => {
            debug!(peer = %peer, "WebSocket upgrade timed out");
            None
        }
    }
}
