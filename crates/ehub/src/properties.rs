//! Hub and partition properties, read from the `$management` node.

use crate::error::{Error, ErrorKind, Result};
use crate::event::millis_to_time;
use ehub_amqp_codec::{map_get, Map, Value};
use std::time::SystemTime;

/// Properties of an Event Hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHubProperties {
    /// The hub's name.
    pub name: String,
    /// When the hub was created.
    pub created_at: SystemTime,
    /// Its partition ids.
    pub partition_ids: Vec<String>,
}

/// Properties of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProperties {
    /// The hub's name.
    pub eventhub_name: String,
    /// The partition id.
    pub id: String,
    /// First retained sequence number.
    pub beginning_sequence_number: i64,
    /// Sequence number of the last enqueued event (-1 when none).
    pub last_enqueued_sequence_number: i64,
    /// Offset of the last enqueued event.
    pub last_enqueued_offset: String,
    /// Enqueued time of the last event.
    pub last_enqueued_time_utc: SystemTime,
    /// True when the partition holds no events.
    pub is_empty: bool,
}

fn missing(key: &str) -> Error {
    Error::new(ErrorKind::EventHub, format!("the management response lacks '{key}'"))
}

fn text(m: &Map, key: &str) -> Result<String> {
    match map_get(m, key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Symbol(s)) => Ok(s.as_str().to_owned()),
        Some(v) => v.as_i64().map(|n| n.to_string()).ok_or_else(|| missing(key)),
        None => Err(missing(key)),
    }
}

fn time(m: &Map, key: &str) -> Result<SystemTime> {
    let v = map_get(m, key).ok_or_else(|| missing(key))?;
    let ms = v.as_timestamp().map(|t| t.0).or_else(|| v.as_i64()).ok_or_else(|| missing(key))?;
    Ok(millis_to_time(ms))
}

fn long(m: &Map, key: &str) -> Result<i64> {
    map_get(m, key).and_then(|v| v.as_i64()).ok_or_else(|| missing(key))
}

impl EventHubProperties {
    pub(crate) fn from_map(m: &Map) -> Result<Self> {
        let partition_ids = match map_get(m, "partition_ids") {
            Some(Value::Array(a)) => a.items.iter().filter_map(|v| v.as_text().map(str::to_owned)).collect(),
            Some(Value::List(l)) => l.iter().filter_map(|v| v.as_text().map(str::to_owned)).collect(),
            _ => return Err(missing("partition_ids")),
        };
        Ok(EventHubProperties { name: text(m, "name")?, created_at: time(m, "created_at")?, partition_ids })
    }
}

impl PartitionProperties {
    pub(crate) fn from_map(m: &Map) -> Result<Self> {
        Ok(PartitionProperties {
            eventhub_name: text(m, "name")?,
            id: text(m, "partition")?,
            beginning_sequence_number: long(m, "begin_sequence_number")?,
            last_enqueued_sequence_number: long(m, "last_enqueued_sequence_number")?,
            last_enqueued_offset: text(m, "last_enqueued_offset")?,
            last_enqueued_time_utc: time(m, "last_enqueued_time_utc")?,
            is_empty: map_get(m, "is_partition_empty")
                .and_then(|v| v.as_bool())
                .ok_or_else(|| missing("is_partition_empty"))?,
        })
    }
}
