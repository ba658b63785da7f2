//! Starting the whole broker from a [`BrokerConfig`]: the core, the AMQP (and WebSocket)
//! listeners and the Blob endpoint, each on its configured address, until a stop.

use crate::BrokerConfig;
use ehub_blob_store::{BlobStore, BlobStoreConfig, Durability};
use ehub_broker_amqp::{serve_listeners_with, Listener, Protocol, ServeOptions};
use ehub_broker_blob::Endpoint;
use ehub_broker_core::Broker;
use ehub_partition_log::FsyncPolicy;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why the broker could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    /// The partition logs could not be opened, or what was created at run time contradicts
    /// the configuration file.
    #[error("opening the data directory {path}: {source}")]
    Storage {
        /// The data directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: ehub_broker_core::CoreError,
    },
    /// The Blob store could not be opened.
    #[error("opening the Blob store in {path}: {source}")]
    BlobStore {
        /// Its directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: ehub_blob_store::StoreError,
    },
    /// TLS could not be set up (certificate or key unreadable, the development CA not
    /// writable).
    #[error(transparent)]
    Tls(#[from] crate::TlsError),
    /// The Kafka endpoint could not start.
    #[error(transparent)]
    Kafka(#[from] ehub_broker_kafka::Error),
    /// The Blob endpoint could not start.
    #[error(transparent)]
    Blob(#[from] ehub_broker_blob::Error),
    /// A listener could not be bound.
    #[error("binding {what} to {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// Broad classes of [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is wrong.
    Config,
    /// Storage failed.
    Storage,
    /// A listener address is taken or not allowed.
    Bind,
    /// Something else went wrong while serving.
    Io,
}

impl Error {
    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::Tls(_) => ErrorKind::Config,
            Error::Storage { source, .. } if source.kind() == ehub_broker_core::CoreErrorKind::Conflict => {
                ErrorKind::Config
            }
            Error::Storage { .. } | Error::BlobStore { .. } => ErrorKind::Storage,
            Error::Blob(e) if e.kind() == ehub_broker_blob::ErrorKind::Config => ErrorKind::Config,
            Error::Blob(_) | Error::Io(_) => ErrorKind::Io,
            Error::Kafka(_) => ErrorKind::Storage,
            Error::Bind { .. } => ErrorKind::Bind,
        }
    }

    /// Whether trying again may help (a port that may free up, passing I/O trouble).
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Bind | ErrorKind::Io)
    }
}

/// A running broker: where each front listens, and how to stop it.
#[derive(Debug)]
pub struct Running {
    /// Plain AMQP.
    pub amqp: SocketAddr,
    /// AMQP over WebSockets, if configured.
    pub websocket: Option<SocketAddr>,
    /// The Azure Blob endpoint, if configured.
    pub blob: Option<SocketAddr>,
    /// AMQP over TLS, if configured.
    pub tls: Option<SocketAddr>,
    /// AMQP over WebSockets over TLS, if configured.
    pub websocket_tls: Option<SocketAddr>,
    /// The HTTP management endpoint (health, hubs, consumer groups), if configured.
    pub management: Option<SocketAddr>,
    /// The Kafka endpoint, if configured.
    pub kafka: Option<SocketAddr>,
    /// The Kafka endpoint over TLS (SASL_SSL), if configured and TLS is on.
    pub kafka_tls: Option<SocketAddr>,
    /// The development CA's certificate (PEM) that clients must trust, with a self-signed
    /// TLS setup.
    pub ca: Option<PathBuf>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    /// A token that stops the broker when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, closes connections, flushes and fsyncs storage; returns once done.
    pub async fn stop(self) -> Result<(), Error> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the broker stops (after its shutdown token is cancelled).
    pub async fn wait(self) -> Result<(), Error> {
        self.task.await.map_err(std::io::Error::other)?
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind { what, addr, source })
}

/// Opens storage, binds every configured listener and serves until stopped. On return every
/// front is listening, so the addresses in [`Running`] (ports chosen by the OS for port 0)
/// can be handed to clients.
pub async fn start(config: BrokerConfig) -> Result<Running, Error> {
    config.validate()?;
    let data_dir = config.core.data_dir.clone();
    let core = config.core.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(core))
        .await
        .map_err(std::io::Error::other)?
        .map_err(|source| Error::Storage { path: data_dir.clone(), source })?;
    let amqp_socket = bind("AMQP", config.listen).await?;
    let amqp = amqp_socket.local_addr()?;
    let mut listeners = vec![Listener { socket: amqp_socket, protocol: Protocol::Amqp }];
    let mut websocket = None;
    if let Some(addr) = config.listen_websocket {
        let socket = bind("AMQP over WebSockets", addr).await?;
        websocket = Some(socket.local_addr()?);
        listeners.push(Listener { socket, protocol: Protocol::AmqpWebSocket });
    }
    let (tls_config, dir) = (config.tls.clone(), data_dir.clone());
    let tls_loaded = tokio::task::spawn_blocking(move || crate::tls::load(&tls_config, &dir))
        .await
        .map_err(std::io::Error::other)??;
    let (mut tls, mut websocket_tls, mut ca) = (None, None, None);
    let tls_server = tls_loaded.as_ref().map(|l| std::sync::Arc::clone(&l.server));
    if let Some(loaded) = tls_loaded {
        if let Some(addr) = config.tls.listen {
            let socket = bind("AMQP over TLS", addr).await?;
            tls = Some(socket.local_addr()?);
            listeners.push(Listener { socket, protocol: Protocol::AmqpTls(std::sync::Arc::clone(&loaded.server)) });
        }
        if let Some(addr) = config.tls.listen_websocket {
            let socket = bind("AMQP over WebSockets over TLS", addr).await?;
            websocket_tls = Some(socket.local_addr()?);
            listeners.push(Listener { socket, protocol: Protocol::AmqpWebSocketTls(loaded.server) });
        }
        ca = loaded.ca;
    }
    let shutdown = CancellationToken::new();
    let mut blob = None;
    let mut blob_front = None;
    if let Some(addr) = config.listen_blob {
        let durability = match config.core.fsync {
            FsyncPolicy::Always => Durability::Always,
            FsyncPolicy::Interval(d) => Durability::Interval(d),
            FsyncPolicy::Never => Durability::Never,
        };
        let path = data_dir.join("_blob");
        let store_config = BlobStoreConfig { durability, ..BlobStoreConfig::new(&path) };
        let store = tokio::task::spawn_blocking(move || BlobStore::open(store_config))
            .await
            .map_err(std::io::Error::other)?
            .map_err(|source| Error::BlobStore { path, source })?;
        let endpoint = Endpoint::with_auth_limit(
            std::sync::Arc::clone(&store),
            config.blob.clone(),
            std::sync::Arc::clone(broker.admission()),
        )?;
        endpoint.create_configured_containers().await?;
        let socket = bind("the Blob endpoint", addr).await?;
        blob = Some(socket.local_addr()?);
        blob_front = Some((endpoint, socket, store));
    }
    let (mut kafka, mut kafka_tls) = (None, None);
    let mut kafka_front = None;
    let kafka_tls_listen = config.listen_kafka_tls.zip(tls_server);
    if config.listen_kafka.is_some() || kafka_tls_listen.is_some() {
        let (b, k) = (std::sync::Arc::clone(&broker), config.kafka.clone());
        let endpoint = tokio::task::spawn_blocking(move || ehub_broker_kafka::Endpoint::new(b, k))
            .await
            .map_err(std::io::Error::other)??;
        let mut sockets = Vec::new();
        if let Some(addr) = config.listen_kafka {
            let socket = bind("the Kafka endpoint", addr).await?;
            kafka = Some(socket.local_addr()?);
            sockets.push((socket, ehub_broker_kafka::Transport::Plain));
        }
        if let Some((addr, server)) = kafka_tls_listen {
            let socket = bind("the Kafka endpoint over TLS", addr).await?;
            kafka_tls = Some(socket.local_addr()?);
            sockets.push((socket, ehub_broker_kafka::Transport::Tls(server)));
        }
        kafka_front = Some((endpoint, sockets));
    }
    // One registry for the core and every front, served on the management endpoint.
    let mut registry = ehub_broker_core::prometheus_client::registry::Registry::default();
    broker.metrics().register(&mut registry);
    broker.faults().register(&mut registry);
    let amqp_metrics = std::sync::Arc::new(ehub_broker_amqp::AmqpMetrics::default());
    amqp_metrics.register(&mut registry);
    if let Some((endpoint, _, _)) = &blob_front {
        endpoint.register_metrics(&mut registry);
    }
    if let Some((endpoint, _)) = &kafka_front {
        endpoint.register_metrics(&mut registry);
    }
    let mut management = None;
    let mut admin_front = None;
    if let Some(addr) = config.listen_management {
        let socket = bind("the management endpoint", addr).await?;
        management = Some(socket.local_addr()?);
        let endpoint = ehub_broker_admin::Endpoint::new(std::sync::Arc::clone(&broker), config.management.clone())
            .with_stopping(shutdown.clone())
            .with_metrics(std::sync::Arc::new(registry));
        admin_front = Some((endpoint, socket));
    }
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let admin_task = admin_front.map(|(endpoint, socket)| tokio::spawn(endpoint.serve(socket, stop.clone())));
        let blob_task =
            blob_front.map(|(endpoint, socket, store)| (tokio::spawn(endpoint.serve(socket, stop.clone())), store));
        let kafka_task =
            kafka_front.map(|(endpoint, sockets)| tokio::spawn(endpoint.serve_listeners(sockets, stop.clone())));
        let options = ServeOptions { metrics: amqp_metrics, limits: config.amqp.clone() };
        let amqp_result = serve_listeners_with(broker, listeners, stop, options).await;
        if let Some((t, store)) = blob_task {
            t.await.map_err(std::io::Error::other)??;
            tokio::task::spawn_blocking(move || store.shutdown()).await.map_err(std::io::Error::other)?;
        }
        if let Some(t) = kafka_task {
            t.await.map_err(std::io::Error::other)??;
        }
        if let Some(t) = admin_task {
            t.await.map_err(std::io::Error::other)?;
        }
        amqp_result?;
        Ok(())
    });
    Ok(Running { amqp, websocket, blob, tls, websocket_tls, management, kafka, kafka_tls, ca, shutdown, task })
}

/// A broker for tests, in one line: in-process, on free loopback ports (AMQP, AMQP over
/// WebSockets and Blob), in a temporary data directory, `fsync=never` (it is thrown away), with
/// the default hub `eh1` of 4 partitions. Stopped when dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ehub_broker::Error> {
/// let broker = ehub_broker::TestBroker::start().await?;
/// let cs = broker.connection_string(); // for ehub or any official SDK
/// assert!(cs.contains("UseDevelopmentEmulator=true"));
/// let storage = broker.storage_connection_string(); // for a Blob checkpoint store
/// assert!(storage.contains("devstoreaccount1"));
/// broker.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TestBroker {
    running: Option<Running>,
    _dir: Option<tempfile::TempDir>,
}

impl TestBroker {
    /// Starts one with the defaults above.
    pub async fn start() -> Result<TestBroker, Error> {
        let dir = tempfile::tempdir()?;
        let mut config = BrokerConfig::default();
        config.core.data_dir = dir.path().to_owned();
        let mut t = Self::start_with(config).await?;
        t._dir = Some(dir);
        Ok(t)
    }

    /// Starts one with `config`, on free loopback ports for every listener the config leaves at
    /// its default address, and `fsync=never`; `config.core.data_dir` is used as given (so a
    /// test can restart a broker on the same data).
    pub async fn start_with(mut config: BrokerConfig) -> Result<TestBroker, Error> {
        let defaults = BrokerConfig::default();
        let any: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        if config.listen == defaults.listen {
            config.listen = any;
        }
        if config.listen_websocket.is_none() {
            config.listen_websocket = Some(any);
        }
        if config.listen_blob == defaults.listen_blob {
            config.listen_blob = Some(any);
        }
        if config.tls.listen == defaults.tls.listen {
            config.tls.listen = Some(any);
        }
        if config.listen_kafka == defaults.listen_kafka {
            config.listen_kafka = Some(any);
        }
        if config.listen_kafka_tls == defaults.listen_kafka_tls {
            config.listen_kafka_tls = Some(any);
        }
        if config.listen_management == defaults.listen_management {
            config.listen_management = Some(any);
        }
        config.core.fsync = FsyncPolicy::Never;
        Ok(TestBroker { running: Some(start(config).await?), _dir: None })
    }

    fn running(&self) -> &Running {
        self.running.as_ref().expect("running until stopped")
    }

    /// Where AMQP is served.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.running().amqp
    }

    /// Where AMQP over WebSockets is served.
    pub fn websocket_addr(&self) -> SocketAddr {
        self.running().websocket.expect("a test broker serves WebSockets")
    }

    /// Where the Blob endpoint is served.
    pub fn blob_addr(&self) -> SocketAddr {
        self.running().blob.expect("a test broker serves Blob")
    }

    /// Where AMQP over TLS is served, if the config turned TLS on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.running().tls
    }

    /// Where AMQP over WebSockets over TLS is served, if configured.
    pub fn websocket_tls_addr(&self) -> Option<SocketAddr> {
        self.running().websocket_tls
    }

    /// Where the Kafka endpoint is served (a Kafka client's `bootstrap.servers`).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.running().kafka.expect("a test broker serves Kafka")
    }

    /// Where the Kafka endpoint is served over TLS (SASL_SSL), if the config turned TLS on.
    pub fn kafka_tls_addr(&self) -> Option<SocketAddr> {
        self.running().kafka_tls
    }

    /// Where the HTTP management endpoint is served.
    pub fn management_addr(&self) -> SocketAddr {
        self.running().management.expect("a test broker serves management")
    }

    /// The development CA to trust, with `TlsSource::SelfSigned`.
    pub fn ca_path(&self) -> Option<&std::path::Path> {
        self.running().ca.as_deref()
    }

    /// The connection string of the default policy, emulator style (plain AMQP on this port).
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint=sb://127.0.0.1:{};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
            self.amqp_addr().port()
        )
    }

    /// The development account's storage connection string for the Blob endpoint.
    pub fn storage_connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint=http://{}/{};",
            ehub_storage_auth::DEV_ACCOUNT,
            ehub_storage_auth::DEV_ACCOUNT_KEY,
            self.blob_addr(),
            ehub_storage_auth::DEV_ACCOUNT
        )
    }

    /// Stops it and waits until storage is flushed.
    pub async fn stop(mut self) -> Result<(), Error> {
        match self.running.take() {
            Some(r) => r.stop().await,
            None => Ok(()),
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown.cancel();
        }
    }
}
