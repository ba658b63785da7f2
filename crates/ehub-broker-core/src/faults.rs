//! Fault injection: disruptions a user asks for on purpose, so that their reconnect, retry and
//! failover code meets what Azure does to it. The core keeps what is active and reaches every
//! connection through the handle its front registered; fronts map the disruptions to their own
//! wire terms (AMQP: `amqp:link:detach-forced`, `com.microsoft:server-busy`, …).

use crate::auth::now_millis;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The condition links are detached with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachCondition {
    /// Another receiver took the partition (AMQP `amqp:link:stolen`): not retried by clients.
    LinkStolen,
    /// The service moved the link (`amqp:link:detach-forced`): clients reattach.
    DetachForced,
    /// The service is throttling (`com.microsoft:server-busy`): clients back off and retry.
    ServerBusy,
}

impl DetachCondition {
    /// From `link-stolen`, `detach-forced` or `server-busy`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "link-stolen" => Some(Self::LinkStolen),
            "detach-forced" => Some(Self::DetachForced),
            "server-busy" => Some(Self::ServerBusy),
            _ => None,
        }
    }
}

/// What a connection is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disruption {
    /// Close the connection (AMQP: `amqp:connection:forced`).
    Close,
    /// Detach the producer and consumer links of a hub (all hubs when `None`), of one
    /// partition when given.
    Detach {
        /// The hub, lower case.
        hub: Option<String>,
        /// The partition id.
        partition: Option<String>,
        /// The condition.
        condition: DetachCondition,
    },
    /// Treat every token as expired now: links whose claims lapse are detached as on expiry.
    ExpireTokens,
    /// The idle timeouts changed ([`Faults::idle_timeouts`]): look for idle links sooner.
    IdleTimeoutsChanged,
}

/// How the core reaches one connection (the front sends itself a message).
pub type ConnectionHandle = Box<dyn Fn(&Disruption) + Send + Sync>;

/// A fault with a duration, while it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFault {
    /// Its id (to end it early).
    pub id: u64,
    /// `server-busy`, `fsync-latency`, `frame-latency` or `idle-timeouts`.
    pub kind: &'static str,
    /// Unix milliseconds when it ends by itself.
    pub until: i64,
    /// What it does, for people.
    pub description: String,
}

/// A timed fault's switch: off (0) or on until a time, read with one atomic load when off.
#[derive(Debug, Default)]
struct Timed {
    until: AtomicI64,
    micros: AtomicU64,
}

impl Timed {
    fn active(&self) -> Option<u64> {
        let until = self.until.load(Ordering::Acquire);
        (until != 0 && now_millis() < until).then(|| self.micros.load(Ordering::Relaxed))
    }
}

/// The faults in force and the connections they reach.
#[derive(Debug, Default)]
pub struct Faults {
    connections: Mutex<HashMap<u64, Handle>>,
    busy: Timed,
    busy_hub: Mutex<Option<String>>,
    fsync: Timed,
    frames: Timed,
    idle: Timed,
    idle_connection_micros: AtomicU64,
    active: Mutex<Vec<ActiveFault>>,
    next_id: AtomicU64,
    injected: Family<Vec<(&'static str, String)>, Counter>,
    active_gauge: Gauge,
}

struct Handle(ConnectionHandle);

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionHandle")
    }
}

impl Faults {
    /// Adds `ehub_faults_injected_total{kind}` and `ehub_faults_active` to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("ehub_faults_injected", "Faults injected, by kind", self.injected.clone());
        registry.register("ehub_faults_active", "Timed faults in force now", self.active_gauge.clone());
    }

    /// Registers a connection under `id` (a front calls this when one opens).
    pub fn register_connection(&self, id: u64, handle: ConnectionHandle) {
        self.connections.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Handle(handle));
    }

    /// Forgets connection `id` (when it ends).
    pub fn unregister_connection(&self, id: u64) {
        self.connections.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    fn count(&self, kind: &str) {
        self.injected.get_or_create(&vec![("kind", kind.to_owned())]).inc();
    }

    /// Sends `d` to every connection; returns how many were reached.
    pub fn disrupt(&self, kind: &str, d: Disruption) -> usize {
        let connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        for h in connections.values() {
            (h.0)(&d);
        }
        self.count(kind);
        tracing::warn!(fault = kind, disruption = ?d, connections = connections.len(), "fault injected");
        connections.len()
    }

    fn start(
        &self,
        kind: &'static str,
        timed: &Timed,
        micros: u64,
        period: Duration,
        description: String,
    ) -> ActiveFault {
        let until = now_millis() + period.as_millis() as i64;
        timed.micros.store(micros, Ordering::Relaxed);
        timed.until.store(until, Ordering::Release);
        let fault = ActiveFault { id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1, kind, until, description };
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.retain(|f| f.kind != kind);
        active.push(fault.clone());
        self.count(kind);
        tracing::warn!(fault = kind, id = fault.id, until, description = %fault.description, "fault injected");
        fault
    }

    /// Answers sends (to `hub`, or to every hub) with server-busy for `period`.
    pub fn server_busy(&self, hub: Option<&str>, period: Duration) -> ActiveFault {
        *self.busy_hub.lock().unwrap_or_else(|p| p.into_inner()) = hub.map(str::to_ascii_lowercase);
        let what = hub.map_or("every hub".to_owned(), |h| format!("hub {h}"));
        self.start("server-busy", &self.busy, 0, period, format!("sends to {what} answered with server-busy"))
    }

    /// Adds `delay` before every fsync of the partition logs for `period`.
    pub fn fsync_latency(&self, delay: Duration, period: Duration) -> ActiveFault {
        let d = format!("{} ms added to every fsync", delay.as_millis());
        self.start("fsync-latency", &self.fsync, delay.as_micros() as u64, period, d)
    }

    /// Delays every write of every connection by `delay` for `period`.
    pub fn frame_latency(&self, delay: Duration, period: Duration) -> ActiveFault {
        let d = format!("{} ms added before every write to a connection", delay.as_millis());
        self.start("frame-latency", &self.frames, delay.as_micros() as u64, period, d)
    }

    /// Shortens the service's idle rules for `period`: links idle for `link` are detached,
    /// connections without links for `connection` are closed (normally 30 minutes and 300
    /// seconds), so that reconnect code meets them in a test run.
    pub fn idle_timeouts_for(&self, link: Duration, connection: Duration, period: Duration) -> ActiveFault {
        self.idle_connection_micros.store(connection.as_micros() as u64, Ordering::Relaxed);
        let d = format!(
            "links idle for {} s detached, connections without links for {} s closed",
            link.as_secs_f64(),
            connection.as_secs_f64()
        );
        let fault = self.start("idle-timeouts", &self.idle, link.as_micros() as u64, period, d);
        self.notify(&Disruption::IdleTimeoutsChanged);
        fault
    }

    /// The idle timeouts a fault imposes now (link, connection), if one does.
    pub fn idle_timeouts(&self) -> Option<(Duration, Duration)> {
        self.idle.active().map(|link| {
            (Duration::from_micros(link), Duration::from_micros(self.idle_connection_micros.load(Ordering::Relaxed)))
        })
    }

    /// Sends `d` to every connection without counting it as a fault.
    fn notify(&self, d: &Disruption) {
        for h in self.connections.lock().unwrap_or_else(|p| p.into_inner()).values() {
            (h.0)(d);
        }
    }

    /// Whether sends to `hub` are to be answered with server-busy now.
    pub fn is_server_busy(&self, hub: &str) -> bool {
        self.busy.active().is_some()
            && self
                .busy_hub
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_deref()
                .is_none_or(|h| h.eq_ignore_ascii_case(hub))
    }

    /// The delay to add before an fsync now, if any.
    pub fn fsync_delay(&self) -> Option<Duration> {
        self.fsync.active().map(Duration::from_micros)
    }

    /// The delay to add before a connection writes now, if any.
    pub fn frame_delay(&self) -> Option<Duration> {
        self.frames.active().map(Duration::from_micros)
    }

    /// The timed faults in force.
    pub fn active(&self) -> Vec<ActiveFault> {
        let now = now_millis();
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.retain(|f| f.until > now);
        active.clone()
    }

    /// Sets `ehub_faults_active` (timed faults end by themselves, so it is read when scraped).
    pub(crate) fn refresh_metrics(&self) {
        self.active_gauge.set(self.active().len() as i64);
    }

    /// Ends fault `id` (every timed fault when `None`); whether one was ended.
    pub fn end(&self, id: Option<u64>) -> bool {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let mut ended = false;
        active.retain(|f| {
            if id.is_none_or(|id| id == f.id) {
                let timed = match f.kind {
                    "server-busy" => &self.busy,
                    "fsync-latency" => &self.fsync,
                    "idle-timeouts" => &self.idle,
                    _ => &self.frames,
                };
                timed.until.store(0, Ordering::Release);
                tracing::warn!(fault = f.kind, id = f.id, "fault ended on request");
                ended = true;
                false
            } else {
                true
            }
        });
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn timed_faults_end_by_themselves_or_on_request_and_disruptions_reach_every_connection() {
        let f = Faults::default();
        assert!(!f.is_server_busy("eh1"));
        let busy = f.server_busy(Some("EH1"), Duration::from_secs(60));
        assert!(f.is_server_busy("eh1") && !f.is_server_busy("other"));
        f.fsync_latency(Duration::from_millis(5), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(f.fsync_delay(), None, "ended by itself");
        assert_eq!(f.active().iter().map(|a| a.kind).collect::<Vec<_>>(), ["server-busy"]);
        assert!(f.end(Some(busy.id)));
        assert!(!f.is_server_busy("eh1"));
        assert!(!f.end(Some(busy.id)));

        let seen = Arc::new(Mutex::new(Vec::new()));
        for id in 0..3 {
            let s = Arc::clone(&seen);
            f.register_connection(id, Box::new(move |d| s.lock().unwrap().push((id, d.clone()))));
        }
        f.unregister_connection(1);
        assert_eq!(f.disrupt("close-connections", Disruption::Close), 2);
        let mut got = seen.lock().unwrap().clone();
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(got, [(0, Disruption::Close), (2, Disruption::Close)]);
    }
}
