//! The AMQP front's own limits: what a connection may open, the frame size, and the service's
//! idle rules. Connection counts and the authorization rate limit are the core's
//! ([`ehub_broker_core::Admission`]), shared with the other fronts.

use std::time::Duration;

/// Limits of one AMQP connection, advertised in `open` and `begin` and enforced before
/// anything is allocated for a session or link beyond them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpLimits {
    /// Sessions one connection may have at once (the service: 5000, `channel-max` 4999).
    pub max_sessions_per_connection: u16,
    /// Links one session may have at once (the service: 256, `handle-max` 255).
    pub max_links_per_session: u32,
    /// Largest frame the broker accepts (`max-frame-size`; the service: 65536). Larger
    /// messages arrive in several transfer frames.
    pub max_frame_size: u32,
    /// A producer or consumer link with no transfer for this long is detached with
    /// `amqp:link:detach-forced`, as the service does after 30 minutes.
    pub link_idle_timeout: Duration,
    /// A connection with no producer, consumer or management link for this long is closed with
    /// `amqp:connection:forced`, as the service does after 300 seconds.
    pub empty_connection_timeout: Duration,
}

impl Default for AmqpLimits {
    fn default() -> Self {
        AmqpLimits {
            max_sessions_per_connection: 5000,
            max_links_per_session: 256,
            max_frame_size: 65536,
            link_idle_timeout: Duration::from_secs(30 * 60),
            empty_connection_timeout: Duration::from_secs(300),
        }
    }
}

/// How often a connection looks for idle links and emptiness: a tenth of the shorter
/// timeout, between 50 ms and 30 s, so idleness is noticed within 10 % of its timeout without
/// waking an idle connection often.
pub(crate) fn sweep_interval(link: Duration, connection: Duration) -> Duration {
    (link.min(connection) / 10).clamp(Duration::from_millis(50), Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_are_a_tenth_of_the_shorter_timeout_within_bounds() {
        let d = AmqpLimits::default();
        assert_eq!(sweep_interval(d.link_idle_timeout, d.empty_connection_timeout), Duration::from_secs(30));
        assert_eq!(sweep_interval(Duration::from_secs(2), Duration::from_secs(300)), Duration::from_millis(200));
        assert_eq!(sweep_interval(Duration::from_millis(1), Duration::from_secs(1)), Duration::from_millis(50));
    }
}
