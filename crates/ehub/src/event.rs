//! Events: what is sent ([`EventData`]) and what is received ([`ReceivedEventData`]).

use crate::error::{Error, ErrorKind, Result};
use bytes::Bytes;
use ehub_amqp_codec::{Body, Map, Message, Properties, Symbol, Value};
use ehub_model::annotations as ann;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The full AMQP message under an event, for complete control over every section.
pub type AmqpAnnotatedMessage = Message;

/// An event to send.
///
/// ```
/// use ehub::EventData;
/// let e = EventData::from("hello").with_property("kind", "greeting").with_content_type("text/plain");
/// assert_eq!(e.body(), Some(&b"hello"[..]));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventData {
    message: Message,
}

impl EventData {
    /// An event whose body is `body` (one `data` section).
    pub fn new(body: impl Into<Bytes>) -> Self {
        EventData { message: Message::with_data(body) }
    }

    /// An event whose body is an AMQP value (`amqp-value` section).
    pub fn from_value(value: Value) -> Self {
        EventData { message: Message::with_value(value) }
    }

    /// An event whose body is an AMQP sequence (`amqp-sequence` section).
    pub fn from_sequence(items: Vec<Value>) -> Self {
        EventData { message: Message { body: Body::Sequence(vec![items]), ..Default::default() } }
    }

    /// An event from a complete AMQP message.
    pub fn from_amqp_message(message: AmqpAnnotatedMessage) -> Self {
        EventData { message }
    }

    /// Adds an application property (any AMQP value).
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.set_property(key, value);
        self
    }

    /// Sets an application property, replacing one with the same key.
    pub fn set_property(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = Value::String(key.into());
        let props = self.message.application_properties.get_or_insert_with(Vec::new);
        let value = value.into();
        match props.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => props.push((key, value)),
        }
    }

    /// Sets the content type.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.props().content_type = Some(Symbol(content_type.into()));
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<Value>) -> Self {
        self.props().correlation_id = Some(id.into());
        self
    }

    /// Sets the message id.
    pub fn with_message_id(mut self, id: impl Into<Value>) -> Self {
        self.props().message_id = Some(id.into());
        self
    }

    fn props(&mut self) -> &mut Properties {
        self.message.properties.get_or_insert_with(Properties::default)
    }

    /// The body when it is one `data` section.
    pub fn body(&self) -> Option<&[u8]> {
        data_body(&self.message)
    }

    /// Application properties.
    pub fn properties(&self) -> &[(Value, Value)] {
        self.message.application_properties.as_deref().unwrap_or(&[])
    }

    /// The underlying AMQP message.
    pub fn raw_amqp_message(&self) -> &AmqpAnnotatedMessage {
        &self.message
    }

    /// The underlying AMQP message, mutable.
    pub fn raw_amqp_message_mut(&mut self) -> &mut AmqpAnnotatedMessage {
        &mut self.message
    }

    /// Encodes the event, with `partition_key` set as `x-opt-partition-key` when given.
    pub(crate) fn encode(&self, partition_key: Option<&str>) -> Result<Bytes> {
        let encoded = match partition_key {
            None => self.message.to_bytes(),
            Some(key) => {
                let mut m = self.message.clone();
                set_partition_key(&mut m, key);
                m.to_bytes()
            }
        };
        encoded
            .map_err(|e| Error::new(ErrorKind::EventData, format!("the event cannot be encoded: {e}")).with_source(e))
    }
}

pub(crate) fn set_partition_key(m: &mut Message, key: &str) {
    let ma = m.message_annotations.get_or_insert_with(Vec::new);
    ma.retain(|(k, _)| k.as_text() != Some(ann::PARTITION_KEY));
    ma.push((Value::Symbol(ann::PARTITION_KEY.into()), Value::String(key.to_owned())));
    // Python and JS mark keyed events durable; the service ignores it either way.
    m.header.get_or_insert_with(Default::default).durable = Some(true);
}

fn data_body(m: &Message) -> Option<&[u8]> {
    match &m.body {
        Body::Data(d) if d.len() == 1 => Some(&d[0]),
        _ => None,
    }
}

impl From<&str> for EventData {
    fn from(s: &str) -> Self {
        EventData::new(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for EventData {
    fn from(s: String) -> Self {
        EventData::new(Bytes::from(s))
    }
}

impl From<Vec<u8>> for EventData {
    fn from(b: Vec<u8>) -> Self {
        EventData::new(Bytes::from(b))
    }
}

impl From<&[u8]> for EventData {
    fn from(b: &[u8]) -> Self {
        EventData::new(Bytes::copy_from_slice(b))
    }
}

impl From<Bytes> for EventData {
    fn from(b: Bytes) -> Self {
        EventData::new(b)
    }
}

/// An event read from a partition, with the service's system properties.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEventData {
    message: Message,
    raw: Bytes,
    sequence_number: i64,
    offset: String,
    enqueued_time_millis: i64,
    partition_key: Option<String>,
    partition_id: String,
}

/// Runtime metrics of a partition, carried on received events when
/// `track_last_enqueued_event_properties` is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LastEnqueuedEventProperties {
    /// Sequence number of the last event enqueued in the partition.
    pub sequence_number: Option<i64>,
    /// Offset of that event.
    pub offset: Option<String>,
    /// Its enqueued time.
    pub enqueued_time: Option<SystemTime>,
    /// When the service read these values.
    pub retrieval_time: Option<SystemTime>,
}

pub(crate) fn millis_to_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

impl ReceivedEventData {
    /// Decodes a delivered message. Fails when the service annotations are missing.
    pub(crate) fn decode(raw: Bytes, partition_id: &str) -> Result<(Self, Option<LastEnqueuedEventProperties>)> {
        let bad = |why: String| {
            Error::new(ErrorKind::EventData, format!("undecodable event from partition {partition_id}: {why}"))
        };
        let message = Message::decode(&raw).map_err(|e| bad(e.to_string()))?;
        let ma = message.message_annotations.as_deref().unwrap_or(&[]);
        let get = |k: &str| ehub_amqp_codec::map_get(ma, k);
        let sequence_number =
            get(ann::SEQUENCE_NUMBER).and_then(|v| v.as_i64()).ok_or_else(|| bad("no x-opt-sequence-number".into()))?;
        let offset = match get(ann::OFFSET) {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.as_i64().map(|n| n.to_string()).ok_or_else(|| bad("x-opt-offset is not text".into()))?,
            None => return Err(bad("no x-opt-offset".into())),
        };
        let enqueued_time_millis = get(ann::ENQUEUED_TIME).and_then(|v| v.as_timestamp()).map(|t| t.0).unwrap_or(0);
        let partition_key = get(ann::PARTITION_KEY).and_then(|v| v.as_text()).map(str::to_owned);
        let last = message.delivery_annotations.as_deref().map(|da| {
            let g = |k: &str| ehub_amqp_codec::map_get(da, k);
            LastEnqueuedEventProperties {
                sequence_number: g(ann::LAST_ENQUEUED_SEQUENCE_NUMBER).and_then(|v| v.as_i64()),
                offset: g(ann::LAST_ENQUEUED_OFFSET).and_then(|v| v.as_text()).map(str::to_owned),
                enqueued_time: g(ann::LAST_ENQUEUED_TIME_UTC)
                    .and_then(|v| v.as_timestamp())
                    .map(|t| millis_to_time(t.0)),
                retrieval_time: g(ann::RUNTIME_INFO_RETRIEVAL_TIME_UTC)
                    .and_then(|v| v.as_timestamp())
                    .map(|t| millis_to_time(t.0)),
            }
        });
        let last = last.filter(|l| l.sequence_number.is_some());
        Ok((
            ReceivedEventData {
                message,
                raw,
                sequence_number,
                offset,
                enqueued_time_millis,
                partition_key,
                partition_id: partition_id.to_owned(),
            },
            last,
        ))
    }

    /// The body when it is one `data` section.
    pub fn body(&self) -> Option<&[u8]> {
        data_body(&self.message)
    }

    /// The body as UTF-8 text, when it is one `data` section of valid UTF-8.
    pub fn body_as_str(&self) -> Option<&str> {
        self.body().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Application properties.
    pub fn properties(&self) -> &[(Value, Value)] {
        self.message.application_properties.as_deref().unwrap_or(&[])
    }

    /// One application property.
    pub fn property(&self, key: &str) -> Option<&Value> {
        ehub_amqp_codec::map_get(self.properties(), key)
    }

    /// The service's message annotations (`x-opt-*` and any the publisher set).
    pub fn system_properties(&self) -> &Map {
        static EMPTY: Map = Vec::new();
        self.message.message_annotations.as_ref().unwrap_or(&EMPTY)
    }

    /// Sequence number within the partition.
    pub fn sequence_number(&self) -> i64 {
        self.sequence_number
    }

    /// Offset within the partition.
    pub fn offset(&self) -> &str {
        &self.offset
    }

    /// When the service enqueued the event.
    pub fn enqueued_time(&self) -> SystemTime {
        millis_to_time(self.enqueued_time_millis)
    }

    /// Enqueued time in Unix milliseconds.
    pub fn enqueued_time_millis(&self) -> i64 {
        self.enqueued_time_millis
    }

    /// The partition key the event was sent with.
    pub fn partition_key(&self) -> Option<&str> {
        self.partition_key.as_deref()
    }

    /// The partition it was read from.
    pub fn partition_id(&self) -> &str {
        &self.partition_id
    }

    /// Content type.
    pub fn content_type(&self) -> Option<&str> {
        self.message.properties.as_ref().and_then(|p| p.content_type.as_ref()).map(|s| s.as_str())
    }

    /// Correlation id.
    pub fn correlation_id(&self) -> Option<&Value> {
        self.message.properties.as_ref().and_then(|p| p.correlation_id.as_ref())
    }

    /// Message id.
    pub fn message_id(&self) -> Option<&Value> {
        self.message.properties.as_ref().and_then(|p| p.message_id.as_ref())
    }

    /// The whole AMQP message.
    pub fn raw_amqp_message(&self) -> &AmqpAnnotatedMessage {
        &self.message
    }

    /// The message exactly as delivered.
    pub fn raw_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// An [`EventData`] with the same body and properties, to send elsewhere (the service
    /// annotations are dropped).
    pub fn to_event_data(&self) -> EventData {
        let mut m = self.message.clone();
        m.message_annotations = None;
        m.delivery_annotations = None;
        EventData::from_amqp_message(m)
    }
}
