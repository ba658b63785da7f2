//! The official Rust Blob checkpoint store (`azure_messaging_eventhubs_checkpointstore_blob`
//! 0.9.0), unmodified, against a container URL (with a SAS in its query, as that store
//! authenticates: it has no account-key support): it claims `PARTITIONS` partitions, renews them
//! with the ETags it got, writes a checkpoint for each (the first one falls back from Set
//! Metadata to Put Blob), updates them, and lists both back. Prints one JSON line of what it
//! read; exits non-zero on any failure.
//!
//! `cargo run -- CONTAINER_URL NAMESPACE HUB PARTITIONS`

use azure_messaging_eventhubs::models::{Checkpoint, Ownership};
use azure_messaging_eventhubs::CheckpointStore;
use azure_messaging_eventhubs_checkpointstore_blob::BlobCheckpointStore;
use azure_storage_blob::BlobContainerClient;

fn fail(what: &str, e: impl std::fmt::Debug) -> ! {
    eprintln!("official Rust Blob store: {what}: {e:?}");
    std::process::exit(1)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, ns, hub, partitions] = &args[..] else {
        fail("usage", "CONTAINER_URL NAMESPACE HUB PARTITIONS")
    };
    let partitions: usize = partitions.parse().unwrap_or_else(|e| fail("PARTITIONS", e));
    let url = url::Url::parse(url).unwrap_or_else(|e| fail("container URL", e));
    let client = BlobContainerClient::new(url, None, None).unwrap_or_else(|e| fail("container client", e));
    let store = BlobCheckpointStore::new(client);
    // Lower-case names: this store does not lower-case them itself (Azure/azure-sdk-for-rust#5099).
    let group = "$default";
    let claims: Vec<Ownership> = (0..partitions)
        .map(|p| Ownership {
            fully_qualified_namespace: ns.clone(),
            event_hub_name: hub.clone(),
            consumer_group: group.into(),
            partition_id: p.to_string(),
            owner_id: Some("official-rust".into()),
            ..Default::default()
        })
        .collect();
    let won = store.claim_ownership(&claims).await.unwrap_or_else(|e| fail("first claims", e));
    if won.len() != partitions {
        fail("first claims", format!("won {} of {partitions}", won.len()));
    }
    let again = store.claim_ownership(&claims).await.unwrap_or_else(|e| fail("second first claims", e));
    if !again.is_empty() {
        fail("second first claims", format!("won {} (a blob that exists must not be claimed again as new)", again.len()));
    }
    let renewed = store.claim_ownership(&won).await.unwrap_or_else(|e| fail("renewals", e));
    if renewed.len() != partitions {
        fail("renewals", format!("renewed {} of {partitions} with current ETags", renewed.len()));
    }
    let stale = store.claim_ownership(&won).await.unwrap_or_else(|e| fail("stale renewals", e));
    if !stale.is_empty() {
        fail("stale renewals", format!("won {} with stale ETags", stale.len()));
    }
    for round in 0..2i64 {
        for p in 0..partitions {
            let seq = round * 100 + p as i64;
            let cp = Checkpoint {
                fully_qualified_namespace: ns.clone(),
                event_hub_name: hub.clone(),
                consumer_group: group.into(),
                partition_id: p.to_string(),
                offset: Some((seq * 64).to_string()),
                sequence_number: Some(seq),
            };
            store.update_checkpoint(cp).await.unwrap_or_else(|e| fail("update_checkpoint", e));
        }
    }
    let owners = store.list_ownerships(ns, hub, group).await.unwrap_or_else(|e| fail("list_ownerships", e));
    let checkpoints = store.list_checkpoints(ns, hub, group).await.unwrap_or_else(|e| fail("list_checkpoints", e));
    let mut seqs: Vec<(String, i64)> =
        checkpoints.iter().map(|c| (c.partition_id.clone(), c.sequence_number.unwrap_or(-1))).collect();
    seqs.sort();
    let owned = owners.iter().filter(|o| o.owner_id.as_deref() == Some("official-rust")).count();
    let seqs_json: Vec<String> = seqs.iter().map(|(p, s)| format!("\"{p}\":{s}")).collect();
    println!("{{\"owned\":{owned},\"checkpoints\":{{{}}}}}", seqs_json.join(","));
}
