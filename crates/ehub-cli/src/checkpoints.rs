//! `ehub checkpoints list`: per partition, who owns it, when the ownership was last renewed,
//! the checkpoint, and the lag behind the partition's last event, read through the same
//! checkpoint stores the processors use (any Blob endpoint: `ehub serve`'s, Azurite, Azure).

use crate::client::{consumer, runtime};
use crate::timefmt::format_millis;
use crate::{Output, Target};
use anyhow::Result;
use ehub::checkpoint::{Checkpoint, Ownership};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(clap::Subcommand)]
pub(crate) enum CheckpointsCommand {
    /// Owner, last renewal, checkpoint and lag of every partition of the hub.
    List(ListArgs),
}

#[derive(clap::Args)]
pub(crate) struct ListArgs {
    /// The consumer group.
    #[arg(long, default_value = "$Default")]
    consumer_group: String,
    /// Where the processors keep them: blob:CONTAINER or sqlite:PATH.
    #[arg(long, default_value = "blob:checkpoints", value_name = "STORE")]
    checkpoint_store: String,
    /// With blob:CONTAINER: the storage account's connection string (default: the development
    /// account at 127.0.0.1:10000, `ehub serve`'s and Azurite's).
    #[arg(long, env = "AZURE_STORAGE_CONNECTION_STRING", hide_env_values = true, value_name = "CONNECTION_STRING")]
    storage_connection_string: Option<String>,
    /// The namespace as the records name it (default: as `ehub receive` and the Python SDK
    /// write it; the JavaScript SDK writes the host alone against an emulator).
    #[arg(long, value_name = "NAME")]
    checkpoint_namespace: Option<String>,
}

/// One partition's row.
struct Row {
    partition_id: String,
    owner: Option<Ownership>,
    checkpoint: Option<Checkpoint>,
    last_enqueued: i64,
    lag: i64,
}

/// Events not yet processed, as KEDA's Event Hubs scaler counts them: none on an empty
/// partition; from the first retained event when there is no checkpoint.
fn lag(beginning: i64, last: i64, checkpoint: Option<i64>, empty: bool) -> i64 {
    if empty || last < 0 {
        return 0;
    }
    match checkpoint {
        Some(seq) => (last - seq).max(0),
        None => last - beginning + 1,
    }
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn run(t: &Target, c: &CheckpointsCommand) -> Result<()> {
    let CheckpointsCommand::List(a) = c;
    runtime()?.block_on(async {
        let store = crate::process::open_store(&a.checkpoint_store, a.storage_connection_string.as_deref()).await?;
        let client = consumer(t, &a.consumer_group).await?;
        let namespace = a.checkpoint_namespace.clone().unwrap_or_else(|| client.checkpoint_namespace());
        let hub = client.get_eventhub_properties().await?;
        let owners = store.list_ownerships(&namespace, &hub.name, &a.consumer_group).await?;
        let checkpoints = store.list_checkpoints(&namespace, &hub.name, &a.consumer_group).await?;
        let mut rows = Vec::new();
        for id in &hub.partition_ids {
            let p = client.get_partition_properties(id).await?;
            let checkpoint = checkpoints.iter().find(|c| &c.partition_id == id).cloned();
            let seq = checkpoint.as_ref().and_then(|c| c.sequence_number);
            rows.push(Row {
                partition_id: id.clone(),
                owner: owners.iter().find(|o| &o.partition_id == id).cloned(),
                lag: lag(p.beginning_sequence_number, p.last_enqueued_sequence_number, seq, p.is_empty),
                checkpoint,
                last_enqueued: p.last_enqueued_sequence_number,
            });
        }
        client.close().await;
        match t.output {
            Output::Json => {
                let partitions: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        json!({
                            "partition_id": r.partition_id,
                            "owner_id": r.owner.as_ref().map(|o| o.owner_id.clone()),
                            "owner_last_modified": r.owner.as_ref().and_then(|o| o.last_modified).map(|t| format_millis(millis(t))),
                            "checkpoint_sequence_number": r.checkpoint.as_ref().and_then(|c| c.sequence_number),
                            "checkpoint_offset": r.checkpoint.as_ref().and_then(|c| c.offset.clone()),
                            "last_enqueued_sequence_number": r.last_enqueued,
                            "lag": r.lag,
                        })
                    })
                    .collect();
                let v = json!({
                    "namespace": namespace,
                    "hub": hub.name,
                    "consumer_group": a.consumer_group,
                    "partitions": partitions,
                    "total_lag": rows.iter().map(|r| r.lag).sum::<i64>(),
                });
                println!("{v}");
            }
            Output::Text => {
                println!("namespace {namespace}, hub {}, consumer group {}", hub.name, a.consumer_group);
                println!(
                    "{:>9}  {:<38}  {:<24}  {:>14}  {:>14}  {:>10}",
                    "partition", "owner", "owner renewed", "checkpoint seq", "last seq", "lag"
                );
                for r in &rows {
                    let owner = match &r.owner {
                        None => "-".to_owned(),
                        Some(o) if o.owner_id.is_empty() => "(released)".to_owned(),
                        Some(o) => o.owner_id.clone(),
                    };
                    let renewed = r
                        .owner
                        .as_ref()
                        .and_then(|o| o.last_modified)
                        .map_or_else(|| "-".to_owned(), |t| format_millis(millis(t)));
                    let cp = r
                        .checkpoint
                        .as_ref()
                        .and_then(|c| c.sequence_number)
                        .map_or_else(|| "-".to_owned(), |s| s.to_string());
                    println!(
                        "{:>9}  {:<38}  {:<24}  {:>14}  {:>14}  {:>10}",
                        r.partition_id, owner, renewed, cp, r.last_enqueued, r.lag
                    );
                }
                println!("total lag: {}", rows.iter().map(|r| r.lag).sum::<i64>());
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::lag;

    #[test]
    fn lag_follows_the_keda_rules() {
        assert_eq!(lag(0, -1, None, true), 0, "empty partition");
        assert_eq!(lag(0, 9, None, false), 10, "no checkpoint: everything retained");
        assert_eq!(lag(5, 9, None, false), 5);
        assert_eq!(lag(0, 9, Some(9), false), 0);
        assert_eq!(lag(0, 9, Some(4), false), 5);
        assert_eq!(lag(0, 9, Some(12), false), 0, "a checkpoint ahead of the log is no negative lag");
    }
}
