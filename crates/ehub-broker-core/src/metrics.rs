//! The core's metrics, in a Prometheus registry the assembly shares with the fronts: events and
//! bytes in and out per partition (counted once per batch), the last sequence number per
//! partition and the receivers per consumer group and partition (read from the state when
//! scraped), and fsyncs with their latency. Per-partition counters are resolved once, when a
//! hub opens, so the hot path adds two atomic additions per batch and no lookup.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

/// Label pairs (`hub`, `partition`, …).
pub type Labels = Vec<(&'static str, String)>;

pub(crate) fn partition_labels(hub: &str, partition: &str) -> Labels {
    vec![("hub", hub.to_ascii_lowercase()), ("partition", partition.to_owned())]
}

/// One partition's traffic counters.
#[derive(Debug, Clone, Default)]
pub struct PartitionCounters {
    /// Events appended (acknowledged to their producers).
    pub events_in: Counter,
    /// Bytes of the events appended, as stored (the AMQP-encoded messages).
    pub bytes_in: Counter,
    /// Events delivered to receivers.
    pub events_out: Counter,
    /// Bytes of the events delivered to receivers, as stored.
    pub bytes_out: Counter,
}

/// The core's metric families.
#[derive(Debug)]
pub struct CoreMetrics {
    events_in: Family<Labels, Counter>,
    bytes_in: Family<Labels, Counter>,
    events_out: Family<Labels, Counter>,
    bytes_out: Family<Labels, Counter>,
    pub(crate) last_sequence: Family<Labels, Gauge>,
    pub(crate) receivers: Family<Labels, Gauge>,
    pub(crate) hubs: Gauge,
    fsyncs: Counter,
    fsync_seconds: Histogram,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            events_in: Family::default(),
            bytes_in: Family::default(),
            events_out: Family::default(),
            bytes_out: Family::default(),
            last_sequence: Family::default(),
            receivers: Family::default(),
            hubs: Gauge::default(),
            fsyncs: Counter::default(),
            // 25 µs to about 1.6 s.
            fsync_seconds: Histogram::new(exponential_buckets(25e-6, 2.0, 17)),
        }
    }
}

impl CoreMetrics {
    /// Adds the families to `registry` (names prefixed `ehub_`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("ehub");
        r.register("events_in", "Events appended to a partition", self.events_in.clone());
        r.register(
            "bytes_in",
            "Bytes of the events appended to a partition, as stored (AMQP-encoded messages)",
            self.bytes_in.clone(),
        );
        r.register("events_out", "Events delivered from a partition to receivers", self.events_out.clone());
        r.register(
            "bytes_out",
            "Bytes of the events delivered from a partition to receivers, as stored",
            self.bytes_out.clone(),
        );
        r.register(
            "partition_last_sequence_number",
            "Sequence number of the partition's last event (-1 when empty)",
            self.last_sequence.clone(),
        );
        r.register("receivers", "Receivers connected per consumer group and partition", self.receivers.clone());
        r.register("hubs", "Event Hubs", self.hubs.clone());
        r.register("fsyncs", "Group-commit fsyncs of the partition logs", self.fsyncs.clone());
        r.register(
            "fsync_duration_seconds",
            "Time one group-commit fsync took (every file of the commit)",
            self.fsync_seconds.clone(),
        );
    }

    /// The counters of one partition, created on first use.
    pub(crate) fn partition(&self, hub: &str, partition: &str) -> PartitionCounters {
        let l = partition_labels(hub, partition);
        PartitionCounters {
            events_in: self.events_in.get_or_create_owned(&l),
            bytes_in: self.bytes_in.get_or_create_owned(&l),
            events_out: self.events_out.get_or_create_owned(&l),
            bytes_out: self.bytes_out.get_or_create_owned(&l),
        }
    }

    /// Forgets a deleted hub's series.
    pub(crate) fn remove_hub(&self, hub: &str, partitions: &[String], groups: &[String]) {
        for p in partitions {
            let l = partition_labels(hub, p);
            for f in [&self.events_in, &self.bytes_in, &self.events_out, &self.bytes_out] {
                f.remove(&l);
            }
            self.last_sequence.remove(&l);
            for g in groups {
                self.receivers.remove(&receiver_labels(hub, g, p));
            }
        }
    }

    /// Records one group commit's fsync.
    pub fn observe_fsync(&self, took: Duration) {
        self.fsyncs.inc();
        self.fsync_seconds.observe(took.as_secs_f64());
    }
}

pub(crate) fn receiver_labels(hub: &str, group: &str, partition: &str) -> Labels {
    vec![
        ("hub", hub.to_ascii_lowercase()),
        ("consumer_group", group.to_ascii_lowercase()),
        ("partition", partition.to_owned()),
    ]
}
