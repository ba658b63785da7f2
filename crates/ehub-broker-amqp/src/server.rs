//! The listeners: accept connections, cap their number, and shut down cleanly.

use crate::connection::ConnTask;
use ehub_broker_core::Broker;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// AMQP 1.0 straight on TCP (the emulator's port 5672).
    Amqp,
    /// AMQP over WebSockets: an HTTP upgrade on `/$servicebus/websocket` with subprotocol
    /// `AMQPWSB10`, then AMQP in binary messages (the service's port 443, without TLS here).
    AmqpWebSocket,
}

/// A bound socket and the protocol served on it.
#[derive(Debug)]
pub struct Listener {
    /// The bound socket.
    pub socket: TcpListener,
    /// What it serves.
    pub protocol: Protocol,
}

/// Time a client gets to complete the WebSocket upgrade.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves AMQP on `listener` until `shutdown` is cancelled; then closes every connection with
/// `amqp:connection:forced`, waits for the connection tasks, and flushes and fsyncs storage.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    serve_listeners(broker, vec![Listener { socket: listener, protocol: Protocol::Amqp }], shutdown).await
}

/// [`serve`] on several listeners at once, sharing one connection limit.
pub async fn serve_listeners(
    broker: Arc<Broker>,
    listeners: Vec<Listener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(broker.config().max_connections));
    let tracker = TaskTracker::new();
    let acceptors: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            tokio::spawn(accept_loop(Arc::clone(&broker), l, Arc::clone(&limit), tracker.clone(), shutdown.clone()))
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
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
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
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            warn!(peer = %peer, "connection limit reached; refusing connection");
            drop(sock);
            continue;
        };
        let _ = sock.set_nodelay(true);
        let (broker, stop, protocol) = (Arc::clone(&broker), shutdown.clone(), listener.protocol);
        tracker.spawn(async move {
            run_connection(broker, sock, peer.to_string(), protocol, stop).await;
            drop(permit);
        });
    }
}

async fn run_connection(
    broker: Arc<Broker>,
    sock: TcpStream,
    peer: String,
    protocol: Protocol,
    stop: CancellationToken,
) {
    match protocol {
        Protocol::Amqp => ConnTask::new(broker, sock, peer).run(stop).await,
        Protocol::AmqpWebSocket => {
            let ws = tokio::select! {
                _ = stop.cancelled() => return,
                r = tokio::time::timeout(UPGRADE_TIMEOUT, ehub_amqp_endpoint::websocket::accept(sock)) => r,
            };
            match ws {
                Ok(Ok(ws)) => ConnTask::new(broker, ws, peer).run(stop).await,
                Ok(Err(e)) => debug!(peer = %peer, error = %e, "WebSocket upgrade refused"),
                Err(_) => debug!(peer = %peer, "WebSocket upgrade timed out"),
            }
        }
    }
}
