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

/// The blocking processor: a plain handler gets every partition's events and checkpoints them;
/// another thread stops it, and each partition closes with Shutdown.
#[test]
fn blocking_processor_runs_a_plain_handler_until_another_thread_stops_it() {
    use ehub::blocking::{EventHandler, EventProcessor, PartitionContext};
    use ehub::processor::{CloseReason, EventProcessorOptions};
    use ehub::{CheckpointStore, InMemoryCheckpointStore, ReceivedEventData};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Count {
        events: Mutex<usize>,
        closed: Mutex<Vec<CloseReason>>,
    }
    impl EventHandler for Count {
        fn process_events(&self, events: Vec<ReceivedEventData>, ctx: &PartitionContext) -> ehub::Result<()> {
            *self.events.lock().unwrap() += events.len();
            events.last().map_or(Ok(()), |e| ctx.update_checkpoint(e))
        }
        fn close(&self, _ctx: &PartitionContext, reason: CloseReason) {
            self.closed.lock().unwrap().push(reason);
        }
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = rt.block_on(common::start());
    let cs = f.broker.connection_string();
    let ns = format!("127.0.0.1:{}", f.broker.addr.port());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let producer = ProducerClient::from_connection_string(&cs, Some("eh1")).unwrap();
        for p in 0..4 {
            let to = Some(SendEventOptions { partition_id: Some(p.to_string()), ..Default::default() });
            producer.send_events((0..10).map(|i| EventData::from(format!("e{i}"))).collect::<Vec<_>>(), to).unwrap();
        }
        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).unwrap();
        let store = Arc::new(InMemoryCheckpointStore::new());
        let options = EventProcessorOptions {
            load_balancing_interval: Duration::from_millis(200),
            ownership_expiry: Duration::from_secs(2),
            default_start_position: EventPosition::Earliest,
            ..Default::default()
        };
        let processor = EventProcessor::new(&consumer, store.clone(), Some(options)).unwrap();
        let handler = Arc::new(Count::default());
        let stopper = {
            let (p, h) = (processor.clone(), handler.clone());
            std::thread::spawn(move || {
                while *h.events.lock().unwrap() < 40 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                p.shutdown();
            })
        };
        processor.run(handler.clone()).unwrap();
        stopper.join().unwrap();
        assert_eq!(*handler.events.lock().unwrap(), 40);
        assert_eq!(*handler.closed.lock().unwrap(), vec![CloseReason::Shutdown; 4]);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let cps = rt.block_on(store.list_checkpoints(&ns, "eh1", "$default")).unwrap();
        assert!(cps.len() == 4 && cps.iter().all(|c| c.sequence_number == Some(9)), "{cps:?}");
        producer.close();
        consumer.close();
        done_tx.send(()).unwrap();
    });
    done_rx.recv_timeout(common::T).expect("the blocking scenario timed out");
    worker.join().unwrap();
    rt.block_on(f.broker.stop());
}

/// The blocking buffered producer: enqueue from a plain thread, close with a flush, every event
/// reported as sent.
#[test]
fn blocking_buffered_producer_reports_every_event() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let f = rt.block_on(common::start());
    let cs = f.broker.connection_string();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (o, e) = (ok.clone(), failed.clone());
        let producer = ehub::blocking::BufferedProducerClient::from_connection_string(
            &cs,
            Some("eh1"),
            move |events, _| {
                o.fetch_add(events.len(), Ordering::SeqCst);
            },
            move |events, _, _| {
                e.fetch_add(events.len(), Ordering::SeqCst);
            },
            None,
        )
        .unwrap();
        for i in 0..1000 {
            producer.enqueue_event(format!("e{i}"), None).unwrap();
        }
        producer.flush(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(ok.load(Ordering::SeqCst), 1000);
        producer.close(true, None).unwrap();
        assert_eq!(failed.load(Ordering::SeqCst), 0);
        assert_eq!(producer.total_buffered_event_count(), 0);
        done_tx.send(()).unwrap();
    });
    done_rx.recv_timeout(common::T).expect("the blocking scenario timed out");
    worker.join().unwrap();
    rt.block_on(f.broker.stop());
}
