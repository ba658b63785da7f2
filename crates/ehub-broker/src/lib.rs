//! # ehub-broker
//!
//! The broker behind `ehub serve`, assembled: its configuration (our TOML, or Microsoft's
//! emulator `Config.json`), the core ([`ehub_broker_core`]: hubs, partitions, consumer groups,
//! epochs, auth) and its fronts: AMQP ([`ehub_broker_amqp`]) and Azure Blob for checkpoint
//! stores ([`ehub_broker_blob`]). Each front depends on the core only; the core knows no wire
//! protocol.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! // The whole broker from its configuration: AMQP on 127.0.0.1:5672, Blob on :10000.
//! let running = ehub_broker::start(ehub_broker::BrokerConfig::default()).await?;
//! println!("AMQP on {}, Blob on {:?}", running.amqp, running.blob);
//! running.wait().await?; // until its shutdown token is cancelled
//! # Ok(()) }
//! ```
//!
//! For tests, [`TestBroker`] starts one on free ports in a temporary directory.
#![warn(missing_docs)]

mod config;
mod run;
mod tls;

pub use config::{parse_advertised, parse_fsync, parse_listen, BrokerConfig, ConfigError};
pub use ehub_broker_admin::{AdminAuth, AdminConfig};
pub use ehub_broker_amqp::{serve, serve_listeners, Listener, Protocol};
pub use ehub_broker_core::{Broker, CoreConfig, HubConfig, Policy, Rights};
pub use ehub_broker_kafka::KafkaConfig;
pub use run::{start, Error, ErrorKind, Running, TestBroker};
pub use tls::{TlsConfig, TlsError, TlsSource};

/// The shipped, fully commented default configuration.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/default.toml");
