//! One AMQP connection: a task that owns the socket and the engine, and a cheap handle that
//! talks to it through a bounded command channel.
//!
//! All links share one session. Sends are acknowledged through oneshot channels keyed by
//! delivery id, so any number of sends can be in flight on a link. Receivers get their
//! deliveries in batches (one batch per socket read) over a channel whose depth is bounded by
//! the link credit the receiver grants: credit is the only flow control.

use crate::error::{Error, ErrorKind, Result};
use crate::options::{ClientOptions, Endpoint};
use crate::transport::{self, BoxStream};
use bytes::Bytes;
use ehub_amqp_codec::{
    Attach, DeliveryState, Error as AmqpError, Map, Message, ReceiverSettleMode, Role, SenderSettleMode, Source,
    Symbol, Target, Value,
};
use ehub_amqp_endpoint::driver::Transport;
use ehub_amqp_endpoint::{
    Connection, ConnectionConfig, ConnectionRole, Delivery, Event, IdMap, LinkId, SaslConfig, SendArgs,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Depth of the command channel of a connection.
const COMMAND_QUEUE: usize = 1024;
/// Commands handled before the output is flushed.
const COMMAND_BATCH: usize = 256;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// A sender link as the producer sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SenderLink {
    pub link: LinkId,
    /// The service's max-message-size (0 = none advertised).
    pub max_message_size: u64,
}

/// What a receiver link yields.
#[derive(Debug)]
pub(crate) enum RecvItem {
    /// Deliveries read from one socket read.
    Deliveries(Vec<Delivery>),
    /// The link ended; no more items follow.
    Detached(Error),
}

/// A receiver link as the consumer sees it.
#[derive(Debug)]
pub(crate) struct ReceiverLink {
    pub link: LinkId,
    pub rx: mpsc::UnboundedReceiver<RecvItem>,
}

/// What to attach.
#[derive(Debug, Clone)]
pub(crate) struct ReceiverSpec {
    pub name: String,
    pub source: Source,
    pub properties: Option<Map>,
    pub desired_capabilities: Vec<Symbol>,
    pub prefetch: u32,
    pub prefetch_bytes: u64,
}

enum Cmd {
    AttachSender { name: String, address: String, reply: oneshot::Sender<Result<SenderLink>> },
    AttachReceiver { spec: ReceiverSpec, reply: oneshot::Sender<Result<ReceiverLink>> },
    Send { link: LinkId, format: u32, payload: Bytes, reply: oneshot::Sender<Result<()>> },
    Credit { link: LinkId, consumed: u32 },
    Detach { link: LinkId },
    Request { node: &'static str, message: Message, reply: oneshot::Sender<Result<Message>> },
    Close { reply: oneshot::Sender<()> },
}

/// Handle to a running connection. Cloning is cheap; the connection ends on [`close`] or
/// when the socket fails.
///
/// [`close`]: AmqpConnection::close
#[derive(Debug, Clone)]
pub(crate) struct AmqpConnection {
    cmds: mpsc::Sender<Cmd>,
    closed: CancellationToken,
    /// Process-unique id, for logs.
    pub id: u64,
    /// Properties of the service's `open`.
    pub remote_properties: std::sync::Arc<Map>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::AttachSender { .. } => "AttachSender",
            Cmd::AttachReceiver { .. } => "AttachReceiver",
            Cmd::Send { .. } => "Send",
            Cmd::Credit { .. } => "Credit",
            Cmd::Detach { .. } => "Detach",
            Cmd::Request { .. } => "Request",
            Cmd::Close { .. } => "Close",
        })
    }
}

fn lost() -> Error {
    Error::connection_lost("the connection is closed")
}

impl AmqpConnection {
    /// Connects, negotiates SASL ANONYMOUS, opens the connection and begins the session.
    pub(crate) async fn connect(endpoint: &Endpoint, options: &ClientOptions) -> Result<AmqpConnection> {
        let id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
        let fut = async {
            let stream = transport::connect(endpoint, options).await?;
            handshake(stream, endpoint, options).await
        };
        let (conn, t, session, remote_properties) =
            tokio::time::timeout(options.connect_timeout, fut).await.map_err(|_| {
                Error::new(ErrorKind::Connect, format!("connecting timed out after {:?}", options.connect_timeout))
            })??;
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let closed = CancellationToken::new();
        let actor = Actor {
            conn,
            t,
            session,
            cmds: rx,
            senders: IdMap::default(),
            receivers: IdMap::default(),
            unacked: IdMap::default(),
            nodes: HashMap::new(),
            node_links: IdMap::default(),
            requests: IdMap::default(),
            next_request_id: 0,
            next_tag: 0,
            id,
        };
        let c = closed.clone();
        tokio::spawn(async move {
            actor.run().await;
            c.cancel();
        });
        tracing::debug!(connection_id = id, host = %endpoint.dial_host, port = endpoint.dial_port, tls = endpoint.tls, "connection opened");
        Ok(AmqpConnection { cmds: tx, closed, id, remote_properties: std::sync::Arc::new(remote_properties) })
    }

    /// True once the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves when the connection has ended.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).await.map_err(|_| lost())?;
        rx.await.map_err(|_| lost())?
    }

    pub(crate) async fn attach_sender(&self, name: String, address: String) -> Result<SenderLink> {
        self.call(|reply| Cmd::AttachSender { name, address, reply }).await
    }

    pub(crate) async fn attach_receiver(&self, spec: ReceiverSpec) -> Result<ReceiverLink> {
        self.call(|reply| Cmd::AttachReceiver { spec, reply }).await
    }

    /// Queues a send; the returned receiver resolves with the service's outcome. Queueing
    /// waits only when the command channel is full.
    pub(crate) async fn send(
        &self,
        link: LinkId,
        format: u32,
        payload: Bytes,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let (reply, rx) = oneshot::channel();
        self.cmds.send(Cmd::Send { link, format, payload, reply }).await.map_err(|_| lost())?;
        Ok(rx)
    }

    /// Tells the connection that `consumed` deliveries of a receiver were taken, so it may
    /// grant that much credit again. Awaited, never dropped: lost credit would stall the link.
    pub(crate) async fn credit(&self, link: LinkId, consumed: u32) {
        let _ = self.cmds.send(Cmd::Credit { link, consumed }).await;
    }

    pub(crate) async fn detach(&self, link: LinkId) {
        let _ = self.cmds.send(Cmd::Detach { link }).await;
    }

    /// A request-response exchange with `$cbs` or `$management`.
    pub(crate) async fn request(&self, node: &'static str, message: Message) -> Result<Message> {
        self.call(|reply| Cmd::Request { node, message, reply }).await
    }

    /// Closes the connection gracefully.
    pub(crate) async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Close { reply }).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

fn user_agent(prefix: Option<&str>) -> String {
    let base =
        format!("ehub/{} (rust; {}; {})", env!("CARGO_PKG_VERSION"), std::env::consts::OS, std::env::consts::ARCH);
    match prefix {
        Some(p) if !p.is_empty() => format!("{p} {base}"),
        _ => base,
    }
}

type Handshake = (Connection, Transport<BoxStream>, u16, Map);

async fn handshake(stream: BoxStream, endpoint: &Endpoint, options: &ClientOptions) -> Result<Handshake> {
    let properties: Map = vec![
        (Value::Symbol("product".into()), Value::String("ehub".into())),
        (Value::Symbol("version".into()), Value::String(env!("CARGO_PKG_VERSION").into())),
        (Value::Symbol("platform".into()), Value::String(std::env::consts::OS.into())),
        (Value::Symbol("user-agent".into()), Value::String(user_agent(options.user_agent.as_deref()))),
    ];
    let cfg = ConnectionConfig {
        container_id: uuid::Uuid::new_v4().to_string(),
        hostname: Some(endpoint.namespace.clone()),
        max_frame_size: 65536,
        channel_max: 4999,
        idle_timeout: options.idle_timeout,
        properties: Some(properties),
        sasl: SaslConfig::Anonymous,
        session_window: 5000,
        handle_max: 4096,
        max_message_size: 1 << 30,
        ..Default::default()
    };
    let mut conn = Connection::new(ConnectionRole::Initiator, cfg, Instant::now());
    let mut t = Transport::new(stream);
    let mut session = None;
    let mut remote_properties = Map::new();
    loop {
        t.flush(&mut conn).await.map_err(|e| Error::new(ErrorKind::Connect, format!("writing: {e}")).with_source(e))?;
        let n =
            t.read_into().await.map_err(|e| Error::new(ErrorKind::Connect, format!("reading: {e}")).with_source(e))?;
        if n == 0 {
            return Err(Error::new(ErrorKind::Connect, "the service closed the socket during the handshake"));
        }
        let fed = t.feed(&mut conn);
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Opened(open) => {
                    remote_properties = open.properties.clone().unwrap_or_default();
                    session = Some(conn.begin().map_err(engine_error)?)
                }
                Event::SessionBegun { channel } if Some(channel) == session => {
                    return Ok((conn, t, channel, remote_properties))
                }
                Event::Closed { error } => {
                    return Err(match error {
                        Some(e) => Error::from_amqp(&e, "opening the connection"),
                        None => {
                            Error::new(ErrorKind::Connect, "the service closed the connection during the handshake")
                        }
                    })
                }
                Event::SessionEnded { error, .. } => {
                    return Err(match error {
                        Some(e) => Error::from_amqp(&e, "beginning the session"),
                        None => Error::new(ErrorKind::Connect, "the service ended the session"),
                    })
                }
                _ => {}
            }
        }
        fed.map_err(|e| {
            let kind = if matches!(e, ehub_amqp_endpoint::EndpointError::Sasl(_)) {
                ErrorKind::Authentication
            } else {
                ErrorKind::Connect
            };
            Error::new(kind, format!("handshake: {e}")).with_source(e)
        })?;
    }
}

fn engine_error(e: ehub_amqp_endpoint::EndpointError) -> Error {
    Error::new(ErrorKind::ConnectionLost, format!("AMQP engine: {e}")).with_source(e)
}

struct SenderState {
    attach_reply: Option<oneshot::Sender<Result<SenderLink>>>,
    queue: VecDeque<(u32, Bytes, oneshot::Sender<Result<()>>)>,
}

/// Credit is topped up once it has fallen by `window / CREDIT_STEP_DIVISOR`.
const CREDIT_STEP_DIVISOR: u32 = 2;
/// The window before any event was seen (its size unknown): small, so that a first burst of
/// large events stays small; one round trip later the window has its real size.
const INITIAL_WINDOW: u32 = 32;

struct ReceiverState {
    attach_reply: Option<(oneshot::Sender<Result<ReceiverLink>>, mpsc::UnboundedReceiver<RecvItem>)>,
    tx: mpsc::UnboundedSender<RecvItem>,
    /// The most events in the window.
    prefetch: u32,
    /// The most bytes in the window, by the average event size seen.
    prefetch_bytes: u64,
    /// Deliveries passed to the application's channel and not yet taken from it.
    buffered: u32,
    /// Running average event size in bytes; 0 until the first events.
    avg_size: f64,
}

impl ReceiverState {
    /// Events the receiver may have in flight or waiting: credit plus buffered.
    fn window(&self) -> u32 {
        if self.avg_size <= 0.0 {
            return self.prefetch.min(INITIAL_WINDOW);
        }
        let by_bytes = (self.prefetch_bytes as f64 / self.avg_size) as u64;
        by_bytes.clamp(1, u64::from(self.prefetch)) as u32
    }

    fn saw(&mut self, batch: &[Delivery]) {
        let n = batch.len() as u32;
        if n == 0 {
            return;
        }
        self.buffered = self.buffered.saturating_add(n);
        let avg = batch.iter().map(|d| d.size as f64).sum::<f64>() / f64::from(n);
        self.avg_size = if self.avg_size <= 0.0 { avg } else { 0.75 * self.avg_size + 0.25 * avg };
    }
}

/// Credit the reply link of a request-response node keeps.
const NODE_CREDIT: u32 = 16;

/// A request-response node (`$cbs`, `$management`): a sender and a receiver link.
struct NodeState {
    sender: LinkId,
    receiver: LinkId,
    reply_to: String,
    sender_ready: bool,
    receiver_ready: bool,
    queue: VecDeque<(Message, oneshot::Sender<Result<Message>>)>,
}

struct Actor {
    conn: Connection,
    t: Transport<BoxStream>,
    session: u16,
    cmds: mpsc::Receiver<Cmd>,
    senders: IdMap<LinkId, SenderState>,
    receivers: IdMap<LinkId, ReceiverState>,
    /// Sends awaiting the service's disposition, by delivery id.
    unacked: IdMap<u32, (LinkId, oneshot::Sender<Result<()>>)>,
    nodes: HashMap<&'static str, NodeState>,
    node_links: IdMap<LinkId, &'static str>,
    requests: IdMap<u64, oneshot::Sender<Result<Message>>>,
    next_request_id: u64,
    next_tag: u64,
    id: u64,
}

enum Step {
    Continue,
    Stop(Error),
}

impl Actor {
    async fn run(mut self) {
        let mut close_reply: Option<oneshot::Sender<()>> = None;
        let why = loop {
            if let Err(e) = self.t.flush(&mut self.conn).await {
                break Error::connection_lost(format!("writing to the socket: {e}")).with_source(e);
            }
            if close_reply.is_some() && self.conn.is_done() {
                break Error::client_closed();
            }
            let deadline = self.conn.next_timeout();
            let step = tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(Cmd::Close { reply }) => {
                        close_reply = Some(reply);
                        self.conn.close(None);
                        Step::Continue
                    }
                    Some(cmd) => {
                        self.command(cmd);
                        // Take what else is queued before writing: many frames per syscall.
                        for _ in 0..COMMAND_BATCH {
                            match self.cmds.try_recv() {
                                Ok(Cmd::Close { reply }) => { close_reply = Some(reply); self.conn.close(None); break; }
                                Ok(cmd) => self.command(cmd),
                                Err(_) => break,
                            }
                        }
                        Step::Continue
                    }
                    None => {
                        // Every handle is gone: close politely.
                        self.conn.close(None);
                        let _ = self.t.flush(&mut self.conn).await;
                        Step::Stop(Error::client_closed())
                    }
                },
                r = self.t.read_into() => match r {
                    Ok(0) => Step::Stop(Error::connection_lost("the service closed the socket")),
                    Ok(_) => self.input(),
                    Err(e) => Step::Stop(Error::connection_lost(format!("reading from the socket: {e}")).with_source(e)),
                },
                _ = sleep_until(deadline) => match self.conn.handle_timeout(Instant::now()) {
                    Ok(()) => Step::Continue,
                    Err(e) => Step::Stop(engine_error(e)),
                },
            };
            if let Step::Stop(e) = step {
                if close_reply.is_some() {
                    break Error::client_closed();
                }
                break e;
            }
        };
        tracing::debug!(connection_id = self.id, reason = %why, "connection ended");
        self.fail_all(&why);
        if let Some(r) = close_reply {
            let _ = r.send(());
        }
    }

    fn fail_all(&mut self, why: &Error) {
        let again = || why.detached_copy();
        for (_, s) in self.senders.drain() {
            if let Some(r) = s.attach_reply {
                let _ = r.send(Err(again()));
            }
            for (_, _, r) in s.queue {
                let _ = r.send(Err(again()));
            }
        }
        for (_, (_, r)) in self.unacked.drain() {
            let _ = r.send(Err(again()));
        }
        for (_, r) in self.receivers.drain() {
            match r.attach_reply {
                Some((reply, _)) => {
                    let _ = reply.send(Err(again()));
                }
                None => {
                    let _ = r.tx.send(RecvItem::Detached(again()));
                }
            }
        }
        for (_, n) in self.nodes.drain() {
            for (_, r) in n.queue {
                let _ = r.send(Err(again()));
            }
        }
        for (_, r) in self.requests.drain() {
            let _ = r.send(Err(again()));
        }
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::AttachSender { reply, .. } => drop(reply.send(Err(again()))),
                Cmd::AttachReceiver { reply, .. } => drop(reply.send(Err(again()))),
                Cmd::Send { reply, .. } => drop(reply.send(Err(again()))),
                Cmd::Request { reply, .. } => drop(reply.send(Err(again()))),
                Cmd::Close { reply } => drop(reply.send(())),
                Cmd::Credit { .. } | Cmd::Detach { .. } => {}
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::AttachSender { name, address, reply } => {
                let source = Source::address(format!("sender-link-{name}"));
                let a = link_attach(name, Role::Sender, source, Target::address(address));
                match self.conn.attach(self.session, a) {
                    Ok(link) => {
                        self.senders.insert(link, SenderState { attach_reply: Some(reply), queue: VecDeque::new() });
                    }
                    Err(e) => drop(reply.send(Err(engine_error(e)))),
                }
            }
            Cmd::AttachReceiver { spec, reply } => {
                let target = Target::address(format!("receiver-link-{}", spec.name));
                let mut a = link_attach(spec.name.clone(), Role::Receiver, spec.source, target);
                a.properties = spec.properties;
                a.desired_capabilities = spec.desired_capabilities;
                match self.conn.attach(self.session, a) {
                    Ok(link) => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        self.receivers.insert(
                            link,
                            ReceiverState {
                                attach_reply: Some((reply, rx)),
                                tx,
                                prefetch: spec.prefetch.max(1),
                                prefetch_bytes: spec.prefetch_bytes.max(1),
                                buffered: 0,
                                avg_size: 0.0,
                            },
                        );
                    }
                    Err(e) => drop(reply.send(Err(engine_error(e)))),
                }
            }
            Cmd::Send { link, format, payload, reply } => match self.senders.get_mut(&link) {
                Some(s) => {
                    s.queue.push_back((format, payload, reply));
                    self.pump_sender(link);
                }
                None => drop(reply.send(Err(Error::connection_lost("the sender link is closed")))),
            },
            Cmd::Credit { link, consumed } => {
                if let Some(r) = self.receivers.get_mut(&link) {
                    if r.attach_reply.is_none() {
                        // Credit tops the window up (credit + buffered = window), in steps of
                        // half a window: one flow frame per small batch made the peer wake up
                        // and write for a few events each time. When the peer has no credit
                        // left, or the window shrank (larger events), it is set at once.
                        r.buffered = r.buffered.saturating_sub(consumed);
                        let window = r.window();
                        let want = window.saturating_sub(r.buffered);
                        let now = self.conn.credit(link);
                        let step = (window / CREDIT_STEP_DIVISOR).max(1);
                        if (want > now && (now == 0 || want - now >= step)) || want < now {
                            let _ = self.conn.flow(link, want);
                        }
                    }
                }
            }
            Cmd::Detach { link } => {
                let _ = self.conn.detach(link, None);
            }
            Cmd::Request { node, message, reply } => {
                if !self.nodes.contains_key(node) {
                    if let Err(e) = self.attach_node(node) {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
                let n = self.nodes.get_mut(node).expect("attached above");
                n.queue.push_back((message, reply));
                self.pump_node(node);
            }
            Cmd::Close { .. } => unreachable!("handled by the loop"),
        }
    }

    fn attach_node(&mut self, node: &'static str) -> Result<()> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let name = node.trim_start_matches('$');
        let reply_to = format!("{name}-reply-{tag}");
        let s = link_attach(format!("{name}-sender-{tag}"), Role::Sender, Source::address(node), Target::address(node));
        let sender = self.conn.attach(self.session, s).map_err(engine_error)?;
        let target = Target::address(reply_to.clone());
        let r = link_attach(format!("{name}-receiver-{tag}"), Role::Receiver, Source::address(node), target);
        let receiver = self.conn.attach(self.session, r).map_err(engine_error)?;
        self.node_links.insert(sender, node);
        self.node_links.insert(receiver, node);
        self.nodes.insert(
            node,
            NodeState {
                sender,
                receiver,
                reply_to,
                sender_ready: false,
                receiver_ready: false,
                queue: VecDeque::new(),
            },
        );
        Ok(())
    }

    fn pump_node(&mut self, node: &'static str) {
        let Some(n) = self.nodes.get_mut(node) else { return };
        if !n.receiver_ready || !n.sender_ready {
            return;
        }
        // Requests are small: one frame of the peer's session window, as well as credit.
        while self.conn.can_send(n.sender, 8, 0) {
            let Some((mut m, reply)) = n.queue.pop_front() else { break };
            let id = self.next_request_id;
            self.next_request_id += 1;
            let p = m.properties.get_or_insert_with(Default::default);
            p.message_id = Some(Value::Ulong(id));
            p.reply_to = Some(n.reply_to.clone());
            let bytes = match m.to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    let _ = reply.send(Err(Error::invalid(format!("encoding the request: {e}"))));
                    continue;
                }
            };
            let tag = id.to_be_bytes();
            match self.conn.send(n.sender, SendArgs { tag: &tag, message_format: 0, settled: false }, &bytes) {
                Ok(_) => {
                    self.requests.insert(id, reply);
                }
                Err(e) => drop(reply.send(Err(engine_error(e)))),
            }
        }
    }

    fn pump_sender(&mut self, link: LinkId) {
        let Some(s) = self.senders.get_mut(&link) else { return };
        if s.attach_reply.is_some() {
            return;
        }
        // Credit and the peer's session window; the flow that reopens either calls this again.
        while s.queue.front().is_some_and(|(_, p, _)| self.conn.can_send(link, 8, p.len())) {
            let Some((format, payload, reply)) = s.queue.pop_front() else { break };
            // The tag only has to be unique among unsettled deliveries of the link.
            self.next_tag = self.next_tag.wrapping_add(1);
            let tag = self.next_tag.to_be_bytes();
            match self.conn.send(link, SendArgs { tag: &tag, message_format: format, settled: false }, &payload) {
                Ok(id) => {
                    self.unacked.insert(id, (link, reply));
                }
                Err(e) => drop(reply.send(Err(engine_error(e)))),
            }
        }
    }

    /// Feeds what was read and handles the resulting events.
    fn input(&mut self) -> Step {
        let fed = self.t.feed(&mut self.conn);
        let mut batches: Vec<(LinkId, Vec<Delivery>)> = Vec::new();
        while let Some(ev) = self.conn.poll_event() {
            if let Step::Stop(e) = self.event(ev, &mut batches) {
                return Step::Stop(e);
            }
        }
        for (link, batch) in batches {
            if let Some(r) = self.receivers.get_mut(&link) {
                r.saw(&batch);
                let _ = r.tx.send(RecvItem::Deliveries(batch));
            }
        }
        match fed {
            Ok(()) => Step::Continue,
            Err(ehub_amqp_endpoint::EndpointError::RemoteClosed(e)) => {
                Step::Stop(Error::from_amqp(&e, "connection closed"))
            }
            Err(e) => Step::Stop(engine_error(e)),
        }
    }

    fn event(&mut self, ev: Event, batches: &mut Vec<(LinkId, Vec<Delivery>)>) -> Step {
        match ev {
            Event::Attached { link, attach } => self.attached(link, &attach),
            Event::LinkFlow { link } => {
                if let Some(node) = self.node_links.get(&link).copied() {
                    self.pump_node(node);
                } else {
                    self.pump_sender(link);
                }
            }
            Event::Delivery(d) => {
                let _ = self.conn.accept_delivery(&d);
                // Deliveries come in runs on one receiver link: the run continues without lookups.
                match batches.last_mut() {
                    Some((link, batch)) if *link == d.link => batch.push(d),
                    _ => {
                        if let Some(node) = self.node_links.get(&d.link).copied() {
                            self.response(node, d);
                        } else if self.receivers.contains_key(&d.link) {
                            match batches.iter_mut().find(|(link, _)| *link == d.link) {
                                Some((_, batch)) => batch.push(d),
                                None => batches.push((d.link, vec![d])),
                            }
                        }
                    }
                }
            }
            Event::Disposition { role: Role::Receiver, first, last, state, .. } => {
                let outcome = || match &state {
                    Some(DeliveryState::Accepted) | None => Ok(()),
                    Some(DeliveryState::Rejected(Some(e))) => {
                        let mut err = Error::from_amqp(e, "the service rejected the event");
                        if err.kind() == ErrorKind::EventHub || err.kind() == ErrorKind::Connect {
                            err = Error::new(ErrorKind::EventDataSend, err.to_string()).with_source(err);
                        }
                        Err(err)
                    }
                    Some(other) => Err(Error::new(
                        ErrorKind::EventDataSend,
                        format!("the service did not accept the event: {other:?}"),
                    )),
                };
                let span = last.wrapping_sub(first) as usize + 1;
                if span <= self.unacked.len() {
                    let mut id = first;
                    loop {
                        if let Some((_, reply)) = self.unacked.remove(&id) {
                            let _ = reply.send(outcome());
                        }
                        if id == last {
                            break;
                        }
                        id = id.wrapping_add(1);
                    }
                } else {
                    let ids: Vec<u32> = self
                        .unacked
                        .keys()
                        .copied()
                        .filter(|id| id.wrapping_sub(first) <= last.wrapping_sub(first))
                        .collect();
                    for id in ids {
                        if let Some((_, reply)) = self.unacked.remove(&id) {
                            let _ = reply.send(outcome());
                        }
                    }
                }
            }
            Event::Disposition { .. } => {}
            Event::Detached { link, error, .. } => self.detached(link, error),
            Event::SessionEnded { error, .. } => {
                return Step::Stop(match error {
                    Some(e) => Error::from_amqp(&e, "the service ended the session"),
                    None => Error::connection_lost("the service ended the session"),
                })
            }
            Event::Closed { error } => {
                return Step::Stop(match error {
                    Some(e) => Error::from_amqp(&e, "the service closed the connection"),
                    None => Error::connection_lost("the service closed the connection"),
                })
            }
            Event::Opened(_) | Event::SessionBegun { .. } | Event::SaslInit { .. } | Event::AttachRequested { .. } => {}
        }
        Step::Continue
    }

    fn attached(&mut self, link: LinkId, attach: &Attach) {
        if let Some(node) = self.node_links.get(&link).copied() {
            if let Some(n) = self.nodes.get_mut(node) {
                if link == n.receiver {
                    n.receiver_ready = attach.source.is_some();
                    let _ = self.conn.flow(link, NODE_CREDIT);
                } else {
                    n.sender_ready = attach.target.is_some();
                }
            }
            self.pump_node(node);
            return;
        }
        if let Some(s) = self.senders.get_mut(&link) {
            // A null target means the service is refusing the link; its detach follows.
            if attach.target.is_some() {
                // The producer enforces the limit before queueing a send.
                let max_message_size = attach.max_message_size.unwrap_or(0);
                if let Some(r) = s.attach_reply.take() {
                    let _ = r.send(Ok(SenderLink { link, max_message_size }));
                }
                self.pump_sender(link);
            }
            return;
        }
        if let Some(r) = self.receivers.get_mut(&link) {
            if attach.source.is_some() {
                if let Some((reply, rx)) = r.attach_reply.take() {
                    let window = r.window();
                    let _ = reply.send(Ok(ReceiverLink { link, rx }));
                    let _ = self.conn.flow(link, window);
                }
            }
        }
    }

    fn detached(&mut self, link: LinkId, error: Option<AmqpError>) {
        let err = || match &error {
            Some(e) => Error::from_amqp(e, "the service closed the link"),
            None => Error::connection_lost("the link was closed"),
        };
        if let Some(node) = self.node_links.remove(&link) {
            if let Some(n) = self.nodes.remove(node) {
                self.node_links.remove(&n.sender);
                self.node_links.remove(&n.receiver);
                let _ = self.conn.detach(n.sender, None);
                let _ = self.conn.detach(n.receiver, None);
                for (_, r) in n.queue {
                    let _ = r.send(Err(err()));
                }
            }
            return;
        }
        if let Some(s) = self.senders.remove(&link) {
            if let Some(r) = s.attach_reply {
                let _ = r.send(Err(err()));
            }
            for (_, _, r) in s.queue {
                let _ = r.send(Err(err()));
            }
            let ids: Vec<u32> = self.unacked.iter().filter(|(_, (l, _))| *l == link).map(|(id, _)| *id).collect();
            for id in ids {
                if let Some((_, r)) = self.unacked.remove(&id) {
                    let _ = r.send(Err(err()));
                }
            }
            return;
        }
        if let Some(r) = self.receivers.remove(&link) {
            match r.attach_reply {
                Some((reply, _)) => drop(reply.send(Err(err()))),
                None => drop(r.tx.send(RecvItem::Detached(err()))),
            }
        }
    }

    fn response(&mut self, node: &'static str, d: Delivery) {
        // Every response uses a credit: grant more, or the node falls silent after
        // NODE_CREDIT requests on one connection.
        let _ = self.conn.top_up_credit(d.link, NODE_CREDIT);
        let m = match Message::decode(&d.payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(connection_id = self.id, node, error = %e, "undecodable response");
                return;
            }
        };
        let id = m.properties.as_ref().and_then(|p| p.correlation_id.as_ref()).and_then(|v| match v {
            Value::Ulong(n) => Some(*n),
            _ => None,
        });
        match id.and_then(|id| self.requests.remove(&id)) {
            Some(reply) => drop(reply.send(Ok(m))),
            None => tracing::warn!(connection_id = self.id, node, "response without a matching request"),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// An attach with the settle modes the official Rust SDK sends on every link (mixed, first):
/// our transfers are unsettled, which mixed allows. Checked against a recording of the SDK's
/// frames in interop/rust (tests/official_rust_sdk.rs).
fn link_attach(name: String, role: Role, source: Source, target: Target) -> Attach {
    let mut a = Attach::new(name, 0, role);
    a.snd_settle_mode = SenderSettleMode::Mixed;
    a.rcv_settle_mode = ReceiverSettleMode::First;
    a.source = Some(source);
    a.target = Some(target);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(prefetch: u32, prefetch_bytes: u64) -> ReceiverState {
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        ReceiverState { attach_reply: None, tx, prefetch, prefetch_bytes, buffered: 0, avg_size: 0.0 }
    }

    fn deliveries(n: usize, size: u64) -> Vec<Delivery> {
        (0..n)
            .map(|i| Delivery {
                link: LinkId { channel: 0, handle: 0 },
                delivery_id: i as u32,
                tag: Default::default(),
                message_format: 0,
                settled: true,
                payload: Bytes::new(),
                size,
                oversized: false,
                aborted: false,
            })
            .collect()
    }

    #[test]
    fn the_window_starts_small_then_follows_the_event_size_within_both_bounds() {
        let mut r = receiver(3000, 4 * 1024 * 1024);
        assert_eq!(r.window(), INITIAL_WINDOW, "before any event: small");
        r.saw(&deliveries(32, 150));
        assert_eq!(r.window(), 3000, "small events: the count bound");
        assert_eq!(r.buffered, 32);
        // Events grow to 1 MiB: the window shrinks to what 4 MiB holds as the average follows.
        for _ in 0..40 {
            r.saw(&deliveries(4, 1024 * 1024));
        }
        assert_eq!(r.window(), 4);
        r.saw(&deliveries(1, 64 * 1024 * 1024));
        assert_eq!(r.window(), 1, "never below one event");
        let tiny = receiver(10, 1 << 30);
        assert_eq!(tiny.window(), 10, "the count bound holds before sizes are known too");
    }
}
