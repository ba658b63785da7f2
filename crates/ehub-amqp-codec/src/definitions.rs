//! Composite types shared by performatives: errors, termini and delivery states.

use crate::decode::{Decoder, FieldReader};
use crate::encode::{put_composite, FieldWriter};
use crate::error::{DecodeError, EncodeError};
use crate::types::{Descriptor, Map, Symbol, Value};
use bytes::BytesMut;

type DResult<T> = Result<T, DecodeError>;
type EResult = Result<(), EncodeError>;

/// Numeric descriptors of the AMQP 1.0 composite types.
#[allow(missing_docs)]
pub mod descriptor {
    pub const OPEN: u64 = 0x10;
    pub const BEGIN: u64 = 0x11;
    pub const ATTACH: u64 = 0x12;
    pub const FLOW: u64 = 0x13;
    pub const TRANSFER: u64 = 0x14;
    pub const DISPOSITION: u64 = 0x15;
    pub const DETACH: u64 = 0x16;
    pub const END: u64 = 0x17;
    pub const CLOSE: u64 = 0x18;
    pub const ERROR: u64 = 0x1d;
    pub const RECEIVED: u64 = 0x23;
    pub const ACCEPTED: u64 = 0x24;
    pub const REJECTED: u64 = 0x25;
    pub const RELEASED: u64 = 0x26;
    pub const MODIFIED: u64 = 0x27;
    pub const SOURCE: u64 = 0x28;
    pub const TARGET: u64 = 0x29;
    pub const SASL_MECHANISMS: u64 = 0x40;
    pub const SASL_INIT: u64 = 0x41;
    pub const SASL_CHALLENGE: u64 = 0x42;
    pub const SASL_RESPONSE: u64 = 0x43;
    pub const SASL_OUTCOME: u64 = 0x44;
    pub const HEADER: u64 = 0x70;
    pub const DELIVERY_ANNOTATIONS: u64 = 0x71;
    pub const MESSAGE_ANNOTATIONS: u64 = 0x72;
    pub const PROPERTIES: u64 = 0x73;
    pub const APPLICATION_PROPERTIES: u64 = 0x74;
    pub const DATA: u64 = 0x75;
    pub const AMQP_SEQUENCE: u64 = 0x76;
    pub const AMQP_VALUE: u64 = 0x77;
    pub const FOOTER: u64 = 0x78;
}

/// Maps a descriptor (numeric or symbolic) to its numeric code.
pub fn descriptor_code(d: &Descriptor) -> Option<u64> {
    match d {
        Descriptor::Code(c) => Some(*c),
        Descriptor::Symbol(s) => {
            use descriptor::*;
            Some(match s.as_str() {
                "amqp:open:list" => OPEN,
                "amqp:begin:list" => BEGIN,
                "amqp:attach:list" => ATTACH,
                "amqp:flow:list" => FLOW,
                "amqp:transfer:list" => TRANSFER,
                "amqp:disposition:list" => DISPOSITION,
                "amqp:detach:list" => DETACH,
                "amqp:end:list" => END,
                "amqp:close:list" => CLOSE,
                "amqp:error:list" => ERROR,
                "amqp:received:list" => RECEIVED,
                "amqp:accepted:list" => ACCEPTED,
                "amqp:rejected:list" => REJECTED,
                "amqp:released:list" => RELEASED,
                "amqp:modified:list" => MODIFIED,
                "amqp:source:list" => SOURCE,
                "amqp:target:list" => TARGET,
                "amqp:sasl-mechanisms:list" => SASL_MECHANISMS,
                "amqp:sasl-init:list" => SASL_INIT,
                "amqp:sasl-challenge:list" => SASL_CHALLENGE,
                "amqp:sasl-response:list" => SASL_RESPONSE,
                "amqp:sasl-outcome:list" => SASL_OUTCOME,
                "amqp:header:list" => HEADER,
                "amqp:delivery-annotations:map" => DELIVERY_ANNOTATIONS,
                "amqp:message-annotations:map" => MESSAGE_ANNOTATIONS,
                "amqp:properties:list" => PROPERTIES,
                "amqp:application-properties:map" => APPLICATION_PROPERTIES,
                "amqp:data:binary" => DATA,
                "amqp:amqp-sequence:list" => AMQP_SEQUENCE,
                "amqp:amqp-value:*" => AMQP_VALUE,
                "amqp:footer:map" => FOOTER,
                _ => return None,
            })
        }
        Descriptor::Other(_) => None,
    }
}

/// An AMQP error (`amqp:error:list`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Error {
    /// The error condition symbol, e.g. `amqp:not-found`.
    pub condition: Symbol,
    /// Human-readable description.
    pub description: Option<String>,
    /// Extra information.
    pub info: Option<Map>,
}

impl Error {
    /// An error with a condition and description.
    pub fn new(condition: impl Into<String>, description: impl Into<String>) -> Self {
        Error { condition: Symbol(condition.into()), description: Some(description.into()), info: None }
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> EResult {
        put_composite(descriptor::ERROR, out, |w| {
            w.opt_symbol(Some(self.condition.as_str()))?;
            w.opt_string(self.description.as_deref())?;
            w.opt_map(self.info.as_deref())
        })
    }

    pub(crate) fn decode(dec: &mut Decoder<'_>) -> DResult<Option<Self>> {
        if dec.peek_u8()? == crate::decode::code::NULL {
            dec.u8()?;
            return Ok(None);
        }
        let (_, mut f) = dec.read_composite()?;
        Ok(Some(Error {
            condition: f.opt_symbol()?.unwrap_or_default(),
            description: f.opt_string()?,
            info: f.opt_map()?,
        }))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.condition.as_str())?;
        if let Some(d) = &self.description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

pub(crate) fn read_error(f: &mut FieldReader<'_>) -> DResult<Option<Error>> {
    match f.decoder() {
        Some(dec) => Error::decode(dec),
        None => Ok(None),
    }
}

pub(crate) fn write_error(w: &mut FieldWriter<'_>, e: &Option<Error>) -> EResult {
    w.with(e.is_some(), |out| e.as_ref().map_or(Ok(()), |e| e.encode(out)))
}

/// A link source (`amqp:source:list`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Source {
    /// The address of the source node.
    pub address: Option<String>,
    /// Terminus durability.
    pub durable: Option<u32>,
    /// Expiry policy.
    pub expiry_policy: Option<Symbol>,
    /// Timeout in seconds.
    pub timeout: Option<u32>,
    /// Dynamic node request.
    pub dynamic: Option<bool>,
    /// Dynamic node properties.
    pub dynamic_node_properties: Option<Map>,
    /// Distribution mode.
    pub distribution_mode: Option<Symbol>,
    /// The filter set (Event Hubs uses the selector filter).
    pub filter: Option<Map>,
    /// Default outcome.
    pub default_outcome: Option<Value>,
    /// Supported outcomes.
    pub outcomes: Vec<Symbol>,
    /// Capabilities.
    pub capabilities: Vec<Symbol>,
}

impl Source {
    /// A source with only an address.
    pub fn address(addr: impl Into<String>) -> Self {
        Source { address: Some(addr.into()), ..Default::default() }
    }

    /// Encodes the source.
    pub fn encode(&self, out: &mut BytesMut) -> EResult {
        put_composite(descriptor::SOURCE, out, |w| {
            w.opt_string(self.address.as_deref())?;
            w.opt_u32(self.durable);
            w.opt_symbol(self.expiry_policy.as_ref().map(|s| s.as_str()))?;
            w.opt_u32(self.timeout);
            w.opt_bool(self.dynamic);
            w.opt_map(self.dynamic_node_properties.as_deref())?;
            w.opt_symbol(self.distribution_mode.as_ref().map(|s| s.as_str()))?;
            w.opt_map(self.filter.as_deref())?;
            w.opt_value(self.default_outcome.as_ref())?;
            w.symbols(&self.outcomes)?;
            w.symbols(&self.capabilities)
        })
    }

    fn decode(dec: &mut Decoder<'_>) -> DResult<Option<Self>> {
        if dec.peek_u8()? == crate::decode::code::NULL {
            dec.u8()?;
            return Ok(None);
        }
        let (_, mut f) = dec.read_composite()?;
        Ok(Some(Source {
            address: f.opt_string()?,
            durable: f.opt_u32()?,
            expiry_policy: f.opt_symbol()?,
            timeout: f.opt_u32()?,
            dynamic: f.opt_bool()?,
            dynamic_node_properties: f.opt_map()?,
            distribution_mode: f.opt_symbol()?,
            filter: f.opt_map()?,
            default_outcome: match f.value()? {
                Value::Null => None,
                v => Some(v),
            },
            outcomes: f.symbols()?,
            capabilities: f.symbols()?,
        }))
    }
}

/// A link target (`amqp:target:list`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    /// The address of the target node.
    pub address: Option<String>,
    /// Terminus durability.
    pub durable: Option<u32>,
    /// Expiry policy.
    pub expiry_policy: Option<Symbol>,
    /// Timeout in seconds.
    pub timeout: Option<u32>,
    /// Dynamic node request.
    pub dynamic: Option<bool>,
    /// Dynamic node properties.
    pub dynamic_node_properties: Option<Map>,
    /// Capabilities.
    pub capabilities: Vec<Symbol>,
}

impl Target {
    /// A target with only an address.
    pub fn address(addr: impl Into<String>) -> Self {
        Target { address: Some(addr.into()), ..Default::default() }
    }

    /// Encodes the target.
    pub fn encode(&self, out: &mut BytesMut) -> EResult {
        put_composite(descriptor::TARGET, out, |w| {
            w.opt_string(self.address.as_deref())?;
            w.opt_u32(self.durable);
            w.opt_symbol(self.expiry_policy.as_ref().map(|s| s.as_str()))?;
            w.opt_u32(self.timeout);
            w.opt_bool(self.dynamic);
            w.opt_map(self.dynamic_node_properties.as_deref())?;
            w.symbols(&self.capabilities)
        })
    }

    fn decode(dec: &mut Decoder<'_>) -> DResult<Option<Self>> {
        if dec.peek_u8()? == crate::decode::code::NULL {
            dec.u8()?;
            return Ok(None);
        }
        let (_, mut f) = dec.read_composite()?;
        Ok(Some(Target {
            address: f.opt_string()?,
            durable: f.opt_u32()?,
            expiry_policy: f.opt_symbol()?,
            timeout: f.opt_u32()?,
            dynamic: f.opt_bool()?,
            dynamic_node_properties: f.opt_map()?,
            capabilities: f.symbols()?,
        }))
    }
}

pub(crate) fn read_source(f: &mut FieldReader<'_>) -> DResult<Option<Source>> {
    match f.decoder() {
        Some(dec) => Source::decode(dec),
        None => Ok(None),
    }
}

pub(crate) fn read_target(f: &mut FieldReader<'_>) -> DResult<Option<Target>> {
    match f.decoder() {
        Some(dec) => Target::decode(dec),
        None => Ok(None),
    }
}

/// The state of a delivery (outcomes and the `received` state).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DeliveryState {
    /// `received`: partial progress.
    Received {
        /// Section number.
        section_number: u32,
        /// Offset within the section.
        section_offset: u64,
    },
    /// `accepted`.
    Accepted,
    /// `rejected`, with an optional error.
    Rejected(Option<Error>),
    /// `released`.
    Released,
    /// `modified`.
    Modified {
        /// The delivery failed.
        delivery_failed: Option<bool>,
        /// Do not redeliver here.
        undeliverable_here: Option<bool>,
        /// Annotations to merge.
        message_annotations: Option<Map>,
    },
    /// Any other described state (e.g. transactional), kept as it was.
    Other(Value),
}

impl DeliveryState {
    /// Encodes the state.
    pub fn encode(&self, out: &mut BytesMut) -> EResult {
        match self {
            DeliveryState::Received { section_number, section_offset } => {
                put_composite(descriptor::RECEIVED, out, |w| {
                    w.opt_u32(Some(*section_number));
                    w.opt_u64(Some(*section_offset));
                    Ok(())
                })
            }
            DeliveryState::Accepted => put_composite(descriptor::ACCEPTED, out, |_| Ok(())),
            DeliveryState::Rejected(e) => put_composite(descriptor::REJECTED, out, |w| write_error(w, e)),
            DeliveryState::Released => put_composite(descriptor::RELEASED, out, |_| Ok(())),
            DeliveryState::Modified { delivery_failed, undeliverable_here, message_annotations } => {
                put_composite(descriptor::MODIFIED, out, |w| {
                    w.opt_bool(*delivery_failed);
                    w.opt_bool(*undeliverable_here);
                    w.opt_map(message_annotations.as_deref())
                })
            }
            DeliveryState::Other(v) => crate::encode::encode_value(v, out),
        }
    }

    pub(crate) fn decode(dec: &mut Decoder<'_>) -> DResult<Option<Self>> {
        if dec.peek_u8()? == crate::decode::code::NULL {
            dec.u8()?;
            return Ok(None);
        }
        let start = dec.position();
        let (d, mut f) = dec.read_composite()?;
        Ok(Some(match descriptor_code(&d) {
            Some(descriptor::RECEIVED) => DeliveryState::Received {
                section_number: f.opt_u32()?.unwrap_or(0),
                section_offset: f.opt_u64()?.unwrap_or(0),
            },
            Some(descriptor::ACCEPTED) => DeliveryState::Accepted,
            Some(descriptor::REJECTED) => DeliveryState::Rejected(read_error(&mut f)?),
            Some(descriptor::RELEASED) => DeliveryState::Released,
            Some(descriptor::MODIFIED) => DeliveryState::Modified {
                delivery_failed: f.opt_bool()?,
                undeliverable_here: f.opt_bool()?,
                message_annotations: f.opt_map()?,
            },
            _ => {
                let buf = dec.buffer();
                let mut again = Decoder::with_range(buf, start, dec.position());
                DeliveryState::Other(again.read_value()?)
            }
        }))
    }
}

pub(crate) fn read_state(f: &mut FieldReader<'_>) -> DResult<Option<DeliveryState>> {
    match f.decoder() {
        Some(dec) => DeliveryState::decode(dec),
        None => Ok(None),
    }
}

/// Sender settle mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum SenderSettleMode {
    /// Deliveries are sent unsettled.
    Unsettled = 0,
    /// Deliveries are sent settled.
    Settled = 1,
    /// Either.
    #[default]
    Mixed = 2,
}

impl SenderSettleMode {
    /// From the wire value (unknown values map to mixed).
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => SenderSettleMode::Unsettled,
            1 => SenderSettleMode::Settled,
            _ => SenderSettleMode::Mixed,
        }
    }
}

/// Receiver settle mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum ReceiverSettleMode {
    /// Settle on receipt.
    #[default]
    First = 0,
    /// Settle after the sender settles.
    Second = 1,
}

impl ReceiverSettleMode {
    /// From the wire value.
    pub fn from_u8(v: u8) -> Self {
        if v == 1 {
            ReceiverSettleMode::Second
        } else {
            ReceiverSettleMode::First
        }
    }
}

/// Link role: `false` is sender, `true` is receiver on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The link's local end sends.
    Sender,
    /// The link's local end receives.
    Receiver,
}

impl Role {
    /// Wire encoding.
    pub fn as_bool(self) -> bool {
        matches!(self, Role::Receiver)
    }
    /// From the wire.
    pub fn from_bool(b: bool) -> Self {
        if b {
            Role::Receiver
        } else {
            Role::Sender
        }
    }
}
