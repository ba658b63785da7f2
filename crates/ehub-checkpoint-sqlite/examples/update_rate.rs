//! How many checkpoint updates per second one partition gets with durable commits
//! (`synchronous = FULL` in WAL mode: each update is on disk before it returns), and the p50/p99
//! latency of one update, with IN_FLIGHT updates waiting at a time (1: one after another; more:
//! as a processor that does not wait for each checkpoint before the next, whose waiting updates
//! share commits).
//! `cargo run --release -p ehub-checkpoint-sqlite --example update_rate -- [UPDATES] [DIR] [IN_FLIGHT]`

use ehub::checkpoint::{Checkpoint, CheckpointStore};
use ehub_checkpoint_sqlite::SqliteCheckpointStore;
use std::time::Instant;

#[tokio::main]
async fn main() -> ehub::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let updates: i64 = args.get(1).map_or(20_000, |s| s.parse().expect("a number of updates"));
    let dir = match args.get(2) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir(),
    };
    let path = dir.join(format!("ehub-update-rate-{}.db", std::process::id()));
    let in_flight: i64 = args.get(3).map_or(1, |s| s.parse().expect("a number in flight")).max(1);
    let store = SqliteCheckpointStore::open(&path).await?;
    let start = Instant::now();
    // IN_FLIGHT tasks, each sending every IN_FLIGHT-th update of the one partition in turn.
    let tasks: Vec<_> = (0..in_flight)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut seq = t;
                while seq < updates {
                    let started = Instant::now();
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
                    latencies.push(started.elapsed().as_micros() as u64);
                    seq += in_flight;
                }
                Ok::<_, ehub::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(updates as usize);
    for t in tasks {
        latencies.extend(t.await.expect("task")?);
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "{{\"updates\":{updates},\"in_flight\":{in_flight},\"updates_per_s\":{:.0},\"p50_us\":{},\"p99_us\":{},\"synchronous\":\"FULL\",\"file\":\"{}\"}}",
        updates as f64 / secs,
        pct(0.5),
        pct(0.99),
        path.display()
    );
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
