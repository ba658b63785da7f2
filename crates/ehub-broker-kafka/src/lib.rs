//! # ehub-broker-kafka
//!
//! The broker's Kafka front: Kafka clients (librdkafka, kafka-python, aiokafka, the Java
//! client) produce to and consume from the same hubs as AMQP clients, as on Azure Event Hubs:
//! topic = hub, partitions one to one, Kafka offset = sequence number, timestamps = enqueued
//! time. Authentication is SASL PLAIN with the user `$ConnectionString` and a connection string
//! as password, checked against the broker's policies like AMQP's tokens.
//!
//! Requests are decoded and responses encoded by the [`kafka_protocol`] crate; the versions
//! advertised are those it decodes ([`versions::ADVERTISED`]). Kafka consumer groups are
//! separate from Event Hubs consumer groups (namespace-wide, created on first use); their
//! committed offsets are durable in `<data-dir>/_kafka`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ehub_broker_core::{Broker, CoreConfig};
//! use ehub_broker_kafka::{Endpoint, KafkaConfig};
//! let broker = Broker::open(CoreConfig::default())?;
//! let endpoint = Endpoint::new(broker, KafkaConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9092").await?;
//! endpoint.serve(listener, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod codec;
mod conn;
mod groups;
pub mod mapping;
pub mod offsets;
mod producers;
pub mod versions;

use ehub_broker_core::Broker;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The Kafka front's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// The `host:port` given to clients in Metadata and FindCoordinator, which they connect to
    /// for everything after bootstrapping. `None`: the address each client reached, so it
    /// works without configuration unless a port mapping or proxy sits in between.
    pub advertised: Option<(String, u16)>,
    /// The same for clients of the TLS listener (SASL_SSL), whose address differs.
    pub advertised_tls: Option<(String, u16)>,
    /// Largest request accepted; a larger one closes its connection (Event Hubs closes
    /// connections on requests over 1,046,528 bytes; clients' default `max.request.size` is
    /// 1 MiB, and a request carries a little more than its records).
    pub max_request_size: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig { advertised: None, advertised_tls: None, max_request_size: 2 * 1024 * 1024 }
    }
}

/// How a listener's connections are carried.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP: SASL_PLAINTEXT, the emulator's port 9092.
    Plain,
    /// TLS with this server configuration: SASL_SSL, the service's port 9093.
    Tls(Arc<rustls::ServerConfig>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Plain => "Plain",
            Transport::Tls(_) => "Tls",
        })
    }
}

/// Why the front could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The offsets store could not be opened.
    #[error("opening the Kafka offsets store in {path}: {source}")]
    Storage {
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What kind of error an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Storage.
    Storage,
}

impl Error {
    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Storage { .. } => ErrorKind::Storage,
        }
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Counters of the Kafka front.
#[derive(Debug, Default)]
pub struct KafkaMetrics {
    pub(crate) requests: Family<Vec<(&'static str, &'static str)>, Counter>,
    pub(crate) connections: Gauge,
    pub(crate) refused: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl KafkaMetrics {
    pub(crate) fn request(&self, api: &'static str) {
        self.requests.get_or_create(&vec![("api", api)]).inc();
    }

    pub(crate) fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&vec![("reason", reason)]).inc();
    }
}

/// The Kafka front: one per broker.
#[derive(Debug)]
pub struct Endpoint {
    pub(crate) broker: Arc<Broker>,
    pub(crate) config: KafkaConfig,
    pub(crate) offsets: Arc<offsets::OffsetStore>,
    pub(crate) producers: producers::Producers,
    pub(crate) groups: groups::Coordinator,
    pub(crate) metrics: KafkaMetrics,
}

/// How far back the start looks for idempotent producers' batches: longer than clients retry
/// a batch (librdkafka's and Java's `delivery.timeout.ms` default to 120–300 s).
const RECOVERY_WINDOW_MS: i64 = 10 * 60 * 1000;
/// At most this much of each partition's tail is read for it.
const RECOVERY_BYTES: usize = 64 << 20;

/// Rebuilds idempotent producers' state from the marks in every partition's recent tail.
fn recover_producers(broker: &Broker, producers: &producers::Producers) {
    let started = std::time::Instant::now();
    let since = ehub_broker_core::now_millis() - RECOVERY_WINDOW_MS;
    let (mut marks, mut read) = (0usize, 0usize);
    for hub in broker.hubs() {
        let name: Arc<str> = Arc::from(hub.name.as_str());
        for (i, p) in hub.partitions.iter().enumerate() {
            let info = p.info();
            if info.is_empty || info.last_enqueued_time.is_none_or(|t| t < since) {
                continue;
            }
            let pos = ehub_partition_log::StartPosition::Time { millis: since, inclusive: true };
            let Ok(mut seq) = p.resolve(&pos) else { continue };
            let mut bytes = 0;
            while seq < p.committed_seq() && bytes < RECOVERY_BYTES {
                let events = match p.read(seq, 4096, 4 << 20) {
                    Ok(e) if !e.is_empty() => e,
                    _ => break,
                };
                bytes += events.iter().map(|e| e.payload.len()).sum::<usize>();
                seq = events[events.len() - 1].sequence_number + 1;
                marks += producers.recover(&name, i as i32, &events);
            }
            read += bytes;
        }
    }
    if marks > 0 {
        tracing::info!(
            batches = marks,
            bytes_read = read,
            took_ms = started.elapsed().as_millis() as u64,
            "Kafka: idempotent producers' recent batches recovered from the logs"
        );
    }
}

impl Endpoint {
    /// The front on `broker`; opens the committed offsets in `<data-dir>/_kafka` (blocking IO).
    pub fn new(broker: Arc<Broker>, config: KafkaConfig) -> Result<Arc<Self>, Error> {
        let path = broker.config().data_dir.join("_kafka");
        let sync = matches!(broker.config().fsync, ehub_partition_log::FsyncPolicy::Always);
        let offsets =
            offsets::OffsetStore::open(&path, sync).map_err(|source| Error::Storage { path: path.clone(), source })?;
        let secret = offsets.secret().map_err(|source| Error::Storage { path, source })?;
        let producers = producers::Producers::new(secret);
        // Reading partitions' tails at every start is only worth it once idempotent producers
        // have written: a broker that never served one starts without touching its logs.
        if offsets.issued_producer_ids() {
            recover_producers(&broker, &producers);
        }
        Ok(Arc::new(Endpoint {
            broker,
            config,
            offsets: Arc::new(offsets),
            producers,
            groups: groups::Coordinator::default(),
            metrics: KafkaMetrics::default(),
        }))
    }

    /// Adds the front's metrics to `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register("ehub_kafka_requests", "Kafka requests by API", self.metrics.requests.clone());
        registry.register("ehub_kafka_connections", "Open Kafka connections", self.metrics.connections.clone());
        registry.register(
            "ehub_kafka_refused",
            "Kafka connections closed or refused, by reason",
            self.metrics.refused.clone(),
        );
    }

    /// Serves Kafka clients on `listener` (SASL_PLAINTEXT) until `shutdown` is cancelled; then
    /// closes every connection and returns.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
        self.serve_listeners(vec![(listener, Transport::Plain)], shutdown).await
    }

    /// Serves Kafka clients on every listener, each plain (SASL_PLAINTEXT) or TLS (SASL_SSL),
    /// until `shutdown` is cancelled; then closes every connection and returns.
    pub async fn serve_listeners(
        self: Arc<Self>,
        listeners: Vec<(TcpListener, Transport)>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let tracker = TaskTracker::new();
        let sweeper = tokio::spawn(groups::sweep(Arc::clone(&self), shutdown.clone()));
        for (listener, transport) in listeners {
            let tls = match transport {
                Transport::Plain => None,
                Transport::Tls(config) => Some(tokio_rustls::TlsAcceptor::from(config)),
            };
            tracker.spawn(Arc::clone(&self).accept(listener, tls, shutdown.clone(), tracker.clone()));
        }
        shutdown.cancelled().await;
        tracker.close();
        tracker.wait().await;
        sweeper.abort();
        Ok(())
    }

    async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        loop {
            let (sock, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let slot = match self.broker.admission().admit(peer.ip()) {
                Ok(slot) => slot,
                Err(r) => {
                    tracing::warn!(peer = %peer, reason = r.as_str(), "Kafka endpoint: connection refused");
                    self.metrics.refuse(r.as_str());
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            let (ep, stop) = (Arc::clone(&self), shutdown.clone());
            tracker.spawn(conn::run(ep, sock, peer, slot, stop, tls.clone()));
        }
    }
}
