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
//! use ehub_broker::{serve, Broker, BrokerConfig};
//! let config = BrokerConfig::default();
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! let broker = Broker::open(config)?;
//! serve(broker, listener, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod config;

pub use config::{parse_fsync, BrokerConfig, ConfigError};
pub use ehub_broker_amqp::{serve, serve_listeners, Listener, Protocol};
pub use ehub_broker_core::{Broker, CoreConfig, HubConfig, Policy, Rights};

/// The shipped, fully commented default configuration.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/default.toml");
