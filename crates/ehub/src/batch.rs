//! [`EventDataBatch`]: events packed into one batch message (format `0x80013700`) with exact
//! accounting of its wire size.

use crate::error::{Error, ErrorKind, Result};
use crate::event::{set_partition_key, EventData};
use bytes::{Bytes, BytesMut};
use ehub_amqp_codec::{data_section_size, put_data_section, Message};

/// Options of [`crate::ProducerClient::create_batch`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventDataBatchOptions {
    /// Send the batch to this partition (wins over `partition_key`).
    pub partition_id: Option<String>,
    /// Route the batch by this key.
    pub partition_key: Option<String>,
    /// Largest batch size in bytes; defaults to the link's maximum message size.
    pub max_size_in_bytes: Option<u64>,
}

/// Events that go to the service as one message.
///
/// The size counted is exactly the size of the message on the wire: the envelope, plus one
/// `data` section per event (its encoded bytes plus 5 or 8 bytes of section overhead).
#[derive(Debug, Clone)]
pub struct EventDataBatch {
    pub(crate) partition_id: Option<String>,
    pub(crate) partition_key: Option<String>,
    max_size: u64,
    envelope: Bytes,
    body: BytesMut,
    count: usize,
    /// Where each event is encoded before it is copied into `body`.
    scratch: BytesMut,
}

impl EventDataBatch {
    pub(crate) fn new(partition_id: Option<String>, partition_key: Option<String>, max_size: u64) -> Result<Self> {
        // A partition id wins over a key: the key is not sent then.
        let partition_key = if partition_id.is_some() { None } else { partition_key };
        let mut envelope = Message::default();
        if let Some(k) = &partition_key {
            set_partition_key(&mut envelope, k);
        }
        let envelope = envelope
            .to_bytes()
            .map_err(|e| Error::new(ErrorKind::EventData, format!("encoding the batch envelope: {e}")))?;
        if envelope.len() as u64 > max_size {
            return Err(Error::invalid(format!("max_size_in_bytes {max_size} is too small for any batch")));
        }
        Ok(EventDataBatch {
            partition_id,
            partition_key,
            max_size,
            envelope,
            body: BytesMut::new(),
            count: 0,
            scratch: BytesMut::new(),
        })
    }

    /// Adds `event` when it fits. Returns `Ok(false)`, leaving the batch unchanged, when it
    /// would make the batch larger than its maximum size. An event too large for even an
    /// empty batch is an error of kind [`ErrorKind::MessageTooLarge`].
    pub fn try_add(&mut self, event: &EventData) -> Result<bool> {
        let key = self.partition_key.clone();
        self.try_add_keyed(event, key.as_deref())
    }

    /// As [`EventDataBatch::try_add`], stamping `key` on this event alone (the buffered producer
    /// hashes keys itself and sends keyed and unkeyed events of one partition together).
    pub(crate) fn try_add_keyed(&mut self, event: &EventData, key: Option<&str>) -> Result<bool> {
        // Encoded into a reused buffer: no allocation per event.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let r = event.encode_into(key, &mut scratch).and_then(|()| self.add_encoded(&scratch));
        self.scratch = scratch;
        r
    }

    fn add_encoded(&mut self, encoded: &[u8]) -> Result<bool> {
        let added = data_section_size(encoded.len()) as u64;
        if self.size_in_bytes() as u64 + added > self.max_size {
            if self.count == 0 {
                return Err(Error::new(
                    ErrorKind::MessageTooLarge,
                    format!(
                        "the event needs {added} bytes; an empty batch has room for {}",
                        self.max_size - self.envelope.len() as u64
                    ),
                ));
            }
            return Ok(false);
        }
        put_data_section(&mut self.body, encoded)
            .map_err(|e| Error::new(ErrorKind::EventData, format!("encoding the event: {e}")))?;
        self.count += 1;
        Ok(true)
    }

    /// Bytes the batch occupies on the wire.
    pub fn size_in_bytes(&self) -> usize {
        self.envelope.len() + self.body.len()
    }

    /// Largest size allowed.
    pub fn max_size_in_bytes(&self) -> u64 {
        self.max_size
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The partition the batch goes to, if fixed.
    pub fn partition_id(&self) -> Option<&str> {
        self.partition_id.as_deref()
    }

    /// The partition key, if any.
    pub fn partition_key(&self) -> Option<&str> {
        self.partition_key.as_deref()
    }

    /// The encoded batch message.
    pub(crate) fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.size_in_bytes());
        out.extend_from_slice(&self.envelope);
        out.extend_from_slice(&self.body);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehub_amqp_codec::{batch_items, SectionSpans};

    #[test]
    fn size_accounting_is_exact_and_overflow_is_refused() {
        let mut b = EventDataBatch::new(None, Some("k".into()), 1200).unwrap();
        let small = EventData::from("x".repeat(100));
        let big = EventData::from("y".repeat(300));
        assert!(b.try_add(&small).unwrap());
        assert!(b.try_add(&big).unwrap());
        assert_eq!(b.size_in_bytes(), b.to_bytes().len(), "counted size equals encoded size");
        let spans = SectionSpans::scan(&b.to_bytes()).unwrap();
        assert_eq!(batch_items(&b.to_bytes(), &spans).unwrap().len(), 2);
        while b.try_add(&small).unwrap() {}
        assert!(b.size_in_bytes() <= 1200);
        assert!(b.size_in_bytes() + data_section_size(small.encode(Some("k")).unwrap().len()) > 1200);
        let before = b.len();
        assert!(!b.try_add(&big).unwrap());
        assert_eq!(b.len(), before, "a refused event leaves the batch unchanged");
        let mut tiny = EventDataBatch::new(None, None, 50).unwrap();
        let e = tiny.try_add(&big).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MessageTooLarge);
    }

    #[test]
    fn partition_id_wins_over_key() {
        let b = EventDataBatch::new(Some("1".into()), Some("k".into()), 1000).unwrap();
        assert_eq!(b.partition_key(), None);
        assert_eq!(b.partition_id(), Some("1"));
    }
}
