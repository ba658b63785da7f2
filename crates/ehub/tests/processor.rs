//! Event processors over TCP against a real in-process broker, sharing an in-memory store.

mod common;

use common::{start, T};
use ehub::processor::{EventProcessor, EventProcessorOptions};
use ehub::{
    CheckpointStore, ConsumerClient, ErrorKind, EventData, EventPosition, InMemoryCheckpointStore,
    LoadBalancingStrategy, ProducerClient, SendEventOptions,
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
