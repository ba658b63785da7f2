//! The listener: accepts connections, caps their number, and shuts down cleanly.

use crate::connection::ConnTask;
use crate::state::Broker;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Serves AMQP on `listener` until `shutdown` is cancelled; then closes every connection with
/// `amqp:connection:forced`, waits for the connection tasks, and flushes and fsyncs storage.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(broker.config.max_connections));
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => {
                let (sock, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                    warn!(peer = %peer, "connection limit reached; refusing connection");
                    drop(sock);
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let task = ConnTask::new(Arc::clone(&broker), sock, peer.to_string());
                let stop = shutdown.clone();
                tracker.spawn(async move {
                    task.run(stop).await;
                    drop(permit);
                });
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    let b = Arc::clone(&broker);
    tokio::task::spawn_blocking(move || b.shutdown_storage()).await.map_err(std::io::Error::other)?;
    info!("broker stopped");
    Ok(())
}
