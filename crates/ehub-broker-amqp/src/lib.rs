//! # ehub-broker-amqp
//!
//! The broker's AMQP 1.0 front, on [`ehub_broker_core`]: SASL and CBS auth, `$management`,
//! producers, consumers and owner levels, as the unmodified official SDKs (Python, JavaScript,
//! Rust) expect them. They connect with the emulator's connection string:
//! `Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;`
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use ehub_broker_amqp::serve;
//! use ehub_broker_core::{Broker, CoreConfig};
//! let broker = Broker::open(CoreConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5672").await?;
//! serve(broker, listener, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod connection;
mod limits;
mod management;
mod metrics;
mod server;
mod settle;

pub use limits::AmqpLimits;
pub use metrics::AmqpMetrics;
pub use server::{serve, serve_listeners, serve_listeners_with, Listener, Protocol, ServeOptions};
