//! # ehub
//!
//! An Azure Event Hubs client for Rust: producers, consumers, hub and partition properties,
//! SAS and Entra ID authentication, retries, and a typed error taxonomy, async on tokio with
//! a [`blocking`] twin. It speaks the service's own AMQP dialect, so it works against Azure
//! Event Hubs, Microsoft's emulator and `ehub serve` alike.
//!
//! ```no_run
//! use ehub::{ConsumerClient, EventData, EventPosition, OpenReceiverOptions, ProducerClient, SendEventOptions};
//!
//! # async fn demo() -> ehub::Result<()> {
//! let cs = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;\
//!           SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
//! let producer = ProducerClient::from_connection_string(cs, Some("eh1")).await?;
//! let to_zero = SendEventOptions { partition_id: Some("0".into()), ..Default::default() };
//! producer.send_event(EventData::from("hello").with_property("n", 1i64), Some(to_zero)).await?;
//!
//! let consumer = ConsumerClient::from_connection_string(cs, Some("eh1"), None).await?;
//! let options = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
//! let mut receiver = consumer.open_receiver_on_partition("0", Some(options)).await?;
//! let event = receiver.recv().await?;
//! println!("{} at sequence number {}", event.body_as_str().unwrap_or("?"), event.sequence_number());
//! # Ok(()) }
//! ```
//!
//! Batches count their exact wire size:
//!
//! ```
//! # use ehub::EventData;
//! let event = EventData::from("x".repeat(100)).with_property("kind", "demo");
//! assert_eq!(event.body().map(<[u8]>::len), Some(100));
//! ```
//!
//! Errors carry a kind that maps onto the Python library's classes, the service's AMQP
//! condition and description, and [`Error::is_transient`].
//!
//! Transports: AMQP over TLS (the default), plain AMQP for emulators, and AMQP over
//! WebSockets ([`TransportType::AmqpWebSockets`], port 443), each optionally through an HTTP
//! CONNECT proxy ([`ClientOptions`]).
//!
//! Cargo features (both on by default):
//! - `token-credential`: Entra ID through any `azure_core` `TokenCredential`.
//! - `opentelemetry`: events sent while an OpenTelemetry span is active carry its W3C trace
//!   context in `Diagnostic-Id`, `traceparent` and `tracestate`, as the official SDKs do.
#![warn(missing_docs)]

mod amqp;
mod batch;
pub mod blocking;
pub mod buffered;
pub mod checkpoint;
mod client;
mod consumer;
mod credential;
mod error;
mod event;
mod options;
pub mod processor;
mod producer;
mod properties;
mod transport;

pub use batch::{EventDataBatch, EventDataBatchOptions};
pub use buffered::{BufferedProducerClient, BufferedProducerOptions, EnqueueEventOptions};
pub use checkpoint::{CheckpointStore, InMemoryCheckpointStore};
pub use consumer::{
    ConsumerClient, ConsumerClientBuilder, EventBatches, EventReceiver, OpenReceiverOptions, ReceiveOptions,
    DEFAULT_CONSUMER_GROUP, DEFAULT_PREFETCH, DEFAULT_PREFETCH_BYTES,
};
pub use credential::{Credential, SasKeyCredential, SasTokenCredential, EVENTHUBS_SCOPE};
pub use ehub_amqp_codec::{Body as AmqpBody, Symbol, Timestamp, Value};
pub use ehub_model::EventPosition;
pub use error::{Error, ErrorKind, Result};
pub use event::{
    AmqpAnnotatedMessage, EventData, LastEnqueuedEventProperties, ReceivedEventData, DIAGNOSTIC_ID_PROPERTY,
    TRACEPARENT_PROPERTY, TRACESTATE_PROPERTY,
};
pub use options::{ClientOptions, ProxyOptions, RetryMode, RetryOptions, TransportType};
pub use processor::{LoadBalancer, LoadBalancingStrategy};
pub use producer::{ProducerClient, ProducerClientBuilder, SendEventOptions};
pub use properties::{EventHubProperties, PartitionProperties};

/// `azure_core`'s credential trait, re-exported so `azure_identity` credentials plug in.
#[cfg(feature = "token-credential")]
pub use azure_core::credentials::TokenCredential;
