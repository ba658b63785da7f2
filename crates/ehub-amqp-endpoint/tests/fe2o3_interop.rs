//! Interoperability with an independent AMQP 1.0 implementation, fe2o3-amqp 0.18 (a
//! dev-dependency only), over real TCP sockets:
//! - our acceptor against fe2o3's client;
//! - our initiator against fe2o3's acceptor.
//!
//! Together they cover SASL, attach in both roles, link credit, every settle mode (pre-settled,
//! unsettled with receiver-settle-mode first and second, ranged dispositions, rejection),
//! multi-frame transfers in both directions, detach with an error in both directions, close with
//! and without an error, and idle-timeout heartbeats in both directions.

use bytes::Bytes;
use ehub_amqp_codec::{
    Attach, Body, DeliveryState, Error as AmqpError, Message, ReceiverSettleMode, Role, SenderSettleMode, Source,
    Target, Value,
};
use ehub_amqp_endpoint::driver::Transport;
use ehub_amqp_endpoint::{
    AttachReply, Connection, ConnectionConfig, ConnectionRole, Delivery, EndpointError, Event, LinkId, SaslConfig,
    SendArgs,
};
use fe2o3_amqp::acceptor::{ConnectionAcceptor, LinkAcceptor, LinkEndpoint, SaslAnonymousMechanism, SessionAcceptor};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::{self as fdef, ErrorCondition};
use fe2o3_amqp::types::messaging::{Message as FMessage, Outcome};
use fe2o3_amqp::{Receiver as FReceiver, Sender as FSender, Session as FSession};
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

/// Every test is bounded: a hang is a failure, not a stuck CI job.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f).await.expect("test timed out")
}

/// Our engine on a TCP socket, with the smallest driver loop that honours heartbeats.
struct Peer {
    conn: Connection,
    io: Transport<TcpStream>,
}

impl Peer {
    fn new(role: ConnectionRole, cfg: ConnectionConfig, stream: TcpStream) -> Self {
        stream.set_nodelay(true).unwrap();
        Peer { conn: Connection::new(role, cfg, Instant::now()), io: Transport::new(stream) }
    }

    /// The next engine event, reading (and heartbeating) as needed.
    async fn next(&mut self) -> Result<Event, EndpointError> {
        self.io.next_event(&mut self.conn).await
    }

    async fn flush(&mut self) {
        self.io.flush(&mut self.conn).await.unwrap();
    }

    /// Waits for an event `f` picks; every event before it is discarded.
    async fn until<T>(&mut self, mut f: impl FnMut(Event) -> Option<T>) -> T {
        loop {
            let e = self.next().await.expect("connection failed while waiting");
            if let Some(t) = f(e) {
                return t;
            }
        }
    }

    /// Waits until our sender link has at least `n` credit.
    async fn wait_credit(&mut self, link: LinkId, n: u32) {
        while self.conn.credit(link) < n {
            let e = self.next().await.expect("connection failed while waiting for credit");
            // Only bookkeeping may pass here; anything a test counts must not be dropped.
            assert!(matches!(e, Event::LinkFlow { .. } | Event::SessionBegun { .. }), "unexpected {e:?}");
        }
    }
}

fn acceptor_config() -> ConnectionConfig {
    ConnectionConfig {
        container_id: "ehub-acceptor".into(),
        sasl: SaslConfig::Server { mechanisms: vec!["ANONYMOUS".into(), "PLAIN".into()], allow_no_sasl: true },
        ..Default::default()
    }
}

fn text_of(d: &Delivery) -> String {
    match Message::decode(&d.payload).expect("fe2o3 sent a message we cannot decode").body {
        Body::Value(Value::String(s)) => s,
        other => panic!("expected a string amqp-value body, got {other:?}"),
    }
}

fn encode_text(s: &str) -> Bytes {
    Message::with_value(Value::String(s.into())).to_bytes().unwrap()
}

/// Starts fe2o3's client, `client(url)`, against our acceptor configured with `cfg`; returns our
/// end of the accepted connection and the client's task.
async fn fe2o3_client<F, Fut, T>(cfg: ConnectionConfig, client: F) -> (Peer, tokio::task::JoinHandle<T>)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("amqp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let client = tokio::spawn(client(url));
    let (stream, _) = listener.accept().await.unwrap();
    (Peer::new(ConnectionRole::Acceptor, cfg, stream), client)
}

/// Echoes the peer's attach back, as a broker accepting any address would.
fn mirror(a: &Attach) -> AttachReply {
    AttachReply {
        source: a.source.clone(),
        target: a.target.clone(),
        snd_settle_mode: Some(a.snd_settle_mode),
        rcv_settle_mode: Some(a.rcv_settle_mode),
        max_message_size: Some(1024 * 1024),
        ..Default::default()
    }
}

fn fe2o3_error(condition: &str, description: &str) -> fdef::Error {
    fdef::Error::new(ErrorCondition::Custom(condition.into()), Some(description.into()), None)
}

// -------------------------------------------------------------------------------------------
// Our acceptor, fe2o3's client
// -------------------------------------------------------------------------------------------

/// fe2o3 sends over four links: unsettled (receiver-settle-mode first, one rejected),
/// pre-settled, receiver-settle-mode second, and 20 batchable sends settled by one ranged
/// disposition. It authenticates with SASL PLAIN and closes cleanly.
#[tokio::test]
async fn acceptor_receives_from_fe2o3_in_every_settle_mode() {
    bounded(async {
        let (mut p, client) = fe2o3_client(acceptor_config(), |url| async move {
            let mut conn = fe2o3_amqp::Connection::builder()
                .container_id("fe2o3-client")
                .sasl_profile(SaslProfile::Plain { username: "user".into(), password: "secret".into() })
                .open(url.as_str())
                .await
                .unwrap();
            let mut session = FSession::begin(&mut conn).await.unwrap();

            let mut unsettled = FSender::builder()
                .name("unsettled")
                .target("q")
                .sender_settle_mode(fdef::SenderSettleMode::Unsettled)
                .attach(&mut session)
                .await
                .unwrap();
            for i in 0..50 {
                let outcome = unsettled.send(FMessage::from(format!("u{i}"))).await.unwrap();
                assert!(matches!(outcome, Outcome::Accepted(_)), "u{i}: {outcome:?}");
            }
            let outcome = unsettled.send(FMessage::from("reject-me".to_string())).await.unwrap();
            match outcome {
                Outcome::Rejected(r) => {
                    let e = r.error.expect("rejected with an error");
                    assert_eq!(e.description.as_deref(), Some("not today"));
                }
                other => panic!("expected rejected, got {other:?}"),
            }
            unsettled.close().await.unwrap();

            let mut settled = FSender::builder()
                .name("settled")
                .target("q")
                .sender_settle_mode(fdef::SenderSettleMode::Settled)
                .attach(&mut session)
                .await
                .unwrap();
            for i in 0..50 {
                settled.send(FMessage::from(format!("s{i}"))).await.unwrap();
            }
            settled.close().await.unwrap();

            let mut second = FSender::builder()
                .name("second")
                .target("q")
                .sender_settle_mode(fdef::SenderSettleMode::Unsettled)
                .receiver_settle_mode(fdef::ReceiverSettleMode::Second)
                .attach(&mut session)
                .await
                .unwrap();
            for i in 0..10 {
                let outcome = second.send(FMessage::from(format!("r{i}"))).await.unwrap();
                assert!(matches!(outcome, Outcome::Accepted(_)), "r{i}: {outcome:?}");
            }
            second.close().await.unwrap();

            let mut batch = FSender::builder().name("ranged").target("q").attach(&mut session).await.unwrap();
            let mut pending = Vec::new();
            for i in 0..20 {
                pending.push(batch.send_batchable(FMessage::from(format!("b{i}"))).await.unwrap());
            }
            for p in pending {
                assert!(matches!(p.await.unwrap(), Outcome::Accepted(_)));
            }
            batch.close().await.unwrap();

            session.close().await.unwrap();
            conn.close().await.unwrap();
        })
        .await;
        let mut names: HashMap<LinkId, String> = HashMap::new();
        let mut got: HashMap<String, Vec<String>> = HashMap::new();
        let mut ranged: Vec<u32> = Vec::new();
        let mut sasl = None;
        loop {
            match p.next().await.expect("connection failed") {
                Event::SaslInit { mechanism, initial_response, .. } => sasl = Some((mechanism, initial_response)),
                Event::AttachRequested { link, attach } => {
                    assert_eq!(attach.role, Role::Sender);
                    names.insert(link, attach.name.clone());
                    p.conn.accept_link(link, mirror(&attach)).unwrap();
                    p.conn.flow(link, 100).unwrap();
                }
                Event::Delivery(d) => {
                    let name = names[&d.link].clone();
                    let text = text_of(&d);
                    match name.as_str() {
                        "unsettled" => {
                            assert!(!d.settled);
                            if text == "reject-me" {
                                let state =
                                    DeliveryState::Rejected(Some(AmqpError::new("amqp:not-allowed", "not today")));
                                p.conn
                                    .disposition(
                                        d.link.channel,
                                        Role::Receiver,
                                        d.delivery_id,
                                        d.delivery_id,
                                        true,
                                        Some(state),
                                    )
                                    .unwrap();
                            } else {
                                p.conn.accept_delivery(&d).unwrap();
                            }
                        }
                        "settled" => assert!(d.settled, "pre-settled link delivered an unsettled transfer"),
                        "second" => {
                            assert!(!d.settled);
                            // Mode second: our outcome goes first, unsettled, and completes
                            // fe2o3's send. (fe2o3 0.18's sender does not echo the settlement:
                            // its link relay keeps the default mode. The initiator test below
                            // checks the full exchange against fe2o3's receiver.)
                            p.conn
                                .disposition(
                                    d.link.channel,
                                    Role::Receiver,
                                    d.delivery_id,
                                    d.delivery_id,
                                    false,
                                    Some(DeliveryState::Accepted),
                                )
                                .unwrap();
                        }
                        "ranged" => {
                            ranged.push(d.delivery_id);
                            if ranged.len() == 20 {
                                let (first, last) = (ranged[0], ranged[19]);
                                assert_eq!(last.wrapping_sub(first), 19, "delivery ids are consecutive");
                                p.conn
                                    .disposition(
                                        d.link.channel,
                                        Role::Receiver,
                                        first,
                                        last,
                                        true,
                                        Some(DeliveryState::Accepted),
                                    )
                                    .unwrap();
                            }
                        }
                        other => panic!("unexpected link {other}"),
                    }
                    got.entry(name).or_default().push(text);
                    p.conn.top_up_credit(d.link, 100).unwrap();
                }
                Event::Closed { error } => {
                    assert!(error.is_none());
                    break;
                }
                _ => {}
            }
        }
        p.flush().await;
        client.await.unwrap();

        let (mechanism, response) = sasl.expect("SASL init seen");
        assert_eq!(mechanism.as_str(), "PLAIN");
        assert_eq!(response.as_deref(), Some(&b"\0user\0secret"[..]));
        let mut want_u: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
        want_u.push("reject-me".into());
        assert_eq!(got["unsettled"], want_u);
        assert_eq!(got["settled"], (0..50).map(|i| format!("s{i}")).collect::<Vec<_>>());
        assert_eq!(got["second"], (0..10).map(|i| format!("r{i}")).collect::<Vec<_>>());
        assert_eq!(got["ranged"], (0..20).map(|i| format!("b{i}")).collect::<Vec<_>>());
    })
    .await;
}

/// We send to a fe2o3 receiver: only as far as its credit allows, unsettled (it accepts, we
/// see dispositions) and then pre-settled on a second link.
#[tokio::test]
async fn acceptor_sends_to_fe2o3_within_its_credit() {
    bounded(async {
        let (mut p, client) = fe2o3_client(acceptor_config(), |url| async move {
            let mut conn = fe2o3_amqp::Connection::open("fe2o3-client", url.as_str()).await.unwrap();
            let mut session = FSession::begin(&mut conn).await.unwrap();
            let mut rx = FReceiver::attach(&mut session, "unsettled-rx", "q").await.unwrap();
            let mut seen = Vec::new();
            for _ in 0..300 {
                let d = rx.recv::<String>().await.unwrap();
                seen.push(d.body().clone());
                rx.accept(&d).await.unwrap();
            }
            rx.close().await.unwrap();
            let mut rx = FReceiver::builder()
                .name("settled-rx")
                .source("q")
                .sender_settle_mode(fdef::SenderSettleMode::Settled)
                .attach(&mut session)
                .await
                .unwrap();
            for _ in 0..100 {
                let d = rx.recv::<String>().await.unwrap();
                seen.push(d.body().clone());
            }
            rx.close().await.unwrap();
            session.close().await.unwrap();
            conn.close().await.unwrap();
            seen
        })
        .await;
        let mut accepted = 0u32;
        for (name, count, presettled) in [("unsettled-rx", 300u32, false), ("settled-rx", 100, true)] {
            let link = p
                .until(|e| match e {
                    Event::AttachRequested { link, attach } => Some((link, attach)),
                    _ => None,
                })
                .await;
            let (link, attach) = link;
            assert_eq!(attach.name, name);
            assert_eq!(attach.role, Role::Receiver);
            p.conn.accept_link(link, mirror(&attach)).unwrap();
            let mut sent = 0;
            let mut settled_by_peer = 0;
            // Send whenever credit arrives, never beyond it; count fe2o3's outcomes; stop when
            // fe2o3 detaches (after it has received everything).
            loop {
                while p.conn.credit(link) > 0 && sent < count {
                    let tag = sent.to_be_bytes();
                    let msg = encode_text(&format!("{name}-{sent}"));
                    p.conn.send(link, SendArgs { tag: &tag, message_format: 0, settled: presettled }, &msg).unwrap();
                    sent += 1;
                }
                if sent < count {
                    // Out of credit: the engine refuses to send.
                    assert!(p.conn.send(link, SendArgs { tag: b"x", message_format: 0, settled: true }, b"").is_err());
                }
                match p.next().await.unwrap() {
                    Event::Disposition { role: Role::Receiver, first, last, state, settled: true, .. } => {
                        assert_eq!(state, Some(DeliveryState::Accepted));
                        settled_by_peer += last.wrapping_sub(first) + 1;
                    }
                    Event::Detached { link: l, remote: true, .. } if l == link => break,
                    _ => {}
                }
            }
            assert_eq!(sent, count);
            if !presettled {
                accepted += settled_by_peer;
            } else {
                assert_eq!(settled_by_peer, 0, "nothing to settle on a pre-settled link");
            }
        }
        p.until(|e| matches!(e, Event::Closed { error: None }).then_some(())).await;
        p.flush().await;
        let seen = client.await.unwrap();
        let want: Vec<String> =
            (0..300).map(|i| format!("unsettled-rx-{i}")).chain((0..100).map(|i| format!("settled-rx-{i}"))).collect();
        assert_eq!(seen, want);
        assert_eq!(accepted, 300);
    })
    .await;
}

/// With 512-byte frames on both sides, 100 KiB messages cross as multi-frame deliveries in
/// both directions and arrive byte for byte.
#[tokio::test]
async fn acceptor_multi_frame_transfers_both_directions() {
    bounded(async {
        let big: String = (0..100 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let big2 = big.clone();
        let cfg = ConnectionConfig { max_frame_size: 512, ..acceptor_config() };
        let (mut p, client) = fe2o3_client(cfg, |url| async move {
            let mut conn = fe2o3_amqp::Connection::builder()
                .container_id("fe2o3")
                .max_frame_size(512)
                .open(url.as_str())
                .await
                .unwrap();
            let mut session = FSession::begin(&mut conn).await.unwrap();
            let mut tx = FSender::attach(&mut session, "big-tx", "q").await.unwrap();
            for _ in 0..3 {
                let outcome = tx.send(FMessage::from(big2.clone())).await.unwrap();
                assert!(matches!(outcome, Outcome::Accepted(_)));
            }
            let mut rx = FReceiver::attach(&mut session, "big-rx", "q").await.unwrap();
            let mut back = Vec::new();
            for _ in 0..3 {
                let d = rx.recv::<String>().await.unwrap();
                rx.accept(&d).await.unwrap();
                back.push(d.body().clone());
            }
            tx.close().await.unwrap();
            rx.close().await.unwrap();
            conn.close().await.unwrap();
            back
        })
        .await;
        let mut received = 0;
        let mut rx_link = None;
        while received < 3 || rx_link.is_none() {
            match p.next().await.unwrap() {
                Event::AttachRequested { link, attach } => {
                    p.conn.accept_link(link, mirror(&attach)).unwrap();
                    if attach.role == Role::Sender {
                        p.conn.flow(link, 10).unwrap();
                    } else {
                        rx_link = Some(link);
                    }
                }
                Event::Delivery(d) => {
                    assert!(!d.oversized && !d.aborted);
                    assert_eq!(text_of(&d), big);
                    p.conn.accept_delivery(&d).unwrap();
                    received += 1;
                }
                _ => {}
            }
        }
        let link = rx_link.unwrap();
        assert!(p.conn.peer_max_frame_size() == 512);
        let before = p.conn.output().len();
        for i in 0..3u8 {
            p.wait_credit(link, 1).await;
            p.conn.send(link, SendArgs { tag: &[i], message_format: 0, settled: false }, &encode_text(&big)).unwrap();
            assert!(p.conn.output().len() - before > 100 * 1024 / 512 * 8, "split into many frames");
            p.flush().await;
        }
        p.until(|e| matches!(e, Event::Closed { .. }).then_some(())).await;
        p.flush().await;
        let back = client.await.unwrap();
        assert_eq!(back.len(), 3);
        assert!(back.iter().all(|b| *b == big));
    })
    .await;
}

/// A detach with an error travels both ways: fe2o3 closes its sender with an error and we see
/// it; we close fe2o3's receiver with an error and fe2o3 reports it. Then we close the
/// connection with an error, and fe2o3 reports that too.
#[tokio::test]
async fn acceptor_detach_and_close_with_errors() {
    bounded(async {
        let (mut p, client) = fe2o3_client(acceptor_config(), |url| async move {
            let mut conn = fe2o3_amqp::Connection::open("fe2o3-client", url.as_str()).await.unwrap();
            let mut session = FSession::begin(&mut conn).await.unwrap();
            let tx = FSender::attach(&mut session, "doomed-tx", "q").await.unwrap();
            tx.close_with_error(fe2o3_error("com.example:gave-up", "client gave up")).await.unwrap();
            let mut rx = FReceiver::attach(&mut session, "doomed-rx", "q").await.unwrap();
            let err = rx.recv::<String>().await.expect_err("the acceptor detached us with an error");
            let close = conn.on_close().await;
            (format!("{err:?}"), format!("{close:?}"))
        })
        .await;
        let mut tx_error = None;
        loop {
            match p.next().await.unwrap() {
                Event::AttachRequested { link, attach } if attach.role == Role::Sender => {
                    p.conn.accept_link(link, mirror(&attach)).unwrap();
                }
                Event::Detached { error, remote: true, closed, .. } => {
                    assert!(closed);
                    tx_error = error;
                }
                Event::AttachRequested { link, attach } => {
                    p.conn.accept_link(link, mirror(&attach)).unwrap();
                    p.conn.detach(link, Some(AmqpError::new("amqp:link:stolen", "another reader took over"))).unwrap();
                    // fe2o3 answers the detach.
                    p.until(|e| matches!(e, Event::Detached { remote: false, .. }).then_some(())).await;
                    break;
                }
                _ => {}
            }
        }
        let e = tx_error.expect("fe2o3's detach carried its error");
        assert_eq!(e.condition.as_str(), "com.example:gave-up");
        assert_eq!(e.description.as_deref(), Some("client gave up"));

        p.conn.close(Some(AmqpError::new("amqp:internal-error", "shutting down")));
        p.flush().await;
        let end = p.next().await;
        assert!(matches!(end, Ok(Event::Closed { error: None }) | Err(_)), "{end:?}");
        let (recv_err, close) = client.await.unwrap();
        assert!(recv_err.contains("Stolen") && recv_err.contains("another reader took over"), "{recv_err}");
        assert!(close.contains("InternalError") && close.contains("shutting down"), "{close}");
    })
    .await;
}

/// Both sides ask for a 400 ms idle timeout. Over 2 s of silence each keeps the other alive with
/// heartbeats, and a message still goes through afterwards.
#[tokio::test]
async fn acceptor_heartbeats_keep_an_idle_connection_alive() {
    bounded(async {
        let cfg = ConnectionConfig { idle_timeout: Some(Duration::from_millis(400)), ..acceptor_config() };
        let (mut p, client) = fe2o3_client(cfg, |url| async move {
            let mut conn = fe2o3_amqp::Connection::builder()
                .container_id("fe2o3")
                .idle_time_out(400u32)
                .open(url.as_str())
                .await
                .unwrap();
            let mut session = FSession::begin(&mut conn).await.unwrap();
            let mut tx = FSender::attach(&mut session, "idle-tx", "q").await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let outcome = tx.send(FMessage::from("still here".to_string())).await.unwrap();
            assert!(matches!(outcome, Outcome::Accepted(_)));
            tx.close().await.unwrap();
            conn.close().await.unwrap();
        })
        .await;
        let started = Instant::now();
        let text = loop {
            match p.next().await.expect("our idle timeout fired: fe2o3 sent no heartbeats") {
                // fe2o3 advertises half its threshold, as the spec recommends.
                Event::Opened(o) => assert_eq!(o.idle_time_out, Some(200)),
                Event::AttachRequested { link, attach } => {
                    p.conn.accept_link(link, mirror(&attach)).unwrap();
                    p.conn.flow(link, 10).unwrap();
                }
                Event::Delivery(d) => {
                    p.conn.accept_delivery(&d).unwrap();
                    break text_of(&d);
                }
                _ => {}
            }
        };
        assert_eq!(text, "still here");
        assert!(started.elapsed() >= Duration::from_secs(2));
        p.until(|e| matches!(e, Event::Closed { error: None }).then_some(())).await;
        p.flush().await;
        client.await.unwrap();
    })
    .await;
}

// -------------------------------------------------------------------------------------------
// Our initiator, fe2o3's acceptor
// -------------------------------------------------------------------------------------------

fn initiator_config() -> ConnectionConfig {
    ConnectionConfig {
        container_id: "ehub-initiator".into(),
        hostname: Some("127.0.0.1".into()),
        sasl: SaslConfig::Anonymous,
        ..Default::default()
    }
}

fn sender_attach(name: &str, snd: SenderSettleMode, rcv: ReceiverSettleMode) -> Attach {
    let mut a = Attach::new(name.to_string(), 0, Role::Sender);
    a.snd_settle_mode = snd;
    a.rcv_settle_mode = rcv;
    a.source = Some(Source { address: Some(format!("{name}-source")), ..Default::default() });
    a.target = Some(Target { address: Some("q".into()), ..Default::default() });
    a
}

fn receiver_attach(name: &str) -> Attach {
    let mut a = Attach::new(name.to_string(), 0, Role::Receiver);
    a.source = Some(Source { address: Some("q".into()), ..Default::default() });
    a.target = Some(Target { address: Some(format!("{name}-target")), ..Default::default() });
    a
}

/// Sets up an initiator against a fe2o3 acceptor whose server side is `server`.
async fn initiator_against<F, Fut, T>(
    cfg: ConnectionConfig,
    acceptor_idle_ms: Option<u32>,
    server: F,
) -> (Peer, tokio::task::JoinHandle<T>)
where
    F: FnOnce(fe2o3_amqp::acceptor::ListenerSessionHandle, fe2o3_amqp::acceptor::ListenerConnectionHandle) -> Fut
        + Send
        + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut builder = ConnectionAcceptor::builder().container_id("fe2o3-acceptor").max_frame_size(512u32);
        if let Some(ms) = acceptor_idle_ms {
            builder = builder.idle_time_out(ms);
        }
        let acceptor = builder.sasl_acceptor(SaslAnonymousMechanism::new()).build();
        let mut conn = acceptor.accept(stream).await.unwrap();
        let session = SessionAcceptor::new().accept(&mut conn).await.unwrap();
        server(session, conn).await
    });
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut p = Peer::new(ConnectionRole::Initiator, cfg, stream);
    p.until(|e| matches!(e, Event::Opened(_)).then_some(())).await;
    (p, server)
}

async fn begin(p: &mut Peer) -> u16 {
    let ch = p.conn.begin().unwrap();
    p.until(|e| matches!(e, Event::SessionBegun { .. }).then_some(())).await;
    ch
}

async fn attach(p: &mut Peer, ch: u16, a: Attach) -> (LinkId, Box<Attach>) {
    let id = p.conn.attach(ch, a).unwrap();
    p.until(|e| match e {
        Event::Attached { link, attach } if link == id => Some((link, attach)),
        _ => None,
    })
    .await
}

/// Our sender links into fe2o3's receivers: unsettled (fe2o3 accepts, we get dispositions),
/// pre-settled, receiver-settle-mode second (we settle after fe2o3's outcome), and a 64 KiB
/// message split over 512-byte frames.
#[tokio::test]
async fn initiator_sends_to_fe2o3_acceptor_in_every_settle_mode() {
    bounded(async {
        let (mut p, server) = initiator_against(initiator_config(), None, |mut session, conn| async move {
            let acceptor = LinkAcceptor::builder().build();
            let mut all = Vec::new();
            for count in [100usize, 100, 10, 2] {
                let LinkEndpoint::Receiver(mut rx) = acceptor.accept(&mut session).await.unwrap() else {
                    panic!("expected our sender")
                };
                for _ in 0..count {
                    let d = rx.recv::<String>().await.unwrap();
                    all.push(d.body().clone());
                    rx.accept(&d).await.unwrap();
                }
                // fe2o3 detaches once it has everything (it alone knows when pre-settled
                // deliveries have all arrived).
                rx.close().await.unwrap();
            }
            drop(conn);
            all
        })
        .await;
        let ch = begin(&mut p).await;
        let big = "z".repeat(64 * 1024);
        let plans: [(&str, SenderSettleMode, ReceiverSettleMode, usize); 4] = [
            ("unsettled", SenderSettleMode::Unsettled, ReceiverSettleMode::First, 100),
            ("settled", SenderSettleMode::Settled, ReceiverSettleMode::First, 100),
            ("second", SenderSettleMode::Unsettled, ReceiverSettleMode::Second, 10),
            ("big", SenderSettleMode::Unsettled, ReceiverSettleMode::First, 2),
        ];
        let mut expected = Vec::new();
        for (name, snd, rcv, count) in plans {
            let (link, reply) = attach(&mut p, ch, sender_attach(name, snd, rcv)).await;
            assert_eq!(reply.role, Role::Receiver);
            let settled = snd == SenderSettleMode::Settled;
            let mut outcomes = 0;
            for i in 0..count {
                let text = if name == "big" { big.clone() } else { format!("{name}-{i}") };
                p.wait_credit(link, 1).await;
                let tag = (i as u32).to_be_bytes();
                p.conn.send(link, SendArgs { tag: &tag, message_format: 0, settled }, &encode_text(&text)).unwrap();
                expected.push(text);
            }
            p.flush().await;
            while !settled && outcomes < count {
                match p.next().await.unwrap() {
                    Event::Disposition { channel, role: Role::Receiver, first, last, settled: peer_settled, state } => {
                        assert_eq!(state, Some(DeliveryState::Accepted));
                        if rcv == ReceiverSettleMode::Second {
                            assert!(!peer_settled, "mode second: the receiver leaves settling to us");
                            p.conn.disposition(channel, Role::Sender, first, last, true, state).unwrap();
                        }
                        outcomes += (last.wrapping_sub(first) + 1) as usize;
                    }
                    Event::Detached { error, .. } => panic!("fe2o3 detached {name}: {error:?}"),
                    _ => {}
                }
            }
            p.until(|e| matches!(e, Event::Detached { link: l, remote: true, .. } if l == link).then_some(())).await;
        }
        p.conn.close(None);
        p.flush().await;
        let all = server.await.unwrap();
        assert_eq!(all, expected);
    })
    .await;
}

/// fe2o3's sender link into our receiver: it sends only as far as our credit, multi-frame
/// messages reassemble, we accept, and its `send` calls complete with our outcome.
#[tokio::test]
async fn initiator_receives_from_fe2o3_acceptor() {
    bounded(async {
        let big = "q".repeat(10_000);
        let big2 = big.clone();
        let (mut p, server) = initiator_against(initiator_config(), None, move |mut session, mut conn| async move {
            let acceptor = LinkAcceptor::builder().build();
            let LinkEndpoint::Sender(mut tx) = acceptor.accept(&mut session).await.unwrap() else {
                panic!("expected our receiver")
            };
            for i in 0..200 {
                let body = if i % 50 == 0 { big2.clone() } else { format!("m{i}") };
                let outcome = tx.send(FMessage::from(body)).await.unwrap();
                assert!(matches!(outcome, Outcome::Accepted(_)));
            }
            tx.close().await.unwrap();
            conn.on_close().await
        })
        .await;
        let ch = begin(&mut p).await;
        let (link, reply) = attach(&mut p, ch, receiver_attach("rx")).await;
        assert_eq!(reply.role, Role::Sender);
        // Credit in small steps: fe2o3 must stop at each limit.
        p.conn.flow(link, 7).unwrap();
        let mut got = Vec::new();
        while got.len() < 200 {
            match p.next().await.unwrap() {
                Event::Delivery(d) => {
                    assert!(!d.settled);
                    got.push(text_of(&d));
                    p.conn.accept_delivery(&d).unwrap();
                    assert!(p.conn.link(link).unwrap().credit <= 7);
                    p.conn.top_up_credit(link, 7).unwrap();
                }
                Event::Detached { error, .. } => panic!("fe2o3 detached: {error:?}"),
                _ => {}
            }
        }
        p.until(|e| matches!(e, Event::Detached { remote: true, .. }).then_some(())).await;
        p.conn.close(None);
        p.flush().await;
        p.until(|e| matches!(e, Event::Closed { error: None }).then_some(())).await;
        // fe2o3 reports a peer's clean close as `RemoteClosed` (no error attached).
        let close = format!("{:?}", server.await.unwrap());
        assert_eq!(close, "Err(RemoteClosed)");
        for (i, g) in got.iter().enumerate() {
            if i % 50 == 0 {
                assert_eq!(*g, big);
            } else {
                assert_eq!(*g, format!("m{i}"));
            }
        }
    })
    .await;
}

/// fe2o3's acceptor detaches our link with an error and then closes the connection with one:
/// both reach us intact. Its 300 ms idle timeout is honoured by our heartbeats meanwhile.
#[tokio::test]
async fn initiator_sees_fe2o3_errors_and_heartbeats_for_it() {
    bounded(async {
        let cfg = ConnectionConfig { idle_timeout: Some(Duration::from_millis(300)), ..initiator_config() };
        let (mut p, server) = initiator_against(cfg, Some(300), |mut session, mut conn| async move {
            let acceptor = LinkAcceptor::builder().build();
            let LinkEndpoint::Receiver(rx) = acceptor.accept(&mut session).await.unwrap() else {
                panic!("expected our sender")
            };
            // Quiet for 1.5 s: five of our idle timeouts, five of fe2o3's.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            rx.close_with_error(fe2o3_error("amqp:resource-limit-exceeded", "too many links")).await.unwrap();
            conn.close_with_error(fe2o3_error("amqp:connection:forced", "maintenance")).await
        })
        .await;
        assert_eq!(p.conn.remote_open().unwrap().idle_time_out, Some(300));
        let ch = begin(&mut p).await;
        let (link, _) =
            attach(&mut p, ch, sender_attach("tx", SenderSettleMode::Unsettled, ReceiverSettleMode::First)).await;
        let e = p
            .until(|e| match e {
                Event::Detached { link: l, error, remote: true, .. } if l == link => Some(error),
                _ => None,
            })
            .await
            .expect("detach carried an error");
        assert_eq!(e.condition.as_str(), "amqp:resource-limit-exceeded");
        assert_eq!(e.description.as_deref(), Some("too many links"));
        let closed = loop {
            match p.next().await {
                Ok(Event::Closed { error }) => break error,
                Ok(_) => {}
                Err(EndpointError::RemoteClosed(e)) => break Some(e),
                Err(e) => panic!("{e}"),
            }
        };
        let closed = closed.expect("close carried an error");
        assert_eq!(closed.condition.as_str(), "amqp:connection:forced");
        assert_eq!(closed.description.as_deref(), Some("maintenance"));
        let _ = server.await.unwrap();
    })
    .await;
}
