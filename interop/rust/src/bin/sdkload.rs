//! Load runs of the official Rust SDK (`azure_messaging_eventhubs` 0.16, unmodified) against
//! `ehub serve`, failing on any stall:
//!
//! - `send EVENTS INFLIGHT RUNS`: each run opens a producer and sends EVENTS 100-byte events to
//!   partition 0 in batches of 100, with INFLIGHT tasks each awaiting its own `send_batch`;
//! - `processor RUNS`: each run starts the SDK's `EventProcessor` (in-memory checkpoint store,
//!   greedy, 200 ms cycles) on the 4-partition hub and waits until every partition has delivered
//!   its first event through the partition client the processor handed out.
//!
//! A run that makes no progress for `EHUB_LOAD_STALL` seconds (default 10) is a stall: the harness
//! prints what it was waiting for and exits 1. Otherwise it prints each run's rate and the median.
//!
//! `cargo run --release --bin sdkload -- send 200000 8 50` from `interop/rust`. By default it starts
//! its own `target/release/ehub serve` (fsync=never); `EHUB_LOAD_PORT=5672` points it at a broker
//! you run yourself (hub `eh1`, the emulator's connection string). `EHUB_LOAD_TRACE=1` puts a
//! proxy in the path that keeps the last 40 performatives in each direction and prints them on a
//! stall (the proxy adds a hop, which makes a race in the client rarer).

use azure_messaging_eventhubs::processor::PartitionClient;
use azure_messaging_eventhubs::{EventDataBatchOptions, EventProcessor, InMemoryCheckpointStore, ProducerClient};
use ehub_interop_rust::{custom_endpoint, emulator_connection_string, install_crypto_provider, log_to_stderr_from};
use ehub_interop_rust::{Broker, TracingProxy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 100;

fn stall_after() -> Duration {
    Duration::from_secs(std::env::var("EHUB_LOAD_STALL").ok().and_then(|s| s.parse().ok()).unwrap_or(10))
}

/// Waits for `work` while watching `progress`: returns its output, or `Err(what)` when `progress`
/// stays the same for [`stall_after`].
async fn watched<T>(progress: &AtomicUsize, work: impl std::future::Future<Output = T>) -> Result<T, usize> {
    tokio::pin!(work);
    let mut last = (progress.load(Ordering::Relaxed), Instant::now());
    loop {
        tokio::select! {
            out = &mut work => return Ok(out),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                let now = progress.load(Ordering::Relaxed);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() >= stall_after() {
                    return Err(now);
                }
            }
        }
    }
}

async fn send_run(port: u16, events: usize, inflight: usize) -> Result<f64, String> {
    let producer = Arc::new(
        ProducerClient::builder()
            .with_custom_endpoint(custom_endpoint(port))
            .open_with_connection_string(&emulator_connection_string(port), Some("eh1"))
            .await
            .map_err(|e| format!("open: {e}"))?,
    );
    let sent = Arc::new(AtomicUsize::new(0));
    let batches = events / BATCH;
    let start = Instant::now();
    let tasks: Vec<_> = (0..inflight)
        .map(|t| {
            let (producer, sent) = (producer.clone(), sent.clone());
            let count = batches / inflight + usize::from(t < batches % inflight);
            tokio::spawn(async move {
                for _ in 0..count {
                    let opts = EventDataBatchOptions { partition_id: Some("0".into()), ..Default::default() };
                    let batch = producer.create_batch(Some(opts)).await.map_err(|e| e.to_string())?;
                    for _ in 0..BATCH {
                        assert!(batch.try_add_event_data(vec![b'x'; 100], None).map_err(|e| e.to_string())?);
                    }
                    producer.send_batch(batch, None).await.map_err(|e| e.to_string())?;
                    sent.fetch_add(BATCH, Ordering::Relaxed);
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    let all = async {
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok::<(), String>(())
    };
    match watched(&sent, all).await {
        Ok(r) => r?,
        Err(n) => return Err(format!("stalled: {n} of {events} events acknowledged, no acknowledgement since")),
    }
    let rate = events as f64 / start.elapsed().as_secs_f64();
    if let Some(p) = Arc::into_inner(producer) {
        p.close().await.map_err(|e| format!("close: {e}"))?;
    }
    Ok(rate)
}

async fn processor_run(port: u16) -> Result<f64, String> {
    let start = Instant::now();
    let consumer = azure_messaging_eventhubs::ConsumerClient::builder()
        .with_custom_endpoint(custom_endpoint(port))
        .open_with_connection_string(&emulator_connection_string(port), Some("eh1"))
        .await
        .map_err(|e| format!("open: {e}"))?;
    let processor = EventProcessor::builder()
        .with_update_interval(azure_core::time::Duration::milliseconds(200))
        .with_start_positions(azure_messaging_eventhubs::models::StartPositions {
            default: azure_messaging_eventhubs::StartPosition {
                location: azure_messaging_eventhubs::StartLocation::Earliest,
                inclusive: true,
            },
            ..Default::default()
        })
        .build(consumer, Arc::new(InMemoryCheckpointStore::new()))
        .await
        .map_err(|e| format!("build: {e}"))?;
    let running = tokio::spawn({
        let p = processor.clone();
        async move { p.run().await }
    });
    // Progress: each partition client handed out, then each partition's first event received
    // through it (so a run that never attaches a partition's receiver stalls too).
    let reached = Arc::new(AtomicUsize::new(0));
    let claim_all = async {
        let mut clients = Vec::new();
        while clients.len() < 4 {
            let client = processor.next_partition_client().await.map_err(|e| format!("next_partition_client: {e}"))?;
            if !clients.iter().any(|c: &Arc<PartitionClient>| c.get_partition_id() == client.get_partition_id()) {
                clients.push(client);
                reached.fetch_add(1, Ordering::Relaxed);
            }
        }
        let first_events = clients.iter().map(|client| {
            let reached = reached.clone();
            async move {
                use futures::StreamExt;
                let mut events = Box::pin(client.stream_events());
                match events.next().await {
                    Some(Ok(_)) => {
                        reached.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Some(Err(e)) => Err(format!("partition {}: {e}", client.get_partition_id())),
                    None => Err(format!("partition {}: the stream ended", client.get_partition_id())),
                }
            }
        });
        futures::future::join_all(first_events).await.into_iter().collect::<Result<Vec<()>, String>>()?;
        Ok::<(), String>(())
    };
    let outcome = watched(&reached, claim_all).await;
    let elapsed = start.elapsed();
    match outcome {
        Ok(r) => r?,
        Err(n) => {
            running.abort();
            return Err(format!("stalled at step {n} of 8 (4 partition clients, then 4 first events)"));
        }
    }
    processor.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    Ok(1.0 / elapsed.as_secs_f64())
}

/// Puts 10 events into each of the 4 partitions with our client, so each has one to deliver.
async fn fill_every_partition(port: u16) {
    let producer = ehub::ProducerClient::from_connection_string(&emulator_connection_string(port), Some("eh1"))
        .await
        .expect("our producer opens");
    for p in 0..4 {
        let events: Vec<_> = (0..10).map(|i| ehub::EventData::from(format!("event {i}"))).collect();
        let opts = ehub::SendEventOptions { partition_id: Some(p.to_string()), ..Default::default() };
        producer.send_events(events, Some(opts)).await.expect("events sent");
    }
    producer.close().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    install_crypto_provider();
    log_to_stderr_from("EHUB_LOAD_LOG");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| args.get(i).map_or(default, |s| s.parse().expect("a number"));
    let mode = args.first().map(String::as_str).unwrap_or("send");
    let broker = match std::env::var("EHUB_LOAD_PORT") {
        Ok(p) => Err(p.parse::<u16>().expect("EHUB_LOAD_PORT is a port")),
        Err(_) => Ok(Broker::start("never")),
    };
    let broker_port = match &broker {
        Ok(b) => b.port,
        Err(p) => *p,
    };
    let proxy = match std::env::var_os("EHUB_LOAD_TRACE") {
        Some(_) => Some(TracingProxy::start(broker_port, 40).await),
        None => None,
    };
    let port = proxy.as_ref().map_or(broker_port, |p| p.port);
    let (runs, what) = match mode {
        "send" => (arg(3, 10), format!("send {} events, {} in flight", arg(1, 200_000), arg(2, 8))),
        "processor" => (arg(1, 10), "processor start over 4 partitions, first event of each".to_string()),
        other => panic!("unknown mode {other}: send EVENTS INFLIGHT RUNS | processor RUNS"),
    };
    eprintln!("official Rust SDK, {what}, {runs} runs, broker port {broker_port}");
    if mode == "processor" {
        fill_every_partition(broker_port).await;
    }
    let mut rates = Vec::new();
    for run in 0..runs {
        let result = match mode {
            "send" => send_run(port, arg(1, 200_000), arg(2, 8)).await,
            _ => processor_run(port).await,
        };
        match result {
            // Long runs print every tenth result.
            Ok(rate) if runs > 20 && run % 10 != 9 => rates.push(rate),
            Ok(rate) => {
                if mode == "send" {
                    eprintln!("run {run}: {rate:.0} events/s");
                } else {
                    eprintln!("run {run}: every partition reached in {:.0} ms", 1000.0 / rate);
                }
                rates.push(rate);
            }
            Err(e) => {
                eprintln!("run {run}: FAILED: {e}");
                if let Some(p) = &proxy {
                    eprintln!("last frames:\n{}", p.last_frames());
                }
                // Stop the broker this harness started (exit skips destructors).
                drop(broker);
                std::process::exit(1);
            }
        }
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    if mode == "send" {
        println!("{runs} of {runs} runs passed, no stall; median {median:.0} events/s");
    } else {
        println!("{runs} of {runs} runs passed, no stall; median {:.0} ms to reach every partition", 1000.0 / median);
    }
}
