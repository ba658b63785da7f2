//! One task per client connection. It owns the socket and the AMQP engine, and talks to the
//! partition logs through callbacks that post [`Control`] messages back to it.

use crate::limits::{sweep_interval, AmqpLimits};
use crate::management;
use crate::metrics::AmqpMetrics;
use crate::server::ServeOptions;
use crate::settle::{records_deliveries_late, Settlements};
use bytes::{Bytes, BytesMut};
use ehub_amqp_codec::{
    find_annotation, put_long, put_string, put_timestamp, splice_annotations, AnnotationEntries, Attach, DeliveryState,
    Error as AmqpError, Message, ReceiverSettleMode, Role, SectionSpans, SenderSettleMode, Symbol, Value,
    BATCH_MESSAGE_FORMAT,
};
use ehub_amqp_endpoint::driver::Transport;
use ehub_amqp_endpoint::{
    AttachReply, Connection, ConnectionConfig, ConnectionRole, Delivery, EndpointError, Event, LinkId, SaslConfig,
    SendArgs,
};
use ehub_broker_core::{
    covers, entity_path, now_millis, now_secs, AdmitError, Broker, ConnectionSlot, ConsumerGroup, DetachCondition,
    Displaced, Disruption, Hub, ReceiverEntry, Rights, TokenType,
};
use ehub_model::{annotations, conditions, link as linkprops, nodes, EntityAddress, EventPosition};
use ehub_partition_log::{AppendEvent, Appended, LogError, Partition, StartPosition, StoredEvent};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Credit granted to client senders (producers and request links).
const PRODUCER_CREDIT: u32 = 1000;
/// Appends in flight per producer link before we stop granting credit.
const MAX_INFLIGHT: usize = 2048;
/// Events read from the log at once for one consumer.
const READ_BATCH: usize = 2048;
/// Bytes read from the partition's in-memory tail at once for one consumer: such reads run on
/// the connection's task, so they stay small.
const CACHED_READ_BYTES: usize = 1 << 20;
/// Bytes read from segment files at once for one consumer (on the blocking pool), and the most
/// a consumer's read-ahead holds before it stops reading.
const FILE_READ_BYTES: usize = 2 << 20;
/// Keys the broker owns in delivered events' message annotations (the Kafka front's producer
/// mark is never delivered).
const BROKER_KEYS: [&str; 5] = [
    annotations::SEQUENCE_NUMBER,
    annotations::OFFSET,
    annotations::ENQUEUED_TIME,
    annotations::PARTITION_KEY,
    annotations::KAFKA_PRODUCER,
];

/// Messages posted to a connection task by storage callbacks, helper tasks and other
/// connections. Payloads are boxed to keep the message at 32 bytes: the channel allocates a
/// block of 32 messages up front, per connection, idle ones too.
#[derive(Debug)]
pub(crate) enum Control {
    Ack {
        link: LinkId,
        delivery_id: u32,
        settled: bool,
        result: Box<Result<Appended, String>>,
    },
    Resolved {
        link: LinkId,
        id: u64,
        result: Box<Result<i64, LogError>>,
    },
    ReadDone {
        link: LinkId,
        id: u64,
        result: Box<Result<Vec<StoredEvent>, LogError>>,
    },
    Wake {
        link: LinkId,
        id: u64,
    },
    Detach {
        link: LinkId,
        error: Box<AmqpError>,
    },
    /// An injected fault (`ehub fault …`).
    Disrupt(Box<Disruption>),
}

struct Consumer {
    id: u64,
    hub: Arc<Hub>,
    cg: Arc<ConsumerGroup>,
    pidx: usize,
    part: Arc<Partition>,
    next_seq: Option<i64>,
    /// Events read ahead of the link's credit, and their bytes.
    buffer: VecDeque<StoredEvent>,
    buffer_bytes: usize,
    busy: bool,
    waiting: bool,
    metrics: bool,
    tag: u32,
    cancel: CancellationToken,
    start: Option<StartPosition>,
}

impl Consumer {
    fn extend(&mut self, events: Vec<StoredEvent>) {
        if let Some(last) = events.last() {
            self.next_seq = Some(last.sequence_number + 1);
        }
        self.buffer_bytes += events.iter().map(stored_len).sum::<usize>();
        self.buffer.extend(events);
    }

    fn take(&mut self) -> Option<StoredEvent> {
        let e = self.buffer.pop_front()?;
        self.buffer_bytes -= stored_len(&e);
        Some(e)
    }

    /// Whether to read the next batch now. The next batch is read while the previous one goes
    /// out, so a link with credit does not wait for the disk (refilling only once half a batch
    /// was left, a fast reader waited at nearly every read). Bounded by bytes as well, so a
    /// slow reader of large events has the broker hold a few megabytes, not a batch of them.
    fn reads_ahead(&self) -> bool {
        !self.busy && reads_ahead(self.buffer.len(), self.buffer_bytes)
    }
}

/// Whether a consumer holding `events` read ahead, of `bytes` in all, reads another batch.
fn reads_ahead(events: usize, bytes: usize) -> bool {
    events < READ_BATCH && bytes < FILE_READ_BYTES
}

fn stored_len(e: &StoredEvent) -> usize {
    e.payload.len() + e.partition_key.as_ref().map_or(0, |k| k.len())
}

/// How long the answer to a client's detach of a `$cbs` link is held back: long enough for the
/// client's `end` of the session to arrive first when it sends one straight after
/// ([`Connection::delay_detach_reply`]).
const CBS_DETACH_REPLY_DELAY: Duration = Duration::from_millis(10);

enum LinkKind {
    CbsIn,
    MgmtIn,
    ReplyOut { node: &'static str, queue: VecDeque<Bytes>, tag: u32 },
    Producer { hub: Arc<Hub>, partition: Option<usize>, inflight: usize },
    Consumer(Box<Consumer>),
    Refused,
}

impl LinkKind {
    /// The `role` label of the links metric.
    fn role(&self) -> Option<&'static str> {
        match self {
            LinkKind::CbsIn => Some("cbs"),
            LinkKind::MgmtIn => Some("management"),
            LinkKind::ReplyOut { .. } => Some("reply"),
            LinkKind::Producer { .. } => Some("producer"),
            LinkKind::Consumer(_) => Some("consumer"),
            LinkKind::Refused => None,
        }
    }

    /// Whether the link keeps its connection from counting as empty (the `$cbs` links do not).
    fn holds_connection(&self) -> bool {
        match self {
            LinkKind::Producer { .. } | LinkKind::Consumer(_) | LinkKind::MgmtIn => true,
            LinkKind::ReplyOut { node, .. } => *node == nodes::MANAGEMENT,
            LinkKind::CbsIn | LinkKind::Refused => false,
        }
    }
}

/// Which right a link needs.
type Claim = fn(&Rights) -> bool;

struct LinkInfo {
    kind: LinkKind,
    name: String,
    target_address: Option<String>,
    /// The entity address and the claim this link needs for as long as it lives: when the
    /// last token granting it expires, the link is detached (as the service does).
    claim: Option<(String, Claim)>,
    /// A transfer went over the link since the last idle sweep.
    active: bool,
    /// When the idle sweep last saw the link active (or it attached).
    idle_since: Instant,
}

impl LinkInfo {
    fn new(kind: LinkKind, name: String, target_address: Option<String>, claim: Option<(String, Claim)>) -> Self {
        LinkInfo { kind, name, target_address, claim, active: false, idle_since: Instant::now() }
    }

    fn refused(name: String) -> Self {
        LinkInfo::new(LinkKind::Refused, name, None, None)
    }
}

struct Token {
    path: String,
    expiry: u64,
    rights: Rights,
}

/// Whether a connection was admitted, or is only to be told why not.
pub(crate) enum Admitted {
    /// It holds a connection slot.
    Slot(ConnectionSlot),
    /// A limit refused it: answer its `open` with this error and close.
    Refused(AmqpError),
}

/// A connection accepted and not yet running: what [`ConnTask`] needs besides its transport,
/// which the listener may still have to wrap (TLS, WebSockets).
pub(crate) struct NewConn {
    broker: Arc<Broker>,
    peer: SocketAddr,
    peer_text: String,
    options: ServeOptions,
    admitted: Admitted,
}

impl NewConn {
    pub(crate) fn new(broker: Arc<Broker>, peer: SocketAddr, options: ServeOptions, admitted: Admitted) -> Self {
        NewConn { broker, peer, peer_text: peer.to_string(), options, admitted }
    }

    pub(crate) fn peer(&self) -> &str {
        &self.peer_text
    }

    pub(crate) async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(self, io: S, stop: CancellationToken) {
        ConnTask::new(self, io).run(stop).await
    }
}

pub(crate) struct ConnTask<S> {
    broker: Arc<Broker>,
    metrics: Arc<AmqpMetrics>,
    limits: AmqpLimits,
    /// The connection's slot (released when the task ends); `None` for a refused connection.
    slot: Option<ConnectionSlot>,
    /// For a refused connection: the error its `open` is answered with.
    refusal: Option<AmqpError>,
    ip: IpAddr,
    /// When links are next checked for idleness: one timer for the connection's life, reset
    /// rather than made anew per loop turn (registering a timer per turn costs the hot path).
    sweep_timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Since when the connection has had no link that holds it open.
    empty_since: Option<Instant>,
    /// This connection's id among those fault injection reaches.
    conn_id: u64,
    /// Until the peer's AMQP open arrives: when the connection is dropped without one.
    handshake_deadline: Option<Instant>,
    /// Sessions begun and not ended, to take off the gauge when the connection ends.
    sessions: i64,
    conn: Connection,
    transport: Transport<S>,
    links: ehub_amqp_endpoint::IdMap<LinkId, LinkInfo>,
    tokens: Vec<Token>,
    /// When a token some link may depend on expires: kept up to date when tokens are put and
    /// claimed links attach, so the event loop does not recompute it per iteration.
    token_deadline: Option<Instant>,
    ctl_tx: UnboundedSender<Control>,
    ctl_rx: UnboundedReceiver<Control>,
    /// Encoded broker annotations of the event being delivered (reused: hot path).
    annotations: BytesMut,
    acks: Vec<(u16, u32, Option<AmqpError>)>,
    settlements: Settlements,
    peer: String,
}

/// Sleeps until `deadline`, or forever when there is none (a `select!` branch that never fires).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The link idle timeout and the empty connection timeout in force now: a fault's, else the
/// configured ones.
fn idle_timeouts(broker: &Broker, limits: &AmqpLimits) -> (Duration, Duration) {
    broker.faults().idle_timeouts().unwrap_or((limits.link_idle_timeout, limits.empty_connection_timeout))
}

pub(crate) fn engine_config(broker: &Broker, limits: &AmqpLimits) -> ConnectionConfig {
    ConnectionConfig {
        container_id: format!("ehub-{}", uuid::Uuid::new_v4().simple()),
        hostname: None,
        max_frame_size: limits.max_frame_size,
        channel_max: limits.max_sessions_per_connection.saturating_sub(1),
        idle_timeout: None,
        sasl: SaslConfig::Server {
            mechanisms: vec![Symbol::from("MSSBCBS"), Symbol::from("ANONYMOUS"), Symbol::from("PLAIN")],
            allow_no_sasl: true,
        },
        session_window: 5000,
        handle_max: limits.max_links_per_session.saturating_sub(1),
        max_message_size: broker.config().max_message_size,
        // Informational: lets tools such as `ehub bench` report the durability policy they
        // measured. The service sends no properties; clients ignore unknown ones.
        properties: Some(vec![
            (Value::Symbol("product".into()), Value::String("ehub".into())),
            (Value::Symbol("version".into()), Value::String(env!("CARGO_PKG_VERSION").into())),
            (Value::Symbol(ehub_model::EHUB_FSYNC_PROPERTY.into()), Value::String(broker.config().fsync.to_string())),
        ]),
        ..Default::default()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ConnTask<S> {
    fn new(new: NewConn, io: S) -> Self {
        let NewConn { broker, peer, peer_text, options, admitted } = new;
        let ServeOptions { metrics, limits } = options;
        let (ctl_tx, ctl_rx) = unbounded_channel();
        let conn = Connection::new(ConnectionRole::Acceptor, engine_config(&broker, &limits), Instant::now());
        let conn_id = broker.next_id();
        let handshake_timeout = broker.config().handshake_timeout;
        let (slot, refusal) = match admitted {
            Admitted::Slot(s) => (Some(s), None),
            Admitted::Refused(e) => (None, Some(e)),
        };
        if slot.is_some() {
            metrics.connections.inc();
            let tx = ctl_tx.clone();
            broker.faults().register_connection(
                conn_id,
                Box::new(move |d| {
                    let _ = tx.send(Control::Disrupt(Box::new(d.clone())));
                }),
            );
        }
        let (link_idle, empty) = idle_timeouts(&broker, &limits);
        ConnTask {
            broker,
            metrics,
            sweep_timer: Box::pin(tokio::time::sleep(sweep_interval(link_idle, empty))),
            limits,
            slot,
            refusal,
            ip: peer.ip(),
            empty_since: None,
            conn_id,
            sessions: 0,
            conn,
            transport: Transport::new(io),
            links: Default::default(),
            tokens: Vec::new(),
            token_deadline: None,
            handshake_deadline: Some(Instant::now() + handshake_timeout),
            ctl_tx,
            ctl_rx,
            annotations: BytesMut::with_capacity(128),
            acks: Vec::new(),
            settlements: Settlements::default(),
            peer: peer_text,
        }
    }

    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let result = self.run_inner(&shutdown).await;
        match &result {
            Ok(()) => debug!(peer = %self.peer, "connection closed"),
            // The peer went past a limit it was told in `open` or `begin` (channel-max,
            // handle-max, max-frame-size): the engine closed the connection with the condition.
            Err(EndpointError::Protocol(e)) => {
                info!(peer = %self.peer, condition = e.condition.as_str(), description = e.description.as_deref().unwrap_or(""), "connection closed: protocol violation");
                self.metrics.refuse(e.condition.as_str());
            }
            // Bytes that do not decode, or a frame larger than max-frame-size: the engine
            // closed with amqp:decode-error or amqp:connection:framing-error.
            Err(e @ EndpointError::Decode(_)) => {
                info!(peer = %self.peer, error = %e, "connection closed: undecodable input");
                self.metrics.refuse("amqp:decode-error");
            }
            Err(e) => debug!(peer = %self.peer, error = %e, "connection ended with error"),
        }
        let _ = self.transport.flush(&mut self.conn).await;
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            self.forget_link(id);
        }
        self.metrics.sessions.dec_by(self.sessions);
        if self.slot.take().is_some() {
            self.broker.faults().unregister_connection(self.conn_id);
            self.metrics.connections.dec();
        }
    }

    async fn run_inner(&mut self, shutdown: &CancellationToken) -> Result<(), EndpointError> {
        loop {
            self.pump_all();
            if let Some(d) = self.broker.faults().frame_delay() {
                tokio::time::sleep(d).await;
            }
            self.transport.flush(&mut self.conn).await?;
            if self.conn.is_done() {
                return Ok(());
            }
            let deadline = self.conn.next_timeout();
            let token_deadline = self.token_deadline;
            let confirm_deadline = self.settlements.next_due();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.conn.close(Some(AmqpError::new(conditions::CONNECTION_FORCED, "The broker is shutting down.")));
                    self.transport.flush(&mut self.conn).await?;
                    return Ok(());
                }
                c = self.ctl_rx.recv() => {
                    if let Some(c) = c {
                        self.on_control(c);
                        for _ in 0..1024 {
                            match self.ctl_rx.try_recv() {
                                Ok(c) => self.on_control(c),
                                Err(_) => break,
                            }
                        }
                        self.flush_acks();
                    }
                }
                n = self.transport.read_into() => {
                    if n? == 0 {
                        return Ok(());
                    }
                    let fed = self.transport.feed(&mut self.conn);
                    self.drain_events();
                    self.flush_acks();
                    fed?;
                }
                _ = sleep_until(deadline) => {
                    self.conn.handle_timeout(Instant::now())?;
                }
                _ = sleep_until(token_deadline) => {
                    self.expire_tokens();
                }
                _ = sleep_until(self.handshake_deadline) => {
                    info!(peer = %self.peer, "no AMQP open within the handshake timeout: closing the connection");
                    self.metrics.refuse("handshake-timeout");
                    return Ok(());
                }
                _ = sleep_until(confirm_deadline) => {
                    self.settlements.confirm_due(&mut self.conn, Instant::now());
                }
                _ = &mut self.sweep_timer => {
                    self.sweep(Instant::now());
                }
            }
        }
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            if let Err(e) = self.on_event(ev) {
                warn!(peer = %self.peer, error = %e, "failed to handle an event");
            }
        }
    }

    fn on_event(&mut self, ev: Event) -> Result<(), EndpointError> {
        match ev {
            Event::SaslInit { mechanism, .. } => debug!(peer = %self.peer, mechanism = mechanism.as_str(), "sasl"),
            Event::Opened(o) => {
                self.handshake_deadline = None;
                if let Some(error) = self.refusal.take() {
                    info!(peer = %self.peer, description = error.description.as_deref().unwrap_or(""), "refusing the connection");
                    self.conn.close(Some(error));
                    return Ok(());
                }
                if let Some(slot) = &mut self.slot {
                    slot.opened();
                }
                let twice = records_deliveries_late(&o);
                if twice {
                    self.settlements.settle_twice();
                }
                debug!(peer = %self.peer, container_id = %o.container_id, settle_twice = twice, "connection opened")
            }
            Event::SessionBegun { .. } => {
                self.sessions += 1;
                self.metrics.sessions.inc();
            }
            Event::AttachRequested { link, attach } => self.on_attach(link, *attach)?,
            Event::Attached { .. } => {}
            Event::LinkFlow { link } => self.on_flow(link)?,
            Event::Delivery(d) => self.on_delivery(d)?,
            Event::Disposition { .. } => {}
            Event::Detached { link, .. } => self.forget_link(link),
            Event::SessionEnded { channel, .. } => {
                self.sessions -= 1;
                self.metrics.sessions.dec();
                self.settlements.session_ended(channel);
                let ids: Vec<LinkId> = self.links.keys().filter(|l| l.channel == channel).copied().collect();
                for id in ids {
                    self.forget_link(id);
                }
            }
            Event::Closed { .. } => {}
        }
        Ok(())
    }

    fn forget_link(&mut self, id: LinkId) {
        if let Some(info) = self.links.remove(&id) {
            if let Some(role) = info.kind.role() {
                self.metrics.link(role).dec();
            }
            if let LinkKind::Consumer(c) = info.kind {
                c.cancel.cancel();
                c.cg.remove(c.pidx, c.id);
            }
        }
    }

    /// Detaches a link of ours with `error` and forgets what it held; its handle stays known
    /// (as refused) until the peer's detach answers.
    fn detach_with(&mut self, link: LinkId, error: AmqpError) {
        let name = self.links.get(&link).map(|l| l.name.clone()).unwrap_or_default();
        let _ = self.conn.detach(link, Some(error));
        self.forget_link(link);
        self.links.insert(link, LinkInfo::refused(name));
    }

    fn refuse(
        &mut self,
        link: LinkId,
        name: String,
        condition: &str,
        description: String,
    ) -> Result<(), EndpointError> {
        debug!(peer = %self.peer, link = %name, condition, description = %description, "refusing link");
        self.metrics.refuse(condition);
        self.links.insert(link, LinkInfo::refused(name));
        self.conn.refuse_link(link, AmqpError::new(condition, description))
    }

    /// Recomputes when the next token that some link may depend on expires. A link that
    /// detaches leaves it as it is: a check with nothing to do is harmless.
    fn update_token_deadline(&mut self) {
        self.token_deadline = if self.links.values().any(|l| l.claim.is_some()) {
            let now = now_secs();
            // `now` is truncated, so this instant is at or just after the expiry second.
            self.tokens
                .iter()
                .map(|t| t.expiry)
                .filter(|&e| e > now)
                .min()
                .map(|next| Instant::now() + Duration::from_secs(next - now))
        } else {
            None
        };
    }

    /// Drops expired tokens and detaches every link no remaining token authorises.
    fn expire_tokens(&mut self) {
        let now = now_secs();
        self.tokens.retain(|t| t.expiry > now);
        let lapsed: Vec<(LinkId, String)> = self
            .links
            .iter()
            .filter(|(_, l)| l.claim.as_ref().is_some_and(|(address, need)| !self.authorized(address, *need)))
            .map(|(id, l)| (*id, l.name.clone()))
            .collect();
        for (link, name) in lapsed {
            info!(peer = %self.peer, link = %name, "token expired: detaching link");
            self.detach_with(
                link,
                AmqpError::new(
                    conditions::UNAUTHORIZED_ACCESS,
                    "Unauthorized access. The token for this link has expired and was not renewed.",
                ),
            );
        }
        self.update_token_deadline();
    }

    /// Detaches producer and consumer links idle for the link idle timeout
    /// (`amqp:link:detach-forced`), and closes the connection when it has held no link but
    /// `$cbs` ones for the empty connection timeout (`amqp:connection:forced`), as the service
    /// does after 30 minutes and 300 seconds.
    fn sweep(&mut self, now: Instant) {
        let (link_idle, empty) = idle_timeouts(&self.broker, &self.limits);
        self.sweep_timer.as_mut().reset((now + sweep_interval(link_idle, empty)).into());
        if self.handshake_deadline.is_some() {
            return;
        }
        let mut held = false;
        let mut idle = Vec::new();
        for (id, l) in self.links.iter_mut() {
            held |= l.kind.holds_connection();
            if !matches!(l.kind, LinkKind::Producer { .. } | LinkKind::Consumer(_)) {
                continue;
            }
            if std::mem::take(&mut l.active) {
                l.idle_since = now;
            } else if now.duration_since(l.idle_since) >= link_idle {
                idle.push((*id, l.name.clone()));
            }
        }
        for (link, name) in idle {
            info!(peer = %self.peer, link = %name, idle_secs = link_idle.as_secs_f64(), "link idle: detaching it");
            let text = format!(
                "The link '{name}' is force detached. Code: ServerError. Details: AmqpMessageConsumer.IdleTimerExpired: Idleness timeout: {}.",
                humantime_secs(link_idle)
            );
            self.detach_with(link, AmqpError::new(conditions::DETACH_FORCED, text));
        }
        if held {
            self.empty_since = None;
        } else if now.duration_since(*self.empty_since.get_or_insert(now)) >= empty {
            info!(peer = %self.peer, idle_secs = empty.as_secs_f64(), "connection without links: closing it");
            self.conn.close(Some(AmqpError::new(
                conditions::CONNECTION_FORCED,
                format!(
                    "The connection was inactive for more than the allowed {} seconds and is closed by the container.",
                    empty.as_secs()
                ),
            )));
        }
    }

    /// Applies an injected fault to this connection.
    fn disrupt(&mut self, d: Disruption) {
        match d {
            Disruption::IdleTimeoutsChanged => {
                let (link_idle, empty) = idle_timeouts(&self.broker, &self.limits);
                let sooner = (Instant::now() + sweep_interval(link_idle, empty)).into();
                if sooner < self.sweep_timer.deadline() {
                    self.sweep_timer.as_mut().reset(sooner);
                }
            }
            Disruption::Close => {
                info!(peer = %self.peer, "fault: closing the connection");
                self.conn.close(Some(AmqpError::new(
                    conditions::CONNECTION_FORCED,
                    "The connection was closed by an injected fault (ehub fault close-connections).",
                )));
            }
            Disruption::ExpireTokens => {
                info!(peer = %self.peer, "fault: every token expires now");
                for t in &mut self.tokens {
                    t.expiry = 0;
                }
                self.expire_tokens();
            }
            Disruption::Detach { hub, partition, condition } => {
                let (cond, text) = match condition {
                    DetachCondition::LinkStolen => (
                        conditions::LINK_STOLEN,
                        "New receiver 'nil' with higher epoch of '0' is created hence current receiver 'nil' with epoch '0' is getting disconnected (an injected fault).",
                    ),
                    DetachCondition::DetachForced => (
                        conditions::DETACH_FORCED,
                        "The link was detached by the service to balance load (an injected fault). Reattach.",
                    ),
                    DetachCondition::ServerBusy => (
                        conditions::SERVER_BUSY,
                        "The request was terminated because the entity is being throttled (an injected fault). Please wait 4 seconds and try again.",
                    ),
                };
                let matches = |h: &Hub, p: Option<usize>| {
                    hub.as_deref().is_none_or(|want| h.name.eq_ignore_ascii_case(want))
                        && partition.as_deref().is_none_or(|want| p.is_some_and(|p| h.partition_ids[p] == want))
                };
                let hit: Vec<LinkId> = self
                    .links
                    .iter()
                    .filter(|(_, l)| match &l.kind {
                        LinkKind::Producer { hub, partition, .. } => matches(hub, *partition),
                        LinkKind::Consumer(c) => matches(&c.hub, Some(c.pidx)),
                        _ => false,
                    })
                    .map(|(id, _)| *id)
                    .collect();
                info!(peer = %self.peer, condition = cond, links = hit.len(), "fault: detaching links");
                for link in hit {
                    self.detach_with(link, AmqpError::new(cond, text));
                }
            }
        }
    }

    fn authorized(&self, entity: &str, need: Claim) -> bool {
        let now = now_secs();
        let entity = entity_path(entity);
        self.tokens.iter().any(|t| t.expiry > now && need(&t.rights) && covers(&t.path, &entity))
    }

    fn not_found(hub: &str) -> String {
        format!("The messaging entity 'sb://ehub/{hub}' could not be found. To know more visit https://aka.ms/sbResourceMgrExceptions.")
    }

    fn on_attach(&mut self, link: LinkId, a: Attach) -> Result<(), EndpointError> {
        let name = a.name.clone();
        let client_sends = a.role == Role::Sender;
        let address = if client_sends {
            a.target.as_ref().and_then(|t| t.address.clone())
        } else {
            a.source.as_ref().and_then(|s| s.address.clone())
        };
        let Some(address) = address else {
            return self.refuse(link, name, conditions::NOT_FOUND, "The link has no address.".into());
        };
        let Some(entity) = EntityAddress::parse(&address) else {
            return self.refuse(
                link,
                name,
                conditions::NOT_FOUND,
                format!("The address '{address}' is not a valid Event Hubs entity."),
            );
        };
        let mut reply = AttachReply {
            source: Some(a.source.clone().unwrap_or_default()),
            target: Some(a.target.clone().unwrap_or_default()),
            properties: a.properties.clone(),
            ..Default::default()
        };
        if client_sends {
            reply.snd_settle_mode = Some(a.snd_settle_mode);
            reply.rcv_settle_mode = Some(ReceiverSettleMode::First);
        } else {
            reply.snd_settle_mode = Some(SenderSettleMode::Settled);
            reply.rcv_settle_mode = Some(ReceiverSettleMode::First);
        }
        let target_address = a.target.as_ref().and_then(|t| t.address.clone());
        let kind = match (&entity, client_sends) {
            (EntityAddress::Cbs, true) => LinkKind::CbsIn,
            (EntityAddress::Management, true) => LinkKind::MgmtIn,
            (EntityAddress::Cbs, false) => LinkKind::ReplyOut { node: nodes::CBS, queue: VecDeque::new(), tag: 0 },
            (EntityAddress::Management, false) => {
                LinkKind::ReplyOut { node: nodes::MANAGEMENT, queue: VecDeque::new(), tag: 0 }
            }
            (EntityAddress::Hub { hub } | EntityAddress::Partition { hub, .. }, true) => {
                let Some(h) = self.broker.hub(hub) else {
                    return self.refuse(link, name, conditions::NOT_FOUND, Self::not_found(hub));
                };
                let partition = match &entity {
                    EntityAddress::Partition { partition, .. } => match h.partition_index(partition) {
                        Some(i) => Some(i),
                        None => {
                            return self.refuse(link, name, conditions::NOT_FOUND, format!("The partition '{partition}' does not exist in Event Hub '{}'. Valid partition ids are 0 to {}.", h.name, h.partitions.len() - 1));
                        }
                    },
                    _ => None,
                };
                if !self.authorized(&address, Rights::can_send) {
                    return self.refuse(link, name, conditions::UNAUTHORIZED_ACCESS, format!("Unauthorized access. 'Send' claim(s) are required to perform this operation. Resource: '{address}'."));
                }
                reply.max_message_size = Some(self.broker.config().max_message_size);
                LinkKind::Producer { hub: h, partition, inflight: 0 }
            }
            (EntityAddress::Receive { hub, consumer_group, partition }, false) => {
                match self.prepare_consumer(link, &a, &address, hub, consumer_group, partition, &mut reply) {
                    Ok(c) => LinkKind::Consumer(Box::new(c)),
                    Err((cond, desc)) => return self.refuse(link, name, cond, desc),
                }
            }
            _ => {
                return self.refuse(
                    link,
                    name,
                    conditions::NOT_ALLOWED,
                    format!("The operation is not allowed on '{address}'."),
                );
            }
        };
        self.conn.accept_link(link, reply)?;
        if matches!(kind, LinkKind::CbsIn | LinkKind::MgmtIn | LinkKind::Producer { .. }) {
            self.conn.flow(link, PRODUCER_CREDIT)?;
        }
        if entity == EntityAddress::Cbs {
            // The official Rust SDK drops its `$cbs` links and their session together after each
            // put-token; an answer to its detach that beats its own `end` kills its connection.
            self.conn.delay_detach_reply(link, CBS_DETACH_REPLY_DELAY);
        }
        if let LinkKind::Consumer(c) = &kind {
            info!(peer = %self.peer, entity = %c.hub.name, consumer_group = %c.cg.name, partition_id = c.pidx, link = %name, "receiver attached");
        }
        let claim = match &kind {
            LinkKind::Producer { .. } => Some((address, Rights::can_send as Claim)),
            LinkKind::Consumer(_) => Some((address, Rights::can_listen as Claim)),
            _ => None,
        };
        let claimed = claim.is_some();
        if let Some(role) = kind.role() {
            self.metrics.link(role).inc();
        }
        self.links.insert(link, LinkInfo::new(kind, name, target_address, claim));
        if claimed {
            self.update_token_deadline();
        }
        if let Some(LinkInfo { kind: LinkKind::Consumer(c), .. }) = self.links.get_mut(&link) {
            // Resolve the start position off the reactor (it may read files).
            let (part, id, tx) = (Arc::clone(&c.part), c.id, self.ctl_tx.clone());
            let pos = c.start.take().unwrap_or(StartPosition::Latest);
            tokio::task::spawn_blocking(move || {
                let result = part.resolve(&pos);
                let _ = tx.send(Control::Resolved { link, id, result: Box::new(result) });
            });
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare_consumer(
        &mut self,
        link: LinkId,
        a: &Attach,
        address: &str,
        hub: &str,
        consumer_group: &str,
        partition: &str,
        reply: &mut AttachReply,
    ) -> Result<Consumer, (&'static str, String)> {
        let h = self.broker.hub(hub).ok_or((conditions::NOT_FOUND, Self::not_found(hub)))?;
        let cg = h.consumer_group(consumer_group).ok_or_else(|| {
            (
                conditions::NOT_FOUND,
                format!("The messaging entity 'sb://ehub/{hub}/consumergroups/{consumer_group}' could not be found."),
            )
        })?;
        let pidx = h.partition_index(partition).ok_or_else(|| {
            (conditions::NOT_FOUND, format!("The partition '{partition}' does not exist in Event Hub '{}'.", h.name))
        })?;
        if !self.authorized(address, Rights::can_listen) {
            return Err((
                conditions::UNAUTHORIZED_ACCESS,
                format!("Unauthorized access. 'Listen' claim(s) are required to perform this operation. Resource: '{address}'."),
            ));
        }
        let position = match a.source.as_ref().and_then(|s| s.filter.as_ref()) {
            Some(f) => EventPosition::from_filter_set(f).map_err(|e| (conditions::NOT_ALLOWED, e.to_string()))?,
            None => None,
        };
        let start = match position {
            // No filter: start of stream (what early service versions did).
            None | Some(EventPosition::Earliest) => StartPosition::Earliest,
            Some(EventPosition::Latest) => StartPosition::Latest,
            Some(EventPosition::SequenceNumber { value, inclusive }) => StartPosition::Sequence { value, inclusive },
            Some(EventPosition::EnqueuedTime { millis, inclusive }) => StartPosition::Time { millis, inclusive },
            Some(EventPosition::Offset { value, inclusive }) => match value.parse::<u64>() {
                Ok(v) => StartPosition::Offset { value: v, inclusive },
                Err(_) => {
                    return Err((conditions::ARGUMENT_ERROR, format!("The supplied offset '{value}' is invalid.")));
                }
            },
        };
        let props = a.properties.as_deref().unwrap_or(&[]);
        let epoch = ehub_amqp_codec::map_get(props, linkprops::EPOCH).and_then(Value::as_i64);
        let name = ehub_amqp_codec::map_get(props, linkprops::RECEIVER_NAME)
            .or_else(|| ehub_amqp_codec::map_get(props, linkprops::RECEIVER_NAME_RUST))
            .and_then(|v| v.as_text())
            .map(str::to_owned);
        let metrics = a.desired_capabilities.iter().any(|c| c.as_str() == linkprops::RUNTIME_METRIC_CAPABILITY);
        if metrics {
            reply.offered_capabilities.push(Symbol::from(linkprops::RUNTIME_METRIC_CAPABILITY));
        }
        let id = self.broker.next_id();
        let ctl = self.ctl_tx.clone();
        let on_displaced = Box::new(move |why: Displaced| {
            let error = match why {
                Displaced::Stolen(text) => AmqpError::new(conditions::LINK_STOLEN, text),
                Displaced::Deleted(text) => AmqpError::new(conditions::NOT_FOUND, text),
            };
            let _ = ctl.send(Control::Detach { link, error: Box::new(error) });
        });
        cg.admit(
            pidx,
            ReceiverEntry { id, epoch, name, on_displaced },
            self.broker.config().max_receivers_per_partition,
        )
        .map_err(|e| match e {
            AdmitError::Stolen(text) => (conditions::LINK_STOLEN, text),
            AdmitError::TooManyReceivers(text) => (conditions::RESOURCE_LIMIT_EXCEEDED, text),
        })?;
        Ok(Consumer {
            id,
            part: Arc::clone(&h.partitions[pidx]),
            hub: h,
            cg,
            pidx,
            next_seq: None,
            buffer: VecDeque::new(),
            buffer_bytes: 0,
            busy: true,
            waiting: false,
            metrics,
            tag: 0,
            cancel: CancellationToken::new(),
            start: Some(start),
        })
    }

    fn on_flow(&mut self, link: LinkId) -> Result<(), EndpointError> {
        if let Some(LinkInfo { kind: LinkKind::ReplyOut { .. }, .. }) = self.links.get(&link) {
            self.send_replies(link)?;
        }
        Ok(())
    }

    fn on_delivery(&mut self, d: Delivery) -> Result<(), EndpointError> {
        let Some(info) = self.links.get_mut(&d.link) else { return Ok(()) };
        if d.aborted {
            return Ok(());
        }
        match &mut info.kind {
            LinkKind::CbsIn | LinkKind::MgmtIn => {
                let is_cbs = matches!(info.kind, LinkKind::CbsIn);
                if !d.settled {
                    let (ch, id) = (d.link.channel, d.delivery_id);
                    self.settlements.settle(&mut self.conn, ch, id, id, DeliveryState::Accepted)?;
                }
                self.conn.top_up_credit(d.link, PRODUCER_CREDIT)?;
                let request = match Message::decode(&d.payload) {
                    Ok(m) => m,
                    Err(e) => {
                        debug!(peer = %self.peer, error = %e, "undecodable request");
                        return Ok(());
                    }
                };
                let response = if is_cbs { self.put_token(&request) } else { self.management(&request) };
                self.queue_reply(d.link, if is_cbs { nodes::CBS } else { nodes::MANAGEMENT }, &request, response)?;
            }
            LinkKind::Producer { hub, partition, inflight } => {
                info.active = true;
                if hub.is_replaced() && !hub.is_deleted() {
                    // The hub grew: route over every partition from now on.
                    if let Some(h) = self.broker.hub(&hub.name) {
                        *hub = h;
                    }
                }
                if hub.is_deleted() {
                    let text = format!("The messaging entity '{}' could not be found.", hub.name);
                    let _ = self.ctl_tx.send(Control::Detach {
                        link: d.link,
                        error: Box::new(AmqpError::new(conditions::NOT_FOUND, text.clone())),
                    });
                    return reject(
                        &mut self.conn,
                        &mut self.settlements,
                        &self.metrics,
                        &d,
                        AmqpError::new(conditions::NOT_FOUND, text),
                    );
                }
                if self.broker.faults().is_server_busy(&hub.name) {
                    let err = AmqpError::new(
                        conditions::SERVER_BUSY,
                        "The request was terminated because the entity is being throttled (an injected fault). Please wait 4 seconds and try again.",
                    );
                    return reject(&mut self.conn, &mut self.settlements, &self.metrics, &d, err);
                }
                let limit = self.broker.config().max_message_size;
                if d.oversized {
                    let err = AmqpError::new(
                        conditions::MESSAGE_SIZE_EXCEEDED,
                        format!("The received message (delivery-id:{}, size:{} bytes) exceeds the limit ({limit} bytes) currently allowed on the link.", d.delivery_id, d.size),
                    );
                    return reject(&mut self.conn, &mut self.settlements, &self.metrics, &d, err);
                }
                let events = match split_events(&d) {
                    Ok(ev) => ev,
                    Err(reason) => {
                        let err = AmqpError::new(conditions::DECODE_ERROR, reason);
                        return reject(&mut self.conn, &mut self.settlements, &self.metrics, &d, err);
                    }
                };
                let idx = match *partition {
                    Some(p) => p,
                    None => match events.iter().find_map(|e| e.partition_key.as_ref()) {
                        Some(k) => {
                            ehub_model::partition_for_key(&String::from_utf8_lossy(k), hub.partitions.len() as u32)
                                as usize
                        }
                        None => {
                            (hub.round_robin.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                                % hub.partitions.len() as u64) as usize
                        }
                    },
                };
                if events.is_empty() {
                    if !d.settled {
                        self.acks.push((d.link.channel, d.delivery_id, None));
                    }
                    return Ok(());
                }
                *inflight += 1;
                let top_up = *inflight < MAX_INFLIGHT;
                let (tx, link, delivery_id, settled) = (self.ctl_tx.clone(), d.link, d.delivery_id, d.settled);
                self.broker.append_to(
                    hub,
                    idx,
                    events,
                    Box::new(move |r| {
                        let _ = tx.send(Control::Ack {
                            link,
                            delivery_id,
                            settled,
                            result: Box::new(r.map_err(|e| e.to_string())),
                        });
                    }),
                );
                if top_up {
                    self.conn.top_up_credit(d.link, PRODUCER_CREDIT)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_control(&mut self, c: Control) {
        match c {
            Control::Ack { link, delivery_id, settled, result } => {
                if let Some(LinkInfo { kind: LinkKind::Producer { inflight, .. }, .. }) = self.links.get_mut(&link) {
                    *inflight = inflight.saturating_sub(1);
                    if !settled {
                        let err = result.err().map(|e| AmqpError::new(conditions::INTERNAL_ERROR, e));
                        self.acks.push((link.channel, delivery_id, err));
                    }
                    let _ = self.conn.top_up_credit(link, PRODUCER_CREDIT);
                }
            }
            Control::Resolved { link, id, result } => {
                let Some(LinkInfo { kind: LinkKind::Consumer(c), name, .. }) = self.links.get_mut(&link) else {
                    return;
                };
                if c.id != id {
                    return;
                }
                match *result {
                    Ok(seq) => {
                        c.next_seq = Some(seq);
                        c.busy = false;
                    }
                    Err(e) => {
                        let cond = if matches!(e, LogError::OutOfRange(_)) {
                            conditions::ARGUMENT_ERROR
                        } else {
                            conditions::INTERNAL_ERROR
                        };
                        debug!(link = %name, error = %e, "start position refused");
                        let _ = self.conn.detach(link, Some(AmqpError::new(cond, e.to_string())));
                    }
                }
            }
            Control::ReadDone { link, id, result } => {
                let Some(LinkInfo { kind: LinkKind::Consumer(c), .. }) = self.links.get_mut(&link) else { return };
                if c.id != id {
                    return;
                }
                c.busy = false;
                match *result {
                    Ok(events) => c.extend(events),
                    Err(e) => {
                        warn!(error = %e, "read failed");
                        let _ = self.conn.detach(link, Some(AmqpError::new(conditions::INTERNAL_ERROR, e.to_string())));
                    }
                }
            }
            Control::Wake { link, id } => {
                if let Some(LinkInfo { kind: LinkKind::Consumer(c), .. }) = self.links.get_mut(&link) {
                    if c.id == id {
                        c.waiting = false;
                    }
                }
            }
            Control::Disrupt(d) => self.disrupt(*d),
            Control::Detach { link, error } => {
                if matches!(
                    self.links.get(&link),
                    Some(LinkInfo { kind: LinkKind::Consumer(_) | LinkKind::Producer { .. }, .. })
                ) {
                    self.detach_with(link, *error);
                }
            }
        }
    }

    /// Settles acknowledged deliveries, coalescing consecutive ids into ranges.
    fn flush_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let mut acks = std::mem::take(&mut self.acks);
        acks.sort_by_key(|(ch, id, _)| (*ch, *id));
        let mut i = 0;
        while i < acks.len() {
            let (ch, first, err) = acks[i].clone();
            if let Some(e) = err {
                let _ = self.settlements.settle(&mut self.conn, ch, first, first, DeliveryState::Rejected(Some(e)));
                i += 1;
                continue;
            }
            let mut last = first;
            let mut j = i + 1;
            while j < acks.len() && acks[j].0 == ch && acks[j].1 == last.wrapping_add(1) && acks[j].2.is_none() {
                last = acks[j].1;
                j += 1;
            }
            let _ = self.settlements.settle(&mut self.conn, ch, first, last, DeliveryState::Accepted);
            i = j;
        }
        self.acks = acks;
        self.acks.clear();
    }

    fn pump_all(&mut self) {
        let ids: Vec<LinkId> =
            self.links.iter().filter(|(_, l)| matches!(l.kind, LinkKind::Consumer(_))).map(|(id, _)| *id).collect();
        for id in ids {
            if let Err(e) = self.pump(id) {
                debug!(error = %e, "pump failed");
            }
        }
    }

    /// Delivers buffered events while the link has credit, reading ahead so the next batch is
    /// on its way from disk while this one goes out; at the end of the log, waits for appends.
    fn pump(&mut self, link: LinkId) -> Result<(), EndpointError> {
        loop {
            let credit = self.conn.credit(link);
            let drain = self.conn.link(link).is_some_and(|l| l.drain);
            let Some(LinkInfo { kind: LinkKind::Consumer(c), active, .. }) = self.links.get_mut(&link) else {
                return Ok(());
            };
            if credit == 0 {
                return Ok(());
            }
            if !c.buffer.is_empty() {
                // One burst per wake-up: the metrics are read and encoded once for it, and the
                // session and link looked up once.
                let metrics = c.metrics.then(|| runtime_metrics(&c.part.info()));
                let mut burst = self.conn.burst(link)?;
                let (mut sent, mut sent_bytes) = (0u64, 0u64);
                for _ in 0..(credit as usize).min(c.buffer.len()) {
                    let Some(e) = c.buffer.front() else { break };
                    let d = DeliveryAnnotations::prepare(&mut self.annotations, e, metrics.as_deref());
                    let max_len = d.max_len(e, &self.annotations);
                    // The peer's session window, as well as the link credit: the next flow
                    // that opens it wakes this pump again.
                    if !burst.can_send(std::mem::size_of_val(&c.tag), max_len) {
                        break;
                    }
                    let e = c.take().expect("front exists");
                    c.tag = c.tag.wrapping_add(1);
                    let tag = c.tag.to_be_bytes();
                    let (extra, args) = (&self.annotations, SendArgs { tag: &tag, message_format: 0, settled: true });
                    // Spliced straight into the connection's output buffer: no copy in between.
                    burst.send_with(args, max_len, |out| d.write(out, &e, extra))?;
                    sent += 1;
                    sent_bytes += e.payload.len() as u64;
                }
                *active |= sent > 0;
                let counters = &c.hub.counters[c.pidx];
                counters.events_out.inc_by(sent);
                counters.bytes_out.inc_by(sent_bytes);
            }
            if !c.reads_ahead() {
                return Ok(());
            }
            let Some(next) = c.next_seq else { return Ok(()) };
            if next < c.part.committed_seq() {
                if c.part.is_cached(next) {
                    match c.part.read(next, READ_BATCH, CACHED_READ_BYTES) {
                        Ok(events) if !events.is_empty() => {
                            c.extend(events);
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            self.conn.detach(link, Some(AmqpError::new(conditions::INTERNAL_ERROR, e.to_string())))?;
                            return Ok(());
                        }
                    }
                }
                c.busy = true;
                let (part, id, tx) = (Arc::clone(&c.part), c.id, self.ctl_tx.clone());
                tokio::task::spawn_blocking(move || {
                    let result = part.read(next, READ_BATCH, FILE_READ_BYTES);
                    let _ = tx.send(Control::ReadDone { link, id, result: Box::new(result) });
                });
                if c.buffer.is_empty() {
                    return Ok(());
                }
                continue;
            }
            if !c.buffer.is_empty() {
                return Ok(());
            }
            if drain {
                self.conn.drain_complete(link)?;
                return Ok(());
            }
            if !c.waiting {
                c.waiting = true;
                let mut rx = c.part.subscribe();
                let (id, tx, cancel) = (c.id, self.ctl_tx.clone(), c.cancel.clone());
                tokio::spawn(async move {
                    loop {
                        if *rx.borrow_and_update() > next {
                            break;
                        }
                        tokio::select! {
                            r = rx.changed() => if r.is_err() { return },
                            _ = cancel.cancelled() => return,
                        }
                    }
                    let _ = tx.send(Control::Wake { link, id });
                });
            }
            return Ok(());
        }
    }

    fn queue_reply(
        &mut self,
        request_link: LinkId,
        node: &'static str,
        request: &Message,
        response: Message,
    ) -> Result<(), EndpointError> {
        let mut response = response;
        let props = request.properties.clone().unwrap_or_default();
        let mut rp = response.properties.take().unwrap_or_default();
        rp.correlation_id = props.message_id.clone();
        rp.to = props.reply_to.clone();
        response.properties = Some(rp);
        let bytes = match response.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot encode response");
                return Ok(());
            }
        };
        // Pick the reply link: by reply-to (target address or name) on the request's session, by
        // reply-to, on the same session, else any.
        let reply_to = props.reply_to.as_deref();
        let candidates: Vec<(LinkId, bool, bool)> = self
            .links
            .iter()
            .filter_map(|(id, l)| match &l.kind {
                LinkKind::ReplyOut { node: n, .. } if *n == node => {
                    let by_name = reply_to.is_some_and(|r| l.target_address.as_deref() == Some(r) || l.name == r);
                    Some((*id, by_name, id.channel == request_link.channel))
                }
                _ => None,
            })
            .collect();
        // Several sessions may use the same reply address (each its own pair of links).
        let chosen = candidates
            .iter()
            .find(|c| c.1 && c.2)
            .or_else(|| candidates.iter().find(|c| c.1))
            .or_else(|| candidates.iter().find(|c| c.2))
            .or_else(|| candidates.first())
            .map(|c| c.0);
        let Some(reply_link) = chosen else {
            debug!(peer = %self.peer, node, "no reply link for a request");
            return Ok(());
        };
        if let Some(LinkInfo { kind: LinkKind::ReplyOut { queue, .. }, .. }) = self.links.get_mut(&reply_link) {
            queue.push_back(bytes);
        }
        self.send_replies(reply_link)
    }

    fn send_replies(&mut self, link: LinkId) -> Result<(), EndpointError> {
        loop {
            let Some(LinkInfo { kind: LinkKind::ReplyOut { queue, tag, .. }, .. }) = self.links.get_mut(&link) else {
                return Ok(());
            };
            let Some(next) = queue.front() else { return Ok(()) };
            // Credit and the peer's session window; a later flow retries.
            if !self.conn.can_send(link, std::mem::size_of_val(tag), next.len()) {
                return Ok(());
            }
            let msg = queue.pop_front().expect("front exists");
            *tag = tag.wrapping_add(1);
            let t = tag.to_be_bytes();
            self.conn.send(link, SendArgs { tag: &t, message_format: 0, settled: true }, &msg)?;
        }
    }

    fn put_token(&mut self, req: &Message) -> Message {
        let app = req.application_properties.as_deref().unwrap_or(&[]);
        let get = |k: &str| ehub_amqp_codec::map_get(app, k).and_then(|v| v.as_text()).map(str::to_owned);
        let ttype = get("type").unwrap_or_default();
        let audience = get("name").unwrap_or_default();
        let token = match &req.body {
            ehub_amqp_codec::Body::Value(v) => v.as_text().map(str::to_owned),
            ehub_amqp_codec::Body::Data(d) => d.first().map(|b| String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        let result = match (ttype.as_str(), token) {
            (_, None) => Err("The put-token request carries no token.".to_string()),
            (nodes::JWT_TOKEN_TYPE, Some(t)) => self.broker.authorize_from(self.ip, TokenType::Jwt, &t, &audience),
            (nodes::SAS_TOKEN_TYPE, Some(t)) => self.broker.authorize_from(self.ip, TokenType::Sas, &t, &audience),
            (other, Some(_)) => Err(format!("The token type '{other}' is not supported.")),
        }
        .map(|g| Token { path: g.path, expiry: g.expiry, rights: g.rights });
        // A valid token for an entity that does not exist is refused with 404 and the service's
        // "could not be found" text, so that clients fail at once with a not-found error instead
        // of retrying a link that cannot attach. No error-condition: the Python SDK drops the
        // status code and description of a put-token answer that carries one.
        if let Ok(t) = &result {
            if let Some(hub) = t.path.split('/').next().filter(|h| !h.is_empty() && self.broker.hub(h).is_none()) {
                info!(peer = %self.peer, audience = %audience, "token for an unknown entity");
                return management::status_message(404, &Self::not_found(hub), None, Value::Null);
            }
        }
        match result {
            Ok(t) => {
                debug!(peer = %self.peer, audience = %audience, "token accepted");
                self.tokens.retain(|x| x.path != t.path);
                self.tokens.push(t);
                self.update_token_deadline();
                management::status_message(202, "Accepted", None, Value::Null)
            }
            Err(desc) => {
                info!(peer = %self.peer, audience = %audience, reason = %desc, "token refused");
                self.metrics.refuse(conditions::UNAUTHORIZED_ACCESS);
                management::status_message(401, &desc, Some(conditions::UNAUTHORIZED_ACCESS), Value::Null)
            }
        }
    }

    fn management(&self, req: &Message) -> Message {
        let app = req.application_properties.as_deref().unwrap_or(&[]);
        let hub = ehub_amqp_codec::map_get(app, "name").and_then(|v| v.as_text()).unwrap_or_default().to_owned();
        let hub_l = hub.to_ascii_lowercase();
        let now = now_secs();
        let mut ok = self.tokens.iter().any(|t| t.expiry > now && t.path.split('/').next() == Some(hub_l.as_str()));
        if !ok {
            if let Some(tok) = ehub_amqp_codec::map_get(app, "security_token").and_then(|v| v.as_text()) {
                // The SDKs sign it for the hub's management node (`…/<hub>/$management`).
                let audience = format!("sb://ehub/{hub}/$management");
                ok = self.broker.authorize_from(self.ip, TokenType::Sas, tok, &audience).is_ok();
            }
        }
        if !ok && self.broker.hub(&hub).is_some() {
            return management::status_message(
                401,
                "Unauthorized access. 'Manage', 'Send' or 'Listen' claim(s) are required to perform this operation.",
                Some(conditions::UNAUTHORIZED_ACCESS),
                Value::Null,
            );
        }
        management::handle_read(&self.broker, app)
    }
}

/// Rejects one delivery with `err`, keeping the link (and its credit) usable.
fn reject(
    conn: &mut Connection,
    settlements: &mut Settlements,
    metrics: &AmqpMetrics,
    d: &Delivery,
    err: AmqpError,
) -> Result<(), EndpointError> {
    metrics.refuse(&err.condition.0);
    let state = DeliveryState::Rejected(Some(err));
    settlements.settle(conn, d.link.channel, d.delivery_id, d.delivery_id, state)?;
    conn.top_up_credit(d.link, PRODUCER_CREDIT)?;
    Ok(())
}

/// Splits a delivery into the events it carries (one, or the inner messages of a batch).
fn split_events(d: &Delivery) -> Result<Vec<AppendEvent>, String> {
    let spans = SectionSpans::scan(&d.payload).map_err(|e| format!("The message could not be decoded: {e}"))?;
    let key_of = |raw: &Bytes, spans: &SectionSpans| -> Option<Bytes> {
        let ma = spans.message_annotations.as_ref()?;
        match find_annotation(raw, ma, annotations::PARTITION_KEY).ok()?? {
            Value::String(s) => Some(Bytes::from(s)),
            Value::Symbol(s) => Some(Bytes::from(s.0)),
            _ => None,
        }
    };
    let envelope_key = key_of(&d.payload, &spans);
    if d.message_format != BATCH_MESSAGE_FORMAT {
        return Ok(vec![AppendEvent { partition_key: envelope_key, payload: d.payload.clone() }]);
    }
    let items =
        ehub_amqp_codec::batch_items(&d.payload, &spans).map_err(|e| format!("The batch could not be decoded: {e}"))?;
    items
        .into_iter()
        .map(|item| {
            let s = SectionSpans::scan(&item).map_err(|e| format!("A batched message could not be decoded: {e}"))?;
            let key = key_of(&item, &s).or_else(|| envelope_key.clone());
            Ok(AppendEvent { partition_key: key, payload: item })
        })
        .collect()
}

/// Writes `v` in decimal at the start of `out` (at least 20 bytes); returns the length.
fn decimal(mut v: u64, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let n = tmp.len() - i;
    out[..n].copy_from_slice(&tmp[i..]);
    n
}

/// Keys of the runtime metrics the broker puts in delivery annotations; a sender's entries under
/// these keys give way to ours, every other entry of the sender's is delivered beside them.
const METRIC_KEYS: [&str; 4] = [
    annotations::LAST_ENQUEUED_SEQUENCE_NUMBER,
    annotations::LAST_ENQUEUED_OFFSET,
    annotations::LAST_ENQUEUED_TIME_UTC,
    annotations::RUNTIME_INFO_RETRIEVAL_TIME_UTC,
];

/// The runtime metrics a receiver asked for, encoded as delivery-annotation entries in the order
/// of [`METRIC_KEYS`].
fn runtime_metrics(m: &ehub_partition_log::PartitionInfo) -> BytesMut {
    let values = [
        Value::Long(m.last_sequence_number),
        Value::String(m.last_offset.map_or("-1".into(), |o| o.to_string())),
        Value::Timestamp(ehub_amqp_codec::Timestamp(m.last_enqueued_time.unwrap_or(ehub_model::CE_ZERO_MILLIS))),
        Value::Timestamp(ehub_amqp_codec::Timestamp(now_millis())),
    ];
    let mut d = BytesMut::new();
    for (key, value) in METRIC_KEYS.iter().zip(values) {
        // Symbols and scalars always encode.
        let _ = ehub_amqp_codec::put_symbol(key, &mut d);
        let _ = ehub_amqp_codec::encode_value(&value, &mut d);
    }
    d
}

/// What the broker adds to a stored event when it delivers it: its annotations (pre-encoded
/// entries in a reused buffer) and, when the receiver asked, the burst's runtime metrics as
/// delivery annotations.
struct DeliveryAnnotations<'a> {
    /// Entries in the annotations buffer.
    count: usize,
    /// The runtime-metric delivery-annotation entries, encoded ([`runtime_metrics`]).
    metrics: Option<&'a [u8]>,
}

impl<'a> DeliveryAnnotations<'a> {
    /// Encodes the annotations of `e` into `extra` (cleared first).
    fn prepare(extra: &mut BytesMut, e: &StoredEvent, metrics: Option<&'a [u8]>) -> DeliveryAnnotations<'a> {
        extra.clear();
        // Pre-encoded keys and no allocation: this runs per event.
        extra.extend_from_slice(annotations::sym8::SEQUENCE_NUMBER);
        put_long(e.sequence_number, extra);
        extra.extend_from_slice(annotations::sym8::OFFSET);
        let mut digits = [0u8; 20];
        let n = decimal(e.offset, &mut digits);
        // ASCII digits: always valid UTF-8.
        let _ = put_string(std::str::from_utf8(&digits[..n]).unwrap_or("0"), extra);
        extra.extend_from_slice(annotations::sym8::ENQUEUED_TIME);
        put_timestamp(e.enqueued_time, extra);
        let mut count = 3;
        if let Some(k) = &e.partition_key {
            extra.extend_from_slice(annotations::sym8::PARTITION_KEY);
            let _ = match std::str::from_utf8(k) {
                Ok(text) => put_string(text, extra),
                Err(_) => put_string(&String::from_utf8_lossy(k), extra),
            };
            count += 1;
        }
        DeliveryAnnotations { count, metrics }
    }

    /// An upper bound of what [`DeliveryAnnotations::write`] writes: the stored message (whose
    /// own annotations are kept, less the entries ours replace), ours, and two annotation section
    /// headers (descriptor 3 bytes, map32 header 9, each).
    fn max_len(&self, e: &StoredEvent, extra: &[u8]) -> usize {
        e.payload.len() + extra.len() + self.metrics.map_or(0, <[u8]>::len) + 24
    }

    /// Appends the event as delivered to `out`: broker annotations spliced in. A stored message
    /// the splice cannot parse goes out as it was received.
    fn write(&self, out: &mut BytesMut, e: &StoredEvent, extra: &[u8]) {
        let start = out.len();
        if let Ok(spans) = SectionSpans::scan(&e.payload) {
            let ours = AnnotationEntries { replace_keys: &BROKER_KEYS, entries: extra, count: self.count };
            let metrics = self.metrics.map(|m| AnnotationEntries { replace_keys: &METRIC_KEYS, entries: m, count: 4 });
            if splice_annotations(out, &e.payload, &spans, ours, metrics).is_ok() {
                return;
            }
        }
        out.truncate(start);
        out.extend_from_slice(&e.payload);
    }
}

/// `30 minutes`, `300 seconds`, `1.5 seconds`: a timeout for an error text.
fn humantime_secs(d: Duration) -> String {
    match d.as_secs() {
        s if s >= 60 && s % 60 == 0 => format!("{} minutes", s / 60),
        s if d.subsec_millis() == 0 => format!("{s} seconds"),
        _ => format!("{} seconds", d.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_stops_at_a_batch_of_events_or_two_mebibytes() {
        // Small events: up to a batch.
        assert!(reads_ahead(READ_BATCH - 1, (READ_BATCH - 1) * 100));
        assert!(!reads_ahead(READ_BATCH, READ_BATCH * 100));
        // Large events: one more read with one waiting, none with three, whatever their count.
        assert!(reads_ahead(1, 1 << 20));
        assert!(!reads_ahead(3, 3 << 20));
    }

    #[test]
    fn decimal_writes_every_width() {
        for v in [0u64, 7, 10, 99, 100, 123_456_789, u64::MAX] {
            let mut out = [0u8; 20];
            let n = decimal(v, &mut out);
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), v.to_string());
        }
    }
}
