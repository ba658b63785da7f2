//! What the metrics cost the broker: the work they add on the append and delivery paths, per
//! batch, and one `/metrics` scrape of a broker with one hub. docs/benchmarks.md sets these
//! against the broker's CPU time per event.
//!
//! `cargo bench -p ehub-broker-core --bench metrics`

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ehub_broker_core::prometheus_client::encoding::text::encode;
use ehub_broker_core::prometheus_client::registry::Registry;
use ehub_broker_core::{Broker, CoreConfig};
use ehub_partition_log::AppendEvent;

type Done = Box<dyn FnOnce(Result<u64, ()>) + Send>;

fn metrics(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(CoreConfig { data_dir: dir.path().into(), ..CoreConfig::default() }).unwrap();
    let counters = broker.hub("eh1").unwrap().counters[0].clone();
    let events: Vec<AppendEvent> =
        (0..100).map(|_| AppendEvent { partition_key: None, payload: Bytes::from(vec![7u8; 160]) }).collect();

    // `Broker::append_to` over a plain append: the batch's size summed, two counter handles
    // cloned into a wrapping callback (one more allocation), two additions when it completes.
    c.bench_function("metrics: counting one appended batch of 100 events", |b| {
        b.iter(|| {
            let events = black_box(&events);
            let inner: Done = Box::new(|r| {
                black_box(r.ok());
            });
            let (n, bytes) = (events.len() as u64, events.iter().map(|e| e.payload.len() as u64).sum::<u64>());
            let (events_in, bytes_in) = (counters.events_in.clone(), counters.bytes_in.clone());
            let done: Done = Box::new(move |r| {
                if r.is_ok() {
                    events_in.inc_by(n);
                    bytes_in.inc_by(bytes);
                }
                inner(r)
            });
            done(Ok(1));
        })
    });

    // The delivery path: one addition per event for the bytes, two counter additions per burst.
    c.bench_function("metrics: counting one delivered burst of 300 events", |b| {
        let sizes = vec![160usize; 300];
        b.iter(|| {
            let mut sent_bytes = 0u64;
            for s in black_box(&sizes) {
                sent_bytes += *s as u64;
            }
            counters.events_out.inc_by(300);
            counters.bytes_out.inc_by(sent_bytes);
        })
    });

    let mut registry = Registry::default();
    broker.metrics().register(&mut registry);
    broker.faults().register(&mut registry);
    c.bench_function("metrics: one /metrics scrape, one hub of 4 partitions", |b| {
        b.iter(|| {
            broker.refresh_metrics();
            let mut text = String::with_capacity(16 * 1024);
            encode(&mut text, &registry).unwrap();
            black_box(text.len())
        })
    });
    broker.shutdown_storage();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
