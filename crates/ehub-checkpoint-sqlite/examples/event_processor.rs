//! The seed's `event_processor_example.py`, in Rust: a partition processor per claimed
//! partition (made by a factory), checkpoints in SQLite, load balancing with every other
//! processor on the same hub, consumer group and database file. Run several at once and watch
//! them share the partitions; stop one (Ctrl-C) and the others take its partitions over.
//!
//! ```sh
//! ehub serve &                                    # a local broker with hub eh1
//! cargo run -p ehub-checkpoint-sqlite --example event_processor -- checkpoints.db
//! ```
//! `EVENTHUB_CONNECTION_STRING` and `EVENTHUB_NAME` point it elsewhere.

use ehub::processor::{EventProcessor, EventProcessorOptions, PartitionContext, PartitionProcessor};
use ehub::{ConsumerClient, EventPosition, ReceivedEventData};
use ehub_checkpoint_sqlite::SqliteCheckpointStore;
use std::sync::Arc;
use std::time::Duration;

const LOCAL: &str = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;\
                     SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

/// One per partition: counts what it processed, checkpoints after every batch.
struct MyPartitionProcessor {
    processed: u64,
}

#[async_trait::async_trait]
impl PartitionProcessor for MyPartitionProcessor {
    async fn initialize(&mut self, ctx: &PartitionContext) -> ehub::Result<()> {
        println!("partition {}: claimed", ctx.partition_id());
        Ok(())
    }

    async fn process_events(&mut self, events: Vec<ReceivedEventData>, ctx: &PartitionContext) -> ehub::Result<()> {
        let Some(last) = events.last() else { return Ok(()) };
        // Do the work for every event here, then record how far the partition got.
        self.processed += events.len() as u64;
        ctx.update_checkpoint(last).await?;
        println!("partition {}: {} events, up to #{}", ctx.partition_id(), self.processed, last.sequence_number());
        Ok(())
    }

    async fn close(&mut self, ctx: &PartitionContext, reason: ehub::processor::CloseReason) {
        println!("partition {}: closed ({reason:?}) after {} events", ctx.partition_id(), self.processed);
    }

    async fn process_error(&mut self, error: ehub::Error, ctx: &PartitionContext) {
        eprintln!("partition {}: {error}", ctx.partition_id());
    }
}

#[tokio::main]
async fn main() -> ehub::Result<()> {
    let db = std::env::args().nth(1).unwrap_or_else(|| "checkpoints.db".into());
    let cs = std::env::var("EVENTHUB_CONNECTION_STRING").unwrap_or_else(|_| LOCAL.into());
    let hub = std::env::var("EVENTHUB_NAME").unwrap_or_else(|_| "eh1".into());

    let consumer = ConsumerClient::from_connection_string(&cs, Some(&hub), None).await?;
    let store = Arc::new(SqliteCheckpointStore::open(&db).await?);
    let options = EventProcessorOptions {
        load_balancing_interval: Duration::from_secs(1),
        ownership_expiry: Duration::from_secs(10),
        default_start_position: EventPosition::Earliest,
        ..Default::default()
    };
    let processor = EventProcessor::new(consumer.clone(), store, Some(options))?;
    let stopper = processor.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stopper.shutdown();
    });
    processor.run_with_factory(|_ctx| MyPartitionProcessor { processed: 0 }).await?;
    consumer.close().await;
    Ok(())
}
