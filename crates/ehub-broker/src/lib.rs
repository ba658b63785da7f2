//! # ehub-broker
//!
//! An Event Hubs-compatible AMQP 1.0 broker with durable partition logs, used by `ehub serve`.
//! The unmodified official SDKs (Python, JavaScript, Rust) connect to it with the emulator's
//! connection string:
//! `Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;`
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use ehub_broker::{serve, Broker, BrokerConfig};
//! let broker = Broker::open(BrokerConfig::default())?;
//! let listener = tokio::net::TcpListener::bind(broker.config().listen).await?;
//! serve(broker, listener, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod config;
mod connection;
mod management;
mod server;
mod settle;
mod state;

pub use config::{parse_fsync, BrokerConfig, ConfigError, HubConfig, Policy, Rights};
pub use server::{serve, serve_listeners, Listener, Protocol};
pub use state::Broker;

/// The shipped, fully commented default configuration.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/default.toml");
