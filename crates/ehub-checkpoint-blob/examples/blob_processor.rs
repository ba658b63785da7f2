//! An event processor with its checkpoints in Azure Blob Storage, in the layout every official
//! SDK shares: run it beside a Python, JavaScript or .NET processor on the same hub, consumer
//! group and container, and they split the partitions between them.
//!
//! Locally, with Azurite (or `ehub serve`'s own Blob endpoint) on 127.0.0.1:10000:
//! ```sh
//! ehub serve &
//! npx azurite-blob --skipApiVersionCheck &
//! cargo run -p ehub-checkpoint-blob --example blob_processor
//! ```
//! `AZURE_STORAGE_CONNECTION_STRING`, `EVENTHUB_CONNECTION_STRING` and `EVENTHUB_NAME` point it
//! at real services. It creates the container `checkpoints` if it is missing.

use ehub::processor::{EventHandler, EventProcessor, PartitionContext};
use ehub::{ConsumerClient, ReceivedEventData};
use ehub_checkpoint_blob::BlobCheckpointStore;
use std::sync::Arc;

const LOCAL: &str = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;\
                     SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

struct Print;

#[async_trait::async_trait]
impl EventHandler for Print {
    async fn process_events(&self, events: Vec<ReceivedEventData>, ctx: &PartitionContext) -> ehub::Result<()> {
        for e in &events {
            println!("partition {} #{}: {:?}", ctx.partition_id(), e.sequence_number(), e.body_as_str());
        }
        match events.last() {
            Some(last) => ctx.update_checkpoint(last).await,
            None => Ok(()),
        }
    }

    async fn process_error(&self, error: ehub::Error, ctx: Option<&PartitionContext>) {
        eprintln!("{}: {error}", ctx.map_or("processor", |c| c.partition_id()));
    }
}

#[tokio::main]
async fn main() -> ehub::Result<()> {
    let storage =
        std::env::var("AZURE_STORAGE_CONNECTION_STRING").unwrap_or_else(|_| "UseDevelopmentStorage=true".into());
    let cs = std::env::var("EVENTHUB_CONNECTION_STRING").unwrap_or_else(|_| LOCAL.into());
    let hub = std::env::var("EVENTHUB_NAME").unwrap_or_else(|_| "eh1".into());

    let store = BlobCheckpointStore::from_connection_string(&storage, "checkpoints")?;
    store.create_container_if_missing().await?;
    let consumer = ConsumerClient::from_connection_string(&cs, Some(&hub), None).await?;
    let processor = EventProcessor::new(consumer.clone(), Arc::new(store), None)?;
    let stopper = processor.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stopper.shutdown();
    });
    processor.run_with_handler(Arc::new(Print)).await?;
    consumer.close().await;
    Ok(())
}
