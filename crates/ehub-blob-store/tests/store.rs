//! The store's contract: conditional writes, ETags, listing, and durability across reopen.

use bytes::Bytes;
use ehub_blob_store::{BlobStore, BlobStoreConfig, Conditions, Durability, PutBlob, StoreError};
use std::sync::Arc;
use std::time::Duration;

const A: &str = "devstoreaccount1";
const C: &str = "checkpoints";

fn if_none_match_any() -> Conditions {
    Conditions { if_none_match: Some("*".into()), ..Conditions::default() }
}

fn if_match(etag: &str) -> Conditions {
    Conditions { if_match: Some(etag.into()), ..Conditions::default() }
}

fn meta(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.into(), v.into())]
}

async fn open(dir: &std::path::Path) -> Arc<BlobStore> {
    let store = BlobStore::open(BlobStoreConfig::new(dir)).unwrap();
    store.ensure_container(A, C).await.unwrap();
    store
}

macro_rules! timed {
    ($body:expr) => {
        tokio::time::timeout(Duration::from_secs(60), $body).await.expect("test timed out")
    };
}

#[tokio::test]
async fn conditional_writes_follow_azure() {
    timed!(async {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        // Set Metadata on a missing blob: BlobNotFound without a condition, 412 with If-Match.
        let e = s.set_metadata(A, C, "b", meta("k", "v"), &Conditions::default()).await.unwrap_err();
        assert_eq!(e.code(), "BlobNotFound");
        let e = s.set_metadata(A, C, "b", meta("k", "v"), &if_match("*")).await.unwrap_err();
        assert_eq!(e.code(), "ConditionNotMet");
        // Put Blob If-Match on a missing blob: 412.
        let e = s.put_blob(A, C, "b", PutBlob::default(), &if_match("\"0x1\"")).await.unwrap_err();
        assert_eq!(e.code(), "ConditionNotMet");
        // First claim wins, the second gets BlobAlreadyExists; Set Metadata If-None-Match:* gets 412.
        let first = s.put_blob(A, C, "b", PutBlob::default(), &if_none_match_any()).await.unwrap();
        let e = s.put_blob(A, C, "b", PutBlob::default(), &if_none_match_any()).await.unwrap_err();
        assert_eq!(e.code(), "BlobAlreadyExists");
        let e = s.set_metadata(A, C, "b", meta("k", "v"), &if_none_match_any()).await.unwrap_err();
        assert_eq!(e.code(), "ConditionNotMet");
        // Quoted and unquoted ETags both match; a stale one does not.
        let second = s.set_metadata(A, C, "b", meta("k", "1"), &if_match(&first.etag.quoted())).await.unwrap();
        let third = s.set_metadata(A, C, "b", meta("k", "2"), &if_match(&second.etag.to_string())).await.unwrap();
        let e = s.set_metadata(A, C, "b", meta("k", "3"), &if_match(&second.etag.quoted())).await.unwrap_err();
        assert_eq!(e.code(), "ConditionNotMet");
        // If-None-Match with the current ETag fails, with another passes.
        let same = Conditions { if_none_match: Some(third.etag.quoted()), ..Conditions::default() };
        let e = s.set_metadata(A, C, "b", vec![], &same).await.unwrap_err();
        assert_eq!(e.code(), "ConditionNotMet");
        s.set_metadata(
            A,
            C,
            "b",
            vec![],
            &Conditions { if_none_match: Some(first.etag.quoted()), ..Conditions::default() },
        )
        .await
        .unwrap();
        // A missing container comes before a missing blob.
        let e = s.set_metadata(A, "nope", "b", vec![], &Conditions::default()).await.unwrap_err();
        assert_eq!(e.code(), "ContainerNotFound");
        let e = s.put_blob(A, "nope", "b", PutBlob::default(), &Conditions::default()).await.unwrap_err();
        assert_eq!(e.code(), "ContainerNotFound");
    });
}

#[tokio::test]
async fn etags_differ_for_writes_in_one_millisecond_and_metadata_replaces_wholesale() {
    timed!(async {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        s.put_blob(A, C, "b", PutBlob { metadata: meta("Keep", "x"), ..PutBlob::default() }, &Conditions::default())
            .await
            .unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            let e = s.set_metadata(A, C, "b", meta("n", &i.to_string()), &Conditions::default()).await.unwrap();
            assert!(seen.insert(e.etag), "ETag repeated");
        }
        let m = vec![("ownerid".to_string(), String::new()), ("CaseKept".to_string(), "v".to_string())];
        s.set_metadata(A, C, "b", m.clone(), &Conditions::default()).await.unwrap();
        assert_eq!(s.blob(A, C, "b").unwrap().metadata, m);
        s.set_metadata(A, C, "b", vec![], &Conditions::default()).await.unwrap();
        assert!(s.blob(A, C, "b").unwrap().metadata.is_empty());
    });
}

#[tokio::test]
async fn concurrent_first_claims_have_exactly_one_winner() {
    timed!(async {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    s.put_blob(
                        A,
                        C,
                        "ns/hub/$default/ownership/0",
                        PutBlob { metadata: meta("ownerid", &i.to_string()), ..PutBlob::default() },
                        &if_none_match_any(),
                    )
                    .await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => wins += 1,
                Err(StoreError::BlobAlreadyExists) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(wins, 1);
    });
}

#[tokio::test]
async fn listing_pages_in_name_order_with_prefix() {
    timed!(async {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        for i in 0..25 {
            s.put_blob(A, C, &format!("p/{i:02}"), PutBlob::default(), &Conditions::default()).await.unwrap();
        }
        s.put_blob(A, C, "q/0", PutBlob::default(), &Conditions::default()).await.unwrap();
        s.put_blob(A, C, "o/0", PutBlob::default(), &Conditions::default()).await.unwrap();
        let mut names = Vec::new();
        let mut marker: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = s.list_blobs(A, C, "p/", marker.as_deref(), 10).unwrap();
            pages += 1;
            names.extend(page.blobs.iter().map(|b| b.name.clone()));
            match page.next_marker {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(names, (0..25).map(|i| format!("p/{i:02}")).collect::<Vec<_>>());
        assert_eq!(s.list_blobs(A, C, "", None, 5000).unwrap().blobs.len(), 27);
        assert_eq!(s.list_blobs(A, "nope", "", None, 10).unwrap_err().code(), "ContainerNotFound");
    });
}

#[tokio::test]
async fn containers_are_created_listed_and_deleted() {
    timed!(async {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        assert_eq!(s.create_container(A, C, vec![]).await.unwrap_err().code(), "ContainerAlreadyExists");
        assert_eq!(s.create_container(A, "Bad_Name", vec![]).await.unwrap_err().code(), "InvalidResourceName");
        s.create_container(A, "other", meta("m", "1")).await.unwrap();
        s.put_blob(A, "other", "x", PutBlob::default(), &Conditions::default()).await.unwrap();
        assert_eq!(s.container(A, "other").unwrap().metadata, meta("m", "1"));
        // Another account's container of the same name is another container.
        assert_eq!(s.container("acct2", "other").unwrap_err().code(), "ContainerNotFound");
        s.delete_container(A, "other", &Conditions::default()).await.unwrap();
        assert_eq!(s.blob(A, "other", "x").unwrap_err().code(), "ContainerNotFound");
        s.create_container(A, "other", vec![]).await.unwrap();
        assert!(s.list_blobs(A, "other", "", None, 10).unwrap().blobs.is_empty(), "blobs died with the container");
        let e = s.delete_blob(A, C, "missing", &Conditions::default()).await.unwrap_err();
        assert_eq!(e.code(), "BlobNotFound");
    });
}

#[tokio::test]
async fn answered_writes_survive_reopen_and_compaction() {
    timed!(async {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        {
            let config = BlobStoreConfig { compact_min_bytes: 16 << 10, ..BlobStoreConfig::new(dir.path()) };
            let s = BlobStore::open(config).unwrap();
            s.ensure_container(A, C).await.unwrap();
            // Enough rewrites of a few blobs that the journal is compacted several times.
            for round in 0..400 {
                for p in 0..4 {
                    let body = Bytes::from(vec![round as u8; 7]);
                    let e = s
                        .put_blob(
                            A,
                            C,
                            &format!("b{p}"),
                            PutBlob { body, metadata: meta("round", &round.to_string()), ..PutBlob::default() },
                            &Conditions::default(),
                        )
                        .await
                        .unwrap();
                    if round == 399 {
                        expected.push(e);
                    }
                }
            }
            s.delete_blob(A, C, "b3", &Conditions::default()).await.unwrap();
            expected.pop();
            let size = std::fs::metadata(s.journal_path()).unwrap().len();
            assert!(size < 64 << 10, "the journal was compacted (size {size})");
            // No shutdown: the store is dropped as a crash would leave it (answered = fsynced).
            std::mem::forget(s);
        }
        let s = BlobStore::open(BlobStoreConfig::new(dir.path())).unwrap();
        for (p, e) in expected.iter().enumerate() {
            assert_eq!(&s.blob(A, C, &format!("b{p}")).unwrap(), e);
        }
        assert_eq!(s.blob(A, C, "b3").unwrap_err().code(), "BlobNotFound");
        // New ETags stay above every ETag from before the restart.
        let e = s.set_metadata(A, C, "b0", vec![], &Conditions::default()).await.unwrap();
        assert!(e.etag > expected[0].etag);
    });
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_earlier_writes_stay() {
    timed!(async {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let s = open(dir.path()).await;
            s.put_blob(A, C, "kept", PutBlob::default(), &Conditions::default()).await.unwrap();
            s.shutdown();
            s.journal_path().to_owned()
        };
        // Half a record: a write that crashed mid-way and was never answered.
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 3, 0]);
        std::fs::write(&path, &bytes).unwrap();
        let s = open(dir.path()).await;
        assert!(s.blob(A, C, "kept").is_ok());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
        s.put_blob(A, C, "after", PutBlob::default(), &Conditions::default()).await.unwrap();
        drop(s);
        let s = open(dir.path()).await;
        assert!(s.blob(A, C, "after").is_ok());
    });
}

#[tokio::test]
async fn writes_after_shutdown_fail_with_a_storage_error() {
    timed!(async {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).await;
        s.shutdown();
        let e = s.put_blob(A, C, "x", PutBlob::default(), &Conditions::default()).await.unwrap_err();
        assert_eq!(e.code(), "InternalError");
        assert_eq!(e.kind(), ehub_blob_store::ErrorKind::Storage);
    });
}

#[tokio::test]
async fn interval_and_never_policies_answer_and_keep_writes_after_a_clean_shutdown() {
    timed!(async {
        for durability in [Durability::Interval(Duration::from_millis(20)), Durability::Never] {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = BlobStore::open(BlobStoreConfig { durability, ..BlobStoreConfig::new(dir.path()) }).unwrap();
                s.ensure_container(A, C).await.unwrap();
                s.put_blob(A, C, "x", PutBlob::default(), &Conditions::default()).await.unwrap();
                s.shutdown();
            }
            let s = open(dir.path()).await;
            assert!(s.blob(A, C, "x").is_ok(), "{durability:?}");
        }
    });
}
