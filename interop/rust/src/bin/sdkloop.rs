//! The official Rust SDK opening one connection after another against `ehub serve`: fills
//! partition 0 with our producer, then reads it back with a fresh SDK consumer each round, and
//! stops at the first failure. Each connection authorises on a throwaway `$cbs` session, so this
//! is the loop that exposed fe2o3-amqp's detach race (see the test
//! `official_rust_sdk_survives_many_connections_in_a_row`).
//!
//! `cargo run --release --bin sdkloop -- [events] [rounds] [prefetch]` from `interop/rust`
//! (defaults: 1000000 10 3000); `EHUB_COMPARE_LOG=<filter>` logs the SDK, `EHUB_BIN` picks the
//! broker binary. The race shows more often with fe2o3's tracing compiled in: add
//! `fe2o3-amqp = { version = "=0.16.2", features = ["tracing"] }` to `Cargo.toml` for a run.

use ehub_interop_rust::{
    emulator_connection_string, install_crypto_provider, log_to_stderr_from, sdk_consumer, sdk_from_earliest, Broker,
};
use futures::StreamExt;
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    install_crypto_provider();
    log_to_stderr_from("EHUB_COMPARE_LOG");
    let args: Vec<String> = std::env::args().collect();
    let events: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let rounds: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(10);
    let prefetch: u32 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(3000);
    let broker = Broker::start("never");
    let port = broker.port;
    let producer =
        ehub::ProducerClient::from_connection_string(&emulator_connection_string(port), Some("eh1")).await.unwrap();
    let body = bytes::Bytes::from(vec![b'x'; 100]);
    for _ in 0..events / 100 {
        let opts = ehub::EventDataBatchOptions { partition_id: Some("0".into()), ..Default::default() };
        let mut batch = producer.create_batch(Some(opts)).await.unwrap();
        for _ in 0..100 {
            assert!(batch.try_add(&ehub::EventData::new(body.clone())).unwrap());
        }
        producer.send_batch(&batch).await.unwrap();
    }
    eprintln!("filled");
    for r in 0..rounds {
        let consumer = sdk_consumer(port).await;
        let opts = sdk_from_earliest(Some(prefetch), None);
        let start = Instant::now();
        let rx = consumer.open_receiver_on_partition("0".to_string(), Some(opts)).await.unwrap();
        let mut stream = Box::pin(rx.stream_events());
        for i in 0..events {
            match stream.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    eprintln!("round {r}: failed after {i} events at {:?}: {e:?}", start.elapsed());
                    std::process::exit(1);
                }
                None => {
                    eprintln!("round {r}: stream ended after {i} events");
                    std::process::exit(1);
                }
            }
        }
        eprintln!("round {r}: {:.0}/s", events as f64 / start.elapsed().as_secs_f64());
    }
}
