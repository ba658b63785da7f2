//! A Kafka request frame from arbitrary bytes: decoding it (only the APIs and versions the
//! endpoint serves), decoding a produce's record batches into events, and reading arbitrary
//! stored bytes back as a Kafka record never panic; and reading stored bytes without decoding
//! them, where that applies, gives the record decoding gives.
#![no_main]

use bytes::Bytes;
use ehub_broker_kafka::codec::{decode_records, decode_request, Decoded};
use ehub_partition_log::StoredEvent;
use kafka_protocol::messages::RequestKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(Decoded::Request { request, .. }) = decode_request(bytes.clone()) {
        if let RequestKind::Produce(p) = *request {
            for t in p.topic_data {
                for part in t.partition_data {
                    let _ = decode_records(part.records, &|_| Bytes::new());
                }
            }
        }
    }
    // The same bytes as a produce's records, and as a stored event read through Kafka.
    let _ = decode_records(Some(bytes.clone()), &|_| Bytes::new());
    // Whatever the bytes, skipping the decoding of a plain event gives what decoding gives.
    let e = StoredEvent { sequence_number: 1, offset: 0, enqueued_time: 0, partition_key: None, payload: bytes };
    let decoded = ehub_broker_kafka::mapping::decoded_record(e.clone());
    assert_eq!(ehub_broker_kafka::mapping::event_to_record(e), decoded);
});
