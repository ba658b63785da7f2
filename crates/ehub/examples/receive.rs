//! Reads partition 0 from the beginning as a stream, until 5 s pass without an event.
//!
//! `cargo run -p ehub --example receive` against `ehub serve`.

use ehub::{ConsumerClient, EventPosition, OpenReceiverOptions};
use std::time::Duration;

const EMULATOR: &str = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

#[tokio::main]
async fn main() -> ehub::Result<()> {
    let cs = std::env::var("EVENTHUB_CONNECTION_STRING").unwrap_or_else(|_| EMULATOR.into());
    let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await?;
    let options = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
    let mut receiver = consumer.open_receiver_on_partition("0", Some(options)).await?;
    loop {
        let events = receiver.receive_batch(100, Duration::from_secs(5)).await?;
        if events.is_empty() {
            break;
        }
        for e in events {
            println!("#{} offset {} {:?}", e.sequence_number(), e.offset(), e.body_as_str());
        }
    }
    consumer.close().await;
    Ok(())
}
