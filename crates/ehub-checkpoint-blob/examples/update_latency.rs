//! The cost of one checkpoint update through the Blob store: updates of one partition, one after
//! another, with p50/p99 latency (each is a Set Blob Metadata request, acknowledged by the
//! service). `cargo run --release -p ehub-checkpoint-blob --example update_latency -- [UPDATES]`
//! against `AZURE_STORAGE_CONNECTION_STRING` (default: the development account at
//! 127.0.0.1:10000, Azurite's or `ehub serve`'s), container `checkpoints` (created if missing).

use ehub::checkpoint::{Checkpoint, CheckpointStore};
use ehub_checkpoint_blob::BlobCheckpointStore;
use std::time::Instant;

#[tokio::main]
async fn main() -> ehub::Result<()> {
    let updates: i64 = std::env::args().nth(1).map_or(2000, |s| s.parse().expect("a number of updates"));
    let storage =
        std::env::var("AZURE_STORAGE_CONNECTION_STRING").unwrap_or_else(|_| "UseDevelopmentStorage=true".into());
    let store = BlobCheckpointStore::from_connection_string(&storage, "checkpoints")?;
    store.create_container_if_missing().await?;
    let mut latencies = Vec::with_capacity(updates as usize);
    let start = Instant::now();
    for seq in 0..updates {
        let t = Instant::now();
        store
            .update_checkpoint(&Checkpoint {
                namespace: "localhost:5672".into(),
                event_hub: "eh1".into(),
                consumer_group: "$default".into(),
                partition_id: "0".into(),
                offset: Some((seq * 128).to_string()),
                sequence_number: Some(seq),
            })
            .await?;
        latencies.push(t.elapsed().as_micros() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{{\"updates\":{updates},\"updates_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
        updates as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
