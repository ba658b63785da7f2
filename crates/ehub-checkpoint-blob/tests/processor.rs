//! An event processor on the Blob store (Azurite) against an in-process broker: a store that
//! cannot work is reported through `process_error`, never a processor that silently reads
//! nothing, and the processor recovers once the store does.

mod support;

use ehub::processor::{EventHandler, EventProcessor, EventProcessorOptions, PartitionContext};
use ehub::{ConsumerClient, ErrorKind, EventPosition, ProducerClient, ReceivedEventData, SendEventOptions};
use ehub_broker::{serve_listeners, Broker, CoreConfig, Listener, Protocol};
use ehub_checkpoint_blob::BlobCheckpointStore;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::azurite::Azurite;

const T: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Seen {
    events: usize,
    errors: Vec<(Option<String>, ErrorKind, String)>,
}

struct Handler(Arc<Mutex<Seen>>);

#[async_trait::async_trait]
impl EventHandler for Handler {
    async fn process_events(&self, events: Vec<ReceivedEventData>, ctx: &PartitionContext) -> ehub::Result<()> {
        self.0.lock().unwrap().events += events.len();
        match events.last() {
            Some(e) => ctx.update_checkpoint(e).await,
            None => Ok(()),
        }
    }
    async fn process_error(&self, error: ehub::Error, ctx: Option<&PartitionContext>) {
        let partition = ctx.map(|c| c.partition_id().to_owned());
        self.0.lock().unwrap().errors.push((partition, error.kind(), error.to_string()));
    }
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_container_and_a_refused_key_reach_process_error_and_the_processor_recovers() {
    let azurite = Azurite::start();
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(CoreConfig { data_dir: dir.path().to_owned(), ..Default::default() }).unwrap();
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        let served = tokio::spawn(async move {
            serve_listeners(broker, vec![Listener { socket, protocol: Protocol::Amqp }], s).await.unwrap()
        });
        let cs = format!(
            "Endpoint=sb://{addr};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
        );
        let producer = ProducerClient::from_connection_string(&cs, Some("eh1")).await.unwrap();
        for p in 0..4 {
            let opts = SendEventOptions { partition_id: Some(p.to_string()), ..Default::default() };
            producer.send_events((0..5).map(|i| ehub::EventData::from(format!("e{i}"))).collect::<Vec<_>>(), Some(opts)).await.unwrap();
        }
        let options = || EventProcessorOptions {
            load_balancing_interval: Duration::from_millis(200),
            ownership_expiry: Duration::from_secs(2),
            default_start_position: EventPosition::Earliest,
            ..Default::default()
        };

        // A refused key: every cycle fails with an authentication error, reported without a partition.
        let wrong = azurite.connection_string().replace(ehub_storage_auth::DEV_ACCOUNT_KEY, "d3Jvbmcga2V5");
        let store = Arc::new(BlobCheckpointStore::from_connection_string(&wrong, "ckpt").unwrap());
        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let processor = EventProcessor::new(consumer, store, Some(options())).unwrap();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (p, h) = (processor.clone(), Arc::new(Handler(seen.clone())));
        let run = tokio::spawn(async move { p.run_with_handler(h).await });
        eventually("a 403 reported", || {
            seen.lock().unwrap().errors.iter().any(|(p, k, m)| p.is_none() && *k == ErrorKind::Authentication && m.contains("403"))
        })
        .await;
        processor.shutdown();
        run.await.unwrap().unwrap();
        assert_eq!(seen.lock().unwrap().events, 0);

        // A missing container: reported as not found, cycle after cycle, until it is created;
        // then the same processor claims every partition and reads.
        let store = Arc::new(BlobCheckpointStore::from_connection_string(&azurite.connection_string(), "ckpt").unwrap());
        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let processor = EventProcessor::new(consumer, store.clone(), Some(options())).unwrap();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (p, h) = (processor.clone(), Arc::new(Handler(seen.clone())));
        let run = tokio::spawn(async move { p.run_with_handler(h).await });
        eventually("two not-found reports", || {
            let s = seen.lock().unwrap();
            s.errors.iter().filter(|(p, k, m)| p.is_none() && *k == ErrorKind::ResourceNotFound && m.contains("ContainerNotFound")).count() >= 2
        })
        .await;
        store.create_container_if_missing().await.unwrap();
        eventually("every event read once the container exists", || seen.lock().unwrap().events == 20).await;
        processor.shutdown();
        run.await.unwrap().unwrap();
        producer.close().await;
        stop.cancel();
        served.await.unwrap();
    })
    .await
    .unwrap();
}
