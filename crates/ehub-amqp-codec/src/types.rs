//! The AMQP 1.0 type system as Rust values.

use bytes::Bytes;
use std::fmt;

/// An AMQP symbol: an ASCII string used for names and keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Symbol(pub String);

impl Symbol {
    /// Builds a symbol from anything string-like.
    pub fn new(s: impl Into<String>) -> Self {
        Symbol(s.into())
    }
    /// The symbol's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ":{}", self.0)
    }
}

impl From<&str> for Symbol {
    fn from(s: &str) -> Self {
        Symbol(s.to_owned())
    }
}

impl From<String> for Symbol {
    fn from(s: String) -> Self {
        Symbol(s)
    }
}

/// Milliseconds since the Unix epoch, UTC (the AMQP `timestamp` type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(pub i64);

/// The descriptor of a described type: numeric (domain << 32 | id) or symbolic.
#[derive(Debug, Clone, PartialEq)]
pub enum Descriptor {
    /// A numeric descriptor (`ulong`).
    Code(u64),
    /// A symbolic descriptor.
    Symbol(Symbol),
    /// Any other value used as descriptor (legal but unusual).
    Other(Box<Value>),
}

/// A described value: a descriptor plus the value it describes.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// The descriptor.
    pub descriptor: Descriptor,
    /// The described value.
    pub value: Value,
}

/// The element type of an AMQP array. Arrays carry one constructor for all elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ArrayType {
    /// `null` elements.
    Null,
    /// `boolean`.
    Bool,
    /// `ubyte`.
    Ubyte,
    /// `ushort`.
    Ushort,
    /// `uint`.
    Uint,
    /// `ulong`.
    Ulong,
    /// `byte`.
    Byte,
    /// `short`.
    Short,
    /// `int`.
    Int,
    /// `long`.
    Long,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// `decimal32`.
    Decimal32,
    /// `decimal64`.
    Decimal64,
    /// `decimal128`.
    Decimal128,
    /// `char`.
    Char,
    /// `timestamp`.
    Timestamp,
    /// `uuid`.
    Uuid,
    /// `binary`.
    Binary,
    /// `string`.
    String,
    /// `symbol`.
    Symbol,
    /// `list`.
    List,
    /// `map`.
    Map,
    /// `array` (arrays of arrays).
    Array,
}

/// An AMQP array: elements of one type, optionally all described by one descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The element type.
    pub elem: ArrayType,
    /// A descriptor shared by every element, for arrays of described values.
    pub descriptor: Option<Box<Descriptor>>,
    /// The elements, each a value of kind `elem` (without its descriptor).
    pub items: Vec<Value>,
}

impl Array {
    /// An array of strings (the form Event Hubs uses for `partition_ids`).
    pub fn strings<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Array {
            elem: ArrayType::String,
            descriptor: None,
            items: items.into_iter().map(|s| Value::String(s.into())).collect(),
        }
    }

    /// An array of symbols (the form used for capabilities and SASL mechanisms).
    pub fn symbols<I, S>(items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Array {
            elem: ArrayType::Symbol,
            descriptor: None,
            items: items.into_iter().map(|s| Value::Symbol(Symbol(s.into()))).collect(),
        }
    }
}

/// An AMQP map. Entries keep their wire order; keys may be any AMQP value.
pub type Map = Vec<(Value, Value)>;

/// Any AMQP value.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum Value {
    /// `null`.
    #[default]
    Null,
    /// `boolean`.
    Bool(bool),
    /// `ubyte`.
    Ubyte(u8),
    /// `ushort`.
    Ushort(u16),
    /// `uint`.
    Uint(u32),
    /// `ulong`.
    Ulong(u64),
    /// `byte`.
    Byte(i8),
    /// `short`.
    Short(i16),
    /// `int`.
    Int(i32),
    /// `long`.
    Long(i64),
    /// `float`.
    Float(f32),
    /// `double`.
    Double(f64),
    /// `decimal32`, kept as its IEEE 754 bytes (big-endian, as on the wire).
    Decimal32([u8; 4]),
    /// `decimal64`, kept as its bytes.
    Decimal64([u8; 8]),
    /// `decimal128`, kept as its bytes.
    Decimal128([u8; 16]),
    /// `char` (a UTF-32 code point).
    Char(char),
    /// `timestamp`.
    Timestamp(Timestamp),
    /// `uuid`.
    Uuid([u8; 16]),
    /// `binary`, zero-copy from the frame when decoded.
    Binary(Bytes),
    /// `string`.
    String(String),
    /// `symbol`.
    Symbol(Symbol),
    /// `list`.
    List(Vec<Value>),
    /// `map`.
    Map(Map),
    /// `array`.
    Array(Array),
    /// A described value.
    Described(Box<Described>),
}

impl Value {
    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The array element type that holds a value of this kind.
    pub fn array_type(&self) -> ArrayType {
        match self {
            Value::Null => ArrayType::Null,
            Value::Bool(_) => ArrayType::Bool,
            Value::Ubyte(_) => ArrayType::Ubyte,
            Value::Ushort(_) => ArrayType::Ushort,
            Value::Uint(_) => ArrayType::Uint,
            Value::Ulong(_) => ArrayType::Ulong,
            Value::Byte(_) => ArrayType::Byte,
            Value::Short(_) => ArrayType::Short,
            Value::Int(_) => ArrayType::Int,
            Value::Long(_) => ArrayType::Long,
            Value::Float(_) => ArrayType::Float,
            Value::Double(_) => ArrayType::Double,
            Value::Decimal32(_) => ArrayType::Decimal32,
            Value::Decimal64(_) => ArrayType::Decimal64,
            Value::Decimal128(_) => ArrayType::Decimal128,
            Value::Char(_) => ArrayType::Char,
            Value::Timestamp(_) => ArrayType::Timestamp,
            Value::Uuid(_) => ArrayType::Uuid,
            Value::Binary(_) => ArrayType::Binary,
            Value::String(_) => ArrayType::String,
            Value::Symbol(_) => ArrayType::Symbol,
            Value::List(_) => ArrayType::List,
            Value::Map(_) => ArrayType::Map,
            Value::Array(_) => ArrayType::Array,
            // Described values inside arrays are handled through Array::descriptor.
            Value::Described(d) => d.value.array_type(),
        }
    }

    /// The string, if this is a `string`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The text of a `string` or a `symbol`.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::Symbol(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// Any integer value widened to i128 (for tolerant readers).
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::Ubyte(v) => v.into(),
            Value::Ushort(v) => v.into(),
            Value::Uint(v) => v.into(),
            Value::Ulong(v) => v.into(),
            Value::Byte(v) => v.into(),
            Value::Short(v) => v.into(),
            Value::Int(v) => v.into(),
            Value::Long(v) => v.into(),
            _ => return None,
        })
    }

    /// Any integer value that fits in i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// The timestamp, if this is a `timestamp`.
    pub fn as_timestamp(&self) -> Option<Timestamp> {
        match self {
            Value::Timestamp(t) => Some(*t),
            _ => None,
        }
    }

    /// The bytes, if this is a `binary`.
    pub fn as_binary(&self) -> Option<&Bytes> {
        match self {
            Value::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The boolean, if this is a `boolean`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<Symbol> for Value {
    fn from(s: Symbol) -> Self {
        Value::Symbol(s)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Long(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Uint(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Ulong(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Bytes> for Value {
    fn from(v: Bytes) -> Self {
        Value::Binary(v)
    }
}
impl From<Timestamp> for Value {
    fn from(v: Timestamp) -> Self {
        Value::Timestamp(v)
    }
}

/// Looks a key up in a map by symbol or string text.
pub fn map_get<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v)
}
