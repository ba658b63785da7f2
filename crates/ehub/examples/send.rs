//! Sends a single event, an event by partition key, and a full batch.
//!
//! `cargo run -p ehub --example send` against `ehub serve`.

use ehub::{EventData, EventDataBatchOptions, ProducerClient, SendEventOptions};

const EMULATOR: &str = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

#[tokio::main]
async fn main() -> ehub::Result<()> {
    let cs = std::env::var("EVENTHUB_CONNECTION_STRING").unwrap_or_else(|_| EMULATOR.into());
    let producer = ProducerClient::from_connection_string(&cs, Some("eh1")).await?;

    let to_zero = SendEventOptions { partition_id: Some("0".into()), ..Default::default() };
    producer.send_event(EventData::from("single event").with_property("source", "example"), Some(to_zero)).await?;

    let by_key = SendEventOptions { partition_key: Some("device-42".into()), ..Default::default() };
    producer.send_event("keyed event", Some(by_key)).await?;

    // Fill a batch until the next event would not fit, then send it as one message.
    let mut batch = producer.create_batch(Some(EventDataBatchOptions::default())).await?;
    let mut n = 0;
    while n < 1000 && batch.try_add(&EventData::from(format!("batched event {n}")))? {
        n += 1;
    }
    producer.send_batch(&batch).await?;
    println!("sent 2 events and a batch of {n} ({} bytes)", batch.size_in_bytes());
    producer.close().await;
    Ok(())
}
