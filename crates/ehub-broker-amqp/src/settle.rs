//! How the broker settles the deliveries it receives (producer events, `$cbs` and `$management`
//! requests), and why one kind of peer gets each outcome twice.
//!
//! Most peers get one `disposition` per outcome, settled, as the service sends it.
//!
//! fe2o3-amqp 0.16, under the official Rust SDK (`azure_messaging_eventhubs`), records a delivery
//! in its sender's unsettled map only *after* it has handed the transfer to its session task
//! (`SenderLink::send_payload_with_transfer`). When our settled disposition reaches the session
//! before the sending task has recorded the delivery (that task's thread was preempted, which is
//! common on a busy machine with a broker microseconds away), fe2o3 finds nothing to settle and
//! drops the outcome; the SDK then waits forever, holding its sender's lock, so every later send
//! on that link waits too. The service, milliseconds away, never wins that race.
//!
//! For such a peer the broker sends the outcome first *unsettled* (a terminal state with
//! `settled = false`, which fe2o3 applies to the delivery when it has recorded it and otherwise
//! ignores, keeping its delivery-id mapping), and then, [`CONFIRM_AFTER`] later, the same outcome
//! *settled*, which settles a delivery the first one missed and lets fe2o3 forget the id. Both
//! are allowed by AMQP 1.0 (a receiver may announce a terminal state before it settles), and the
//! second is coalesced over every delivery of the interval, so it adds about one frame per
//! [`CONFIRM_AFTER`]/2 on a busy link.

use ehub_amqp_codec::{DeliveryState, Open, Role, Value};
use ehub_amqp_endpoint::{Connection, EndpointError};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long after the unsettled outcome a late-recording peer gets the settled one (each outcome
/// waits between half of this and all of it, so the confirmations of a busy link share frames).
pub(crate) const CONFIRM_AFTER: Duration = Duration::from_millis(50);

/// `product` values in a peer's `open` properties whose AMQP stack records deliveries late: the
/// official Rust SDKs, all on fe2o3-amqp (`azure_messaging_eventhubs` names itself so).
const LATE_RECORDING_PRODUCTS: [&str; 1] = ["azure_messaging_"];

/// Whether the peer that sent `open` needs each outcome twice (see the module docs).
pub(crate) fn records_deliveries_late(open: &Open) -> bool {
    open.properties.iter().flatten().any(|(k, v)| match (k, v) {
        (Value::Symbol(k), Value::String(product)) if k.as_str() == "product" => {
            LATE_RECORDING_PRODUCTS.iter().any(|p| product.starts_with(p))
        }
        _ => false,
    })
}

struct Unconfirmed {
    due: Instant,
    channel: u16,
    first: u32,
    last: u32,
    state: DeliveryState,
}

/// Outcomes of received deliveries, per connection.
#[derive(Default)]
pub(crate) struct Settlements {
    twice: bool,
    unconfirmed: VecDeque<Unconfirmed>,
}

impl Settlements {
    /// From now on, outcomes go out twice (the peer records deliveries late).
    pub(crate) fn settle_twice(&mut self) {
        self.twice = true;
    }

    /// Tells the peer the outcome of deliveries `first..=last` on the session at `channel`.
    pub(crate) fn settle(
        &mut self,
        conn: &mut Connection,
        channel: u16,
        first: u32,
        last: u32,
        state: DeliveryState,
    ) -> Result<(), EndpointError> {
        if !self.twice {
            return conn.disposition(channel, Role::Receiver, first, last, true, Some(state));
        }
        conn.disposition(channel, Role::Receiver, first, last, false, Some(state.clone()))?;
        let due = Instant::now() + CONFIRM_AFTER;
        self.unconfirmed.push_back(Unconfirmed { due, channel, first, last, state });
        Ok(())
    }

    /// When the oldest unconfirmed outcome is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.unconfirmed.front().map(|u| u.due)
    }

    /// Sends the settled outcomes that are due, and those that would be due within half of
    /// [`CONFIRM_AFTER`], in as few frames as their ranges allow.
    pub(crate) fn confirm_due(&mut self, conn: &mut Connection, now: Instant) {
        let horizon = now + CONFIRM_AFTER / 2;
        let mut due: Vec<Unconfirmed> = Vec::new();
        while self.unconfirmed.front().is_some_and(|u| u.due <= horizon) {
            due.extend(self.unconfirmed.pop_front());
        }
        due.sort_by_key(|u| (u.channel, u.first));
        let mut merged: Vec<Unconfirmed> = Vec::with_capacity(due.len());
        for u in due {
            match merged.last_mut() {
                Some(m)
                    if m.channel == u.channel
                        && m.last.wrapping_add(1) == u.first
                        && matches!((&m.state, &u.state), (DeliveryState::Accepted, DeliveryState::Accepted)) =>
                {
                    m.last = u.last;
                }
                _ => merged.push(u),
            }
        }
        for m in merged {
            // A session that ended meanwhile was forgotten by `session_ended`; any other failure
            // is the connection's, which reports it itself.
            let _ = conn.disposition(m.channel, Role::Receiver, m.first, m.last, true, Some(m.state));
        }
    }

    /// Forgets the outcomes of a session that ended: its channel may carry a new session next.
    pub(crate) fn session_ended(&mut self, channel: u16) {
        self.unconfirmed.retain(|u| u.channel != channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_with(product: Option<&str>) -> Open {
        Open {
            container_id: "c".into(),
            properties: product.map(|p| vec![(Value::Symbol("product".into()), Value::String(p.into()))]),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_official_rust_sdk_is_a_late_recording_peer() {
        assert!(records_deliveries_late(&open_with(Some("azure_messaging_eventhubs"))));
        assert!(!records_deliveries_late(&open_with(Some("MSJSClient"))));
        assert!(!records_deliveries_late(&open_with(Some("ehub"))));
        assert!(!records_deliveries_late(&open_with(None)));
    }
}
