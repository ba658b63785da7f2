//! Writes the seed corpus: real conversations produced by our own initiator engine (SASL,
//! open, begin, attach in both roles, flow, single and multi-frame transfers, dispositions,
//! detach with an error, end, close), so fuzzing starts from valid protocol rather than noise.
//!
//! `cargo run --example make_corpus` (from `fuzz/`); writes `corpus/<target>/seed-*`.

use bytes::{Bytes, BytesMut};
use ehub_amqp_codec::{Attach, DeliveryState, Error, Message, Role, Source, Target, Value};
use ehub_amqp_endpoint::{Connection, ConnectionConfig, ConnectionRole, Event, SaslConfig, SendArgs};
use std::time::Instant;

fn conversation(sasl: SaslConfig, big: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
    let now = Instant::now();
    let mut c = Connection::new(
        ConnectionRole::Initiator,
        ConnectionConfig { sasl, max_frame_size: 4096, ..Default::default() },
        now,
    );
    let mut s = Connection::new(
        ConnectionRole::Acceptor,
        ConnectionConfig {
            sasl: SaslConfig::Server { mechanisms: vec!["ANONYMOUS".into(), "PLAIN".into()], allow_no_sasl: true },
            max_frame_size: 4096,
            ..Default::default()
        },
        now,
    );
    let mut client_bytes = Vec::new();
    let pump = |c: &mut Connection, s: &mut Connection, client_bytes: &mut Vec<u8>| {
        for _ in 0..8 {
            let mut x = c.output().split();
            client_bytes.extend_from_slice(&x);
            let _ = s.feed(&mut x, now);
            while let Some(e) = s.poll_event() {
                match e {
                    Event::AttachRequested { link, attach } => {
                        let reply = ehub_amqp_endpoint::AttachReply {
                            source: attach.source.clone(),
                            target: attach.target.clone(),
                            ..Default::default()
                        };
                        s.accept_link(link, reply).unwrap();
                        if attach.role == Role::Sender {
                            s.flow(link, 10).unwrap();
                        }
                    }
                    Event::Delivery(d) => s.accept_delivery(&d).unwrap(),
                    _ => {}
                }
            }
            let mut y = s.output().split();
            let _ = c.feed(&mut y, now);
        }
    };
    pump(&mut c, &mut s, &mut client_bytes);
    let ch = c.begin().unwrap();
    pump(&mut c, &mut s, &mut client_bytes);
    let mut a = Attach::new("sender".to_string(), 0, Role::Sender);
    a.source = Some(Source { address: Some("me".into()), ..Default::default() });
    a.target = Some(Target { address: Some("eh1/Partitions/0".into()), ..Default::default() });
    let tx = c.attach(ch, a).unwrap();
    let mut a = Attach::new("receiver".to_string(), 0, Role::Receiver);
    a.source = Some(Source { address: Some("eh1/ConsumerGroups/$Default/Partitions/0".into()), ..Default::default() });
    a.target = Some(Target { address: Some("me".into()), ..Default::default() });
    let rx = c.attach(ch, a).unwrap();
    pump(&mut c, &mut s, &mut client_bytes);
    c.flow(rx, 5).unwrap();
    let mut msg = Message::with_data(Bytes::from(vec![b'e'; if big { 10_000 } else { 100 }]));
    msg.application_properties = Some(vec![(Value::from("k"), Value::from("v"))]);
    let raw = msg.to_bytes().unwrap();
    for i in 0..3u8 {
        let _ = c.send(tx, SendArgs { tag: &[i], message_format: 0, settled: i == 2 }, &raw);
    }
    pump(&mut c, &mut s, &mut client_bytes);
    let _ = c.disposition(ch, Role::Receiver, 0, 2, true, Some(DeliveryState::Accepted));
    c.detach(tx, Some(Error::new("amqp:link:detach-forced", "bye"))).unwrap();
    pump(&mut c, &mut s, &mut client_bytes);
    c.end(ch, None).unwrap();
    c.close(None);
    pump(&mut c, &mut s, &mut client_bytes);
    // Individual frames, for the frame decoder: everything after the protocol headers.
    let mut frames = Vec::new();
    let mut rest = BytesMut::from(&client_bytes[..]);
    while rest.len() >= 8 {
        if rest.starts_with(b"AMQP") {
            let _ = rest.split_to(8);
            continue;
        }
        match ehub_amqp_codec::split_frame(&mut rest, u32::MAX) {
            Ok(Some(f)) => frames.push(f.to_vec()),
            _ => break,
        }
    }
    (client_bytes, frames)
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut frame_seeds = Vec::new();
    let mut message_seeds = Vec::new();
    for (i, (sasl, big)) in [
        (SaslConfig::Anonymous, false),
        (SaslConfig::Plain { username: "user".into(), password: "pw".into() }, true),
        (SaslConfig::None, false),
    ]
    .into_iter()
    .enumerate()
    {
        let (stream, frames) = conversation(sasl, big);
        let dir = root.join("acceptor");
        std::fs::create_dir_all(&dir).unwrap();
        // The first byte picks the chunk size: 0 feeds byte by byte, 63 in 64-byte chunks.
        for (j, split) in [0u8, 63, 200].into_iter().enumerate() {
            let mut seed = vec![split];
            seed.extend_from_slice(&stream);
            std::fs::write(dir.join(format!("seed-{i}-{j}")), seed).unwrap();
        }
        frame_seeds.extend(frames);
    }
    let mut m = Message::with_data(Bytes::from_static(b"hello"));
    m.message_annotations = Some(vec![(Value::Symbol("x-opt-partition-key".into()), Value::from("k"))]);
    message_seeds.push(m.to_bytes().unwrap().to_vec());
    message_seeds.push(Message::with_value(Value::from("text")).to_bytes().unwrap().to_vec());
    let mut batch = BytesMut::new();
    for _ in 0..3 {
        ehub_amqp_codec::put_data_section(&mut batch, &message_seeds[0]).unwrap();
    }
    message_seeds.push(batch.to_vec());
    for (target, seeds) in [("frame_decoder", &frame_seeds), ("message_decoder", &message_seeds)] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
        }
    }
    println!("wrote seeds under {}", root.display());
}
