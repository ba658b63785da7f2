//! The Blob store against Azurite, over HTTP with SharedKey: the shared conformance suite, the
//! official layout on the wire, paging, and typed errors for a wrong key, a missing container and
//! an unreachable service.

mod support;

use ehub::checkpoint::{conformance, Checkpoint, CheckpointStore, Ownership};
use ehub::ErrorKind;
use ehub_checkpoint_blob::{BlobCheckpointStore, Credential, SharedKey};
use std::time::Duration;
use support::azurite::Azurite;

const T: Duration = Duration::from_secs(120);

async fn store(azurite: &Azurite, container: &str) -> BlobCheckpointStore {
    let store = BlobCheckpointStore::from_connection_string(&azurite.connection_string(), container).unwrap();
    assert!(store.create_container_if_missing().await.unwrap(), "a new container is created");
    assert!(!store.create_container_if_missing().await.unwrap(), "an existing one is left alone");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_against_azurite() {
    let azurite = Azurite::start();
    tokio::time::timeout(T, async {
        let store = store(&azurite, "conformance").await;
        conformance::run_all(&store).await;
    })
    .await
    .unwrap();
}

/// Records land where every official SDK looks: `{ns}/{hub}/{group}/ownership/{p}` and
/// `.../checkpoint/{p}`, lower-cased, with a host:port namespace, read back through a second
/// store (as another process would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_use_the_shared_layout_and_paging_reaches_every_one() {
    let azurite = Azurite::start();
    tokio::time::timeout(T, async {
        let store = store(&azurite, "layout").await.with_list_page_size(7);
        let claims: Vec<Ownership> = (0..32)
            .map(|p| Ownership {
                namespace: "127.0.0.1:5672".into(),
                event_hub: "EH1".into(),
                consumer_group: "$Default".into(),
                partition_id: p.to_string(),
                owner_id: "owner-a".into(),
                etag: None,
                last_modified: None,
            })
            .collect();
        let won = store.claim_ownerships(&claims).await.unwrap();
        assert_eq!(won.len(), 32);
        for p in 0..32 {
            store
                .update_checkpoint(&Checkpoint {
                    namespace: "127.0.0.1:5672".into(),
                    event_hub: "EH1".into(),
                    consumer_group: "$Default".into(),
                    partition_id: p.to_string(),
                    offset: Some(format!("{}", p * 100)),
                    sequence_number: Some(p),
                })
                .await
                .unwrap();
        }
        let other = BlobCheckpointStore::from_connection_string(&azurite.connection_string(), "layout")
            .unwrap()
            .with_list_page_size(5);
        let owned = other.list_ownerships("127.0.0.1:5672", "eh1", "$default").await.unwrap();
        assert_eq!(owned.len(), 32, "every page is followed");
        assert!(owned
            .iter()
            .all(|o| o.owner_id == "owner-a" && o.namespace == "127.0.0.1:5672" && o.event_hub == "eh1"));
        for o in &owned {
            let w = won.iter().find(|w| w.partition_id == o.partition_id).unwrap();
            assert_eq!(w.etag, o.etag, "the ETag a claim returns is the one a listing shows");
        }
        let mut cps = other.list_checkpoints("127.0.0.1:5672", "EH1", "$DEFAULT").await.unwrap();
        cps.sort_by_key(|c| c.sequence_number);
        assert_eq!(cps.len(), 32);
        assert_eq!(cps[5].offset.as_deref(), Some("500"));
        assert_eq!(cps[5].partition_id, "5");

        // The raw names, as another SDK would list them.
        let names = raw_names(&azurite, "layout").await;
        assert!(names.contains(&"127.0.0.1:5672/eh1/$default/ownership/0".to_string()), "{names:?}");
        assert!(names.contains(&"127.0.0.1:5672/eh1/$default/checkpoint/31".to_string()), "{names:?}");
    })
    .await
    .unwrap();
}

/// The blob names in a container, read with a plain listing through a bare HTTP request.
async fn raw_names(azurite: &Azurite, container: &str) -> Vec<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = SharedKey::new(ehub_storage_auth::DEV_ACCOUNT, ehub_storage_auth::DEV_ACCOUNT_KEY).unwrap();
    let path = format!("/devstoreaccount1/{container}?restype=container&comp=list");
    let req = http::Request::get(format!("http://127.0.0.1:{}{path}", azurite.port))
        .header("x-ms-version", "2021-12-02")
        .header("x-ms-date", httpdate::fmt_http_date(std::time::SystemTime::now()))
        .body(())
        .unwrap();
    let auth = key.authorization(req.method(), req.uri(), req.headers());
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", azurite.port)).await.unwrap();
    let text = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-ms-version: 2021-12-02\r\nx-ms-date: {}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n",
        req.headers()["x-ms-date"].to_str().unwrap()
    );
    s.write_all(text.as_bytes()).await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body.split("<Name>").skip(1).map(|n| n.split("</Name>").next().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_a_missing_container_and_no_service_are_typed_errors() {
    let azurite = Azurite::start();
    tokio::time::timeout(T, async {
        let endpoint = format!("http://127.0.0.1:{}/devstoreaccount1", azurite.port);
        let good = store(&azurite, "exists").await;
        good.update_checkpoint(&checkpoint("0", 1)).await.unwrap();

        let wrong = SharedKey::new("devstoreaccount1", "d3Jvbmcga2V5").unwrap();
        let store = BlobCheckpointStore::new(&endpoint, "exists", Credential::SharedKey(wrong)).unwrap();
        let e = store.list_checkpoints("ns", "hub", "$default").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert!(e.to_string().contains("403"), "{e}");
        let e = store.update_checkpoint(&checkpoint("0", 99)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        // Nothing was written by the refused request.
        let cps = good.list_checkpoints("ns", "hub", "$default").await.unwrap();
        assert_eq!(cps[0].sequence_number, Some(1));

        let missing = BlobCheckpointStore::from_connection_string(&azurite.connection_string(), "nosuch").unwrap();
        assert!(!missing.container_exists().await.unwrap());
        for e in [
            missing.list_ownerships("ns", "hub", "$default").await.unwrap_err(),
            missing.update_checkpoint(&checkpoint("0", 1)).await.unwrap_err(),
            missing.claim_ownerships(&[claim("0")]).await.unwrap_err(),
        ] {
            assert_eq!(e.kind(), ErrorKind::ResourceNotFound, "{e}");
            assert!(e.to_string().contains("ContainerNotFound"), "{e}");
            assert!(!e.is_transient());
        }

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let nowhere = BlobCheckpointStore::from_connection_string(
            &format!("UseDevelopmentStorage=false;AccountName=devstoreaccount1;AccountKey=AAAA;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1"),
            "c",
        )
        .unwrap();
        let e = nowhere.list_checkpoints("ns", "hub", "$default").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    })
    .await
    .unwrap();
}

fn checkpoint(partition: &str, seq: i64) -> Checkpoint {
    Checkpoint {
        namespace: "ns".into(),
        event_hub: "hub".into(),
        consumer_group: "$default".into(),
        partition_id: partition.into(),
        offset: Some(seq.to_string()),
        sequence_number: Some(seq),
    }
}

fn claim(partition: &str) -> Ownership {
    Ownership {
        namespace: "ns".into(),
        event_hub: "hub".into(),
        consumer_group: "$default".into(),
        partition_id: partition.into(),
        owner_id: "me".into(),
        etag: None,
        last_modified: None,
    }
}

/// A service that keeps answering 503 is asked `max_retries + 1` times, by the retry policy
/// given, and the error is then `ServerBusy` (transient); with no retries, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_statuses_are_retried_by_the_policy_given_then_reported() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(T, async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            counted.fetch_add(1, Ordering::SeqCst);
                            let reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nx-ms-error-code: ServerBusy\r\n\r\n";
                            s.write_all(reply.as_bytes()).await.unwrap();
                        }
                    }
                });
            }
        });
        let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
        let retry = ehub::RetryOptions {
            max_retries: 3,
            backoff_factor: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            ..Default::default()
        };
        let store = BlobCheckpointStore::new(&endpoint, "c", Credential::Anonymous).unwrap().with_retry_options(retry);
        let e = store.list_checkpoints("ns", "hub", "$default").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ServerBusy, "{e}");
        assert!(e.is_transient());
        assert_eq!(requests.swap(0, Ordering::SeqCst), 4, "one try and three retries");
        let once = store.with_retry_options(ehub::RetryOptions { max_retries: 0, ..Default::default() });
        once.list_checkpoints("ns", "hub", "$default").await.unwrap_err();
        assert_eq!(requests.load(Ordering::SeqCst), 1, "no retries");
    })
    .await
    .unwrap();
}
