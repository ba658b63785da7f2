//! A real broker on a loopback port, in-process, for client tests.
#![allow(dead_code)]

use ehub_broker::BrokerConfig;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

// HTTP to the broker's management endpoint (and its other HTTP fronts), one request per
// connection.

/// One HTTP/1.1 request with `Connection: close`; the status and the JSON body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let status = resp[9..12].parse().unwrap();
    let json = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .filter(|b| !b.is_empty())
        .map_or(Value::Null, |b| serde_json::from_str(b).unwrap_or_else(|e| panic!("{e}: {b}")));
    (status, json)
}

pub fn token(key_name: &str, key: &str, resource: &str) -> String {
    let expiry = now_secs() + 3600;
    ehub_model::generate_sas_token(resource, key_name, key, expiry)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub fn root() -> String {
    token("RootManageSharedAccessKey", "SAS_KEY_VALUE", "sb://localhost/")
}

/// The raw answer to one request: status and body text.
pub async fn http_text(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let status = resp[9..12].parse().unwrap();
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}
