//! Events: what is sent ([`EventData`]) and what is received ([`ReceivedEventData`]).

use crate::error::{Error, ErrorKind, Result};
use bytes::Bytes;
use ehub_amqp_codec::{
    code, raw_long, raw_text, raw_text_range, raw_timestamp, Body, Decoder, Map, Message, Properties, RawMapEntries,
    SectionSpans, Symbol, Value,
};
use ehub_model::annotations as ann;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
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
        self.message.properties.get_or_insert_with(Default::default)
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

    /// Encodes the event into `out`, with `partition_key` set as `x-opt-partition-key` when
    /// given and the active trace context (feature `opentelemetry`) in its application
    /// properties. Appends without allocating when neither has to be added.
    pub(crate) fn encode_into(&self, partition_key: Option<&str>, out: &mut bytes::BytesMut) -> Result<()> {
        let trace = trace_context();
        let r = if partition_key.is_none() && trace.is_none() {
            self.message.encode(out)
        } else {
            let mut m = self.message.clone();
            if let Some(key) = partition_key {
                set_partition_key(&mut m, key);
            }
            if let Some(trace) = trace {
                stamp_trace_context(&mut m, trace);
            }
            m.encode(out)
        };
        r.map_err(|e| Error::new(ErrorKind::EventData, format!("the event cannot be encoded: {e}")).with_source(e))
    }

    /// Adds the active trace context now (feature `opentelemetry`), for an event that is
    /// encoded later on another task (the buffered producer), where the caller's span is not
    /// current any more.
    pub(crate) fn stamp_current_trace_context(&mut self) {
        if let Some(trace) = trace_context() {
            stamp_trace_context(&mut self.message, trace);
        }
    }

    /// As [`EventData::encode_into`], into bytes of their own.
    pub(crate) fn encode(&self, partition_key: Option<&str>) -> Result<Bytes> {
        let mut out = bytes::BytesMut::with_capacity(128);
        self.encode_into(partition_key, &mut out)?;
        Ok(out.freeze())
    }
}

/// The names the official SDKs give the trace context on an event.
pub const DIAGNOSTIC_ID_PROPERTY: &str = "Diagnostic-Id";
/// W3C `traceparent`, the same value as [`DIAGNOSTIC_ID_PROPERTY`].
pub const TRACEPARENT_PROPERTY: &str = "traceparent";
/// W3C `tracestate`, when the span has one.
pub const TRACESTATE_PROPERTY: &str = "tracestate";

/// A W3C trace context: `traceparent` and `tracestate` (possibly empty).
type TraceContext = (String, String);

/// The trace context of the active OpenTelemetry span, if there is a valid one.
#[cfg(feature = "opentelemetry")]
fn trace_context() -> Option<TraceContext> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let parent = format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8());
    Some((parent, sc.trace_state().header()))
}

#[cfg(not(feature = "opentelemetry"))]
fn trace_context() -> Option<TraceContext> {
    None
}

/// Adds the trace context as the Python SDK does: `Diagnostic-Id` and `traceparent` carry the
/// same value, `tracestate` is added when non-empty, and a property the event already has is
/// kept (an event being forwarded keeps its original context).
fn stamp_trace_context(m: &mut Message, (parent, state): TraceContext) {
    let props = m.application_properties.get_or_insert_with(Vec::new);
    let mut add = |key: &str, value: &str| {
        if !props.iter().any(|(k, _)| k.as_text() == Some(key)) {
            props.push((Value::String(key.to_owned()), Value::String(value.to_owned())));
        }
    };
    add(DIAGNOSTIC_ID_PROPERTY, &parent);
    add(TRACEPARENT_PROPERTY, &parent);
    if !state.is_empty() {
        add(TRACESTATE_PROPERTY, &state);
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
///
/// Decoding is lazy: the service annotations and the body are located without decoding the
/// message; the other sections are decoded on first access.
#[derive(Debug, Clone)]
pub struct ReceivedEventData {
    raw: Bytes,
    body: Option<Range<usize>>,
    message: OnceLock<Box<Message>>,
    sequence_number: i64,
    offset: Text,
    enqueued_time_millis: i64,
    partition_key: Option<Text>,
    partition_id: Arc<str>,
}

/// The service annotations of a delivered event as read; missing ones stay `None` (time 0).
#[derive(Debug, Default)]
struct Annotations {
    sequence_number: Option<i64>,
    offset: Option<Text>,
    enqueued_time: i64,
    partition_key: Option<Text>,
}

impl From<ServiceAnnotations> for Annotations {
    fn from(a: ServiceAnnotations) -> Self {
        Annotations {
            sequence_number: Some(a.sequence_number),
            offset: Some(Text::InRaw(a.offset)),
            enqueued_time: a.enqueued_time,
            partition_key: a.key.map(Text::InRaw),
        }
    }
}

impl Annotations {
    /// Any encoding of the message-annotations section: keys as symbols or strings, values of
    /// any type that converts. Only events the one-pass reader ([`ServiceAnnotations`])
    /// declines come here, so the four values are simply decoded.
    fn general(raw: &Bytes, ma: &Range<usize>) -> std::result::Result<Self, ehub_amqp_codec::DecodeError> {
        let (mut seq, mut offset, mut time, mut key) = (None, None, 0i64, None);
        for entry in RawMapEntries::of_section(raw, ma)? {
            let (k, v) = entry?;
            let which = match raw_text(&raw[k]) {
                Some(ann::SEQUENCE_NUMBER) => 0,
                Some(ann::OFFSET) => 1,
                Some(ann::ENQUEUED_TIME) => 2,
                Some(ann::PARTITION_KEY) => 3,
                _ => continue,
            };
            let value = Decoder::with_range(raw, v.start, v.end).read_value()?;
            let text = |value: &Value| value.as_text().map(|t| Text::Owned(t.to_owned()));
            match which {
                0 => seq = value.as_i64(),
                // The service sends a string; an integer offset is accepted as its decimal text.
                1 => offset = text(&value).or_else(|| value.as_i64().map(|n| Text::Owned(n.to_string()))),
                2 => time = value.as_timestamp().map(|t| t.0).unwrap_or(0),
                _ => key = text(&value),
            }
        }
        Ok(Annotations { sequence_number: seq, offset, enqueued_time: time, partition_key: key })
    }
}

/// The service annotations of a delivered event, read in one pass over the message-annotations
/// section for the layout the service (and `ehub serve`) writes: a map of `sym8` keys whose
/// values are undescribed, with the four values in their usual types. Anything else (other
/// key or value encodings, a missing sequence number or offset) returns `None`, and the
/// general reader in [`ReceivedEventData::decode`] handles the event. This runs for every
/// received event; the general reader cost about a tenth of the client's receive CPU.
struct ServiceAnnotations {
    sequence_number: i64,
    offset: Range<usize>,
    enqueued_time: i64,
    key: Option<Range<usize>>,
}

impl ServiceAnnotations {
    #[inline]
    fn read(raw: &[u8], section: &Range<usize>) -> Option<Self> {
        let map = raw.get(..section.end)?;
        // Descriptor (0x00 0x53 0x72), then the map's constructor, size and count.
        if map.get(section.start..section.start + 3)?
            != [code::DESCRIBED, code::SMALL_ULONG, ehub_amqp_codec::descriptor::MESSAGE_ANNOTATIONS as u8]
        {
            return None;
        }
        let at = section.start + 3;
        let (mut p, count) = match *map.get(at)? {
            code::MAP8 => (at + 3, usize::from(*map.get(at + 2)?)),
            code::MAP32 => {
                let &[a, b, c, d] = map.get(at + 5..at + 9)? else { return None };
                (at + 9, u32::from_be_bytes([a, b, c, d]) as usize)
            }
            _ => return None,
        };
        let (mut seq, mut offset, mut time, mut key) = (None, None, 0, None);
        for _ in 0..count / 2 {
            let k = p;
            p = ehub_amqp_codec::plain_value_end(map, p)?;
            let v = p;
            p = ehub_amqp_codec::plain_value_end(map, p)?;
            let (kb, vb) = (&map[k..v], &map[v..p]);
            if kb == ann::sym8::SEQUENCE_NUMBER {
                seq = Some(raw_long(vb)?);
            } else if kb == ann::sym8::OFFSET {
                offset = Some(Self::text(vb, v)?);
            } else if kb == ann::sym8::ENQUEUED_TIME {
                time = raw_timestamp(vb)?;
            } else if kb == ann::sym8::PARTITION_KEY {
                key = Some(Self::text(vb, v)?);
            } else if kb.first() != Some(&code::SYM8) {
                // A key in another encoding may still name one of the four.
                return None;
            }
        }
        (p == section.end).then_some(())?;
        Some(ServiceAnnotations { sequence_number: seq?, offset: offset?, enqueued_time: time, key })
    }

    /// The range of a string value's text (validated UTF-8) within the message.
    #[inline]
    fn text(value: &[u8], at: usize) -> Option<Range<usize>> {
        let r = raw_text_range(value)?;
        let t = &value[r.clone()];
        std::str::from_utf8(t).is_ok().then_some(at + r.start..at + r.end)
    }
}

/// Text read from a delivered message: a range of its bytes (validated UTF-8) when the service
/// sent a string, or its own string when it sent another type (an integer offset).
#[derive(Debug, Clone)]
enum Text {
    InRaw(Range<usize>),
    Owned(String),
}

impl Text {
    fn get<'a>(&'a self, raw: &'a [u8]) -> &'a str {
        match self {
            // Validated when the event was decoded.
            Text::InRaw(r) => std::str::from_utf8(&raw[r.clone()]).unwrap_or_default(),
            Text::Owned(s) => s,
        }
    }
}

impl PartialEq for ReceivedEventData {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw && self.partition_id == other.partition_id
    }
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
    /// Reads a delivered message. Fails when its sections are malformed or the service
    /// annotations are missing.
    pub(crate) fn decode(
        raw: Bytes,
        partition_id: &Arc<str>,
        track_last: bool,
    ) -> Result<(Self, Option<LastEnqueuedEventProperties>)> {
        let bad = |why: String| {
            Error::new(ErrorKind::EventData, format!("undecodable event from partition {partition_id}: {why}"))
        };
        let spans = SectionSpans::scan(&raw).map_err(|e| bad(e.to_string()))?;
        let a = match &spans.message_annotations {
            Some(ma) => match ServiceAnnotations::read(&raw, ma) {
                Some(a) => a.into(),
                None => Annotations::general(&raw, ma).map_err(|e| bad(e.to_string()))?,
            },
            None => Annotations::default(),
        };
        let (seq, offset, time, key) = (a.sequence_number, a.offset, a.enqueued_time, a.partition_key);
        let sequence_number = seq.ok_or_else(|| bad("no x-opt-sequence-number".into()))?;
        let offset = offset.ok_or_else(|| bad("no x-opt-offset".into()))?;
        let body = single_data_section(&raw, &spans);
        let ev = ReceivedEventData {
            raw,
            body,
            message: OnceLock::new(),
            sequence_number,
            offset,
            enqueued_time_millis: time,
            partition_key: key,
            partition_id: partition_id.clone(),
        };
        let last = if track_last && spans.delivery_annotations.is_some() {
            let m = ev.raw_amqp_message();
            m.delivery_annotations.as_deref().and_then(|da| {
                let g = |k: &str| ehub_amqp_codec::map_get(da, k);
                let l = LastEnqueuedEventProperties {
                    sequence_number: g(ann::LAST_ENQUEUED_SEQUENCE_NUMBER).and_then(|v| v.as_i64()),
                    offset: g(ann::LAST_ENQUEUED_OFFSET).and_then(|v| v.as_text()).map(str::to_owned),
                    enqueued_time: g(ann::LAST_ENQUEUED_TIME_UTC)
                        .and_then(|v| v.as_timestamp())
                        .map(|t| millis_to_time(t.0)),
                    retrieval_time: g(ann::RUNTIME_INFO_RETRIEVAL_TIME_UTC)
                        .and_then(|v| v.as_timestamp())
                        .map(|t| millis_to_time(t.0)),
                };
                l.sequence_number.is_some().then_some(l)
            })
        } else {
            None
        };
        Ok((ev, last))
    }

    /// The body when it is one `data` section (zero-copy).
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_ref().map(|r| &self.raw[r.clone()])
    }

    /// The body as UTF-8 text, when it is one `data` section of valid UTF-8.
    pub fn body_as_str(&self) -> Option<&str> {
        self.body().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Application properties.
    pub fn properties(&self) -> &[(Value, Value)] {
        self.raw_amqp_message().application_properties.as_deref().unwrap_or(&[])
    }

    /// One application property.
    pub fn property(&self, key: &str) -> Option<&Value> {
        ehub_amqp_codec::map_get(self.properties(), key)
    }

    /// The service's message annotations (`x-opt-*` and any the publisher set).
    pub fn system_properties(&self) -> &Map {
        static EMPTY: Map = Vec::new();
        self.raw_amqp_message().message_annotations.as_ref().unwrap_or(&EMPTY)
    }

    /// Sequence number within the partition.
    pub fn sequence_number(&self) -> i64 {
        self.sequence_number
    }

    /// Offset within the partition.
    pub fn offset(&self) -> &str {
        self.offset.get(&self.raw)
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
        self.partition_key.as_ref().map(|k| k.get(&self.raw))
    }

    /// The partition it was read from.
    pub fn partition_id(&self) -> &str {
        &self.partition_id
    }

    /// Content type.
    pub fn content_type(&self) -> Option<&str> {
        self.raw_amqp_message().properties.as_ref().and_then(|p| p.content_type.as_ref()).map(|s| s.as_str())
    }

    /// Correlation id.
    pub fn correlation_id(&self) -> Option<&Value> {
        self.raw_amqp_message().properties.as_ref().and_then(|p| p.correlation_id.as_ref())
    }

    /// Message id.
    pub fn message_id(&self) -> Option<&Value> {
        self.raw_amqp_message().properties.as_ref().and_then(|p| p.message_id.as_ref())
    }

    /// The whole AMQP message.
    pub fn raw_amqp_message(&self) -> &AmqpAnnotatedMessage {
        self.message.get_or_init(|| {
            Box::new(Message::decode(&self.raw).unwrap_or_else(|e| {
                // The sections were scanned when the event arrived; a value inside one
                // still failed to decode. Report it and expose an empty message.
                tracing::warn!(partition_id = %self.partition_id, sequence_number = self.sequence_number, error = %e, "undecodable event section");
                Message::default()
            }))
        })
    }

    /// The message exactly as delivered.
    pub fn raw_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// An [`EventData`] with the same body and properties, to send elsewhere (the service
    /// annotations are dropped).
    pub fn to_event_data(&self) -> EventData {
        let mut m = self.raw_amqp_message().clone();
        m.message_annotations = None;
        m.delivery_annotations = None;
        EventData::from_amqp_message(m)
    }
}

/// The payload range of a body made of exactly one `data` section.
fn single_data_section(raw: &Bytes, spans: &SectionSpans) -> Option<Range<usize>> {
    if spans.body_kind != Some(ehub_amqp_codec::descriptor::DATA) {
        return None;
    }
    let b = spans.body.clone()?;
    // 0x00 0x53 0x75, then vbin8 (len u8) or vbin32 (len u32).
    let at = b.start + 3;
    let (start, len) = match *raw.get(at)? {
        code::VBIN8 => (at + 2, *raw.get(at + 1)? as usize),
        code::VBIN32 => (at + 5, u32::from_be_bytes(raw.get(at + 1..at + 5)?.try_into().ok()?) as usize),
        _ => return None,
    };
    (start + len == b.end).then_some(start..start + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn delivered(annotations: Vec<(Value, Value)>) -> Bytes {
        let mut m = Message::with_data(Bytes::from_static(b"body"));
        m.message_annotations = Some(annotations);
        m.to_bytes().unwrap()
    }

    fn sym(s: &str) -> Value {
        Value::Symbol(s.into())
    }

    #[test]
    fn service_annotations_decode_by_the_fast_path_and_any_other_form() {
        let pid: Arc<str> = Arc::from("3");
        // The service's forms: long, str8 offset, timestamp, str8 key.
        let raw = delivered(vec![
            (sym(ann::SEQUENCE_NUMBER), Value::Long(1 << 40)),
            (sym(ann::OFFSET), Value::String("123456".into())),
            (sym(ann::ENQUEUED_TIME), Value::Timestamp(ehub_amqp_codec::Timestamp(1_700_000_000_123))),
            (sym(ann::PARTITION_KEY), Value::String("kéy".into())),
            (sym("x-custom"), Value::Int(1)),
        ]);
        let (e, _) = ReceivedEventData::decode(raw, &pid, false).unwrap();
        assert_eq!((e.sequence_number(), e.offset(), e.partition_key()), (1 << 40, "123456", Some("kéy")));
        assert_eq!(e.enqueued_time_millis(), 1_700_000_000_123);
        assert_eq!(e.body(), Some(&b"body"[..]));
        // Other encodings the decoder must still understand: small long, an integer offset,
        // a symbol partition key.
        let raw = delivered(vec![
            (sym(ann::SEQUENCE_NUMBER), Value::Long(-5)),
            (sym(ann::OFFSET), Value::Long(42)),
            (sym(ann::ENQUEUED_TIME), Value::Timestamp(ehub_amqp_codec::Timestamp(7))),
            (sym(ann::PARTITION_KEY), sym("k")),
        ]);
        let (e, _) = ReceivedEventData::decode(raw, &pid, false).unwrap();
        assert_eq!((e.sequence_number(), e.offset(), e.partition_key()), (-5, "42", Some("k")));
        // No sequence number: refused with the event-data kind.
        let raw = delivered(vec![(sym(ann::OFFSET), Value::String("1".into()))]);
        let err = ReceivedEventData::decode(raw, &pid, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::EventData);
    }

    fn section(raw: &Bytes) -> Range<usize> {
        SectionSpans::scan(raw).unwrap().message_annotations.unwrap()
    }

    #[test]
    fn the_one_pass_reader_takes_the_service_layout_and_declines_other_forms() {
        let service = |key: Option<Value>, extra: Option<(Value, Value)>| {
            let mut a = vec![
                (sym(ann::SEQUENCE_NUMBER), Value::Long(77)),
                (sym(ann::OFFSET), Value::String("4096".into())),
                (sym(ann::ENQUEUED_TIME), Value::Timestamp(ehub_amqp_codec::Timestamp(1_700_000_000_000))),
            ];
            a.extend(key.map(|k| (sym(ann::PARTITION_KEY), k)));
            a.extend(extra);
            delivered(a)
        };
        for raw in [
            service(None, None),
            service(Some(Value::String("k".into())), None),
            service(None, Some((sym("x-foreign"), Value::List(vec![Value::Int(1)])))),
        ] {
            let a =
                ServiceAnnotations::read(&raw, &section(&raw)).expect("the service layout takes the one-pass reader");
            assert_eq!((a.sequence_number, &raw[a.offset], a.enqueued_time), (77, &b"4096"[..], 1_700_000_000_000));
        }
        let described = Value::Described(Box::new(ehub_amqp_codec::Described {
            descriptor: ehub_amqp_codec::Descriptor::Code(9),
            value: Value::Int(1),
        }));
        for raw in [
            // A key as a string, an integer offset, a described foreign value, no sequence number.
            service(None, Some((Value::String(ann::PARTITION_KEY.into()), Value::String("k".into())))),
            delivered(vec![(sym(ann::SEQUENCE_NUMBER), Value::Long(1)), (sym(ann::OFFSET), Value::Long(2))]),
            service(None, Some((sym("x-foreign"), described))),
            delivered(vec![(sym(ann::OFFSET), Value::String("1".into()))]),
        ] {
            assert!(ServiceAnnotations::read(&raw, &section(&raw)).is_none());
        }
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::Int),
            any::<i64>().prop_map(Value::Long),
            any::<u64>().prop_map(Value::Ulong),
            any::<i64>().prop_map(|t| Value::Timestamp(ehub_amqp_codec::Timestamp(t))),
            "[a-z0-9é]{0,12}".prop_map(Value::String),
            "[a-z]{1,6}".prop_map(|s| Value::Symbol(s.into())),
            any::<i32>().prop_map(|n| Value::Described(Box::new(ehub_amqp_codec::Described {
                descriptor: ehub_amqp_codec::Descriptor::Code(7),
                value: Value::Int(n),
            }))),
        ]
    }

    proptest::proptest! {
        /// Wherever the one-pass reader answers, the general reader reads the same annotations.
        #[test]
        fn the_one_pass_reader_agrees_with_the_general_one(
            entries in proptest::collection::vec(
                (prop_oneof![
                    Just(ann::SEQUENCE_NUMBER.to_string()),
                    Just(ann::OFFSET.to_string()),
                    Just(ann::ENQUEUED_TIME.to_string()),
                    Just(ann::PARTITION_KEY.to_string()),
                    "x-[a-z]{1,8}",
                ], any::<bool>(), scalar()),
                0..8,
            ),
            service_base in any::<bool>(),
        ) {
            // Half the cases start from the service's own entries, so the one-pass reader answers.
            let mut all = Vec::new();
            if service_base {
                all.push((sym(ann::SEQUENCE_NUMBER), Value::Long(5)));
                all.push((sym(ann::OFFSET), Value::String("10".into())));
            }
            let entries_empty = entries.is_empty();
            all.extend(entries.into_iter().map(|(k, as_symbol, v)| (if as_symbol { sym(&k) } else { Value::String(k) }, v)));
            let only_service = service_base && entries_empty;
            let raw = delivered(all);
            let ma = section(&raw);
            let fast = ServiceAnnotations::read(&raw, &ma);
            // Not vacuous: the service's own layout must take the one-pass reader.
            proptest::prop_assert!(!only_service || fast.is_some());
            if let Some(fast) = fast {
                let g = Annotations::general(&raw, &ma).unwrap();
                proptest::prop_assert_eq!(g.sequence_number, Some(fast.sequence_number));
                proptest::prop_assert_eq!(g.offset.as_ref().map(|t| t.get(&raw)), Some(std::str::from_utf8(&raw[fast.offset.clone()]).unwrap()));
                proptest::prop_assert_eq!(g.enqueued_time, fast.enqueued_time);
                proptest::prop_assert_eq!(g.partition_key.as_ref().map(|t| t.get(&raw)), fast.key.clone().map(|k| std::str::from_utf8(&raw[k]).unwrap()));
            }
        }
    }
}
