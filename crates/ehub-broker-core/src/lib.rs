//! # ehub-broker-core
//!
//! The broker's core, shared by its protocol fronts (AMQP in `ehub-broker-amqp`, and the
//! Blob and Kafka fronts beside it): hubs, their partitions and durable logs, consumer groups,
//! the receiver registry that enforces owner levels (epochs), and token auth against the
//! shared access policies. It knows no wire protocol: fronts turn requests into calls here and
//! answers into their own frames.
//!
//! ```
//! use ehub_broker_core::{Broker, CoreConfig, TokenType};
//! let dir = tempfile::tempdir().unwrap();
//! let broker = Broker::open(CoreConfig { data_dir: dir.path().into(), ..CoreConfig::default() }).unwrap();
//! let hub = broker.hub("EH1").expect("the default hub");
//! assert_eq!(hub.partition_ids, ["0", "1", "2", "3"]);
//! let refused = broker.authorize(TokenType::Sas, "SharedAccessSignature sr=x&sig=y&se=1&skn=nope", "sb://localhost/eh1");
//! assert!(refused.unwrap_err().starts_with("InvalidSignature"));
//! # broker.shutdown_storage();
//! ```
#![warn(missing_docs)]

mod admission;
mod auth;
mod config;
mod error;
mod faults;
mod metrics;
mod runtime;
mod state;

pub use admission::{Admission, ConnectionSlot, Refusal};
pub use auth::{covers, entity_path, now_millis, now_secs, Grant, TokenType};
pub use config::{CoreConfig, HubConfig, Policy, Rights};
pub use error::{CoreError, CoreErrorKind};
pub use faults::{ActiveFault, ConnectionHandle, DetachCondition, Disruption, Faults};
pub use metrics::{CoreMetrics, Labels, PartitionCounters};
pub use prometheus_client;
pub use state::{AdmitError, Broker, ConsumerGroup, Displaced, Hub, OnDisplaced, Origin, ReceiverEntry};
