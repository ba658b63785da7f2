//! The Blob store's share of one load-balancing cycle: a processor that owns `PARTITIONS`
//! partitions lists the ownerships and renews every one of them (one conditional Set Blob
//! Metadata per partition, all at once), `CYCLES` times, with the p50/p99 duration of a cycle.
//! `cargo run --release -p ehub-checkpoint-blob --example claim_cycle -- [CYCLES] [PARTITIONS]`
//! against `AZURE_STORAGE_CONNECTION_STRING` (default: the development account at
//! 127.0.0.1:10000, Azurite's or `ehub serve`'s), container `checkpoints` (created if missing).

use ehub::checkpoint::{CheckpointStore, Ownership};
use ehub_checkpoint_blob::BlobCheckpointStore;
use std::time::Instant;

#[tokio::main]
async fn main() -> ehub::Result<()> {
    let mut args = std::env::args().skip(1);
    let cycles: usize = args.next().map_or(500, |s| s.parse().expect("a number of cycles"));
    let partitions: usize = args.next().map_or(32, |s| s.parse().expect("a number of partitions"));
    let storage =
        std::env::var("AZURE_STORAGE_CONNECTION_STRING").unwrap_or_else(|_| "UseDevelopmentStorage=true".into());
    let store = BlobCheckpointStore::from_connection_string(&storage, "checkpoints")?;
    store.create_container_if_missing().await?;
    let ns = format!("claim-cycle-{}", std::process::id());
    let mut owned: Vec<Ownership> = (0..partitions)
        .map(|p| Ownership {
            namespace: ns.clone(),
            event_hub: "eh1".into(),
            consumer_group: "$default".into(),
            partition_id: p.to_string(),
            owner_id: "bench".into(),
            etag: None,
            last_modified: None,
        })
        .collect();
    owned = store.claim_ownerships(&owned).await?;
    assert_eq!(owned.len(), partitions, "a fresh namespace: every first claim wins");
    let mut took = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let t = Instant::now();
        let listed = store.list_ownerships(&ns, "eh1", "$default").await?;
        assert_eq!(listed.len(), partitions);
        owned = store.claim_ownerships(&listed).await?;
        assert_eq!(owned.len(), partitions, "renewals with current ETags all win");
        took.push(t.elapsed().as_micros() as u64);
    }
    took.sort_unstable();
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "{{\"cycles\":{cycles},\"partitions\":{partitions},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        pct(0.5),
        pct(0.99),
        took[took.len() - 1]
    );
    Ok(())
}
