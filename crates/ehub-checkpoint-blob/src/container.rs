//! A small Blob container client: the six operations a checkpoint store needs, signed with
//! SharedKey or carrying a SAS, over HTTP/1.1 (plain for Azurite and ehub's endpoint, TLS for
//! Azure). Written here rather than taken from `azure_storage_blob`, which has no SharedKey and
//! refuses plain HTTP (see `shared/reference/blob-checkpoints.md` §6).

use crate::xml::{self, BlobItem};
use bytes::Bytes;
use ehub::{Error, ErrorKind, Result};
use ehub_storage_auth::Credential;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The service version the requests ask for. Any version since 2019-07-07 serves these
/// operations; Azurite accepts this one without `--skipApiVersionCheck`.
pub(crate) const SERVICE_VERSION: &str = "2021-12-02";

/// Per-attempt limit: a request that takes longer is retried (or fails) rather than hanging a
/// load-balancing cycle.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default retries of a request that fails transiently (connection errors, 408, 429,
/// 5xx): two, after 200 and 400 ms. Shorter than the client's AMQP default (three, from 800 ms):
/// a failed load-balancing cycle is retried at the next interval anyway.
pub(crate) fn default_retry() -> ehub::RetryOptions {
    ehub::RetryOptions {
        max_retries: 2,
        backoff_factor: Duration::from_millis(200),
        max_backoff: Duration::from_secs(5),
        mode: ehub::RetryMode::Exponential,
    }
}

/// Characters left as they are in a path segment or query value: RFC 3986's unreserved set.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A Blob response: status, headers and the whole (small) body.
pub(crate) struct Response {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The storage error code: the `x-ms-error-code` header, else the XML body's `<Code>`.
    pub fn error_code(&self) -> Option<String> {
        self.headers
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| xml::error_code(&self.body))
    }

    /// The quoted `ETag` and the `Last-Modified` time of a write.
    pub fn etag_and_time(&self) -> Result<(String, SystemTime)> {
        let etag = self.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(quoted);
        let time = self
            .headers
            .get(http::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        match (etag, time) {
            (Some(e), Some(t)) => Ok((e, t)),
            _ => Err(Error::new(
                ErrorKind::CheckpointStore,
                format!("the Blob service answered a write ({}) without an ETag or Last-Modified header", self.status),
            )),
        }
    }
}

/// An ETag in its quoted form, whichever form it came in (the list XML has none, headers have).
pub(crate) fn quoted(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One container of one account.
#[derive(Clone)]
pub(crate) struct ContainerClient {
    http: HttpClient,
    /// `{endpoint}/{container}`, no trailing `/`.
    url: Arc<str>,
    container: Arc<str>,
    credential: Credential,
    /// `maxresults` of a listing page; the service's default (5000) when `None`.
    pub page_size: Option<u32>,
    /// Retries of transient failures, with the client's policy type.
    pub retry: ehub::RetryOptions,
}

impl ContainerClient {
    pub fn new(endpoint: &str, container: &str, credential: Credential) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| Error::new(ErrorKind::InvalidArgument, "TLS setup for the Blob store").with_source(e))?
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        if container.is_empty() || container.contains('/') {
            return Err(Error::new(ErrorKind::InvalidArgument, format!("`{container}` is not a container name")));
        }
        let url = format!("{}/{}", endpoint.trim_end_matches('/'), utf8_percent_encode(container, ENCODE));
        Ok(ContainerClient {
            http,
            url: url.into(),
            container: container.into(),
            credential,
            page_size: None,
            retry: default_retry(),
        })
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends a request, retrying transient failures; any status comes back as a [`Response`].
    async fn send(
        &self,
        method: Method,
        blob: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(HeaderName, String)],
    ) -> Result<Response> {
        let mut uri = String::with_capacity(self.url.len() + 128);
        uri.push_str(&self.url);
        if let Some(blob) = blob {
            // Each segment encoded, `/` kept (as the JavaScript and .NET SDKs send names).
            for segment in blob.split('/') {
                uri.push('/');
                uri.extend(utf8_percent_encode(segment, ENCODE));
            }
        }
        let mut sep = '?';
        for (k, v) in query {
            uri.push(sep);
            sep = '&';
            uri.push_str(k);
            uri.push('=');
            uri.extend(utf8_percent_encode(v, ENCODE));
        }
        if let Credential::Sas(sas) = &self.credential {
            uri.push(sep);
            uri.push_str(sas);
        }
        let mut retried = 0;
        loop {
            let request = self.request(&method, &uri, headers)?;
            let outcome = match tokio::time::timeout(ATTEMPT_TIMEOUT, self.exchange(request)).await {
                // A transient status is returned as it is once the retries are spent.
                Ok(Ok(r)) if is_transient_status(r.status) && retried < self.retry.max_retries => {
                    Err(status_error(&method, &uri, &r))
                }
                Ok(result) => result,
                Err(_) => Err(Error::new(
                    ErrorKind::OperationTimeout,
                    format!("checkpoint store: {method} {uri} did not complete within {ATTEMPT_TIMEOUT:?}"),
                )),
            };
            match outcome {
                Err(e) if e.is_transient() && retried < self.retry.max_retries => {
                    let delay = self.retry.delay(retried);
                    tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "blob request failed; retrying");
                    tokio::time::sleep(delay).await;
                    retried += 1;
                }
                other => return other,
            }
        }
    }

    fn request(&self, method: &Method, uri: &str, headers: &[(HeaderName, String)]) -> Result<Request<Full<Bytes>>> {
        let bad =
            |e: http::Error| Error::new(ErrorKind::InvalidArgument, format!("Blob request `{uri}`")).with_source(e);
        let mut req = Request::builder().method(method.clone()).uri(uri).body(Full::new(Bytes::new())).map_err(bad)?;
        let h = req.headers_mut();
        let value = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| Error::new(ErrorKind::InvalidArgument, format!("`{v}` cannot be sent in a header")))
        };
        h.insert("x-ms-version", HeaderValue::from_static(SERVICE_VERSION));
        h.insert("x-ms-date", value(&httpdate::fmt_http_date(SystemTime::now()))?);
        h.insert("x-ms-client-request-id", value(&uuid::Uuid::new_v4().to_string())?);
        if method == Method::PUT {
            h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        for (k, v) in headers {
            h.insert(k.clone(), value(v)?);
        }
        if let Credential::SharedKey(key) = &self.credential {
            let auth = key.authorization(req.method(), req.uri(), req.headers());
            req.headers_mut().insert(http::header::AUTHORIZATION, value(&auth)?);
        }
        Ok(req)
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Response> {
        let what = format!("{} {}", request.method(), request.uri());
        let response = self.http.request(request).await.map_err(|e| {
            Error::new(ErrorKind::Connect, format!("checkpoint store: {what}: the Blob service cannot be reached"))
                .with_source(e)
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| Error::new(ErrorKind::ConnectionLost, format!("checkpoint store: {what}")).with_source(e))?
            .to_bytes();
        Ok(Response { status: parts.status, headers: parts.headers, body })
    }

    /// Every blob whose name starts with `prefix`, with its metadata, following `NextMarker`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<BlobItem>> {
        let mut items = Vec::new();
        let mut marker = String::new();
        let page_size = self.page_size.map(|n| n.to_string());
        loop {
            let mut query =
                vec![("restype", "container"), ("comp", "list"), ("prefix", prefix), ("include", "metadata")];
            if !marker.is_empty() {
                query.push(("marker", &marker));
            }
            if let Some(n) = &page_size {
                query.push(("maxresults", n));
            }
            let r = self.send(Method::GET, None, &query, &[]).await?;
            if r.status != StatusCode::OK {
                return Err(status_error(&Method::GET, &self.url, &r));
            }
            let page = xml::parse_list(&r.body).map_err(|why| {
                Error::new(ErrorKind::CheckpointStore, format!("checkpoint store: unreadable blob listing: {why}"))
            })?;
            items.extend(page.blobs);
            match page.next_marker {
                Some(m) if !m.is_empty() => marker = m,
                _ => return Ok(items),
            }
        }
    }

    /// Set Blob Metadata (replacing all of it), under an optional condition header.
    pub async fn set_metadata(
        &self,
        blob: &str,
        metadata: &BTreeMap<&str, &str>,
        condition: Option<(HeaderName, String)>,
    ) -> Result<Response> {
        let headers = metadata_headers(metadata, condition)?;
        self.send(Method::PUT, Some(blob), &[("comp", "metadata")], &headers).await
    }

    /// Put Blob: an empty block blob with `metadata`, under an optional condition header.
    pub async fn put_empty(
        &self,
        blob: &str,
        metadata: &BTreeMap<&str, &str>,
        condition: Option<(HeaderName, String)>,
    ) -> Result<Response> {
        let mut headers = metadata_headers(metadata, condition)?;
        headers.push((HeaderName::from_static("x-ms-blob-type"), "BlockBlob".into()));
        headers.push((http::header::CONTENT_TYPE, "application/octet-stream".into()));
        self.send(Method::PUT, Some(blob), &[], &headers).await
    }

    /// Creates the container; `Ok(false)` when it already exists.
    pub async fn create(&self) -> Result<bool> {
        let r = self.send(Method::PUT, None, &[("restype", "container")], &[]).await?;
        match r.status {
            StatusCode::CREATED => Ok(true),
            StatusCode::CONFLICT if r.error_code().as_deref() == Some("ContainerAlreadyExists") => Ok(false),
            _ => Err(status_error(&Method::PUT, &self.url, &r)),
        }
    }

    /// Whether the container exists (Get Container Properties).
    pub async fn exists(&self) -> Result<bool> {
        let r = self.send(Method::HEAD, None, &[("restype", "container")], &[]).await?;
        match r.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(&Method::HEAD, &self.url, &r)),
        }
    }
}

fn metadata_headers(
    metadata: &BTreeMap<&str, &str>,
    condition: Option<(HeaderName, String)>,
) -> Result<Vec<(HeaderName, String)>> {
    let mut headers = Vec::with_capacity(metadata.len() + 1);
    for (k, v) in metadata {
        let name = HeaderName::try_from(format!("x-ms-meta-{k}"))
            .map_err(|_| Error::new(ErrorKind::InvalidArgument, format!("`{k}` is not a metadata name")))?;
        headers.push((name, (*v).to_owned()));
    }
    headers.extend(condition);
    Ok(headers)
}

fn is_transient_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// The typed error of an unexpected Blob status: 403 is authentication, a missing container is
/// not-found, 408/429/5xx are transient, anything else is a checkpoint-store error.
pub(crate) fn status_error(method: &Method, uri: &str, r: &Response) -> Error {
    let code = r.error_code().unwrap_or_default();
    let uri = uri.split('?').next().unwrap_or(uri);
    let message = format!("checkpoint store: {method} {uri}: {} {code}", r.status.as_u16());
    let kind = match r.status {
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => ErrorKind::Authentication,
        StatusCode::NOT_FOUND => ErrorKind::ResourceNotFound,
        s if is_transient_status(s) => ErrorKind::ServerBusy,
        _ => ErrorKind::CheckpointStore,
    };
    let hint = match code.as_str() {
        "ContainerNotFound" => {
            " (the container does not exist; the official SDKs and ehub never create it on their own)"
        }
        "AuthenticationFailed" | "AuthorizationFailure" => " (check the account key or SAS)",
        _ => "",
    };
    Error::new(kind, format!("{message}{hint}"))
}
