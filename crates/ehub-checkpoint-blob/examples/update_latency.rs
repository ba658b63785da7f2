//! The cost of checkpoint updates through the Blob store: `UPDATES` updates spread over
//! `IN_FLIGHT` partitions updated at once (as one processor owning that many partitions does),
//! each partition's updates one after another, with the rate and p50/p99 latency (each update
//! is a Set Blob Metadata request, acknowledged by the service).
//! `cargo run --release -p ehub-checkpoint-blob --example update_latency -- [UPDATES] [IN_FLIGHT]`
//! against `AZURE_STORAGE_CONNECTION_STRING` (default: the development account at
//! 127.0.0.1:10000, Azurite's or `ehub serve`'s), container `checkpoints` (created if missing).

use ehub::checkpoint::{Checkpoint, CheckpointStore};
use ehub_checkpoint_blob::BlobCheckpointStore;
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() -> ehub::Result<()> {
    let mut args = std::env::args().skip(1);
    let updates: i64 = args.next().map_or(2000, |s| s.parse().expect("a number of updates"));
    let in_flight: i64 = args.next().map_or(1, |s| s.parse().expect("a number of partitions in flight"));
    let storage =
        std::env::var("AZURE_STORAGE_CONNECTION_STRING").unwrap_or_else(|_| "UseDevelopmentStorage=true".into());
    let store = Arc::new(BlobCheckpointStore::from_connection_string(&storage, "checkpoints")?);
    store.create_container_if_missing().await?;
    let per_partition = (updates / in_flight).max(1);
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|p| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_partition as usize);
                for seq in 0..per_partition {
                    let t = Instant::now();
                    store
                        .update_checkpoint(&Checkpoint {
                            namespace: "localhost:5672".into(),
                            event_hub: "eh1".into(),
                            consumer_group: "$default".into(),
                            partition_id: p.to_string(),
                            offset: Some((seq * 128).to_string()),
                            sequence_number: Some(seq),
                        })
                        .await?;
                    latencies.push(t.elapsed().as_micros() as u64);
                }
                Ok::<_, ehub::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.expect("worker panicked")?);
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{{\"updates\":{},\"in_flight\":{in_flight},\"updates_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        latencies.len(),
        latencies.len() as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
