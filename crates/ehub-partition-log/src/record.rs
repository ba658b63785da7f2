//! The on-disk record format. All integers are little-endian.
//!
//! ```text
//! offset  size  field
//!      0     4  record length, header included (u32)
//!      4     4  CRC32C of bytes [8, length)
//!      8     8  sequence number (i64)
//!     16     8  enqueued time, Unix ms (i64)
//!     24     2  partition-key length (u16; 0xFFFF = no key)
//!     26     2  flags (reserved, 0)
//!     28     k  partition key (UTF-8)
//!   28+k     n  message bytes exactly as received
//! ```

use bytes::{BufMut, Bytes, BytesMut};

/// Size of the fixed record header.
pub const HEADER_LEN: usize = 28;
const NO_KEY: u16 = u16::MAX;
/// Largest record accepted by recovery and reads (a sanity bound, far above 1 MiB events).
pub const MAX_RECORD_LEN: u32 = 64 * 1024 * 1024;

/// An event read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Sequence number within the partition.
    pub sequence_number: i64,
    /// Offset: the logical byte position of the record in the partition.
    pub offset: u64,
    /// Enqueued time, Unix milliseconds.
    pub enqueued_time: i64,
    /// Partition key, if the event had one.
    pub partition_key: Option<Bytes>,
    /// The event bytes as received.
    pub payload: Bytes,
}

/// Encoded length of a record.
pub fn record_len(key: Option<&[u8]>, payload_len: usize) -> usize {
    HEADER_LEN + key.map_or(0, |k| k.len()) + payload_len
}

/// Appends one record.
pub fn encode_record(out: &mut BytesMut, seq: i64, time: i64, key: Option<&[u8]>, payload: &[u8]) {
    let len = record_len(key, payload.len());
    let start = out.len();
    out.reserve(len);
    out.put_u32_le(len as u32);
    out.put_u32_le(0);
    out.put_i64_le(seq);
    out.put_i64_le(time);
    match key {
        Some(k) => out.put_u16_le(k.len() as u16),
        None => out.put_u16_le(NO_KEY),
    }
    out.put_u16_le(0);
    if let Some(k) = key {
        out.put_slice(k);
    }
    out.put_slice(payload);
    let crc = crc32c::crc32c(&out[start + 8..start + len]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The result of validating the bytes at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A valid record of this length.
    Valid(usize),
    /// Not enough bytes for the declared record.
    Incomplete,
    /// The bytes are not a valid record.
    Invalid(&'static str),
}

/// Validates the record at the start of `buf`.
pub fn check(buf: &[u8]) -> Check {
    if buf.len() < HEADER_LEN {
        return Check::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if (len as usize) < HEADER_LEN || len > MAX_RECORD_LEN {
        return Check::Invalid("bad record length");
    }
    let key_len = u16::from_le_bytes([buf[24], buf[25]]);
    if key_len != NO_KEY && HEADER_LEN + key_len as usize > len as usize {
        return Check::Invalid("key longer than record");
    }
    let len = len as usize;
    if buf.len() < len {
        return Check::Incomplete;
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if crc32c::crc32c(&buf[8..len]) != crc {
        return Check::Invalid("CRC mismatch");
    }
    Check::Valid(len)
}

/// Header fields of a validated record.
pub fn header(buf: &[u8]) -> (i64, i64) {
    let seq = i64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let time = i64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
    (seq, time)
}

/// Builds an event from a validated record at `pos` of `chunk` (zero-copy slices).
pub fn to_event(chunk: &Bytes, pos: usize, len: usize, offset: u64) -> StoredEvent {
    let b = &chunk[pos..pos + len];
    let (seq, time) = header(b);
    let key_len = u16::from_le_bytes([b[24], b[25]]);
    let (key, body_start) = if key_len == NO_KEY {
        (None, HEADER_LEN)
    } else {
        let k = key_len as usize;
        (Some(chunk.slice(pos + HEADER_LEN..pos + HEADER_LEN + k)), HEADER_LEN + k)
    };
    StoredEvent {
        sequence_number: seq,
        offset,
        enqueued_time: time,
        partition_key: key,
        payload: chunk.slice(pos + body_start..pos + len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_check_decode() {
        let mut out = BytesMut::new();
        encode_record(&mut out, 7, 1000, Some(b"key"), b"payload");
        encode_record(&mut out, 8, 1001, None, b"");
        let b = out.freeze();
        let Check::Valid(n) = check(&b) else { panic!() };
        assert_eq!(n, record_len(Some(b"key"), 7));
        let e = to_event(&b, 0, n, 100);
        assert_eq!((e.sequence_number, e.enqueued_time, e.offset), (7, 1000, 100));
        assert_eq!(e.partition_key.as_deref(), Some(&b"key"[..]));
        assert_eq!(&e.payload[..], b"payload");
        let Check::Valid(m) = check(&b[n..]) else { panic!() };
        let e2 = to_event(&b, n, m, 200);
        assert_eq!(e2.partition_key, None);
        let mut bad = b.to_vec();
        bad[30] ^= 1;
        assert_eq!(check(&bad), Check::Invalid("CRC mismatch"));
        assert_eq!(check(&b[..n - 1]), Check::Incomplete);
    }
}
