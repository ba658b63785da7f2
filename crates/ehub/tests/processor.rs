//! Event processors over TCP against a real in-process broker, sharing an in-memory store.

mod common;

use common::{start, T};
use ehub::processor::{
    CloseReason, EventHandler, EventProcessor, EventProcessorOptions, PartitionContext, PartitionProcessor,
};
use ehub::{
    CheckpointStore, ConsumerClient, ErrorKind, EventData, EventPosition, InMemoryCheckpointStore,
    LoadBalancingStrategy, ProducerClient, ReceivedEventData, SendEventOptions,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Seen = Arc<Mutex<Vec<(String, i64, String)>>>;

fn options(owner: &str, strategy: LoadBalancingStrategy) -> EventProcessorOptions {
    EventProcessorOptions {
        strategy,
        load_balancing_interval: Duration::from_millis(200),
        ownership_expiry: Duration::from_millis(1500),
        default_start_position: EventPosition::Earliest,
        owner_id: Some(owner.into()),
        ..Default::default()
    }
}

/// Starts a processor and a task that reads every partition it is handed, recording each event
/// as (partition, sequence number, owner) and checkpointing after each batch.
async fn spawn_processor(
    cs: &str,
    store: Arc<dyn CheckpointStore>,
    owner: &str,
    strategy: LoadBalancingStrategy,
    seen: Seen,
) -> (EventProcessor, tokio::task::JoinHandle<ehub::Result<()>>) {
    let consumer = ConsumerClient::from_connection_string(cs, Some("eh1"), None).await.unwrap();
    let processor = EventProcessor::new(consumer, store, Some(options(owner, strategy))).unwrap();
    let run = {
        let p = processor.clone();
        tokio::spawn(async move { p.run().await })
    };
    let p = processor.clone();
    let owner = owner.to_owned();
    tokio::spawn(async move {
        while let Some(mut partition) = p.next_partition_client().await {
            let (seen, owner) = (seen.clone(), owner.clone());
            tokio::spawn(async move {
                loop {
                    match partition.receive_batch(50, Duration::from_millis(200)).await {
                        Ok(events) => {
                            if let Some(last) = events.last() {
                                {
                                    let mut s = seen.lock().unwrap();
                                    for e in &events {
                                        s.push((
                                            partition.partition_id().to_owned(),
                                            e.sequence_number(),
                                            owner.clone(),
                                        ));
                                    }
                                }
                                partition.update_checkpoint(last).await.unwrap();
                            }
                        }
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::ConsumerDisconnected, "{e}");
                            break;
                        }
                    }
                }
                partition.close().await;
            });
        }
    });
    (processor, run)
}

async fn send_to_every_partition(cs: &str, per_partition: usize) {
    let producer = ProducerClient::from_connection_string(cs, Some("eh1")).await.unwrap();
    for p in 0..4 {
        let events: Vec<EventData> = (0..per_partition).map(|i| EventData::from(format!("e{i}"))).collect();
        producer
            .send_events(events, Some(SendEventOptions { partition_id: Some(p.to_string()), ..Default::default() }))
            .await
            .unwrap();
    }
    producer.close().await;
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every (partition, sequence number) below `per_partition` seen at least once; returns how many
/// were seen more than once.
fn check_all_seen(seen: &Seen, per_partition: i64) -> usize {
    let s = seen.lock().unwrap();
    let mut counts: HashMap<(String, i64), usize> = HashMap::new();
    for (p, seq, _) in s.iter() {
        *counts.entry((p.clone(), *seq)).or_default() += 1;
    }
    for p in 0..4 {
        for seq in 0..per_partition {
            assert!(counts.contains_key(&(p.to_string(), seq)), "partition {p} event {seq} was never processed");
        }
    }
    counts.values().filter(|&&c| c > 1).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_split_the_partitions_and_a_graceful_stop_hands_over_from_the_checkpoints() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        send_to_every_partition(&cs, 100).await;
        let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
        let seen: Seen = Arc::default();
        let (a, run_a) = spawn_processor(&cs, store.clone(), "a", LoadBalancingStrategy::Balanced, seen.clone()).await;
        let (b, run_b) = spawn_processor(&cs, store.clone(), "b", LoadBalancingStrategy::Balanced, seen.clone()).await;
        eventually("a 2/2 split", || a.owned_partitions().len() == 2 && b.owned_partitions().len() == 2).await;
        eventually("every event processed", || seen.lock().unwrap().len() >= 400).await;
        assert_eq!(check_all_seen(&seen, 100), 0, "no event is processed twice while ownership is stable");
        let ns = format!("127.0.0.1:{}", f.broker.addr.port());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let cps = store.list_checkpoints(&ns, "eh1", "$default").await.unwrap();
            if cps.len() == 4 && cps.iter().all(|c| c.sequence_number == Some(99)) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "checkpoints did not reach 99: {cps:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A graceful stop releases a's partitions: b takes them within a cycle or two, long before
        // the ownership would have expired, and resumes after a's checkpoints.
        let stopped = tokio::time::Instant::now();
        a.shutdown();
        run_a.await.unwrap().unwrap();
        let listed = store.list_ownerships(&ns, "eh1", "$default").await.unwrap();
        assert_eq!(listed.iter().filter(|o| o.owner_id == "a").count(), 0, "a released everything: {listed:?}");
        eventually("b holds all 4", || b.owned_partitions().len() == 4).await;
        assert!(stopped.elapsed() < Duration::from_millis(1500), "handed over after {:?}", stopped.elapsed());
        send_to_every_partition(&cs, 100).await;
        eventually("the second round processed", || {
            let s = seen.lock().unwrap();
            (0..4).all(|p| s.iter().any(|(pp, seq, o)| *pp == p.to_string() && *seq == 199 && o == "b"))
        })
        .await;
        let twice = check_all_seen(&seen, 200);
        assert_eq!(twice, 0, "b resumed after a's checkpoints, which a wrote before releasing");
        b.shutdown();
        run_b.await.unwrap().unwrap();
        let listed = store.list_ownerships(&ns, "eh1", "$default").await.unwrap();
        assert!(listed.iter().all(|o| o.is_released()), "{listed:?}");
        let checkpoints = store.list_checkpoints(&ns, "eh1", "$default").await.unwrap();
        assert_eq!(checkpoints.len(), 4);
        assert!(checkpoints.iter().all(|c| c.sequence_number == Some(199)), "{checkpoints:?}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_takes_its_share_and_the_old_owners_clients_end_as_disconnected() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        send_to_every_partition(&cs, 50).await;
        let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
        let seen: Seen = Arc::default();
        let (a, run_a) = spawn_processor(&cs, store.clone(), "a", LoadBalancingStrategy::Greedy, seen.clone()).await;
        eventually("a holds all 4", || a.owned_partitions().len() == 4).await;
        eventually("a processed everything", || seen.lock().unwrap().len() >= 200).await;
        let (b, run_b) = spawn_processor(&cs, store.clone(), "b", LoadBalancingStrategy::Balanced, seen.clone()).await;
        eventually("a 2/2 split after steals", || a.owned_partitions().len() == 2 && b.owned_partitions().len() == 2)
            .await;
        send_to_every_partition(&cs, 50).await;
        eventually("the second round processed", || check_all_seen_quietly(&seen, 100)).await;
        // Events after the steals went to the partitions' new owners only.
        let s = seen.lock().unwrap().clone();
        let b_parts = b.owned_partitions();
        for (p, seq, owner) in &s {
            if *seq >= 50 && b_parts.contains(p) {
                assert_eq!(owner, "b", "partition {p} event {seq} went to {owner} after b took it");
            }
        }
        for p in [&a, &b] {
            p.shutdown();
        }
        run_a.await.unwrap().unwrap();
        run_b.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

fn check_all_seen_quietly(seen: &Seen, per_partition: i64) -> bool {
    let s = seen.lock().unwrap();
    (0..4).all(|p| (0..per_partition).all(|seq| s.iter().any(|(pp, q, _)| *pp == p.to_string() && *q == seq)))
}

#[tokio::test]
async fn an_expiry_shorter_than_three_intervals_is_refused() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let consumer =
            ConsumerClient::from_connection_string(&f.broker.connection_string(), Some("eh1"), None).await.unwrap();
        let o = EventProcessorOptions {
            load_balancing_interval: Duration::from_secs(10),
            ownership_expiry: Duration::from_secs(29),
            ..Default::default()
        };
        let err = EventProcessor::new(consumer, Arc::new(InMemoryCheckpointStore::new()), Some(o)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    })
    .await
    .unwrap();
}

/// What a handler saw: events by owner, and the life of each partition.
#[derive(Default)]
struct Log {
    events: Vec<(String, i64, String)>,
    initialized: Vec<(String, String)>,
    closed: Vec<(String, String, CloseReason)>,
    errors: Vec<(Option<String>, ErrorKind)>,
}

struct Recorder {
    owner: String,
    log: Arc<Mutex<Log>>,
}

#[async_trait::async_trait]
impl EventHandler for Recorder {
    async fn initialize(&self, ctx: &PartitionContext) -> ehub::Result<()> {
        self.log.lock().unwrap().initialized.push((ctx.partition_id().into(), self.owner.clone()));
        Ok(())
    }
    async fn process_events(&self, events: Vec<ReceivedEventData>, ctx: &PartitionContext) -> ehub::Result<()> {
        {
            let mut log = self.log.lock().unwrap();
            for e in &events {
                log.events.push((ctx.partition_id().into(), e.sequence_number(), self.owner.clone()));
            }
        }
        match events.last() {
            Some(last) => ctx.update_checkpoint(last).await,
            None => Ok(()),
        }
    }
    async fn close(&self, ctx: &PartitionContext, reason: CloseReason) {
        self.log.lock().unwrap().closed.push((ctx.partition_id().into(), self.owner.clone(), reason));
    }
    async fn process_error(&self, error: ehub::Error, ctx: Option<&PartitionContext>) {
        self.log.lock().unwrap().errors.push((ctx.map(|c| c.partition_id().to_owned()), error.kind()));
    }
}

async fn handler_processor(
    cs: &str,
    store: Arc<dyn CheckpointStore>,
    owner: &str,
    strategy: LoadBalancingStrategy,
    log: Arc<Mutex<Log>>,
) -> (EventProcessor, tokio::task::JoinHandle<ehub::Result<()>>) {
    let consumer = ConsumerClient::from_connection_string(cs, Some("eh1"), None).await.unwrap();
    let processor = EventProcessor::new(consumer, store, Some(options(owner, strategy))).unwrap();
    let p = processor.clone();
    let handler = Arc::new(Recorder { owner: owner.into(), log });
    (processor, tokio::spawn(async move { p.run_with_handler(handler).await }))
}

/// The push shape: a stolen partition reaches its close handler with OwnershipLost, a stop with
/// Shutdown, each after the partition's initialize; the new owner resumes after the checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_initialize_then_close_with_ownership_lost_on_a_steal_and_shutdown_on_a_stop() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        send_to_every_partition(&cs, 50).await;
        let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
        let log: Arc<Mutex<Log>> = Arc::default();
        let (a, run_a) = handler_processor(&cs, store.clone(), "a", LoadBalancingStrategy::Greedy, log.clone()).await;
        eventually("a read everything", || log.lock().unwrap().events.len() >= 200).await;
        let (b, run_b) = handler_processor(&cs, store.clone(), "b", LoadBalancingStrategy::Balanced, log.clone()).await;
        eventually("a 2/2 split", || a.owned_partitions().len() == 2 && b.owned_partitions().len() == 2).await;
        eventually("a's close handlers ran for the stolen partitions", || {
            log.lock().unwrap().closed.iter().filter(|(_, o, r)| o == "a" && *r == CloseReason::OwnershipLost).count()
                == 2
        })
        .await;
        send_to_every_partition(&cs, 50).await;
        eventually("the second round", || {
            let l = log.lock().unwrap();
            (0..4).all(|p| l.events.iter().any(|(pp, s, _)| *pp == p.to_string() && *s == 99))
        })
        .await;
        a.shutdown();
        run_a.await.unwrap().unwrap();
        b.shutdown();
        run_b.await.unwrap().unwrap();

        let l = log.lock().unwrap();
        let stolen: Vec<&String> = l
            .closed
            .iter()
            .filter(|(_, o, r)| o == "a" && *r == CloseReason::OwnershipLost)
            .map(|(p, _, _)| p)
            .collect();
        for p in &stolen {
            assert!(l.initialized.contains(&((*p).clone(), "b".into())), "b initialized partition {p}");
            // b started after a's checkpoints: nothing a had read came to b.
            let a_max = l.events.iter().filter(|(pp, _, o)| pp == *p && o == "a").map(|e| e.1).max().unwrap();
            let b_min = l.events.iter().filter(|(pp, _, o)| pp == *p && o == "b").map(|e| e.1).min().unwrap();
            assert_eq!(b_min, a_max + 1, "partition {p}: b resumed right after a's checkpoint");
        }
        let shutdowns = l.closed.iter().filter(|(_, _, r)| *r == CloseReason::Shutdown).count();
        assert_eq!(shutdowns, 4, "each partition held at the stops closed with Shutdown: {:?}", l.closed);
        assert_eq!(l.initialized.len(), l.closed.len(), "every initialize has its close");
        assert!(l.errors.is_empty(), "{:?}", l.errors);
    })
    .await
    .unwrap();
}

/// A partition whose receiver is taken by a higher owner level reports it, closes with
/// OwnershipLost, and is opened again from its checkpoint once the other receiver is gone:
/// the processor never sits on a partition it no longer reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_stolen_by_an_epoch_reader_is_reported_and_the_partition_is_read_again_after() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        send_to_every_partition(&cs, 10).await;
        let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
        let log: Arc<Mutex<Log>> = Arc::default();
        let (a, run_a) = handler_processor(&cs, store.clone(), "a", LoadBalancingStrategy::Greedy, log.clone()).await;
        eventually("a read everything", || log.lock().unwrap().events.len() >= 40).await;

        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let epoch = ehub::OpenReceiverOptions { owner_level: Some(5), ..Default::default() };
        let thief = consumer.open_receiver_on_partition("1", Some(epoch)).await.unwrap();
        eventually("the steal reported", || {
            let l = log.lock().unwrap();
            l.errors.contains(&(Some("1".into()), ErrorKind::ConsumerDisconnected))
                && l.closed.contains(&("1".into(), "a".into(), CloseReason::OwnershipLost))
        })
        .await;
        thief.close().await;
        consumer.close().await;
        send_to_every_partition(&cs, 10).await;
        eventually("partition 1 read again after the thief left", || {
            log.lock().unwrap().events.iter().any(|(p, s, _)| p == "1" && *s == 19)
        })
        .await;
        let ones: Vec<i64> = log.lock().unwrap().events.iter().filter(|(p, _, _)| p == "1").map(|e| e.1).collect();
        assert_eq!(ones, (0..20).collect::<Vec<_>>(), "resumed from the checkpoint: nothing lost or repeated");
        a.shutdown();
        run_a.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

/// The seed's shape: a factory makes one processor per partition, each with its own state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_factory_makes_one_partition_processor_per_partition() {
    struct Counter {
        partition: String,
        count: usize,
        totals: Arc<Mutex<HashMap<String, usize>>>,
    }
    #[async_trait::async_trait]
    impl PartitionProcessor for Counter {
        async fn process_events(&mut self, events: Vec<ReceivedEventData>, ctx: &PartitionContext) -> ehub::Result<()> {
            assert_eq!(ctx.partition_id(), self.partition);
            self.count += events.len();
            self.totals.lock().unwrap().insert(self.partition.clone(), self.count);
            Ok(())
        }
    }
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        send_to_every_partition(&cs, 25).await;
        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let store = Arc::new(InMemoryCheckpointStore::new());
        let processor =
            EventProcessor::new(consumer, store, Some(options("f", LoadBalancingStrategy::Greedy))).unwrap();
        let totals: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let t = totals.clone();
        let p = processor.clone();
        let run = tokio::spawn(async move {
            p.run_with_factory(move |ctx| Counter { partition: ctx.partition_id().into(), count: 0, totals: t.clone() })
                .await
        });
        eventually("25 events in each partition's own counter", || {
            let t = totals.lock().unwrap();
            t.len() == 4 && t.values().all(|&n| n == 25)
        })
        .await;
        processor.shutdown();
        run.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

/// Partitions won but never taken with `next_partition_client` (a claim just before a stop, as
/// when a CLI reader gives its partition back while stopping and the next cycle claims it
/// again) do not hold the stop back: it releases them at once rather than after the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_with_partitions_never_taken_releases_them_without_waiting() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let store: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
        let processor =
            EventProcessor::new(consumer, store.clone(), Some(options("idle", LoadBalancingStrategy::Greedy))).unwrap();
        let run = {
            let p = processor.clone();
            tokio::spawn(async move { p.run().await })
        };
        eventually("all 4 claimed", || processor.owned_partitions().len() == 4).await;
        processor.shutdown();
        // Well below the 30 s the stop gives clients that were handed out.
        tokio::time::timeout(Duration::from_secs(5), run).await.expect("the stop did not wait").unwrap().unwrap();
        let ns = format!("127.0.0.1:{}", f.broker.addr.port());
        let listed = store.list_ownerships(&ns, "eh1", "$default").await.unwrap();
        assert!(listed.iter().all(|o| o.is_released()), "{listed:?}");
    })
    .await
    .unwrap();
}

/// A store that is down: every call fails as an unreachable Blob service would.
struct Down;

#[async_trait::async_trait]
impl CheckpointStore for Down {
    async fn list_ownerships(&self, _: &str, _: &str, _: &str) -> ehub::Result<Vec<ehub::checkpoint::Ownership>> {
        Err(ehub::Error::new(ErrorKind::Connect, "checkpoint store: nothing answers at 127.0.0.1:1"))
    }
    async fn claim_ownerships(
        &self,
        _: &[ehub::checkpoint::Ownership],
    ) -> ehub::Result<Vec<ehub::checkpoint::Ownership>> {
        Err(ehub::Error::new(ErrorKind::Connect, "down"))
    }
    async fn list_checkpoints(&self, _: &str, _: &str, _: &str) -> ehub::Result<Vec<ehub::checkpoint::Checkpoint>> {
        Err(ehub::Error::new(ErrorKind::Connect, "down"))
    }
    async fn update_checkpoint(&self, _: &ehub::checkpoint::Checkpoint) -> ehub::Result<()> {
        Err(ehub::Error::new(ErrorKind::Connect, "down"))
    }
}

/// The pull shape reports failed cycles too (it has no handler): through `subscribe_errors`,
/// every cycle, while it keeps retrying; a stop still ends `run`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_shape_reports_cycle_failures_through_subscribe_errors() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let consumer =
            ConsumerClient::from_connection_string(&f.broker.connection_string(), Some("eh1"), None).await.unwrap();
        let processor =
            EventProcessor::new(consumer, Arc::new(Down), Some(options("p", LoadBalancingStrategy::Balanced))).unwrap();
        let mut errors = processor.subscribe_errors();
        let p = processor.clone();
        let run = tokio::spawn(async move { p.run().await });
        for _ in 0..2 {
            let e = errors.recv().await.expect("a cycle failure");
            assert_eq!(e.kind(), ErrorKind::Connect);
            assert!(e.to_string().contains("nothing answers"), "{e}");
        }
        assert!(processor.owned_partitions().is_empty());
        processor.shutdown();
        run.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}
