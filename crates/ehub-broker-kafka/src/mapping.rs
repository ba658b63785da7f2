//! Kafka records ⇄ stored events, as Event Hubs maps them between its protocols.
//!
//! - A Kafka record's value is the event body (one `data` section), its key the message
//!   annotation `x-opt-kafka-key` (binary; never the Event Hubs partition key, because the two
//!   protocols hash keys to partitions differently), and its headers application properties of
//!   AMQP type binary.
//! - An event read through Kafka: offset = sequence number, timestamp = enqueued time; the body
//!   bytes are the value (a non-`data` body is given AMQP-encoded); binary application
//!   properties are headers as they are, other types AMQP-encoded; the properties section's
//!   message-id, user-id, to, reply-to, content-type, content-encoding and creation-time are
//!   UTF-8 headers; the partition key is the header `x-opt-partition-key`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ehub_amqp_codec::{encode_value, put_data_section, sole_data_section, Body, Message, Symbol, Value};
use ehub_partition_log::StoredEvent;
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, TimestampType};

/// The message annotation that carries a Kafka record's key.
pub const KAFKA_KEY: &str = "x-opt-kafka-key";
/// The header that carries an event's Event Hubs partition key.
pub const PARTITION_KEY_HEADER: &str = "x-opt-partition-key";

/// The stored form (an AMQP message) of a Kafka record; `mark` is the producer mark of an
/// idempotent batch's first record ([`crate::producers`]).
pub fn record_to_event(
    key: Option<&Bytes>,
    value: Option<&Bytes>,
    headers: &IndexMap<StrBytes, Option<Bytes>>,
    mark: Option<Bytes>,
) -> Bytes {
    let mut out = BytesMut::new();
    encode_record_event(key, value, headers, mark, &mut out);
    out.freeze()
}

/// [`record_to_event`] appending to `out`, so that a whole batch's events can share one
/// allocation (`out.split().freeze()` after each).
pub fn encode_record_event(
    key: Option<&Bytes>,
    value: Option<&Bytes>,
    headers: &IndexMap<StrBytes, Option<Bytes>>,
    mark: Option<Bytes>,
    out: &mut BytesMut,
) {
    // The sections before the body, only when there is something to put in them: most
    // records have neither key nor headers, and this runs for every record produced.
    if key.is_some() || mark.is_some() || !headers.is_empty() {
        let mut m = Message { body: Body::Empty, ..Default::default() };
        let mut annotations = Vec::new();
        if let Some(k) = key {
            annotations.push((Value::Symbol(Symbol::new(KAFKA_KEY)), Value::Binary(k.clone())));
        }
        if let Some(mark) = mark {
            annotations
                .push((Value::Symbol(Symbol::new(ehub_model::annotations::KAFKA_PRODUCER)), Value::Binary(mark)));
        }
        if !annotations.is_empty() {
            m.message_annotations = Some(annotations);
        }
        if !headers.is_empty() {
            m.application_properties = Some(
                headers
                    .iter()
                    .map(|(k, v)| (Value::String(k.as_str().to_owned()), v.clone().map_or(Value::Null, Value::Binary)))
                    .collect(),
            );
        }
        // Encoding binaries, symbols and strings cannot fail.
        let _ = m.encode(out);
    }
    // The body: one data section (what Message::with_data would write, without the copy).
    let _ = put_data_section(out, value.map_or(&[][..], |v| &v[..]));
}

fn amqp_encoded(v: &Value) -> Bytes {
    let mut out = BytesMut::new();
    match encode_value(v, &mut out) {
        Ok(()) => out.freeze(),
        Err(_) => Bytes::new(),
    }
}

fn text_of(v: &Value) -> Option<Bytes> {
    Some(match v {
        Value::String(s) => Bytes::copy_from_slice(s.as_bytes()),
        Value::Symbol(s) => Bytes::copy_from_slice(s.as_str().as_bytes()),
        Value::Binary(b) => b.clone(),
        Value::Ulong(n) => Bytes::from(n.to_string()),
        Value::Uuid(u) => Bytes::from(format_uuid(u)),
        Value::Null => return None,
        other => amqp_encoded(other),
    })
}

fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The Kafka record of a stored event (offset = sequence number, timestamp = enqueued time).
/// Takes the event so that a plain body becomes the value without another reference to it.
pub fn event_to_record(e: StoredEvent) -> Record {
    let StoredEvent { sequence_number, enqueued_time, partition_key, payload, .. } = e;
    // Decoding the message cost a fetch more than everything else it does per record; an event
    // of one data section (Kafka records without key or headers) hands its body over as it is.
    // Any other shape is decoded, so a malformed section is treated as decoding treats it.
    let parts = match sole_data_section(&payload) {
        Some(body) => {
            let mut value = payload;
            value.advance(body.start);
            (None, Some(value), IndexMap::new())
        }
        None => decoded_record_parts(&payload),
    };
    record(sequence_number, enqueued_time, partition_key, parts)
}

/// [`event_to_record`] always by decoding the event: public so that the fuzz target checks
/// the walk that skips decoding against it.
#[doc(hidden)]
pub fn decoded_record(e: StoredEvent) -> Record {
    let parts = decoded_record_parts(&e.payload);
    record(e.sequence_number, e.enqueued_time, e.partition_key, parts)
}

/// A record's key, value and headers.
type RecordParts = (Option<Bytes>, Option<Bytes>, IndexMap<StrBytes, Option<Bytes>>);

fn record(sequence_number: i64, enqueued_time: i64, partition_key: Option<Bytes>, parts: RecordParts) -> Record {
    let (key, value, mut headers) = parts;
    if let Some(pk) = partition_key {
        headers.insert(StrBytes::from_static_str(PARTITION_KEY_HEADER), Some(pk));
    }
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: sequence_number,
        // Constant offset - sequence, so the encoder keeps consecutive events in one batch.
        sequence: sequence_number as i32,
        timestamp: enqueued_time,
        key,
        value,
        headers,
    }
}

/// A record's key, value and headers (before the partition key's) from any stored event,
/// by decoding it.
fn decoded_record_parts(payload: &Bytes) -> RecordParts {
    let mut key = None;
    let mut headers: IndexMap<StrBytes, Option<Bytes>> = IndexMap::new();
    let m = match Message::decode(payload) {
        Ok(m) => m,
        // Not an AMQP message (cannot come from our fronts): hand the bytes over as they are.
        Err(_) => return (None, Some(payload.clone()), headers),
    };
    let value = Some(match &m.body {
        Body::Data(parts) if parts.len() == 1 => parts[0].clone(),
        Body::Data(parts) => {
            let mut b = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
            parts.iter().for_each(|p| b.put_slice(p));
            b.freeze()
        }
        Body::Value(v) => amqp_encoded(v),
        Body::Sequence(s) => amqp_encoded(&Value::List(s.iter().flat_map(|l| l.iter().cloned()).collect())),
        Body::Empty => Bytes::new(),
    });
    for (k, v) in m.message_annotations.iter().flatten() {
        if k.as_text() == Some(KAFKA_KEY) {
            key = match v {
                Value::Binary(b) => Some(b.clone()),
                other => text_of(other),
            };
        }
    }
    if let Some(p) = &m.properties {
        let mut put = |name: &'static str, v: Option<Bytes>| {
            if let Some(v) = v {
                headers.insert(StrBytes::from_static_str(name), Some(v));
            }
        };
        put("message-id", p.message_id.as_ref().and_then(text_of));
        put("user-id", p.user_id.clone());
        put("to", p.to.as_ref().map(|s| Bytes::copy_from_slice(s.as_bytes())));
        put("reply-to", p.reply_to.as_ref().map(|s| Bytes::copy_from_slice(s.as_bytes())));
        put("content-type", p.content_type.as_ref().map(|s| Bytes::copy_from_slice(s.as_str().as_bytes())));
        put("content-encoding", p.content_encoding.as_ref().map(|s| Bytes::copy_from_slice(s.as_str().as_bytes())));
        put("creation-time", p.creation_time.map(|t| Bytes::from(t.0.to_string())));
    }
    for (k, v) in m.application_properties.iter().flatten() {
        let name = match k {
            Value::String(s) => s.clone(),
            Value::Symbol(s) => s.as_str().to_owned(),
            _ => continue,
        };
        let v = match v {
            Value::Binary(b) => Some(b.clone()),
            Value::Null => None,
            other => Some(amqp_encoded(other)),
        };
        headers.insert(StrBytes::from_string(name), v);
    }
    (key, value, headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehub_amqp_codec::Properties;

    /// The direct encoding writes exactly what encoding the equivalent `Message` writes, for
    /// every combination of key, mark, headers and body size (vbin8 and vbin32).
    #[test]
    fn records_encode_as_the_equivalent_message() {
        let mut headers = IndexMap::new();
        headers.insert(StrBytes::from_static_str("h"), Some(Bytes::from_static(b"v")));
        headers.insert(StrBytes::from_static_str("null"), None);
        let big = Bytes::from(vec![7u8; 300]);
        let empty = IndexMap::new();
        for key in [None, Some(Bytes::from_static(b"k"))] {
            for mark in [None, Some(Bytes::from_static(b"mark"))] {
                for h in [&empty, &headers] {
                    for value in [None, Some(Bytes::from_static(b"small")), Some(big.clone())] {
                        let mut m = Message::with_data(value.clone().unwrap_or_default());
                        let mut ann = Vec::new();
                        if let Some(k) = &key {
                            ann.push((Value::Symbol(Symbol::new(KAFKA_KEY)), Value::Binary(k.clone())));
                        }
                        if let Some(x) = &mark {
                            let name = Symbol::new(ehub_model::annotations::KAFKA_PRODUCER);
                            ann.push((Value::Symbol(name), Value::Binary(x.clone())));
                        }
                        m.message_annotations = (!ann.is_empty()).then_some(ann);
                        m.application_properties = (!h.is_empty()).then(|| {
                            h.iter()
                                .map(|(k, v)| {
                                    (Value::String(k.to_string()), v.clone().map_or(Value::Null, Value::Binary))
                                })
                                .collect()
                        });
                        let direct = record_to_event(key.as_ref(), value.as_ref(), h, mark.clone());
                        assert_eq!(direct, m.to_bytes().unwrap(), "{key:?} {mark:?} {} {value:?}", h.len());
                    }
                }
            }
        }
    }

    fn stored(payload: Bytes, partition_key: Option<&str>) -> StoredEvent {
        StoredEvent {
            sequence_number: 41,
            offset: 4096,
            enqueued_time: 1_700_000_000_123,
            partition_key: partition_key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            payload,
        }
    }

    #[test]
    fn a_kafka_record_round_trips_through_the_stored_form() {
        let mut headers = IndexMap::new();
        headers.insert(StrBytes::from_static_str("h1"), Some(Bytes::from_static(b"\x00\x01binary")));
        headers.insert(StrBytes::from_static_str("empty"), None);
        let key = Bytes::from_static(b"user-7");
        let payload = record_to_event(Some(&key), Some(&Bytes::from_static(b"value")), &headers, None);

        // AMQP clients see the key as x-opt-kafka-key and headers as binary properties.
        let m = Message::decode(&payload).unwrap();
        assert_eq!(m.body, Body::Data(vec![Bytes::from_static(b"value")]));
        assert_eq!(
            m.message_annotations.as_ref().unwrap()[0],
            (Value::Symbol(Symbol::new(KAFKA_KEY)), Value::Binary(key.clone()))
        );
        assert_eq!(
            m.application_properties.as_ref().unwrap()[0],
            (Value::String("h1".into()), Value::Binary(Bytes::from_static(b"\x00\x01binary")))
        );

        let r = event_to_record(stored(payload, None));
        assert_eq!((r.offset, r.timestamp), (41, 1_700_000_000_123));
        assert_eq!(r.key, Some(key));
        assert_eq!(r.value, Some(Bytes::from_static(b"value")));
        assert_eq!(r.headers, headers);
    }

    #[test]
    fn an_amqp_event_reads_as_the_service_maps_it() {
        let mut m = Message::with_data(Bytes::from_static(b"body"));
        m.properties = Some(Box::new(Properties {
            message_id: Some(Value::String("m-1".into())),
            content_type: Some(Symbol::new("application/json")),
            ..Default::default()
        }));
        m.application_properties = Some(vec![
            (Value::String("s".into()), Value::String("Notification".into())),
            (Value::String("b".into()), Value::Binary(Bytes::from_static(b"raw"))),
        ]);
        let r = event_to_record(stored(m.to_bytes().unwrap(), Some("pk-1")));
        assert_eq!(r.key, None);
        assert_eq!(r.value, Some(Bytes::from_static(b"body")));
        let h = |k: &str| r.headers.get(&StrBytes::from_string(k.into())).cloned().flatten();
        assert_eq!(h("message-id"), Some(Bytes::from_static(b"m-1")));
        assert_eq!(h("content-type"), Some(Bytes::from_static(b"application/json")));
        // A string property is AMQP-encoded, with its constructor, as on the service.
        assert_eq!(h("s"), Some(Bytes::from_static(b"\xa1\x0cNotification")));
        assert_eq!(h("b"), Some(Bytes::from_static(b"raw")));
        assert_eq!(h(PARTITION_KEY_HEADER), Some(Bytes::from_static(b"pk-1")));
    }

    #[test]
    fn a_value_body_is_given_amqp_encoded() {
        let m = Message::with_value(Value::Long(5));
        let r = event_to_record(stored(m.to_bytes().unwrap(), None));
        assert_eq!(r.value, Some(Bytes::from_static(b"\x55\x05")));
    }

    /// Events of one data section skip decoding and read as decoding reads them; everything
    /// else (a key, properties, headers, a header or footer, other bodies, two data sections)
    /// is decoded.
    #[test]
    fn plain_events_skip_decoding_and_read_the_same() {
        let plain = |len: usize| Message::with_data(Bytes::from(vec![9u8; len]));
        let mut with_header = plain(10);
        with_header.header = Some(ehub_amqp_codec::Header { durable: Some(true), ..Default::default() });
        let mut with_footer = plain(10);
        with_footer.footer = Some(vec![(Value::Symbol(Symbol::new("f")), Value::Long(1))]);
        let mut with_properties = plain(10);
        with_properties.properties =
            Some(Box::new(Properties { message_id: Some(Value::Ulong(3)), ..Default::default() }));
        let mut with_headers = plain(10);
        with_headers.application_properties = Some(vec![(Value::String("h".into()), Value::Long(1))]);
        let two_sections = Message {
            body: Body::Data(vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")]),
            ..Default::default()
        };
        let with_key =
            record_to_event(Some(&Bytes::from_static(b"k")), Some(&Bytes::from_static(b"v")), &IndexMap::new(), None);
        let cases = [
            (plain(0).to_bytes().unwrap(), true),
            (plain(100).to_bytes().unwrap(), true),
            (plain(255).to_bytes().unwrap(), true),
            (plain(256).to_bytes().unwrap(), true),
            (plain(70_000).to_bytes().unwrap(), true),
            (record_to_event(None, Some(&Bytes::from_static(b"kafka value")), &IndexMap::new(), None), true),
            (with_header.to_bytes().unwrap(), false),
            (with_footer.to_bytes().unwrap(), false),
            (with_properties.to_bytes().unwrap(), false),
            (with_headers.to_bytes().unwrap(), false),
            (two_sections.to_bytes().unwrap(), false),
            (Message::with_value(Value::Long(5)).to_bytes().unwrap(), false),
            (with_key, false),
            (Bytes::from_static(b"not AMQP"), false),
        ];
        for (i, (payload, fast)) in cases.into_iter().enumerate() {
            let skipped = sole_data_section(&payload);
            assert_eq!(skipped.is_some(), fast, "case {i}");
            let (key, value, headers) = decoded_record_parts(&payload);
            if let Some(body) = skipped {
                assert_eq!((None, Some(payload.slice(body)), IndexMap::new()), (key, value, headers), "case {i}");
            }
        }
    }
}
