//! Decoding what a Kafka client sends: request frames (through `kafka-protocol`) and the
//! record batches of a produce, turned into events. Public so that the fuzz targets reach them.

use crate::mapping::encode_record_event;
use crate::versions::range;
use bytes::{Bytes, BytesMut};
use ehub_partition_log::AppendEvent;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::records::RecordBatchDecoder;

/// An event's AMQP framing beyond its key, value and headers: the data section's descriptor
/// and length, and the annotations section with the key's name (an estimate for sizing; the
/// buffer grows if it is short).
const EVENT_OVERHEAD: usize = 48;

/// A decoded request frame.
#[derive(Debug)]
pub enum Decoded {
    /// ApiVersions, answered whatever its version (an unknown one gets UNSUPPORTED_VERSION).
    ApiVersions {
        /// The version asked for.
        version: i16,
        /// To echo.
        correlation_id: i32,
    },
    /// Any other served request.
    Request {
        /// Its API.
        api: ApiKey,
        /// Its version.
        version: i16,
        /// Its header.
        header: RequestHeader,
        /// Its body (boxed: the largest request kinds are large).
        request: Box<RequestKind>,
    },
}

/// Why a frame could not be taken: its connection is closed with this reason.
pub type Refused = &'static str;

/// Decodes one request frame (without its size prefix). Only served APIs and versions are
/// decoded; anything else is refused.
pub fn decode_request(mut frame: Bytes) -> Result<Decoded, Refused> {
    if frame.len() < 8 {
        return Err("a request shorter than its header");
    }
    let (key, version) = (i16::from_be_bytes([frame[0], frame[1]]), i16::from_be_bytes([frame[2], frame[3]]));
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| "an unknown API key")?;
    if api == ApiKey::ApiVersions {
        if (0..=4).contains(&version) {
            kafka_protocol::protocol::decode_request_header_from_buffer(&mut frame)
                .and_then(|_| RequestKind::decode(api, &mut frame, version))
                .map_err(|_| "a malformed ApiVersions request")?;
        }
        return Ok(Decoded::ApiVersions { version, correlation_id });
    }
    let (lo, hi) = range(api).ok_or("an API this broker does not serve")?;
    if version < lo || version > hi {
        return Err("an API version this broker does not serve");
    }
    let header = kafka_protocol::protocol::decode_request_header_from_buffer(&mut frame)
        .map_err(|_| "a malformed request header")?;
    let request = RequestKind::decode(api, &mut frame, version).map_err(|_| "a malformed request")?;
    Ok(Decoded::Request { api, version, header, request: Box::new(request) })
}

/// The events of a produce's record batches for one partition.
#[derive(Debug, Default)]
pub struct Produced {
    /// One event per record, in order.
    pub events: Vec<AppendEvent>,
    /// Their stored size.
    pub bytes: usize,
    /// An idempotent producer's (id, epoch, first sequence, last sequence).
    pub producer: Option<(i64, i16, i32, i32)>,
}

/// Kafka error: CORRUPT_MESSAGE.
pub const CORRUPT_MESSAGE: i16 = 2;
/// Kafka error: UNSUPPORTED_FOR_MESSAGE_FORMAT (transactional and control batches).
pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;

/// Decodes (and decompresses) record batches into events, or the Kafka error to answer with.
/// `mark` gives the producer mark stored on the first event of an idempotent producer's
/// batches, from (producer id, epoch, first sequence, last sequence).
pub fn decode_records(records: Option<Bytes>, mark: &dyn Fn((i64, i16, i32, i32)) -> Bytes) -> Result<Produced, i16> {
    let mut bytes = records.unwrap_or_default();
    let sets = RecordBatchDecoder::decode_all(&mut bytes).map_err(|_| CORRUPT_MESSAGE)?;
    let mut out = Produced::default();
    // An idempotent request's batches (one per partition in practice) are one sequence range.
    for set in &sets {
        let Some(first) = set.records.first() else { continue };
        if first.transactional || first.control {
            return Err(UNSUPPORTED_FOR_MESSAGE_FORMAT);
        }
        if first.producer_id >= 0 && first.sequence >= 0 {
            let last = first.sequence.wrapping_add(set.records.len() as i32 - 1);
            out.producer = Some(match out.producer {
                Some((pid, epoch, start, _)) => (pid, epoch, start, last),
                None => (first.producer_id, first.producer_epoch, first.sequence, last),
            });
        }
    }
    // One allocation for every event of the request: each is a slice of it.
    let (mut count, mut size) = (0, 0);
    for r in sets.iter().flat_map(|s| &s.records) {
        count += 1;
        size += EVENT_OVERHEAD + r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
        size += r.headers.iter().map(|(k, v)| 16 + k.len() + v.as_ref().map_or(0, |v| v.len())).sum::<usize>();
    }
    out.events.reserve_exact(count);
    // The first event of an idempotent batch also carries the producer mark, under its name.
    let marked = if out.producer.is_some() { crate::producers::MARK_LEN + EVENT_OVERHEAD } else { 0 };
    let mut buf = BytesMut::with_capacity(size + marked);
    for set in &sets {
        for r in &set.records {
            let m = out.producer.filter(|_| out.events.is_empty()).map(mark);
            encode_record_event(r.key.as_ref(), r.value.as_ref(), &r.headers, m, &mut buf);
            let payload = buf.split().freeze();
            out.bytes += payload.len();
            out.events.push(AppendEvent { partition_key: None, payload });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    /// Requests of a few bytes that claim billions of array elements are refused instead of
    /// aborting the broker on the allocation (inputs found by the `kafka_request` fuzz target).
    #[test]
    fn huge_claimed_counts_are_refused_without_allocating() {
        for seed in [
            &include_bytes!("../../../fuzz/corpus/kafka_request/seed-regression-48e0e341dc8c")[..],
            &include_bytes!("../../../fuzz/corpus/kafka_request/seed-regression-954e83e4fe69")[..],
        ] {
            assert!(decode_request(Bytes::copy_from_slice(seed)).is_err());
        }
        // Metadata v1 claiming 2^31 - 1 topics in a 14-byte frame.
        let mut frame = vec![0, 3, 0, 1, 0, 0, 0, 9, 0, 0];
        frame.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(decode_request(Bytes::from(frame)).unwrap_err(), "a malformed request");
    }

    #[test]
    fn a_compressed_batch_expanding_past_the_limit_is_refused() {
        let record = |value: Bytes| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 0,
            key: None,
            value: Some(value),
            headers: Default::default(),
        };
        let encode = |r: &Record| {
            let mut buf = bytes::BytesMut::new();
            let options = RecordEncodeOptions { version: 2, compression: Compression::Gzip };
            RecordBatchEncoder::encode(&mut buf, [r], &options).unwrap();
            buf.freeze()
        };
        let bomb = encode(&record(Bytes::from(vec![0u8; 65 << 20])));
        assert!(bomb.len() < 1 << 20, "a small request: {} bytes", bomb.len());
        let mark = |_| Bytes::new();
        assert_eq!(decode_records(Some(bomb), &mark).unwrap_err(), CORRUPT_MESSAGE);
        let fine = decode_records(Some(encode(&record(Bytes::from_static(b"ok")))), &mark).unwrap();
        assert_eq!(fine.events.len(), 1);
    }
}
