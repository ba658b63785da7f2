//! Wire-level tests: our own engine as the client, over TCP, against an in-process broker.

use bytes::{Bytes, BytesMut};
use ehub_amqp_codec::*;
use ehub_amqp_endpoint::driver::Transport;
use ehub_amqp_endpoint::{Connection, ConnectionConfig, ConnectionRole, Event, LinkId, SaslConfig, SendArgs};
use ehub_broker_amqp::serve;
use ehub_broker_core::{Broker, CoreConfig};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

struct TestBroker {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
    handle: tokio::task::JoinHandle<()>,
}

async fn start() -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CoreConfig { data_dir: dir.path().to_owned(), ..Default::default() };
    let broker = Broker::open(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let handle = tokio::spawn(async move { serve(broker, listener, s).await.unwrap() });
    TestBroker { addr, stop, _dir: dir, handle }
}

struct Client {
    conn: Connection,
    t: Transport<TcpStream>,
    events: Vec<Event>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        Self::connect_with(addr, ConnectionConfig::default()).await
    }

    /// Connects with `cfg` (SASL ANONYMOUS and the host name are set here).
    async fn connect_with(addr: std::net::SocketAddr, cfg: ConnectionConfig) -> Client {
        let sock = TcpStream::connect(addr).await.unwrap();
        let cfg = ConnectionConfig { sasl: SaslConfig::Anonymous, hostname: Some("localhost".into()), ..cfg };
        let mut c = Client {
            conn: Connection::new(ConnectionRole::Initiator, cfg, Instant::now()),
            t: Transport::new(sock),
            events: vec![],
        };
        c.until(|e| matches!(e, Event::Opened(_))).await;
        c
    }

    /// Pumps IO until an event matching `pred` arrives; returns it.
    async fn until(&mut self, pred: impl Fn(&Event) -> bool) -> Event {
        tokio::time::timeout(T, async {
            loop {
                if let Some(i) = self.events.iter().position(&pred) {
                    return self.events.remove(i);
                }
                self.t.flush(&mut self.conn).await.unwrap();
                let n = self.t.read_into().await.unwrap();
                assert!(n > 0, "connection closed while waiting; events: {:?}", self.events);
                let r = self.t.feed(&mut self.conn);
                while let Some(e) = self.conn.poll_event() {
                    self.events.push(e);
                }
                if let Err(e) = r {
                    if let Some(i) = self.events.iter().position(&pred) {
                        return self.events.remove(i);
                    }
                    panic!("engine error {e}; events {:?}", self.events);
                }
            }
        })
        .await
        .expect("timed out waiting for an event")
    }

    async fn session(&mut self) -> u16 {
        let ch = self.conn.begin().unwrap();
        self.until(|e| matches!(e, Event::SessionBegun { .. })).await;
        ch
    }

    async fn attach(&mut self, ch: u16, a: Attach) -> (LinkId, Event) {
        let id = self.conn.attach(ch, a).unwrap();
        let ev = self
            .until(|e| matches!(e, Event::Attached { link, .. } | Event::Detached { link, .. } if *link == id))
            .await;
        (id, ev)
    }

    async fn put_token(&mut self, key: &str, audience: &str) -> i64 {
        self.put_token_for(key, audience, 3600).await
    }

    /// Puts a SAS token valid for `ttl` seconds from now.
    async fn put_token_for(&mut self, key: &str, audience: &str, ttl: u64) -> i64 {
        let ch = self.session().await;
        let mut s = Attach::new("cbs-s", 0, Role::Sender);
        s.target = Some(Target::address("$cbs"));
        let (sender, _) = self.attach(ch, s).await;
        let mut r = Attach::new("cbs-r", 0, Role::Receiver);
        r.source = Some(Source::address("$cbs"));
        r.target = Some(Target::address("cbs-reply"));
        let (receiver, _) = self.attach(ch, r).await;
        self.conn.flow(receiver, 10).unwrap();
        if self.conn.credit(sender) == 0 {
            self.until(|e| matches!(e, Event::LinkFlow { link } if *link == sender)).await;
        }
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + ttl;
        let token = ehub_model::generate_sas_token(audience, "RootManageSharedAccessKey", key, exp);
        let mut m = Message::with_value(Value::String(token));
        m.properties = Some(Box::new(Properties {
            message_id: Some(Value::Ulong(7)),
            reply_to: Some("cbs-reply".into()),
            ..Default::default()
        }));
        m.application_properties = Some(vec![
            (Value::from("operation"), Value::from("put-token")),
            (Value::from("type"), Value::from("servicebus.windows.net:sastoken")),
            (Value::from("name"), Value::from(audience)),
        ]);
        let bytes = m.to_bytes().unwrap();
        self.conn.send(sender, SendArgs { tag: b"1", message_format: 0, settled: false }, &bytes).unwrap();
        let Event::Delivery(d) = self.until(|e| matches!(e, Event::Delivery(d) if d.link == receiver)).await else {
            unreachable!()
        };
        let resp = Message::decode(&d.payload).unwrap();
        assert_eq!(
            resp.properties.unwrap().correlation_id,
            Some(Value::Ulong(7)),
            "correlation-id keeps the request's type"
        );
        let app = resp.application_properties.unwrap();
        let Some(Value::Int(code)) = map_get(&app, "status-code") else {
            panic!("status-code must be an AMQP int: {app:?}")
        };
        // The request's own settlement is not interesting to callers.
        self.events.retain(|e| !matches!(e, Event::Disposition { .. }));
        *code as i64
    }
}

async fn stop(b: TestBroker) {
    b.stop.cancel();
    tokio::time::timeout(T, b.handle).await.unwrap().unwrap();
}

#[tokio::test]
async fn wrong_key_gets_401_and_links_are_refused_unauthorized() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    assert_eq!(c.put_token("wrong", "sb://localhost/eh1").await, 401);
    let ch = c.session().await;
    let mut a = Attach::new("p", 0, Role::Sender);
    a.target = Some(Target::address("amqps://localhost/eh1/Partitions/0"));
    let (_, ev) = c.attach(ch, a).await;
    let e = expect_detached(&mut c, ev).await;
    assert_eq!(e.condition.as_str(), "amqp:unauthorized-access");
    stop(b).await;
}

fn receiver(name: &str, address: &str) -> Attach {
    let mut a = Attach::new(name, 0, Role::Receiver);
    a.source = Some(Source::address(address));
    a.target = Some(Target::address("r"));
    a
}

/// The error of a refused attach: a detach either instead of the attach reply or right after it.
async fn expect_detached(c: &mut Client, ev: Event) -> ehub_amqp_codec::Error {
    let ev = match ev {
        Event::Attached { link, .. } => {
            c.until(move |e| matches!(e, Event::Detached { link: l, .. } if *l == link)).await
        }
        other => other,
    };
    let Event::Detached { error: Some(e), .. } = ev else { panic!("expected a detach with error, got {ev:?}") };
    e
}

#[tokio::test]
async fn links_are_detached_when_their_token_expires_unrenewed() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    assert_eq!(c.put_token_for("SAS_KEY_VALUE", "sb://localhost/eh1", 2).await, 202);
    let ch = c.session().await;
    let mut p = Attach::new("p", 0, Role::Sender);
    p.target = Some(Target::address("eh1/Partitions/0"));
    let (sender, ev) = c.attach(ch, p).await;
    assert!(matches!(ev, Event::Attached { .. }), "{ev:?}");
    let (recv, ev) = c.attach(ch, receiver("r", "eh1/ConsumerGroups/$Default/Partitions/0")).await;
    assert!(matches!(ev, Event::Attached { .. }), "{ev:?}");
    let started = Instant::now();
    let mut detached = Vec::new();
    while detached.len() < 2 {
        let Event::Detached { link, error: Some(e), .. } = c.until(|e| matches!(e, Event::Detached { .. })).await
        else {
            panic!("a detach without an error")
        };
        assert_eq!(e.condition.as_str(), "amqp:unauthorized-access");
        detached.push(link);
    }
    detached.sort_by_key(|l| l.handle);
    let mut want = vec![sender, recv];
    want.sort_by_key(|l| l.handle);
    assert_eq!(detached, want, "both links go when their token lapses");
    assert!(started.elapsed() >= Duration::from_millis(500), "detached before the token expired");
    // The connection itself stays: a fresh token lets a new link attach.
    assert_eq!(c.put_token("SAS_KEY_VALUE", "sb://localhost/eh1").await, 202);
    let mut p = Attach::new("p2", 0, Role::Sender);
    p.target = Some(Target::address("eh1/Partitions/0"));
    let (_, ev) = c.attach(ch, p).await;
    assert!(matches!(ev, Event::Attached { .. }), "{ev:?}");
    stop(b).await;
}

#[tokio::test]
async fn at_most_five_non_epoch_receivers_per_partition_and_consumer_group() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    assert_eq!(c.put_token("SAS_KEY_VALUE", "sb://localhost/eh1").await, 202);
    let ch = c.session().await;
    let addr = "eh1/ConsumerGroups/$Default/Partitions/1";
    let mut held = Vec::new();
    for i in 0..5 {
        let (link, ev) = c.attach(ch, receiver(&format!("r{i}"), addr)).await;
        assert!(matches!(ev, Event::Attached { .. }), "receiver {i}: {ev:?}");
        held.push(link);
    }
    let (_, ev) = c.attach(ch, receiver("r5", addr)).await;
    let e = expect_detached(&mut c, ev).await;
    assert_eq!(e.condition.as_str(), "amqp:resource-limit-exceeded");
    assert!(e.description.as_deref().unwrap_or("").contains("maximum number of allowed receivers"), "{e:?}");
    // Other partitions and consumer groups have their own limits.
    let (_, ev) = c.attach(ch, receiver("other-partition", "eh1/ConsumerGroups/$Default/Partitions/2")).await;
    assert!(matches!(ev, Event::Attached { .. }), "{ev:?}");
    let (_, ev) = c.attach(ch, receiver("other-group", "eh1/ConsumerGroups/cg1/Partitions/1")).await;
    assert!(matches!(ev, Event::Attached { .. }), "{ev:?}");
    // Closing one frees its place.
    c.conn.detach(held[0], None).unwrap();
    c.until(|e| matches!(e, Event::Detached { link, .. } if *link == held[0])).await;
    let (_, ev) = c.attach(ch, receiver("r6", addr)).await;
    assert!(matches!(ev, Event::Attached { .. }), "{ev:?}");
    stop(b).await;
}

#[tokio::test]
async fn oversized_delivery_is_rejected_and_the_link_stays_usable() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    assert_eq!(c.put_token("SAS_KEY_VALUE", "amqps://localhost/eh1").await, 202);
    let ch = c.session().await;
    let mut a = Attach::new("p", 0, Role::Sender);
    a.target = Some(Target::address("amqps://localhost/eh1/Partitions/0"));
    let (link, ev) = c.attach(ch, a).await;
    let Event::Attached { attach, .. } = ev else { panic!("{ev:?}") };
    assert_eq!(attach.max_message_size, Some(1 << 20), "max-message-size is advertised");
    c.until(|e| matches!(e, Event::LinkFlow { .. })).await;
    let big = Message::with_data(Bytes::from(vec![7u8; (1 << 20) + 10])).to_bytes().unwrap();
    c.conn.send(link, SendArgs { tag: b"big", message_format: 0, settled: false }, &big).unwrap();
    let Event::Disposition { state, settled, .. } = c.until(|e| matches!(e, Event::Disposition { .. })).await else {
        unreachable!()
    };
    assert!(settled);
    let Some(DeliveryState::Rejected(Some(e))) = state else { panic!("{state:?}") };
    assert_eq!(e.condition.as_str(), "amqp:link:message-size-exceeded");
    let small = Message::with_data(Bytes::from_static(b"ok")).to_bytes().unwrap();
    c.conn.send(link, SendArgs { tag: b"small", message_format: 0, settled: false }, &small).unwrap();
    let Event::Disposition { state, .. } = c.until(|e| matches!(e, Event::Disposition { .. })).await else {
        unreachable!()
    };
    assert_eq!(state, Some(DeliveryState::Accepted));
    stop(b).await;
}

#[tokio::test]
async fn batch_in_then_annotated_events_out() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    assert_eq!(c.put_token("SAS_KEY_VALUE", "amqps://localhost/eh1").await, 202);
    let ch = c.session().await;
    let mut a = Attach::new("p", 0, Role::Sender);
    a.target = Some(Target::address("eh1/Partitions/2"));
    let (sender, _) = c.attach(ch, a).await;
    c.until(|e| matches!(e, Event::LinkFlow { .. })).await;
    let mut env = BytesMut::new();
    for i in 0..3 {
        let mut m = Message::with_data(Bytes::from(format!("e{i}")));
        m.message_annotations = Some(vec![(Value::Symbol("x-opt-partition-key".into()), Value::from("k"))]);
        put_data_section(&mut env, &m.to_bytes().unwrap()).unwrap();
    }
    c.conn.send(sender, SendArgs { tag: b"b", message_format: BATCH_MESSAGE_FORMAT, settled: false }, &env).unwrap();
    let Event::Disposition { state, .. } = c.until(|e| matches!(e, Event::Disposition { .. })).await else {
        unreachable!()
    };
    assert_eq!(state, Some(DeliveryState::Accepted));

    let mut r = Attach::new("r", 0, Role::Receiver);
    let pos = ehub_model::EventPosition::SequenceNumber { value: 1, inclusive: true };
    r.source = Some(Source {
        address: Some("eh1/ConsumerGroups/$default/Partitions/2".into()),
        filter: Some(vec![pos.to_filter_entry()]),
        ..Default::default()
    });
    let (receiver, ev) = c.attach(ch, r).await;
    let Event::Attached { attach, .. } = ev else { panic!("{ev:?}") };
    if let Some(i) = c.events.iter().position(|e| matches!(e, Event::Detached { .. })) {
        panic!("receiver refused: {:?}", c.events[i]);
    }
    assert_eq!(attach.snd_settle_mode, SenderSettleMode::Settled);
    assert!(attach.source.unwrap().filter.is_some(), "the filter set is echoed");
    assert_eq!(attach.initial_delivery_count, Some(0));
    c.conn.flow(receiver, 10).unwrap();
    for want in 1..3i64 {
        let Event::Delivery(d) = c.until(|e| matches!(e, Event::Delivery(d) if d.link == receiver)).await else {
            unreachable!()
        };
        assert!(d.settled, "events are delivered pre-settled");
        let m = Message::decode(&d.payload).unwrap();
        let ma = m.message_annotations.unwrap();
        assert_eq!(map_get(&ma, "x-opt-sequence-number"), Some(&Value::Long(want)));
        assert!(matches!(map_get(&ma, "x-opt-offset"), Some(Value::String(_))));
        assert!(matches!(map_get(&ma, "x-opt-enqueued-time"), Some(Value::Timestamp(_))));
        assert_eq!(map_get(&ma, "x-opt-partition-key"), Some(&Value::from("k")));
        assert_eq!(m.body, Body::Data(vec![Bytes::from(format!("e{want}"))]));
    }
    stop(b).await;
}

/// A receiver whose session window is far smaller than its link credit: the broker sends no
/// more transfers than the window allows (our engine, as the client, closes the connection
/// with a window violation otherwise) and goes on as the client's session flows reopen it.
#[tokio::test]
async fn deliveries_respect_the_receivers_session_window() {
    let b = start().await;
    let mut c = Client::connect_with(b.addr, ConnectionConfig { session_window: 8, ..Default::default() }).await;
    assert_eq!(c.put_token("SAS_KEY_VALUE", "amqps://localhost/eh1").await, 202);
    let ch = c.session().await;
    let mut a = Attach::new("p", 0, Role::Sender);
    a.target = Some(Target::address("eh1/Partitions/1"));
    let (sender, _) = c.attach(ch, a).await;
    c.until(|e| matches!(e, Event::LinkFlow { .. })).await;
    let mut env = BytesMut::new();
    for i in 0..200 {
        put_data_section(&mut env, &Message::with_data(Bytes::from(format!("e{i}"))).to_bytes().unwrap()).unwrap();
    }
    c.conn.send(sender, SendArgs { tag: b"b", message_format: BATCH_MESSAGE_FORMAT, settled: false }, &env).unwrap();
    let Event::Disposition { state, .. } = c.until(|e| matches!(e, Event::Disposition { .. })).await else {
        unreachable!()
    };
    assert_eq!(state, Some(DeliveryState::Accepted));
    let mut r = Attach::new("r", 0, Role::Receiver);
    let pos = ehub_model::EventPosition::Earliest;
    r.source = Some(Source {
        address: Some("eh1/ConsumerGroups/$default/Partitions/1".into()),
        filter: Some(vec![pos.to_filter_entry()]),
        ..Default::default()
    });
    let (receiver, _) = c.attach(ch, r).await;
    c.conn.flow(receiver, 500).unwrap();
    for want in 0..200i64 {
        let Event::Delivery(d) = c.until(|e| matches!(e, Event::Delivery(d) if d.link == receiver)).await else {
            unreachable!()
        };
        let ma = Message::decode(&d.payload).unwrap().message_annotations.unwrap();
        assert_eq!(map_get(&ma, "x-opt-sequence-number"), Some(&Value::Long(want)));
    }
    stop(b).await;
}

#[tokio::test]
async fn garbage_after_open_closes_with_decode_error_and_the_broker_lives_on() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    // A frame header announcing an AMQP frame whose body is not a performative.
    c.t.get_mut().write_all(&[0, 0, 0, 12, 2, 0, 0, 0, 0xff, 0xfe, 0xfd, 0xfc]).await.unwrap();
    let ev = c.until(|e| matches!(e, Event::Closed { .. })).await;
    let Event::Closed { error: Some(e) } = ev else { panic!("{ev:?}") };
    assert_eq!(e.condition.as_str(), "amqp:decode-error");
    // Other connections are unaffected.
    let mut c2 = Client::connect(b.addr).await;
    assert_eq!(c2.put_token("SAS_KEY_VALUE", "sb://localhost/eh1").await, 202);
    stop(b).await;
}

/// Sends `n` events to partition 0 on a fresh sender link; returns the dispositions the broker
/// sends back for them within `wait` of the last acknowledgement, as (first, last, settled, state).
async fn dispositions_for_sends(
    c: &mut Client,
    n: usize,
    wait: Duration,
) -> Vec<(u32, u32, bool, Option<DeliveryState>)> {
    assert_eq!(c.put_token("SAS_KEY_VALUE", "amqps://localhost/eh1").await, 202);
    let ch = c.session().await;
    let mut a = Attach::new("p", 0, Role::Sender);
    a.target = Some(Target::address("eh1/Partitions/0"));
    let (link, _) = c.attach(ch, a).await;
    c.until(|e| matches!(e, Event::LinkFlow { .. })).await;
    let body = Message::with_data(Bytes::from_static(b"x")).to_bytes().unwrap();
    for i in 0..n {
        let tag = format!("t{i}");
        c.conn.send(link, SendArgs { tag: tag.as_bytes(), message_format: 0, settled: false }, &body).unwrap();
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + T;
    let mut quiet_from: Option<Instant> = None;
    loop {
        let got =
            tokio::time::timeout(Duration::from_millis(20), c.until(|e| matches!(e, Event::Disposition { .. }))).await;
        match got {
            Ok(Event::Disposition { first, last, settled, state, .. }) => {
                seen.push((first, last, settled, state));
                quiet_from = None;
            }
            Ok(_) => unreachable!(),
            Err(_) => {
                let q = *quiet_from.get_or_insert_with(Instant::now);
                if q.elapsed() >= wait {
                    return seen;
                }
            }
        }
        assert!(Instant::now() < deadline, "dispositions did not settle down: {seen:?}");
    }
}

/// Every delivery id in `0..n` covered by a disposition of `settled` in `seen`, with `Accepted`.
fn covered(seen: &[(u32, u32, bool, Option<DeliveryState>)], settled: bool, n: u32) -> bool {
    (0..n).all(|id| {
        seen.iter()
            .any(|(f, l, s, st)| *s == settled && (*f..=*l).contains(&id) && *st == Some(DeliveryState::Accepted))
    })
}

#[tokio::test]
async fn the_official_rust_sdk_gets_each_outcome_unsettled_then_settled_and_others_once() {
    let b = start().await;
    // The official Rust SDK's stack (fe2o3-amqp) names itself in its open properties.
    let cfg = ConnectionConfig {
        properties: Some(vec![(Value::Symbol("product".into()), Value::String("azure_messaging_eventhubs".into()))]),
        ..Default::default()
    };
    let mut sdk = Client::connect_with(b.addr, cfg).await;
    let seen = dispositions_for_sends(&mut sdk, 20, Duration::from_millis(200)).await;
    assert!(covered(&seen, false, 20), "each outcome first goes out unsettled: {seen:?}");
    assert!(covered(&seen, true, 20), "and later settled: {seen:?}");
    let first_settled = seen.iter().position(|d| d.2).unwrap();
    assert!(seen[..first_settled].iter().all(|d| !d.2), "the settled ones come after: {seen:?}");
    assert!(seen.iter().filter(|d| d.2).count() < 20, "the settled confirmations are coalesced into ranges: {seen:?}");

    let mut other = Client::connect(b.addr).await;
    let seen = dispositions_for_sends(&mut other, 20, Duration::from_millis(200)).await;
    assert!(covered(&seen, true, 20), "{seen:?}");
    assert!(seen.iter().all(|d| d.2), "other clients get one settled disposition per outcome: {seen:?}");
    stop(b).await;
}

#[tokio::test]
async fn a_token_for_an_unknown_hub_is_answered_404_not_found() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    assert_eq!(c.put_token("SAS_KEY_VALUE", "sb://localhost/nosuchhub").await, 404);
    assert_eq!(
        c.put_token("SAS_KEY_VALUE", "amqps://localhost/nosuchhub/ConsumerGroups/$Default/Partitions/0").await,
        404
    );
    // A namespace-wide audience and a known hub are fine; a wrong key is still 401 first.
    assert_eq!(c.put_token("SAS_KEY_VALUE", "sb://localhost/").await, 202);
    assert_eq!(c.put_token("SAS_KEY_VALUE", "sb://localhost/EH1").await, 202);
    assert_eq!(c.put_token("wrong", "sb://localhost/nosuchhub").await, 401);
    stop(b).await;
}

#[tokio::test]
async fn a_senders_delivery_annotations_reach_the_receiver_beside_the_runtime_metrics() {
    let b = start().await;
    let mut c = Client::connect(b.addr).await;
    assert_eq!(c.put_token("SAS_KEY_VALUE", "amqps://localhost/eh1").await, 202);
    let ch = c.session().await;
    let mut a = Attach::new("p", 0, Role::Sender);
    a.target = Some(Target::address("eh1/Partitions/3"));
    let (sender, _) = c.attach(ch, a).await;
    c.until(|e| matches!(e, Event::LinkFlow { .. })).await;
    let mut m = Message::with_data(Bytes::from_static(b"annotated"));
    m.delivery_annotations = Some(vec![(Value::Symbol("x-sender-note".into()), Value::from("kept"))]);
    c.conn.send(sender, SendArgs { tag: b"d", message_format: 0, settled: false }, &m.to_bytes().unwrap()).unwrap();
    c.until(|e| matches!(e, Event::Disposition { .. })).await;
    for metrics in [false, true] {
        let mut r = Attach::new(if metrics { "rm" } else { "r" }, 0, Role::Receiver);
        r.source = Some(Source {
            address: Some("eh1/ConsumerGroups/$default/Partitions/3".into()),
            filter: Some(vec![ehub_model::EventPosition::Earliest.to_filter_entry()]),
            ..Default::default()
        });
        if metrics {
            r.desired_capabilities = vec![Symbol::from(ehub_model::link::RUNTIME_METRIC_CAPABILITY)];
        }
        let (receiver, _) = c.attach(ch, r).await;
        c.conn.flow(receiver, 10).unwrap();
        let Event::Delivery(d) = c.until(|e| matches!(e, Event::Delivery(d) if d.link == receiver)).await else {
            unreachable!()
        };
        let da = Message::decode(&d.payload).unwrap().delivery_annotations.expect("delivery annotations");
        assert_eq!(map_get(&da, "x-sender-note"), Some(&Value::from("kept")), "metrics {metrics}: {da:?}");
        assert_eq!(
            map_get(&da, "last_enqueued_sequence_number").is_some(),
            metrics,
            "runtime metrics only when asked for: {da:?}"
        );
    }
    stop(b).await;
}

/// A client that connects and sends nothing, or stops after the protocol header, is closed
/// once the handshake timeout passes; one that opens in time is not.
#[tokio::test]
async fn connections_that_do_not_open_within_the_handshake_timeout_are_closed() {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CoreConfig {
            data_dir: dir.path().to_owned(),
            handshake_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let broker = Broker::open(cfg).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(serve(broker, listener, stop.clone()));

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut header_only = TcpStream::connect(addr).await.unwrap();
        header_only.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        // Read to the end: the broker closes the socket (the header-only one first gets the
        // broker's own SASL header and mechanisms).
        silent.read_to_end(&mut buf).await.unwrap();
        assert!(buf.is_empty());
        header_only.read_to_end(&mut buf).await.unwrap();
        assert!(buf.starts_with(b"AMQP\x03\x01\x00\x00"), "{buf:?}");
        assert!(started.elapsed() >= Duration::from_millis(250), "closed only after the timeout");
        stop.cancel();
        handle.await.unwrap().unwrap();
    })
    .await
    .unwrap();
}

/// A broker with `core` settings (its data directory is set here) and AMQP `limits`.
async fn start_limited(core: CoreConfig, limits: ehub_broker_amqp::AmqpLimits) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(CoreConfig { data_dir: dir.path().to_owned(), ..core }).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let listeners = vec![ehub_broker_amqp::Listener { socket: listener, protocol: ehub_broker_amqp::Protocol::Amqp }];
    let options = ehub_broker_amqp::ServeOptions { limits, ..Default::default() };
    let handle =
        tokio::spawn(
            async move { ehub_broker_amqp::serve_listeners_with(broker, listeners, s, options).await.unwrap() },
        );
    TestBroker { addr, stop, _dir: dir, handle }
}

/// Connects and expects the broker to answer `open` and close at once with `condition`.
async fn expect_refused(addr: std::net::SocketAddr, condition: &str, text: &str) {
    let mut c = Client::connect(addr).await;
    let ev = c.until(|e| matches!(e, Event::Closed { .. })).await;
    let Event::Closed { error: Some(e) } = ev else { panic!("{ev:?}") };
    assert_eq!(e.condition.as_str(), condition, "{e:?}");
    assert!(e.description.as_deref().unwrap_or("").contains(text), "{e:?}");
}

/// Connections past the per-address limit, and past the limit of connections that have not
/// opened yet, are answered with `amqp:resource-limit-exceeded` and a reason; connections
/// already open are not disturbed, and a slot given back is usable again.
#[tokio::test]
async fn connections_over_a_limit_are_refused_with_the_reason_and_others_go_on() {
    tokio::time::timeout(T, async {
        let core = CoreConfig { max_connections_per_address: 2, max_pending_connections: 1, ..Default::default() };
        let b = start_limited(core, Default::default()).await;
        let mut c1 = Client::connect(b.addr).await;
        let c2 = Client::connect(b.addr).await;
        expect_refused(b.addr, "amqp:resource-limit-exceeded", "from one client address").await;
        assert_eq!(c1.put_token("SAS_KEY_VALUE", "sb://localhost/eh1").await, 202, "open connections go on");
        drop(c2);
        drop(c1);
        // One connection that has not opened holds the only pending slot.
        let silent = TcpStream::connect(b.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        expect_refused(b.addr, "amqp:resource-limit-exceeded", "have not completed their handshake").await;
        // … and once it goes, connections are admitted again.
        drop(silent);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c3 = Client::connect(b.addr).await;
        assert_eq!(c3.put_token("SAS_KEY_VALUE", "sb://localhost/eh1").await, 202);
        stop(b).await;
    })
    .await
    .unwrap();
}

/// The session, link and frame limits are advertised in `open` and `begin`; a client that
/// goes past them anyway loses its connection with `amqp:not-allowed`, and only its own.
#[tokio::test]
async fn session_link_and_frame_limits_are_advertised_and_enforced() {
    tokio::time::timeout(T, async {
        let limits = ehub_broker_amqp::AmqpLimits {
            max_sessions_per_connection: 2,
            max_links_per_session: 3,
            max_frame_size: 4096,
            ..Default::default()
        };
        let b = start_limited(CoreConfig::default(), limits).await;
        let sock = TcpStream::connect(b.addr).await.unwrap();
        let cfg =
            ConnectionConfig { sasl: SaslConfig::Anonymous, hostname: Some("localhost".into()), ..Default::default() };
        let mut c = Client {
            conn: Connection::new(ConnectionRole::Initiator, cfg, Instant::now()),
            t: Transport::new(sock),
            events: vec![],
        };
        let Event::Opened(o) = c.until(|e| matches!(e, Event::Opened(_))).await else { unreachable!() };
        assert_eq!((o.max_frame_size, o.channel_max), (Some(4096), Some(1)));
        c.session().await;
        c.session().await;
        assert!(c.conn.begin().is_err(), "our engine keeps to the advertised channel-max");
        // A begin on channel 7, past channel-max 1, written by hand.
        let mut frame = BytesMut::new();
        let begin = Begin { next_outgoing_id: 0, incoming_window: 100, outgoing_window: 100, ..Default::default() };
        encode_frame(&mut frame, 7, &Performative::Begin(begin), &[]).unwrap();
        c.t.get_mut().write_all(&frame).await.unwrap();
        let ev = c.until(|e| matches!(e, Event::Closed { .. })).await;
        let Event::Closed { error: Some(e) } = ev else { panic!("{ev:?}") };
        assert_eq!(e.condition.as_str(), "amqp:not-allowed", "{e:?}");
        let mut other = Client::connect(b.addr).await;
        assert_eq!(other.put_token("SAS_KEY_VALUE", "sb://localhost/eh1").await, 202);
        stop(b).await;
    })
    .await
    .unwrap();
}

/// After `max_auth_failures` refused tokens from one address, even a valid token from it is
/// refused until the window ends.
#[tokio::test]
async fn failed_authorizations_are_rate_limited_per_address() {
    tokio::time::timeout(T, async {
        let core =
            CoreConfig { max_auth_failures: 3, auth_failure_window: Duration::from_millis(1500), ..Default::default() };
        let b = start_limited(core, Default::default()).await;
        let mut c = Client::connect(b.addr).await;
        assert_eq!(c.put_token("SAS_KEY_VALUE", "sb://localhost/eh1").await, 202);
        for _ in 0..3 {
            assert_eq!(c.put_token("wrong", "sb://localhost/eh1").await, 401);
        }
        let mut fresh = Client::connect(b.addr).await;
        assert_eq!(fresh.put_token("SAS_KEY_VALUE", "sb://localhost/eh1").await, 401, "throttled");
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(fresh.put_token("SAS_KEY_VALUE", "sb://localhost/eh1").await, 202, "the window ended");
        stop(b).await;
    })
    .await
    .unwrap();
}
