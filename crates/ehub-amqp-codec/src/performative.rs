//! The nine AMQP performatives and the five SASL frames.

use crate::decode::{code, Decoder};
use crate::definitions::{
    descriptor, descriptor_code, read_error, read_source, read_state, read_target, write_error, DeliveryState, Error,
    ReceiverSettleMode, Role, SenderSettleMode, Source, Target,
};
use crate::encode::put_composite;
use crate::error::{DecodeError, EncodeError};
use crate::types::{Map, Symbol};
use bytes::{Bytes, BytesMut};

type DResult<T> = Result<T, DecodeError>;
type EResult = Result<(), EncodeError>;

/// `open`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Open {
    /// Container id (mandatory).
    pub container_id: String,
    /// Virtual host name.
    pub hostname: Option<String>,
    /// Largest frame the sender of this open accepts (default 4 GiB - 1).
    pub max_frame_size: Option<u32>,
    /// Highest channel number (default 65535).
    pub channel_max: Option<u16>,
    /// Idle time-out in milliseconds.
    pub idle_time_out: Option<u32>,
    /// Outgoing locales.
    pub outgoing_locales: Vec<Symbol>,
    /// Incoming locales.
    pub incoming_locales: Vec<Symbol>,
    /// Offered capabilities.
    pub offered_capabilities: Vec<Symbol>,
    /// Desired capabilities.
    pub desired_capabilities: Vec<Symbol>,
    /// Connection properties.
    pub properties: Option<Map>,
}

/// `begin`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Begin {
    /// The channel of the peer's begin (set in replies).
    pub remote_channel: Option<u16>,
    /// Transfer id of the next outgoing transfer.
    pub next_outgoing_id: u32,
    /// Incoming window.
    pub incoming_window: u32,
    /// Outgoing window.
    pub outgoing_window: u32,
    /// Highest handle (default 4294967295).
    pub handle_max: Option<u32>,
    /// Offered capabilities.
    pub offered_capabilities: Vec<Symbol>,
    /// Desired capabilities.
    pub desired_capabilities: Vec<Symbol>,
    /// Session properties.
    pub properties: Option<Map>,
}

/// `attach`.
#[derive(Debug, Clone, PartialEq)]
pub struct Attach {
    /// Link name.
    pub name: String,
    /// Handle chosen by the sender of this frame.
    pub handle: u32,
    /// Role of the sender of this frame.
    pub role: Role,
    /// Sender settle mode.
    pub snd_settle_mode: SenderSettleMode,
    /// Receiver settle mode.
    pub rcv_settle_mode: ReceiverSettleMode,
    /// Source.
    pub source: Option<Source>,
    /// Target.
    pub target: Option<Target>,
    /// Unsettled state map.
    pub unsettled: Option<Map>,
    /// Whether the unsettled map is incomplete.
    pub incomplete_unsettled: bool,
    /// Initial delivery count (senders only).
    pub initial_delivery_count: Option<u32>,
    /// Maximum message size (0 or absent: no limit).
    pub max_message_size: Option<u64>,
    /// Offered capabilities.
    pub offered_capabilities: Vec<Symbol>,
    /// Desired capabilities.
    pub desired_capabilities: Vec<Symbol>,
    /// Link properties.
    pub properties: Option<Map>,
}

impl Attach {
    /// A minimal attach for a link with the given name, handle and role.
    pub fn new(name: impl Into<String>, handle: u32, role: Role) -> Self {
        Attach {
            name: name.into(),
            handle,
            role,
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            source: None,
            target: None,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: None,
            max_message_size: None,
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            properties: None,
        }
    }
}

/// `flow`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Flow {
    /// Next incoming transfer id expected.
    pub next_incoming_id: Option<u32>,
    /// Incoming window.
    pub incoming_window: u32,
    /// Next outgoing transfer id.
    pub next_outgoing_id: u32,
    /// Outgoing window.
    pub outgoing_window: u32,
    /// Link handle (absent for session-only flow).
    pub handle: Option<u32>,
    /// Delivery count.
    pub delivery_count: Option<u32>,
    /// Link credit.
    pub link_credit: Option<u32>,
    /// Available deliveries.
    pub available: Option<u32>,
    /// Drain flag.
    pub drain: bool,
    /// Echo request.
    pub echo: bool,
    /// Link-state properties.
    pub properties: Option<Map>,
}

/// `transfer` (without its payload).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transfer {
    /// Link handle.
    pub handle: u32,
    /// Delivery id (on the first frame of a delivery).
    pub delivery_id: Option<u32>,
    /// Delivery tag (on the first frame of a delivery).
    pub delivery_tag: Option<Bytes>,
    /// Message format (0 or the Microsoft batch format 0x80013700).
    pub message_format: Option<u32>,
    /// Settled flag.
    pub settled: Option<bool>,
    /// More frames follow for this delivery.
    pub more: bool,
    /// Receiver settle mode override.
    pub rcv_settle_mode: Option<u8>,
    /// Delivery state.
    pub state: Option<DeliveryState>,
    /// Resume flag.
    pub resume: bool,
    /// Aborted flag.
    pub aborted: bool,
    /// Batchable hint.
    pub batchable: bool,
}

/// `disposition`.
#[derive(Debug, Clone, PartialEq)]
pub struct Disposition {
    /// Role of the sender of this frame.
    pub role: Role,
    /// First delivery id of the range.
    pub first: u32,
    /// Last delivery id (defaults to first).
    pub last: Option<u32>,
    /// Settled flag.
    pub settled: bool,
    /// New state.
    pub state: Option<DeliveryState>,
    /// Batchable hint.
    pub batchable: bool,
}

/// `detach`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Detach {
    /// Link handle.
    pub handle: u32,
    /// Whether the link is closed (vs. suspended).
    pub closed: bool,
    /// Error.
    pub error: Option<Error>,
}

/// `end`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct End {
    /// Error.
    pub error: Option<Error>,
}

/// `close`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Close {
    /// Error.
    pub error: Option<Error>,
}

/// Any AMQP performative.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Performative {
    Open(Open),
    Begin(Begin),
    Attach(Box<Attach>),
    Flow(Flow),
    Transfer(Transfer),
    Disposition(Disposition),
    Detach(Detach),
    End(End),
    Close(Close),
}

impl Performative {
    /// The performative's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Performative::Open(_) => "open",
            Performative::Begin(_) => "begin",
            Performative::Attach(_) => "attach",
            Performative::Flow(_) => "flow",
            Performative::Transfer(_) => "transfer",
            Performative::Disposition(_) => "disposition",
            Performative::Detach(_) => "detach",
            Performative::End(_) => "end",
            Performative::Close(_) => "close",
        }
    }

    /// Encodes the performative (descriptor `0x00 0x53 code` + list8/list32).
    pub fn encode(&self, out: &mut BytesMut) -> EResult {
        match self {
            Performative::Open(o) => put_composite(descriptor::OPEN, out, |w| {
                w.opt_string(Some(&o.container_id))?;
                w.opt_string(o.hostname.as_deref())?;
                w.opt_u32(o.max_frame_size);
                w.opt_u16(o.channel_max);
                w.opt_u32(o.idle_time_out);
                w.symbols(&o.outgoing_locales)?;
                w.symbols(&o.incoming_locales)?;
                w.symbols(&o.offered_capabilities)?;
                w.symbols(&o.desired_capabilities)?;
                w.opt_map(o.properties.as_deref())
            }),
            Performative::Begin(b) => put_composite(descriptor::BEGIN, out, |w| {
                w.opt_u16(b.remote_channel);
                w.opt_u32(Some(b.next_outgoing_id));
                w.opt_u32(Some(b.incoming_window));
                w.opt_u32(Some(b.outgoing_window));
                w.opt_u32(b.handle_max);
                w.symbols(&b.offered_capabilities)?;
                w.symbols(&b.desired_capabilities)?;
                w.opt_map(b.properties.as_deref())
            }),
            Performative::Attach(a) => put_composite(descriptor::ATTACH, out, |w| {
                w.opt_string(Some(&a.name))?;
                w.opt_u32(Some(a.handle));
                w.opt_bool(Some(a.role.as_bool()));
                w.opt_u8(Some(a.snd_settle_mode as u8));
                w.opt_u8(Some(a.rcv_settle_mode as u8));
                w.with(a.source.is_some(), |out| a.source.as_ref().map_or(Ok(()), |s| s.encode(out)))?;
                w.with(a.target.is_some(), |out| a.target.as_ref().map_or(Ok(()), |t| t.encode(out)))?;
                w.opt_map(a.unsettled.as_deref())?;
                w.opt_bool(a.incomplete_unsettled.then_some(true));
                w.opt_u32(a.initial_delivery_count);
                w.opt_u64(a.max_message_size);
                w.symbols(&a.offered_capabilities)?;
                w.symbols(&a.desired_capabilities)?;
                w.opt_map(a.properties.as_deref())
            }),
            Performative::Flow(f) => put_composite(descriptor::FLOW, out, |w| {
                w.opt_u32(f.next_incoming_id);
                w.opt_u32(Some(f.incoming_window));
                w.opt_u32(Some(f.next_outgoing_id));
                w.opt_u32(Some(f.outgoing_window));
                w.opt_u32(f.handle);
                w.opt_u32(f.delivery_count);
                w.opt_u32(f.link_credit);
                w.opt_u32(f.available);
                w.opt_bool(f.drain.then_some(true));
                w.opt_bool(f.echo.then_some(true));
                w.opt_map(f.properties.as_deref())
            }),
            Performative::Transfer(t) => encode_transfer(t, out),
            Performative::Disposition(d) => put_composite(descriptor::DISPOSITION, out, |w| {
                w.opt_bool(Some(d.role.as_bool()));
                w.opt_u32(Some(d.first));
                w.opt_u32(d.last);
                w.opt_bool(Some(d.settled));
                w.with(d.state.is_some(), |out| d.state.as_ref().map_or(Ok(()), |s| s.encode(out)))?;
                w.opt_bool(d.batchable.then_some(true));
                Ok(())
            }),
            Performative::Detach(d) => put_composite(descriptor::DETACH, out, |w| {
                w.opt_u32(Some(d.handle));
                w.opt_bool(Some(d.closed));
                write_error(w, &d.error)
            }),
            Performative::End(e) => put_composite(descriptor::END, out, |w| write_error(w, &e.error)),
            Performative::Close(c) => put_composite(descriptor::CLOSE, out, |w| write_error(w, &c.error)),
        }
    }

    /// Decodes a performative from the start of `dec`.
    pub fn decode(dec: &mut Decoder<'_>) -> DResult<Self> {
        let at = dec.position();
        let (d, mut f) = dec.read_composite()?;
        let code = descriptor_code(&d).ok_or(DecodeError::Malformed { offset: at, reason: "unknown performative" })?;
        let mandatory = |v: Option<u32>, reason| v.ok_or(DecodeError::Malformed { offset: at, reason });
        Ok(match code {
            descriptor::OPEN => Performative::Open(Open {
                container_id: f
                    .opt_string()?
                    .ok_or(DecodeError::Malformed { offset: at, reason: "open without container-id" })?,
                hostname: f.opt_string()?,
                max_frame_size: f.opt_u32()?,
                channel_max: f.opt_u16()?,
                idle_time_out: f.opt_u32()?,
                outgoing_locales: f.symbols()?,
                incoming_locales: f.symbols()?,
                offered_capabilities: f.symbols()?,
                desired_capabilities: f.symbols()?,
                properties: f.opt_map()?,
            }),
            descriptor::BEGIN => Performative::Begin(Begin {
                remote_channel: f.opt_u16()?,
                next_outgoing_id: mandatory(f.opt_u32()?, "begin without next-outgoing-id")?,
                incoming_window: mandatory(f.opt_u32()?, "begin without incoming-window")?,
                outgoing_window: mandatory(f.opt_u32()?, "begin without outgoing-window")?,
                handle_max: f.opt_u32()?,
                offered_capabilities: f.symbols()?,
                desired_capabilities: f.symbols()?,
                properties: f.opt_map()?,
            }),
            descriptor::ATTACH => Performative::Attach(Box::new(Attach {
                name: f.opt_string()?.ok_or(DecodeError::Malformed { offset: at, reason: "attach without name" })?,
                handle: mandatory(f.opt_u32()?, "attach without handle")?,
                role: Role::from_bool(
                    f.opt_bool()?.ok_or(DecodeError::Malformed { offset: at, reason: "attach without role" })?,
                ),
                snd_settle_mode: f.opt_u8()?.map(SenderSettleMode::from_u8).unwrap_or_default(),
                rcv_settle_mode: f.opt_u8()?.map(ReceiverSettleMode::from_u8).unwrap_or_default(),
                source: read_source(&mut f)?,
                target: read_target(&mut f)?,
                unsettled: f.opt_map()?,
                incomplete_unsettled: f.opt_bool()?.unwrap_or(false),
                initial_delivery_count: f.opt_u32()?,
                max_message_size: f.opt_u64()?,
                offered_capabilities: f.symbols()?,
                desired_capabilities: f.symbols()?,
                properties: f.opt_map()?,
            })),
            descriptor::FLOW => Performative::Flow(Flow {
                next_incoming_id: f.opt_u32()?,
                incoming_window: mandatory(f.opt_u32()?, "flow without incoming-window")?,
                next_outgoing_id: mandatory(f.opt_u32()?, "flow without next-outgoing-id")?,
                outgoing_window: mandatory(f.opt_u32()?, "flow without outgoing-window")?,
                handle: f.opt_u32()?,
                delivery_count: f.opt_u32()?,
                link_credit: f.opt_u32()?,
                available: f.opt_u32()?,
                drain: f.opt_bool()?.unwrap_or(false),
                echo: f.opt_bool()?.unwrap_or(false),
                properties: f.opt_map()?,
            }),
            descriptor::TRANSFER => Performative::Transfer(Transfer {
                handle: mandatory(f.opt_u32()?, "transfer without handle")?,
                delivery_id: f.opt_u32()?,
                delivery_tag: f.opt_binary()?,
                message_format: f.opt_u32()?,
                settled: f.opt_bool()?,
                more: f.opt_bool()?.unwrap_or(false),
                rcv_settle_mode: f.opt_u8()?,
                state: read_state(&mut f)?,
                resume: f.opt_bool()?.unwrap_or(false),
                aborted: f.opt_bool()?.unwrap_or(false),
                batchable: f.opt_bool()?.unwrap_or(false),
            }),
            descriptor::DISPOSITION => Performative::Disposition(Disposition {
                role: Role::from_bool(
                    f.opt_bool()?.ok_or(DecodeError::Malformed { offset: at, reason: "disposition without role" })?,
                ),
                first: mandatory(f.opt_u32()?, "disposition without first")?,
                last: f.opt_u32()?,
                settled: f.opt_bool()?.unwrap_or(false),
                state: read_state(&mut f)?,
                batchable: f.opt_bool()?.unwrap_or(false),
            }),
            descriptor::DETACH => Performative::Detach(Detach {
                handle: mandatory(f.opt_u32()?, "detach without handle")?,
                closed: f.opt_bool()?.unwrap_or(false),
                error: read_error(&mut f)?,
            }),
            descriptor::END => Performative::End(End { error: read_error(&mut f)? }),
            descriptor::CLOSE => Performative::Close(Close { error: read_error(&mut f)? }),
            _ => return Err(DecodeError::Malformed { offset: at, reason: "unknown performative" }),
        })
    }
}

/// A transfer performative assembled on the stack and appended with one copy: the header of
/// every delivery, where writing byte by byte into a `BytesMut` costs more than the rest.
struct StackTransfer {
    buf: [u8; 64],
    len: usize,
}

impl StackTransfer {
    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn uint(&mut self, v: Option<u32>) {
        match v {
            None => self.push(&[code::NULL]),
            Some(0) => self.push(&[code::UINT0]),
            Some(x) if x < 256 => self.push(&[code::SMALL_UINT, x as u8]),
            Some(x) => {
                self.push(&[code::UINT]);
                self.push(&x.to_be_bytes());
            }
        }
    }

    fn bool(&mut self, v: Option<bool>) {
        self.push(&[match v {
            None => code::NULL,
            Some(true) => code::TRUE,
            Some(false) => code::FALSE,
        }]);
    }
}

/// The longest delivery tag AMQP allows (spec 2.8.7: at most 32 bytes).
pub const MAX_DELIVERY_TAG: usize = 32;

/// Encodes a transfer performative with the fields a sender sets on each delivery (the rest
/// null), in one copy. With `all_fields`, the five trailing fields are written as explicit
/// nulls (some peers need the complete list); otherwise the list ends after `more`. A tag
/// longer than [`MAX_DELIVERY_TAG`] is refused and nothing is written.
#[allow(clippy::too_many_arguments)]
pub fn put_transfer_head(
    out: &mut BytesMut,
    handle: u32,
    delivery_id: Option<u32>,
    delivery_tag: Option<&[u8]>,
    message_format: Option<u32>,
    settled: Option<bool>,
    more: bool,
    all_fields: bool,
) -> EResult {
    if let Some(t) = delivery_tag.filter(|t| t.len() > MAX_DELIVERY_TAG) {
        return Err(EncodeError::TooLarge(t.len()));
    }
    let mut s = StackTransfer { buf: [0; 64], len: 0 };
    // Described list8: size and count are patched in below.
    s.push(&[code::DESCRIBED, code::SMALL_ULONG, descriptor::TRANSFER as u8, code::LIST8, 0, 0]);
    s.uint(Some(handle));
    s.uint(delivery_id);
    match delivery_tag {
        None => s.push(&[code::NULL]),
        Some(t) => {
            s.push(&[code::VBIN8, t.len() as u8]);
            s.push(t);
        }
    }
    s.uint(message_format);
    s.bool(settled);
    s.bool(Some(more));
    let count = if all_fields {
        s.push(&[code::NULL; 5]);
        11
    } else {
        6
    };
    s.buf[4] = (s.len - 5) as u8;
    s.buf[5] = count;
    out.extend_from_slice(&s.buf[..s.len]);
    Ok(())
}

/// The fields of a transfer read by [`decode_transfer_head`]; the tag is a range of the
/// decoded bytes, so reading it costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferHead {
    /// Link handle.
    pub handle: u32,
    /// Delivery id.
    pub delivery_id: Option<u32>,
    /// Where the delivery tag is in the decoded bytes.
    pub delivery_tag: Option<std::ops::Range<usize>>,
    /// Message format.
    pub message_format: Option<u32>,
    /// Settled flag.
    pub settled: Option<bool>,
    /// More frames follow.
    pub more: bool,
}

impl TransferHead {
    /// The equivalent [`Transfer`], copying the tag out of `b` (the bytes it was read from).
    pub fn to_transfer(&self, b: &[u8]) -> Transfer {
        Transfer {
            handle: self.handle,
            delivery_id: self.delivery_id,
            delivery_tag: self.delivery_tag.clone().map(|r| Bytes::copy_from_slice(&b[r])),
            message_format: self.message_format,
            settled: self.settled,
            more: self.more,
            ..Default::default()
        }
    }
}

/// Reads a transfer performative of the common shape without the generic decoder: a
/// small-ulong descriptor, a list8 or list32 of at most the eleven fields, numeric fields as
/// uint/smalluint/uint0, a binary or null tag, booleans in any form, and no receiver settle
/// mode, state, or set resume, aborted or batchable flag. Returns the fields and the length of
/// the encoding, or `None` for anything else, which the caller then gives to
/// [`Performative::decode`] (that decoder also reports the errors; this one never fails).
/// It sits on the receive path of every event, where the generic decoder and its allocations
/// were a tenth of a client's CPU.
pub fn decode_transfer_head(b: &[u8]) -> Option<(TransferHead, usize)> {
    let mut r = FastReader { b, pos: 0 };
    if r.take(3)? != [code::DESCRIBED, code::SMALL_ULONG, descriptor::TRANSFER as u8] {
        return None;
    }
    let (end, count) = match r.u8()? {
        code::LIST8 => {
            let size = r.u8()? as usize;
            let end = r.pos + size;
            (end, r.u8()? as usize)
        }
        code::LIST32 => {
            let size = u32::from_be_bytes(r.take(4)?.try_into().ok()?) as usize;
            let end = r.pos.checked_add(size)?;
            (end, u32::from_be_bytes(r.take(4)?.try_into().ok()?) as usize)
        }
        _ => return None,
    };
    if count == 0 || count > 11 || end > b.len() {
        return None;
    }
    let mut t = TransferHead {
        handle: r.uint()??,
        delivery_id: None,
        delivery_tag: None,
        message_format: None,
        settled: None,
        more: false,
    };
    for field in 1..count {
        match field {
            1 => t.delivery_id = r.uint()?,
            2 => {
                let n = match r.u8()? {
                    code::NULL => continue,
                    code::VBIN8 => r.u8()? as usize,
                    code::VBIN32 => u32::from_be_bytes(r.take(4)?.try_into().ok()?) as usize,
                    _ => return None,
                };
                let at = r.pos;
                r.take(n)?;
                t.delivery_tag = Some(at..at + n);
            }
            3 => t.message_format = r.uint()?,
            4 => t.settled = r.bool()?,
            5 => t.more = r.bool()?.unwrap_or(false),
            6 | 7 => {
                if r.u8()? != code::NULL {
                    return None;
                }
            }
            _ => {
                if r.bool()?.unwrap_or(false) {
                    return None;
                }
            }
        }
    }
    (r.pos == end).then_some((t, end))
}

/// A bounds-checked cursor for [`decode_transfer_head`]; `None` means "not the fast shape".
struct FastReader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> FastReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A uint field: `Some(None)` for null.
    fn uint(&mut self) -> Option<Option<u32>> {
        Some(match self.u8()? {
            code::NULL => None,
            code::UINT0 => Some(0),
            code::SMALL_UINT => Some(u32::from(self.u8()?)),
            code::UINT => Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
            _ => return None,
        })
    }

    /// A boolean field: `Some(None)` for null.
    fn bool(&mut self) -> Option<Option<bool>> {
        Some(match self.u8()? {
            code::NULL => None,
            code::TRUE => Some(true),
            code::FALSE => Some(false),
            code::BOOLEAN => match self.u8()? {
                0 => Some(false),
                1 => Some(true),
                _ => return None,
            },
            _ => return None,
        })
    }
}

/// Encodes a transfer performative. Kept separate because it is on the hot path.
pub fn encode_transfer(t: &Transfer, out: &mut BytesMut) -> EResult {
    let defaults = t.rcv_settle_mode.is_none() && t.state.is_none() && !t.resume && !t.aborted && !t.batchable;
    if defaults
        && put_transfer_head(
            out,
            t.handle,
            t.delivery_id,
            t.delivery_tag.as_deref(),
            t.message_format,
            t.settled,
            t.more,
            false,
        )
        .is_ok()
    {
        return Ok(());
    }
    put_composite(descriptor::TRANSFER, out, |w| {
        w.opt_u32(Some(t.handle));
        w.opt_u32(t.delivery_id);
        w.opt_binary(t.delivery_tag.as_deref())?;
        w.opt_u32(t.message_format);
        w.opt_bool(t.settled);
        w.opt_bool(t.more.then_some(true));
        w.opt_u8(t.rcv_settle_mode);
        w.with(t.state.is_some(), |out| t.state.as_ref().map_or(Ok(()), |s| s.encode(out)))?;
        w.opt_bool(t.resume.then_some(true));
        w.opt_bool(t.aborted.then_some(true));
        w.opt_bool(t.batchable.then_some(true));
        Ok(())
    })
}

/// SASL outcome codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SaslCode {
    /// Authentication succeeded.
    Ok = 0,
    /// Failed: bad credentials.
    Auth = 1,
    /// Failed: system error.
    Sys = 2,
    /// Failed: permanent system error.
    SysPerm = 3,
    /// Failed: transient system error.
    SysTemp = 4,
}

impl SaslCode {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => SaslCode::Ok,
            1 => SaslCode::Auth,
            3 => SaslCode::SysPerm,
            4 => SaslCode::SysTemp,
            _ => SaslCode::Sys,
        }
    }
}

/// A SASL frame body.
#[derive(Debug, Clone, PartialEq)]
pub enum SaslFrame {
    /// `sasl-mechanisms` (server to client).
    Mechanisms(Vec<Symbol>),
    /// `sasl-init` (client to server).
    Init {
        /// Chosen mechanism.
        mechanism: Symbol,
        /// Initial response.
        initial_response: Option<Bytes>,
        /// Host name.
        hostname: Option<String>,
    },
    /// `sasl-challenge`.
    Challenge(Bytes),
    /// `sasl-response`.
    Response(Bytes),
    /// `sasl-outcome`.
    Outcome {
        /// Result code.
        code: SaslCode,
        /// Additional data.
        additional_data: Option<Bytes>,
    },
}

impl SaslFrame {
    /// Encodes the SASL frame body.
    pub fn encode(&self, out: &mut BytesMut) -> EResult {
        match self {
            SaslFrame::Mechanisms(m) => put_composite(descriptor::SASL_MECHANISMS, out, |w| w.symbols(m)),
            SaslFrame::Init { mechanism, initial_response, hostname } => {
                put_composite(descriptor::SASL_INIT, out, |w| {
                    w.opt_symbol(Some(mechanism.as_str()))?;
                    w.opt_binary(initial_response.as_deref())?;
                    w.opt_string(hostname.as_deref())
                })
            }
            SaslFrame::Challenge(c) => put_composite(descriptor::SASL_CHALLENGE, out, |w| w.opt_binary(Some(c))),
            SaslFrame::Response(r) => put_composite(descriptor::SASL_RESPONSE, out, |w| w.opt_binary(Some(r))),
            SaslFrame::Outcome { code, additional_data } => put_composite(descriptor::SASL_OUTCOME, out, |w| {
                w.opt_u8(Some(*code as u8));
                w.opt_binary(additional_data.as_deref())
            }),
        }
    }

    /// Decodes a SASL frame body.
    pub fn decode(dec: &mut Decoder<'_>) -> DResult<Self> {
        let at = dec.position();
        let (d, mut f) = dec.read_composite()?;
        let bad = |reason| DecodeError::Malformed { offset: at, reason };
        Ok(match descriptor_code(&d) {
            Some(descriptor::SASL_MECHANISMS) => SaslFrame::Mechanisms(f.symbols()?),
            Some(descriptor::SASL_INIT) => SaslFrame::Init {
                mechanism: f.opt_symbol()?.ok_or(bad("sasl-init without mechanism"))?,
                initial_response: f.opt_binary()?,
                hostname: f.opt_string()?,
            },
            Some(descriptor::SASL_CHALLENGE) => SaslFrame::Challenge(f.opt_binary()?.unwrap_or_default()),
            Some(descriptor::SASL_RESPONSE) => SaslFrame::Response(f.opt_binary()?.unwrap_or_default()),
            Some(descriptor::SASL_OUTCOME) => SaslFrame::Outcome {
                code: SaslCode::from_u8(f.opt_u8()?.ok_or(bad("sasl-outcome without code"))?),
                additional_data: f.opt_binary()?,
            },
            _ => return Err(bad("unknown SASL frame")),
        })
    }
}
