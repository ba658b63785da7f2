//! A whole acceptor connection fed arbitrary bytes, in chunks whose sizes come from the input.
//! The harness behaves like a broker: it accepts every link, grants credit, settles deliveries
//! and answers with transfers, so the fuzzer can reach deep states. The engine may close the
//! connection with an error; it must never panic.
#![no_main]

use bytes::BytesMut;
use ehub_amqp_codec::{Role, Source, Target};
use ehub_amqp_endpoint::{AttachReply, Connection, ConnectionConfig, ConnectionRole, Event, SaslConfig, SendArgs};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let now = Instant::now();
    let cfg = ConnectionConfig {
        sasl: SaslConfig::Server { mechanisms: vec!["ANONYMOUS".into(), "PLAIN".into()], allow_no_sasl: true },
        max_frame_size: 4096,
        max_message_size: 16 * 1024,
        idle_timeout: Some(Duration::from_secs(1)),
        session_window: 8,
        handle_max: 15,
        channel_max: 7,
        ..Default::default()
    };
    let mut conn = Connection::new(ConnectionRole::Acceptor, cfg, now);
    let chunk = usize::from(split % 64) + 1;
    let mut input = BytesMut::new();
    for (i, piece) in data.chunks(chunk).enumerate() {
        input.extend_from_slice(piece);
        let t = now + Duration::from_millis(i as u64 * 50);
        if conn.feed(&mut input, t).is_err() {
            break;
        }
        let _ = conn.handle_timeout(t);
        while let Some(e) = conn.poll_event() {
            match e {
                Event::AttachRequested { link, attach } => {
                    let reply = AttachReply {
                        source: attach.source.clone().or(Some(Source::default())),
                        target: attach.target.clone().or(Some(Target::default())),
                        max_message_size: Some(16 * 1024),
                        ..Default::default()
                    };
                    if conn.accept_link(link, reply).is_ok() && attach.role == Role::Sender {
                        let _ = conn.flow(link, 4);
                    }
                }
                Event::Delivery(d) => {
                    let _ = conn.accept_delivery(&d);
                    let _ = conn.top_up_credit(d.link, 4);
                }
                Event::LinkFlow { link } if conn.link(link).is_some_and(|l| l.role == Role::Sender) => {
                    let _ = conn.send(link, SendArgs { tag: b"t", message_format: 0, settled: true }, &[0u8; 700]);
                }
                _ => {}
            }
        }
        conn.output().clear();
        if conn.is_done() {
            break;
        }
    }
});
