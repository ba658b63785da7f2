//! Who may connect and who may keep trying tokens: connection slots (in total, per client
//! address, and not yet opened) taken before a front allocates anything for a connection, and
//! the failed-authorization rate limit per client address. Shared by the fronts that count
//! them; the fronts turn a refusal into their own wire terms.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` connections are open.
    Total,
    /// `max_connections_per_address` connections from this address are open.
    PerAddress,
    /// `max_pending_connections` connections have not finished their handshake.
    Pending,
}

impl Refusal {
    /// A short label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Total => "connection-limit",
            Refusal::PerAddress => "address-connection-limit",
            Refusal::Pending => "pending-connection-limit",
        }
    }

    /// What to tell the client.
    pub fn description(&self, limit: usize) -> String {
        match self {
            Refusal::Total => format!("The broker's limit of {limit} connections is reached. Retry later."),
            Refusal::PerAddress => format!("The limit of {limit} connections from one client address is reached."),
            Refusal::Pending => {
                format!("The limit of {limit} connections that have not completed their handshake is reached.")
            }
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    per_address: HashMap<IpAddr, usize>,
}

/// Connection slots and the failed-authorization limiter.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_address: usize,
    max_pending: usize,
    total: AtomicUsize,
    pending: AtomicUsize,
    counts: Mutex<Counts>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    max_failures: u32,
    failure_window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// A connection's slot: held for as long as the connection lives. It counts as pending until
/// [`ConnectionSlot::opened`].
#[derive(Debug)]
pub struct ConnectionSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
    pending: bool,
}

impl Admission {
    /// Limits as configured; `max_failures` 0 turns the authorization limiter off.
    pub fn new(
        max_total: usize,
        max_per_address: usize,
        max_pending: usize,
        max_failures: u32,
        failure_window: Duration,
    ) -> Self {
        Admission {
            max_total,
            max_per_address,
            max_pending,
            total: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            counts: Mutex::default(),
            failures: Mutex::default(),
            max_failures,
            failure_window,
        }
    }

    /// The limit a refusal refers to.
    pub fn limit(&self, r: Refusal) -> usize {
        match r {
            Refusal::Total => self.max_total,
            Refusal::PerAddress => self.max_per_address,
            Refusal::Pending => self.max_pending,
        }
    }

    /// Connections admitted and not yet ended.
    pub fn open_connections(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Takes a slot for a connection from `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.max_total {
            return Err(Refusal::Total);
        }
        if self.pending.load(Ordering::Relaxed) >= self.max_pending {
            return Err(Refusal::Pending);
        }
        let n = counts.per_address.entry(ip).or_insert(0);
        if *n >= self.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        self.pending.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionSlot { admission: Arc::clone(self), ip, pending: true })
    }

    /// `Some(wait)` when `ip` has failed authorization too often lately: refuse its next
    /// attempt without checking it, and say when it may try again.
    pub fn auth_throttled(&self, ip: IpAddr) -> Option<Duration> {
        if self.max_failures == 0 {
            return None;
        }
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let f = failures.get(&ip)?;
        let elapsed = f.since.elapsed();
        (f.count >= self.max_failures && elapsed < self.failure_window).then(|| self.failure_window - elapsed)
    }

    /// Counts a failed authorization from `ip`.
    pub fn auth_failed(&self, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.failure_window;
        if failures.len() >= 10_000 {
            // Many addresses: forget those whose window is over, so the map stays bounded.
            failures.retain(|_, f| f.since.elapsed() < window);
        }
        let f = failures.entry(ip).or_insert(Failures { since: Instant::now(), count: 0 });
        if f.since.elapsed() >= window {
            *f = Failures { since: Instant::now(), count: 0 };
        }
        f.count += 1;
        if f.count == self.max_failures {
            tracing::warn!(peer = %ip, failures = f.count, window_secs = window.as_secs(), "too many failed authorizations from one address: refusing its attempts for the rest of the window");
        }
    }
}

impl ConnectionSlot {
    /// The connection finished its handshake (AMQP open, Kafka SASL): it no longer counts
    /// against the pending limit.
    pub fn opened(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.admission.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The client's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.opened();
        let mut counts = self.admission.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_address.remove(&self.ip);
            }
        }
        self.admission.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_in_total_per_address_and_while_pending_and_given_back() {
        let a = Arc::new(Admission::new(4, 2, 3, 0, Duration::from_secs(1)));
        let (x, y): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let mut s1 = a.admit(x).unwrap();
        let _s2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).unwrap_err(), Refusal::PerAddress);
        let _s3 = a.admit(y).unwrap();
        assert_eq!(a.admit(y).unwrap_err(), Refusal::Pending, "three have not opened");
        s1.opened();
        let s4 = a.admit(y).unwrap();
        assert_eq!(a.admit("127.0.0.3".parse().unwrap()).unwrap_err(), Refusal::Total);
        drop(s4);
        drop(s1);
        assert_eq!(a.open_connections(), 2);
        a.admit(x).expect("a slot of x was given back");
    }

    #[test]
    fn failed_authorizations_are_limited_per_address_for_a_window() {
        let a = Admission::new(10, 10, 10, 3, Duration::from_millis(200));
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..2 {
            a.auth_failed(x);
        }
        assert_eq!(a.auth_throttled(x), None);
        a.auth_failed(x);
        assert!(a.auth_throttled(x).is_some_and(|w| w <= Duration::from_millis(200)));
        assert_eq!(a.auth_throttled(y), None, "other addresses are not affected");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(a.auth_throttled(x), None, "the window ended");
        assert_eq!(Admission::new(1, 1, 1, 0, Duration::from_secs(1)).auth_throttled(x), None);
    }
}
