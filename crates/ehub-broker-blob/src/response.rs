//! Responses: the error type with its XML body, the EnumerationResults document, and the
//! headers every response carries.

use base64::Engine;
use bytes::Bytes;
use ehub_blob_store::{BlobEntry, BlobInfo, StoreError};
use http::StatusCode;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A refused request: status, the service's error code and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `x-ms-error-code` and `<Code>`.
    pub code: &'static str,
    /// `<Message>` (the request id and time are appended when sent).
    pub message: String,
    /// `<AuthenticationErrorDetail>` for a refused signature: what the server signed.
    pub auth_detail: Option<String>,
}

impl ApiError {
    /// An error with no authentication detail.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), auth_detail: None }
    }

    /// The XML body: `<Error><Code/><Message/></Error>`, the message followed by the request
    /// id and time as the service writes them.
    pub(crate) fn body(&self, request_id: &str, now: SystemTime) -> Bytes {
        let mut w = Writer::new(Vec::with_capacity(256));
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
        let _ = w.write_event(Event::Start(BytesStart::new("Error")));
        text(&mut w, "Code", self.code);
        text(
            &mut w,
            "Message",
            &format!("{}\nRequestId:{request_id}\nTime:{}", self.message, ehub_storage_auth::sas::format_iso8601(now)),
        );
        if let Some(d) = &self.auth_detail {
            text(&mut w, "AuthenticationErrorDetail", d);
        }
        let _ = w.write_event(Event::End(BytesEnd::new("Error")));
        Bytes::from(w.into_inner())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::ContainerNotFound | StoreError::BlobNotFound => StatusCode::NOT_FOUND,
            StoreError::ContainerAlreadyExists | StoreError::BlobAlreadyExists => StatusCode::CONFLICT,
            StoreError::ConditionNotMet => StatusCode::PRECONDITION_FAILED,
            StoreError::InvalidResourceName(_) | StoreError::Md5Mismatch => StatusCode::BAD_REQUEST,
            StoreError::Storage { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            StoreError::ContainerNotFound => "The specified container does not exist.".to_owned(),
            StoreError::ContainerAlreadyExists => "The specified container already exists.".to_owned(),
            StoreError::BlobNotFound => "The specified blob does not exist.".to_owned(),
            StoreError::BlobAlreadyExists => "The specified blob already exists.".to_owned(),
            StoreError::ConditionNotMet => {
                "The condition specified using HTTP conditional header(s) is not met.".to_owned()
            }
            StoreError::InvalidResourceName(m) => {
                format!("The specifed resource name contains invalid characters: {m}.")
            }
            StoreError::Md5Mismatch => {
                "The MD5 value specified in the request did not match with the MD5 value calculated by the server."
                    .to_owned()
            }
            StoreError::Storage { .. } => format!("The server encountered an internal error: {e}."),
        };
        ApiError::new(status, e.code(), message)
    }
}

fn text<W: std::io::Write>(w: &mut Writer<W>, name: &str, value: &str) {
    let _ = w.write_event(Event::Start(BytesStart::new(name)));
    let _ = w.write_event(Event::Text(BytesText::new(value)));
    let _ = w.write_event(Event::End(BytesEnd::new(name)));
}

fn empty<W: std::io::Write>(w: &mut Writer<W>, name: &str) {
    let _ = w.write_event(Event::Empty(BytesStart::new(name)));
}

/// Milliseconds since the epoch as a `SystemTime`.
pub(crate) fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// RFC 1123, as `Last-Modified` and the listing show times.
pub(crate) fn rfc1123(ms: i64) -> String {
    httpdate::fmt_http_date(time(ms))
}

pub(crate) fn md5_base64(md5: &[u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(md5)
}

/// The listing's parameters, echoed in the document.
pub(crate) struct Listing<'a> {
    pub service_endpoint: &'a str,
    pub container: &'a str,
    pub prefix: &'a str,
    pub marker: Option<&'a str>,
    pub max_results: Option<usize>,
    pub include_metadata: bool,
}

/// An `EnumerationResults` document: names XML-escaped, `Etag` unquoted, dates RFC 1123, and
/// `<Metadata>` (possibly empty) on every blob when metadata was asked for.
pub(crate) fn enumeration_results(l: &Listing<'_>, blobs: &[BlobInfo], next_marker: Option<&str>) -> Bytes {
    let mut w = Writer::new(Vec::with_capacity(512 + blobs.len() * 600));
    let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
    let root = BytesStart::new("EnumerationResults")
        .with_attributes([("ServiceEndpoint", l.service_endpoint), ("ContainerName", l.container)]);
    let _ = w.write_event(Event::Start(root));
    if l.prefix.is_empty() {
        empty(&mut w, "Prefix");
    } else {
        text(&mut w, "Prefix", l.prefix);
    }
    match l.marker {
        Some(m) => text(&mut w, "Marker", m),
        None => empty(&mut w, "Marker"),
    }
    if let Some(n) = l.max_results {
        text(&mut w, "MaxResults", &n.to_string());
    }
    let _ = w.write_event(Event::Start(BytesStart::new("Blobs")));
    for b in blobs {
        blob_xml(&mut w, b, l.include_metadata);
    }
    let _ = w.write_event(Event::End(BytesEnd::new("Blobs")));
    match next_marker {
        Some(m) => text(&mut w, "NextMarker", m),
        None => empty(&mut w, "NextMarker"),
    }
    let _ = w.write_event(Event::End(BytesEnd::new("EnumerationResults")));
    Bytes::from(w.into_inner())
}

fn blob_xml<W: std::io::Write>(w: &mut Writer<W>, b: &BlobInfo, include_metadata: bool) {
    let e: &BlobEntry = &b.entry;
    let _ = w.write_event(Event::Start(BytesStart::new("Blob")));
    text(w, "Name", &b.name);
    let _ = w.write_event(Event::Start(BytesStart::new("Properties")));
    text(w, "Creation-Time", &rfc1123(e.created));
    text(w, "Last-Modified", &rfc1123(e.last_modified));
    text(w, "Etag", &e.etag.to_string());
    text(w, "Content-Length", &e.body.len().to_string());
    text(w, "Content-Type", &e.content_type);
    empty(w, "Content-Encoding");
    empty(w, "Content-Language");
    text(w, "Content-MD5", &md5_base64(&e.content_md5));
    empty(w, "Cache-Control");
    empty(w, "Content-Disposition");
    text(w, "BlobType", "BlockBlob");
    text(w, "AccessTier", "Hot");
    text(w, "AccessTierInferred", "true");
    text(w, "LeaseStatus", "unlocked");
    text(w, "LeaseState", "available");
    text(w, "ServerEncrypted", "true");
    let _ = w.write_event(Event::End(BytesEnd::new("Properties")));
    if include_metadata {
        if e.metadata.is_empty() {
            empty(w, "Metadata");
        } else {
            let _ = w.write_event(Event::Start(BytesStart::new("Metadata")));
            for (k, v) in &e.metadata {
                text(w, k, v);
            }
            let _ = w.write_event(Event::End(BytesEnd::new("Metadata")));
        }
    }
    let _ = w.write_event(Event::End(BytesEnd::new("Blob")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_body_is_the_service_document() {
        let e = ApiError::new(StatusCode::NOT_FOUND, "BlobNotFound", "The specified blob does not exist.");
        let body = e.body("rid", UNIX_EPOCH);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobNotFound</Code><Message>The specified blob does not exist.\nRequestId:rid\nTime:1970-01-01T00:00:00.0000000Z</Message></Error>"
        );
    }
}
