//! A real broker on a loopback port, in-process, for client tests.
#![allow(dead_code)]

use ehub_broker::{serve_listeners, Broker, CoreConfig, Listener, Protocol};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Every test is bounded by this.
pub const T: Duration = Duration::from_secs(60);

pub struct TestBroker {
    pub addr: SocketAddr,
    /// AMQP over WebSockets (plain), on a port of its own.
    pub ws_addr: SocketAddr,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    /// Starts a broker on `dir`, on `addr` (port 0 = any).
    pub async fn start_at(dir: &Path, addr: &str) -> TestBroker {
        let cfg = CoreConfig { data_dir: dir.to_owned(), ..Default::default() };
        let broker = Broker::open(cfg).unwrap();
        let listener = bind(addr).await;
        let addr = listener.local_addr().unwrap();
        let ws = bind("127.0.0.1:0").await;
        let ws_addr = ws.local_addr().unwrap();
        let listeners = vec![
            Listener { socket: listener, protocol: Protocol::Amqp },
            Listener { socket: ws, protocol: Protocol::AmqpWebSocket },
        ];
        let stop = CancellationToken::new();
        let s = stop.clone();
        let handle = tokio::spawn(async move { serve_listeners(broker, listeners, s).await.unwrap() });
        TestBroker { addr, ws_addr, stop, handle }
    }

    pub fn connection_string(&self) -> String {
        connection_string(self.addr, "SAS_KEY_VALUE")
    }

    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(T, self.handle).await.unwrap().unwrap();
    }
}

async fn bind(addr: &str) -> tokio::net::TcpListener {
    // A restarted broker may find its old port in TIME_WAIT for a moment.
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}")
}

pub fn connection_string(addr: SocketAddr, key: &str) -> String {
    format!(
        "Endpoint=sb://{addr};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={key};UseDevelopmentEmulator=true;"
    )
}

/// A broker on a fresh temporary directory.
pub struct Fixture {
    pub broker: TestBroker,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_at(dir.path(), "127.0.0.1:0").await;
    Fixture { broker, dir }
}
