//! The Blob endpoint over TCP: ehub's own Blob checkpoint store passes the shared conformance
//! suite against it, and the server contract's behaviours hold on the wire (conditional
//! writes, ETags, metadata, name encodings, SharedKey, SAS, versions, paging, error codes).

use bytes::Bytes;
use ehub::checkpoint::{conformance, CheckpointStore, Ownership};
use ehub_blob_store::{BlobStore, BlobStoreConfig, Durability};
use ehub_broker_blob::{BlobAuth, BlobConfig, Endpoint, StorageAccount};
use ehub_checkpoint_blob::BlobCheckpointStore;
use ehub_storage_auth::{SharedKey, DEV_ACCOUNT, DEV_ACCOUNT_KEY};
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(120);
const KEY2: &str = "a2V5IHR3byBvZiB0aGUgZGV2ZWxvcG1lbnQgYWNjb3VudA==";

struct Server {
    port: u16,
    stop: CancellationToken,
    client: Client<HttpConnector, Full<Bytes>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(config: BlobConfig) -> Server {
    start_with(config, Durability::Always).await
}

async fn start_with(config: BlobConfig, durability: Durability) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(BlobStoreConfig { durability, ..BlobStoreConfig::new(dir.path()) }).unwrap();
    let ep = Endpoint::new(store, config).unwrap();
    ep.create_configured_containers().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(ep.serve(listener, stop.clone()));
    let client = Client::builder(TokioExecutor::new()).build_http();
    Server { port, stop, client, _dir: dir }
}

fn dev_config() -> BlobConfig {
    BlobConfig {
        accounts: vec![StorageAccount { name: DEV_ACCOUNT.into(), keys: vec![DEV_ACCOUNT_KEY.into(), KEY2.into()] }],
        ..BlobConfig::default()
    }
}

fn connection_string(port: u16) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"
    )
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
    fn code(&self) -> &str {
        self.header("x-ms-error-code")
    }
}

impl Server {
    /// Sends `method path_and_query` (exactly as given on the request line) with `headers`
    /// and `body`, signed with `key` when given.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &str,
        key: Option<&SharedKey>,
    ) -> Reply {
        let uri: http::Uri = format!("http://127.0.0.1:{}{path_and_query}", self.port).parse().unwrap();
        let mut req = http::Request::builder().method(method).uri(uri);
        let h = req.headers_mut().unwrap();
        h.insert("x-ms-date", httpdate::fmt_http_date(std::time::SystemTime::now()).parse().unwrap());
        h.insert("x-ms-version", "2026-04-06".parse().unwrap());
        for (k, v) in headers {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        if !body.is_empty() {
            h.insert(http::header::CONTENT_LENGTH, body.len().into());
        }
        let mut req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        if let Some(key) = key {
            let auth = key.authorization(req.method(), req.uri(), req.headers());
            req.headers_mut().insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        }
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        Reply { status, headers, body }
    }
}

fn dev_key() -> SharedKey {
    SharedKey::new(DEV_ACCOUNT, DEV_ACCOUNT_KEY).unwrap()
}

const BLOB: &str = "/devstoreaccount1/checkpoints/ns/hub/%24default/ownership/0";
const PUT: [(&str, &str); 1] = [("x-ms-blob-type", "BlockBlob")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ehubs_blob_store_passes_the_conformance_suite() {
    tokio::time::timeout(T, async {
        let s = start(dev_config()).await;
        let store = BlobCheckpointStore::from_connection_string(&connection_string(s.port), "checkpoints").unwrap();
        conformance::run_all(&store).await;
        // A second container made through the store, and a page size that forces paging.
        let other = BlobCheckpointStore::from_connection_string(&connection_string(s.port), "paged")
            .unwrap()
            .with_list_page_size(3);
        assert!(other.create_container_if_missing().await.unwrap());
        let claims: Vec<Ownership> = (0..10)
            .map(|p| Ownership {
                namespace: "127.0.0.1:5672".into(),
                event_hub: "eh1".into(),
                consumer_group: "$Default".into(),
                partition_id: p.to_string(),
                owner_id: "a".into(),
                etag: None,
                last_modified: None,
            })
            .collect();
        assert_eq!(other.claim_ownerships(&claims).await.unwrap().len(), 10);
        assert_eq!(other.list_ownerships("127.0.0.1:5672", "eh1", "$default").await.unwrap().len(), 10);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_through_a_container_sas_and_with_auth_off() {
    tokio::time::timeout(T, async {
        let s = start(dev_config()).await;
        let sas = dev_key().sign_sas(
            &[("sv", "2021-12-02"), ("sr", "c"), ("sp", "rwdlc"), ("se", "2099-01-01T00:00:00Z")],
            Some(("checkpoints", None)),
        );
        let url = format!("http://127.0.0.1:{}/{DEV_ACCOUNT}/checkpoints?{sas}", s.port);
        conformance::run_all(&BlobCheckpointStore::from_container_url(&url).unwrap()).await;

        let open = start(BlobConfig { auth: BlobAuth::None, ..BlobConfig::default() }).await;
        let url = format!("http://127.0.0.1:{}/anyaccount/checkpoints", open.port);
        let store = BlobCheckpointStore::from_container_url(&url).unwrap();
        assert!(store.create_container_if_missing().await.unwrap(), "any account, created on use");
        conformance::run_all(&store).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_answer_as_azure_does() {
    tokio::time::timeout(T, async {
        let s = start(dev_config()).await;
        let k = Some(dev_key());
        let k = k.as_ref();
        let none_match = [PUT[0], ("if-none-match", "*")];
        // Set Metadata on a missing blob: 404 BlobNotFound with the XML body; with If-Match 412.
        let r = s.send(Method::PUT, &format!("{BLOB}?comp=metadata"), &[("x-ms-meta-ownerid", "a")], "", k).await;
        assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "BlobNotFound"));
        assert!(r.body.contains("<Code>BlobNotFound</Code>") && r.header("content-type") == "application/xml");
        let r = s.send(Method::PUT, &format!("{BLOB}?comp=metadata"), &[("if-match", "*")], "", k).await;
        assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_FAILED, "ConditionNotMet"));
        // Concurrent first claims: exactly one 201, the others 409 BlobAlreadyExists.
        let s = Arc::new(s);
        let claims: Vec<_> = (0..16)
            .map(|i| {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let owner = format!("owner{i}");
                    let h = [PUT[0], ("if-none-match", "*"), ("x-ms-meta-ownerid", owner.as_str())];
                    s.send(Method::PUT, BLOB, &h, "", Some(&dev_key())).await
                })
            })
            .collect();
        let mut created = Vec::new();
        for c in claims {
            let r = c.await.unwrap();
            match r.status {
                StatusCode::CREATED => created.push(r),
                StatusCode::CONFLICT => assert_eq!(r.code(), "BlobAlreadyExists"),
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(created.len(), 1, "exactly one first claim wins");
        let etag = created[0].header("etag").to_owned();
        assert!(etag.starts_with("\"0x") && etag.ends_with('"'), "the ETag header is quoted: {etag}");
        assert!(!created[0].header("last-modified").is_empty());
        assert!(!created[0].header("content-md5").is_empty());
        // Python claims a new blob with Set Metadata If-None-Match:* too: 412, never 200.
        let r = s.send(Method::PUT, &format!("{BLOB}?comp=metadata"), &none_match[1..], "", k).await;
        assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_FAILED, "ConditionNotMet"));
        // Quoted and unquoted ETags both match; each write changes the ETag; a stale one fails.
        let unquoted = etag.trim_matches('"').to_owned();
        let r = s
            .send(
                Method::PUT,
                &format!("{BLOB}?comp=metadata"),
                &[("if-match", unquoted.as_str()), ("x-ms-meta-ownerid", "b")],
                "",
                k,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-ms-request-server-encrypted"), "true");
        let second = r.header("etag").to_owned();
        assert_ne!(second, etag);
        let r = s
            .send(
                Method::PUT,
                &format!("{BLOB}?comp=metadata"),
                &[("if-match", second.as_str()), ("x-ms-meta-ownerid", "c")],
                "",
                k,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let r = s
            .send(
                Method::PUT,
                &format!("{BLOB}?comp=metadata"),
                &[("if-match", second.as_str()), ("x-ms-meta-ownerid", "d")],
                "",
                k,
            )
            .await;
        assert_eq!((r.status, r.code()), (StatusCode::PRECONDITION_FAILED, "ConditionNotMet"));
        // Put Blob If-Match on a missing blob: 412.
        let r = s
            .send(Method::PUT, "/devstoreaccount1/checkpoints/missing", &[PUT[0], ("if-match", "\"0x1\"")], "", k)
            .await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_listing_and_paging() {
    tokio::time::timeout(T, async {
        let s = start_with(dev_config(), Durability::Never).await;
        let k = Some(dev_key());
        let k = k.as_ref();
        let r = s
            .send(
                Method::PUT,
                "/devstoreaccount1/checkpoints/p/a",
                &[PUT[0], ("x-ms-meta-ownerid", "x"), ("x-ms-meta-offset", "")],
                "",
                k,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        // Two writes in a row (well within a millisecond apart or not) differ in ETag.
        let a = s
            .send(Method::PUT, "/devstoreaccount1/checkpoints/p/a?comp=metadata", &[("x-ms-meta-k", "1")], "", k)
            .await;
        let b = s
            .send(Method::PUT, "/devstoreaccount1/checkpoints/p/a?comp=metadata", &[("x-ms-meta-k", "2")], "", k)
            .await;
        assert_ne!(a.header("etag"), b.header("etag"));
        // Metadata replaces wholesale; an empty value is kept; an empty set clears.
        let r = s
            .send(
                Method::PUT,
                "/devstoreaccount1/checkpoints/p/a?comp=metadata",
                &[("x-ms-meta-sequencenumber", ""), ("x-ms-meta-offset", "7")],
                "",
                k,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let head = s.send(Method::HEAD, "/devstoreaccount1/checkpoints/p/a", &[], "", k).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.header("x-ms-meta-offset"), "7");
        assert!(head.headers.contains_key("x-ms-meta-sequencenumber"));
        assert!(!head.headers.contains_key("x-ms-meta-k"));
        assert_eq!(head.header("x-ms-blob-type"), "BlockBlob");
        assert_eq!(head.header("content-length"), "0");
        assert!(!head.header("x-ms-creation-time").is_empty());
        assert_eq!(head.header("etag"), r.header("etag"));
        s.send(Method::PUT, "/devstoreaccount1/checkpoints/p/b", &PUT, "", k).await;
        let list = s
            .send(
                Method::GET,
                "/devstoreaccount1/checkpoints?restype=container&comp=list&prefix=p%2F&include=metadata",
                &[],
                "",
                k,
            )
            .await;
        assert_eq!(list.status, StatusCode::OK);
        assert!(
            list.body.contains("<Metadata><sequencenumber></sequencenumber><offset>7</offset></Metadata>"),
            "{}",
            list.body
        );
        assert!(
            list.body.contains("<Name>p/b</Name>") && list.body.contains("<Metadata/>"),
            "empty metadata is <Metadata/>"
        );
        let etag = r.header("etag").trim_matches('"').to_owned();
        assert!(list.body.contains(&format!("<Etag>{etag}</Etag>")), "the listed Etag is unquoted");
        let plain = s
            .send(Method::GET, "/devstoreaccount1/checkpoints?restype=container&comp=list&prefix=p%2F", &[], "", k)
            .await;
        assert!(!plain.body.contains("Metadata"), "no metadata unless asked");
        // 5001 blobs: the default page is 5000, NextMarker leads to the rest.
        for i in 0..5001 {
            let put = s.send(Method::PUT, &format!("/devstoreaccount1/checkpoints/many/{i:05}"), &PUT, "", k).await;
            assert_eq!(put.status, StatusCode::CREATED);
        }
        let first = s
            .send(Method::GET, "/devstoreaccount1/checkpoints?restype=container&comp=list&prefix=many%2F", &[], "", k)
            .await;
        assert_eq!(first.body.matches("<Blob>").count(), 5000);
        assert!(first.body.contains("<NextMarker>many/04999</NextMarker>"), "NextMarker names the last blob");
        let rest = s
            .send(
                Method::GET,
                "/devstoreaccount1/checkpoints?restype=container&comp=list&prefix=many%2F&marker=many%2F04999",
                &[],
                "",
                k,
            )
            .await;
        assert_eq!(rest.body.matches("<Blob>").count(), 1);
        assert!(rest.body.contains("<NextMarker/>"), "the last page has an empty NextMarker");
        let small = s
            .send(
                Method::GET,
                "/devstoreaccount1/checkpoints?restype=container&comp=list&prefix=many%2F&maxresults=2",
                &[],
                "",
                k,
            )
            .await;
        assert!(
            small.body.contains("<MaxResults>2</MaxResults>")
                && small.body.contains("<NextMarker>many/00001</NextMarker>")
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_encoding_reaches_one_blob_and_is_signed_on_its_raw_path() {
    tokio::time::timeout(T, async {
        let s = start(dev_config()).await;
        let k = Some(dev_key());
        let k = k.as_ref();
        let r = s
            .send(
                Method::PUT,
                "/devstoreaccount1/checkpoints/ns%2Fhub%2F%24default%2Fcheckpoint%2F0",
                &[PUT[0], ("x-ms-meta-sequencenumber", "5")],
                "",
                k,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        for path in [
            "/devstoreaccount1/checkpoints/ns/hub/%24default/checkpoint/0",
            "/devstoreaccount1/checkpoints/ns/hub/$default/checkpoint/0",
            "/devstoreaccount1/checkpoints/ns%2Fhub%2F$default%2Fcheckpoint%2F0",
        ] {
            let r = s.send(Method::HEAD, path, &[], "", k).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            assert_eq!(r.header("x-ms-meta-sequencenumber"), "5", "{path}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_key_refusals_write_nothing_and_key2_is_accepted() {
    tokio::time::timeout(T, async {
        let s = start(dev_config()).await;
        let wrong = SharedKey::new(DEV_ACCOUNT, "d3Jvbmcga2V5").unwrap();
        let r = s.send(Method::PUT, BLOB, &PUT, "", Some(&wrong)).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "AuthenticationFailed"));
        assert!(r.body.contains("<AuthenticationErrorDetail>") && r.body.contains("string to sign"), "{}", r.body);
        let r = s.send(Method::PUT, BLOB, &PUT, "", None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let other_account = SharedKey::new("someoneelse", DEV_ACCOUNT_KEY).unwrap();
        let r = s.send(Method::PUT, BLOB, &PUT, "", Some(&other_account)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = s.send(Method::HEAD, BLOB, &[], "", Some(&dev_key())).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing was written by refused requests");
        let key2 = SharedKey::new(DEV_ACCOUNT, KEY2).unwrap();
        let r = s.send(Method::PUT, BLOB, &PUT, "", Some(&key2)).await;
        assert_eq!(r.status, StatusCode::CREATED);
        // Header order: a metadata name with `_` signed in the service collation (Python, .NET).
        let r = s
            .send(
                Method::PUT,
                &format!("{BLOB}?comp=metadata"),
                &[("x-ms-meta-a1", "1"), ("x-ms-meta-a_b", "2")],
                "",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let uri: http::Uri = format!("http://127.0.0.1:{}{BLOB}?comp=metadata", s.port).parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-ms-date", httpdate::fmt_http_date(std::time::SystemTime::now()).parse().unwrap());
        h.insert("x-ms-version", "2019-07-07".parse().unwrap());
        h.insert("x-ms-meta-a1", "1".parse().unwrap());
        h.insert("x-ms-meta-a_b", "2".parse().unwrap());
        let sts = ehub_storage_auth::string_to_sign_ordered(
            DEV_ACCOUNT,
            &Method::PUT,
            &uri,
            &h,
            ehub_storage_auth::HeaderOrder::Collation,
        );
        assert!(sts.contains("x-ms-meta-a_b:2\nx-ms-meta-a1:1"));
        let auth = format!("SharedKey {DEV_ACCOUNT}:{}", dev_key().sign(&sts));
        let date = h["x-ms-date"].to_str().unwrap().to_owned();
        let r = s
            .send(
                Method::PUT,
                &format!("{BLOB}?comp=metadata"),
                &[
                    ("x-ms-date", date.as_str()),
                    ("x-ms-version", "2019-07-07"),
                    ("x-ms-meta-a1", "1"),
                    ("x-ms-meta-a_b", "2"),
                    ("authorization", auth.as_str()),
                ],
                "",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_tokens_grant_what_they_sign_and_no_more() {
    tokio::time::timeout(T, async {
        let s = start(dev_config()).await;
        let key = dev_key();
        let list = "/devstoreaccount1/checkpoints?restype=container&comp=list";
        let with = |path: &str, sas: &str| {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}{sas}")
        };
        for sv in ["2019-07-07", "2021-12-02", "2026-04-06"] {
            let account = key.sign_sas(
                &[("sv", sv), ("ss", "b"), ("srt", "sco"), ("sp", "rwdlc"), ("se", "2099-01-01T00:00:00Z")],
                None,
            );
            let r = s.send(Method::PUT, &with(BLOB, &account), &PUT, "", None).await;
            assert!(r.status == StatusCode::CREATED, "account SAS {sv}: {} {}", r.status, r.body);
            assert_eq!(s.send(Method::GET, &with(list, &account), &[], "", None).await.status, StatusCode::OK);
        }
        for sv in ["2015-04-05", "2019-07-07", "2021-12-02", "2026-04-06"] {
            let container = key.sign_sas(
                &[("sv", sv), ("sr", "c"), ("sp", "rwl"), ("se", "2099-01-01T00:00:00Z")],
                Some(("checkpoints", None)),
            );
            let r = s.send(Method::GET, &with(list, &container), &[], "", None).await;
            assert_eq!(r.status, StatusCode::OK, "container SAS {sv}: {}", r.body);
            let r = s
                .send(
                    Method::PUT,
                    &with(&format!("{BLOB}?comp=metadata"), &container),
                    &[("x-ms-meta-ownerid", sv)],
                    "",
                    None,
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "container SAS {sv}: {}", r.body);
        }
        // Expired; without `l` for List; a blob SAS for another blob; another container; tampered.
        let expired = key.sign_sas(
            &[("sv", "2021-12-02"), ("sr", "c"), ("sp", "rwl"), ("se", "2020-01-01T00:00:00Z")],
            Some(("checkpoints", None)),
        );
        let r = s.send(Method::GET, &with(list, &expired), &[], "", None).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "AuthenticationFailed"));
        let no_list = key.sign_sas(
            &[("sv", "2021-12-02"), ("sr", "c"), ("sp", "rw"), ("se", "2099-01-01T00:00:00Z")],
            Some(("checkpoints", None)),
        );
        let r = s.send(Method::GET, &with(list, &no_list), &[], "", None).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "AuthorizationPermissionMismatch"));
        let one_blob = key.sign_sas(
            &[("sv", "2021-12-02"), ("sr", "b"), ("sp", "rw"), ("se", "2099-01-01T00:00:00Z")],
            Some(("checkpoints", Some("ns/hub/$default/ownership/1"))),
        );
        let r = s.send(Method::HEAD, &with(BLOB, &one_blob), &[], "", None).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "AuthenticationFailed"));
        let r = s
            .send(
                Method::PUT,
                &with("/devstoreaccount1/checkpoints/ns/hub/$default/ownership/1", &one_blob),
                &PUT,
                "",
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let other = key.sign_sas(
            &[("sv", "2021-12-02"), ("sr", "c"), ("sp", "rwl"), ("se", "2099-01-01T00:00:00Z")],
            Some(("other", None)),
        );
        assert_eq!(s.send(Method::GET, &with(list, &other), &[], "", None).await.status, StatusCode::FORBIDDEN);
        let tampered = key
            .sign_sas(
                &[("sv", "2021-12-02"), ("sr", "c"), ("sp", "r"), ("se", "2099-01-01T00:00:00Z")],
                Some(("checkpoints", None)),
            )
            .replace("sp=r", "sp=rwl");
        assert_eq!(s.send(Method::GET, &with(list, &tampered), &[], "", None).await.status, StatusCode::FORBIDDEN);
        let read_only_account = key.sign_sas(
            &[("sv", "2021-12-02"), ("ss", "b"), ("srt", "o"), ("sp", "rl"), ("se", "2099-01-01T00:00:00Z")],
            None,
        );
        let r = s.send(Method::GET, &with(list, &read_only_account), &[], "", None).await;
        assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "AuthorizationResourceTypeMismatch"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_request_ids_errors_and_bodies() {
    tokio::time::timeout(T, async {
        let s = start(dev_config()).await;
        let k = Some(dev_key());
        let k = k.as_ref();
        for v in ["2019-07-07", "2026-04-06", "2026-06-06", "2099-12-31", "not-a-version"] {
            let r = s
                .send(Method::GET, "/devstoreaccount1/checkpoints?restype=container", &[("x-ms-version", v)], "", k)
                .await;
            assert_eq!(r.status, StatusCode::OK, "{v}");
            assert_eq!(r.header("x-ms-version"), v);
        }
        let id = "Client-Request-Id_123 with spaces/and:colons";
        let r = s
            .send(Method::GET, "/devstoreaccount1/nope?restype=container", &[("x-ms-client-request-id", id)], "", k)
            .await;
        assert_eq!(r.header("x-ms-client-request-id"), id, "echoed byte for byte");
        assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "ContainerNotFound"));
        assert!(!r.header("x-ms-request-id").is_empty() && !r.header("date").is_empty());
        // ContainerNotFound comes before BlobNotFound; HEAD errors have no body but the code header.
        let r = s.send(Method::GET, "/devstoreaccount1/nope/blob", &[], "", k).await;
        assert_eq!(r.code(), "ContainerNotFound");
        assert!(r.body.contains("<Code>ContainerNotFound</Code>"));
        let r = s.send(Method::HEAD, "/devstoreaccount1/checkpoints/missing", &[], "", k).await;
        assert_eq!((r.status, r.code(), r.body.as_str()), (StatusCode::NOT_FOUND, "BlobNotFound", ""));
        let r = s.send(Method::DELETE, "/devstoreaccount1/checkpoints/missing", &[], "", k).await;
        assert_eq!(r.code(), "BlobNotFound");
        // Unsupported operations: 501 with the XML body.
        let r = s.send(Method::PUT, "/devstoreaccount1/checkpoints/b?comp=block&blockid=AAAA", &[], "x", k).await;
        assert_eq!((r.status, r.code()), (StatusCode::NOT_IMPLEMENTED, "APINotImplemented"));
        assert!(r.body.contains("<Code>APINotImplemented</Code>"));
        // A body round-trips, with Range and MD5; a wrong Content-MD5 is refused.
        let r = s
            .send(
                Method::PUT,
                "/devstoreaccount1/checkpoints/body",
                &[PUT[0], ("content-type", "text/plain")],
                "hello world",
                k,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.header("content-md5"), "XrY7u+Ae7tCTyyK7j1rNww==");
        let r = s.send(Method::GET, "/devstoreaccount1/checkpoints/body", &[], "", k).await;
        assert_eq!((r.body.as_str(), r.header("content-type")), ("hello world", "text/plain"));
        let r = s.send(Method::GET, "/devstoreaccount1/checkpoints/body", &[("x-ms-range", "bytes=6-")], "", k).await;
        assert_eq!(
            (r.status, r.body.as_str(), r.header("content-range")),
            (StatusCode::PARTIAL_CONTENT, "world", "bytes 6-10/11")
        );
        let r = s
            .send(
                Method::PUT,
                "/devstoreaccount1/checkpoints/body",
                &[PUT[0], ("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==")],
                "changed",
                k,
            )
            .await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "Md5Mismatch"));
        assert_eq!(s.send(Method::GET, "/devstoreaccount1/checkpoints/body", &[], "", k).await.body, "hello world");
        // Delete: 202, then gone; container lifecycle.
        let r = s.send(Method::DELETE, "/devstoreaccount1/checkpoints/body", &[], "", k).await;
        assert_eq!((r.status, r.header("x-ms-delete-type-permanent")), (StatusCode::ACCEPTED, "true"));
        let r = s.send(Method::PUT, "/devstoreaccount1/checkpoints?restype=container", &[], "", k).await;
        assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "ContainerAlreadyExists"));
        let r =
            s.send(Method::PUT, "/devstoreaccount1/new-one?restype=container", &[("x-ms-meta-team", "a")], "", k).await;
        assert_eq!(r.status, StatusCode::CREATED);
        let r = s.send(Method::HEAD, "/devstoreaccount1/new-one?restype=container", &[], "", k).await;
        assert_eq!(r.header("x-ms-meta-team"), "a");
        assert_eq!(
            s.send(Method::DELETE, "/devstoreaccount1/new-one?restype=container", &[], "", k).await.status,
            StatusCode::ACCEPTED
        );
        let r = s.send(Method::PUT, "/devstoreaccount1/Bad_Name?restype=container", &[], "", k).await;
        assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "InvalidResourceName"));
    })
    .await
    .unwrap();
}
