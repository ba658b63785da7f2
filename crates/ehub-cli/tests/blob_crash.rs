//! kill -9 of `ehub serve` during a storm of ownership claims and checkpoint updates on its
//! Blob endpoint, interleaved with sends: after a restart every answered Blob write is there,
//! and no checkpoint points past the partition's log (events and checkpoints agree).

use ehub::checkpoint::{Checkpoint, CheckpointStore, Ownership};
use ehub::{EventData, ProducerClient, SendEventOptions};
use ehub_checkpoint_blob::BlobCheckpointStore;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NS: &str = "localhost";
const HUB: &str = "eh1";
const GROUP: &str = "$Default";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A broker process, killed when dropped (so a failing test leaves none behind).
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path, amqp: u16, blob: u16) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ehub"))
        .args(["serve", "--listen", &format!("127.0.0.1:{amqp}"), "--listen-blob", &format!("127.0.0.1:{blob}")])
        .args(["--listen-management", "off", "--listen-kafka", "off"])
        .arg("--data-dir")
        .arg(dir)
        .args(["--fsync", "always"])
        .env("EHUB_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("ehub serve exited before listening").unwrap();
        if line.contains("ehub broker listening") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Broker(child)
}

/// What a partition's writer had answered, and what it had in flight, at the kill.
#[derive(Debug, Default, Clone)]
struct Answered {
    checkpoint: Option<i64>,
    checkpoint_in_flight: Option<i64>,
    owner: Option<(String, String)>,
    owner_in_flight: Option<String>,
}

#[test]
fn answered_blob_writes_survive_kill_9_and_no_checkpoint_passes_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (amqp, blob) = (free_port(), free_port());
    let cs = format!(
        "Endpoint=sb://localhost:{amqp};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
    );
    let storage = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;",
        ehub_storage_auth::DEV_ACCOUNT_KEY
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let broker = start(dir.path(), amqp, blob);
    let state: Arc<Mutex<HashMap<String, Answered>>> = Arc::default();

    let storm = rt.block_on(async {
        let producer = Arc::new(ProducerClient::from_connection_string(&cs, Some(HUB)).await.unwrap());
        let store = Arc::new(BlobCheckpointStore::from_connection_string(&storage, "checkpoints").unwrap());
        let mut tasks = Vec::new();
        for p in 0..4 {
            let (producer, store, state) = (Arc::clone(&producer), Arc::clone(&store), Arc::clone(&state));
            tasks.push(tokio::spawn(async move {
                let pid = p.to_string();
                let mut etag = None;
                for i in 0u64.. {
                    let opts = SendEventOptions { partition_id: Some(pid.clone()), partition_key: None };
                    producer.send_event(EventData::from(format!("event {i}")), Some(opts)).await?;
                    let props = producer.get_partition_properties(&pid).await?;
                    let seq = props.last_enqueued_sequence_number;
                    state.lock().unwrap().entry(pid.clone()).or_default().checkpoint_in_flight = Some(seq);
                    let cp = Checkpoint {
                        namespace: NS.into(),
                        event_hub: HUB.into(),
                        consumer_group: GROUP.into(),
                        partition_id: pid.clone(),
                        offset: Some(props.last_enqueued_offset.clone()),
                        sequence_number: Some(seq),
                    };
                    store.update_checkpoint(&cp).await?;
                    state.lock().unwrap().get_mut(&pid).unwrap().checkpoint = Some(seq);
                    let owner = format!("owner-{p}-{i}");
                    state.lock().unwrap().get_mut(&pid).unwrap().owner_in_flight = Some(owner.clone());
                    let claim = Ownership {
                        namespace: NS.into(),
                        event_hub: HUB.into(),
                        consumer_group: GROUP.into(),
                        partition_id: pid.clone(),
                        owner_id: owner.clone(),
                        etag: etag.clone(),
                        last_modified: None,
                    };
                    let won = store.claim_ownerships(&[claim]).await?;
                    assert_eq!(won.len(), 1, "the only claimant of partition {pid} lost a claim");
                    etag = won[0].etag.clone();
                    state.lock().unwrap().get_mut(&pid).unwrap().owner = Some((owner, etag.clone().unwrap()));
                }
                Ok::<(), ehub::Error>(())
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut running = Vec::new();
        for t in tasks {
            if t.is_finished() {
                panic!("a storm task ended early: {:?}", t.await);
            }
            running.push(t);
        }
        running
    });
    drop(broker); // kill -9
    let at_kill = state.lock().unwrap().clone();
    rt.block_on(async {
        for t in storm {
            t.abort();
            if let Ok(r) = t.await {
                panic!("a storm task ended before the kill: {r:?}");
            }
        }
    });
    let writes: i64 = at_kill.values().filter_map(|a| a.checkpoint).map(|s| s + 1).sum();
    assert!(writes > 40, "the storm answered too few writes to mean anything: {at_kill:?}");
    eprintln!("at kill -9: {writes} events sent and checkpointed across 4 partitions");

    let _broker = start(dir.path(), amqp, blob);
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), async {
            let producer = ProducerClient::from_connection_string(&cs, Some(HUB)).await.unwrap();
            let store = BlobCheckpointStore::from_connection_string(&storage, "checkpoints").unwrap();
            let checkpoints = store.list_checkpoints(NS, HUB, GROUP).await.unwrap();
            let ownerships = store.list_ownerships(NS, HUB, GROUP).await.unwrap();
            for (pid, a) in &at_kill {
                let last = producer.get_partition_properties(pid).await.unwrap().last_enqueued_sequence_number;
                let cp = checkpoints.iter().find(|c| &c.partition_id == pid).and_then(|c| c.sequence_number);
                if let Some(answered) = a.checkpoint {
                    let cp = cp.unwrap_or_else(|| panic!("partition {pid}: answered checkpoint {answered} lost"));
                    assert!(cp >= answered, "partition {pid}: answered checkpoint {answered}, found {cp}");
                    assert!(
                        Some(cp) == a.checkpoint || Some(cp) == a.checkpoint_in_flight,
                        "partition {pid}: checkpoint {cp} was never written ({a:?})"
                    );
                }
                if let Some(cp) = cp {
                    assert!(cp <= last, "partition {pid}: checkpoint {cp} points past the log's last event {last}");
                }
                if let Some((owner, etag)) = &a.owner {
                    let o = ownerships.iter().find(|o| &o.partition_id == pid).expect("answered claim lost");
                    if &o.owner_id == owner {
                        assert_eq!(o.etag.as_ref(), Some(etag), "partition {pid}: the answered claim's ETag changed");
                    } else {
                        assert_eq!(
                            Some(&o.owner_id),
                            a.owner_in_flight.as_ref(),
                            "partition {pid}: owner {} is neither the answered nor the in-flight claim",
                            o.owner_id
                        );
                    }
                }
            }
        })
        .await
        .expect("verification timed out");
    });
}
