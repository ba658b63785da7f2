//! Our client against the official Rust SDK, in the same run, on the same broker:
//! - send: 100-byte events in batches of 100, acknowledged, 8 batches in flight (8 tasks, each
//!   awaiting its own `send_batch`, since the SDK has one batch in flight per call);
//! - receive: one partition from the earliest event;
//! - process (`compare process ...`): each SDK's event processor (in-memory checkpoint store,
//!   greedy, default prefetch) reads all 4 partitions from the earliest, checkpointing every
//!   1,000 events per partition;
//! - buffered (`compare buffered ...`): each SDK's buffered producer, 8 tasks enqueueing
//!   100-byte events one by one over 4 partitions by id, from the first enqueue to the last
//!   success callback.
//!
//! Each measurement runs `rounds` times, the two clients taking turns and the one going first
//! alternating, so a slow spell of the machine hits both about equally. The table gives each
//! round's ratio and their median.
//!
//! `cargo run --release --bin compare -- [events] [fsync] [prefetch] [rounds]` (or
//! `compare process [events] [fsync] [rounds]`, events over all 4 partitions) from
//! `interop/rust` (defaults: 200000 never default 3; `default` leaves each client's prefetch at its
//! default, the official SDK's 300 and ours adaptive); add
//! `--features mimalloc` to run both clients on mimalloc. Needs `target/release/ehub` at the
//! workspace root.

use azure_messaging_eventhubs::{EventDataBatchOptions, ProducerClient};
use ehub_interop_rust::{
    cpu_time, custom_endpoint, emulator_connection_string, install_crypto_provider, log_to_stderr_from, sdk_consumer,
    sdk_from_earliest, Broker,
};
use futures::StreamExt;
use std::time::Instant;
use tokio::time::error::Elapsed;

const BATCH: usize = 100;
const TASKS: usize = 8;

/// Runs `TASKS` tasks, each sending its share of `events / BATCH` batches through
/// `send_batches(count)`, and returns events/s over all of them.
async fn in_parallel<F, Fut>(events: usize, send_batches: F) -> f64
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let batches = events / BATCH;
    let start = Instant::now();
    let tasks: Vec<_> =
        (0..TASKS).map(|t| tokio::spawn(send_batches(batches / TASKS + usize::from(t < batches % TASKS)))).collect();
    for t in tasks {
        t.await.unwrap();
    }
    events as f64 / start.elapsed().as_secs_f64()
}

async fn sdk_send(port: u16, partition: &'static str, events: usize) -> f64 {
    let producer = std::sync::Arc::new(
        ProducerClient::builder()
            .with_custom_endpoint(custom_endpoint(port))
            .open_with_connection_string(&emulator_connection_string(port), Some("eh1"))
            .await
            .unwrap(),
    );
    let rate = in_parallel(events, |count| {
        let producer = producer.clone();
        async move {
            for _ in 0..count {
                let opts = EventDataBatchOptions { partition_id: Some(partition.into()), ..Default::default() };
                let batch = producer.create_batch(Some(opts)).await.unwrap();
                for _ in 0..BATCH {
                    assert!(batch.try_add_event_data(vec![b'x'; 100], None).unwrap());
                }
                producer.send_batch(batch, None).await.unwrap();
            }
        }
    })
    .await;
    std::sync::Arc::into_inner(producer).expect("the tasks are done").close().await.unwrap();
    rate
}

async fn ours_send(port: u16, partition: &'static str, events: usize) -> f64 {
    let producer = std::sync::Arc::new(
        ehub::ProducerClient::from_connection_string(&emulator_connection_string(port), Some("eh1")).await.unwrap(),
    );
    let body = bytes::Bytes::from(vec![b'x'; 100]);
    let rate = in_parallel(events, |count| {
        let (producer, body) = (producer.clone(), body.clone());
        async move {
            for _ in 0..count {
                let opts = ehub::EventDataBatchOptions { partition_id: Some(partition.into()), ..Default::default() };
                let mut batch = producer.create_batch(Some(opts)).await.unwrap();
                for _ in 0..BATCH {
                    assert!(batch.try_add(&ehub::EventData::new(body.clone())).unwrap());
                }
                producer.send_batch(&batch).await.unwrap();
            }
        }
    })
    .await;
    producer.close().await;
    rate
}

/// `prefetch: None` leaves each client at its defaults.
async fn sdk_receive(port: u16, partition: &str, events: usize, prefetch: Option<u32>) -> f64 {
    let consumer = sdk_consumer(port).await;
    let opts = sdk_from_earliest(prefetch, None);
    let start = Instant::now();
    let rx = consumer.open_receiver_on_partition(partition.to_string(), Some(opts)).await.unwrap();
    let mut stream = Box::pin(rx.stream_events());
    for _ in 0..events {
        stream.next().await.unwrap().unwrap();
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    drop(stream);
    rx.close().await.unwrap();
    consumer.close().await.unwrap();
    rate
}

async fn ours_receive(port: u16, partition: &str, events: usize, prefetch: Option<u32>) -> f64 {
    let consumer = ehub::ConsumerClient::from_connection_string(&emulator_connection_string(port), Some("eh1"), None)
        .await
        .unwrap();
    let defaults = ehub::OpenReceiverOptions::default();
    let opts = ehub::OpenReceiverOptions {
        start_position: ehub::EventPosition::Earliest,
        prefetch: prefetch.unwrap_or(defaults.prefetch),
        ..defaults
    };
    let start = Instant::now();
    let mut rx = consumer.open_receiver_on_partition(partition, Some(opts)).await.unwrap();
    let mut n = 0;
    while n < events {
        n += rx.receive_batch(1000, std::time::Duration::from_secs(5)).await.unwrap().len();
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    rx.close().await;
    consumer.close().await;
    rate
}

/// Checkpoint every this many events per partition in the processor comparison.
const CHECKPOINT_EVERY: usize = 1000;

/// The official SDK's `EventProcessor` reads `events` over every partition from the earliest.
async fn sdk_process(port: u16, events: usize) -> f64 {
    use azure_messaging_eventhubs::{EventProcessor, InMemoryCheckpointStore, StartLocation, StartPosition};
    let consumer = sdk_consumer(port).await;
    let start = Instant::now();
    let processor = EventProcessor::builder()
        .with_update_interval(azure_core::time::Duration::milliseconds(500))
        .with_load_balancing_strategy(azure_messaging_eventhubs::ProcessorStrategy::Greedy)
        .with_start_positions(azure_messaging_eventhubs::models::StartPositions {
            default: StartPosition { location: StartLocation::Earliest, inclusive: true },
            ..Default::default()
        })
        .build(consumer, std::sync::Arc::new(InMemoryCheckpointStore::new()))
        .await
        .unwrap();
    let running = tokio::spawn({
        let p = processor.clone();
        async move { p.run().await }
    });
    let total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = tokio_util::sync::CancellationToken::new();
    // The SDK's event streams are not `Send`: read the 4 partitions concurrently in this task
    // (greedy: the first cycle claims all 4 at once).
    let mut clients = Vec::new();
    while clients.len() < 4 {
        let client = processor.next_partition_client().await.unwrap();
        if !clients.iter().any(|c: &std::sync::Arc<azure_messaging_eventhubs::processor::PartitionClient>| {
            c.get_partition_id() == client.get_partition_id()
        }) {
            clients.push(client);
        }
    }
    let readers = clients.iter().map(|client| {
        let (total, done) = (total.clone(), done.clone());
        async move {
            let mut stream = Box::pin(client.stream_events());
            let mut since = 0;
            loop {
                let event = tokio::select! {
                    e = stream.next() => e,
                    _ = done.cancelled() => break,
                };
                let Some(Ok(event)) = event else { break };
                since += 1;
                if since == CHECKPOINT_EVERY {
                    client.update_checkpoint(&event).await.unwrap();
                    since = 0;
                }
                if total.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 >= events {
                    done.cancel();
                }
            }
        }
    });
    futures::future::join_all(readers).await;
    let rate = events as f64 / start.elapsed().as_secs_f64();
    processor.shutdown().await.unwrap();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), running).await;
    rate
}

/// Ours: `ehub::processor::EventProcessor` (push shape) over the same workload.
async fn ours_process(port: u16, events: usize) -> f64 {
    use ehub::processor::{EventProcessor, EventProcessorOptions, PartitionContext, PartitionProcessor};
    struct Count {
        total: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        events: usize,
        since: usize,
        done: tokio_util::sync::CancellationToken,
    }
    #[async_trait::async_trait]
    impl PartitionProcessor for Count {
        async fn process_events(
            &mut self,
            batch: Vec<ehub::ReceivedEventData>,
            ctx: &PartitionContext,
        ) -> ehub::Result<()> {
            self.since += batch.len();
            if self.since >= CHECKPOINT_EVERY {
                if let Some(last) = batch.last() {
                    ctx.update_checkpoint(last).await?;
                }
                self.since = 0;
            }
            if self.total.fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed) + batch.len() >= self.events {
                self.done.cancel();
            }
            Ok(())
        }
    }
    let consumer = ehub::ConsumerClient::from_connection_string(&emulator_connection_string(port), Some("eh1"), None)
        .await
        .unwrap();
    let start = Instant::now();
    let options = EventProcessorOptions {
        strategy: ehub::LoadBalancingStrategy::Greedy,
        load_balancing_interval: std::time::Duration::from_millis(500),
        ownership_expiry: std::time::Duration::from_secs(10),
        default_start_position: ehub::EventPosition::Earliest,
        ..Default::default()
    };
    let processor =
        EventProcessor::new(consumer.clone(), std::sync::Arc::new(ehub::InMemoryCheckpointStore::new()), Some(options))
            .unwrap();
    let total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let (p, total, done) = (processor.clone(), total.clone(), done.clone());
        async move {
            p.run_with_factory(move |_| Count { total: total.clone(), events, since: 0, done: done.clone() }).await
        }
    });
    done.cancelled().await;
    let rate = events as f64 / start.elapsed().as_secs_f64();
    processor.shutdown();
    running.await.unwrap().unwrap();
    consumer.close().await;
    rate
}

/// Tasks enqueueing in the buffered comparison.
const ENQUEUERS: usize = 8;

/// The official SDK's `BufferedProducerClient`: `events` enqueued from `ENQUEUERS` tasks.
async fn sdk_buffered(port: u16, events: usize) -> f64 {
    use azure_messaging_eventhubs::{BufferedProducerClient, EnqueueEventOptions};
    let reported = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = std::sync::Arc::new(tokio::sync::Notify::new());
    let (r, d) = (reported.clone(), done.clone());
    let producer = BufferedProducerClient::builder()
        .with_custom_endpoint(custom_endpoint(port))
        .with_on_send_succeeded(move |ctx| {
            let (r, d) = (r.clone(), d.clone());
            async move {
                if r.fetch_add(ctx.events.len(), std::sync::atomic::Ordering::SeqCst) + ctx.events.len() >= events {
                    d.notify_one();
                }
            }
        })
        .with_on_send_failed(|ctx| async move { panic!("official buffered send failed: {}", ctx.error) })
        .open_with_connection_string(&emulator_connection_string(port), Some("eh1"))
        .await
        .unwrap();
    let producer = std::sync::Arc::new(producer);
    let p = producer.clone();
    let rate = enqueue_and_wait(
        events,
        &reported,
        &done,
        move |i| {
            let p = p.clone();
            async move {
                let o = EnqueueEventOptions { partition_id: Some((i % 4).to_string()), ..Default::default() };
                p.enqueue_event(vec![b'x'; 100], Some(o)).await.unwrap();
            }
        },
        || async { producer.flush().await.unwrap() },
    )
    .await;
    producer.close().await.unwrap();
    rate
}

/// Runs `ENQUEUERS` tasks, task `t` enqueueing events `t`, `t + ENQUEUERS`, ... through
/// `enqueue(i)`, then `flush()`es and waits until `reported` reaches `events`; returns events/s
/// from the start.
async fn enqueue_and_wait<F, Fut, G, Gut>(
    events: usize,
    reported: &std::sync::atomic::AtomicUsize,
    done: &tokio::sync::Notify,
    enqueue: F,
    flush: G,
) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
    G: FnOnce() -> Gut,
    Gut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..ENQUEUERS)
        .map(|t| {
            let enqueue = enqueue.clone();
            tokio::spawn(async move {
                for i in (t..events).step_by(ENQUEUERS) {
                    enqueue(i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Nothing more to enqueue: both send their partial batches now rather than after their
    // max wait time (1 s each), which would otherwise dominate short runs.
    flush().await;
    while reported.load(std::sync::atomic::Ordering::SeqCst) < events {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(100), done.notified()).await;
    }
    events as f64 / start.elapsed().as_secs_f64()
}

/// Ours: `ehub::BufferedProducerClient`, the same workload.
async fn ours_buffered(port: u16, events: usize) -> f64 {
    use ehub::buffered::{BufferedProducerClient, EnqueueEventOptions};
    let reported = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = std::sync::Arc::new(tokio::sync::Notify::new());
    let (r, d) = (reported.clone(), done.clone());
    let producer = BufferedProducerClient::builder()
        .with_on_send_succeeded(move |sent, _| {
            if r.fetch_add(sent.len(), std::sync::atomic::Ordering::SeqCst) + sent.len() >= events {
                d.notify_one();
            }
        })
        .with_on_send_failed(|_, _, e| panic!("buffered send failed: {e}"))
        .open_with_connection_string(&emulator_connection_string(port), Some("eh1"))
        .await
        .unwrap();
    let body = bytes::Bytes::from(vec![b'x'; 100]);
    let p = producer.clone();
    let rate = enqueue_and_wait(
        events,
        &reported,
        &done,
        move |i| {
            let (p, body) = (p.clone(), body.clone());
            async move {
                let o = EnqueueEventOptions { partition_id: Some((i % 4).to_string()), ..Default::default() };
                p.enqueue_event(ehub::EventData::from(body), Some(o)).await.unwrap();
            }
        },
        || async { producer.flush(None).await.unwrap() },
    )
    .await;
    producer.close(true, None).await.unwrap();
    rate
}

/// Puts `per_partition` 100-byte events into each of the 4 partitions, with our producer.
async fn fill_all(port: u16, per_partition: usize) {
    let producer =
        ehub::ProducerClient::from_connection_string(&emulator_connection_string(port), Some("eh1")).await.unwrap();
    for p in 0..4 {
        let mut left = per_partition;
        while left > 0 {
            let n = left.min(1000);
            let events: Vec<_> = (0..n).map(|_| ehub::EventData::from(vec![b'x'; 100])).collect();
            let opts = ehub::SendEventOptions { partition_id: Some(p.to_string()), ..Default::default() };
            producer.send_events(events, Some(opts)).await.unwrap();
            left -= n;
        }
    }
    producer.close().await;
}

/// Runs one measurement with a time limit; returns its events/s and a line with the CPU time
/// this process (the client under test) and the broker used meanwhile, so a slow round can
/// be told apart from a busy machine.
async fn measured(f: impl std::future::Future<Output = f64>, broker: u32) -> Result<(f64, String), Elapsed> {
    let (me, b) = (cpu_time("self"), cpu_time(&broker.to_string()));
    let rate = tokio::time::timeout(HUNG_AFTER, f).await?;
    let (me, b) = (cpu_time("self") - me, cpu_time(&broker.to_string()) - b);
    Ok((rate, format!("{rate:.0}/s, client CPU {:.2} s, broker CPU {:.2} s", me.as_secs_f64(), b.as_secs_f64())))
}

/// How long one measurement may take before it counts as hung.
const HUNG_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Rounds measured, and rounds abandoned because a client hung.
struct Turns {
    rates: Vec<(f64, f64)>,
    hung: usize,
}

/// Runs `sdk` and `ours` `rounds` times in turns, alternating which goes first; returns each
/// round's (sdk, ours) events/s. A round where either client hangs is abandoned, counted and
/// run again (the SDK's send sometimes waits forever for a settlement it lost: see the
/// README), at most `rounds` extra times.
async fn in_turns<S, SF, O, OF>(rounds: usize, broker: u32, sdk: S, ours: O) -> Turns
where
    S: Fn() -> SF,
    SF: std::future::Future<Output = f64>,
    O: Fn() -> OF,
    OF: std::future::Future<Output = f64>,
{
    let mut turns = Turns { rates: Vec::new(), hung: 0 };
    while turns.rates.len() < rounds && turns.hung < rounds {
        let round = turns.rates.len() + turns.hung;
        let pair = async {
            Ok::<_, Elapsed>(if round.is_multiple_of(2) {
                let s = measured(sdk(), broker).await?;
                (s, measured(ours(), broker).await?)
            } else {
                let o = measured(ours(), broker).await?;
                (measured(sdk(), broker).await?, o)
            })
        };
        match pair.await {
            Ok((s, o)) => {
                eprintln!("round {}: official SDK {} | ehub {}", round + 1, s.1, o.1);
                turns.rates.push((s.0, o.0));
            }
            Err(_) => {
                eprintln!("round {}: a client hung for {HUNG_AFTER:?}; the round is run again", round + 1);
                turns.hung += 1;
            }
        }
    }
    turns
}

/// A table row: each round's ratio, then the median ratio and the median rates.
fn row(name: &str, turns: &Turns) -> String {
    let rounds = &turns.rates;
    if rounds.is_empty() {
        return format!("| {name} | hung | | | |");
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if !n.is_multiple_of(2) {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let ratios: Vec<f64> = rounds.iter().map(|(s, o)| o / s).collect();
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.1}x")).collect();
    let hung = match turns.hung {
        0 => String::new(),
        1 => " (1 hung round run again)".to_string(),
        n => format!(" ({n} hung rounds run again)"),
    };
    format!(
        "| {name} | {:.0}/s | {:.0}/s | {}{hung} | **{:.1}x** |",
        median(rounds.iter().map(|r| r.0).collect()),
        median(rounds.iter().map(|r| r.1).collect()),
        each.join(" "),
        median(ratios)
    )
}

/// With `--features mimalloc`, the process (both clients) allocates with mimalloc instead of
/// the system allocator, as the `ehub` binary does.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    install_crypto_provider();
    log_to_stderr_from("EHUB_COMPARE_LOG");
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("buffered") {
        let events: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
        let fsync = args.get(3).cloned().unwrap_or_else(|| "never".into());
        let rounds: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(3).max(1);
        let broker = Broker::start(&fsync);
        let port = broker.port;
        eprintln!("buffered producers, official SDK against ehub:");
        let turns = in_turns(rounds, broker.pid(), || sdk_buffered(port, events), || ours_buffered(port, events)).await;
        println!(
            "broker fsync={fsync}, {events} events of 100 B over 4 partitions, {ENQUEUERS} tasks enqueueing, default buffered options, 2 cores, loopback, {rounds} rounds"
        );
        println!("| operation | official Rust SDK 0.16 (median) | ehub (median) | ratio per round | median ratio |");
        println!("|---|---|---|---|---|");
        println!("{}", row("buffered producer, enqueue to last success", &turns));
        return;
    }
    if args.get(1).map(String::as_str) == Some("process") {
        let events: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
        let fsync = args.get(3).cloned().unwrap_or_else(|| "never".into());
        let rounds: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(3).max(1);
        let broker = Broker::start(&fsync);
        let port = broker.port;
        fill_all(port, events / 4).await;
        eprintln!("event processors, official SDK against ehub:");
        let turns = in_turns(rounds, broker.pid(), || sdk_process(port, events), || ours_process(port, events)).await;
        let allocator = if cfg!(feature = "mimalloc") { "mimalloc" } else { "system" };
        println!(
            "broker fsync={fsync}, {events} events of 100 B over 4 partitions, in-memory stores, a checkpoint every {CHECKPOINT_EVERY} events per partition, default prefetch, 2 cores, loopback, {allocator} allocator, {rounds} rounds"
        );
        println!("| operation | official Rust SDK 0.16 (median) | ehub (median) | ratio per round | median ratio |");
        println!("|---|---|---|---|---|");
        println!("{}", row("event processor, 4 partitions from earliest", &turns));
        return;
    }
    let events: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(200_000);
    let fsync = args.get(2).cloned().unwrap_or_else(|| "never".into());
    // A number for both clients, or `default`: each at its own default (the official SDK's
    // 300; ours adapts its window to the event size).
    let prefetch: Option<u32> = match args.get(3).map(String::as_str) {
        None | Some("default") => None,
        Some(n) => Some(n.parse().unwrap()),
    };
    let rounds: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(3).max(1);
    let broker = Broker::start(&fsync);
    let port = broker.port;
    // Partition 0 for the SDK, 1 for ours; each then reads back the first `events` of its own.
    eprintln!("send, official SDK against ehub:");
    let tx = in_turns(rounds, broker.pid(), || sdk_send(port, "0", events), || ours_send(port, "1", events)).await;
    eprintln!("receive, official SDK against ehub:");
    let rx = in_turns(
        rounds,
        broker.pid(),
        || sdk_receive(port, "0", events, prefetch),
        || ours_receive(port, "1", events, prefetch),
    )
    .await;
    let allocator = if cfg!(feature = "mimalloc") { "mimalloc" } else { "system" };
    println!(
        "broker fsync={fsync}, {events} events of 100 B, 2 cores, loopback, {allocator} allocator, prefetch {}, {rounds} rounds",
        prefetch.map_or("each client's default".to_string(), |p| p.to_string())
    );
    println!("| operation | official Rust SDK 0.16 (median) | ehub (median) | ratio per round | median ratio |");
    println!("|---|---|---|---|---|");
    println!("{}", row("send, batches of 100, 8 in flight", &tx));
    println!("{}", row("receive one partition from earliest", &rx));
}
