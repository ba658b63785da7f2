//! Shared fixtures for the official-Rust-SDK interop tests and the comparison benchmark: a real
//! `ehub serve` process, and a recording proxy that decodes what a client sends.

pub mod dialect;

use bytes::BytesMut;
use ehub_amqp_codec::{decode_frame_bytes, split_frame, FrameBody, Performative, ProtocolHeader};
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Installs rustls' process-wide crypto provider. The official SDK's connector relies on the
/// process default, which rustls cannot pick once two providers are compiled in (the SDK brings
/// aws-lc-rs, our client ring). Call before opening an official SDK client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Logs to stderr with the filter (RUST_LOG syntax, e.g. `fe2o3_amqp=debug`) in the environment
/// variable `var`, when it is set.
pub fn log_to_stderr_from(var: &str) {
    if let Ok(filter) = std::env::var(var) {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    }
}

/// The connection string of Microsoft's emulator, pointed at `port`.
pub fn emulator_connection_string(port: u16) -> String {
    format!(
        "Endpoint=sb://localhost:{port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
    )
}

/// The official Rust SDK ignores `UseDevelopmentEmulator`; it needs this (reference §3.3).
pub fn custom_endpoint(port: u16) -> String {
    format!("amqp://127.0.0.1:{port}")
}

/// An official-SDK consumer client (hub `eh1`) on the `ehub serve` at `port`.
pub async fn sdk_consumer(port: u16) -> azure_messaging_eventhubs::ConsumerClient {
    azure_messaging_eventhubs::ConsumerClient::builder()
        .with_custom_endpoint(custom_endpoint(port))
        .open_with_connection_string(&emulator_connection_string(port), Some("eh1"))
        .await
        .expect("official SDK consumer opens against ehub serve")
}

/// Official-SDK receiver options: from the earliest event (inclusive), with an optional
/// prefetch and owner level.
pub fn sdk_from_earliest(
    prefetch: Option<u32>,
    owner_level: Option<i64>,
) -> azure_messaging_eventhubs::OpenReceiverOptions {
    use azure_messaging_eventhubs::{StartLocation, StartPosition};
    azure_messaging_eventhubs::OpenReceiverOptions {
        start_position: Some(StartPosition { location: StartLocation::Earliest, inclusive: true }),
        prefetch,
        owner_level,
        ..Default::default()
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `ehub serve` on a free port with its own data directory; killed on drop.
pub struct Broker {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// CPU time (user and system) a process has used so far, from `/proc/<pid>/stat`
/// (`"self"` for this process); zero where that is not readable.
pub fn cpu_time(pid: &str) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // Linux reports these in clock ticks of 1/100 s.
    std::time::Duration::from_millis(ticks * 10)
}

/// Path of the broker binary: `EHUB_BIN`, or the workspace's release build.
pub fn ehub_bin() -> PathBuf {
    std::env::var_os("EHUB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/ehub"))
}

impl Broker {
    /// Starts the broker with `fsync` (always, interval or never) and waits until it listens.
    pub fn start(fsync: &str) -> Broker {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let bin = ehub_bin();
        assert!(bin.exists(), "{} not found: run `cargo build --release` at the workspace root", bin.display());
        let child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--listen-blob",
                "off",
                "--listen-management",
                "off",
                "--listen-kafka",
                "off",
                "--data-dir",
            ])
            .arg(dir.path())
            .args(["--fsync", fsync])
            .stdout(Stdio::null())
            // EHUB_INTEROP_BROKER_LOG=path keeps the broker's log (set EHUB_LOG for its level).
            .stderr(match std::env::var_os("EHUB_INTEROP_BROKER_LOG") {
                Some(p) => Stdio::from(std::fs::File::create(format!("{}.{port}", p.to_string_lossy())).unwrap()),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "broker did not start listening");
            std::thread::sleep(Duration::from_millis(10));
        }
        Broker { child, port, _dir: dir }
    }

    /// The broker's process id (for RSS readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Consumes the protocol headers and complete AMQP frames at the front of `buf`, handing each
/// performative (with its channel and payload) to `f`.
fn drain_frames(buf: &mut BytesMut, mut f: impl FnMut(u16, Performative, bytes::Bytes)) {
    loop {
        if buf.len() >= 8 && ProtocolHeader::parse(&buf[..8]).ok().flatten().is_some() {
            let _ = buf.split_to(8);
            continue;
        }
        match split_frame(buf, u32::MAX) {
            Ok(Some(raw)) => {
                if let Ok(frame) = decode_frame_bytes(raw) {
                    if let FrameBody::Amqp(p, payload) = frame.body {
                        f(frame.channel, p, payload);
                    }
                }
            }
            _ => return,
        }
    }
}

/// One client-to-broker performative as recorded by [`RecordingProxy`], with the payload of
/// transfers (the encoded message) kept.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Which proxied connection (in accept order) it came from.
    pub conn: usize,
    /// The frame's channel.
    pub channel: u16,
    /// The performative.
    pub performative: Performative,
    /// The transfer payload (empty for other performatives).
    pub payload: bytes::Bytes,
}

/// A TCP proxy in front of the broker that decodes every AMQP frame the client sends (after the
/// protocol headers and SASL) and records it, then forwards the bytes unchanged.
/// `EHUB_PROXY_TRACE=1` also prints both directions' performatives.
pub struct RecordingProxy {
    /// The port clients connect to.
    pub port: u16,
    frames: Arc<Mutex<Vec<Recorded>>>,
    open: Arc<AtomicUsize>,
}

/// Copies `from` to `to` until either side ends, showing each chunk to `seen`.
async fn forward<R, W>(mut from: R, mut to: W, mut seen: impl FnMut(&[u8]))
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&chunk[..n]).await.is_err() {
            break;
        }
        seen(&chunk[..n]);
    }
    let _ = to.shutdown().await;
}

fn trace(direction: &str, conn: usize, channel: u16, p: &Performative) {
    let d = format!("{p:?}");
    eprintln!("{direction} conn={conn} ch={channel} {}", &d[..d.len().min(160)]);
}

impl RecordingProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: u16) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frames = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let tracing = std::env::var_os("EHUB_PROXY_TRACE").is_some();
        let (rec, live) = (frames.clone(), open.clone());
        tokio::spawn(async move {
            for conn in 0usize.. {
                let Ok((client, _)) = listener.accept().await else { return };
                let (rec, live) = (rec.clone(), live.clone());
                live.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let mut down_buf = BytesMut::new();
                    let down = tokio::spawn(forward(sr, cw, move |bytes| {
                        if tracing {
                            down_buf.extend_from_slice(bytes);
                            drain_frames(&mut down_buf, |channel, p, _| trace("S->C", conn, channel, &p));
                        }
                    }));
                    let mut up_buf = BytesMut::new();
                    forward(cr, sw, |bytes| {
                        up_buf.extend_from_slice(bytes);
                        drain_frames(&mut up_buf, |channel, p, payload| {
                            if tracing {
                                trace("C->S", conn, channel, &p);
                            }
                            rec.lock().unwrap().push(Recorded { conn, channel, performative: p, payload });
                        });
                    })
                    .await;
                    down.abort();
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        RecordingProxy { port, frames, open }
    }

    /// Everything recorded so far.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.frames.lock().unwrap())
    }

    /// Everything recorded, once every client has closed its connection (so nothing it sent
    /// is still in flight). Gives up waiting after 10 s.
    pub async fn take_when_closed(&self) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.take()
    }
}

/// A TCP proxy in front of the broker that keeps the last performatives in each direction, for
/// a load run to print when it stalls.
pub struct TracingProxy {
    /// The port clients connect to.
    pub port: u16,
    last: Arc<Mutex<std::collections::VecDeque<String>>>,
}

impl TracingProxy {
    /// Starts forwarding to `upstream`, keeping the last `keep` performatives of each direction.
    pub async fn start(upstream: u16, keep: usize) -> TracingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let last = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let kept = last.clone();
        tokio::spawn(async move {
            for conn in 0usize.. {
                let Ok((client, _)) = listener.accept().await else { return };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let note = move |kept: &Mutex<std::collections::VecDeque<String>>,
                                     dir: &str,
                                     ch: u16,
                                     p: &Performative| {
                        let d = format!("{p:?}");
                        let mut k = kept.lock().unwrap();
                        k.push_back(format!("{dir} conn={conn} ch={ch} {}", &d[..d.len().min(200)]));
                        while k.len() > 2 * keep {
                            k.pop_front();
                        }
                    };
                    let (down_kept, mut down_buf) = (kept.clone(), BytesMut::new());
                    let down = tokio::spawn(forward(sr, cw, move |bytes| {
                        down_buf.extend_from_slice(bytes);
                        drain_frames(&mut down_buf, |ch, p, _| note(&down_kept, "S->C", ch, &p));
                    }));
                    let mut up_buf = BytesMut::new();
                    forward(cr, sw, |bytes| {
                        up_buf.extend_from_slice(bytes);
                        drain_frames(&mut up_buf, |ch, p, _| note(&kept, "C->S", ch, &p));
                    })
                    .await;
                    down.abort();
                });
            }
        });
        TracingProxy { port, last }
    }

    /// The kept performatives, oldest first, one a line.
    pub fn last_frames(&self) -> String {
        self.last.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The interpreter with the official Python SDK: `EHUB_PYTHON`, or the venv `scripts/test`
/// creates (`interop/python/.venv`).
pub fn python_with_sdk() -> PathBuf {
    let p = std::env::var_os("EHUB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../python/.venv/bin/python"));
    assert!(
        p.exists(),
        "no Python with azure-eventhub at {}: run scripts/test (it creates interop/python/.venv) or set EHUB_PYTHON",
        p.display()
    );
    p
}

/// Runs `tests/python/dialect_ops.py` (the dialect comparison's operations, done by the
/// official Python SDK) against `connection_string`; panics with its output if it fails.
pub async fn python_sdk_dialect_ops(connection_string: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/dialect_ops.py");
    let out = tokio::process::Command::new(python_with_sdk())
        .arg(&script)
        .arg(connection_string)
        .kill_on_drop(true)
        .output()
        .await
        .expect("starting Python");
    assert!(
        out.status.success(),
        "the Python SDK's operations failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
