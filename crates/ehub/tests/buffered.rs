//! The buffered producer over TCP against a real in-process broker: every event reported once,
//! order per key and per partition, flush as a barrier, close with and without flush,
//! backpressure, an oversized event, and the broker restarted mid-stream.

mod common;

use common::{start, TestBroker, T};
use ehub::buffered::{BufferedProducerClient, BufferedProducerOptions, EnqueueEventOptions};
use ehub::{ClientOptions, ConsumerClient, ErrorKind, EventData, EventPosition, OpenReceiverOptions, RetryOptions};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the callbacks saw: (partition, body) in callback order, and failures with their kind.
#[derive(Default, Clone)]
struct Reports {
    ok: Vec<(String, String)>,
    failed: Vec<(String, String, ErrorKind)>,
}

async fn open(
    cs: &str,
    options: BufferedProducerOptions,
    client: ClientOptions,
) -> (BufferedProducerClient, Arc<Mutex<Reports>>) {
    let reports: Arc<Mutex<Reports>> = Arc::default();
    let (ok, failed) = (reports.clone(), reports.clone());
    let producer = BufferedProducerClient::builder()
        .with_options(client)
        .with_buffered_options(options)
        .with_on_send_succeeded(move |events, p| {
            let mut r = ok.lock().unwrap();
            for e in events {
                r.ok.push((p.to_owned(), body(&e)));
            }
        })
        .with_on_send_failed(move |events, p, error| {
            let mut r = failed.lock().unwrap();
            for e in events {
                r.failed.push((p.to_owned(), body(&e), error.kind()));
            }
        })
        .open_with_connection_string(cs, Some("eh1"))
        .await
        .unwrap();
    (producer, reports)
}

/// A copy of what the callbacks reported so far.
fn snapshot(reports: &Mutex<Reports>) -> Reports {
    reports.lock().unwrap().clone()
}

fn body(e: &EventData) -> String {
    String::from_utf8_lossy(e.body().unwrap_or_default()).into_owned()
}

fn by_key(k: &str) -> Option<EnqueueEventOptions> {
    Some(EnqueueEventOptions { partition_key: Some(k.into()), ..Default::default() })
}

fn to(p: &str) -> Option<EnqueueEventOptions> {
    Some(EnqueueEventOptions { partition_id: Some(p.into()), ..Default::default() })
}

/// Every partition's bodies on the broker, in order, with their partition keys.
async fn stored(cs: &str) -> HashMap<String, Vec<(String, Option<String>)>> {
    let c = ConsumerClient::from_connection_string(cs, Some("eh1"), None).await.unwrap();
    let mut all = HashMap::new();
    for p in c.get_partition_ids().await.unwrap() {
        let props = c.get_partition_properties(&p).await.unwrap();
        let mut got = Vec::new();
        if !props.is_empty {
            let want = (props.last_enqueued_sequence_number + 1) as usize;
            let o = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
            let mut r = c.open_receiver_on_partition(&p, Some(o)).await.unwrap();
            while got.len() < want {
                for e in r.receive_batch(5000, Duration::from_secs(5)).await.unwrap() {
                    got.push((
                        String::from_utf8_lossy(e.body().unwrap()).into_owned(),
                        e.partition_key().map(str::to_owned),
                    ));
                }
            }
            r.close().await;
        }
        all.insert(p, got);
    }
    c.close().await;
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_reported_once_and_keys_and_partitions_keep_their_order() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let options = BufferedProducerOptions { max_wait_time: Duration::from_millis(50), ..Default::default() };
        let (producer, reports) = open(&cs, options, ClientOptions::default()).await;
        // Three routings from four tasks at once.
        let mut tasks = Vec::new();
        for t in 0..4 {
            let producer = producer.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..2500 {
                    let (body, opts) = match i % 3 {
                        0 => (format!("key{t}-{i}"), by_key(&format!("k{t}"))),
                        1 => (format!("id{t}-{i}"), to("1")),
                        _ => (format!("any{t}-{i}"), None),
                    };
                    producer.enqueue_event(body, opts).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        producer.close(true, None).await.unwrap();
        assert_eq!(producer.total_buffered_event_count(), 0);

        let r = snapshot(&reports);
        assert!(r.failed.is_empty(), "{:?}", &r.failed[..r.failed.len().min(3)]);
        assert_eq!(r.ok.len(), 10_000);
        let mut seen = std::collections::HashSet::new();
        assert!(r.ok.iter().all(|(_, b)| seen.insert(b.clone())), "each event reported once");
        let store = stored(&cs).await;
        for t in 0..4 {
            // A key's events: all in its partition (the service's hash), in enqueue order, key kept.
            let key = format!("k{t}");
            let partition = ehub_model::partition_for_key(&key, 4).to_string();
            let on_broker: Vec<&(String, Option<String>)> =
                store[&partition].iter().filter(|(b, _)| b.starts_with(&format!("key{t}-"))).collect();
            let expected: Vec<String> = (0..2500).filter(|i| i % 3 == 0).map(|i| format!("key{t}-{i}")).collect();
            assert_eq!(on_broker.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>(), expected);
            assert!(on_broker.iter().all(|(_, k)| k.as_deref() == Some(key.as_str())), "the key is kept");
            // Partition 1's events from this task: in order.
            let ids: Vec<String> =
                store["1"].iter().filter(|(b, _)| b.starts_with(&format!("id{t}-"))).map(|(b, _)| b.clone()).collect();
            let expected: Vec<String> = (0..2500).filter(|i| i % 3 == 1).map(|i| format!("id{t}-{i}")).collect();
            assert_eq!(ids, expected);
        }
        // The unrouted events were spread (by buffer depth: partition 1, busy with its own
        // events, gets fewer).
        let spread = store.values().filter(|events| events.iter().any(|(b, _)| b.starts_with("any"))).count();
        assert!(spread >= 3, "unrouted events went to {spread} partitions");
        // What the callbacks reported per partition is what the partition holds, in order.
        for (p, events) in &store {
            let reported: Vec<&String> = r.ok.iter().filter(|(pp, _)| pp == p).map(|(_, b)| b).collect();
            assert_eq!(reported, events.iter().map(|(b, _)| b).collect::<Vec<_>>(), "partition {p}");
        }
    })
    .await
    .unwrap();
}

/// Enqueuers on many threads into one partition: each thread's events wait in a shard of their
/// own, and the sender puts them back in enqueue order. Tasks that yield often (so the runtime
/// moves them between its threads, and so between shards) and plain threads, with a small
/// buffer so that enqueues wait for room and sends take part of what the shards hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueuers_on_many_threads_keep_their_order_in_one_partition() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let options = BufferedProducerOptions {
            max_buffer_length: 64,
            max_wait_time: Duration::from_millis(2),
            ..Default::default()
        };
        let (producer, reports) = open(&cs, options, ClientOptions::default()).await;
        const N: usize = 2000;
        let mut tasks = Vec::new();
        for t in 0..6 {
            let producer = producer.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..N {
                    producer.enqueue_event(format!("task{t}-{i}"), to("2")).await.unwrap();
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        let handle = tokio::runtime::Handle::current();
        let threads: Vec<_> = (0..3)
            .map(|t| {
                let (producer, handle) = (producer.clone(), handle.clone());
                std::thread::spawn(move || {
                    for i in 0..N {
                        handle.block_on(producer.enqueue_event(format!("thread{t}-{i}"), to("2"))).unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| t.join().unwrap())).await.unwrap();
        // Three threads in a ring, each enqueueing one event and then handing the turn on:
        // each event is enqueued after the one before returned, whatever thread it came from,
        // so the partition must hold them in exactly that order.
        const RING: usize = 3000;
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..3).map(|_| std::sync::mpsc::channel::<usize>()).unzip();
        let ring: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(t, turns)| {
                let (producer, handle, next) = (producer.clone(), handle.clone(), senders[(t + 1) % 3].clone());
                std::thread::spawn(move || {
                    while let Ok(i) = turns.recv() {
                        if i == RING {
                            let _ = next.send(RING);
                            return;
                        }
                        handle.block_on(producer.enqueue_event(format!("ring-{i}"), to("2"))).unwrap();
                        let _ = next.send(i + 1);
                    }
                })
            })
            .collect();
        senders[0].send(0).unwrap();
        drop(senders);
        tokio::task::spawn_blocking(move || ring.into_iter().for_each(|t| t.join().unwrap())).await.unwrap();
        producer.close(true, None).await.unwrap();

        let r = snapshot(&reports);
        assert!(r.failed.is_empty(), "{:?}", &r.failed[..r.failed.len().min(3)]);
        assert_eq!(r.ok.len(), 9 * N + RING, "each event reported");
        let store = stored(&cs).await;
        let on_broker: Vec<&String> = store["2"].iter().map(|(b, _)| b).collect();
        assert_eq!(on_broker.len(), 9 * N + RING, "each event stored once");
        let ring: Vec<&String> = on_broker.iter().copied().filter(|b| b.starts_with("ring-")).collect();
        let expected: Vec<String> = (0..RING).map(|i| format!("ring-{i}")).collect();
        assert!(ring.iter().copied().eq(expected.iter()), "the ring's events in the order they were enqueued");
        let reported: Vec<&String> = r.ok.iter().map(|(_, b)| b).collect();
        assert_eq!(reported, on_broker, "reported in the partition's order");
        for source in (0..6).map(|t| format!("task{t}-")).chain((0..3).map(|t| format!("thread{t}-"))) {
            let mine: Vec<&String> = on_broker.iter().copied().filter(|b| b.starts_with(&source)).collect();
            let expected: Vec<String> = (0..N).map(|i| format!("{source}{i}")).collect();
            assert!(mine.iter().copied().eq(expected.iter()), "{source}: in enqueue order");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_is_a_barrier_while_others_keep_enqueueing() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        // A long wait: without the flush, these events would sit in the buffer for a minute.
        let options = BufferedProducerOptions { max_wait_time: Duration::from_secs(60), ..Default::default() };
        let (producer, reports) = open(&cs, options, ClientOptions::default()).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let background = {
            let (producer, stop) = (producer.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.is_cancelled() {
                    producer.enqueue_event(format!("bg-{i}"), None).await.unwrap();
                    i += 1;
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        for round in 0..3 {
            for i in 0..100 {
                producer.enqueue_event(format!("mark{round}-{i}"), to(&(i % 4).to_string())).await.unwrap();
            }
            producer.flush(Some(Duration::from_secs(30))).await.unwrap();
            let r = reports.lock().unwrap();
            let marked = r.ok.iter().filter(|(_, b)| b.starts_with(&format!("mark{round}-"))).count();
            assert_eq!(marked, 100, "round {round}: everything enqueued before the flush was reported");
        }
        stop.cancel();
        background.await.unwrap();
        producer.close(true, None).await.unwrap();
        assert!(reports.lock().unwrap().failed.is_empty());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_without_flush_reports_what_waits_as_failed_and_later_enqueues_fail() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let options = BufferedProducerOptions { max_wait_time: Duration::from_secs(60), ..Default::default() };
        let (producer, reports) = open(&cs, options, ClientOptions::default()).await;
        for i in 0..50 {
            producer.enqueue_event(format!("e{i}"), None).await.unwrap();
        }
        assert_eq!(producer.total_buffered_event_count(), 50);
        producer.close(false, None).await.unwrap();
        let r = snapshot(&reports);
        assert!(r.ok.is_empty(), "nothing was due before the close");
        assert_eq!(r.failed.len(), 50);
        assert!(r.failed.iter().all(|(_, _, k)| *k == ErrorKind::ClientClosed));
        let e = producer.enqueue_event("late", None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ClientClosed);
        assert!(stored(&cs).await.values().all(Vec::is_empty), "abandoned events were not sent");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_event_fails_alone_while_the_rest_go_through() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let (producer, reports) = open(&cs, BufferedProducerOptions::default(), ClientOptions::default()).await;
        producer.enqueue_event("before", to("2")).await.unwrap();
        producer.enqueue_event(EventData::from(vec![b'x'; 2 * 1024 * 1024]), to("2")).await.unwrap();
        producer.enqueue_event("after", to("2")).await.unwrap();
        producer.close(true, None).await.unwrap();
        let r = reports.lock().unwrap();
        assert_eq!(r.ok.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(), ["before", "after"]);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].2, ErrorKind::MessageTooLarge);
    })
    .await
    .unwrap();
}

/// Full buffers hold enqueues back, up to the timeout; the broker's return lets everything flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_makes_enqueue_wait_then_time_out() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let broker = TestBroker::start_at(dir.path(), "127.0.0.1:0").await;
        let addr = broker.addr;
        let cs = broker.connection_string();
        let options = BufferedProducerOptions {
            max_buffer_length: 20,
            max_wait_time: Duration::from_millis(10),
            enqueue_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let retry = RetryOptions {
            max_retries: 100,
            backoff_factor: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..Default::default()
        };
        let (producer, reports) = open(&cs, options, ClientOptions { retry, ..Default::default() }).await;
        broker.stop().await;
        // The first 20 leave the buffer for a send that cannot complete; 20 more fill it.
        for i in 0..40 {
            producer.enqueue_event(format!("e{i}"), to("0")).await.unwrap();
        }
        let started = std::time::Instant::now();
        let e = producer.enqueue_event("one too many", to("0")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OperationTimeout, "{e}");
        assert!(started.elapsed() >= Duration::from_millis(300), "it waited first");
        assert_eq!(producer.get_buffered_event_count("0"), 40);
        // The broker returns: the stuck send completes and everything flows.
        let broker = TestBroker::start_at(dir.path(), &addr.to_string()).await;
        producer.enqueue_event("e40", to("0")).await.unwrap();
        producer.close(true, None).await.unwrap();
        let r = snapshot(&reports);
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(
            r.ok.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
            (0..41).map(|i| format!("e{i}")).collect::<Vec<_>>()
        );
        broker.stop().await;
    })
    .await
    .unwrap();
}

/// The broker killed and restarted during a stream of 100,000 events: each event ends in exactly
/// one callback, and every event reported as sent is on the broker, in order per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_no_report_and_no_acknowledged_event() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let broker = TestBroker::start_at(dir.path(), "127.0.0.1:0").await;
        let addr = broker.addr;
        let cs = broker.connection_string();
        let retry = RetryOptions {
            max_retries: 20,
            backoff_factor: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            ..Default::default()
        };
        let options = BufferedProducerOptions { max_wait_time: Duration::from_millis(20), ..Default::default() };
        let (producer, reports) = open(&cs, options, ClientOptions { retry, ..Default::default() }).await;
        let feeder = {
            let producer = producer.clone();
            tokio::spawn(async move {
                for i in 0..100_000 {
                    producer.enqueue_event(format!("{i:06}"), None).await.unwrap();
                }
            })
        };
        // Let part of the stream through, then take the broker away for a moment.
        while reports.lock().unwrap().ok.len() < 20_000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        broker.stop().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let broker = TestBroker::start_at(dir.path(), &addr.to_string()).await;
        feeder.await.unwrap();
        producer.close(true, None).await.unwrap();

        let r = snapshot(&reports);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (_, b) in &r.ok {
            *counts.entry(b).or_default() += 1;
        }
        for (_, b, _) in &r.failed {
            *counts.entry(b).or_default() += 1;
        }
        assert_eq!(counts.len(), 100_000, "every event reported");
        assert!(counts.values().all(|&n| n == 1), "each exactly once");
        eprintln!("after a broker restart: {} reported sent, {} failed", r.ok.len(), r.failed.len());
        let ok = r.ok.clone();
        let store = stored(&cs).await;
        for (p, events) in &store {
            // Stored twice is possible (a lost acknowledgement, then a resend); keep first copies.
            let mut first = std::collections::HashSet::new();
            let on_broker: Vec<&String> = events.iter().map(|(b, _)| b).filter(|b| first.insert(*b)).collect();
            let reported: Vec<&String> = ok.iter().filter(|(pp, _)| pp == p).map(|(_, b)| b).collect();
            let mut it = on_broker.iter();
            for b in &reported {
                assert!(it.any(|x| x == b), "partition {p}: {b} reported sent but not on the broker in order");
            }
        }
        broker.stop().await;
    })
    .await
    .unwrap();
}

/// A buffer larger than one message goes out as several batches, each event keeping its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_larger_than_a_message_is_split_and_keys_stay_with_their_events() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let options = BufferedProducerOptions { max_wait_time: Duration::from_secs(60), ..Default::default() };
        let (producer, reports) = open(&cs, options, ClientOptions::default()).await;
        // Two keys that hash to one partition, interleaved: 1200 events of 2 KB, about 2.4 MB.
        let (a, b) = (
            "k1",
            (0..1000)
                .map(|i| format!("other{i}"))
                .find(|k| ehub_model::partition_for_key(k, 4) == ehub_model::partition_for_key("k1", 4))
                .unwrap(),
        );
        for i in 0..1200 {
            let key = if i % 2 == 0 { a.to_string() } else { b.clone() };
            let mut body = format!("{key}:{i:04}:").into_bytes();
            body.resize(2048, b'.');
            producer.enqueue_event(EventData::from(body), by_key(&key)).await.unwrap();
        }
        producer.close(true, None).await.unwrap();
        assert_eq!(snapshot(&reports).ok.len(), 1200);
        let partition = ehub_model::partition_for_key("k1", 4).to_string();
        let events = &stored(&cs).await[&partition];
        assert_eq!(events.len(), 1200);
        for (i, (body, key)) in events.iter().enumerate() {
            let expected = if i % 2 == 0 { a.to_string() } else { b.clone() };
            assert!(body.starts_with(&format!("{expected}:{i:04}:")), "{i}: {}", &body[..20]);
            assert_eq!(key.as_deref(), Some(expected.as_str()), "event {i} kept its key");
        }
    })
    .await
    .unwrap();
}

/// The trace context is the enqueuer's: the event is encoded later on a sender task, where the
/// caller's span is no longer current, so it is stamped at enqueue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_the_trace_context_active_when_they_were_enqueued() {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let (producer, _) = open(&cs, BufferedProducerOptions::default(), ClientOptions::default()).await;
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        {
            let _active = opentelemetry::Context::new().with_remote_span_context(sc).attach();
            // Enqueueing does not yield when there is room: the guard covers it.
            producer.enqueue_event("traced", to("3")).await.unwrap();
        }
        producer.enqueue_event("untraced", to("3")).await.unwrap();
        producer.close(true, None).await.unwrap();
        let c = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let o = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
        let mut r = c.open_receiver_on_partition("3", Some(o)).await.unwrap();
        let got = r.receive_batch(2, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got.len(), 2);
        let parent = ehub::Value::from("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(got[0].property(ehub::DIAGNOSTIC_ID_PROPERTY), Some(&parent));
        assert!(got[1].properties().is_empty(), "{:?}", got[1].properties());
        c.close().await;
    })
    .await
    .unwrap();
}
