//! The journal's records: one per write, framed as `len u32 LE | crc32c u32 LE | payload`.
//!
//! A payload is an op byte and its fields; strings and byte strings are `u32 LE` length-prefixed.
//! The decoder takes untrusted bytes (a torn or damaged file) and never panics: it stops at the
//! first frame that is short, too long, or fails its checksum.

use crate::{BlobEntry, ContainerEntry, Etag, Metadata};
use bytes::Bytes;

/// Frame header: payload length and checksum.
pub(crate) const HEADER: usize = 8;
/// Largest payload a frame may claim (a blob body is capped well below it).
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

const PUT_CONTAINER: u8 = 1;
const DELETE_CONTAINER: u8 = 2;
const PUT_BLOB: u8 = 3;
const DELETE_BLOB: u8 = 4;

/// One journalled write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// A container created (or, in a snapshot, one that exists).
    PutContainer { account: String, name: String, entry: ContainerEntry },
    /// A container deleted with its blobs.
    DeleteContainer { account: String, name: String },
    /// A blob's whole new state (Put Blob and Set Metadata both write it).
    PutBlob { account: String, container: String, name: String, entry: BlobEntry },
    /// A blob deleted.
    DeleteBlob { account: String, container: String, name: String },
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_meta(out: &mut Vec<u8>, m: &Metadata) {
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    for (k, v) in m {
        put_str(out, k.as_bytes());
        put_str(out, v.as_bytes());
    }
}

impl Record {
    /// Appends this record, framed, to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        match self {
            Record::PutContainer { account, name, entry } => {
                out.push(PUT_CONTAINER);
                put_str(out, account.as_bytes());
                put_str(out, name.as_bytes());
                out.extend_from_slice(&entry.etag.0.to_le_bytes());
                out.extend_from_slice(&entry.last_modified.to_le_bytes());
                put_meta(out, &entry.metadata);
            }
            Record::DeleteContainer { account, name } => {
                out.push(DELETE_CONTAINER);
                put_str(out, account.as_bytes());
                put_str(out, name.as_bytes());
            }
            Record::PutBlob { account, container, name, entry } => {
                out.push(PUT_BLOB);
                put_str(out, account.as_bytes());
                put_str(out, container.as_bytes());
                put_str(out, name.as_bytes());
                out.extend_from_slice(&entry.etag.0.to_le_bytes());
                out.extend_from_slice(&entry.created.to_le_bytes());
                out.extend_from_slice(&entry.last_modified.to_le_bytes());
                put_str(out, entry.content_type.as_bytes());
                out.extend_from_slice(&entry.content_md5);
                put_meta(out, &entry.metadata);
                put_str(out, &entry.body);
            }
            Record::DeleteBlob { account, container, name } => {
                out.push(DELETE_BLOB);
                put_str(out, account.as_bytes());
                put_str(out, container.as_bytes());
                put_str(out, name.as_bytes());
            }
        }
        let payload = &out[start + HEADER..];
        let len = (payload.len() as u32).to_le_bytes();
        let crc = crc32c::crc32c(payload).to_le_bytes();
        out[start..start + 4].copy_from_slice(&len);
        out[start + 4..start + HEADER].copy_from_slice(&crc);
    }

    /// Decodes the frame at the start of `buf`: the record and the bytes it took, or `None`
    /// when the frame is incomplete, damaged or unknown (the journal's valid end).
    pub(crate) fn decode(buf: &[u8]) -> Option<(Record, usize)> {
        let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(buf.get(4..HEADER)?.try_into().ok()?);
        if len > MAX_PAYLOAD {
            return None;
        }
        let payload = buf.get(HEADER..HEADER.checked_add(len)?)?;
        if crc32c::crc32c(payload) != crc {
            return None;
        }
        let mut r = Reader(payload);
        let record = match r.u8()? {
            PUT_CONTAINER => Record::PutContainer {
                account: r.string()?,
                name: r.string()?,
                entry: ContainerEntry { etag: Etag(r.u64()?), last_modified: r.i64()?, metadata: r.meta()? },
            },
            DELETE_CONTAINER => Record::DeleteContainer { account: r.string()?, name: r.string()? },
            PUT_BLOB => Record::PutBlob {
                account: r.string()?,
                container: r.string()?,
                name: r.string()?,
                entry: BlobEntry {
                    etag: Etag(r.u64()?),
                    created: r.i64()?,
                    last_modified: r.i64()?,
                    content_type: r.string()?,
                    content_md5: r.take(16)?.try_into().ok()?,
                    metadata: r.meta()?,
                    body: Bytes::copy_from_slice(r.bytes()?),
                },
            },
            DELETE_BLOB => Record::DeleteBlob { account: r.string()?, container: r.string()?, name: r.string()? },
            _ => return None,
        };
        r.0.is_empty().then_some((record, HEADER + len))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
    fn meta(&mut self) -> Option<Metadata> {
        let n = self.u32()? as usize;
        // Each pair takes at least 8 bytes: refuse counts the payload cannot hold.
        if n > self.0.len() / 8 {
            return None;
        }
        (0..n).map(|_| Some((self.string()?, self.string()?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_meta() -> impl Strategy<Value = Metadata> {
        proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,8}", ".{0,12}"), 0..4)
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        prop_oneof![
            ("[a-z]{1,8}", "[a-z0-9-]{3,12}", any::<u64>(), any::<i64>(), arb_meta()).prop_map(|(a, n, e, t, m)| {
                Record::PutContainer {
                    account: a,
                    name: n,
                    entry: ContainerEntry { etag: Etag(e), last_modified: t, metadata: m },
                }
            }),
            ("[a-z]{1,8}", "[a-z0-9-]{3,12}").prop_map(|(a, n)| Record::DeleteContainer { account: a, name: n }),
            (
                ("[a-z]{1,8}", "[a-z0-9-]{3,12}", ".{1,40}"),
                (any::<u64>(), any::<i64>(), any::<i64>(), ".{0,20}", any::<[u8; 16]>()),
                arb_meta(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|((a, c, n), (e, cr, lm, ct, md5), m, body)| Record::PutBlob {
                    account: a,
                    container: c,
                    name: n,
                    entry: BlobEntry {
                        etag: Etag(e),
                        created: cr,
                        last_modified: lm,
                        content_type: ct,
                        content_md5: md5,
                        metadata: m,
                        body: Bytes::from(body),
                    },
                }),
            ("[a-z]{1,8}", "[a-z0-9-]{3,12}", ".{1,40}").prop_map(|(a, c, n)| Record::DeleteBlob {
                account: a,
                container: c,
                name: n
            }),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(records in proptest::collection::vec(arb_record(), 1..8)) {
            let mut buf = Vec::new();
            for r in &records {
                r.encode(&mut buf);
            }
            let mut at = 0;
            let mut back = Vec::new();
            while let Some((r, n)) = Record::decode(&buf[at..]) {
                back.push(r);
                at += n;
            }
            prop_assert_eq!(at, buf.len());
            prop_assert_eq!(back, records);
        }

        #[test]
        fn a_torn_or_damaged_tail_ends_the_journal(record in arb_record(), cut in 0usize..200, flip in 0usize..200) {
            let mut buf = Vec::new();
            record.encode(&mut buf);
            let whole = buf.len();
            let mut torn = buf.clone();
            torn.truncate(cut.min(whole - 1));
            prop_assert!(Record::decode(&torn).is_none());
            let i = flip % whole;
            buf[i] ^= 0x40;
            // CRC-32C catches every single-bit error in the payload; a changed length frames a
            // different payload, whose checksum then fails.
            prop_assert!(Record::decode(&buf).is_none());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Record::decode(&bytes);
        }
    }
}
