//! Codec micro-benchmarks: a transfer frame carrying a 100-byte event, encoded and decoded, and
//! the message-level operations the broker and client do per event.
//!
//! `cargo bench -p ehub-amqp-codec`

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ehub_amqp_codec::{
    decode_frame_bytes, encode_frame, find_annotation, splice_annotations, split_frame, AnnotationEntries, Message,
    Performative, SectionSpans, Transfer, Value,
};

fn event() -> Bytes {
    let mut m = Message::with_data(Bytes::from(vec![b'x'; 100]));
    m.message_annotations = Some(vec![
        (Value::Symbol("x-opt-sequence-number".into()), Value::Long(123_456)),
        (Value::Symbol("x-opt-offset".into()), Value::String("987654321".into())),
        (Value::Symbol("x-opt-enqueued-time".into()), Value::Timestamp(ehub_amqp_codec::Timestamp(1_700_000_000_000))),
    ]);
    m.to_bytes().unwrap()
}

fn transfer(id: u32) -> Performative {
    Performative::Transfer(Transfer {
        handle: 1,
        delivery_id: Some(id),
        delivery_tag: Some(Bytes::copy_from_slice(&id.to_be_bytes())),
        message_format: Some(0),
        settled: Some(true),
        ..Default::default()
    })
}

fn bench(c: &mut Criterion) {
    let payload = Bytes::from(vec![b'x'; 100]);
    let mut g = c.benchmark_group("transfer_100b");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| {
        let mut out = BytesMut::with_capacity(1 << 20);
        let t = transfer(12345);
        b.iter(|| {
            if out.len() > (1 << 20) - 512 {
                out.clear();
            }
            encode_frame(&mut out, 0, black_box(&t), &payload).unwrap();
        })
    });
    let mut frame = BytesMut::new();
    encode_frame(&mut frame, 0, &transfer(7), &payload).unwrap();
    let frame = frame.freeze();
    g.bench_function("decode", |b| {
        b.iter(|| {
            let f = decode_frame_bytes(black_box(frame.clone())).unwrap();
            black_box(f);
        })
    });
    g.bench_function("split_and_decode_from_stream", |b| {
        // 1,000 frames back to back, as they arrive from a socket.
        let mut stream = BytesMut::new();
        for i in 0..1000 {
            encode_frame(&mut stream, 0, &transfer(i), &payload).unwrap();
        }
        let stream = stream.freeze();
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            let mut left = iters;
            while left > 0 {
                let mut buf = BytesMut::from(&stream[..]);
                while left > 0 {
                    let Some(raw) = split_frame(&mut buf, u32::MAX).unwrap() else { break };
                    black_box(decode_frame_bytes(raw).unwrap());
                    left -= 1;
                }
            }
            start.elapsed()
        })
    });
    g.finish();

    let raw = event();
    let mut g = c.benchmark_group("message_100b");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| {
        let m = Message::decode(&raw).unwrap();
        let mut out = BytesMut::with_capacity(256);
        b.iter(|| {
            out.clear();
            m.encode(&mut out).unwrap();
        })
    });
    g.bench_function("decode_full", |b| b.iter(|| black_box(Message::decode(black_box(&raw)).unwrap())));
    g.bench_function("scan_sections", |b| b.iter(|| black_box(SectionSpans::scan(black_box(&raw)).unwrap())));
    g.bench_function("find_annotation", |b| {
        let spans = SectionSpans::scan(&raw).unwrap();
        let ma = spans.message_annotations.clone().unwrap();
        b.iter(|| black_box(find_annotation(&raw, &ma, "x-opt-sequence-number").unwrap()))
    });
    g.bench_function("splice_annotations", |b| {
        let plain = Message::with_data(Bytes::from(vec![b'x'; 100])).to_bytes().unwrap();
        let spans = SectionSpans::scan(&plain).unwrap();
        // The broker's per-event work on the consumer path: its annotations, pre-encoded.
        let mut extra = BytesMut::new();
        ehub_amqp_codec::put_symbol("x-opt-sequence-number", &mut extra).unwrap();
        ehub_amqp_codec::put_long(5, &mut extra);
        let mut out = BytesMut::with_capacity(512);
        b.iter(|| {
            out.clear();
            let ours = AnnotationEntries { replace_keys: &["x-opt-sequence-number"], entries: &extra, count: 1 };
            splice_annotations(&mut out, &plain, &spans, ours, None).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
