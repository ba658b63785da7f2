//! # ehub-model
//!
//! The Event Hubs contract that both the ehub client and the ehub broker speak: entity
//! addresses, event-position selector filters, broker annotations, SAS tokens, connection
//! strings, the service's partition-key hash and the error conditions. Nothing here does IO.
//!
//! ```
//! use ehub_model::{partition_for_key, EntityAddress, EventPosition};
//!
//! assert_eq!(partition_for_key("7", 4), 3);
//! let a = EntityAddress::parse("amqps://ns.example/eh1/ConsumerGroups/$Default/Partitions/0").unwrap();
//! assert_eq!(a, EntityAddress::Receive { hub: "eh1".into(), consumer_group: "$Default".into(), partition: "0".into() });
//! let f = EventPosition::parse_selector("amqp.annotation.x-opt-sequence-number >'12'").unwrap();
//! assert_eq!(f, EventPosition::SequenceNumber { value: 12, inclusive: false });
//! ```
#![warn(missing_docs)]

mod address;
mod connection_string;
mod filter;
mod hash;
mod sas;

pub use address::EntityAddress;
pub use connection_string::{ConnectionString, ConnectionStringError};
pub use filter::{EventPosition, FilterError, SELECTOR_FILTER_CODE, SELECTOR_FILTER_LEGACY_CODE, SELECTOR_FILTER_NAME};
pub use hash::{partition_for_key, partition_key_hash};
pub use sas::{generate_sas_token, parse_sas_token, verify_sas_token, SasError, SasToken};

/// Message-annotation keys the broker stamps on delivered events (reference §10.7).
pub mod annotations {
    /// Sequence number (`long`).
    pub const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
    /// Offset (`string`).
    pub const OFFSET: &str = "x-opt-offset";
    /// Enqueued time (`timestamp`).
    pub const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
    /// Partition key (`string`).
    pub const PARTITION_KEY: &str = "x-opt-partition-key";
    /// The Kafka front's mark on the first event of an idempotent producer's batch (`binary`),
    /// from which it rebuilds producer state after a restart. The broker owns it: a sender's
    /// own entry is never delivered, and the mark is authenticated by the front.
    pub const KAFKA_PRODUCER: &str = "x-opt-kafka-producer";
    /// Runtime metric: last enqueued sequence number (delivery annotation, `long`).
    pub const LAST_ENQUEUED_SEQUENCE_NUMBER: &str = "last_enqueued_sequence_number";
    /// Runtime metric: last enqueued offset (delivery annotation, `string`).
    pub const LAST_ENQUEUED_OFFSET: &str = "last_enqueued_offset";
    /// Runtime metric: last enqueued time (delivery annotation, `timestamp`).
    pub const LAST_ENQUEUED_TIME_UTC: &str = "last_enqueued_time_utc";
    /// Runtime metric: when the metrics were read (delivery annotation, `timestamp`).
    pub const RUNTIME_INFO_RETRIEVAL_TIME_UTC: &str = "runtime_info_retrieval_time_utc";

    /// The per-event keys as AMQP encodes them (sym8), for code that writes or recognises
    /// them by their bytes on the per-event hot path.
    pub mod sym8 {
        /// [`super::SEQUENCE_NUMBER`] encoded.
        pub const SEQUENCE_NUMBER: &[u8] = b"\xa3\x15x-opt-sequence-number";
        /// [`super::OFFSET`] encoded.
        pub const OFFSET: &[u8] = b"\xa3\x0cx-opt-offset";
        /// [`super::ENQUEUED_TIME`] encoded.
        pub const ENQUEUED_TIME: &[u8] = b"\xa3\x13x-opt-enqueued-time";
        /// [`super::PARTITION_KEY`] encoded.
        pub const PARTITION_KEY: &[u8] = b"\xa3\x13x-opt-partition-key";

        #[cfg(test)]
        #[test]
        fn they_are_the_sym8_encodings_of_the_names() {
            for (encoded, name) in [
                (SEQUENCE_NUMBER, super::SEQUENCE_NUMBER),
                (OFFSET, super::OFFSET),
                (ENQUEUED_TIME, super::ENQUEUED_TIME),
                (PARTITION_KEY, super::PARTITION_KEY),
            ] {
                assert_eq!(encoded[0], 0xa3, "sym8");
                assert_eq!(&encoded[2..], name.as_bytes());
                assert_eq!(encoded[1] as usize, name.len());
            }
        }
    }
}

/// Link properties and capabilities.
pub mod link {
    /// Owner level of a receiver (`long`).
    pub const EPOCH: &str = "com.microsoft:epoch";
    /// Receiver identifier used in service error texts.
    pub const RECEIVER_NAME: &str = "com.microsoft:receiver-name";
    /// The Rust SDK's misspelt receiver-name key, accepted as an alias.
    pub const RECEIVER_NAME_RUST: &str = "com.microsoft.com:receiver-name";
    /// Operation timeout property.
    pub const TIMEOUT: &str = "com.microsoft:timeout";
    /// Capability asking for runtime metrics on deliveries.
    pub const RUNTIME_METRIC_CAPABILITY: &str = "com.microsoft:enable-receiver-runtime-metric";
    /// Geo-replication capability (link level).
    pub const GEOREPLICATION_CAPABILITY: &str = "com.microsoft:georeplication";
}

/// CBS and management node names and properties.
pub mod nodes {
    /// The claims-based-security node.
    pub const CBS: &str = "$cbs";
    /// The management node.
    pub const MANAGEMENT: &str = "$management";
    /// CBS token type of SAS tokens.
    pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
    /// CBS token type of Entra ID tokens.
    pub const JWT_TOKEN_TYPE: &str = "jwt";
    /// Management entity type of a hub.
    pub const EVENTHUB_TYPE: &str = "com.microsoft:eventhub";
    /// Management entity type of a partition.
    pub const PARTITION_TYPE: &str = "com.microsoft:partition";
}

/// Error conditions used by Event Hubs (reference §11).
#[allow(missing_docs)]
pub mod conditions {
    pub const NOT_FOUND: &str = "amqp:not-found";
    pub const UNAUTHORIZED_ACCESS: &str = "amqp:unauthorized-access";
    pub const RESOURCE_LIMIT_EXCEEDED: &str = "amqp:resource-limit-exceeded";
    pub const LINK_STOLEN: &str = "amqp:link:stolen";
    pub const MESSAGE_SIZE_EXCEEDED: &str = "amqp:link:message-size-exceeded";
    pub const DETACH_FORCED: &str = "amqp:link:detach-forced";
    pub const CONNECTION_FORCED: &str = "amqp:connection:forced";
    pub const NOT_ALLOWED: &str = "amqp:not-allowed";
    pub const NOT_IMPLEMENTED: &str = "amqp:not-implemented";
    pub const INTERNAL_ERROR: &str = "amqp:internal-error";
    pub const DECODE_ERROR: &str = "amqp:decode-error";
    pub const SERVER_BUSY: &str = "com.microsoft:server-busy";
    pub const TIMEOUT: &str = "com.microsoft:timeout";
    pub const ARGUMENT_ERROR: &str = "com.microsoft:argument-error";
    pub const ARGUMENT_OUT_OF_RANGE: &str = "com.microsoft:argument-out-of-range";
    pub const ENTITY_DISABLED: &str = "com.microsoft:entity-disabled";
    pub const OPERATION_CANCELLED: &str = "com.microsoft:operation-cancelled";
}

/// The "no time" timestamp: 0001-01-01T00:00:00Z in Unix milliseconds (reference rule 24).
pub const CE_ZERO_MILLIS: i64 = -62_135_596_800_000;

/// Connection property in the `open` of an ehub broker naming its fsync policy (`always`,
/// `interval(<ms>ms)` or `never`). Azure sends no such property.
pub const EHUB_FSYNC_PROPERTY: &str = "com.ehub:fsync";

/// Largest event or batch the service accepts on Standard and above (1 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1024 * 1024;
