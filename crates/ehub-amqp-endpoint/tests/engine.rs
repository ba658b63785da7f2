//! The sans-IO engine on its own: two `Connection`s exchanging bytes in memory, and hand-made
//! hostile input. No sockets and no clock: time is passed in, so timeouts are exact.

use bytes::{Bytes, BytesMut};
use ehub_amqp_codec::{
    encode_frame, Attach, Begin, DeliveryState, Flow, Open, Performative, Role, Source, Target, Transfer, AMQP_HEADER,
};
use ehub_amqp_endpoint::{
    condition, AttachReply, Connection, ConnectionConfig, ConnectionRole, EndpointError, Event, LinkId, SaslConfig,
    SendArgs,
};
use std::time::{Duration, Instant};

struct Pair {
    client: Connection,
    server: Connection,
    client_events: Vec<Event>,
    server_events: Vec<Event>,
    now: Instant,
}

impl Pair {
    fn new(client: ConnectionConfig, server: ConnectionConfig) -> Pair {
        let now = Instant::now();
        let mut p = Pair {
            client: Connection::new(ConnectionRole::Initiator, client, now),
            server: Connection::new(ConnectionRole::Acceptor, server, now),
            client_events: Vec::new(),
            server_events: Vec::new(),
            now,
        };
        p.pump();
        p
    }

    fn plain() -> Pair {
        Pair::new(ConnectionConfig::default(), ConnectionConfig::default())
    }

    /// Moves bytes both ways until neither side has output; collects events.
    fn pump(&mut self) {
        for _ in 0..64 {
            let mut c2s = self.client.output().split();
            let mut s2c = self.server.output().split();
            if c2s.is_empty() && s2c.is_empty() {
                return;
            }
            self.server.feed(&mut c2s, self.now).unwrap();
            self.client.feed(&mut s2c, self.now).unwrap();
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            while let Some(e) = self.server.poll_event() {
                self.server_events.push(e);
            }
        }
        panic!("the two ends never went quiet");
    }

    /// A session and a link from client (in `role`) to server, accepted by the server.
    fn link(&mut self, role: Role) -> (LinkId, LinkId) {
        let ch = self.client.begin().unwrap();
        self.pump();
        self.link_on(ch, "l", role)
    }

    /// A link named `name` on the client's session `ch`, accepted by the server.
    fn link_on(&mut self, ch: u16, name: &str, role: Role) -> (LinkId, LinkId) {
        let mut a = Attach::new(name.to_string(), 0, role);
        a.source = Some(Source { address: Some("src".into()), ..Default::default() });
        a.target = Some(Target { address: Some("dst".into()), ..Default::default() });
        let c = self.client.attach(ch, a).unwrap();
        self.pump();
        let s = self
            .server_events
            .drain(..)
            .find_map(|e| match e {
                Event::AttachRequested { link, attach } => Some((link, attach)),
                _ => None,
            })
            .expect("attach requested");
        let reply = AttachReply { source: s.1.source.clone(), target: s.1.target.clone(), ..Default::default() };
        self.server.accept_link(s.0, reply).unwrap();
        self.pump();
        assert!(self.client_events.iter().any(|e| matches!(e, Event::Attached { link, .. } if *link == c)));
        (c, s.0)
    }

    /// A client sender link with `credit` from the server, the flow delivered.
    fn credited_sender(&mut self, credit: u32) -> (LinkId, LinkId) {
        let (c, s) = self.link(Role::Sender);
        self.server.flow(s, credit).unwrap();
        self.pump();
        (c, s)
    }

    /// A client sender link whose detach (sent, not yet delivered) the server answers only after
    /// `delay`.
    fn detached_with_held_answer(&mut self, delay: Duration) -> (LinkId, LinkId) {
        let (c, s) = self.link(Role::Sender);
        self.server.delay_detach_reply(s, delay);
        self.client.detach(c, None).unwrap();
        (c, s)
    }

    fn deliveries(events: &mut Vec<Event>) -> Vec<ehub_amqp_endpoint::Delivery> {
        let mut out = Vec::new();
        events.retain(|e| match e {
            Event::Delivery(d) => {
                out.push(d.clone());
                false
            }
            _ => true,
        });
        out
    }
}

fn send(conn: &mut Connection, link: LinkId, tag: u32, payload: &[u8]) -> Result<u32, EndpointError> {
    conn.send(link, SendArgs { tag: &tag.to_be_bytes(), message_format: 0, settled: false }, payload)
}

/// Feeds raw bytes to a fresh acceptor that has seen a valid header and open; returns the
/// result and the condition of the close it wrote.
fn hostile(cfg: ConnectionConfig, frames: impl FnOnce(&mut BytesMut)) -> (Result<(), EndpointError>, Option<String>) {
    let now = Instant::now();
    let mut server = Connection::new(ConnectionRole::Acceptor, cfg, now);
    let mut input = BytesMut::new();
    input.extend_from_slice(&AMQP_HEADER);
    encode_frame(&mut input, 0, &Performative::Open(Open { container_id: "x".into(), ..Default::default() }), &[])
        .unwrap();
    frames(&mut input);
    let r = server.feed(&mut input, now);
    // Decode what the server wrote back: header, open, maybe a close.
    let mut out = server.output().split();
    let _ = out.split_to(8);
    let mut condition = None;
    while let Some(f) = ehub_amqp_codec::decode_frame(&mut out, u32::MAX).unwrap() {
        if let ehub_amqp_codec::FrameBody::Amqp(Performative::Close(c), _) = f.body {
            condition = c.error.map(|e| e.condition.as_str().to_string());
        }
    }
    assert!(server.is_done() || r.is_ok());
    (r, condition)
}

#[test]
fn open_begin_attach_and_settled_transfer_round_trip() {
    let mut p = Pair::plain();
    assert!(p.client.remote_open().is_some() && p.server.remote_open().is_some());
    let (c, _) = p.credited_sender(10);
    assert_eq!(p.client.credit(c), 10);
    let id = send(&mut p.client, c, 1, b"hello").unwrap();
    p.pump();
    let d = Pair::deliveries(&mut p.server_events);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].delivery_id, &d[0].payload[..], d[0].settled), (id, &b"hello"[..], false));
    p.server.accept_delivery(&d[0]).unwrap();
    p.pump();
    assert!(p.client_events.iter().any(|e| matches!(e,
        Event::Disposition { role: Role::Receiver, first, last, settled: true, state: Some(DeliveryState::Accepted), .. }
            if *first == id && *last == id)));
    assert_eq!(p.client.credit(c), 9);
    assert_eq!(p.client.link(c).unwrap().delivery_count, 1);
}

/// Delivery ids are per direction: what the peer numbers its transfers must not move our own
/// sequence. Once it did, and a client that sent, then received a reply (a management
/// response), reused the id of a send still awaiting its outcome.
#[test]
fn incoming_delivery_ids_do_not_move_our_outgoing_sequence() {
    let mut p = Pair::plain();
    let ch = p.client.begin().unwrap();
    p.pump();
    let (client_out, server_in) = p.link_on(ch, "out", Role::Sender);
    let (client_in, server_out) = p.link_on(ch, "in", Role::Receiver);
    p.server.flow(server_in, 10).unwrap();
    p.client.flow(client_in, 10).unwrap();
    p.pump();
    let ours: Vec<u32> = (0..3).map(|i| send(&mut p.client, client_out, i, b"send").unwrap()).collect();
    assert_eq!(ours, vec![0, 1, 2]);
    p.pump();
    // The peer's first transfer on this session carries its delivery-id 0.
    assert_eq!(send(&mut p.server, server_out, 9, b"reply").unwrap(), 0);
    p.pump();
    assert_eq!(Pair::deliveries(&mut p.client_events).len(), 1);
    assert_eq!(send(&mut p.client, client_out, 3, b"send").unwrap(), 3, "our sequence continues");
    p.pump();
    let ids: Vec<u32> = Pair::deliveries(&mut p.server_events).iter().map(|d| d.delivery_id).collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
}

#[test]
fn a_burst_sends_in_a_row_until_credit_runs_out_and_only_on_an_attached_sender() {
    let mut p = Pair::plain();
    let (c, _) = p.credited_sender(3);
    let mut burst = p.client.burst(c).unwrap();
    let mut ids = Vec::new();
    for tag in 0u32..5 {
        if !burst.can_send(4, 5) {
            break;
        }
        let args = SendArgs { tag: &tag.to_be_bytes(), message_format: 0, settled: true };
        ids.push(burst.send_with(args, 5, |out| out.extend_from_slice(format!("ev-{tag}").as_bytes())).unwrap());
    }
    assert_eq!(burst.credit(), 0);
    let args = SendArgs { tag: b"x", message_format: 0, settled: true };
    assert!(matches!(burst.send_with(args, 1, |_| {}), Err(EndpointError::IllegalState(_))));
    assert_eq!(ids, [0, 1, 2], "consecutive delivery ids");
    p.pump();
    let got = Pair::deliveries(&mut p.server_events);
    let payloads: Vec<&[u8]> = got.iter().map(|d| &d.payload[..]).collect();
    assert_eq!(payloads, [&b"ev-0"[..], b"ev-1", b"ev-2"]);
    assert_eq!(p.client.link(c).unwrap().delivery_count, 3);
    // The server's end of that link receives: no burst there.
    let (_, receiver) = p.credited_sender(1);
    assert!(matches!(p.server.burst(receiver), Err(EndpointError::IllegalState(_))));
}

#[test]
fn a_delivery_tag_beyond_32_bytes_is_refused_and_costs_no_credit() {
    let mut p = Pair::plain();
    let (c, _) = p.credited_sender(1);
    let long = SendArgs { tag: &[7u8; 33], message_format: 0, settled: false };
    assert!(matches!(p.client.send(c, long, b"x"), Err(EndpointError::IllegalState(_))));
    assert_eq!(p.client.credit(c), 1, "the refused send took no credit");
    let longest = SendArgs { tag: &[7u8; 32], message_format: 0, settled: false };
    p.client.send(c, longest, b"x").unwrap();
    p.pump();
    let got = Pair::deliveries(&mut p.server_events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tag.as_bytes(), &[7u8; 32][..]);
}

#[test]
fn a_received_delivery_tag_beyond_32_bytes_is_an_invalid_field() {
    let mut p = Pair::plain();
    let (c, _) = p.credited_sender(2);
    // Both the short transfer shape (the engine's fast reader) and one with a state set (the
    // generic decoder) carry a 33-byte tag.
    for state in [None, Some(DeliveryState::Accepted)] {
        let mut q = Pair::plain();
        let (qc, qs) = q.link(Role::Sender);
        q.server.flow(qs, 2).unwrap();
        q.pump();
        let t = Transfer {
            handle: qc.handle,
            delivery_id: Some(0),
            delivery_tag: Some(Bytes::from(vec![7u8; 33])),
            message_format: Some(0),
            state,
            ..Default::default()
        };
        let mut raw = BytesMut::new();
        encode_frame(&mut raw, qc.channel, &Performative::Transfer(t), b"x").unwrap();
        match q.server.feed(&mut raw, q.now) {
            Err(EndpointError::Protocol(e)) => assert_eq!(e.condition.as_str(), condition::INVALID_FIELD),
            other => panic!("expected invalid-field, got {other:?}"),
        }
    }
    // A 32-byte tag in the short shape arrives whole.
    p.client.send(c, SendArgs { tag: &[9u8; 32], message_format: 0, settled: true }, b"y").unwrap();
    p.pump();
    let got = Pair::deliveries(&mut p.server_events);
    assert_eq!((got.len(), got[0].tag.as_bytes()), (1, &[9u8; 32][..]));
}

#[test]
fn sender_stops_at_credit_and_resumes_when_topped_up() {
    let mut p = Pair::plain();
    let (c, s) = p.credited_sender(3);
    for i in 0..3 {
        send(&mut p.client, c, i, b"x").unwrap();
    }
    assert!(matches!(send(&mut p.client, c, 9, b"x"), Err(EndpointError::IllegalState(_))));
    p.pump();
    assert_eq!(Pair::deliveries(&mut p.server_events).len(), 3);
    // Below half of a window of 6: a top-up sends a flow; at or above half it does not.
    assert!(p.server.top_up_credit(s, 6).unwrap());
    assert!(!p.server.top_up_credit(s, 6).unwrap());
    p.pump();
    assert_eq!(p.client.credit(c), 6);
}

#[test]
fn drain_consumes_the_remaining_credit() {
    let mut p = Pair::plain();
    let (c, s) = p.credited_sender(5);
    send(&mut p.client, c, 0, b"x").unwrap();
    p.client.drain_complete(c).unwrap();
    p.pump();
    assert_eq!(p.client.credit(c), 0);
    assert_eq!(p.client.link(c).unwrap().delivery_count, 5);
    // The receiver sees the advanced delivery count and has no credit left outstanding.
    assert_eq!(p.server.link(s).unwrap().delivery_count, 5);
    assert_eq!(p.server.link(s).unwrap().credit, 0);
}

#[test]
fn multi_frame_delivery_reassembles_and_counts_once() {
    let cfg = ConnectionConfig { max_frame_size: 512, ..Default::default() };
    let mut p = Pair::new(cfg.clone(), cfg);
    let (c, _) = p.credited_sender(10);
    let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    send(&mut p.client, c, 1, &big).unwrap();
    let frames = p.client.output().len() / 512;
    assert!(frames >= 19, "split into at least 20 frames of 512 bytes");
    send(&mut p.client, c, 2, b"small").unwrap();
    p.pump();
    let d = Pair::deliveries(&mut p.server_events);
    assert_eq!(d.len(), 2);
    assert_eq!(&d[0].payload[..], &big[..]);
    assert_eq!(d[0].size, 10_000);
    assert_eq!(&d[1].payload[..], b"small");
    // One transfer counts once against credit and delivery count, however many frames.
    assert_eq!(p.client.credit(c), 8);
}

#[test]
fn send_with_takes_the_size_from_what_was_written_within_the_bound() {
    let cfg = ConnectionConfig { max_frame_size: 512, ..Default::default() };
    let mut p = Pair::new(cfg.clone(), cfg);
    let (c, _) = p.credited_sender(10);
    let args = |tag: &'static [u8]| SendArgs { tag, message_format: 0, settled: false };
    // A bound that fits one frame, and less written: one frame of the written size.
    p.client.send_with(c, args(b"1"), 300, |out| out.extend_from_slice(b"spliced")).unwrap();
    // A bound beyond one frame: assembled first, then cut (here into one frame, as it is short).
    p.client.send_with(c, args(b"2"), 5_000, |out| out.extend_from_slice(&[7u8; 100])).unwrap();
    // Written and bound both beyond one frame: several frames.
    let big: Vec<u8> = (0..2_000u32).map(|i| i as u8).collect();
    p.client.send_with(c, args(b"3"), 2_000, |out| out.extend_from_slice(&big)).unwrap();
    p.pump();
    let d = Pair::deliveries(&mut p.server_events);
    assert_eq!(d.len(), 3);
    assert_eq!(&d[0].payload[..], b"spliced");
    assert_eq!(&d[1].payload[..], &[7u8; 100][..]);
    assert_eq!(&d[2].payload[..], &big[..]);
    assert_eq!(p.client.credit(c), 7);
}

#[test]
fn senders_stop_at_the_peers_session_window_and_resume_on_its_flow() {
    let server_cfg = ConnectionConfig { session_window: 4, ..Default::default() };
    let mut p = Pair::new(ConnectionConfig::default(), server_cfg);
    let (c, _) = p.credited_sender(100);
    assert_eq!(p.client.session_send_window(c.channel), 4);
    for tag in 0..4 {
        assert!(p.client.can_send(c, 4, 5));
        send(&mut p.client, c, tag, b"event").unwrap();
    }
    // Credit is left, the window is not: refused before anything changes.
    assert!(!p.client.can_send(c, 4, 5));
    assert!(matches!(send(&mut p.client, c, 9, b"event"), Err(EndpointError::IllegalState(_))));
    assert_eq!(p.client.credit(c), 96);
    // The server takes the four and reopens its window; the client hears of it as a link flow.
    p.pump();
    assert_eq!(Pair::deliveries(&mut p.server_events).len(), 4);
    assert!(p.client_events.iter().any(|e| matches!(e, Event::LinkFlow { link } if *link == c)));
    assert!(p.client.can_send(c, 4, 5));
    send(&mut p.client, c, 10, b"event").unwrap();
    p.pump();
    assert_eq!(Pair::deliveries(&mut p.server_events).len(), 1);
}

#[test]
fn oversized_delivery_is_flagged_and_not_buffered() {
    let server = ConnectionConfig { max_message_size: 1000, ..Default::default() };
    let mut p = Pair::new(ConnectionConfig::default(), server);
    let (c, _) = p.credited_sender(10);
    send(&mut p.client, c, 1, &[7u8; 5000]).unwrap();
    send(&mut p.client, c, 2, &[7u8; 1000]).unwrap();
    p.pump();
    let d = Pair::deliveries(&mut p.server_events);
    assert!(d[0].oversized && d[0].payload.is_empty() && d[0].size == 5000);
    assert!(!d[1].oversized && d[1].payload.len() == 1000);
}

#[test]
fn detach_end_and_close_carry_errors_to_the_peer() {
    let mut p = Pair::plain();
    let (c, s) = p.link(Role::Receiver);
    p.server.detach(s, Some(ehub_amqp_codec::Error::new("amqp:link:stolen", "new owner"))).unwrap();
    p.pump();
    assert!(p.client_events.iter().any(|e| matches!(e,
        Event::Detached { link, remote: true, error: Some(err), closed: true } if *link == c && err.condition.as_str() == "amqp:link:stolen")));
    // The client answered: the server sees its own detach completed.
    assert!(p.server_events.iter().any(|e| matches!(e, Event::Detached { remote: false, .. })));
    assert!(p.client.link(c).is_none());

    let ch = c.channel;
    p.client.end(ch, Some(ehub_amqp_codec::Error::new("amqp:internal-error", "bye session"))).unwrap();
    p.pump();
    assert!(p.server_events.iter().any(|e| matches!(e, Event::SessionEnded { error: Some(_), .. })));

    p.server.close(Some(ehub_amqp_codec::Error::new(condition::CONNECTION_FORCED, "maintenance")));
    let mut s2c = p.server.output().split();
    let r = p.client.feed(&mut s2c, p.now);
    match r {
        Err(EndpointError::RemoteClosed(e)) => assert_eq!(e.description.as_deref(), Some("maintenance")),
        other => panic!("expected the remote close, got {other:?}"),
    }
    assert!(p.client.is_done());
    // The client answered the close.
    let mut c2s = p.client.output().split();
    p.server.feed(&mut c2s, p.now).unwrap();
    assert!(p.server.is_done());
}

#[test]
fn a_held_detach_answer_is_not_sent_when_the_peer_ends_the_session() {
    let mut p = Pair::plain();
    let (c, s) = p.detached_with_held_answer(Duration::from_millis(5));
    let mut c2s = p.client.output().split();
    p.server.feed(&mut c2s, p.now).unwrap();
    // An empty frame goes back at once, so a peer using Nagle's algorithm gets its TCP
    // acknowledgement and sends its `end`.
    assert_eq!(&p.server.output()[..], &[0, 0, 0, 8, 2, 0, 0, 0]);
    p.pump();
    // The server has let the link go, but the client has no answer yet.
    assert!(p.server_events.iter().any(|e| matches!(e, Event::Detached { link, remote: true, .. } if *link == s)));
    assert!(!p.client_events.iter().any(|e| matches!(e, Event::Detached { .. })));
    assert_eq!(p.server.next_timeout(), Some(p.now + Duration::from_millis(5)));
    // The client ends the session at once (fe2o3 under the Rust SDK does): the end answers it.
    p.client.end(c.channel, None).unwrap();
    p.pump();
    assert!(p.client_events.iter().any(|e| matches!(e, Event::SessionEnded { error: None, .. })));
    assert!(!p.client_events.iter().any(|e| matches!(e, Event::Detached { .. })));
    assert_eq!(p.server.next_timeout(), None, "nothing is held any more");
    p.server.handle_timeout(p.now + Duration::from_millis(10)).unwrap();
    assert!(p.server.output().is_empty(), "the dropped answer is never written");
}

#[test]
fn a_held_detach_answer_is_dropped_when_the_peer_closes_the_connection() {
    let mut p = Pair::plain();
    p.detached_with_held_answer(Duration::from_millis(5));
    p.pump();
    p.client.close(None);
    let mut c2s = p.client.output().split();
    p.server.feed(&mut c2s, p.now).unwrap();
    let mut out = p.server.output().split();
    let mut performatives = Vec::new();
    while let Some(f) = ehub_amqp_codec::decode_frame(&mut out, u32::MAX).unwrap() {
        if let ehub_amqp_codec::FrameBody::Amqp(perf, _) = f.body {
            performatives.push(perf);
        }
    }
    assert!(matches!(performatives.as_slice(), [Performative::Close(_)]), "{performatives:?}");
    assert_eq!(p.server.next_timeout(), None);
}

#[test]
fn a_held_detach_answer_goes_out_when_due_and_before_any_later_frame_on_its_session() {
    let mut p = Pair::plain();
    let (c, _) = p.detached_with_held_answer(Duration::from_millis(5));
    p.pump();
    p.server.handle_timeout(p.now + Duration::from_millis(4)).unwrap();
    p.pump();
    assert!(!p.client_events.iter().any(|e| matches!(e, Event::Detached { .. })), "not due yet");
    p.server.handle_timeout(p.now + Duration::from_millis(5)).unwrap();
    p.pump();
    assert!(p.client_events.iter().any(|e| matches!(e, Event::Detached { link, remote: false, .. } if *link == c)));

    // Held again, then the server writes something else on the session: the answer goes first.
    let (c2, s2) = p.detached_with_held_answer(Duration::from_secs(60));
    p.pump();
    p.client_events.clear();
    p.server.disposition(s2.channel, Role::Receiver, 0, 0, true, None).unwrap();
    p.pump();
    let detached = p.client_events.iter().position(|e| matches!(e, Event::Detached { link, .. } if *link == c2));
    let disposition = p.client_events.iter().position(|e| matches!(e, Event::Disposition { .. }));
    assert!(detached.is_some() && disposition.is_some() && detached < disposition, "{:?}", p.client_events);
}

#[test]
fn heartbeats_are_sent_and_silence_times_out() {
    let client = ConnectionConfig { idle_timeout: Some(Duration::from_secs(10)), ..Default::default() };
    let mut p = Pair::new(client, ConnectionConfig::default());
    // The client advertises half its threshold: the server must send something every 2.5 s.
    assert_eq!(p.server.remote_open().unwrap().idle_time_out, Some(5000));
    let t0 = p.now;
    let due = p.server.next_timeout().expect("server has a heartbeat deadline");
    assert_eq!(due, t0 + Duration::from_millis(2500));
    p.server.handle_timeout(due).unwrap();
    assert_eq!(&p.server.output()[..], &[0, 0, 0, 8, 2, 0, 0, 0], "an empty frame");
    let mut hb = p.server.output().split();
    p.client.feed(&mut hb, due).unwrap();
    // The client heard something at `due`: its deadline moves to due + 10 s.
    assert_eq!(p.client.next_timeout(), Some(due + Duration::from_secs(10)));
    assert!(p.client.handle_timeout(due + Duration::from_millis(9_999)).is_ok());
    let r = p.client.handle_timeout(due + Duration::from_secs(10));
    assert!(matches!(r, Err(EndpointError::IdleTimeout(_))));
    assert!(p.client.is_done());
}

#[test]
fn sasl_anonymous_plain_and_refusal() {
    let server = ConnectionConfig {
        sasl: SaslConfig::Server { mechanisms: vec!["ANONYMOUS".into()], allow_no_sasl: false },
        ..Default::default()
    };
    let p = Pair::new(ConnectionConfig { sasl: SaslConfig::Anonymous, ..Default::default() }, server.clone());
    assert!(p
        .server_events
        .iter()
        .any(|e| matches!(e, Event::SaslInit { mechanism, .. } if mechanism.as_str() == "ANONYMOUS")));
    assert!(p.client.remote_open().is_some());

    // PLAIN is not offered: the client gives up with a SASL error.
    let now = Instant::now();
    let plain = SaslConfig::Plain { username: "u".into(), password: "p".into() };
    let mut client =
        Connection::new(ConnectionRole::Initiator, ConnectionConfig { sasl: plain, ..Default::default() }, now);
    let mut server = Connection::new(ConnectionRole::Acceptor, server.clone(), now);
    server.feed(&mut client.output().split(), now).unwrap();
    let r = client.feed(&mut server.output().split(), now);
    assert!(matches!(r, Err(EndpointError::Sasl(_))), "{r:?}");

    // A client skipping the required SASL layer is refused.
    let mut server = Connection::new(ConnectionRole::Acceptor, server_cfg_sasl_required(), now);
    let mut input = BytesMut::from(&AMQP_HEADER[..]);
    assert!(matches!(server.feed(&mut input, now), Err(EndpointError::Sasl(_))));
}

fn server_cfg_sasl_required() -> ConnectionConfig {
    ConnectionConfig {
        sasl: SaslConfig::Server { mechanisms: vec!["ANONYMOUS".into()], allow_no_sasl: false },
        ..Default::default()
    }
}

#[test]
fn oversized_frame_is_a_framing_error_before_allocation() {
    let cfg = ConnectionConfig { max_frame_size: 1024, ..Default::default() };
    let (r, cond) = hostile(cfg, |b| {
        // A frame header announcing 4 GiB.
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0]);
    });
    assert!(r.is_err());
    assert_eq!(cond.as_deref(), Some(condition::FRAMING_ERROR));
}

#[test]
fn frame_sizes_below_the_header_are_a_decode_error_not_a_panic() {
    // Found by the acceptor fuzz target: the fast transfer reader sliced before checking.
    for size in 0u8..8 {
        let (r, cond) = hostile(ConnectionConfig::default(), |b| {
            b.extend_from_slice(&[0, 0, 0, size, 2, 0, 0, 0, 0x00, 0x53, 0x14, 0x45]);
        });
        assert!(r.is_err(), "size {size}");
        assert_eq!(cond.as_deref(), Some(condition::DECODE_ERROR), "size {size}");
    }
}

#[test]
fn garbage_performative_is_a_decode_error() {
    let (r, cond) = hostile(ConnectionConfig::default(), |b| {
        b.extend_from_slice(&[0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x99, 0x45]);
    });
    assert!(r.is_err());
    assert_eq!(cond.as_deref(), Some(condition::DECODE_ERROR));
}

#[test]
fn channel_and_handle_limits_are_enforced() {
    let cfg = ConnectionConfig { channel_max: 3, handle_max: 7, ..Default::default() };
    let (_, cond) = hostile(cfg.clone(), |b| {
        encode_frame(
            b,
            9,
            &Performative::Begin(Begin { incoming_window: 10, outgoing_window: 10, ..Default::default() }),
            &[],
        )
        .unwrap();
    });
    assert_eq!(cond.as_deref(), Some(condition::NOT_ALLOWED));
    let (_, cond) = hostile(cfg, |b| {
        encode_frame(
            b,
            0,
            &Performative::Begin(Begin { incoming_window: 10, outgoing_window: 10, ..Default::default() }),
            &[],
        )
        .unwrap();
        encode_frame(b, 0, &Performative::Attach(Box::new(Attach::new("x".to_string(), 8, Role::Sender))), &[])
            .unwrap();
    });
    assert_eq!(cond.as_deref(), Some(condition::NOT_ALLOWED));
}

#[test]
fn transfer_without_credit_or_beyond_window_is_refused() {
    fn setup(b: &mut BytesMut, window: u32) {
        encode_frame(
            b,
            0,
            &Performative::Begin(Begin { incoming_window: 10, outgoing_window: window, ..Default::default() }),
            &[],
        )
        .unwrap();
        let mut a = Attach::new("x".to_string(), 0, Role::Sender);
        a.initial_delivery_count = Some(0);
        encode_frame(b, 0, &Performative::Attach(Box::new(a)), &[]).unwrap();
    }
    let transfer = |id: u32| {
        Performative::Transfer(Transfer {
            handle: 0,
            delivery_id: Some(id),
            delivery_tag: Some(Bytes::from_static(b"t")),
            message_format: Some(0),
            ..Default::default()
        })
    };
    // No flow was ever granted.
    let (_, cond) = hostile(ConnectionConfig::default(), |b| {
        setup(b, 10);
        encode_frame(b, 0, &transfer(0), b"payload").unwrap();
    });
    assert_eq!(cond.as_deref(), Some(condition::TRANSFER_LIMIT_EXCEEDED));
    // A session window of 2 frames, and three frames sent.
    let cfg = ConnectionConfig { session_window: 2, ..Default::default() };
    let (_, cond) = hostile(cfg, |b| {
        setup(b, 10);
        for i in 0..3 {
            encode_frame(b, 0, &transfer(i), b"p").unwrap();
        }
    });
    // The first transfer already lacks credit; either way the peer is told precisely.
    assert!(matches!(cond.as_deref(), Some(condition::TRANSFER_LIMIT_EXCEEDED | condition::WINDOW_VIOLATION)));
}

#[test]
fn frames_before_open_and_on_unknown_handles_are_refused() {
    let now = Instant::now();
    let mut server = Connection::new(ConnectionRole::Acceptor, ConnectionConfig::default(), now);
    let mut input = BytesMut::from(&AMQP_HEADER[..]);
    encode_frame(&mut input, 0, &Performative::Begin(Begin::default()), &[]).unwrap();
    assert!(server.feed(&mut input, now).is_err());

    let (_, cond) = hostile(ConnectionConfig::default(), |b| {
        encode_frame(
            b,
            0,
            &Performative::Begin(Begin { incoming_window: 10, outgoing_window: 10, ..Default::default() }),
            &[],
        )
        .unwrap();
        encode_frame(
            b,
            0,
            &Performative::Flow(Flow { handle: Some(5), link_credit: Some(1), ..Default::default() }),
            &[],
        )
        .unwrap();
    });
    assert_eq!(cond.as_deref(), Some(condition::UNATTACHED_HANDLE));
}

#[test]
fn input_split_at_every_byte_gives_the_same_events() {
    // The same conversation fed one byte at a time must produce the same deliveries.
    let mut p = Pair::plain();
    let (c, _) = p.credited_sender(100);
    for i in 0..20 {
        send(&mut p.client, c, i, format!("event {i}").as_bytes()).unwrap();
    }
    let all = p.client.output().split();
    let mut buf = BytesMut::new();
    for byte in all.iter() {
        buf.extend_from_slice(&[*byte]);
        p.server.feed(&mut buf, p.now).unwrap();
        // Complete frames are consumed at once; only a partial frame stays with the caller.
        assert!(buf.len() < 40, "a partial frame of {} bytes", buf.len());
    }
    assert!(buf.is_empty());
    let mut got = Vec::new();
    while let Some(e) = p.server.poll_event() {
        if let Event::Delivery(d) = e {
            got.push(String::from_utf8(d.payload.to_vec()).unwrap());
        }
    }
    assert_eq!(got, (0..20).map(|i| format!("event {i}")).collect::<Vec<_>>());
}

#[test]
fn acceptor_answers_a_begin_on_the_peers_channel_when_free() {
    let now = Instant::now();
    let mut server = Connection::new(ConnectionRole::Acceptor, ConnectionConfig::default(), now);
    let mut input = BytesMut::from(&AMQP_HEADER[..]);
    encode_frame(&mut input, 0, &Performative::Open(Open { container_id: "c".into(), ..Default::default() }), &[])
        .unwrap();
    // The peer begins on channel 3 first, then on channel 0.
    for ch in [3u16, 0] {
        let b = Begin { incoming_window: 10, outgoing_window: 10, ..Default::default() };
        encode_frame(&mut input, ch, &Performative::Begin(b), &[]).unwrap();
    }
    server.feed(&mut input, now).unwrap();
    let mut out = server.output().split();
    let _ = out.split_to(8);
    let mut answers = Vec::new();
    while let Some(f) = ehub_amqp_codec::decode_frame(&mut out, u32::MAX).unwrap() {
        if let ehub_amqp_codec::FrameBody::Amqp(Performative::Begin(b), _) = f.body {
            answers.push((f.channel, b.remote_channel));
        }
    }
    assert_eq!(answers, vec![(3, Some(3)), (0, Some(0))]);
}
