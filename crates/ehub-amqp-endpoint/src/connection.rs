//! The sans-IO connection engine: protocol headers, SASL, sessions and links for both roles.
//!
//! Bytes come in through [`Connection::feed`]; what the engine decides to send accumulates in an
//! output buffer ([`Connection::output`]) that the driver writes to the socket, many frames per
//! syscall. What the application must know or decide comes out as [`Event`]s.
//!
//! ```text
//!   socket bytes ──feed()──▶ [ header │ SASL │ frames ] ──▶ events ──▶ application
//!   application ──open/begin/attach/send/flow/disposition/detach/end/close──▶ output ──▶ socket
//! ```

use crate::error::{condition, EndpointError};
use crate::idmap::IdMap;
use bytes::{Buf, Bytes, BytesMut};
use ehub_amqp_codec::{
    encode_empty_frame, encode_frame, encode_sasl_frame, finish_frame, split_frame, start_frame, Attach, Begin, Close,
    DecodeError, DeliveryState, Detach, Disposition, End, Error as AmqpError, Flow, Frame, FrameBody, Open,
    Performative, ProtocolHeader, ReceiverSettleMode, Role, SaslCode, SaslFrame, SenderSettleMode, Source, Symbol,
    Target, Transfer, Value, FRAME_TYPE_AMQP, MAX_DELIVERY_TAG, MIN_MAX_FRAME_SIZE,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How this end authenticates (initiator) or which mechanisms it offers (acceptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslConfig {
    /// No SASL layer: the AMQP header comes first.
    None,
    /// Initiator: negotiate ANONYMOUS (required by every Event Hubs peer).
    Anonymous,
    /// Initiator: negotiate PLAIN with these credentials.
    Plain {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// Acceptor: offer these mechanisms and accept any of them. Connections without SASL are
    /// accepted too when `allow_no_sasl` is set.
    Server {
        /// Offered mechanisms, in order.
        mechanisms: Vec<Symbol>,
        /// Accept a bare AMQP header without SASL.
        allow_no_sasl: bool,
    },
}

/// Settings of one end of a connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Container id sent in `open`.
    pub container_id: String,
    /// Host name sent in `open` (initiator).
    pub hostname: Option<String>,
    /// Largest frame we accept.
    pub max_frame_size: u32,
    /// Highest channel we accept.
    pub channel_max: u16,
    /// Idle timeout we advertise (the peer must send something within it).
    pub idle_timeout: Option<Duration>,
    /// Connection properties sent in `open`.
    pub properties: Option<Vec<(Value, Value)>>,
    /// Offered capabilities.
    pub offered_capabilities: Vec<Symbol>,
    /// Desired capabilities.
    pub desired_capabilities: Vec<Symbol>,
    /// SASL configuration.
    pub sasl: SaslConfig,
    /// Incoming session window we advertise, in transfer frames.
    pub session_window: u32,
    /// Highest link handle we accept per session.
    pub handle_max: u32,
    /// Largest incoming message we buffer; larger deliveries are reported as oversized.
    pub max_message_size: u64,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            container_id: "ehub".into(),
            hostname: None,
            max_frame_size: 65536,
            channel_max: 4999,
            idle_timeout: None,
            properties: None,
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            sasl: SaslConfig::None,
            session_window: 5000,
            handle_max: 255,
            max_message_size: 1024 * 1024,
        }
    }
}

/// Which side opened the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRole {
    /// We connected (client).
    Initiator,
    /// We accepted (server).
    Acceptor,
}

/// Identifies a link: the local channel of its session and its local handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    /// Local channel of the session.
    pub channel: u16,
    /// Local handle.
    pub handle: u32,
}

/// A complete incoming delivery (all its transfer frames reassembled).
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The link it arrived on.
    pub link: LinkId,
    /// Delivery id (session scoped).
    pub delivery_id: u32,
    /// Delivery tag.
    pub tag: DeliveryTag,
    /// Message format.
    pub message_format: u32,
    /// Whether the sender settled it already.
    pub settled: bool,
    /// The encoded message. Empty when `oversized` is set.
    pub payload: Bytes,
    /// Total size of the delivery in bytes.
    pub size: u64,
    /// The delivery exceeded the link's max message size; its bytes were discarded.
    pub oversized: bool,
    /// The sender aborted the delivery.
    pub aborted: bool,
}

/// Something the application must know or decide.
#[derive(Debug, Clone)]
pub enum Event {
    /// Acceptor: the client chose a SASL mechanism (informational; it was accepted).
    SaslInit {
        /// Mechanism.
        mechanism: Symbol,
        /// Initial response.
        initial_response: Option<Bytes>,
        /// Host name.
        hostname: Option<String>,
    },
    /// The peer's `open` arrived (for an acceptor, our reply went out already).
    Opened(Box<Open>),
    /// A session is usable: our begin was answered, or the peer began one (auto-accepted).
    SessionBegun {
        /// Local channel.
        channel: u16,
    },
    /// The peer attached a link we did not ask for: answer with
    /// [`Connection::accept_link`] or [`Connection::refuse_link`].
    AttachRequested {
        /// The link.
        link: LinkId,
        /// The peer's attach.
        attach: Box<Attach>,
    },
    /// The peer answered our attach.
    Attached {
        /// The link.
        link: LinkId,
        /// The peer's attach.
        attach: Box<Attach>,
    },
    /// Flow state of a link changed (credit granted to our sender, or drain/echo requested).
    LinkFlow {
        /// The link.
        link: LinkId,
    },
    /// A complete delivery arrived.
    Delivery(Delivery),
    /// The peer settled or updated deliveries `first..=last` that we sent (or received).
    Disposition {
        /// Local channel.
        channel: u16,
        /// Role of the peer that sent the disposition.
        role: Role,
        /// First delivery id.
        first: u32,
        /// Last delivery id.
        last: u32,
        /// Settled.
        settled: bool,
        /// State.
        state: Option<DeliveryState>,
    },
    /// A link was detached (by the peer, or the peer answered our detach).
    Detached {
        /// The link.
        link: LinkId,
        /// Closed (as opposed to suspended).
        closed: bool,
        /// The peer's error, if any.
        error: Option<AmqpError>,
        /// True when the peer initiated the detach.
        remote: bool,
    },
    /// A session ended.
    SessionEnded {
        /// Local channel.
        channel: u16,
        /// The peer's error, if any.
        error: Option<AmqpError>,
    },
    /// The connection closed (the peer's close, or its answer to ours).
    Closed {
        /// The peer's error, if any.
        error: Option<AmqpError>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the peer's protocol header.
    Header,
    /// Acceptor: waiting for sasl-init.
    SaslServer,
    /// Initiator: waiting for sasl-mechanisms.
    SaslMechanisms,
    /// Initiator: waiting for sasl-outcome.
    SaslOutcome,
    /// Exchanging AMQP frames.
    Frames,
    /// Closed or failed: nothing more is read.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    AttachSent,
    Attached,
    DetachSent,
}

/// A delivery tag, kept inline: AMQP caps tags at 32 bytes (spec 2.8.7), and a received
/// delivery that carried its tag as a separate allocation paid for it twice (allocated on the
/// connection task, freed on the receiving one).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryTag {
    len: u8,
    bytes: [u8; MAX_DELIVERY_TAG],
}

impl DeliveryTag {
    /// The tag, or `None` when it is longer than 32 bytes.
    pub fn new(tag: &[u8]) -> Option<Self> {
        let mut t = DeliveryTag { len: u8::try_from(tag.len()).ok()?, bytes: [0; MAX_DELIVERY_TAG] };
        t.bytes.get_mut(..tag.len())?.copy_from_slice(tag);
        Some(t)
    }

    /// The tag's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for DeliveryTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeliveryTag({:02x?})", self.as_bytes())
    }
}

/// The fields of an incoming transfer the engine acts on (an absent tag is empty).
struct TransferIn {
    handle: u32,
    delivery_id: Option<u32>,
    tag: DeliveryTag,
    message_format: Option<u32>,
    settled: Option<bool>,
    more: bool,
    aborted: bool,
}

#[derive(Debug)]
struct Partial {
    delivery_id: u32,
    tag: DeliveryTag,
    format: u32,
    settled: bool,
    buf: BytesMut,
    size: u64,
    oversized: bool,
}

/// Link state as the engine tracks it.
#[derive(Debug)]
pub struct Link {
    /// Link name.
    pub name: String,
    /// Our role on the link.
    pub role: Role,
    /// The peer's handle, once attached.
    pub remote_handle: Option<u32>,
    state: LinkState,
    /// Delivery count (sender: ours; receiver: the sender's last known).
    pub delivery_count: u32,
    /// Current link credit.
    pub credit: u32,
    /// Drain requested by the receiver.
    pub drain: bool,
    /// For sender links: the peer's max message size (0 = none). For receivers: ours.
    pub max_message_size: u64,
    /// Sender settle mode agreed.
    pub snd_settle_mode: SenderSettleMode,
    /// Receiver settle mode agreed.
    pub rcv_settle_mode: ReceiverSettleMode,
    partial: Option<Partial>,
    /// How long our answer to the peer's detach is held back (see
    /// [`Connection::delay_detach_reply`]).
    detach_reply_delay: Option<Duration>,
}

impl Link {
    /// A link in the attach-sent state. `role` is ours; a receiver starts from the sender's
    /// initial delivery count and enforces our max message size.
    fn new(a: &Attach, role: Role, our_max_message_size: u64) -> Self {
        let receiver = role == Role::Receiver;
        Link {
            name: a.name.clone(),
            role,
            remote_handle: None,
            state: LinkState::AttachSent,
            delivery_count: a.initial_delivery_count.unwrap_or(0),
            credit: 0,
            drain: false,
            max_message_size: if receiver { our_max_message_size } else { 0 },
            snd_settle_mode: a.snd_settle_mode,
            rcv_settle_mode: a.rcv_settle_mode,
            partial: None,
            detach_reply_delay: None,
        }
    }
}

#[derive(Debug)]
struct Session {
    remote_channel: Option<u16>,
    end_sent: bool,
    next_outgoing_id: u32,
    incoming_window: u32,
    next_incoming_id: u32,
    remote_incoming_window: u32,
    remote_outgoing_window: u32,
    /// Our outgoing delivery-id sequence (the peer's incoming ones are its own).
    next_delivery_id: u32,
    links: IdMap<u32, Link>,
    remote_handles: IdMap<u32, u32>,
    next_handle: u32,
}

impl Session {
    fn new(window: u32) -> Self {
        Session {
            remote_channel: None,
            end_sent: false,
            next_outgoing_id: 0,
            incoming_window: window,
            next_incoming_id: 0,
            remote_incoming_window: 0,
            remote_outgoing_window: 0,
            next_delivery_id: 0,
            links: IdMap::default(),
            remote_handles: IdMap::default(),
            next_handle: 0,
        }
    }

    fn free_handle(&mut self) -> u32 {
        while self.links.contains_key(&self.next_handle) {
            self.next_handle = self.next_handle.wrapping_add(1);
        }
        let h = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        h
    }
}

/// Our answer to a peer's detach, held back until `due` (see [`Connection::delay_detach_reply`]).
#[derive(Debug)]
struct HeldDetach {
    channel: u16,
    handle: u32,
    closed: bool,
    due: Instant,
}

/// Reply fields for [`Connection::accept_link`].
#[derive(Debug, Clone, Default)]
pub struct AttachReply {
    /// Source to send back (required by the official clients: never leave it null).
    pub source: Option<Source>,
    /// Target to send back.
    pub target: Option<Target>,
    /// Sender settle mode of our reply.
    pub snd_settle_mode: Option<SenderSettleMode>,
    /// Receiver settle mode of our reply.
    pub rcv_settle_mode: Option<ReceiverSettleMode>,
    /// Max message size to advertise.
    pub max_message_size: Option<u64>,
    /// Link properties.
    pub properties: Option<Vec<(Value, Value)>>,
    /// Offered capabilities.
    pub offered_capabilities: Vec<Symbol>,
}

/// An outgoing transfer.
#[derive(Debug, Clone)]
pub struct SendArgs<'a> {
    /// Delivery tag.
    pub tag: &'a [u8],
    /// Message format (0 for plain messages).
    pub message_format: u32,
    /// Send pre-settled.
    pub settled: bool,
}

/// The connection engine. See the module docs.
#[derive(Debug)]
pub struct Connection {
    cfg: ConnectionConfig,
    role: ConnectionRole,
    phase: Phase,
    sasl_done: bool,
    out: BytesMut,
    events: VecDeque<Event>,
    remote_open: Option<Box<Open>>,
    open_sent: bool,
    close_sent: bool,
    peer_max_frame: u32,
    peer_channel_max: u16,
    peer_idle: Option<Duration>,
    sessions: IdMap<u16, Session>,
    remote_channels: IdMap<u16, u16>,
    /// Channels the peer ended: late frames on them are ignored (Python detaches after `end`).
    ended_channels: std::collections::HashSet<u16, std::hash::BuildHasherDefault<crate::idmap::IdHasher>>,
    /// Answers to the peer's detaches not yet written, oldest first.
    held_detaches: Vec<HeldDetach>,
    last_recv: Instant,
    last_send: Instant,
}

type Result<T> = std::result::Result<T, EndpointError>;

impl Connection {
    /// A new connection. An initiator writes its protocol header (and, without SASL, its
    /// `open`) immediately.
    pub fn new(role: ConnectionRole, cfg: ConnectionConfig, now: Instant) -> Self {
        let mut c = Connection {
            cfg,
            role,
            phase: Phase::Header,
            sasl_done: false,
            // Grows with the first burst of frames; an idle connection keeps it small.
            out: BytesMut::with_capacity(1024),
            events: VecDeque::new(),
            remote_open: None,
            open_sent: false,
            close_sent: false,
            peer_max_frame: MIN_MAX_FRAME_SIZE,
            peer_channel_max: 0,
            peer_idle: None,
            sessions: IdMap::default(),
            remote_channels: IdMap::default(),
            ended_channels: Default::default(),
            held_detaches: Vec::new(),
            last_recv: now,
            last_send: now,
        };
        if role == ConnectionRole::Initiator {
            match c.cfg.sasl {
                SaslConfig::Anonymous | SaslConfig::Plain { .. } => {
                    c.out.extend_from_slice(&ProtocolHeader::Sasl.bytes());
                }
                _ => {
                    c.out.extend_from_slice(&ProtocolHeader::Amqp.bytes());
                    c.send_open();
                }
            }
        }
        c
    }

    /// The role of this end.
    pub fn role(&self) -> ConnectionRole {
        self.role
    }

    /// Bytes waiting to be written to the transport.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// True when output is waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The peer's `open`, once received.
    pub fn remote_open(&self) -> Option<&Open> {
        self.remote_open.as_deref()
    }

    /// True once the connection is closed or failed; the driver should flush and stop.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Largest frame the peer accepts.
    pub fn peer_max_frame_size(&self) -> u32 {
        self.peer_max_frame
    }

    /// Link state, if the link exists.
    pub fn link(&self, id: LinkId) -> Option<&Link> {
        self.sessions.get(&id.channel)?.links.get(&id.handle)
    }

    /// Link credit available to our sender link (0 if unknown).
    pub fn credit(&self, id: LinkId) -> u32 {
        self.link(id).map_or(0, |l| l.credit)
    }

    /// How many more transfer frames the peer's session window allows.
    pub fn session_send_window(&self, channel: u16) -> u32 {
        self.sessions.get(&channel).map_or(0, |s| s.remote_incoming_window)
    }

    /// How many transfer frames [`Connection::send_with`] uses at most for a payload of at most
    /// `max_len` bytes with a tag of `tag_len` bytes.
    pub fn frames_needed(&self, tag_len: usize, max_len: usize) -> u32 {
        frames_for(frame_room(self.peer_max_frame, tag_len), max_len)
    }

    /// True when the peer's session window takes a delivery of at most `max_len` bytes now.
    pub fn can_send(&self, id: LinkId, tag_len: usize, max_len: usize) -> bool {
        self.credit(id) > 0 && self.session_send_window(id.channel) >= self.frames_needed(tag_len, max_len)
    }

    /// Tells the engine that buffered output was written at `now` (for heartbeats).
    pub fn note_sent(&mut self, now: Instant) {
        self.last_send = now;
    }

    /// When the driver should call [`Connection::handle_timeout`] next.
    pub fn next_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Frames {
            return None;
        }
        let hb = self.peer_idle.map(|d| self.last_send + d / 2);
        let idle = self.cfg.idle_timeout.map(|d| self.last_recv + d);
        let held = self.held_detaches.iter().map(|h| h.due).min();
        [hb, idle, held].into_iter().flatten().min()
    }

    /// Sends a heartbeat when due; fails (after writing `close`) when the peer went silent.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<()> {
        if self.phase != Phase::Frames {
            return Ok(());
        }
        if let Some(d) = self.cfg.idle_timeout {
            if now >= self.last_recv + d {
                self.close(Some(AmqpError::new(condition::RESOURCE_LIMIT_EXCEEDED, "local-idle-timeout expired")));
                self.phase = Phase::Done;
                return Err(EndpointError::IdleTimeout(d));
            }
        }
        self.release_held_detaches(|h| h.due <= now)?;
        if let Some(d) = self.peer_idle {
            if now >= self.last_send + d / 2 && self.out.is_empty() {
                encode_empty_frame(&mut self.out);
                self.last_send = now;
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Input
    // ---------------------------------------------------------------------------------------

    /// Consumes as many complete frames from `input` as possible.
    ///
    /// On a protocol violation the engine writes a `close` with the precise condition, moves to
    /// the done state and returns the error; the driver should flush the output and stop.
    pub fn feed(&mut self, input: &mut BytesMut, now: Instant) -> Result<()> {
        if !input.is_empty() {
            self.last_recv = now;
        }
        loop {
            if self.phase == Phase::Done {
                input.clear();
                return Ok(());
            }
            let progressed = match self.step(input) {
                Ok(p) => p,
                Err(e) => {
                    self.fail(&e);
                    return Err(e);
                }
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    fn fail(&mut self, e: &EndpointError) {
        if self.phase == Phase::Done {
            return;
        }
        let err = match e {
            EndpointError::Decode(DecodeError::TooLarge { .. }) => {
                Some(AmqpError::new(condition::FRAMING_ERROR, e.to_string()))
            }
            EndpointError::Decode(_) => Some(AmqpError::new(condition::DECODE_ERROR, e.to_string())),
            EndpointError::Protocol(err) => Some(err.clone()),
            _ => None,
        };
        if self.open_sent && !self.close_sent && matches!(self.phase, Phase::Frames) {
            let _ = self.write(0, &Performative::Close(Close { error: err }), &[]);
            self.close_sent = true;
        }
        self.phase = Phase::Done;
    }

    fn step(&mut self, input: &mut BytesMut) -> Result<bool> {
        match self.phase {
            Phase::Header => {
                let Some(h) = ProtocolHeader::parse(input)? else { return Ok(false) };
                let _ = input.split_to(8);
                self.on_header(h)?;
                Ok(true)
            }
            Phase::Done => Ok(false),
            _ => {
                if self.phase == Phase::Frames && self.fast_transfer(input)? {
                    return Ok(true);
                }
                let Some(raw) = split_frame(input, self.cfg.max_frame_size)? else { return Ok(false) };
                let frame = ehub_amqp_codec::decode_frame_bytes(raw)?;
                self.on_frame(frame)?;
                Ok(true)
            }
        }
    }

    /// Takes a complete transfer frame of the common shape off `input` without the generic
    /// frame decoder (see [`ehub_amqp_codec::decode_transfer_head`]): the payload is split off
    /// the input in place, so a delivery costs one reference to the read buffer, not three.
    /// Returns false, consuming nothing, for any other frame or an incomplete one.
    fn fast_transfer(&mut self, input: &mut BytesMut) -> Result<bool> {
        let Some(header) = input.get(..8) else { return Ok(false) };
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        // Anything unusual (including a size smaller than the header) is the generic path's to
        // judge and report.
        if size < 8 || size > self.cfg.max_frame_size || input.len() < size as usize || header[4] != 2 || header[5] != 0
        {
            return Ok(false);
        }
        let channel = u16::from_be_bytes([header[6], header[7]]);
        let perf = &input[8..size as usize];
        let Some((h, n)) = ehub_amqp_codec::decode_transfer_head(perf) else { return Ok(false) };
        if self.remote_open.is_none() || self.ended_channels.contains(&channel) {
            // Rare states: the generic path has the rules for them.
            return Ok(false);
        }
        // A tag beyond 32 bytes is the generic path's to refuse.
        let Some(tag) = DeliveryTag::new(h.delivery_tag.map_or(&[][..], |r| &perf[r])) else { return Ok(false) };
        input.advance(8 + n);
        let payload = input.split_to(size as usize - 8 - n).freeze();
        let t = TransferIn {
            handle: h.handle,
            delivery_id: h.delivery_id,
            tag,
            message_format: h.message_format,
            settled: h.settled,
            more: h.more,
            aborted: false,
        };
        self.on_transfer(channel, t, payload)?;
        Ok(true)
    }

    fn protocol(cond: &str, desc: impl Into<String>) -> EndpointError {
        EndpointError::Protocol(AmqpError::new(cond, desc))
    }

    fn on_header(&mut self, h: ProtocolHeader) -> Result<()> {
        match (self.role, h, &self.cfg.sasl) {
            (ConnectionRole::Acceptor, ProtocolHeader::Sasl, SaslConfig::Server { mechanisms, .. })
                if !self.sasl_done =>
            {
                let mechs = mechanisms.clone();
                self.out.extend_from_slice(&ProtocolHeader::Sasl.bytes());
                encode_sasl_frame(&mut self.out, &SaslFrame::Mechanisms(mechs))?;
                self.phase = Phase::SaslServer;
            }
            (ConnectionRole::Acceptor, ProtocolHeader::Amqp, sasl) => {
                let needs_sasl = matches!(sasl, SaslConfig::Server { allow_no_sasl: false, .. });
                if needs_sasl && !self.sasl_done {
                    // Tell the client which header we want, then give up.
                    self.out.extend_from_slice(&ProtocolHeader::Sasl.bytes());
                    self.phase = Phase::Done;
                    return Err(EndpointError::Sasl("client skipped the required SASL layer".into()));
                }
                self.out.extend_from_slice(&ProtocolHeader::Amqp.bytes());
                self.phase = Phase::Frames;
            }
            (ConnectionRole::Initiator, ProtocolHeader::Sasl, SaslConfig::Anonymous | SaslConfig::Plain { .. })
                if !self.sasl_done =>
            {
                self.phase = Phase::SaslMechanisms;
            }
            (ConnectionRole::Initiator, ProtocolHeader::Amqp, _) => {
                self.phase = Phase::Frames;
            }
            (_, h, _) => {
                // Unsupported header: answer with the one we support, per the spec.
                let ours = if matches!(self.cfg.sasl, SaslConfig::Server { .. }) && !self.sasl_done {
                    ProtocolHeader::Sasl
                } else {
                    ProtocolHeader::Amqp
                };
                if self.role == ConnectionRole::Acceptor {
                    self.out.extend_from_slice(&ours.bytes());
                }
                self.phase = Phase::Done;
                return Err(EndpointError::Sasl(format!("unsupported protocol header {h:?}")));
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame) -> Result<()> {
        match (self.phase, frame.body) {
            (Phase::SaslServer, FrameBody::Sasl(SaslFrame::Init { mechanism, initial_response, hostname })) => {
                let offered = match &self.cfg.sasl {
                    SaslConfig::Server { mechanisms, .. } => mechanisms.contains(&mechanism),
                    _ => false,
                };
                let code = if offered { SaslCode::Ok } else { SaslCode::Auth };
                encode_sasl_frame(&mut self.out, &SaslFrame::Outcome { code, additional_data: None })?;
                if !offered {
                    self.phase = Phase::Done;
                    return Err(EndpointError::Sasl(format!("mechanism {} not offered", mechanism.as_str())));
                }
                self.events.push_back(Event::SaslInit { mechanism, initial_response, hostname });
                self.sasl_done = true;
                self.phase = Phase::Header;
            }
            (Phase::SaslMechanisms, FrameBody::Sasl(SaslFrame::Mechanisms(mechs))) => {
                let (mechanism, initial_response) = match &self.cfg.sasl {
                    SaslConfig::Plain { username, password } => {
                        let mut r = Vec::with_capacity(username.len() + password.len() + 2);
                        r.push(0);
                        r.extend_from_slice(username.as_bytes());
                        r.push(0);
                        r.extend_from_slice(password.as_bytes());
                        (Symbol::from("PLAIN"), Some(Bytes::from(r)))
                    }
                    _ => (Symbol::from("ANONYMOUS"), None),
                };
                if !mechs.contains(&mechanism) {
                    self.phase = Phase::Done;
                    return Err(EndpointError::Sasl(format!(
                        "server does not offer {} (offers {:?})",
                        mechanism.as_str(),
                        mechs
                    )));
                }
                let hostname = self.cfg.hostname.clone();
                encode_sasl_frame(&mut self.out, &SaslFrame::Init { mechanism, initial_response, hostname })?;
                self.phase = Phase::SaslOutcome;
            }
            (Phase::SaslOutcome, FrameBody::Sasl(SaslFrame::Outcome { code, .. })) => {
                if code != SaslCode::Ok {
                    self.phase = Phase::Done;
                    return Err(EndpointError::Sasl(format!("server answered {code:?}")));
                }
                self.sasl_done = true;
                // Pipeline the AMQP header and open, as the official clients do.
                self.out.extend_from_slice(&ProtocolHeader::Amqp.bytes());
                self.send_open();
                self.phase = Phase::Header;
            }
            (Phase::SaslOutcome | Phase::SaslMechanisms | Phase::SaslServer, _) => {
                self.phase = Phase::Done;
                return Err(EndpointError::Sasl("unexpected frame during SASL negotiation".into()));
            }
            (Phase::Frames, FrameBody::Empty) => {}
            (Phase::Frames, FrameBody::Sasl(_)) => {
                return Err(Self::protocol(condition::FRAMING_ERROR, "SASL frame after negotiation"));
            }
            (Phase::Frames, FrameBody::Amqp(p, payload)) => self.on_performative(frame.channel, p, payload)?,
            _ => {}
        }
        Ok(())
    }

    fn on_performative(&mut self, channel: u16, p: Performative, payload: Bytes) -> Result<()> {
        tracing::trace!(channel, performative = ?p, "frame in");
        if self.remote_open.is_none() && !matches!(p, Performative::Open(_) | Performative::Close(_)) {
            return Err(Self::protocol(condition::ILLEGAL_STATE, "frame before open"));
        }
        if self.ended_channels.contains(&channel) && !matches!(p, Performative::Begin(_) | Performative::Close(_)) {
            return Ok(());
        }
        match p {
            Performative::Open(o) => self.on_open(o),
            Performative::Begin(b) => self.on_begin(channel, b),
            Performative::Attach(a) => self.on_attach(channel, *a),
            Performative::Flow(f) => self.on_flow(channel, f),
            Performative::Transfer(t) => {
                let tag = DeliveryTag::new(t.delivery_tag.as_deref().unwrap_or_default())
                    .ok_or_else(|| Self::protocol(condition::INVALID_FIELD, "delivery-tag longer than 32 bytes"))?;
                let t = TransferIn {
                    handle: t.handle,
                    delivery_id: t.delivery_id,
                    tag,
                    message_format: t.message_format,
                    settled: t.settled,
                    more: t.more,
                    aborted: t.aborted,
                };
                self.on_transfer(channel, t, payload)
            }
            Performative::Disposition(d) => {
                let local = self.local_channel(channel)?;
                self.events.push_back(Event::Disposition {
                    channel: local,
                    role: d.role,
                    first: d.first,
                    last: d.last.unwrap_or(d.first),
                    settled: d.settled,
                    state: d.state,
                });
                Ok(())
            }
            Performative::Detach(d) => self.on_detach(channel, d),
            Performative::End(e) => self.on_end(channel, e),
            Performative::Close(c) => {
                // Closing ends every session: held detach answers are no longer owed.
                self.held_detaches.clear();
                if !self.close_sent && self.open_sent {
                    self.write(0, &Performative::Close(Close { error: None }), &[])?;
                    self.close_sent = true;
                }
                self.phase = Phase::Done;
                let error = c.error;
                self.events.push_back(Event::Closed { error: error.clone() });
                match error {
                    Some(e) => Err(EndpointError::RemoteClosed(e)),
                    None => Ok(()),
                }
            }
        }
    }

    fn on_open(&mut self, o: Open) -> Result<()> {
        if self.remote_open.is_some() {
            return Err(Self::protocol(condition::ILLEGAL_STATE, "second open"));
        }
        let mfs = o.max_frame_size.unwrap_or(u32::MAX);
        if mfs < MIN_MAX_FRAME_SIZE {
            return Err(Self::protocol(condition::FRAME_SIZE_TOO_SMALL, "max-frame-size below 512"));
        }
        self.peer_max_frame = mfs;
        self.peer_channel_max = o.channel_max.unwrap_or(u16::MAX);
        self.peer_idle = o.idle_time_out.filter(|&ms| ms > 0).map(|ms| Duration::from_millis(ms.into()));
        self.remote_open = Some(Box::new(o.clone()));
        if self.role == ConnectionRole::Acceptor && !self.open_sent {
            self.send_open();
        }
        self.events.push_back(Event::Opened(Box::new(o)));
        Ok(())
    }

    fn send_open(&mut self) {
        let open = Open {
            container_id: self.cfg.container_id.clone(),
            hostname: self.cfg.hostname.clone(),
            max_frame_size: Some(self.cfg.max_frame_size),
            channel_max: Some(self.cfg.channel_max),
            // Half of our threshold, as the spec recommends (2.4.5): peers that heartbeat at
            // exactly the advertised interval (fe2o3 does) then never trip it.
            idle_time_out: self.cfg.idle_timeout.map(|d| (d.as_millis() / 2).min(u32::MAX as u128) as u32),
            offered_capabilities: self.cfg.offered_capabilities.clone(),
            desired_capabilities: self.cfg.desired_capabilities.clone(),
            properties: self.cfg.properties.clone(),
            ..Default::default()
        };
        // Encoding an open cannot fail: it holds no arrays of mixed types.
        let _ = encode_frame(&mut self.out, 0, &Performative::Open(open), &[]);
        self.open_sent = true;
    }

    fn local_channel(&self, remote: u16) -> Result<u16> {
        self.remote_channels
            .get(&remote)
            .copied()
            .ok_or_else(|| Self::protocol(condition::NOT_ALLOWED, format!("frame on unknown channel {remote}")))
    }

    fn on_begin(&mut self, channel: u16, b: Begin) -> Result<()> {
        if channel > self.cfg.channel_max {
            return Err(Self::protocol(condition::NOT_ALLOWED, format!("channel {channel} above channel-max")));
        }
        if self.remote_channels.contains_key(&channel) {
            return Err(Self::protocol(condition::NOT_ALLOWED, format!("channel {channel} already in use")));
        }
        self.ended_channels.remove(&channel);
        let local = match b.remote_channel {
            Some(ours) => {
                // The peer answers our begin.
                let s = self
                    .sessions
                    .get_mut(&ours)
                    .filter(|s| s.remote_channel.is_none())
                    .ok_or_else(|| Self::protocol(condition::NOT_ALLOWED, "begin answers an unknown session"))?;
                s.remote_channel = Some(channel);
                ours
            }
            None => {
                // Answer on the peer's own channel number when it is free here, so both ends
                // number the session alike. Some clients assume they do: the official Rust SDK
                // (fe2o3 0.16) closed connections with "Session is not found" once the numbers
                // diverged after a session was ended and another begun (interop/rust).
                let limit = self.peer_channel_max.min(self.cfg.channel_max);
                let local = if channel <= limit && !self.sessions.contains_key(&channel) {
                    channel
                } else {
                    (0..=limit)
                        .find(|c| !self.sessions.contains_key(c))
                        .ok_or_else(|| Self::protocol(condition::RESOURCE_LIMIT_EXCEEDED, "no free channel"))?
                };
                let mut s = Session::new(self.cfg.session_window);
                s.remote_channel = Some(channel);
                self.sessions.insert(local, s);
                let reply = Begin {
                    remote_channel: Some(channel),
                    next_outgoing_id: 0,
                    incoming_window: self.cfg.session_window,
                    outgoing_window: u32::MAX,
                    handle_max: Some(self.cfg.handle_max),
                    ..Default::default()
                };
                self.write(local, &Performative::Begin(reply), &[])?;
                local
            }
        };
        self.remote_channels.insert(channel, local);
        let s = self.sessions.get_mut(&local).expect("session exists");
        s.next_incoming_id = b.next_outgoing_id;
        s.remote_incoming_window = b.incoming_window;
        s.remote_outgoing_window = b.outgoing_window;
        self.events.push_back(Event::SessionBegun { channel: local });
        Ok(())
    }

    fn on_attach(&mut self, channel: u16, a: Attach) -> Result<()> {
        let local = self.local_channel(channel)?;
        let handle_max = self.cfg.handle_max;
        let max_msg = self.cfg.max_message_size;
        let s = self.sessions.get_mut(&local).expect("mapped session exists");
        if a.handle > handle_max {
            return Err(Self::protocol(condition::NOT_ALLOWED, format!("handle {} above handle-max", a.handle)));
        }
        if s.remote_handles.contains_key(&a.handle) {
            return Err(Self::protocol(condition::HANDLE_IN_USE, format!("handle {} in use", a.handle)));
        }
        // Is this the answer to an attach of ours (same name, opposite role, not yet attached)?
        let ours = s
            .links
            .iter()
            .find(|(_, l)| l.state == LinkState::AttachSent && l.name == a.name && l.role != a.role)
            .map(|(h, _)| *h);
        match ours {
            Some(h) => {
                let l = s.links.get_mut(&h).expect("found above");
                l.remote_handle = Some(a.handle);
                l.state = LinkState::Attached;
                if l.role == Role::Receiver {
                    l.delivery_count = a.initial_delivery_count.unwrap_or(0);
                } else {
                    l.max_message_size = a.max_message_size.unwrap_or(0);
                }
                s.remote_handles.insert(a.handle, h);
                self.events
                    .push_back(Event::Attached { link: LinkId { channel: local, handle: h }, attach: Box::new(a) });
            }
            None => {
                let h = s.free_handle();
                let role = if a.role == Role::Sender { Role::Receiver } else { Role::Sender };
                // Stays AttachSent until accept_link/refuse_link.
                let mut link = Link::new(&a, role, max_msg);
                link.remote_handle = Some(a.handle);
                if role == Role::Sender {
                    link.max_message_size = a.max_message_size.unwrap_or(0);
                }
                s.links.insert(h, link);
                s.remote_handles.insert(a.handle, h);
                self.events.push_back(Event::AttachRequested {
                    link: LinkId { channel: local, handle: h },
                    attach: Box::new(a),
                });
            }
        }
        Ok(())
    }

    fn lookup_remote_handle(&self, local: u16, remote: u32) -> Result<u32> {
        self.sessions
            .get(&local)
            .and_then(|s| s.remote_handles.get(&remote).copied())
            .ok_or_else(|| Self::protocol(condition::UNATTACHED_HANDLE, format!("handle {remote} is not attached")))
    }

    fn on_flow(&mut self, channel: u16, f: Flow) -> Result<()> {
        let local = self.local_channel(channel)?;
        let handle = match f.handle {
            Some(rh) => Some(self.lookup_remote_handle(local, rh)?),
            None => None,
        };
        let s = self.sessions.get_mut(&local).expect("mapped session exists");
        s.remote_incoming_window =
            f.next_incoming_id.unwrap_or(0).wrapping_add(f.incoming_window).wrapping_sub(s.next_outgoing_id);
        s.remote_outgoing_window = f.outgoing_window;
        let mut echo = f.echo && handle.is_none();
        if let Some(h) = handle {
            let l = s.links.get_mut(&h).expect("mapped link exists");
            match l.role {
                Role::Sender => {
                    let peer_count = f.delivery_count.unwrap_or(0);
                    let credit = f.link_credit.unwrap_or(0);
                    l.credit = peer_count.wrapping_add(credit).wrapping_sub(l.delivery_count);
                    l.drain = f.drain;
                }
                Role::Receiver => {
                    if let Some(dc) = f.delivery_count {
                        // The sender may have advanced the count (drain): recompute our credit.
                        let limit = l.delivery_count.wrapping_add(l.credit);
                        l.delivery_count = dc;
                        l.credit = limit.wrapping_sub(dc).min(limit);
                        if f.drain {
                            l.credit = f.link_credit.unwrap_or(0);
                        }
                    }
                }
            }
            echo = f.echo;
            self.events.push_back(Event::LinkFlow { link: LinkId { channel: local, handle: h } });
        } else if s.remote_incoming_window > 0 {
            // A session-only flow may reopen the window our sender links wait on.
            for (&h, l) in &s.links {
                if l.role == Role::Sender {
                    self.events.push_back(Event::LinkFlow { link: LinkId { channel: local, handle: h } });
                }
            }
        }
        if echo {
            self.send_flow(local, handle)?;
        }
        Ok(())
    }

    fn on_transfer(&mut self, channel: u16, t: TransferIn, payload: Bytes) -> Result<()> {
        let local = self.local_channel(channel)?;
        let window = self.cfg.session_window;
        // One session lookup per transfer: this runs for every received event.
        let s = self.sessions.get_mut(&local).expect("mapped session exists");
        let h = *s.remote_handles.get(&t.handle).ok_or_else(|| {
            Self::protocol(condition::UNATTACHED_HANDLE, format!("handle {} is not attached", t.handle))
        })?;
        if s.incoming_window == 0 {
            return Err(Self::protocol(condition::WINDOW_VIOLATION, "transfer beyond the incoming window"));
        }
        s.incoming_window -= 1;
        s.next_incoming_id = s.next_incoming_id.wrapping_add(1);
        let replenish = s.incoming_window < window / 2;
        let l = s.links.get_mut(&h).expect("mapped link exists");
        if l.role != Role::Receiver {
            return Err(Self::protocol(condition::NOT_ALLOWED, "transfer on a link where we are the sender"));
        }
        let link = LinkId { channel: local, handle: h };
        let limit = if l.max_message_size == 0 { u64::MAX } else { l.max_message_size };
        let mut p = match l.partial.take() {
            Some(p) => p,
            None => {
                if l.credit == 0 {
                    return Err(Self::protocol(condition::TRANSFER_LIMIT_EXCEEDED, "transfer without link credit"));
                }
                let id = t.delivery_id.ok_or_else(|| {
                    Self::protocol(condition::INVALID_FIELD, "first transfer of a delivery without delivery-id")
                })?;
                l.credit -= 1;
                l.delivery_count = l.delivery_count.wrapping_add(1);
                // `id` is from the peer's delivery-id sequence; ours (`next_delivery_id`) is
                // separate and must not follow it, or our sends would reuse ids still awaiting
                // their outcomes.
                let (format, settled) = (t.message_format.unwrap_or(0), t.settled.unwrap_or(false));
                if !t.more && !t.aborted {
                    // A whole delivery in one frame, the usual case: no partial state to build.
                    let size = payload.len() as u64;
                    let oversized = size > limit;
                    self.events.push_back(Event::Delivery(Delivery {
                        link,
                        delivery_id: id,
                        tag: t.tag,
                        message_format: format,
                        settled,
                        // Zero-copy: a slice of the frame.
                        payload: if oversized { Bytes::new() } else { payload },
                        size,
                        oversized,
                        aborted: false,
                    }));
                    return self.replenish_if(replenish, local, window);
                }
                Partial {
                    delivery_id: id,
                    tag: t.tag,
                    format,
                    settled,
                    buf: BytesMut::new(),
                    size: 0,
                    oversized: false,
                }
            }
        };
        if t.settled == Some(true) {
            p.settled = true;
        }
        p.size += payload.len() as u64;
        if p.size > limit {
            p.oversized = true;
            p.buf = BytesMut::new();
        }
        if t.aborted || !t.more {
            let payload = if p.oversized {
                Bytes::new()
            } else if p.buf.is_empty() {
                payload // nothing buffered before this frame: zero-copy slice of it
            } else {
                p.buf.extend_from_slice(&payload);
                p.buf.freeze()
            };
            self.events.push_back(Event::Delivery(Delivery {
                link,
                delivery_id: p.delivery_id,
                tag: p.tag,
                message_format: p.format,
                settled: p.settled,
                payload,
                size: p.size,
                oversized: p.oversized,
                aborted: t.aborted,
            }));
        } else {
            if !p.oversized {
                p.buf.extend_from_slice(&payload);
            }
            l.partial = Some(p);
        }
        self.replenish_if(replenish, local, window)
    }

    /// Reopens our incoming window on session `local` when `replenish` says it ran low.
    fn replenish_if(&mut self, replenish: bool, local: u16, window: u32) -> Result<()> {
        if replenish {
            let s = self.sessions.get_mut(&local).expect("exists");
            s.incoming_window = window;
            self.send_flow(local, None)?;
        }
        Ok(())
    }

    fn on_detach(&mut self, channel: u16, d: Detach) -> Result<()> {
        let local = self.local_channel(channel)?;
        let h = self.lookup_remote_handle(local, d.handle)?;
        let s = self.sessions.get_mut(&local).expect("mapped session exists");
        s.remote_handles.remove(&d.handle);
        let l = s.links.remove(&h).expect("mapped link exists");
        let remote = l.state != LinkState::DetachSent;
        if remote {
            // Answer the peer's detach, now or once its delay has passed.
            match l.detach_reply_delay {
                Some(delay) => {
                    self.held_detaches.push(HeldDetach {
                        channel: local,
                        handle: h,
                        closed: d.closed,
                        due: self.last_recv + delay,
                    });
                    // Something must still go back at once: a peer with Nagle's algorithm on
                    // (fe2o3 is) holds its next frames, the `end` among them, until our TCP
                    // acknowledgement, which would otherwise wait for the held answer.
                    if self.out.is_empty() {
                        encode_empty_frame(&mut self.out);
                    }
                }
                None => {
                    self.write(local, &Performative::Detach(Detach { handle: h, closed: d.closed, error: None }), &[])?
                }
            }
        }
        self.events.push_back(Event::Detached {
            link: LinkId { channel: local, handle: h },
            closed: d.closed,
            error: d.error,
            remote,
        });
        Ok(())
    }

    fn on_end(&mut self, channel: u16, e: End) -> Result<()> {
        let local = self.local_channel(channel)?;
        self.remote_channels.remove(&channel);
        self.ended_channels.insert(channel);
        let s = self.sessions.remove(&local).expect("mapped session exists");
        // The session's end detaches its links: held answers are no longer owed.
        self.held_detaches.retain(|h| h.channel != local);
        if !s.end_sent {
            self.write(local, &Performative::End(End { error: None }), &[])?;
        }
        self.events.push_back(Event::SessionEnded { channel: local, error: e.error });
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Actions
    // ---------------------------------------------------------------------------------------

    fn write(&mut self, channel: u16, p: &Performative, payload: &[u8]) -> Result<()> {
        // Per frame, as the house style puts it (deliveries sent in bursts are not written here).
        tracing::trace!(channel, performative = ?p, "frame out");
        if !self.held_detaches.is_empty() {
            self.release_held_detaches(|h| h.channel == channel)?;
        }
        encode_frame(&mut self.out, channel, p, payload)?;
        Ok(())
    }

    /// Writes the held detach answers that `pick` selects, in the order they were held. Anything
    /// else we write on a channel goes after its held answers, so the peer never sees a link
    /// handle reused before the old link's detach.
    fn release_held_detaches(&mut self, pick: impl Fn(&HeldDetach) -> bool) -> Result<()> {
        let mut i = 0;
        while i < self.held_detaches.len() {
            if pick(&self.held_detaches[i]) {
                let h = self.held_detaches.remove(i);
                let d = Detach { handle: h.handle, closed: h.closed, error: None };
                encode_frame(&mut self.out, h.channel, &Performative::Detach(d), &[])?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    fn require_open(&self) -> Result<()> {
        if self.phase == Phase::Done || self.close_sent {
            return Err(EndpointError::IllegalState("connection is closed"));
        }
        Ok(())
    }

    /// Begins a session; [`Event::SessionBegun`] follows when the peer answers.
    pub fn begin(&mut self) -> Result<u16> {
        self.require_open()?;
        let max = if self.remote_open.is_some() {
            self.peer_channel_max.min(self.cfg.channel_max)
        } else {
            self.cfg.channel_max
        };
        let ch =
            (0..=max).find(|c| !self.sessions.contains_key(c)).ok_or(EndpointError::IllegalState("no free channel"))?;
        self.sessions.insert(ch, Session::new(self.cfg.session_window));
        let b = Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: self.cfg.session_window,
            outgoing_window: u32::MAX,
            handle_max: Some(self.cfg.handle_max),
            ..Default::default()
        };
        self.write(ch, &Performative::Begin(b), &[])?;
        Ok(ch)
    }

    /// Attaches a link on a session; [`Event::Attached`] follows when the peer answers.
    /// The handle in `attach` is assigned by the engine.
    pub fn attach(&mut self, channel: u16, mut attach: Attach) -> Result<LinkId> {
        self.require_open()?;
        let max_msg = self.cfg.max_message_size;
        let s = self.sessions.get_mut(&channel).ok_or(EndpointError::IllegalState("unknown session"))?;
        let h = s.free_handle();
        attach.handle = h;
        if attach.role == Role::Sender && attach.initial_delivery_count.is_none() {
            attach.initial_delivery_count = Some(0);
        }
        let link = Link::new(&attach, attach.role, max_msg);
        s.links.insert(h, link);
        self.write(channel, &Performative::Attach(Box::new(attach)), &[])?;
        Ok(LinkId { channel, handle: h })
    }

    /// Accepts a link the peer attached ([`Event::AttachRequested`]).
    pub fn accept_link(&mut self, id: LinkId, reply: AttachReply) -> Result<()> {
        let s = self.sessions.get_mut(&id.channel).ok_or(EndpointError::IllegalState("unknown session"))?;
        let l = s.links.get_mut(&id.handle).ok_or(EndpointError::IllegalState("unknown link"))?;
        l.state = LinkState::Attached;
        if let Some(m) = reply.snd_settle_mode {
            l.snd_settle_mode = m;
        }
        if let Some(m) = reply.rcv_settle_mode {
            l.rcv_settle_mode = m;
        }
        if l.role == Role::Receiver {
            if let Some(m) = reply.max_message_size {
                l.max_message_size = m;
            }
        }
        let a = Attach {
            name: l.name.clone(),
            handle: id.handle,
            role: l.role,
            snd_settle_mode: l.snd_settle_mode,
            rcv_settle_mode: l.rcv_settle_mode,
            source: reply.source,
            target: reply.target,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: (l.role == Role::Sender).then_some(l.delivery_count),
            max_message_size: reply.max_message_size,
            offered_capabilities: reply.offered_capabilities,
            desired_capabilities: Vec::new(),
            properties: reply.properties,
        };
        self.write(id.channel, &Performative::Attach(Box::new(a)), &[])
    }

    /// Refuses a link the peer attached: an attach with a null terminus, then a closing detach
    /// with `error` (the pattern every official client surfaces as the link's error).
    pub fn refuse_link(&mut self, id: LinkId, error: AmqpError) -> Result<()> {
        let s = self.sessions.get_mut(&id.channel).ok_or(EndpointError::IllegalState("unknown session"))?;
        let l = s.links.get_mut(&id.handle).ok_or(EndpointError::IllegalState("unknown link"))?;
        let mut a = Attach::new(l.name.clone(), id.handle, l.role);
        if l.role == Role::Sender {
            a.initial_delivery_count = Some(0);
        }
        l.state = LinkState::DetachSent;
        self.write(id.channel, &Performative::Attach(Box::new(a)), &[])?;
        self.write(
            id.channel,
            &Performative::Detach(Detach { handle: id.handle, closed: true, error: Some(error) }),
            &[],
        )
    }

    /// Detaches (closes) a link, optionally with an error. [`Event::Detached`] follows when the
    /// peer answers.
    pub fn detach(&mut self, id: LinkId, error: Option<AmqpError>) -> Result<()> {
        let Some(s) = self.sessions.get_mut(&id.channel) else { return Ok(()) };
        let Some(l) = s.links.get_mut(&id.handle) else { return Ok(()) };
        if l.state == LinkState::DetachSent {
            return Ok(());
        }
        l.state = LinkState::DetachSent;
        if l.remote_handle.is_none() {
            // The peer never answered; forget the link once our detach is out.
            s.links.remove(&id.handle);
        }
        self.write(id.channel, &Performative::Detach(Detach { handle: id.handle, closed: true, error }), &[])
    }

    /// Holds back our answer to the peer's detach of `id` by `delay`. If the peer ends the
    /// session within it, the answer is never sent: ending a session detaches its links. Anything
    /// else we write on the session first releases the held answer, so the order of frames is kept.
    ///
    /// Why: some clients (fe2o3-amqp 0.16, under the official Rust SDK) drop a link and its
    /// session together: detach, then end, without waiting for our answers. If an answer arrives
    /// before the client has processed its own end, it fails the session with
    /// `unattached-handle` and then the whole connection ("Session is not found"). Over a real
    /// network the round trip hides this; on loopback it killed about one SDK connection in 40.
    pub fn delay_detach_reply(&mut self, id: LinkId, delay: Duration) {
        if let Some(l) = self.sessions.get_mut(&id.channel).and_then(|s| s.links.get_mut(&id.handle)) {
            l.detach_reply_delay = Some(delay);
        }
    }

    /// Ends a session.
    pub fn end(&mut self, channel: u16, error: Option<AmqpError>) -> Result<()> {
        let Some(s) = self.sessions.get_mut(&channel) else { return Ok(()) };
        if s.end_sent {
            return Ok(());
        }
        s.end_sent = true;
        // Ending the session detaches its links: held answers are no longer owed.
        self.held_detaches.retain(|h| h.channel != channel);
        self.write(channel, &Performative::End(End { error }), &[])
    }

    /// Closes the connection, optionally with an error.
    pub fn close(&mut self, error: Option<AmqpError>) {
        if self.close_sent || !self.open_sent || self.phase == Phase::Done {
            return;
        }
        self.held_detaches.clear();
        let _ = self.write(0, &Performative::Close(Close { error }), &[]);
        self.close_sent = true;
    }

    /// Issues link credit on one of our receiver links (sets the credit to `credit`).
    pub fn flow(&mut self, id: LinkId, credit: u32) -> Result<()> {
        let s = self.sessions.get_mut(&id.channel).ok_or(EndpointError::IllegalState("unknown session"))?;
        let l = s.links.get_mut(&id.handle).ok_or(EndpointError::IllegalState("unknown link"))?;
        if l.role != Role::Receiver {
            return Err(EndpointError::IllegalState("credit is issued by receivers"));
        }
        l.credit = credit;
        self.send_flow(id.channel, Some(id.handle))
    }

    /// Completes a drain on our sender link: consumes the remaining credit and tells the peer.
    pub fn drain_complete(&mut self, id: LinkId) -> Result<()> {
        let s = self.sessions.get_mut(&id.channel).ok_or(EndpointError::IllegalState("unknown session"))?;
        let l = s.links.get_mut(&id.handle).ok_or(EndpointError::IllegalState("unknown link"))?;
        l.delivery_count = l.delivery_count.wrapping_add(l.credit);
        l.credit = 0;
        l.drain = false;
        self.send_flow_drain(id.channel, Some(id.handle), true)
    }

    fn send_flow(&mut self, channel: u16, handle: Option<u32>) -> Result<()> {
        self.send_flow_drain(channel, handle, false)
    }

    fn send_flow_drain(&mut self, channel: u16, handle: Option<u32>, drain: bool) -> Result<()> {
        let s = self.sessions.get(&channel).ok_or(EndpointError::IllegalState("unknown session"))?;
        let mut f = Flow {
            next_incoming_id: s.remote_channel.map(|_| s.next_incoming_id),
            incoming_window: s.incoming_window,
            next_outgoing_id: s.next_outgoing_id,
            outgoing_window: u32::MAX,
            drain,
            ..Default::default()
        };
        if let Some(h) = handle {
            let l = s.links.get(&h).ok_or(EndpointError::IllegalState("unknown link"))?;
            f.handle = Some(h);
            f.delivery_count = Some(l.delivery_count);
            f.link_credit = Some(l.credit);
        }
        self.write(channel, &Performative::Flow(f), &[])
    }

    /// Settles or updates deliveries `first..=last` on a session.
    pub fn disposition(
        &mut self,
        channel: u16,
        role: Role,
        first: u32,
        last: u32,
        settled: bool,
        state: Option<DeliveryState>,
    ) -> Result<()> {
        let d = Disposition { role, first, last: (last != first).then_some(last), settled, state, batchable: false };
        self.write(channel, &Performative::Disposition(d), &[])
    }

    /// Accepts and settles a delivery we received, unless the sender settled it already.
    pub fn accept_delivery(&mut self, d: &Delivery) -> Result<()> {
        if d.settled {
            return Ok(());
        }
        self.disposition(
            d.link.channel,
            Role::Receiver,
            d.delivery_id,
            d.delivery_id,
            true,
            Some(DeliveryState::Accepted),
        )
    }

    /// Sends a message on one of our sender links, splitting it into frames that fit the peer's
    /// max frame size. Consumes one unit of credit. Returns the delivery id.
    pub fn send(&mut self, id: LinkId, args: SendArgs<'_>, payload: &[u8]) -> Result<u32> {
        self.send_with(id, args, payload.len(), |out| out.extend_from_slice(payload))
    }

    /// Like [`Connection::send`], but the payload (at most `max_len` bytes) is written by `write`
    /// straight into the output buffer, so a message can be assembled (spliced) without an
    /// intermediate copy. `write` appends to the buffer it is given and must not touch what is
    /// already there; the frame's size is taken from what it wrote, and when `max_len` could
    /// exceed one frame the payload is assembled first and cut into frames.
    pub fn send_with<F>(&mut self, id: LinkId, args: SendArgs<'_>, max_len: usize, write: F) -> Result<u32>
    where
        F: FnOnce(&mut BytesMut),
    {
        self.burst(id)?.send_with(args, max_len, write)
    }

    /// Starts a burst of deliveries on sender link `id`: the session and link are looked up
    /// once for all of them, not once per delivery (a consumer pump sends thousands in a row).
    /// Fails like [`Connection::send_with`] when the link is not an attached sender.
    pub fn burst(&mut self, id: LinkId) -> Result<Burst<'_>> {
        self.require_open()?;
        if !self.held_detaches.is_empty() {
            self.release_held_detaches(|h| h.channel == id.channel)?;
        }
        let s = self.sessions.get_mut(&id.channel).ok_or(EndpointError::IllegalState("unknown session"))?;
        let Session { links, next_delivery_id, next_outgoing_id, remote_incoming_window, .. } = s;
        let link = links.get_mut(&id.handle).ok_or(EndpointError::IllegalState("unknown link"))?;
        if link.role != Role::Sender || link.remote_handle.is_none() || link.state != LinkState::Attached {
            return Err(EndpointError::IllegalState("link is not an attached sender"));
        }
        Ok(Burst {
            id,
            link,
            next_delivery_id,
            next_outgoing_id,
            remote_incoming_window,
            out: &mut self.out,
            max_frame: self.peer_max_frame,
        })
    }

    /// Replenishes credit on one of our receiver links when it has fallen below half of
    /// `window`. Returns true when a flow was sent.
    pub fn top_up_credit(&mut self, id: LinkId, window: u32) -> Result<bool> {
        let Some(l) = self.link(id) else { return Ok(false) };
        if l.role != Role::Receiver || l.credit >= window / 2 {
            return Ok(false);
        }
        self.flow(id, window)?;
        Ok(true)
    }

    /// All links of a session (local handles).
    pub fn links_of(&self, channel: u16) -> Vec<LinkId> {
        self.sessions
            .get(&channel)
            .map(|s| s.links.keys().map(|&handle| LinkId { channel, handle }).collect())
            .unwrap_or_default()
    }

    /// All sessions (local channels).
    pub fn channels(&self) -> Vec<u16> {
        self.sessions.keys().copied().collect()
    }
}

/// Deliveries sent in a row on one sender link ([`Connection::burst`]).
#[derive(Debug)]
pub struct Burst<'c> {
    id: LinkId,
    link: &'c mut Link,
    next_delivery_id: &'c mut u32,
    next_outgoing_id: &'c mut u32,
    remote_incoming_window: &'c mut u32,
    out: &'c mut BytesMut,
    max_frame: u32,
}

impl Burst<'_> {
    /// Credit the peer has granted on the link.
    pub fn credit(&self) -> u32 {
        self.link.credit
    }

    /// True when the link has credit and the peer's session window takes a delivery of at
    /// most `max_len` bytes with a tag of `tag_len` bytes now.
    pub fn can_send(&self, tag_len: usize, max_len: usize) -> bool {
        self.link.credit > 0 && *self.remote_incoming_window >= frames_for(frame_room(self.max_frame, tag_len), max_len)
    }

    /// Sends one delivery, as [`Connection::send_with`] does.
    pub fn send_with<F>(&mut self, args: SendArgs<'_>, max_len: usize, write: F) -> Result<u32>
    where
        F: FnOnce(&mut BytesMut),
    {
        if args.tag.len() > ehub_amqp_codec::MAX_DELIVERY_TAG {
            return Err(EndpointError::IllegalState("a delivery tag is at most 32 bytes"));
        }
        let room = frame_room(self.max_frame, args.tag.len());
        let frames = frames_for(room, max_len);
        if *self.remote_incoming_window < frames {
            // The peer's session window: a sender that ignores it gets a window violation.
            return Err(EndpointError::IllegalState("the peer's session window is full"));
        }
        let l = &mut *self.link;
        if l.credit == 0 {
            return Err(EndpointError::IllegalState("no link credit"));
        }
        l.credit -= 1;
        l.delivery_count = l.delivery_count.wrapping_add(1);
        let delivery_id = *self.next_delivery_id;
        *self.next_delivery_id = delivery_id.wrapping_add(1);

        let mut t = Transfer {
            handle: self.id.handle,
            delivery_id: Some(delivery_id),
            delivery_tag: None,
            message_format: Some(args.message_format),
            settled: Some(args.settled),
            ..Default::default()
        };
        let out = &mut *self.out;
        if frames == 1 {
            let start = start_frame(out, FRAME_TYPE_AMQP, self.id.channel);
            put_transfer(out, &t, args.tag)?;
            let before = out.len();
            write(out);
            debug_assert!(out.len() - before <= max_len, "send_with wrote more than declared");
            finish_frame(out, start)?;
            *self.next_outgoing_id = self.next_outgoing_id.wrapping_add(1);
            *self.remote_incoming_window -= 1;
            return Ok(delivery_id);
        }
        // Multi-frame: assemble once, then cut into frames.
        let mut body = BytesMut::with_capacity(max_len);
        write(&mut body);
        let mut chunks = body.chunks(room).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            t.more = chunks.peek().is_some();
            if !first {
                t.delivery_id = None;
                t.message_format = None;
            }
            let start = start_frame(out, FRAME_TYPE_AMQP, self.id.channel);
            put_transfer(out, &t, if first { args.tag } else { &[] })?;
            out.extend_from_slice(chunk);
            finish_frame(out, start)?;
            *self.next_outgoing_id = self.next_outgoing_id.wrapping_add(1);
            // At least `frames` were open (checked above).
            *self.remote_incoming_window -= 1;
            first = false;
        }
        Ok(delivery_id)
    }
}

/// The most payload one transfer frame of at most `max_frame` bytes carries (at least 1).
fn frame_room(max_frame: u32, tag_len: usize) -> usize {
    // Upper bound of the transfer performative: descriptor 3 + list32 header 9 + fields.
    let perf_max = 3 + 9 + 5 + 5 + (5 + tag_len) + 5 + 1 + 1 + 5;
    (max_frame as usize).saturating_sub(8 + perf_max).max(1)
}

/// Transfer frames for a payload of at most `max_len` bytes with `room` bytes per frame.
fn frames_for(room: usize, max_len: usize) -> u32 {
    // The common case without a division: this runs twice per delivery.
    if max_len <= room {
        1
    } else {
        u32::try_from(max_len.div_ceil(room)).unwrap_or(u32::MAX)
    }
}

/// Writes a transfer performative with the tag as a slice (hot path: no `Bytes` allocation).
fn put_transfer(out: &mut BytesMut, t: &Transfer, tag: &[u8]) -> std::result::Result<(), ehub_amqp_codec::EncodeError> {
    let tag_field = (!tag.is_empty() || t.delivery_id.is_some()).then_some(tag);
    // rcv-settle-mode, state, resume, aborted, batchable: written as nulls (`all_fields`),
    // because the Python SDK needs the complete field list.
    ehub_amqp_codec::put_transfer_head(
        out,
        t.handle,
        t.delivery_id,
        tag_field,
        t.message_format,
        t.settled,
        t.more,
        true,
    )
}
