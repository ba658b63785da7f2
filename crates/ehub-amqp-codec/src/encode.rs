//! Encoding of AMQP values, always in the forms the strictest official client accepts.
//!
//! Rules (reference §1 and §5): composites and performatives use a small-ulong descriptor
//! (`0x00 0x53 code`) followed by list8 or list32, never list0; no symbolic descriptors at top
//! level. Scalars use their smallest encoding.

use crate::decode::code;
use crate::error::EncodeError;
use crate::types::{Array, ArrayType, Descriptor, Value};
use bytes::{BufMut, BytesMut};

type Result<T = ()> = std::result::Result<T, EncodeError>;

/// Encodes any value in its smallest form.
pub fn encode_value(v: &Value, out: &mut BytesMut) -> Result {
    match v {
        Value::Null => out.put_u8(code::NULL),
        Value::Bool(true) => out.put_u8(code::TRUE),
        Value::Bool(false) => out.put_u8(code::FALSE),
        Value::Ubyte(x) => {
            out.put_u8(code::UBYTE);
            out.put_u8(*x);
        }
        Value::Ushort(x) => {
            out.put_u8(code::USHORT);
            out.put_u16(*x);
        }
        Value::Uint(x) => put_uint(*x, out),
        Value::Ulong(x) => put_ulong(*x, out),
        Value::Byte(x) => {
            out.put_u8(code::BYTE);
            out.put_i8(*x);
        }
        Value::Short(x) => {
            out.put_u8(code::SHORT);
            out.put_i16(*x);
        }
        Value::Int(x) => put_int(*x, out),
        Value::Long(x) => put_long(*x, out),
        Value::Float(x) => {
            out.put_u8(code::FLOAT);
            out.put_u32(x.to_bits());
        }
        Value::Double(x) => {
            out.put_u8(code::DOUBLE);
            out.put_u64(x.to_bits());
        }
        Value::Decimal32(b) => {
            out.put_u8(code::DECIMAL32);
            out.put_slice(b);
        }
        Value::Decimal64(b) => {
            out.put_u8(code::DECIMAL64);
            out.put_slice(b);
        }
        Value::Decimal128(b) => {
            out.put_u8(code::DECIMAL128);
            out.put_slice(b);
        }
        Value::Char(c) => {
            out.put_u8(code::CHAR);
            out.put_u32(*c as u32);
        }
        Value::Timestamp(t) => put_timestamp(t.0, out),
        Value::Uuid(u) => {
            out.put_u8(code::UUID);
            out.put_slice(u);
        }
        Value::Binary(b) => put_binary(b, out)?,
        Value::String(s) => put_string(s, out)?,
        Value::Symbol(s) => put_symbol(s.as_str(), out)?,
        Value::List(items) => {
            if items.is_empty() {
                out.put_u8(code::LIST0);
            } else {
                put_list(out, |out| {
                    for i in items {
                        encode_value(i, out)?;
                    }
                    Ok(items.len())
                })?;
            }
        }
        Value::Map(m) => put_map(out, |out| {
            for (k, v) in m {
                encode_value(k, out)?;
                encode_value(v, out)?;
            }
            Ok(m.len() * 2)
        })?,
        Value::Array(a) => put_array(a, out)?,
        Value::Described(d) => {
            out.put_u8(code::DESCRIBED);
            put_descriptor(&d.descriptor, out)?;
            encode_value(&d.value, out)?;
        }
    }
    Ok(())
}

/// Writes a descriptor value (after the 0x00 byte).
pub fn put_descriptor(d: &Descriptor, out: &mut BytesMut) -> Result {
    match d {
        Descriptor::Code(c) => put_ulong(*c, out),
        Descriptor::Symbol(s) => put_symbol(s.as_str(), out)?,
        Descriptor::Other(v) => encode_value(v, out)?,
    }
    Ok(())
}

/// Appends a constructor and its fixed-width bytes in one copy. Appending a `BytesMut` byte by
/// byte costs a capacity check and a call each, which dominates small values on hot paths.
fn put_constructor(code: u8, bytes: &[u8], out: &mut BytesMut) {
    let mut b = [0u8; 9];
    b[0] = code;
    b[1..=bytes.len()].copy_from_slice(bytes);
    out.extend_from_slice(&b[..=bytes.len()]);
}

/// `uint` in its smallest form.
pub fn put_uint(x: u32, out: &mut BytesMut) {
    if x == 0 {
        out.put_u8(code::UINT0);
    } else if x < 256 {
        put_constructor(code::SMALL_UINT, &[x as u8], out);
    } else {
        put_constructor(code::UINT, &x.to_be_bytes(), out);
    }
}

/// `ulong` in its smallest form.
pub fn put_ulong(x: u64, out: &mut BytesMut) {
    if x == 0 {
        out.put_u8(code::ULONG0);
    } else if x < 256 {
        put_constructor(code::SMALL_ULONG, &[x as u8], out);
    } else {
        put_constructor(code::ULONG, &x.to_be_bytes(), out);
    }
}

/// `int` in its smallest form.
pub fn put_int(x: i32, out: &mut BytesMut) {
    if (-128..=127).contains(&x) {
        put_constructor(code::SMALL_INT, &[x as u8], out);
    } else {
        put_constructor(code::INT, &x.to_be_bytes(), out);
    }
}

/// `long` in its smallest form.
pub fn put_long(x: i64, out: &mut BytesMut) {
    if (-128..=127).contains(&x) {
        put_constructor(code::SMALL_LONG, &[x as u8], out);
    } else {
        put_constructor(code::LONG, &x.to_be_bytes(), out);
    }
}

/// `timestamp`.
pub fn put_timestamp(ms: i64, out: &mut BytesMut) {
    put_constructor(code::TIMESTAMP, &ms.to_be_bytes(), out);
}

fn put_var(small: u8, large: u8, bytes: &[u8], out: &mut BytesMut) -> Result {
    if bytes.len() < 256 {
        put_constructor(small, &[bytes.len() as u8], out);
    } else {
        let n = u32::try_from(bytes.len()).map_err(|_| EncodeError::TooLarge(bytes.len()))?;
        put_constructor(large, &n.to_be_bytes(), out);
    }
    out.extend_from_slice(bytes);
    Ok(())
}

/// `binary` (vbin8 or vbin32).
pub fn put_binary(b: &[u8], out: &mut BytesMut) -> Result {
    put_var(code::VBIN8, code::VBIN32, b, out)
}

/// `string` (str8 or str32).
pub fn put_string(s: &str, out: &mut BytesMut) -> Result {
    put_var(code::STR8, code::STR32, s.as_bytes(), out)
}

/// `symbol` (sym8 or sym32).
pub fn put_symbol(s: &str, out: &mut BytesMut) -> Result {
    put_var(code::SYM8, code::SYM32, s.as_bytes(), out)
}

/// Writes a compound (list, map or array) whose body is produced by `body`.
///
/// The body is written once after a list32-sized header; when it turns out small, the header
/// is compacted to the 8-bit form by moving the body down. The closure returns the count.
fn put_compound<F>(small: u8, large: u8, out: &mut BytesMut, prefix: &[u8], body: F) -> Result
where
    F: FnOnce(&mut BytesMut) -> Result<usize>,
{
    let start = out.len();
    out.put_u8(large);
    out.put_u32(0); // size placeholder
    out.put_u32(0); // count placeholder
    out.put_slice(prefix);
    let count = body(out)?;
    let body_len = out.len() - start - 9;
    if body_len < 255 && count < 256 {
        // 8-bit form: code, size (count byte + body), count, body.
        out[start] = small;
        out[start + 1] = (body_len + 1) as u8;
        out[start + 2] = count as u8;
        out.copy_within(start + 9.., start + 3);
        out.truncate(out.len() - 6);
    } else {
        let size = u32::try_from(body_len + 4).map_err(|_| EncodeError::TooLarge(body_len))?;
        let count = u32::try_from(count).map_err(|_| EncodeError::TooLarge(count))?;
        out[start + 1..start + 5].copy_from_slice(&size.to_be_bytes());
        out[start + 5..start + 9].copy_from_slice(&count.to_be_bytes());
    }
    Ok(())
}

/// Writes a list8/list32 (never list0) whose items come from `body`.
pub fn put_list<F>(out: &mut BytesMut, body: F) -> Result
where
    F: FnOnce(&mut BytesMut) -> Result<usize>,
{
    put_compound(code::LIST8, code::LIST32, out, &[], body)
}

/// Writes a map8/map32; `body` returns the number of keys plus values.
pub fn put_map<F>(out: &mut BytesMut, body: F) -> Result
where
    F: FnOnce(&mut BytesMut) -> Result<usize>,
{
    put_compound(code::MAP8, code::MAP32, out, &[], body)
}

fn elem_code(t: ArrayType, items: &[crate::types::Value]) -> u8 {
    let any_large = |f: &dyn Fn(&Value) -> usize| items.iter().any(|v| f(v) >= 256);
    match t {
        ArrayType::Null => code::NULL,
        ArrayType::Bool => code::BOOLEAN,
        ArrayType::Ubyte => code::UBYTE,
        ArrayType::Ushort => code::USHORT,
        ArrayType::Uint => code::UINT,
        ArrayType::Ulong => code::ULONG,
        ArrayType::Byte => code::BYTE,
        ArrayType::Short => code::SHORT,
        ArrayType::Int => code::INT,
        ArrayType::Long => code::LONG,
        ArrayType::Float => code::FLOAT,
        ArrayType::Double => code::DOUBLE,
        ArrayType::Decimal32 => code::DECIMAL32,
        ArrayType::Decimal64 => code::DECIMAL64,
        ArrayType::Decimal128 => code::DECIMAL128,
        ArrayType::Char => code::CHAR,
        ArrayType::Timestamp => code::TIMESTAMP,
        ArrayType::Uuid => code::UUID,
        ArrayType::Binary => {
            if any_large(&|v| v.as_binary().map_or(0, |b| b.len())) {
                code::VBIN32
            } else {
                code::VBIN8
            }
        }
        ArrayType::String | ArrayType::Symbol => {
            let large = any_large(&|v| v.as_text().map_or(0, |s| s.len()));
            match (t, large) {
                (ArrayType::String, false) => code::STR8,
                (ArrayType::String, true) => code::STR32,
                (_, false) => code::SYM8,
                (_, true) => code::SYM32,
            }
        }
        ArrayType::List => code::LIST32,
        ArrayType::Map => code::MAP32,
        ArrayType::Array => code::ARRAY32,
    }
}

/// Writes one array element (no constructor) in the element format `c`.
fn put_elem(c: u8, v: &Value, out: &mut BytesMut) -> Result {
    match (c, v) {
        (code::NULL, Value::Null) => {}
        (code::BOOLEAN, Value::Bool(b)) => out.put_u8(*b as u8),
        (code::UBYTE, Value::Ubyte(x)) => out.put_u8(*x),
        (code::USHORT, Value::Ushort(x)) => out.put_u16(*x),
        (code::UINT, Value::Uint(x)) => out.put_u32(*x),
        (code::ULONG, Value::Ulong(x)) => out.put_u64(*x),
        (code::BYTE, Value::Byte(x)) => out.put_i8(*x),
        (code::SHORT, Value::Short(x)) => out.put_i16(*x),
        (code::INT, Value::Int(x)) => out.put_i32(*x),
        (code::LONG, Value::Long(x)) => out.put_i64(*x),
        (code::FLOAT, Value::Float(x)) => out.put_u32(x.to_bits()),
        (code::DOUBLE, Value::Double(x)) => out.put_u64(x.to_bits()),
        (code::DECIMAL32, Value::Decimal32(b)) => out.put_slice(b),
        (code::DECIMAL64, Value::Decimal64(b)) => out.put_slice(b),
        (code::DECIMAL128, Value::Decimal128(b)) => out.put_slice(b),
        (code::CHAR, Value::Char(ch)) => out.put_u32(*ch as u32),
        (code::TIMESTAMP, Value::Timestamp(t)) => out.put_i64(t.0),
        (code::UUID, Value::Uuid(u)) => out.put_slice(u),
        (code::VBIN8, Value::Binary(b)) => {
            out.put_u8(b.len() as u8);
            out.put_slice(b);
        }
        (code::VBIN32, Value::Binary(b)) => {
            out.put_u32(u32::try_from(b.len()).map_err(|_| EncodeError::TooLarge(b.len()))?);
            out.put_slice(b);
        }
        (code::STR8, Value::String(s)) | (code::SYM8, Value::Symbol(crate::types::Symbol(s))) => {
            out.put_u8(s.len() as u8);
            out.put_slice(s.as_bytes());
        }
        (code::STR32, Value::String(s)) | (code::SYM32, Value::Symbol(crate::types::Symbol(s))) => {
            out.put_u32(u32::try_from(s.len()).map_err(|_| EncodeError::TooLarge(s.len()))?);
            out.put_slice(s.as_bytes());
        }
        (code::LIST32 | code::MAP32 | code::ARRAY32, v) => {
            // Encode with constructor, force the 32-bit form, then drop the constructor byte.
            let mut tmp = BytesMut::new();
            encode_value(v, &mut tmp)?;
            let widened = widen_compound(&tmp, c).ok_or(EncodeError::HeterogeneousArray)?;
            out.put_slice(&widened[1..]);
        }
        _ => return Err(EncodeError::HeterogeneousArray),
    }
    Ok(())
}

/// Re-expresses an encoded list/map/array in its 32-bit form (arrays need one element width).
fn widen_compound(enc: &[u8], want: u8) -> Option<Vec<u8>> {
    let c = *enc.first()?;
    let (size, count, body): (u32, u32, &[u8]) = match c {
        code::LIST0 if want == code::LIST32 => (4, 0, &[]),
        code::LIST8 | code::MAP8 | code::ARRAY8 => {
            let size = *enc.get(1)? as u32;
            let count = *enc.get(2)? as u32;
            (size + 3, count, enc.get(3..)?)
        }
        code::LIST32 | code::MAP32 | code::ARRAY32 => {
            let mut v = vec![want];
            v.extend_from_slice(enc.get(1..)?);
            return (want == c).then_some(v);
        }
        _ => return None,
    };
    let expected = match c {
        code::LIST0 | code::LIST8 => code::LIST32,
        code::MAP8 => code::MAP32,
        _ => code::ARRAY32,
    };
    if expected != want {
        return None;
    }
    let mut v = Vec::with_capacity(body.len() + 9);
    v.push(want);
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(&count.to_be_bytes());
    v.extend_from_slice(body);
    Some(v)
}

/// Writes an array (array8/array32) with a single element constructor.
pub fn put_array(a: &Array, out: &mut BytesMut) -> Result {
    let c = elem_code(a.elem, &a.items);
    let mut prefix = BytesMut::new();
    if let Some(d) = &a.descriptor {
        prefix.put_u8(code::DESCRIBED);
        put_descriptor(d, &mut prefix)?;
    }
    prefix.put_u8(c);
    put_compound(code::ARRAY8, code::ARRAY32, out, &prefix, |out| {
        for v in &a.items {
            put_elem(c, v, out)?;
        }
        Ok(a.items.len())
    })
}

/// Writes a composite (described list) with a small-ulong descriptor.
///
/// `fields` writes each field through the [`FieldWriter`]. Trailing null fields are kept:
/// the Python SDK builds performatives from the field list positionally and fails with
/// "missing required positional arguments" when a list is shorter than the full field set.
pub fn put_composite<F>(descriptor: u64, out: &mut BytesMut, fields: F) -> Result
where
    F: FnOnce(&mut FieldWriter<'_>) -> Result,
{
    out.put_u8(code::DESCRIBED);
    put_ulong(descriptor, out);
    put_list(out, |out| {
        let mut w = FieldWriter { out, count: 0 };
        fields(&mut w)?;
        Ok(w.count)
    })
}

/// Writes the fields of a composite, counting them.
#[derive(Debug)]
pub struct FieldWriter<'a> {
    out: &'a mut BytesMut,
    count: usize,
}

impl FieldWriter<'_> {
    fn done(&mut self) {
        self.count += 1;
    }

    /// A null field.
    pub fn null(&mut self) {
        self.out.put_u8(code::NULL);
        self.done();
    }

    /// Any value.
    pub fn value(&mut self, v: &Value) -> Result {
        encode_value(v, self.out)?;
        self.done();
        Ok(())
    }

    /// An optional value.
    pub fn opt_value(&mut self, v: Option<&Value>) -> Result {
        match v {
            Some(v) => self.value(v),
            None => {
                self.null();
                Ok(())
            }
        }
    }

    /// A field written by a closure (for nested composites); `None` writes null.
    pub fn with<F>(&mut self, present: bool, f: F) -> Result
    where
        F: FnOnce(&mut BytesMut) -> Result,
    {
        if present {
            f(self.out)?;
            self.done();
        } else {
            self.null();
        }
        Ok(())
    }

    /// An optional `uint`.
    pub fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            Some(x) => {
                put_uint(x, self.out);
                self.done()
            }
            None => self.null(),
        }
    }

    /// An optional `ulong`.
    pub fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(x) => {
                put_ulong(x, self.out);
                self.done()
            }
            None => self.null(),
        }
    }

    /// An optional `ushort`.
    pub fn opt_u16(&mut self, v: Option<u16>) {
        match v {
            Some(x) => {
                self.out.put_u8(code::USHORT);
                self.out.put_u16(x);
                self.done()
            }
            None => self.null(),
        }
    }

    /// An optional `ubyte`.
    pub fn opt_u8(&mut self, v: Option<u8>) {
        match v {
            Some(x) => {
                self.out.put_u8(code::UBYTE);
                self.out.put_u8(x);
                self.done()
            }
            None => self.null(),
        }
    }

    /// An optional `boolean`.
    pub fn opt_bool(&mut self, v: Option<bool>) {
        match v {
            Some(b) => {
                self.out.put_u8(if b { code::TRUE } else { code::FALSE });
                self.done()
            }
            None => self.null(),
        }
    }

    /// An optional `string`.
    pub fn opt_string(&mut self, v: Option<&str>) -> Result {
        match v {
            Some(s) => {
                put_string(s, self.out)?;
                self.done()
            }
            None => self.null(),
        }
        Ok(())
    }

    /// An optional `symbol`.
    pub fn opt_symbol(&mut self, v: Option<&str>) -> Result {
        match v {
            Some(s) => {
                put_symbol(s, self.out)?;
                self.done()
            }
            None => self.null(),
        }
        Ok(())
    }

    /// An optional `binary`.
    pub fn opt_binary(&mut self, v: Option<&[u8]>) -> Result {
        match v {
            Some(b) => {
                put_binary(b, self.out)?;
                self.done()
            }
            None => self.null(),
        }
        Ok(())
    }

    /// An optional `timestamp`.
    pub fn opt_timestamp(&mut self, v: Option<i64>) {
        match v {
            Some(t) => {
                put_timestamp(t, self.out);
                self.done()
            }
            None => self.null(),
        }
    }

    /// An optional map (`fields`).
    pub fn opt_map(&mut self, v: Option<&[(Value, Value)]>) -> Result {
        match v {
            Some(m) => {
                put_map(self.out, |out| {
                    for (k, v) in m {
                        encode_value(k, out)?;
                        encode_value(v, out)?;
                    }
                    Ok(m.len() * 2)
                })?;
                self.done()
            }
            None => self.null(),
        }
        Ok(())
    }

    /// A multiple-symbol field, written as an array of symbols (null when empty).
    pub fn symbols(&mut self, v: &[crate::types::Symbol]) -> Result {
        if v.is_empty() {
            self.null();
            return Ok(());
        }
        let arr =
            Array { elem: ArrayType::Symbol, descriptor: None, items: v.iter().cloned().map(Value::Symbol).collect() };
        put_array(&arr, self.out)?;
        self.done();
        Ok(())
    }
}
