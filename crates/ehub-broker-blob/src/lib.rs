//! # ehub-broker-blob
//!
//! The broker's Azure Blob front: the part of the Blob REST API that event processors use to
//! keep ownership and checkpoints (containers, List Blobs, Put Blob, Set Blob Metadata, Get
//! Blob (Properties), Delete Blob), served path-style (`http://HOST:10000/<account>/<container>/<blob>`)
//! over hyper, on [`ehub_blob_store`]. The official Python, JavaScript, .NET, Go and Rust
//! checkpoint stores use it unmodified with the development storage connection string; any
//! other operation is answered 501 `APINotImplemented`.
//!
//! Requests are authorized with SharedKey (any of the account's keys, either header order),
//! account SAS or Blob service SAS, or not at all in the [`BlobAuth::None`] mode.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ehub_blob_store::{BlobStore, BlobStoreConfig};
//! use ehub_broker_blob::{BlobConfig, Endpoint};
//! let store = BlobStore::open(BlobStoreConfig::new("./ehub-data/_blob"))?;
//! let endpoint = Endpoint::new(store, BlobConfig::default())?;
//! endpoint.create_configured_containers().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:10000").await?;
//! endpoint.serve(listener, tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod auth;
mod request;
mod response;

pub use request::{parse, Operation, Request};
pub use response::ApiError;

use bytes::Bytes;
use ehub_blob_store::{BlobStore, PutBlob, StoreError};
use ehub_storage_auth::SharedKey;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How requests are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlobAuth {
    /// SharedKey or SAS signed with a configured account key. The default.
    #[default]
    Key,
    /// Every request is allowed, for any account name (development only).
    None,
}

/// A storage account and its keys (base64, as connection strings carry them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageAccount {
    /// The account name: the first path segment.
    pub name: String,
    /// `key1` and optionally `key2`; a request signed with either is accepted.
    pub keys: Vec<String>,
}

impl StorageAccount {
    /// The development account `devstoreaccount1` with its published key, which Azurite's
    /// connection strings use.
    pub fn development() -> Self {
        StorageAccount {
            name: ehub_storage_auth::DEV_ACCOUNT.into(),
            keys: vec![ehub_storage_auth::DEV_ACCOUNT_KEY.into()],
        }
    }
}

/// The Blob front's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobConfig {
    /// How requests are authorized.
    pub auth: BlobAuth,
    /// The accounts (default: the development account).
    pub accounts: Vec<StorageAccount>,
    /// Containers created at start in every account (default: `checkpoints`).
    pub containers: Vec<String>,
    /// Largest Put Blob body accepted (default 64 MiB); larger ones get 413.
    pub max_blob_bytes: usize,
    /// Simultaneous connections (default 1024); more are refused.
    pub max_connections: usize,
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            auth: BlobAuth::Key,
            accounts: vec![StorageAccount::development()],
            containers: vec!["checkpoints".into()],
            max_blob_bytes: 64 << 20,
            max_connections: 1024,
        }
    }
}

/// Why the front could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An account key that is not base64.
    #[error("storage account `{account}`: {source}")]
    InvalidKey {
        /// The account.
        account: String,
        /// Why.
        #[source]
        source: ehub_storage_auth::Error,
    },
    /// A configured container could not be created.
    #[error("creating container `{container}` in account `{account}`: {source}")]
    Container {
        /// The account.
        account: String,
        /// The container.
        container: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// Serving failed.
    #[error("Blob endpoint: {0}")]
    Io(#[from] std::io::Error),
}

/// Broad classes of [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is wrong.
    Config,
    /// Storage or the network failed.
    Io,
}

impl Error {
    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidKey { .. } | Error::Container { source: StoreError::InvalidResourceName(_), .. } => {
                ErrorKind::Config
            }
            Error::Container { .. } | Error::Io(_) => ErrorKind::Io,
        }
    }

    /// Whether trying again may help: never for configuration, possibly for I/O.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Io
    }
}

/// The Blob front: a store, its settings and the decoded account keys.
#[derive(Debug)]
pub struct Endpoint {
    store: Arc<BlobStore>,
    config: BlobConfig,
    keys: HashMap<String, Vec<SharedKey>>,
    /// The broker's failed-authorization limit per client address, shared with its other
    /// fronts, when the endpoint runs inside a broker.
    auth_limit: Option<Arc<ehub_broker_core::Admission>>,
    /// Requests answered, by operation and status.
    requests: Family<Vec<(&'static str, String)>, Counter>,
}

/// Time a client gets to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const SERVER: &str = concat!("ehub-blob/", env!("CARGO_PKG_VERSION"));

impl Endpoint {
    /// Adds the endpoint's metrics to `registry`: `ehub_blob_requests_total` by `operation`
    /// and `status`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "ehub_blob_requests",
            "Blob requests answered, by operation and HTTP status",
            self.requests.clone(),
        );
    }

    /// The front over `store`; fails on an account key that is not base64.
    pub fn new(store: Arc<BlobStore>, config: BlobConfig) -> Result<Arc<Self>, Error> {
        Self::build(store, config, None).map(Arc::new)
    }

    fn build(
        store: Arc<BlobStore>,
        config: BlobConfig,
        auth_limit: Option<Arc<ehub_broker_core::Admission>>,
    ) -> Result<Self, Error> {
        let mut keys = HashMap::new();
        for a in &config.accounts {
            let decoded = a
                .keys
                .iter()
                .map(|k| SharedKey::new(&a.name, k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| Error::InvalidKey { account: a.name.clone(), source })?;
            keys.insert(a.name.clone(), decoded);
        }
        Ok(Endpoint { store, config, keys, auth_limit, requests: Family::default() })
    }

    /// [`Endpoint::new`], with failed authorizations counted per client address in the
    /// broker's `admission`: an address that failed too often lately is refused unchecked
    /// until its window ends.
    pub fn with_auth_limit(
        store: Arc<BlobStore>,
        config: BlobConfig,
        admission: Arc<ehub_broker_core::Admission>,
    ) -> Result<Arc<Self>, Error> {
        Self::build(store, config, Some(admission)).map(Arc::new)
    }

    /// The store behind the front.
    pub fn store(&self) -> &Arc<BlobStore> {
        &self.store
    }

    /// Creates every configured container in every configured account, unless it exists.
    pub async fn create_configured_containers(&self) -> Result<(), Error> {
        for a in &self.config.accounts {
            for c in &self.config.containers {
                self.store.ensure_container(&a.name, c).await.map_err(|source| Error::Container {
                    account: a.name.clone(),
                    container: c.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Serves until `shutdown` is cancelled, then lets requests in progress finish.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        let tracker = TaskTracker::new();
        loop {
            let (sock, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "Blob endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
                tracing::warn!(peer = %peer, "Blob endpoint: connection limit reached; refusing connection");
                continue;
            };
            let _ = sock.set_nodelay(true);
            let (ep, stop) = (Arc::clone(&self), shutdown.clone());
            tracker.spawn(async move {
                let service = service_fn(move |req| {
                    let ep = Arc::clone(&ep);
                    async move { Ok::<_, Infallible>(ep.handle(req, peer).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(sock), service);
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "Blob endpoint: connection ended");
                }
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    /// Answers one request (any failure becomes the service's error response).
    pub async fn handle(&self, req: http::Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let head = parts.method == Method::HEAD;
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut op = "unknown";
        let result = match request::parse(&parts.method, &parts.uri, &parts.headers) {
            Err(e) => Err(e),
            Ok(r) => {
                op = r.operation.name();
                match self.authorize(&parts, &r, peer) {
                    Err(e) => Err(e),
                    Ok(()) => self.execute(r, &parts.headers, body).await,
                }
            }
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(op, status = e.status.as_u16(), code = e.code, "Blob request refused");
                error_response(&e, &request_id, head)
            }
        };
        let h = resp.headers_mut();
        h.insert("x-ms-request-id", HeaderValue::from_str(&request_id).expect("a uuid is a header value"));
        if let Some(v) = parts.headers.get("x-ms-version") {
            h.insert("x-ms-version", v.clone());
        }
        // Byte for byte, as the SDKs compare it.
        if let Some(v) = parts.headers.get("x-ms-client-request-id") {
            h.insert("x-ms-client-request-id", v.clone());
        }
        h.insert(http::header::DATE, header(&httpdate::fmt_http_date(SystemTime::now())));
        h.insert(http::header::SERVER, HeaderValue::from_static(SERVER));
        let labels = vec![("operation", op.to_owned()), ("status", resp.status().as_u16().to_string())];
        self.requests.get_or_create(&labels).inc();
        tracing::trace!(
            op,
            status = resp.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "Blob request"
        );
        resp
    }

    /// Checks the request's credentials under the failed-authorization limit.
    fn authorize(&self, parts: &http::request::Parts, r: &Request, peer: SocketAddr) -> Result<(), ApiError> {
        if let Some(wait) = self.auth_limit.as_ref().and_then(|a| a.auth_throttled(peer.ip())) {
            return Err(ApiError::new(
                http::StatusCode::FORBIDDEN,
                "AuthenticationFailed",
                format!(
                    "Too many failed authentication attempts from {}. Try again in {} seconds.",
                    peer.ip(),
                    wait.as_secs().max(1)
                ),
            ));
        }
        let result = auth::authorize(self, &parts.method, &parts.uri, &parts.headers, r, peer);
        // Only a wrong signature or key counts (what guessing produces), not a SAS that lacks
        // a permission or has expired.
        if let (Err(e), Some(a)) = (&result, &self.auth_limit) {
            if e.code == "AuthenticationFailed" {
                a.auth_failed(peer.ip());
            }
        }
        result
    }

    async fn execute(
        &self,
        r: Request,
        headers: &http::HeaderMap,
        body: Incoming,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let s = &self.store;
        let (a, c) = (r.account.as_str(), r.container.as_str());
        let b = r.blob.as_deref().unwrap_or_default();
        Ok(match r.operation {
            Operation::CreateContainer { metadata } => {
                let e = s.create_container(a, c, metadata).await?;
                written(StatusCode::CREATED, e.etag, e.last_modified).body(Full::default()).expect("valid response")
            }
            Operation::ContainerProperties => {
                let e = s.container(a, c)?;
                let mut resp = written(StatusCode::OK, e.etag, e.last_modified)
                    .header("x-ms-lease-status", "unlocked")
                    .header("x-ms-lease-state", "available")
                    .header("x-ms-has-immutability-policy", "false")
                    .header("x-ms-has-legal-hold", "false")
                    .body(Full::default())
                    .expect("valid response");
                put_metadata(resp.headers_mut(), &e.metadata);
                resp
            }
            Operation::DeleteContainer { conditions } => {
                s.delete_container(a, c, &conditions).await?;
                accepted()
            }
            Operation::ListBlobs { prefix, marker, max_results, include_metadata } => {
                let page = s.list_blobs(a, c, &prefix, marker.as_deref(), max_results.unwrap_or(5000))?;
                let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
                let endpoint = format!("http://{host}/{a}/");
                let listing = response::Listing {
                    service_endpoint: &endpoint,
                    container: c,
                    prefix: &prefix,
                    marker: marker.as_deref(),
                    max_results,
                    include_metadata,
                };
                let xml = response::enumeration_results(&listing, &page.blobs, page.next_marker.as_deref());
                Response::builder()
                    .status(StatusCode::OK)
                    .header(http::header::CONTENT_TYPE, "application/xml")
                    .body(Full::new(xml))
                    .expect("valid response")
            }
            Operation::PutBlob { content_type, content_md5, metadata, conditions } => {
                let body = Limited::new(body, self.config.max_blob_bytes).collect().await.map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "RequestBodyTooLarge",
                            format!(
                                "The request body is larger than {} bytes, this endpoint's limit.",
                                self.config.max_blob_bytes
                            ),
                        )
                    } else {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "InvalidInput",
                            format!("Reading the request body failed: {e}"),
                        )
                    }
                })?;
                let put = PutBlob { body: body.to_bytes(), content_type, content_md5, metadata };
                let e = s.put_blob(a, c, b, put, &conditions).await?;
                written(StatusCode::CREATED, e.etag, e.last_modified)
                    .header("content-md5", response::md5_base64(&e.content_md5))
                    .header("x-ms-request-server-encrypted", "true")
                    .body(Full::default())
                    .expect("valid response")
            }
            Operation::SetBlobMetadata { metadata, conditions } => {
                let e = s.set_metadata(a, c, b, metadata, &conditions).await?;
                written(StatusCode::OK, e.etag, e.last_modified)
                    .header("x-ms-request-server-encrypted", "true")
                    .body(Full::default())
                    .expect("valid response")
            }
            Operation::GetBlob { head, range } => {
                let e = s.blob(a, c, b)?;
                let total = e.body.len() as u64;
                let (status, content) = match range {
                    None => (StatusCode::OK, e.body.clone()),
                    Some((start, _)) if start >= total => {
                        return Err(ApiError::new(
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            "InvalidRange",
                            "The range specified is invalid for the current size of the resource.",
                        ))
                    }
                    Some((start, end)) => {
                        let end = end.unwrap_or(total - 1).min(total - 1);
                        (StatusCode::PARTIAL_CONTENT, e.body.slice(start as usize..=end as usize))
                    }
                };
                let mut builder = written(status, e.etag, e.last_modified)
                    .header(http::header::CONTENT_TYPE, e.content_type.as_str())
                    .header(http::header::CONTENT_LENGTH, content.len())
                    .header(http::header::ACCEPT_RANGES, "bytes")
                    .header("x-ms-blob-type", "BlockBlob")
                    .header("x-ms-creation-time", response::rfc1123(e.created))
                    .header("x-ms-lease-status", "unlocked")
                    .header("x-ms-lease-state", "available")
                    .header("x-ms-server-encrypted", "true");
                if status == StatusCode::PARTIAL_CONTENT {
                    let start = range.map_or(0, |r| r.0);
                    let end = start + content.len() as u64 - 1;
                    builder = builder.header(http::header::CONTENT_RANGE, format!("bytes {start}-{end}/{total}"));
                } else {
                    builder = builder.header("content-md5", response::md5_base64(&e.content_md5));
                }
                let body = if head { Full::default() } else { Full::new(content) };
                let mut resp = builder.body(body).expect("valid response");
                put_metadata(resp.headers_mut(), &e.metadata);
                resp
            }
            Operation::DeleteBlob { conditions } => {
                s.delete_blob(a, c, b, &conditions).await?;
                let mut resp = accepted();
                resp.headers_mut().insert("x-ms-delete-type-permanent", HeaderValue::from_static("true"));
                resp
            }
        })
    }
}

fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A success that reports the entity's new ETag (quoted) and Last-Modified.
fn written(status: StatusCode, etag: ehub_blob_store::Etag, last_modified: i64) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(http::header::ETAG, etag.quoted())
        .header(http::header::LAST_MODIFIED, response::rfc1123(last_modified))
}

fn accepted() -> Response<Full<Bytes>> {
    Response::builder().status(StatusCode::ACCEPTED).body(Full::default()).expect("valid response")
}

fn put_metadata(h: &mut http::HeaderMap, metadata: &ehub_blob_store::Metadata) {
    for (k, v) in metadata {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(format!("x-ms-meta-{k}").as_bytes()), HeaderValue::from_str(v))
        {
            h.append(name, value);
        }
    }
}

/// The service's error response: `x-ms-error-code` always; the XML body except for HEAD.
fn error_response(e: &ApiError, request_id: &str, head: bool) -> Response<Full<Bytes>> {
    let builder = Response::builder().status(e.status).header("x-ms-error-code", e.code);
    if head {
        return builder.body(Full::default()).expect("valid response");
    }
    builder
        .header(http::header::CONTENT_TYPE, "application/xml")
        .body(Full::new(e.body(request_id, SystemTime::now())))
        .expect("valid response")
}
