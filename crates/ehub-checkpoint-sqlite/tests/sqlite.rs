//! The SQLite store: the shared conformance suite, in memory and in a file; two stores (as two
//! processes would) on one file; a corrupt file; and a writer killed with SIGKILL.

use ehub::checkpoint::{conformance, Checkpoint, CheckpointStore, Ownership};
use ehub::ErrorKind;
use ehub_checkpoint_sqlite::SqliteCheckpointStore;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

#[tokio::test]
async fn in_memory_passes_the_conformance_suite() {
    let store = SqliteCheckpointStore::open_in_memory().unwrap();
    tokio::time::timeout(T, conformance::run_all(&store)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteCheckpointStore::open(dir.path().join("cp.db")).await.unwrap();
    tokio::time::timeout(T, conformance::run_all(&store)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_race_for_a_partition_and_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteCheckpointStore::open(&path).await.unwrap();
    let b = SqliteCheckpointStore::open(&path).await.unwrap();
    tokio::time::timeout(T, async {
        for p in 0..50 {
            let claim = |owner: &str| Ownership {
                namespace: "ns".into(),
                event_hub: "hub".into(),
                consumer_group: "$default".into(),
                partition_id: p.to_string(),
                owner_id: owner.into(),
                etag: None,
                last_modified: None,
            };
            let (ca, cb) = ([claim("a")], [claim("b")]);
            let (wa, wb) = tokio::join!(a.claim_ownerships(&ca), b.claim_ownerships(&cb));
            assert_eq!(wa.unwrap().len() + wb.unwrap().len(), 1, "partition {p}");
        }
        // Each sees the other's writes.
        assert_eq!(a.list_ownerships("ns", "hub", "$default").await.unwrap().len(), 50);
        assert_eq!(b.list_ownerships("NS", "HUB", "$Default").await.unwrap().len(), 50);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteCheckpointStore::open(&path).await.expect_err("garbage opened as a store");
    assert_eq!(err.kind(), ErrorKind::CheckpointStore);
    assert!(err.to_string().contains("SQLite"), "{err}");
    assert!(!err.is_transient());
    // The file is left as it was.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
}

#[tokio::test]
async fn a_directory_that_does_not_exist_is_a_clear_error_at_open() {
    let err = SqliteCheckpointStore::open("/nonexistent-dir/ehub/cp.db").await.expect_err("opened");
    assert_eq!(err.kind(), ErrorKind::CheckpointStore);
}

/// Set in the child process of `acknowledged_checkpoints_survive_sigkill`.
const CHILD_ENV: &str = "EHUB_SQLITE_CRASH_CHILD";

fn checkpoint(seq: i64) -> Checkpoint {
    Checkpoint {
        namespace: "ns".into(),
        event_hub: "hub".into(),
        consumer_group: "$default".into(),
        partition_id: "0".into(),
        offset: Some(format!("{}", seq * 100)),
        sequence_number: Some(seq),
    }
}

/// The child of `acknowledged_checkpoints_survive_sigkill`: writes checkpoints 1, 2, 3, ... and
/// prints each once it is acknowledged, until killed.
#[tokio::test]
#[ignore = "a helper: acknowledged_checkpoints_survive_sigkill runs it in a child process"]
async fn crash_child_writer() {
    let path = std::env::var(CHILD_ENV).expect("run by acknowledged_checkpoints_survive_sigkill");
    let store = SqliteCheckpointStore::open(path).await.unwrap();
    for seq in 1.. {
        store.update_checkpoint(&checkpoint(seq)).await.unwrap();
        println!("acked {seq}");
    }
}

#[tokio::test]
async fn acknowledged_checkpoints_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = 0;
    while acked < 200 {
        let line = lines.next().expect("the child stopped early").unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            acked = n.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no checkpoint of the WAL
    child.wait().unwrap();
    let store = SqliteCheckpointStore::open(&path).await.unwrap();
    let got = store.list_checkpoints("ns", "hub", "$default").await.unwrap();
    assert_eq!(got.len(), 1);
    let seq = got[0].sequence_number.unwrap();
    assert!(seq >= acked, "checkpoint {seq} is behind the last acknowledged one, {acked}");
    assert_eq!(got[0].offset, Some(format!("{}", seq * 100)), "the row is whole");
}

/// Updates waiting at the same time share commits (group commit); each is acknowledged only
/// once committed, and a later update of a partition replaces an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_share_commits_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteCheckpointStore::open(dir.path().join("cp.db")).await.unwrap();
    tokio::time::timeout(T, async {
        let update = |p: usize, seq: i64| Checkpoint {
            namespace: "ns".into(),
            event_hub: "hub".into(),
            consumer_group: "$default".into(),
            partition_id: p.to_string(),
            offset: Some(seq.to_string()),
            sequence_number: Some(seq),
        };
        let all: Vec<_> = (0..300).map(|p| update(p, p as i64)).collect();
        futures_util::future::try_join_all(all.iter().map(|c| store.update_checkpoint(c))).await.unwrap();
        for seq in 0..50 {
            store.update_checkpoint(&update(7, 1000 + seq)).await.unwrap();
        }
        // Reopened, as another process would see it.
        let again = SqliteCheckpointStore::open(dir.path().join("cp.db")).await.unwrap();
        let cps = again.list_checkpoints("ns", "hub", "$default").await.unwrap();
        assert_eq!(cps.len(), 300);
        let seven = cps.iter().find(|c| c.partition_id == "7").unwrap();
        assert_eq!(seven.sequence_number, Some(1049));
    })
    .await
    .unwrap();
}
