//! The blocking clients, driven from plain threads against a broker on its own runtime.

mod common;

use ehub::blocking::{ConsumerClient, ProducerClient};
use ehub::{EventData, EventPosition, OpenReceiverOptions, SendEventOptions};
use std::time::Duration;

#[test]
fn blocking_send_and_receive() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = rt.block_on(common::start());
    let cs = f.broker.connection_string();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let producer = ProducerClient::from_connection_string(&cs, Some("eh1")).unwrap();
        assert_eq!(producer.get_partition_ids().unwrap().len(), 4);
        let to1 = Some(SendEventOptions { partition_id: Some("1".into()), ..Default::default() });
        producer.send_event("one", to1.clone()).unwrap();
        let mut batch = producer
            .create_batch(Some(ehub::EventDataBatchOptions { partition_id: Some("1".into()), ..Default::default() }))
            .unwrap();
        assert!(batch.try_add(&EventData::from("two")).unwrap());
        producer.send_batch(&batch).unwrap();
        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).unwrap();
        let opts = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
        let mut r = consumer.open_receiver_on_partition("1", Some(opts)).unwrap();
        let mut bodies = Vec::new();
        while bodies.len() < 2 {
            for e in r.receive_batch(10, Duration::from_secs(5)).unwrap() {
                bodies.push(e.body_as_str().unwrap().to_owned());
            }
        }
        assert_eq!(bodies, ["one", "two"]);
        producer.close();
        consumer.close();
        done_tx.send(()).unwrap();
    });
    done_rx.recv_timeout(common::T).expect("the blocking scenario timed out");
    worker.join().unwrap();
    rt.block_on(f.broker.stop());
}
