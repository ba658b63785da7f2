//! Idempotent producers: per producer id and partition, the next expected sequence and the
//! last five batches with their offsets, so a retried batch is answered with the offset it
//! was first stored at instead of being stored twice (the broker's memory; after a restart a
//! producer's first batch is taken as it comes).

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
#[derive(Debug, Default)]
pub struct Producers {
    states: Mutex<HashMap<Key, State>>,
}

impl Producers {
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
    fn retries_are_duplicates_and_gaps_are_refused() {
        let p = Producers::default();
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
        let p = Producers::default();
        let hub: Arc<str> = Arc::from("eh1");
        let Check::Append(tx) = p.check(1, 0, &hub, 0, 0, 4) else { panic!() };
        tx.send_replace(Some(Err(56)));
        p.failed(1, &hub, 0, 0, 4);
        assert!(matches!(p.check(1, 0, &hub, 0, 0, 4), Check::Append(_)));
    }
}
