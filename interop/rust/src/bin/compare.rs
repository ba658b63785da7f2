//! Our client against the official Rust SDK, in the same run, on the same broker:
//! - send: 100-byte events in batches of 100, acknowledged, 8 batches in flight (8 tasks, each
//!   awaiting its own `send_batch`, since the SDK has one batch in flight per call);
//! - receive: one partition from the earliest event.
//!
//! `cargo run --release --bin compare -- [events] [fsync] [prefetch]` from `interop/rust`
//! (defaults: 200000 never 300, the prefetch both SDKs default to); add `--features mimalloc` to run both clients on mimalloc. Needs `target/release/ehub` at the workspace root.

use azure_messaging_eventhubs::{EventDataBatchOptions, ProducerClient};
use ehub_interop_rust::{
    custom_endpoint, emulator_connection_string, install_crypto_provider, log_to_stderr_from, sdk_consumer,
    sdk_from_earliest, Broker,
};
use futures::StreamExt;
use std::time::Instant;

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
    in_parallel(events, |count| {
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
    .await
}

async fn ours_send(port: u16, partition: &'static str, events: usize) -> f64 {
    let producer = std::sync::Arc::new(
        ehub::ProducerClient::from_connection_string(&emulator_connection_string(port), Some("eh1")).await.unwrap(),
    );
    let body = bytes::Bytes::from(vec![b'x'; 100]);
    in_parallel(events, |count| {
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
    .await
}

async fn sdk_receive(port: u16, partition: &str, events: usize, prefetch: u32) -> f64 {
    let consumer = sdk_consumer(port).await;
    let opts = sdk_from_earliest(Some(prefetch), None);
    let start = Instant::now();
    let rx = consumer.open_receiver_on_partition(partition.to_string(), Some(opts)).await.unwrap();
    let mut stream = Box::pin(rx.stream_events());
    for _ in 0..events {
        stream.next().await.unwrap().unwrap();
    }
    events as f64 / start.elapsed().as_secs_f64()
}

async fn ours_receive(port: u16, partition: &str, events: usize, prefetch: u32) -> f64 {
    let consumer = ehub::ConsumerClient::from_connection_string(&emulator_connection_string(port), Some("eh1"), None)
        .await
        .unwrap();
    let opts =
        ehub::OpenReceiverOptions { start_position: ehub::EventPosition::Earliest, prefetch, ..Default::default() };
    let start = Instant::now();
    let mut rx = consumer.open_receiver_on_partition(partition, Some(opts)).await.unwrap();
    let mut n = 0;
    while n < events {
        n += rx.receive_batch(1000, std::time::Duration::from_secs(5)).await.unwrap().len();
    }
    events as f64 / start.elapsed().as_secs_f64()
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
    let events: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(200_000);
    let fsync = args.get(2).cloned().unwrap_or_else(|| "never".into());
    // Both SDKs default to 300.
    let prefetch: u32 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(300);
    let broker = Broker::start(&fsync);
    let port = broker.port;
    // Partition 0 for the SDK, 1 for ours; each then reads back its own partition.
    let sdk_tx = sdk_send(port, "0", events).await;
    let ours_tx = ours_send(port, "1", events).await;
    let sdk_rx = sdk_receive(port, "0", events, prefetch).await;
    let ours_rx = ours_receive(port, "1", events, prefetch).await;
    let allocator = if cfg!(feature = "mimalloc") { "mimalloc" } else { "system" };
    println!(
        "broker fsync={fsync}, {events} events of 100 B, 2 cores, loopback, {allocator} allocator, prefetch {prefetch}"
    );
    println!("| operation | official Rust SDK 0.16 | ehub | ratio |");
    println!("|---|---|---|---|");
    println!("| send, batches of 100, 8 in flight | {:.0}/s | {:.0}/s | {:.1}x |", sdk_tx, ours_tx, ours_tx / sdk_tx);
    println!("| receive one partition from earliest | {:.0}/s | {:.0}/s | {:.1}x |", sdk_rx, ours_rx, ours_rx / sdk_rx);
}
