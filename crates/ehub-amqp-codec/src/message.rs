//! AMQP messages: the owned section model, a zero-copy section scanner, annotation splicing and
//! the Microsoft batch format.
//!
//! Two views of a message coexist:
//! - [`Message`] owns decoded sections, for building and inspecting messages;
//! - [`SectionSpans`] locates the sections inside encoded bytes without decoding them, so a
//!   broker can store and forward messages as received and splice in new annotations.

use crate::decode::{code, plain_value_end, Decoder};
use crate::definitions::{descriptor, descriptor_code};
use crate::encode::{encode_value, put_binary, put_composite, put_list, put_map, put_ulong};
use crate::error::{DecodeError, EncodeError};
use crate::types::{Map, Symbol, Timestamp, Value};
use bytes::{BufMut, Bytes, BytesMut};
use std::ops::Range;

/// Message format of a Microsoft batch envelope (`0x80013700`).
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

/// The `header` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Header {
    /// Durable.
    pub durable: Option<bool>,
    /// Priority.
    pub priority: Option<u8>,
    /// Time to live in milliseconds.
    pub ttl: Option<u32>,
    /// First acquirer.
    pub first_acquirer: Option<bool>,
    /// Delivery count.
    pub delivery_count: Option<u32>,
}

/// The `properties` section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    /// Message id (ulong, uuid, binary or string).
    pub message_id: Option<Value>,
    /// User id.
    pub user_id: Option<Bytes>,
    /// To.
    pub to: Option<String>,
    /// Subject.
    pub subject: Option<String>,
    /// Reply-to.
    pub reply_to: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<Value>,
    /// Content type.
    pub content_type: Option<Symbol>,
    /// Content encoding.
    pub content_encoding: Option<Symbol>,
    /// Absolute expiry time.
    pub absolute_expiry_time: Option<Timestamp>,
    /// Creation time.
    pub creation_time: Option<Timestamp>,
    /// Group id.
    pub group_id: Option<String>,
    /// Group sequence.
    pub group_sequence: Option<u32>,
    /// Reply-to group id.
    pub reply_to_group_id: Option<String>,
}

impl Properties {
    fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// The body of a message.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Body {
    /// No body section (allowed when reading; Python management requests have none).
    #[default]
    Empty,
    /// One or more `data` sections.
    Data(Vec<Bytes>),
    /// One or more `amqp-sequence` sections.
    Sequence(Vec<Vec<Value>>),
    /// An `amqp-value` section.
    Value(Value),
}

/// An AMQP message with all sections decoded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// Header.
    pub header: Option<Header>,
    /// Delivery annotations.
    pub delivery_annotations: Option<Map>,
    /// Message annotations.
    pub message_annotations: Option<Map>,
    /// Properties.
    pub properties: Option<Box<Properties>>,
    /// Application properties (string keys by spec; kept as values to tolerate peers).
    pub application_properties: Option<Map>,
    /// Body.
    pub body: Body,
    /// Footer.
    pub footer: Option<Map>,
}

fn put_section_prefix(out: &mut BytesMut, code: u64) {
    out.put_u8(code::DESCRIBED);
    put_ulong(code, out);
}

fn put_map_section(out: &mut BytesMut, code: u64, m: &Map) -> Result<(), EncodeError> {
    put_section_prefix(out, code);
    put_map(out, |out| {
        for (k, v) in m {
            encode_value(k, out)?;
            encode_value(v, out)?;
        }
        Ok(m.len() * 2)
    })
}

impl Message {
    /// A message whose body is one `data` section.
    pub fn with_data(data: impl Into<Bytes>) -> Self {
        Message { body: Body::Data(vec![data.into()]), ..Default::default() }
    }

    /// A message whose body is an `amqp-value`.
    pub fn with_value(v: Value) -> Self {
        Message { body: Body::Value(v), ..Default::default() }
    }

    /// Encodes the message in canonical section order.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if let Some(h) = &self.header {
            put_composite(descriptor::HEADER, out, |w| {
                w.opt_bool(h.durable);
                w.opt_u8(h.priority);
                w.opt_u32(h.ttl);
                w.opt_bool(h.first_acquirer);
                w.opt_u32(h.delivery_count);
                Ok(())
            })?;
        }
        if let Some(m) = &self.delivery_annotations {
            put_map_section(out, descriptor::DELIVERY_ANNOTATIONS, m)?;
        }
        if let Some(m) = &self.message_annotations {
            put_map_section(out, descriptor::MESSAGE_ANNOTATIONS, m)?;
        }
        if let Some(p) = &self.properties {
            if !p.is_empty() {
                put_composite(descriptor::PROPERTIES, out, |w| {
                    w.opt_value(p.message_id.as_ref())?;
                    w.opt_binary(p.user_id.as_deref())?;
                    w.opt_string(p.to.as_deref())?;
                    w.opt_string(p.subject.as_deref())?;
                    w.opt_string(p.reply_to.as_deref())?;
                    w.opt_value(p.correlation_id.as_ref())?;
                    w.opt_symbol(p.content_type.as_ref().map(|s| s.as_str()))?;
                    w.opt_symbol(p.content_encoding.as_ref().map(|s| s.as_str()))?;
                    w.opt_timestamp(p.absolute_expiry_time.map(|t| t.0));
                    w.opt_timestamp(p.creation_time.map(|t| t.0));
                    w.opt_string(p.group_id.as_deref())?;
                    w.opt_u32(p.group_sequence);
                    w.opt_string(p.reply_to_group_id.as_deref())
                })?;
            }
        }
        if let Some(m) = &self.application_properties {
            put_map_section(out, descriptor::APPLICATION_PROPERTIES, m)?;
        }
        match &self.body {
            Body::Empty => {}
            Body::Data(parts) => {
                for d in parts {
                    put_section_prefix(out, descriptor::DATA);
                    put_binary(d, out)?;
                }
            }
            Body::Sequence(seqs) => {
                for s in seqs {
                    put_section_prefix(out, descriptor::AMQP_SEQUENCE);
                    put_list(out, |out| {
                        for v in s {
                            encode_value(v, out)?;
                        }
                        Ok(s.len())
                    })?;
                }
            }
            Body::Value(v) => {
                put_section_prefix(out, descriptor::AMQP_VALUE);
                encode_value(v, out)?;
            }
        }
        if let Some(m) = &self.footer {
            put_map_section(out, descriptor::FOOTER, m)?;
        }
        Ok(())
    }

    /// Encodes into a fresh `Bytes`.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(128);
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Decodes a message; sections may come in any order, and the body may be missing.
    pub fn decode(raw: &Bytes) -> Result<Self, DecodeError> {
        let mut m = Message::default();
        let mut dec = Decoder::new(raw);
        while !dec.is_empty() {
            let at = dec.position();
            if dec.peek_u8()? != code::DESCRIBED {
                return Err(DecodeError::Malformed { offset: at, reason: "message section is not described" });
            }
            let mut probe = dec.clone();
            probe.u8()?;
            let d = probe.read_descriptor()?;
            let section =
                descriptor_code(&d).ok_or(DecodeError::Malformed { offset: at, reason: "unknown message section" })?;
            match section {
                descriptor::HEADER => {
                    let (_, mut f) = dec.read_composite()?;
                    m.header = Some(Header {
                        durable: f.opt_bool()?,
                        priority: f.opt_u8()?,
                        ttl: f.opt_u32()?,
                        first_acquirer: f.opt_bool()?,
                        delivery_count: f.opt_u32()?,
                    });
                }
                descriptor::PROPERTIES => {
                    let (_, mut f) = dec.read_composite()?;
                    let nonnull = |v: Value| if v.is_null() { None } else { Some(v) };
                    m.properties = Some(Box::new(Properties {
                        message_id: nonnull(f.value()?),
                        user_id: f.opt_binary()?,
                        to: f.opt_string()?,
                        subject: f.opt_string()?,
                        reply_to: f.opt_string()?,
                        correlation_id: nonnull(f.value()?),
                        content_type: f.opt_symbol()?,
                        content_encoding: f.opt_symbol()?,
                        absolute_expiry_time: f.opt_timestamp()?,
                        creation_time: f.opt_timestamp()?,
                        group_id: f.opt_string()?,
                        group_sequence: f.opt_u32()?,
                        reply_to_group_id: f.opt_string()?,
                    }));
                }
                _ => {
                    dec = probe;
                    let v = dec.read_value()?;
                    let as_map = |v: Value| match v {
                        Value::Map(m) => Ok(m),
                        Value::Null => Ok(Vec::new()),
                        _ => Err(DecodeError::Malformed { offset: at, reason: "annotation section is not a map" }),
                    };
                    match section {
                        descriptor::DELIVERY_ANNOTATIONS => m.delivery_annotations = Some(as_map(v)?),
                        descriptor::MESSAGE_ANNOTATIONS => m.message_annotations = Some(as_map(v)?),
                        descriptor::APPLICATION_PROPERTIES => m.application_properties = Some(as_map(v)?),
                        descriptor::FOOTER => m.footer = Some(as_map(v)?),
                        descriptor::DATA => {
                            let Value::Binary(b) = v else {
                                return Err(DecodeError::Malformed {
                                    offset: at,
                                    reason: "data section is not binary",
                                });
                            };
                            match &mut m.body {
                                Body::Data(parts) => parts.push(b),
                                _ => m.body = Body::Data(vec![b]),
                            }
                        }
                        descriptor::AMQP_SEQUENCE => {
                            let Value::List(l) = v else {
                                return Err(DecodeError::Malformed {
                                    offset: at,
                                    reason: "amqp-sequence is not a list",
                                });
                            };
                            match &mut m.body {
                                Body::Sequence(s) => s.push(l),
                                _ => m.body = Body::Sequence(vec![l]),
                            }
                        }
                        descriptor::AMQP_VALUE => m.body = Body::Value(v),
                        _ => return Err(DecodeError::Malformed { offset: at, reason: "unknown message section" }),
                    }
                }
            }
        }
        Ok(m)
    }
}

/// Where each section of an encoded message lies, found without decoding values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SectionSpans {
    /// The header section.
    pub header: Option<Range<usize>>,
    /// The delivery-annotations section.
    pub delivery_annotations: Option<Range<usize>>,
    /// The message-annotations section.
    pub message_annotations: Option<Range<usize>>,
    /// The properties section.
    pub properties: Option<Range<usize>>,
    /// The application-properties section.
    pub application_properties: Option<Range<usize>>,
    /// From the first to the end of the last body section.
    pub body: Option<Range<usize>>,
    /// The descriptor code of the body sections (data, amqp-sequence or amqp-value).
    pub body_kind: Option<u64>,
    /// The footer section.
    pub footer: Option<Range<usize>>,
}

impl SectionSpans {
    /// Scans an encoded message. Sections may come in any order.
    pub fn scan(raw: &Bytes) -> Result<Self, DecodeError> {
        match Self::scan_common(raw) {
            Some(s) => Ok(s),
            None => Self::scan_generic(raw),
        }
    }

    /// The shape every producer and the service use: each section a small-ulong descriptor
    /// over an undescribed value. Runs per event on both sides of a consumer, where the
    /// generic walk below cost about 70 ns for a two-section message. `None` for anything
    /// else, including malformed input, which the generic walk then reports; where this returns
    /// `Some`, the generic walk returns the same spans (a property test and the
    /// `message_decoder` fuzz target check that).
    #[inline]
    fn scan_common(raw: &[u8]) -> Option<Self> {
        let mut s = SectionSpans::default();
        let mut at = 0;
        while at < raw.len() {
            let &[d, small_ulong, section, c] = raw.get(at..at + 4)? else { return None };
            if d != code::DESCRIBED || small_ulong != code::SMALL_ULONG {
                return None;
            }
            // The section's value, as the generic walk's `skip_value` would step over it.
            let end = plain_value_end(raw, at + 3)?;
            s.record(u64::from(section), at..end, c).ok()?;
            at = end;
        }
        Some(s)
    }

    /// Any valid encoding of the sections (other descriptor forms, fixed-width values). Public
    /// so tests and fuzzing can check [`SectionSpans::scan`]'s fast path against it.
    #[doc(hidden)]
    pub fn scan_generic(raw: &Bytes) -> Result<Self, DecodeError> {
        let mut s = SectionSpans::default();
        let mut dec = Decoder::new(raw);
        while !dec.is_empty() {
            let at = dec.position();
            if dec.u8()? != code::DESCRIBED {
                return Err(DecodeError::Malformed { offset: at, reason: "message section is not described" });
            }
            let d = dec.read_descriptor()?;
            let section =
                descriptor_code(&d).ok_or(DecodeError::Malformed { offset: at, reason: "unknown message section" })?;
            let value_at = dec.position();
            dec.skip_value()?;
            match s.record(section, at..dec.position(), raw[value_at]) {
                Ok(()) => {}
                Err(SectionError::NotBinary) => {
                    return Err(DecodeError::Malformed { offset: value_at, reason: "data section is not binary" })
                }
                Err(SectionError::Unknown) => {
                    return Err(DecodeError::Malformed { offset: at, reason: "unknown message section" })
                }
            }
        }
        Ok(s)
    }

    /// Notes a section with descriptor code `section` at `span`, whose value's constructor is
    /// `c`. Body sections widen the body span. Inlined: it is part of the per-event scan.
    #[inline(always)]
    fn record(&mut self, section: u64, span: Range<usize>, c: u8) -> Result<(), SectionError> {
        match section {
            descriptor::HEADER => self.header = Some(span),
            descriptor::DELIVERY_ANNOTATIONS => self.delivery_annotations = Some(span),
            descriptor::MESSAGE_ANNOTATIONS => self.message_annotations = Some(span),
            descriptor::PROPERTIES => self.properties = Some(span),
            descriptor::APPLICATION_PROPERTIES => self.application_properties = Some(span),
            descriptor::FOOTER => self.footer = Some(span),
            descriptor::DATA | descriptor::AMQP_SEQUENCE | descriptor::AMQP_VALUE => {
                if section == descriptor::DATA && c != code::VBIN8 && c != code::VBIN32 {
                    return Err(SectionError::NotBinary);
                }
                self.body = Some(match self.body.take() {
                    Some(b) => b.start.min(span.start)..b.end.max(span.end),
                    None => span,
                });
                self.body_kind = Some(section);
            }
            _ => return Err(SectionError::Unknown),
        }
        Ok(())
    }

    /// The byte ranges of the map section's value (after the descriptor).
    fn map_value_range(raw: &Bytes, section: &Range<usize>) -> Result<Range<usize>, DecodeError> {
        let mut dec = Decoder::with_range(raw, section.start, section.end);
        dec.u8()?;
        dec.read_descriptor()?;
        Ok(dec.position()..section.end)
    }
}

/// Why [`SectionSpans::record`] refused a section.
enum SectionError {
    Unknown,
    NotBinary,
}

/// Iterates the entries of an encoded map as raw byte ranges (key, value), without decoding.
#[derive(Debug)]
pub struct RawMapEntries<'a> {
    dec: Decoder<'a>,
    left: usize,
}

impl<'a> RawMapEntries<'a> {
    /// Iterates the map encoded at `range` of `raw` (the range starts at the map constructor).
    pub fn new(raw: &'a Bytes, range: Range<usize>) -> Result<Self, DecodeError> {
        let mut dec = Decoder::with_range(raw, range.start, range.end);
        let c = dec.u8()?;
        let count = match c {
            code::NULL => 0,
            code::MAP8 => {
                dec.u8()?;
                dec.u8()? as usize
            }
            code::MAP32 => {
                let mut b = [0u8; 8];
                for x in &mut b {
                    *x = dec.u8()?;
                }
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize
            }
            _ => return Err(DecodeError::Malformed { offset: range.start, reason: "expected a map" }),
        };
        if count % 2 != 0 {
            return Err(DecodeError::Malformed { offset: range.start, reason: "map with an odd number of elements" });
        }
        Ok(RawMapEntries { dec, left: count / 2 })
    }

    /// Iterates the entries of a map *section* (descriptor included in `section`).
    pub fn of_section(raw: &'a Bytes, section: &Range<usize>) -> Result<Self, DecodeError> {
        let r = SectionSpans::map_value_range(raw, section)?;
        Self::new(raw, r)
    }
}

impl Iterator for RawMapEntries<'_> {
    type Item = Result<(Range<usize>, Range<usize>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut step = || {
            let k0 = self.dec.position();
            self.dec.skip_value()?;
            let k1 = self.dec.position();
            self.dec.skip_value()?;
            Ok((k0..k1, k1..self.dec.position()))
        };
        let r = step();
        if r.is_err() {
            self.left = 0;
        }
        Some(r)
    }
}

/// Returns the text of an encoded symbol or string key, without allocating.
pub fn raw_text(raw: &[u8]) -> Option<&str> {
    std::str::from_utf8(&raw[raw_text_range(raw)?]).ok()
}

/// Where the text of an encoded symbol or string value lies within `raw` (which holds exactly
/// that value), without checking that it is UTF-8.
pub fn raw_text_range(raw: &[u8]) -> Option<Range<usize>> {
    let (&c, rest) = raw.split_first()?;
    let (start, n) = match c {
        code::SYM8 | code::STR8 => (2, *rest.first()? as usize),
        code::SYM32 | code::STR32 => (5, u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize),
        _ => return None,
    };
    (start + n == raw.len()).then_some(start..start + n)
}

/// Reads an encoded `long` (any width) or `int` value that is exactly `raw`, without the
/// generic decoder.
pub fn raw_long(raw: &[u8]) -> Option<i64> {
    match raw {
        [code::SMALL_LONG | code::SMALL_INT, x] => Some(i64::from(*x as i8)),
        [code::LONG, rest @ ..] => Some(i64::from_be_bytes(rest.try_into().ok()?)),
        [code::INT, rest @ ..] => Some(i64::from(i32::from_be_bytes(rest.try_into().ok()?))),
        _ => None,
    }
}

/// Reads an encoded `timestamp` value that is exactly `raw` (milliseconds since the epoch).
pub fn raw_timestamp(raw: &[u8]) -> Option<i64> {
    match raw {
        [code::TIMESTAMP, rest @ ..] => Some(i64::from_be_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

/// Looks up an annotation (symbol or string key) in a map section and decodes only its value.
pub fn find_annotation(raw: &Bytes, section: &Range<usize>, key: &str) -> Result<Option<Value>, DecodeError> {
    for e in RawMapEntries::of_section(raw, section)? {
        let (k, v) = e?;
        if raw_text(&raw[k]) == Some(key) {
            let mut dec = Decoder::with_range(raw, v.start, v.end);
            return dec.read_value().map(Some);
        }
    }
    Ok(None)
}

/// Entries to merge into an annotations section ([`splice_annotations`]): `count` pre-encoded
/// key/value pairs in `entries`, which replace the original's entries under `replace_keys`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnnotationEntries<'a> {
    /// Keys of the original section that are dropped (ours take their place).
    pub replace_keys: &'a [&'a str],
    /// The pre-encoded entries (key, value, key, value, ...).
    pub entries: &'a [u8],
    /// How many key/value pairs `entries` holds.
    pub count: usize,
}

/// Writes `raw` to `out` with its message annotations replaced by the original entries whose
/// keys are not in `message.replace_keys`, followed by `message.entries`. The original delivery
/// annotations are kept as they are, or, when `delivery` is given, merged with it the same way
/// (the sender's entries are kept beside ours, as the service does).
///
/// Sections are written in canonical order; everything except the annotations is copied as is.
pub fn splice_annotations(
    out: &mut BytesMut,
    raw: &Bytes,
    spans: &SectionSpans,
    message: AnnotationEntries<'_>,
    delivery: Option<AnnotationEntries<'_>>,
) -> Result<(), DecodeError> {
    if let Some(h) = &spans.header {
        out.extend_from_slice(&raw[h.clone()]);
    }
    match (delivery, &spans.delivery_annotations) {
        (Some(d), original) => put_merged_section(out, raw, descriptor::DELIVERY_ANNOTATIONS, original.as_ref(), d)?,
        (None, Some(original)) => out.extend_from_slice(&raw[original.clone()]),
        (None, None) => {}
    }
    put_merged_section(out, raw, descriptor::MESSAGE_ANNOTATIONS, spans.message_annotations.as_ref(), message)?;
    for s in [&spans.properties, &spans.application_properties, &spans.body, &spans.footer].into_iter().flatten() {
        out.extend_from_slice(&raw[s.clone()]);
    }
    Ok(())
}

/// Writes an annotations section: the entries of `original` (a section of `raw`) whose keys are
/// not replaced, then the new ones.
fn put_merged_section(
    out: &mut BytesMut,
    raw: &Bytes,
    code: u64,
    original: Option<&Range<usize>>,
    new: AnnotationEntries<'_>,
) -> Result<(), DecodeError> {
    put_section_prefix(out, code);
    let mut kept: Vec<Range<usize>> = Vec::new();
    if let Some(section) = original {
        for e in RawMapEntries::of_section(raw, section)? {
            let (k, v) = e?;
            let key = raw_text(&raw[k.clone()]);
            if !key.is_some_and(|k| new.replace_keys.contains(&k)) {
                kept.push(k.start..v.end);
            }
        }
    }
    let kept_len: usize = kept.iter().map(|r| r.len()).sum();
    let body_len = kept_len + new.entries.len();
    let count = kept.len() * 2 + new.count * 2;
    if body_len < 255 && count < 256 {
        out.put_u8(code::MAP8);
        out.put_u8((body_len + 1) as u8);
        out.put_u8(count as u8);
    } else {
        out.put_u8(code::MAP32);
        out.put_u32((body_len + 4) as u32);
        out.put_u32(count as u32);
    }
    for r in kept {
        out.extend_from_slice(&raw[r]);
    }
    out.extend_from_slice(new.entries);
    Ok(())
}

/// The inner messages of a batch envelope: each `data` section's bytes, zero-copy.
pub fn batch_items(raw: &Bytes, spans: &SectionSpans) -> Result<Vec<Bytes>, DecodeError> {
    let Some(body) = &spans.body else {
        return Ok(Vec::new());
    };
    if spans.body_kind != Some(descriptor::DATA) {
        return Err(DecodeError::Malformed { offset: body.start, reason: "batch body is not data sections" });
    }
    let mut items = Vec::new();
    let mut dec = Decoder::with_range(raw, body.start, body.end);
    while !dec.is_empty() {
        let at = dec.position();
        dec.u8()?;
        let d = dec.read_descriptor()?;
        if descriptor_code(&d) != Some(descriptor::DATA) {
            // Sections after the body (footer) are outside `body`; anything else is malformed.
            return Err(DecodeError::Malformed { offset: at, reason: "non-data section inside a batch body" });
        }
        // The binary's bytes, sliced without building a `Value`.
        let pos = dec.position();
        let Some((start, len)) = binary_head(raw, pos) else {
            return Err(DecodeError::Malformed { offset: at, reason: "data section is not binary" });
        };
        let end = len
            .and_then(|n| start.checked_add(n))
            .filter(|&e| e <= body.end)
            .ok_or(DecodeError::Malformed { offset: pos, reason: "data section runs past the message" })?;
        items.push(raw.slice(start..end));
        dec = Decoder::with_range(raw, end, body.end);
    }
    Ok(items)
}

/// Where the bytes of the binary whose constructor is at `pos` start, and the length its
/// header declares (`None` when the header is cut short). `None` when the constructor is not
/// vbin8 or vbin32.
fn binary_head(raw: &[u8], pos: usize) -> Option<(usize, Option<usize>)> {
    match *raw.get(pos)? {
        code::VBIN8 => Some((pos + 2, raw.get(pos + 1).map(|&n| usize::from(n)))),
        code::VBIN32 => {
            Some((pos + 5, raw.get(pos + 1..pos + 5).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)))
        }
        _ => None,
    }
}

/// The body's bytes, as a range of `raw`, of a message that is one `data` section and nothing
/// else (its descriptor in the usual small-ulong form): how Kafka records without key or
/// headers, and events sent as a body alone, are stored. `None` for any other shape, which
/// [`Message::decode`] handles; where this answers, decoding gives `Body::Data` of exactly
/// these bytes.
pub fn sole_data_section(raw: &[u8]) -> Option<Range<usize>> {
    let &[code::DESCRIBED, code::SMALL_ULONG, section, ..] = raw else { return None };
    if u64::from(section) != descriptor::DATA {
        return None;
    }
    let (start, len) = binary_head(raw, 3)?;
    (start.checked_add(len?)? == raw.len()).then_some(start..raw.len())
}

/// Encoded size of a `data` section holding `n` bytes (used for exact batch size accounting).
pub fn data_section_size(n: usize) -> usize {
    // 0x00 0x53 0x75 + vbin8 (1 + 1) or vbin32 (1 + 4)
    3 + if n < 256 { 2 } else { 5 } + n
}

/// Appends one pre-encoded message as a `data` section of a batch body.
pub fn put_data_section(out: &mut BytesMut, item: &[u8]) -> Result<(), EncodeError> {
    put_section_prefix(out, descriptor::DATA);
    put_binary(item, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    /// A message of one data section reads as its body without decoding, vbin8 or vbin32;
    /// anything around it, a second section or a cut-short binary is left to decoding.
    #[test]
    fn a_sole_data_section_is_found_without_decoding() {
        for len in [0, 5, 255, 256, 70_000] {
            let raw = Message::with_data(Bytes::from(vec![7u8; len])).to_bytes().unwrap();
            let body = sole_data_section(&raw).expect("one data section");
            assert_eq!(Message::decode(&raw).unwrap().body, Body::Data(vec![raw.slice(body)]));
        }
        let mut with_header = Message::with_data(Bytes::from_static(b"x"));
        with_header.header = Some(Header { durable: Some(true), ..Default::default() });
        let two = Message {
            body: Body::Data(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]),
            ..Default::default()
        };
        let plain = Message::with_data(Bytes::from_static(b"body")).to_bytes().unwrap();
        for raw in [
            with_header.to_bytes().unwrap(),
            two.to_bytes().unwrap(),
            Message::with_value(Value::Long(1)).to_bytes().unwrap(),
            plain.slice(..plain.len() - 1),
            plain.slice(..4),
        ] {
            assert_eq!(sole_data_section(&raw), None, "{raw:?}");
        }
    }

    /// The fast walk must actually take the usual shape (the agreement property test alone
    /// would pass if it declined everything), and decline what it is not for.
    #[test]
    fn the_fast_section_walk_takes_the_usual_shape() {
        let mut m = Message::with_data(Bytes::from_static(b"body"));
        m.message_annotations = Some(vec![(Value::Symbol("x-opt-offset".into()), Value::String("7".into()))]);
        m.application_properties = Some(vec![(Value::String("k".into()), Value::Long(1))]);
        let raw = m.to_bytes().unwrap();
        let fast = SectionSpans::scan_common(&raw).expect("the usual shape takes the fast walk");
        assert_eq!(Ok(fast), SectionSpans::scan_generic(&raw));
        // A section whose descriptor is a symbol instead of a small ulong goes the generic way.
        let mut sym = BytesMut::new();
        let name = b"amqp:data:binary";
        sym.extend_from_slice(&[code::DESCRIBED, code::SYM8, name.len() as u8]);
        sym.extend_from_slice(name);
        sym.extend_from_slice(&[code::VBIN8, 1, b'x']);
        let sym = sym.freeze();
        assert!(SectionSpans::scan_common(&sym).is_none());
        assert!(SectionSpans::scan(&sym).unwrap().body.is_some());
    }
}
