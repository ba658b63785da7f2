//! Zero-copy, bounded decoding of AMQP values.
//!
//! The decoder reads from a `Bytes` so that `binary` values (and message payloads) are slices of
//! the frame, not copies. Every declared size and count is checked against the bytes actually
//! present before anything is allocated, and nesting depth is bounded, so hostile input can
//! neither allocate without bound nor overflow the stack.

use crate::error::DecodeError;
use crate::types::{Array, ArrayType, Described, Descriptor, Symbol, Timestamp, Value};
use bytes::Bytes;

/// Maximum nesting of compound values accepted by the decoder.
pub const MAX_DEPTH: u32 = 48;

/// Format codes of the AMQP 1.0 type system.
#[allow(missing_docs)]
pub mod code {
    pub const DESCRIBED: u8 = 0x00;
    pub const NULL: u8 = 0x40;
    pub const TRUE: u8 = 0x41;
    pub const FALSE: u8 = 0x42;
    pub const BOOLEAN: u8 = 0x56;
    pub const UBYTE: u8 = 0x50;
    pub const USHORT: u8 = 0x60;
    pub const UINT: u8 = 0x70;
    pub const SMALL_UINT: u8 = 0x52;
    pub const UINT0: u8 = 0x43;
    pub const ULONG: u8 = 0x80;
    pub const SMALL_ULONG: u8 = 0x53;
    pub const ULONG0: u8 = 0x44;
    pub const BYTE: u8 = 0x51;
    pub const SHORT: u8 = 0x61;
    pub const INT: u8 = 0x71;
    pub const SMALL_INT: u8 = 0x54;
    pub const LONG: u8 = 0x81;
    pub const SMALL_LONG: u8 = 0x55;
    pub const FLOAT: u8 = 0x72;
    pub const DOUBLE: u8 = 0x82;
    pub const DECIMAL32: u8 = 0x74;
    pub const DECIMAL64: u8 = 0x84;
    pub const DECIMAL128: u8 = 0x94;
    pub const CHAR: u8 = 0x73;
    pub const TIMESTAMP: u8 = 0x83;
    pub const UUID: u8 = 0x98;
    pub const VBIN8: u8 = 0xa0;
    pub const VBIN32: u8 = 0xb0;
    pub const STR8: u8 = 0xa1;
    pub const STR32: u8 = 0xb1;
    pub const SYM8: u8 = 0xa3;
    pub const SYM32: u8 = 0xb3;
    pub const LIST0: u8 = 0x45;
    pub const LIST8: u8 = 0xc0;
    pub const LIST32: u8 = 0xd0;
    pub const MAP8: u8 = 0xc1;
    pub const MAP32: u8 = 0xd1;
    pub const ARRAY8: u8 = 0xe0;
    pub const ARRAY32: u8 = 0xf0;
}

/// A cursor over an AMQP-encoded buffer.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
    depth: u32,
}

/// A constructor read from the wire: a format code, possibly preceded by a descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct Constructor {
    /// The descriptor, for described values.
    pub descriptor: Option<Descriptor>,
    /// The primitive format code.
    pub code: u8,
}

type Result<T> = std::result::Result<T, DecodeError>;

impl<'a> Decoder<'a> {
    /// A decoder over the whole buffer.
    pub fn new(buf: &'a Bytes) -> Self {
        Decoder { buf, pos: 0, end: buf.len(), depth: 0 }
    }

    /// A decoder over `buf[start..end]`.
    pub fn with_range(buf: &'a Bytes, start: usize, end: usize) -> Self {
        let end = end.min(buf.len());
        Decoder { buf, pos: start.min(end), end, depth: 0 }
    }

    /// Current read position in the underlying buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// True when everything has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &'a Bytes {
        self.buf
    }

    fn err(&self, reason: &'static str) -> DecodeError {
        DecodeError::malformed(self.pos, reason)
    }

    /// Peeks at the next byte.
    pub fn peek_u8(&self) -> Result<u8> {
        if self.pos < self.end {
            Ok(self.buf[self.pos])
        } else {
            Err(self.err("unexpected end of input"))
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        let b = self.peek_u8()?;
        self.pos += 1;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        if self.remaining() < N {
            return Err(self.err("unexpected end of input"));
        }
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Takes `n` bytes as a range of the buffer, checking they are present.
    fn take(&mut self, n: usize) -> Result<(usize, usize)> {
        if self.remaining() < n {
            return Err(self.err("declared size exceeds the input"));
        }
        let start = self.pos;
        self.pos += n;
        Ok((start, self.pos))
    }

    /// Reads the size of a variable-width value (1 or 4 bytes).
    fn var_size(&mut self, wide: bool) -> Result<usize> {
        let n = if wide { self.u32()? as usize } else { self.u8()? as usize };
        if n > self.remaining() {
            return Err(self.err("declared size exceeds the input"));
        }
        Ok(n)
    }

    /// Reads a constructor (format code, with a descriptor for described types).
    pub fn read_constructor(&mut self) -> Result<Constructor> {
        let c = self.u8()?;
        if c != code::DESCRIBED {
            return Ok(Constructor { descriptor: None, code: c });
        }
        let descriptor = self.read_descriptor()?;
        let inner = self.u8()?;
        if inner == code::DESCRIBED {
            return Err(self.err("constructor is described twice"));
        }
        Ok(Constructor { descriptor: Some(descriptor), code: inner })
    }

    /// Reads a descriptor (the value after a 0x00 byte).
    pub fn read_descriptor(&mut self) -> Result<Descriptor> {
        // Fast path: the small-ulong form every section and performative uses.
        if let Some([code::SMALL_ULONG, c]) = self.buf.get(self.pos..self.end).and_then(|b| b.get(..2)) {
            let c = u64::from(*c);
            self.pos += 2;
            return Ok(Descriptor::Code(c));
        }
        self.enter()?;
        let v = self.read_value();
        self.depth -= 1;
        Ok(match v? {
            Value::Ulong(c) => Descriptor::Code(c),
            Value::Symbol(s) => Descriptor::Symbol(s),
            other => Descriptor::Other(Box::new(other)),
        })
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        Ok(())
    }

    /// Reads one complete value.
    pub fn read_value(&mut self) -> Result<Value> {
        let c = self.u8()?;
        if c == code::DESCRIBED {
            self.enter()?;
            let r = (|| {
                let descriptor = self.read_descriptor()?;
                let value = self.read_value()?;
                Ok(Value::Described(Box::new(Described { descriptor, value })))
            })();
            self.depth -= 1;
            return r;
        }
        self.read_by_code(c)
    }

    /// Reads a value whose constructor (format code) has already been consumed.
    pub fn read_by_code(&mut self, c: u8) -> Result<Value> {
        use code::*;
        Ok(match c {
            NULL => Value::Null,
            TRUE => Value::Bool(true),
            FALSE => Value::Bool(false),
            BOOLEAN => match self.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                _ => return Err(self.err("invalid boolean")),
            },
            UBYTE => Value::Ubyte(self.u8()?),
            USHORT => Value::Ushort(self.u16()?),
            UINT => Value::Uint(self.u32()?),
            SMALL_UINT => Value::Uint(self.u8()?.into()),
            UINT0 => Value::Uint(0),
            ULONG => Value::Ulong(self.u64()?),
            SMALL_ULONG => Value::Ulong(self.u8()?.into()),
            ULONG0 => Value::Ulong(0),
            BYTE => Value::Byte(self.u8()? as i8),
            SHORT => Value::Short(self.u16()? as i16),
            INT => Value::Int(self.u32()? as i32),
            SMALL_INT => Value::Int((self.u8()? as i8).into()),
            LONG => Value::Long(self.u64()? as i64),
            SMALL_LONG => Value::Long((self.u8()? as i8).into()),
            FLOAT => Value::Float(f32::from_bits(self.u32()?)),
            DOUBLE => Value::Double(f64::from_bits(self.u64()?)),
            DECIMAL32 => Value::Decimal32(self.array()?),
            DECIMAL64 => Value::Decimal64(self.array()?),
            DECIMAL128 => Value::Decimal128(self.array()?),
            CHAR => {
                let cp = self.u32()?;
                Value::Char(char::from_u32(cp).ok_or_else(|| self.err("invalid char"))?)
            }
            TIMESTAMP => Value::Timestamp(Timestamp(self.u64()? as i64)),
            UUID => Value::Uuid(self.array()?),
            VBIN8 | VBIN32 => {
                let n = self.var_size(c == VBIN32)?;
                let (s, e) = self.take(n)?;
                Value::Binary(self.buf.slice(s..e))
            }
            STR8 | STR32 => {
                let n = self.var_size(c == STR32)?;
                let (s, e) = self.take(n)?;
                let text = std::str::from_utf8(&self.buf[s..e])
                    .map_err(|_| DecodeError::malformed(s, "string is not valid UTF-8"))?;
                Value::String(text.to_owned())
            }
            SYM8 | SYM32 => {
                let n = self.var_size(c == SYM32)?;
                let (s, e) = self.take(n)?;
                // Symbols are ASCII by spec; accept UTF-8 leniently, refuse garbage.
                let text = std::str::from_utf8(&self.buf[s..e])
                    .map_err(|_| DecodeError::malformed(s, "symbol is not valid text"))?;
                Value::Symbol(Symbol(text.to_owned()))
            }
            LIST0 => Value::List(Vec::new()),
            LIST8 | LIST32 => {
                let (count, end) = self.compound_header(c == LIST32)?;
                self.enter()?;
                let r = self.read_items(count, end);
                self.depth -= 1;
                Value::List(r?)
            }
            MAP8 | MAP32 => {
                let (count, end) = self.compound_header(c == MAP32)?;
                if count % 2 != 0 {
                    return Err(self.err("map with an odd number of elements"));
                }
                self.enter()?;
                let r = self.read_items(count, end);
                self.depth -= 1;
                let mut items = r?.into_iter();
                let mut map = Vec::with_capacity(count / 2);
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    map.push((k, v));
                }
                Value::Map(map)
            }
            ARRAY8 | ARRAY32 => {
                let (count, end) = self.compound_header(c == ARRAY32)?;
                self.enter()?;
                let r = self.read_array_body(count, end);
                self.depth -= 1;
                Value::Array(r?)
            }
            _ => return Err(self.err("unknown format code")),
        })
    }

    /// Reads the size and count of a list, map or array and returns (count, end position).
    fn compound_header(&mut self, wide: bool) -> Result<(usize, usize)> {
        let size = self.var_size(wide)?;
        let body_start = self.pos;
        let end = body_start + size;
        let count = if wide {
            if size < 4 {
                return Err(self.err("compound size too small for its count"));
            }
            self.u32()? as usize
        } else {
            if size < 1 {
                return Err(self.err("compound size too small for its count"));
            }
            self.u8()? as usize
        };
        // Every element takes at least one byte, except inside arrays of zero-width elements;
        // bounding the count by the size keeps allocation proportional to the input.
        if count > size {
            return Err(self.err("element count exceeds the compound's size"));
        }
        Ok((count, end))
    }

    fn read_items(&mut self, count: usize, end: usize) -> Result<Vec<Value>> {
        let saved_end = self.end;
        self.end = end;
        let mut items = Vec::with_capacity(count);
        let r = (|| {
            for _ in 0..count {
                items.push(self.read_value()?);
            }
            if self.pos != end {
                return Err(self.err("compound size does not match its contents"));
            }
            Ok(())
        })();
        self.end = saved_end;
        r.map(|_| items)
    }

    fn read_array_body(&mut self, count: usize, end: usize) -> Result<Array> {
        let saved_end = self.end;
        self.end = end;
        let r = (|| {
            let ctor = self.read_constructor()?;
            let elem = array_type_of(ctor.code).ok_or_else(|| self.err("invalid array element type"))?;
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(self.read_by_code(ctor.code)?);
            }
            if self.pos != end {
                return Err(self.err("array size does not match its contents"));
            }
            Ok(Array { elem, descriptor: ctor.descriptor.map(Box::new), items })
        })();
        self.end = saved_end;
        r
    }

    /// Skips one complete value without building it. Used to locate message sections.
    pub fn skip_value(&mut self) -> Result<()> {
        use code::*;
        if let Some(end) = self.buf.get(..self.end).and_then(|b| plain_value_end(b, self.pos)) {
            self.pos = end;
            return Ok(());
        }
        let c = self.u8()?;
        let n = match c {
            DESCRIBED => {
                self.enter()?;
                let r = self.skip_value().and_then(|_| self.skip_value());
                self.depth -= 1;
                return r;
            }
            VBIN8 | STR8 | SYM8 | LIST8 | MAP8 | ARRAY8 => self.var_size(false)?,
            VBIN32 | STR32 | SYM32 | LIST32 | MAP32 | ARRAY32 => self.var_size(true)?,
            c => fixed_width(c).ok_or_else(|| self.err("unknown format code"))?,
        };
        self.take(n).map(|_| ())
    }

    /// Reads the header of a described list (a composite type or performative) and returns
    /// a reader for its fields. Accepts numeric and symbolic descriptors; the caller maps the
    /// returned descriptor to a type.
    pub fn read_composite(&mut self) -> Result<(Descriptor, FieldReader<'a>)> {
        if self.u8()? != code::DESCRIBED {
            return Err(self.err("expected a described type"));
        }
        let descriptor = self.read_descriptor()?;
        let c = self.u8()?;
        let (count, end) = match c {
            code::LIST0 => (0, self.pos),
            code::LIST8 | code::LIST32 => self.compound_header(c == code::LIST32)?,
            _ => return Err(self.err("composite type is not a list")),
        };
        let fields =
            FieldReader { dec: Decoder { buf: self.buf, pos: self.pos, end, depth: self.depth + 1 }, left: count };
        self.pos = end;
        Ok((descriptor, fields))
    }
}

/// The size after the constructor of a fixed-width value; `None` for variable-width,
/// described and unknown codes.
#[inline]
fn fixed_width(c: u8) -> Option<usize> {
    use code::*;
    Some(match c {
        NULL | TRUE | FALSE | UINT0 | ULONG0 | LIST0 => 0,
        BOOLEAN | UBYTE | SMALL_UINT | SMALL_ULONG | BYTE | SMALL_INT | SMALL_LONG => 1,
        USHORT | SHORT => 2,
        UINT | INT | FLOAT | DECIMAL32 | CHAR => 4,
        ULONG | LONG | DOUBLE | DECIMAL64 | TIMESTAMP => 8,
        DECIMAL128 | UUID => 16,
        _ => return None,
    })
}

/// Where the value at `pos` of `buf` ends, for a value that is not described: the hot case of
/// skipping map entries and sections, in one step without the decoder's error plumbing.
/// `None` for described values, unknown codes and values that overrun `buf`, which
/// [`Decoder::skip_value`] then handles (and reports) the generic way.
#[inline]
pub fn plain_value_end(buf: &[u8], pos: usize) -> Option<usize> {
    use code::*;
    let n = match *buf.get(pos)? {
        VBIN8 | STR8 | SYM8 | LIST8 | MAP8 | ARRAY8 => 1 + usize::from(*buf.get(pos + 1)?),
        VBIN32 | STR32 | SYM32 | LIST32 | MAP32 | ARRAY32 => {
            let &[a, b, c, d] = buf.get(pos + 1..pos + 5)? else { return None };
            4usize.checked_add(u32::from_be_bytes([a, b, c, d]) as usize)?
        }
        c => fixed_width(c)?,
    };
    let end = (pos + 1).checked_add(n)?;
    (end <= buf.len()).then_some(end)
}

/// Maps an element constructor to its array type.
pub fn array_type_of(c: u8) -> Option<ArrayType> {
    use code::*;
    Some(match c {
        NULL => ArrayType::Null,
        TRUE | FALSE | BOOLEAN => ArrayType::Bool,
        UBYTE => ArrayType::Ubyte,
        USHORT => ArrayType::Ushort,
        UINT | SMALL_UINT | UINT0 => ArrayType::Uint,
        ULONG | SMALL_ULONG | ULONG0 => ArrayType::Ulong,
        BYTE => ArrayType::Byte,
        SHORT => ArrayType::Short,
        INT | SMALL_INT => ArrayType::Int,
        LONG | SMALL_LONG => ArrayType::Long,
        FLOAT => ArrayType::Float,
        DOUBLE => ArrayType::Double,
        DECIMAL32 => ArrayType::Decimal32,
        DECIMAL64 => ArrayType::Decimal64,
        DECIMAL128 => ArrayType::Decimal128,
        CHAR => ArrayType::Char,
        TIMESTAMP => ArrayType::Timestamp,
        UUID => ArrayType::Uuid,
        VBIN8 | VBIN32 => ArrayType::Binary,
        STR8 | STR32 => ArrayType::String,
        SYM8 | SYM32 => ArrayType::Symbol,
        LIST0 | LIST8 | LIST32 => ArrayType::List,
        MAP8 | MAP32 => ArrayType::Map,
        ARRAY8 | ARRAY32 => ArrayType::Array,
        _ => return None,
    })
}

/// Reads the fields of a composite type one by one. Missing trailing fields read as null.
#[derive(Debug, Clone)]
pub struct FieldReader<'a> {
    dec: Decoder<'a>,
    left: usize,
}

impl<'a> FieldReader<'a> {
    /// Reads the next field as a value (`Null` when absent).
    pub fn value(&mut self) -> Result<Value> {
        if self.left == 0 {
            return Ok(Value::Null);
        }
        self.left -= 1;
        self.dec.read_value()
    }

    /// Skips the next field.
    pub fn skip(&mut self) -> Result<()> {
        if self.left == 0 {
            return Ok(());
        }
        self.left -= 1;
        self.dec.skip_value()
    }

    /// Peeks whether the next field is absent or null (without consuming it).
    pub fn next_is_null(&self) -> bool {
        self.left == 0 || self.dec.peek_u8().map(|c| c == code::NULL).unwrap_or(true)
    }

    fn bad(&self, reason: &'static str) -> DecodeError {
        DecodeError::malformed(self.dec.pos, reason)
    }

    /// Fast path for unsigned fields in their usual encodings, without building a `Value`
    /// (transfers, flows and dispositions are decoded once per event). `None` means "take the
    /// general path", which also produces the precise error for truncated or odd input.
    fn fast_unsigned(&mut self) -> Option<Option<u64>> {
        if self.left == 0 {
            return Some(None);
        }
        let b = self.dec.buf.get(self.dec.pos..self.dec.end)?;
        let (v, n) = match *b.first()? {
            code::NULL => (None, 1),
            code::UINT0 | code::ULONG0 => (Some(0), 1),
            code::SMALL_UINT | code::SMALL_ULONG | code::UBYTE => (Some(u64::from(*b.get(1)?)), 2),
            code::USHORT => (Some(u64::from(u16::from_be_bytes(b.get(1..3)?.try_into().ok()?))), 3),
            code::UINT => (Some(u64::from(u32::from_be_bytes(b.get(1..5)?.try_into().ok()?))), 5),
            code::ULONG => (Some(u64::from_be_bytes(b.get(1..9)?.try_into().ok()?)), 9),
            _ => return None,
        };
        self.consume(n);
        Some(v)
    }

    /// Consumes the current field, `n` bytes long (fast paths only).
    fn consume(&mut self, n: usize) {
        self.dec.pos += n;
        self.left -= 1;
    }

    fn narrow<T: TryFrom<u64>>(&self, v: Option<u64>, what: &'static str) -> Result<Option<T>> {
        v.map(|n| T::try_from(n).map_err(|_| self.bad(what))).transpose()
    }

    /// An optional `uint` field (accepts any unsigned width that fits).
    pub fn opt_u32(&mut self) -> Result<Option<u32>> {
        if let Some(v) = self.fast_unsigned() {
            return self.narrow(v, "expected uint");
        }
        match self.value()? {
            Value::Null => Ok(None),
            v => v.as_i128().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(|| self.bad("expected uint")),
        }
    }

    /// An optional `ushort` field.
    pub fn opt_u16(&mut self) -> Result<Option<u16>> {
        if let Some(v) = self.fast_unsigned() {
            return self.narrow(v, "expected ushort");
        }
        match self.value()? {
            Value::Null => Ok(None),
            v => v.as_i128().and_then(|n| u16::try_from(n).ok()).map(Some).ok_or_else(|| self.bad("expected ushort")),
        }
    }

    /// An optional `ulong` field.
    pub fn opt_u64(&mut self) -> Result<Option<u64>> {
        if let Some(v) = self.fast_unsigned() {
            return self.narrow(v, "expected ulong");
        }
        match self.value()? {
            Value::Null => Ok(None),
            v => v.as_i128().and_then(|n| u64::try_from(n).ok()).map(Some).ok_or_else(|| self.bad("expected ulong")),
        }
    }

    /// An optional `ubyte` field.
    pub fn opt_u8(&mut self) -> Result<Option<u8>> {
        if let Some(v) = self.fast_unsigned() {
            return self.narrow(v, "expected ubyte");
        }
        match self.value()? {
            Value::Null => Ok(None),
            v => v.as_i128().and_then(|n| u8::try_from(n).ok()).map(Some).ok_or_else(|| self.bad("expected ubyte")),
        }
    }

    /// An optional `boolean` field.
    pub fn opt_bool(&mut self) -> Result<Option<bool>> {
        if self.left == 0 {
            return Ok(None);
        }
        let fast = match self.dec.buf.get(self.dec.pos..self.dec.end).and_then(|b| b.first()) {
            Some(&code::NULL) => Some(None),
            Some(&code::TRUE) => Some(Some(true)),
            Some(&code::FALSE) => Some(Some(false)),
            _ => None,
        };
        if let Some(v) = fast {
            self.consume(1);
            return Ok(v);
        }
        match self.value()? {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(b)),
            _ => Err(self.bad("expected boolean")),
        }
    }

    /// An optional `string` field (symbols accepted too).
    pub fn opt_string(&mut self) -> Result<Option<String>> {
        match self.value()? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Symbol(s) => Ok(Some(s.0)),
            _ => Err(self.bad("expected string")),
        }
    }

    /// An optional `symbol` field (strings accepted too).
    pub fn opt_symbol(&mut self) -> Result<Option<Symbol>> {
        self.opt_string().map(|s| s.map(Symbol))
    }

    /// An optional `binary` field.
    pub fn opt_binary(&mut self) -> Result<Option<Bytes>> {
        if self.left > 0 {
            let (pos, end) = (self.dec.pos, self.dec.end);
            match self.dec.buf.get(pos..end) {
                Some([code::NULL, ..]) => {
                    self.consume(1);
                    return Ok(None);
                }
                Some([code::VBIN8, n, ..]) if pos + 2 + usize::from(*n) <= end => {
                    let n = usize::from(*n);
                    self.consume(2 + n);
                    return Ok(Some(self.dec.buf.slice(pos + 2..pos + 2 + n)));
                }
                _ => {}
            }
        }
        match self.value()? {
            Value::Null => Ok(None),
            Value::Binary(b) => Ok(Some(b)),
            _ => Err(self.bad("expected binary")),
        }
    }

    /// An optional `timestamp` field.
    pub fn opt_timestamp(&mut self) -> Result<Option<Timestamp>> {
        match self.value()? {
            Value::Null => Ok(None),
            Value::Timestamp(t) => Ok(Some(t)),
            _ => Err(self.bad("expected timestamp")),
        }
    }

    /// An optional `map` field (fields-typed maps).
    pub fn opt_map(&mut self) -> Result<Option<Vec<(Value, Value)>>> {
        match self.value()? {
            Value::Null => Ok(None),
            Value::Map(m) => Ok(Some(m)),
            _ => Err(self.bad("expected map")),
        }
    }

    /// A multiple-symbol field: a single symbol or an array of symbols.
    pub fn symbols(&mut self) -> Result<Vec<Symbol>> {
        match self.value()? {
            Value::Null => Ok(Vec::new()),
            Value::Symbol(s) => Ok(vec![s]),
            Value::String(s) => Ok(vec![Symbol(s)]),
            Value::Array(a) => a
                .items
                .into_iter()
                .map(|v| match v {
                    Value::Symbol(s) => Ok(s),
                    Value::String(s) => Ok(Symbol(s)),
                    _ => Err(self.bad("expected symbols")),
                })
                .collect(),
            _ => Err(self.bad("expected symbols")),
        }
    }

    /// Gives access to the raw decoder for nested composites.
    pub fn decoder(&mut self) -> Option<&mut Decoder<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(&mut self.dec)
    }
}
