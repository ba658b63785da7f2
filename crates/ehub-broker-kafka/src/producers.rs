//! Idempotent producers: per producer id and partition, the next expected sequence and the
//! last five batches with their offsets, so a retried batch is answered with the offset it
//! was first stored at instead of being stored twice.
//!
//! The state survives restarts through the log itself: the first event of each idempotent
//! batch carries a mark (producer id, epoch, sequence range, and an HMAC under a secret of the
//! data directory, so no sender can forge one), and at start the front reads the recent tail
//! of every partition and rebuilds the state from the marks ([`Producers::recover`]). The AMQP
//! front never delivers the mark.

use bytes::{BufMut, Bytes, BytesMut};
use ehub_amqp_codec::{find_annotation, SectionSpans, Value};
use ehub_partition_log::StoredEvent;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Outcome of a batch's append: its base offset, or a Kafka error code.
pub type BatchOutcome = Option<Result<i64, i16>>;

#[derive(Debug)]
struct Recent {
    first: i32,
    last: i32,
    outcome: watch::Receiver<BatchOutcome>,
}

#[derive(Debug, Default)]
struct State {
    epoch: i16,
    next: Option<i32>,
    recent: VecDeque<Recent>,
}

/// What to do with a batch.
#[derive(Debug)]
pub enum Check {
    /// Store it; report the outcome through the sender.
    Append(watch::Sender<BatchOutcome>),
    /// Already stored (or being stored): answer with that outcome.
    Duplicate(watch::Receiver<BatchOutcome>),
    /// Refuse with this Kafka error code.
    Refuse(i16),
}

/// Kafka error: the producer's epoch is older than the partition's.
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
/// Kafka error: the batch's sequence does not follow the last one.
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;

/// (producer id, hub, partition).
type Key = (i64, Arc<str>, i32);

/// Every idempotent producer's state.
#[derive(Debug)]
pub struct Producers {
    states: Mutex<HashMap<Key, State>>,
    secret: [u8; 32],
}

/// Length of a mark: producer id, epoch, first and last sequence, 8 bytes of HMAC.
pub(crate) const MARK_LEN: usize = 8 + 2 + 4 + 4 + 8;

impl Producers {
    /// State keyed by `secret` (the data directory's, so marks written before a restart verify).
    pub fn new(secret: [u8; 32]) -> Self {
        Producers { states: Mutex::default(), secret }
    }

    fn mac(&self, hub: &str, partition: i32, fields: &[u8]) -> [u8; 8] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("any key length");
        m.update(hub.as_bytes());
        m.update(&[0]);
        m.update(&partition.to_be_bytes());
        m.update(fields);
        let full = m.finalize().into_bytes();
        let mut out = [0; 8];
        out.copy_from_slice(&full[..8]);
        out
    }

    /// The mark stored on the first event of a batch of (producer id, epoch, first, last).
    pub fn mark(&self, hub: &str, partition: i32, (pid, epoch, first, last): (i64, i16, i32, i32)) -> Bytes {
        let mut b = BytesMut::with_capacity(MARK_LEN);
        b.put_i64(pid);
        b.put_i16(epoch);
        b.put_i32(first);
        b.put_i32(last);
        let mac = self.mac(hub, partition, &b);
        b.put_slice(&mac);
        b.freeze()
    }

    fn verify(&self, hub: &str, partition: i32, mark: &[u8]) -> Option<(i64, i16, i32, i32)> {
        if mark.len() != MARK_LEN {
            return None;
        }
        let (fields, mac) = mark.split_at(MARK_LEN - 8);
        // Not secret-dependent timing worth guarding: a forged mark only fails to verify.
        if self.mac(hub, partition, fields) != mac {
            return None;
        }
        let n = |r: std::ops::Range<usize>| &fields[r];
        Some((
            i64::from_be_bytes(n(0..8).try_into().ok()?),
            i16::from_be_bytes(n(8..10).try_into().ok()?),
            i32::from_be_bytes(n(10..14).try_into().ok()?),
            i32::from_be_bytes(n(14..18).try_into().ok()?),
        ))
    }

    /// Rebuilds state from a partition's events (in order): every verified mark is a batch
    /// stored at that event's sequence number. Returns the number of marks taken.
    pub fn recover(&self, hub: &Arc<str>, partition: i32, events: &[StoredEvent]) -> usize {
        let mut taken = 0;
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            let Ok(spans) = SectionSpans::scan(&e.payload) else { continue };
            let Some(ma) = &spans.message_annotations else { continue };
            let Ok(Some(Value::Binary(mark))) =
                find_annotation(&e.payload, ma, ehub_model::annotations::KAFKA_PRODUCER)
            else {
                continue;
            };
            let Some((pid, epoch, first, last)) = self.verify(hub, partition, &mark) else { continue };
            let s = states.entry((pid, Arc::clone(hub), partition)).or_default();
            if epoch < s.epoch {
                continue;
            }
            if epoch > s.epoch {
                *s = State { epoch, ..State::default() };
            }
            let (_tx, rx) = watch::channel(Some(Ok(e.sequence_number)));
            s.recent.retain(|r| !(r.first == first && r.last == last));
            s.recent.push_back(Recent { first, last, outcome: rx });
            if s.recent.len() > 5 {
                s.recent.pop_front();
            }
            s.next = Some(last.wrapping_add(1));
            taken += 1;
        }
        taken
    }

    /// Checks a batch of `pid`/`epoch` with sequences `first..=last` for a partition.
    pub fn check(&self, pid: i64, epoch: i16, hub: &Arc<str>, partition: i32, first: i32, last: i32) -> Check {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let s = states.entry((pid, Arc::clone(hub), partition)).or_default();
        if epoch < s.epoch {
            return Check::Refuse(INVALID_PRODUCER_EPOCH);
        }
        if epoch > s.epoch {
            *s = State { epoch, ..State::default() };
        }
        if let Some(r) = s.recent.iter().find(|r| r.first == first && r.last == last) {
            // A failed first attempt is no duplicate: store it now.
            if !matches!(*r.outcome.borrow(), Some(Err(_))) {
                return Check::Duplicate(r.outcome.clone());
            }
        } else if s.next.is_some_and(|n| n != first) {
            return Check::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER);
        }
        let (tx, rx) = watch::channel(None);
        s.recent.retain(|r| !(r.first == first && r.last == last));
        s.recent.push_back(Recent { first, last, outcome: rx });
        if s.recent.len() > 5 {
            s.recent.pop_front();
        }
        s.next = Some(last.wrapping_add(1));
        Check::Append(tx)
    }

    /// A batch accepted by [`Producers::check`] failed: its sequence is expected again.
    pub fn failed(&self, pid: i64, hub: &Arc<str>, partition: i32, first: i32, last: i32) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = states.get_mut(&(pid, Arc::clone(hub), partition)) {
            if s.next == Some(last.wrapping_add(1)) {
                s.next = Some(first);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_rebuild_the_state_after_a_restart_and_cannot_be_forged() {
        let before = Producers::new([7; 32]);
        let hub: Arc<str> = Arc::from("eh1");
        let mark = before.mark("eh1", 2, (42, 0, 0, 9));
        let stored = |seq: i64, mark: Bytes| StoredEvent {
            sequence_number: seq,
            offset: 0,
            enqueued_time: 0,
            partition_key: None,
            payload: crate::mapping::record_to_event(
                None,
                Some(&Bytes::from_static(b"v")),
                &Default::default(),
                Some(mark),
            ),
        };
        // The same secret after a restart: the batch is known, with its offset.
        let after = Producers::new([7; 32]);
        assert_eq!(after.recover(&hub, 2, &[stored(100, mark.clone())]), 1);
        match after.check(42, 0, &hub, 2, 0, 9) {
            Check::Duplicate(rx) => assert_eq!(*rx.borrow(), Some(Ok(100))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(after.check(42, 0, &hub, 2, 10, 12), Check::Append(_)));
        // Another secret, partition or hub, or an altered mark: ignored.
        assert_eq!(Producers::new([8; 32]).recover(&hub, 2, &[stored(100, mark.clone())]), 0);
        assert_eq!(Producers::new([7; 32]).recover(&hub, 3, &[stored(100, mark.clone())]), 0);
        let mut forged = mark.to_vec();
        forged[17] ^= 1;
        assert_eq!(Producers::new([7; 32]).recover(&hub, 2, &[stored(100, Bytes::from(forged))]), 0);
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let p = Producers::new([0; 32]);
        let hub: Arc<str> = Arc::from("eh1");
        let Check::Append(tx) = p.check(7, 0, &hub, 0, 0, 9) else { panic!() };
        tx.send_replace(Some(Ok(100)));
        match p.check(7, 0, &hub, 0, 0, 9) {
            Check::Duplicate(rx) => assert_eq!(*rx.borrow(), Some(Ok(100))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(p.check(7, 0, &hub, 0, 15, 20), Check::Refuse(OUT_OF_ORDER_SEQUENCE_NUMBER)));
        assert!(matches!(p.check(7, 0, &hub, 0, 10, 12), Check::Append(_)));
        // Another partition, another producer: their own sequences.
        assert!(matches!(p.check(7, 0, &hub, 1, 0, 0), Check::Append(_)));
        assert!(matches!(p.check(8, 0, &hub, 0, 0, 0), Check::Append(_)));
        // A new epoch starts over; an old one is fenced.
        assert!(matches!(p.check(7, 1, &hub, 0, 0, 3), Check::Append(_)));
        assert!(matches!(p.check(7, 0, &hub, 0, 13, 14), Check::Refuse(INVALID_PRODUCER_EPOCH)));
    }

    #[test]
    fn a_failed_batch_is_stored_again_when_retried() {
        let p = Producers::new([0; 32]);
        let hub: Arc<str> = Arc::from("eh1");
        let Check::Append(tx) = p.check(1, 0, &hub, 0, 0, 4) else { panic!() };
        tx.send_replace(Some(Err(56)));
        p.failed(1, &hub, 0, 0, 4);
        assert!(matches!(p.check(1, 0, &hub, 0, 0, 4), Check::Append(_)));
    }
}
