//! A real broker on a loopback port, in-process, for client tests.
#![allow(dead_code)]

use ehub_broker::BrokerConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Every test is bounded by this.
pub const T: Duration = Duration::from_secs(60);

pub struct TestBroker {
    pub addr: SocketAddr,
    /// AMQP over WebSockets (plain), on a port of its own.
    pub ws_addr: SocketAddr,
    inner: ehub_broker::TestBroker,
}

impl TestBroker {
    /// Starts `ehub_broker::TestBroker` on `dir`, AMQP on `addr` (port 0 = any).
    pub async fn start_at(dir: &Path, addr: &str) -> TestBroker {
        let mut config = BrokerConfig::default();
        config.core.data_dir = dir.to_owned();
        config.listen = addr.parse().unwrap();
        // A restarted broker may find its old port in TIME_WAIT for a moment.
        for _ in 0..100 {
            match ehub_broker::TestBroker::start_with(config.clone()).await {
                Ok(inner) => {
                    return TestBroker { addr: inner.amqp_addr(), ws_addr: inner.websocket_addr(), inner };
                }
                Err(e) if e.kind() == ehub_broker::ErrorKind::Bind => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("starting the broker: {e}"),
            }
        }
        panic!("cannot bind {addr}")
    }

    pub fn connection_string(&self) -> String {
        self.inner.connection_string()
    }

    pub async fn stop(self) {
        tokio::time::timeout(T, self.inner.stop()).await.unwrap().unwrap();
    }
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
