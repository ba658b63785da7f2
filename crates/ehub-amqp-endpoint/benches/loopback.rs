//! The engine end to end over loopback TCP, both ends ours, in one process (2 runtime workers,
//! one per end on this 2-core machine):
//! - `egress`: our acceptor sends pre-encoded 100-byte events, one pre-settled transfer each
//!   (how Event Hubs delivers to consumers), to our initiator, which grants credit in windows;
//! - `batched_ingress`: our initiator sends batch messages of 100 events (message format
//!   0x80013700) to our acceptor, which splits each batch into its events and accepts each
//!   transfer, as the broker does.
//!
//! `cargo bench -p ehub-amqp-endpoint --bench loopback`

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ehub_amqp_codec::{
    batch_items, put_data_section, Attach, Message, Role, SectionSpans, Source, Target, BATCH_MESSAGE_FORMAT,
};
use ehub_amqp_endpoint::driver::Transport;
use ehub_amqp_endpoint::{AttachReply, Connection, ConnectionConfig, ConnectionRole, Event, LinkId, SendArgs};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const EGRESS_PER_ITER: u64 = 100_000;
const BATCHES_PER_ITER: u64 = 2_000;
const EVENTS_PER_BATCH: u64 = 100;
const CREDIT_WINDOW: u32 = 5_000;
const FLUSH_AT: usize = 256 * 1024;

/// An encoded event with a 100-byte body, as a producer would send it.
fn event() -> Bytes {
    Message::with_data(Bytes::from(vec![b'e'; 100])).to_bytes().unwrap()
}

/// A batch envelope holding `n` events as data sections.
fn batch(n: u64) -> Bytes {
    let ev = event();
    let mut out = BytesMut::new();
    // The envelope is an empty message whose body is one data section per event.
    for _ in 0..n {
        put_data_section(&mut out, &ev).unwrap();
    }
    out.freeze()
}

struct End {
    conn: Connection,
    io: Transport<TcpStream>,
}

impl End {
    async fn next(&mut self) -> Event {
        self.io.next_event(&mut self.conn).await.expect("the peer went away")
    }

    /// Reads once (waiting for input) and feeds the engine.
    async fn read(&mut self) {
        assert!(self.io.read_into().await.unwrap() > 0, "peer went away");
        self.io.feed(&mut self.conn).unwrap();
    }

    /// Reads whatever is already in the socket without waiting.
    async fn poll_read(&mut self) {
        tokio::select! {
            biased;
            _ = self.read() => {}
            _ = std::future::ready(()) => {}
        }
    }
}

fn cfg(name: &str) -> ConnectionConfig {
    ConnectionConfig { container_id: name.into(), max_frame_size: 256 * 1024, ..Default::default() }
}

/// Connects an initiator to an acceptor, attaches one link (the initiator in `role`), and
/// returns both ends with their link ids.
async fn pair(role: Role) -> ((End, LinkId), (End, LinkId)) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut end = End {
            conn: Connection::new(ConnectionRole::Acceptor, cfg("acceptor"), Instant::now()),
            io: Transport::new(s),
        };
        let link = loop {
            if let Event::AttachRequested { link, attach } = end.next().await {
                let reply =
                    AttachReply { source: attach.source.clone(), target: attach.target.clone(), ..Default::default() };
                end.conn.accept_link(link, reply).unwrap();
                end.io.flush(&mut end.conn).await.unwrap();
                break link;
            }
        };
        (end, link)
    });
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut client = End {
        conn: Connection::new(ConnectionRole::Initiator, cfg("initiator"), Instant::now()),
        io: Transport::new(s),
    };
    while !matches!(client.next().await, Event::Opened(_)) {}
    let ch = client.conn.begin().unwrap();
    while !matches!(client.next().await, Event::SessionBegun { .. }) {}
    let mut a = Attach::new("bench".to_string(), 0, role);
    a.source = Some(Source { address: Some("src".into()), ..Default::default() });
    a.target = Some(Target { address: Some("dst".into()), ..Default::default() });
    let link = client.conn.attach(ch, a).unwrap();
    while !matches!(client.next().await, Event::Attached { .. }) {}
    let server = server.await.unwrap();
    ((client, link), server)
}

/// Sender loop: on each command `n`, sends `n` copies of `payload` as fast as credit allows,
/// reading flows and dispositions as they come.
async fn sender(mut end: End, link: LinkId, payload: Bytes, format: u32, settled: bool, mut cmd: mpsc::Receiver<u64>) {
    let mut tag = 0u32;
    let mut n = 0u64;
    loop {
        if n == 0 {
            tokio::select! {
                c = cmd.recv() => match c { Some(c) => n = c, None => return },
                r = end.io.read_into() => {
                    if r.unwrap() == 0 { return; }
                    end.io.feed(&mut end.conn).unwrap();
                }
            }
            while end.conn.poll_event().is_some() {}
            continue;
        }
        while n > 0 && end.conn.credit(link) > 0 && end.conn.output().len() < FLUSH_AT {
            tag = tag.wrapping_add(1);
            end.conn
                .send(link, SendArgs { tag: &tag.to_be_bytes(), message_format: format, settled }, &payload)
                .unwrap();
            n -= 1;
        }
        end.io.flush(&mut end.conn).await.unwrap();
        if end.conn.credit(link) == 0 {
            end.read().await;
        } else {
            end.poll_read().await;
        }
        while end.conn.poll_event().is_some() {}
    }
}

/// Receiver loop: grants credit in windows, counts events (splitting batches when `batched`),
/// accepts unsettled transfers, and reports each time `target` more events have arrived.
async fn receiver(mut end: End, link: LinkId, batched: bool, mut targets: mpsc::Receiver<u64>, done: mpsc::Sender<()>) {
    end.conn.flow(link, CREDIT_WINDOW).unwrap();
    let mut target = 0u64;
    let mut count = 0u64;
    loop {
        while let Some(e) = end.conn.poll_event() {
            if let Event::Delivery(d) = e {
                count += if batched {
                    let spans = SectionSpans::scan(&d.payload).unwrap();
                    batch_items(&d.payload, &spans).unwrap().len() as u64
                } else {
                    1
                };
                end.conn.accept_delivery(&d).unwrap();
            }
        }
        end.conn.top_up_credit(link, CREDIT_WINDOW).unwrap();
        if target > 0 && count >= target {
            count -= target;
            target = 0;
            done.send(()).await.unwrap();
            continue;
        }
        end.io.flush(&mut end.conn).await.unwrap();
        tokio::select! {
            r = end.io.read_into() => {
                if r.unwrap() == 0 { return; }
                end.io.feed(&mut end.conn).unwrap();
            }
            t = targets.recv(), if target == 0 => match t { Some(t) => target = t, None => return },
        }
    }
}

struct Rig {
    rt: tokio::runtime::Runtime,
    send: mpsc::Sender<u64>,
    expect: mpsc::Sender<u64>,
    done: mpsc::Receiver<()>,
}

impl Rig {
    /// `ingress`: the initiator sends batches; otherwise the acceptor sends single events.
    fn new(ingress: bool) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let (send, send_rx) = mpsc::channel(4);
        let (expect, expect_rx) = mpsc::channel(4);
        let (done_tx, done) = mpsc::channel(4);
        rt.block_on(async {
            if ingress {
                let ((client, cl), (server, sl)) = pair(Role::Sender).await;
                tokio::spawn(sender(client, cl, batch(EVENTS_PER_BATCH), BATCH_MESSAGE_FORMAT, false, send_rx));
                tokio::spawn(receiver(server, sl, true, expect_rx, done_tx));
            } else {
                let ((client, cl), (server, sl)) = pair(Role::Receiver).await;
                tokio::spawn(sender(server, sl, event(), 0, true, send_rx));
                tokio::spawn(receiver(client, cl, false, expect_rx, done_tx));
            }
        });
        Rig { rt, send, expect, done }
    }

    /// Moves `transfers` transfers carrying `events` events and returns the elapsed time.
    fn run(&mut self, transfers: u64, events: u64) -> Duration {
        self.rt.block_on(async {
            self.expect.send(events).await.unwrap();
            let start = Instant::now();
            self.send.send(transfers).await.unwrap();
            self.done.recv().await.unwrap();
            start.elapsed()
        })
    }
}

/// The engine without sockets: a sender engine writing pre-settled 100-byte transfers into its
/// output buffer, and a receiver engine turning those bytes back into deliveries.
fn in_memory(c: &mut Criterion) {
    let now = Instant::now();
    let mut a = Connection::new(ConnectionRole::Initiator, cfg("a"), now);
    let mut b = Connection::new(ConnectionRole::Acceptor, cfg("b"), now);
    let shuttle = |a: &mut Connection, b: &mut Connection| {
        for _ in 0..8 {
            let mut x = a.output().split();
            b.feed(&mut x, now).unwrap();
            let mut y = b.output().split();
            a.feed(&mut y, now).unwrap();
        }
    };
    shuttle(&mut a, &mut b);
    let ch = a.begin().unwrap();
    shuttle(&mut a, &mut b);
    let mut att = Attach::new("m".to_string(), 0, Role::Receiver);
    att.source = Some(Source::default());
    att.target = Some(Target::default());
    let rl = a.attach(ch, att).unwrap();
    shuttle(&mut a, &mut b);
    let mut sl = None;
    while let Some(e) = b.poll_event() {
        if let Event::AttachRequested { link, attach } = e {
            b.accept_link(
                link,
                AttachReply { source: attach.source.clone(), target: attach.target.clone(), ..Default::default() },
            )
            .unwrap();
            sl = Some(link);
        }
    }
    let sl = sl.unwrap();
    while a.poll_event().is_some() {}
    shuttle(&mut a, &mut b);
    let ev = event();
    const N: u32 = 1000;
    let mut g = c.benchmark_group("engine_in_memory");
    g.throughput(Throughput::Elements(N as u64));
    // Each iteration: grant N credit, send N, feed them to the receiver.
    let mut send_t = Duration::ZERO;
    let mut recv_t = Duration::ZERO;
    let mut rounds = 0u32;
    g.bench_function("send_and_receive_1000_presettled_100b", |bch| {
        bch.iter(|| {
            a.flow(rl, N).unwrap();
            let mut f = a.output().split();
            b.feed(&mut f, now).unwrap();
            while b.poll_event().is_some() {}
            let t0 = Instant::now();
            for i in 0..N {
                b.send(sl, SendArgs { tag: &i.to_be_bytes(), message_format: 0, settled: true }, &ev).unwrap();
            }
            // As the driver does: the bytes leave (here: copied, as the kernel would copy them)
            // and the output buffer keeps its allocation.
            let mut wire = BytesMut::from(&b.output()[..]);
            b.output().clear();
            let t1 = Instant::now();
            a.feed(&mut wire, now).unwrap();
            let mut n = 0;
            while let Some(e) = a.poll_event() {
                if matches!(e, Event::Delivery(_)) {
                    n += 1;
                }
            }
            let t2 = Instant::now();
            send_t += t1 - t0;
            recv_t += t2 - t1;
            rounds += 1;
            assert_eq!(n, N);
            let mut back = a.output().split();
            b.feed(&mut back, now).unwrap();
            while b.poll_event().is_some() {}
        })
    });
    g.finish();
    let per = |d: Duration| d.as_nanos() as f64 / (rounds as f64 * N as f64);
    println!("engine_in_memory: sender {:.0} ns/transfer, receiver {:.0} ns/transfer", per(send_t), per(recv_t));
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("loopback");
    g.sample_size(20).measurement_time(Duration::from_secs(8));

    let mut rig = Rig::new(false);
    g.throughput(Throughput::Elements(EGRESS_PER_ITER));
    g.bench_function("egress_presettled_100b_events", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.run(EGRESS_PER_ITER, EGRESS_PER_ITER)).sum())
    });
    drop(rig);

    let mut rig = Rig::new(true);
    g.throughput(Throughput::Elements(BATCHES_PER_ITER * EVENTS_PER_BATCH));
    g.bench_function("batched_ingress_100x100b_events", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.run(BATCHES_PER_ITER, BATCHES_PER_ITER * EVENTS_PER_BATCH)).sum())
    });
    g.finish();
}

criterion_group!(benches, in_memory, bench);
criterion_main!(benches);
