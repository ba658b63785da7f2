//! Prints a hub's properties and each partition's state.
//!
//! `cargo run -p ehub --example inspect_hub` against `ehub serve` on 127.0.0.1:5672, or set
//! `EVENTHUB_CONNECTION_STRING` and `EVENTHUB_NAME`.

use ehub::ProducerClient;

const EMULATOR: &str = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

#[tokio::main]
async fn main() -> ehub::Result<()> {
    let cs = std::env::var("EVENTHUB_CONNECTION_STRING").unwrap_or_else(|_| EMULATOR.into());
    let hub = std::env::var("EVENTHUB_NAME").unwrap_or_else(|_| "eh1".into());
    let client = ProducerClient::from_connection_string(&cs, Some(&hub)).await?;
    let props = client.get_eventhub_properties().await?;
    println!("hub {} created {:?}, partitions {:?}", props.name, props.created_at, props.partition_ids);
    for id in &props.partition_ids {
        let p = client.get_partition_properties(id).await?;
        println!(
            "partition {id}: sequence numbers {}..={}, last offset {}, empty {}",
            p.beginning_sequence_number, p.last_enqueued_sequence_number, p.last_enqueued_offset, p.is_empty
        );
    }
    client.close().await;
    Ok(())
}
