//! Blocking send and receive: no async runtime in sight.
//!
//! `cargo run -p ehub --example blocking` against `ehub serve`.

use ehub::blocking::{ConsumerClient, ProducerClient};
use ehub::{EventPosition, OpenReceiverOptions, SendEventOptions};
use std::time::Duration;

const EMULATOR: &str = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";

fn main() -> ehub::Result<()> {
    let cs = std::env::var("EVENTHUB_CONNECTION_STRING").unwrap_or_else(|_| EMULATOR.into());
    let producer = ProducerClient::from_connection_string(&cs, Some("eh1"))?;
    let to_one = SendEventOptions { partition_id: Some("1".into()), ..Default::default() };
    producer.send_event("hello from a plain thread", Some(to_one))?;

    let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None)?;
    let options = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
    let mut receiver = consumer.open_receiver_on_partition("1", Some(options))?;
    for e in receiver.receive_batch(10, Duration::from_secs(5))? {
        println!("#{}: {:?}", e.sequence_number(), e.body_as_str());
    }
    producer.close();
    consumer.close();
    Ok(())
}
