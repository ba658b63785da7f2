//! Reading the Blob service's XML: the List Blobs page and the error body's code.

use percent_encoding::percent_decode_str;
use quick_xml::events::{BytesRef, Event};
use quick_xml::Reader;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// One blob of a listing, with what a checkpoint store reads from it.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct BlobItem {
    pub name: String,
    /// As listed: without quotes.
    pub etag: String,
    pub last_modified: Option<SystemTime>,
    /// Keys as the service returned them (the stores write them lower-case).
    pub metadata: BTreeMap<String, String>,
}

/// One page of a listing.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ListPage {
    pub blobs: Vec<BlobItem>,
    pub next_marker: Option<String>,
}

/// The text of an entity or character reference (quick-xml reports them apart from text).
fn reference(r: &BytesRef<'_>) -> Result<String, String> {
    if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(c.to_string());
    }
    Ok(match &**r {
        "amp" => "&",
        "lt" => "<",
        "gt" => ">",
        "quot" => "\"",
        "apos" => "'",
        other => return Err(format!("unknown entity &{other};")),
    }
    .to_owned())
}

/// Parses an `EnumerationResults` document.
pub(crate) fn parse_list(body: &[u8]) -> Result<ListPage, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut reader = Reader::from_str(text);
    let mut page = ListPage::default();
    let mut path: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut blob: Option<BlobItem> = None;
    let mut name_encoded = false;
    loop {
        let event = reader.read_event().map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        let (name, closes) = match event {
            Event::Start(e) => {
                let name = e.name().0.to_owned();
                if name == "Blob" {
                    blob = Some(BlobItem::default());
                }
                if name == "Name" {
                    name_encoded = e
                        .try_get_attribute("Encoded")
                        .ok()
                        .flatten()
                        .is_some_and(|a| a.value.eq_ignore_ascii_case("true"));
                }
                path.push(name);
                current.clear();
                continue;
            }
            Event::Empty(e) => {
                current.clear();
                (e.name().0.to_owned(), false)
            }
            Event::End(_) => (path.pop().ok_or("unbalanced end tag")?, true),
            Event::Text(t) => {
                current.push_str(&t);
                continue;
            }
            Event::CData(t) => {
                current.push_str(&t);
                continue;
            }
            Event::GeneralRef(r) => {
                current.push_str(&reference(&r)?);
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        // `name` just closed (or was empty); `path` holds its ancestors.
        let parent = path.last().map(String::as_str);
        let grandparent = path.len().checked_sub(2).and_then(|i| path.get(i)).map(String::as_str);
        let value = std::mem::take(&mut current);
        match (grandparent, parent, name.as_str(), blob.as_mut()) {
            (_, Some("Blobs"), "Blob", _) if closes => page.blobs.extend(blob.take()),
            (_, Some("Blob"), "Name", Some(b)) => {
                b.name = if name_encoded { percent_decode_str(&value).decode_utf8_lossy().into_owned() } else { value };
            }
            (Some("Blob"), Some("Properties"), "Etag", Some(b)) => b.etag = value,
            (Some("Blob"), Some("Properties"), "Last-Modified", Some(b)) => {
                b.last_modified = httpdate::parse_http_date(&value).ok();
            }
            (Some("Blob"), Some("Metadata"), key, Some(b)) => {
                b.metadata.insert(key.to_owned(), value);
            }
            (_, Some("EnumerationResults"), "NextMarker", _) => page.next_marker = Some(value),
            _ => {}
        }
    }
    if !path.is_empty() {
        return Err("the document ends inside an element".into());
    }
    Ok(page)
}

/// The `<Code>` of an XML error body, if it is one.
pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let mut reader = Reader::from_str(text);
    let mut in_code = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.name().0 == "Code" => in_code = true,
            Event::Text(t) if in_code => return Some(t.trim().to_owned()),
            Event::Eof => return None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Azure's documented listing shape (and Azurite's): unquoted ETags, empty and absent
    /// metadata, an escaped name, a last page with an empty NextMarker.
    #[test]
    fn a_listing_is_read_as_the_service_writes_it() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1/" ContainerName="ckpt">
  <Prefix>ns/hub/$default/ownership/</Prefix><Marker/><MaxResults>5000</MaxResults>
  <Blobs>
    <Blob><Name>ns/hub/$default/ownership/0</Name>
      <Properties><Creation-Time>Thu, 20 Aug 2026 10:00:00 GMT</Creation-Time><Last-Modified>Thu, 20 Aug 2026 10:00:01 GMT</Last-Modified>
        <Etag>0x8DE1</Etag><Content-Length>0</Content-Length><BlobType>BlockBlob</BlobType></Properties>
      <Metadata><ownerid>abc</ownerid><empty/></Metadata></Blob>
    <Blob><Name>a&amp;b&#x2F;c</Name><Properties><Etag>0x2</Etag></Properties><Metadata/></Blob>
    <Blob><Name Encoded="true">x%2Fy</Name><Properties><Etag>0x3</Etag></Properties></Blob>
  </Blobs><NextMarker/>
</EnumerationResults>"#;
        let page = parse_list(body).unwrap();
        assert_eq!(page.next_marker.as_deref(), Some(""));
        assert_eq!(page.blobs.len(), 3);
        let b = &page.blobs[0];
        assert_eq!(b.name, "ns/hub/$default/ownership/0");
        assert_eq!(b.etag, "0x8DE1");
        assert_eq!(b.last_modified, Some(httpdate::parse_http_date("Thu, 20 Aug 2026 10:00:01 GMT").unwrap()));
        assert_eq!(b.metadata.get("ownerid").map(String::as_str), Some("abc"));
        assert_eq!(b.metadata.get("empty").map(String::as_str), Some(""));
        assert_eq!(page.blobs[1].name, "a&b/c");
        assert!(page.blobs[1].metadata.is_empty());
        assert_eq!(page.blobs[2].name, "x/y");
    }

    #[test]
    fn a_page_with_a_marker_says_so_and_bad_documents_are_errors() {
        let page =
            parse_list(b"<EnumerationResults><Blobs/><NextMarker>next</NextMarker></EnumerationResults>").unwrap();
        assert_eq!(page.next_marker.as_deref(), Some("next"));
        assert!(page.blobs.is_empty());
        assert!(parse_list(b"<EnumerationResults><Blobs>").is_err());
        assert!(parse_list(b"<a>&bogus;</a>").is_err());
        assert!(parse_list(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn error_bodies_yield_their_code() {
        let body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ContainerNotFound</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body).as_deref(), Some("ContainerNotFound"));
        assert_eq!(error_code(b"").as_deref(), None);
    }
}
