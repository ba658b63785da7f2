//! Decoding a request into an [`Operation`]: the account, container and blob from the raw
//! path, the operation from the method and `restype`/`comp`, metadata and conditions from the
//! headers. Untrusted input: every failure is an [`ApiError`], never a panic (fuzzed).

use crate::response::ApiError;
use base64::Engine;
use ehub_blob_store::{Conditions, Metadata};
use http::{HeaderMap, Method, StatusCode, Uri};
use percent_encoding::percent_decode_str;
use std::collections::BTreeMap;

/// A decoded Blob request.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `PUT /a/c?restype=container`.
    CreateContainer {
        /// Metadata from `x-ms-meta-*`.
        metadata: Metadata,
    },
    /// `GET|HEAD /a/c?restype=container`.
    ContainerProperties,
    /// `DELETE /a/c?restype=container`.
    DeleteContainer {
        /// Write conditions.
        conditions: Conditions,
    },
    /// `GET /a/c?restype=container&comp=list`.
    ListBlobs {
        /// Only names starting with this.
        prefix: String,
        /// Names after this one (the previous page's `NextMarker`).
        marker: Option<String>,
        /// Page size as asked (`None`: 5000).
        max_results: Option<usize>,
        /// `include` named `metadata`.
        include_metadata: bool,
    },
    /// `PUT /a/c/b` (Put Blob, block blobs).
    PutBlob {
        /// `Content-Type` (or `x-ms-blob-content-type`).
        content_type: Option<String>,
        /// `Content-MD5` sent by the client, checked against the body.
        content_md5: Option<[u8; 16]>,
        /// Metadata from `x-ms-meta-*`.
        metadata: Metadata,
        /// Write conditions.
        conditions: Conditions,
    },
    /// `PUT /a/c/b?comp=metadata`.
    SetBlobMetadata {
        /// The new metadata, replacing the old.
        metadata: Metadata,
        /// Write conditions.
        conditions: Conditions,
    },
    /// `GET|HEAD /a/c/b`.
    GetBlob {
        /// HEAD: properties only.
        head: bool,
        /// `Range`/`x-ms-range`: first byte and, if given, last byte.
        range: Option<(u64, Option<u64>)>,
    },
    /// `DELETE /a/c/b`.
    DeleteBlob {
        /// Write conditions.
        conditions: Conditions,
    },
}

/// A request's target and operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The storage account (first path segment).
    pub account: String,
    /// The container.
    pub container: String,
    /// The blob, for blob operations (percent-decoded, `\` read as `/`).
    pub blob: Option<String>,
    /// What to do.
    pub operation: Operation,
}

/// What a SAS must grant for an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Needs {
    /// Account SAS resource type: `c` (container) or `o` (object).
    pub resource_type: char,
    /// Any one of these permissions suffices.
    pub permissions: &'static str,
}

impl Operation {
    pub(crate) fn needs(&self) -> Needs {
        let (resource_type, permissions) = match self {
            Operation::CreateContainer { .. } => ('c', "cw"),
            Operation::ContainerProperties => ('c', "r"),
            Operation::DeleteContainer { .. } => ('c', "d"),
            Operation::ListBlobs { .. } => ('c', "l"),
            Operation::PutBlob { conditions, .. } if conditions.if_none_match.as_deref() == Some("*") => ('o', "wc"),
            Operation::PutBlob { .. } | Operation::SetBlobMetadata { .. } => ('o', "w"),
            Operation::GetBlob { .. } => ('o', "r"),
            Operation::DeleteBlob { .. } => ('o', "d"),
        };
        Needs { resource_type, permissions }
    }

    /// The operation's name in logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::CreateContainer { .. } => "CreateContainer",
            Operation::ContainerProperties => "GetContainerProperties",
            Operation::DeleteContainer { .. } => "DeleteContainer",
            Operation::ListBlobs { .. } => "ListBlobs",
            Operation::PutBlob { .. } => "PutBlob",
            Operation::SetBlobMetadata { .. } => "SetBlobMetadata",
            Operation::GetBlob { head: true, .. } => "GetBlobProperties",
            Operation::GetBlob { .. } => "GetBlob",
            Operation::DeleteBlob { .. } => "DeleteBlob",
        }
    }
}

fn decode(s: &str) -> Result<String, ApiError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "InvalidUri", "The request URI is not valid UTF-8."))
}

/// The query's parameters, keys as sent, values decoded (`+` as a space).
pub(crate) fn query_params(uri: &Uri) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
        out.insert(k.to_ascii_lowercase(), v);
    }
    out
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidHeaderValue",
                format!("The value for header `{name}` is not valid ASCII."),
            )
        }),
    }
}

/// Metadata from `x-ms-meta-*` headers. Names must be C# identifiers (the service's rule);
/// HTTP/1 header names arrive lower-cased. Repeated headers are joined with `,`.
pub(crate) fn metadata(headers: &HeaderMap) -> Result<Metadata, ApiError> {
    let mut out: Metadata = Vec::new();
    for name in headers.keys() {
        let Some(key) = name.as_str().strip_prefix("x-ms-meta-") else { continue };
        let valid = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidMetadata",
                format!("The metadata name `{key}` is not a valid C# identifier."),
            ));
        }
        let mut values = Vec::new();
        for v in headers.get_all(name) {
            values.push(
                v.to_str()
                    .map_err(|_| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "InvalidMetadata",
                            format!("The value of metadata `{key}` is not valid ASCII."),
                        )
                    })?
                    .trim(),
            );
        }
        out.push((key.to_owned(), values.join(",")));
    }
    Ok(out)
}

fn http_date(headers: &HeaderMap, name: &str) -> Result<Option<i64>, ApiError> {
    let Some(v) = header(headers, name)? else { return Ok(None) };
    let t = httpdate::parse_http_date(v).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "InvalidHeaderValue", format!("`{name}` is not an HTTP date."))
    })?;
    Ok(Some(t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)))
}

/// Write conditions from `If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`.
pub(crate) fn conditions(headers: &HeaderMap) -> Result<Conditions, ApiError> {
    Ok(Conditions {
        if_match: header(headers, "if-match")?.map(str::to_owned),
        if_none_match: header(headers, "if-none-match")?.map(str::to_owned),
        if_modified_since: http_date(headers, "if-modified-since")?,
        if_unmodified_since: http_date(headers, "if-unmodified-since")?,
    })
}

fn range(headers: &HeaderMap) -> Result<Option<(u64, Option<u64>)>, ApiError> {
    let Some(v) = header(headers, "x-ms-range")?.or(header(headers, "range")?) else { return Ok(None) };
    let bad = || ApiError::new(StatusCode::BAD_REQUEST, "InvalidHeaderValue", format!("The range `{v}` is not valid."));
    let spec = v.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (start, end) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = start.trim().parse().map_err(|_| bad())?;
    let end = match end.trim() {
        "" => None,
        e => Some(e.parse::<u64>().map_err(|_| bad())?),
    };
    if end.is_some_and(|e| e < start) {
        return Err(bad());
    }
    Ok(Some((start, end)))
}

fn not_implemented(method: &Method, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "APINotImplemented",
        format!("ehub's Blob endpoint does not implement {method} on {what}; it serves what event processors use."),
    )
}

/// Decodes a request. The path is the raw request-target path: `/account/container[/blob]`.
pub fn parse(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Request, ApiError> {
    let path = uri.path().strip_prefix('/').unwrap_or(uri.path());
    let mut parts = path.splitn(3, '/');
    let account = decode(parts.next().unwrap_or_default())?;
    let container = decode(parts.next().unwrap_or_default())?;
    let blob = match parts.next() {
        Some(b) if !b.is_empty() => Some(decode(b)?.replace('\\', "/")),
        _ => None,
    };
    if account.is_empty() || container.is_empty() {
        return Err(not_implemented(method, "the account (service operations)"));
    }
    let q = query_params(uri);
    let restype = q.get("restype").map(String::as_str);
    let comp = q.get("comp").map(String::as_str);
    let operation = match (&blob, restype, comp) {
        (None, Some("container"), None) => match *method {
            Method::PUT => Operation::CreateContainer { metadata: metadata(headers)? },
            Method::GET | Method::HEAD => Operation::ContainerProperties,
            Method::DELETE => Operation::DeleteContainer { conditions: conditions(headers)? },
            _ => return Err(not_implemented(method, "a container")),
        },
        (None, Some("container"), Some("list")) if method == Method::GET => {
            let max_results = match q.get("maxresults") {
                None => None,
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n >= 1 => Some(n),
                    _ => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "OutOfRangeQueryParameterValue",
                            format!("maxresults `{v}` is not a number from 1 up."),
                        ))
                    }
                },
            };
            let include_metadata =
                q.get("include").is_some_and(|v| v.split(',').any(|i| i.trim().eq_ignore_ascii_case("metadata")));
            Operation::ListBlobs {
                prefix: q.get("prefix").cloned().unwrap_or_default(),
                marker: q.get("marker").filter(|m| !m.is_empty()).cloned(),
                max_results,
                include_metadata,
            }
        }
        (Some(_), None, Some("metadata")) if method == Method::PUT => {
            Operation::SetBlobMetadata { metadata: metadata(headers)?, conditions: conditions(headers)? }
        }
        (Some(_), None, None) => match *method {
            Method::PUT => {
                match header(headers, "x-ms-blob-type")? {
                    Some(t) if t.eq_ignore_ascii_case("BlockBlob") => {}
                    Some(t) => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "InvalidHeaderValue",
                            format!("x-ms-blob-type `{t}` is not supported here; only BlockBlob is."),
                        ))
                    }
                    None => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "MissingRequiredHeader",
                            "An HTTP header that's mandatory for this request is not specified: x-ms-blob-type.",
                        ))
                    }
                }
                let content_md5 = match header(headers, "content-md5")? {
                    None => None,
                    Some(v) => Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(v.trim())
                            .ok()
                            .and_then(|b| <[u8; 16]>::try_from(b).ok())
                            .ok_or_else(|| {
                                ApiError::new(StatusCode::BAD_REQUEST, "InvalidMd5", "Content-MD5 is not a base64 MD5.")
                            })?,
                    ),
                };
                let content_type =
                    header(headers, "x-ms-blob-content-type")?.or(header(headers, "content-type")?).map(str::to_owned);
                Operation::PutBlob {
                    content_type,
                    content_md5,
                    metadata: metadata(headers)?,
                    conditions: conditions(headers)?,
                }
            }
            Method::GET => Operation::GetBlob { head: false, range: range(headers)? },
            Method::HEAD => Operation::GetBlob { head: true, range: None },
            Method::DELETE => Operation::DeleteBlob { conditions: conditions(headers)? },
            _ => return Err(not_implemented(method, "a blob")),
        },
        (None, _, _) => return Err(not_implemented(method, "a container with these query parameters")),
        (Some(_), _, _) => return Err(not_implemented(method, "a blob with these query parameters")),
    };
    Ok(Request { account, container, blob, operation })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> Result<Request, ApiError> {
        let uri: Uri = uri.parse().unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        parse(&method, &uri, &h)
    }

    #[test]
    fn blob_names_in_every_encoding_reach_the_same_blob() {
        for path in [
            "/a/c/ns%2Fhub%2F%24default%2Fownership%2F0",
            "/a/c/ns/hub/%24default/ownership/0",
            "/a/c/ns/hub/$default/ownership/0",
            "/a/c/ns\\hub\\$default\\ownership\\0",
        ] {
            let r = req(Method::HEAD, path, &[]).unwrap();
            assert_eq!(r.blob.as_deref(), Some("ns/hub/$default/ownership/0"), "{path}");
            assert_eq!((r.account.as_str(), r.container.as_str()), ("a", "c"));
        }
    }

    #[test]
    fn operations_come_from_method_and_query() {
        let r = req(
            Method::GET,
            "/a/c?restype=container&comp=list&prefix=p%2F&include=Metadata,snapshots&maxresults=7&marker=p%2F1",
            &[],
        )
        .unwrap();
        assert_eq!(
            r.operation,
            Operation::ListBlobs {
                prefix: "p/".into(),
                marker: Some("p/1".into()),
                max_results: Some(7),
                include_metadata: true
            }
        );
        let r =
            req(Method::PUT, "/a/c/b?comp=metadata", &[("x-ms-meta-ownerid", ""), ("if-match", "\"0x1\"")]).unwrap();
        let Operation::SetBlobMetadata { metadata, conditions } = r.operation else { panic!() };
        assert_eq!(metadata, vec![("ownerid".to_string(), String::new())]);
        assert_eq!(conditions.if_match.as_deref(), Some("\"0x1\""));
        assert!(matches!(
            req(Method::PUT, "/a/c?restype=container", &[]).unwrap().operation,
            Operation::CreateContainer { .. }
        ));
        assert!(matches!(
            req(Method::GET, "/a/c/b", &[("range", "bytes=1-2")]).unwrap().operation,
            Operation::GetBlob { head: false, range: Some((1, Some(2))) }
        ));
    }

    #[test]
    fn bad_requests_get_the_service_codes() {
        let code = |r: Result<Request, ApiError>| r.unwrap_err().code;
        assert_eq!(code(req(Method::PUT, "/a/c/b", &[])), "MissingRequiredHeader");
        assert_eq!(code(req(Method::PUT, "/a/c/b", &[("x-ms-blob-type", "PageBlob")])), "InvalidHeaderValue");
        assert_eq!(code(req(Method::PUT, "/a/c/b?comp=metadata", &[("x-ms-meta-1x", "v")])), "InvalidMetadata");
        assert_eq!(code(req(Method::PUT, "/a/c/b?comp=metadata", &[("x-ms-meta-a-b", "v")])), "InvalidMetadata");
        assert_eq!(code(req(Method::PUT, "/a/c/b?comp=block&blockid=x", &[])), "APINotImplemented");
        assert_eq!(code(req(Method::GET, "/a?comp=list", &[])), "APINotImplemented");
        assert_eq!(
            code(req(Method::GET, "/a/c?restype=container&comp=list&maxresults=0", &[])),
            "OutOfRangeQueryParameterValue"
        );
        assert_eq!(code(req(Method::GET, "/a/c/%FF", &[])), "InvalidUri");
        assert_eq!(
            code(req(Method::PUT, "/a/c/b", &[("x-ms-blob-type", "BlockBlob"), ("content-md5", "nope")])),
            "InvalidMd5"
        );
    }
}
