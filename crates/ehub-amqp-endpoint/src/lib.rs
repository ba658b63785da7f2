//! # ehub-amqp-endpoint
//!
//! AMQP 1.0 connection, session and link state machines for both roles (initiator and
//! acceptor), sans-IO at the core, with a small tokio driver for any `AsyncRead + AsyncWrite`.
//!
//! The engine ([`Connection`]) takes bytes and returns [`Event`]s; actions (begin, attach,
//! send, flow, disposition, detach, end, close) append frames to an output buffer that the
//! driver writes many frames per syscall. Link credit is the only flow control.
//!
//! ```
//! use std::time::Instant;
//! use bytes::BytesMut;
//! use ehub_amqp_endpoint::{Connection, ConnectionConfig, ConnectionRole, Event, SaslConfig};
//!
//! let now = Instant::now();
//! let mut client = Connection::new(ConnectionRole::Initiator,
//!     ConnectionConfig { sasl: SaslConfig::Anonymous, ..Default::default() }, now);
//! let mut server = Connection::new(ConnectionRole::Acceptor,
//!     ConnectionConfig { sasl: SaslConfig::Server { mechanisms: vec!["ANONYMOUS".into()], allow_no_sasl: false },
//!                        ..Default::default() }, now);
//! // Shuttle bytes until both sides are quiet.
//! for _ in 0..4 {
//!     let mut c2s = client.output().split();
//!     server.feed(&mut c2s, now).unwrap();
//!     let mut s2c = server.output().split();
//!     client.feed(&mut s2c, now).unwrap();
//! }
//! assert!(server.remote_open().is_some() && client.remote_open().is_some());
//! ```
#![warn(missing_docs)]

mod connection;
pub mod driver;
mod error;
mod idmap;
#[cfg(feature = "websocket")]
pub mod websocket;

pub use connection::{
    AttachReply, Burst, Connection, ConnectionConfig, ConnectionRole, Delivery, DeliveryTag, Event, Link, LinkId,
    SaslConfig, SendArgs,
};
pub use error::{condition, EndpointError};
pub use idmap::{IdHasher, IdMap};
