//! Property tests: every type, performative and section round-trips; byte-level pins of the
//! encoding rules the official clients depend on (reference §1 rules 3-5, §5).

use bytes::{Bytes, BytesMut};
use ehub_amqp_codec::*;
use proptest::prelude::*;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u8>().prop_map(Value::Ubyte),
        any::<u16>().prop_map(Value::Ushort),
        any::<u32>().prop_map(Value::Uint),
        any::<u64>().prop_map(Value::Ulong),
        any::<i8>().prop_map(Value::Byte),
        any::<i16>().prop_map(Value::Short),
        any::<i32>().prop_map(Value::Int),
        any::<i64>().prop_map(Value::Long),
        any::<f32>().prop_filter("nan", |f| !f.is_nan()).prop_map(Value::Float),
        any::<f64>().prop_filter("nan", |f| !f.is_nan()).prop_map(Value::Double),
        any::<[u8; 4]>().prop_map(Value::Decimal32),
        any::<[u8; 8]>().prop_map(Value::Decimal64),
        any::<[u8; 16]>().prop_map(Value::Decimal128),
        any::<char>().prop_map(Value::Char),
        any::<i64>().prop_map(|t| Value::Timestamp(Timestamp(t))),
        any::<[u8; 16]>().prop_map(Value::Uuid),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|v| Value::Binary(Bytes::from(v))),
        ".{0,300}".prop_map(Value::String),
        "[a-z:\\-]{0,40}".prop_map(|s| Value::Symbol(Symbol(s))),
    ]
}

fn array() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::collection::vec(any::<i64>(), 0..20).prop_map(|v| Array {
            elem: ArrayType::Long,
            descriptor: None,
            items: v.into_iter().map(Value::Long).collect()
        }),
        proptest::collection::vec("[a-z]{0,300}", 0..5).prop_map(Array::strings),
        proptest::collection::vec("[a-z]{0,10}", 0..5).prop_map(Array::symbols),
        proptest::collection::vec(any::<bool>(), 0..5).prop_map(|v| Array {
            elem: ArrayType::Bool,
            descriptor: None,
            items: v.into_iter().map(Value::Bool).collect()
        }),
        proptest::collection::vec(any::<u32>(), 0..5).prop_map(|v| Array {
            elem: ArrayType::Uint,
            descriptor: Some(Box::new(Descriptor::Code(0x1234))),
            items: v.into_iter().map(Value::Uint).collect()
        }),
    ]
    .prop_map(Value::Array)
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![scalar(), array()];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..6).prop_map(Value::Map),
            (any::<u64>(), inner.clone())
                .prop_map(|(c, v)| Value::Described(Box::new(Described { descriptor: Descriptor::Code(c), value: v }))),
            ("[a-z:]{1,20}", inner).prop_map(|(s, v)| Value::Described(Box::new(Described {
                descriptor: Descriptor::Symbol(Symbol(s)),
                value: v
            }))),
        ]
    })
}

proptest! {
    #[test]
    fn values_round_trip(v in value()) {
        let mut out = BytesMut::new();
        encode_value(&v, &mut out).unwrap();
        let raw = out.freeze();
        let mut dec = Decoder::new(&raw);
        prop_assert_eq!(dec.read_value().unwrap(), v);
        prop_assert!(dec.is_empty());
        let mut skip = Decoder::new(&raw);
        skip.skip_value().unwrap();
        prop_assert!(skip.is_empty());
    }

    #[test]
    fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let raw = Bytes::from(data);
        let _ = Decoder::new(&raw).read_value();
        let _ = Decoder::new(&raw).skip_value();
        let _ = Message::decode(&raw);
        let _ = SectionSpans::scan(&raw);
        let mut buf = BytesMut::from(&raw[..]);
        let _ = decode_frame(&mut buf, 1 << 20);
    }

    #[test]
    fn messages_round_trip(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        props in proptest::collection::vec(("[a-z]{1,8}", scalar()), 0..5),
        msg_id in prop::option::of(any::<u64>()),
        key in prop::option::of("[a-z]{1,10}"),
    ) {
        let mut m = Message::with_data(Bytes::from(body));
        m.header = Some(Header { durable: Some(true), ..Default::default() });
        m.application_properties = Some(props.into_iter().map(|(k, v)| (Value::String(k), v)).collect());
        m.properties = msg_id.map(|id| Box::new(Properties { message_id: Some(Value::Ulong(id)), ..Default::default() }));
        m.message_annotations = key.map(|k| vec![(Value::Symbol("x-opt-partition-key".into()), Value::String(k))]);
        let raw = m.to_bytes().unwrap();
        prop_assert_eq!(Message::decode(&raw).unwrap(), m.clone());
        let spans = SectionSpans::scan(&raw).unwrap();
        prop_assert!(spans.body.is_some());
        prop_assert_eq!(spans.message_annotations.is_some(), m.message_annotations.is_some());
    }

    /// The fast section walk agrees with the generic one on every message shape, and on
    /// mutated encodings (where either both fail or both find the same spans).
    #[test]
    fn section_scan_fast_path_agrees_with_the_generic_walk(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        value_body in prop::option::of(scalar()),
        header in any::<bool>(),
        props in proptest::collection::vec(("[a-z]{1,8}", scalar()), 0..5),
        annotations in proptest::collection::vec(("x-[a-z]{1,8}", scalar()), 0..5),
        msg_id in prop::option::of(any::<u64>()),
        footer in any::<bool>(),
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut m = Message::with_data(Bytes::from(body));
        if let Some(v) = value_body {
            m.body = ehub_amqp_codec::Body::Value(v);
        }
        m.header = header.then(|| Header { durable: Some(true), ..Default::default() });
        m.application_properties = (!props.is_empty()).then(|| props.into_iter().map(|(k, v)| (Value::String(k), v)).collect());
        m.message_annotations = (!annotations.is_empty()).then(|| annotations.into_iter().map(|(k, v)| (Value::Symbol(k.into()), v)).collect());
        m.properties = msg_id.map(|id| Box::new(Properties { message_id: Some(Value::Ulong(id)), ..Default::default() }));
        m.footer = footer.then(|| vec![(Value::Symbol("x-f".into()), Value::Uint(1))]);
        let mut raw = m.to_bytes().unwrap().to_vec();
        prop_assert_eq!(SectionSpans::scan(&Bytes::from(raw.clone())), SectionSpans::scan_generic(&Bytes::from(raw.clone())));
        for (i, b) in mutations {
            if !raw.is_empty() {
                let at = i.index(raw.len());
                raw[at] = b;
            }
        }
        if let Some(c) = cut {
            raw.truncate(c.index(raw.len() + 1));
        }
        let raw = Bytes::from(raw);
        prop_assert_eq!(SectionSpans::scan(&raw), SectionSpans::scan_generic(&raw));
    }

    #[test]
    fn transfers_round_trip(handle in any::<u32>(), id in any::<u32>(), tag in proptest::collection::vec(any::<u8>(), 0..32),
                            fmt in prop::option::of(any::<u32>()), settled in prop::option::of(any::<bool>()), more in any::<bool>()) {
        let t = Transfer { handle, delivery_id: Some(id), delivery_tag: Some(Bytes::from(tag)), message_format: fmt, settled, more, ..Default::default() };
        round_trip_performative(Performative::Transfer(t), b"payload");
    }
}

fn round_trip_performative(p: Performative, payload: &[u8]) {
    let mut out = BytesMut::new();
    encode_frame(&mut out, 7, &p, payload).unwrap();
    // Rule 3: 0x00 0x53 <code> then list8/list32.
    assert_eq!(out[8], 0x00);
    assert_eq!(out[9], 0x53);
    assert!(out[11] == 0xc0 || out[11] == 0xd0, "performative list constructor {:#x}", out[11]);
    let f = decode_frame(&mut out, u32::MAX).unwrap().unwrap();
    assert_eq!(f.channel, 7);
    let FrameBody::Amqp(q, pl) = f.body else { panic!("not amqp") };
    assert_eq!(q, p);
    if matches!(p, Performative::Transfer(_)) {
        assert_eq!(&pl[..], payload);
    }
}

#[test]
fn every_performative_round_trips() {
    let filter = vec![(
        Value::Symbol("apache.org:selector-filter:string".into()),
        Value::Described(Box::new(Described {
            descriptor: Descriptor::Code(0x0000_468C_0000_0004),
            value: Value::String("amqp.annotation.x-opt-offset > '-1'".into()),
        })),
    )];
    let mut attach = Attach::new("link", 3, Role::Receiver);
    attach.source = Some(Source {
        address: Some("eh1/ConsumerGroups/$Default/Partitions/0".into()),
        filter: Some(filter),
        ..Default::default()
    });
    attach.target = Some(Target::address("t"));
    attach.initial_delivery_count = Some(0);
    attach.max_message_size = Some(1 << 20);
    attach.properties = Some(vec![(Value::Symbol("com.microsoft:epoch".into()), Value::Long(5))]);
    attach.desired_capabilities = vec![Symbol::from("com.microsoft:enable-receiver-runtime-metric")];
    let all = vec![
        Performative::Open(Open {
            container_id: "c".into(),
            hostname: Some("localhost".into()),
            max_frame_size: Some(65536),
            channel_max: Some(4999),
            idle_time_out: Some(240000),
            desired_capabilities: vec![Symbol::from("com.microsoft.georeplication")],
            properties: Some(vec![(Value::Symbol("product".into()), Value::String("x".into()))]),
            ..Default::default()
        }),
        Performative::Begin(Begin {
            remote_channel: Some(1),
            next_outgoing_id: 1,
            incoming_window: 5000,
            outgoing_window: 5000,
            handle_max: Some(255),
            ..Default::default()
        }),
        Performative::Attach(Box::new(attach)),
        Performative::Flow(Flow {
            next_incoming_id: Some(1),
            incoming_window: 10,
            next_outgoing_id: 2,
            outgoing_window: 3,
            handle: Some(0),
            delivery_count: Some(0),
            link_credit: Some(300),
            drain: true,
            ..Default::default()
        }),
        Performative::Disposition(Disposition {
            role: Role::Receiver,
            first: 1,
            last: Some(9),
            settled: true,
            state: Some(DeliveryState::Accepted),
            batchable: false,
        }),
        Performative::Disposition(Disposition {
            role: Role::Receiver,
            first: 1,
            last: None,
            settled: true,
            state: Some(DeliveryState::Rejected(Some(Error::new("amqp:link:message-size-exceeded", "too big")))),
            batchable: false,
        }),
        Performative::Disposition(Disposition {
            role: Role::Sender,
            first: 0,
            last: None,
            settled: false,
            state: Some(DeliveryState::Modified {
                delivery_failed: Some(true),
                undeliverable_here: None,
                message_annotations: None,
            }),
            batchable: false,
        }),
        Performative::Disposition(Disposition {
            role: Role::Sender,
            first: 0,
            last: None,
            settled: false,
            state: Some(DeliveryState::Received { section_number: 1, section_offset: 2 }),
            batchable: false,
        }),
        Performative::Disposition(Disposition {
            role: Role::Sender,
            first: 0,
            last: None,
            settled: true,
            state: Some(DeliveryState::Released),
            batchable: true,
        }),
        Performative::Detach(Detach { handle: 1, closed: true, error: Some(Error::new("amqp:link:stolen", "stolen")) }),
        Performative::End(End { error: None }),
        Performative::Close(Close { error: Some(Error::new("amqp:connection:forced", "bye")) }),
    ];
    for p in all {
        round_trip_performative(p, b"");
    }
}

#[test]
fn sasl_frames_round_trip() {
    for s in [
        SaslFrame::Mechanisms(vec![Symbol::from("MSSBCBS"), Symbol::from("ANONYMOUS")]),
        SaslFrame::Init {
            mechanism: "ANONYMOUS".into(),
            initial_response: Some(Bytes::from_static(b"key")),
            hostname: Some("h".into()),
        },
        SaslFrame::Challenge(Bytes::from_static(b"c")),
        SaslFrame::Response(Bytes::from_static(b"r")),
        SaslFrame::Outcome { code: SaslCode::Ok, additional_data: None },
    ] {
        let mut out = BytesMut::new();
        encode_sasl_frame(&mut out, &s).unwrap();
        let f = decode_frame(&mut out, 512).unwrap().unwrap();
        assert_eq!(f.body, FrameBody::Sasl(s));
    }
}

#[test]
fn accepted_state_uses_list8_not_list0() {
    let mut out = BytesMut::new();
    DeliveryState::Accepted.encode(&mut out).unwrap();
    assert_eq!(&out[..], &[0x00, 0x53, 0x24, 0xc0, 0x01, 0x00]);
}

#[test]
fn sections_use_small_ulong_descriptors() {
    let mut m = Message::with_data(Bytes::from_static(b"x"));
    m.header = Some(Header { durable: Some(true), ..Default::default() });
    m.message_annotations = Some(vec![]);
    m.application_properties = Some(vec![(Value::from("a"), Value::Int(1))]);
    let raw = m.to_bytes().unwrap();
    assert_eq!(&raw[..4], &[0x00, 0x53, 0x70, 0xc0]);
    let spans = SectionSpans::scan(&raw).unwrap();
    for r in [spans.header, spans.message_annotations, spans.application_properties, spans.body].into_iter().flatten() {
        assert_eq!(&raw[r.start..r.start + 2], &[0x00, 0x53]);
    }
}

#[test]
fn symbolic_descriptors_and_any_section_order_decode() {
    // Python writes delivery annotations last; symbolic section descriptors are legal.
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0x00, 0xa3, 16]);
    out.extend_from_slice(b"amqp:data:binary");
    out.extend_from_slice(&[0xa0, 2, b'h', b'i']);
    out.extend_from_slice(&[0x00, 0x53, 0x71, 0xc1, 0x01, 0x00]);
    let raw = out.freeze();
    let m = Message::decode(&raw).unwrap();
    assert_eq!(m.body, Body::Data(vec![Bytes::from_static(b"hi")]));
    assert_eq!(m.delivery_annotations, Some(vec![]));
}

fn entry(key: &str, value: Value) -> BytesMut {
    let mut out = BytesMut::new();
    encode_value(&Value::Symbol(key.into()), &mut out).unwrap();
    encode_value(&value, &mut out).unwrap();
    out
}

#[test]
fn splice_replaces_broker_annotations_and_keeps_foreign_ones() {
    let mut m = Message::with_data(Bytes::from_static(b"body"));
    m.message_annotations = Some(vec![
        (Value::Symbol("x-opt-sequence-number".into()), Value::Long(99)),
        (Value::Symbol("custom".into()), Value::Int(7)),
    ]);
    m.delivery_annotations = Some(vec![(Value::Symbol("senders".into()), Value::Int(1))]);
    let raw = m.to_bytes().unwrap();
    let spans = SectionSpans::scan(&raw).unwrap();
    let extra = entry("x-opt-sequence-number", Value::Long(5));
    let ours = AnnotationEntries { replace_keys: &["x-opt-sequence-number"], entries: &extra, count: 1 };
    let mut out = BytesMut::new();
    splice_annotations(&mut out, &raw, &spans, ours, None).unwrap();
    let got = Message::decode(&out.freeze()).unwrap();
    // The sender's delivery annotations reach the receiver, as the service delivers them.
    assert_eq!(got.delivery_annotations, Some(vec![(Value::Symbol("senders".into()), Value::Int(1))]));
    assert_eq!(
        got.message_annotations.unwrap(),
        vec![
            (Value::Symbol("custom".into()), Value::Int(7)),
            (Value::Symbol("x-opt-sequence-number".into()), Value::Long(5)),
        ]
    );
    assert_eq!(got.body, Body::Data(vec![Bytes::from_static(b"body")]));
}

#[test]
fn splice_puts_runtime_metrics_beside_the_senders_delivery_annotations() {
    let metrics = entry("last_enqueued_sequence_number", Value::Long(41));
    let ours = AnnotationEntries { replace_keys: &["last_enqueued_sequence_number"], entries: &metrics, count: 1 };
    let plain = AnnotationEntries::default();
    // With delivery annotations of the sender's: theirs first, ours replacing a clash.
    let mut m = Message::with_data(Bytes::from_static(b"body"));
    m.delivery_annotations = Some(vec![
        (Value::Symbol("senders".into()), Value::String("kept".into())),
        (Value::Symbol("last_enqueued_sequence_number".into()), Value::Long(-7)),
    ]);
    let raw = m.to_bytes().unwrap();
    let mut out = BytesMut::new();
    splice_annotations(&mut out, &raw, &SectionSpans::scan(&raw).unwrap(), plain, Some(ours)).unwrap();
    let got = Message::decode(&out.freeze()).unwrap();
    assert_eq!(
        got.delivery_annotations.unwrap(),
        vec![
            (Value::Symbol("senders".into()), Value::String("kept".into())),
            (Value::Symbol("last_enqueued_sequence_number".into()), Value::Long(41)),
        ]
    );
    // Without: ours alone.
    let raw = Message::with_data(Bytes::from_static(b"body")).to_bytes().unwrap();
    let mut out = BytesMut::new();
    splice_annotations(&mut out, &raw, &SectionSpans::scan(&raw).unwrap(), plain, Some(ours)).unwrap();
    let got = Message::decode(&out.freeze()).unwrap();
    assert_eq!(
        got.delivery_annotations.unwrap(),
        vec![(Value::Symbol("last_enqueued_sequence_number".into()), Value::Long(41))]
    );
    assert_eq!(got.body, Body::Data(vec![Bytes::from_static(b"body")]));
}

#[test]
fn batch_items_are_zero_copy_data_sections() {
    let mut env = BytesMut::new();
    for i in 0..3u8 {
        let inner = Message::with_data(Bytes::from(vec![i; 300])).to_bytes().unwrap();
        let before = env.len();
        put_data_section(&mut env, &inner).unwrap();
        assert_eq!(env.len() - before, data_section_size(inner.len()));
    }
    let raw = env.freeze();
    let spans = SectionSpans::scan(&raw).unwrap();
    let items = batch_items(&raw, &spans).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(Message::decode(&items[2]).unwrap().body, Body::Data(vec![Bytes::from(vec![2u8; 300])]));
}

#[test]
fn oversized_frame_is_refused_before_buffering() {
    let mut buf = BytesMut::from(&[0x00, 0x10, 0x00, 0x00, 2, 0, 0, 0][..]);
    assert!(matches!(decode_frame(&mut buf, 65536), Err(DecodeError::TooLarge { limit: 65536, actual: 0x0010_0000 })));
}

#[test]
fn hostile_counts_do_not_allocate() {
    // list32 declaring 4 billion elements in 8 bytes.
    let raw = Bytes::from_static(&[0xd0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(Decoder::new(&raw).read_value(), Err(DecodeError::Malformed { .. })));
    // Deep nesting is bounded.
    let mut deep = Vec::new();
    for _ in 0..10_000 {
        deep.extend_from_slice(&[0x00]);
    }
    deep.push(0x40);
    let raw = Bytes::from(deep);
    assert!(Decoder::new(&raw).read_value().is_err());
}

#[test]
fn partition_ids_array_encoding() {
    let mut out = BytesMut::new();
    encode_value(&Value::Array(Array::strings(["0", "1"])), &mut out).unwrap();
    assert_eq!(&out[..], &[0xe0, 0x06, 0x02, 0xa1, 0x01, b'0', 0x01, b'1']);
}

/// A transfer frame whose fields use the widths a peer may choose instead of ours.
fn transfer_frame(handle: &[u8], delivery_id: &[u8], tag: &[u8]) -> Bytes {
    let mut fields = Vec::new();
    fields.extend_from_slice(handle);
    fields.extend_from_slice(delivery_id);
    fields.extend_from_slice(tag);
    fields.extend_from_slice(&[0x43, 0x41]); // message-format uint0, settled true
    let mut body = vec![0x00, 0x53, 0x14, 0xc0, (fields.len() + 1) as u8, 5];
    body.extend_from_slice(&fields);
    body.extend_from_slice(b"payload");
    let mut frame = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[2, 0, 0, 0]);
    frame.extend_from_slice(&body);
    Bytes::from(frame)
}

#[test]
fn scalar_fields_decode_in_every_width_and_refuse_what_does_not_fit() {
    // handle as ulong, delivery-id as ushort, tag as vbin32: the fast paths and the general
    // path must agree on the result.
    let raw = transfer_frame(&[0x80, 0, 0, 0, 0, 0, 0, 0, 5], &[0x60, 0, 7], &[0xb0, 0, 0, 0, 2, 0xab, 0xcd]);
    let FrameBody::Amqp(Performative::Transfer(t), payload) = decode_frame_bytes(raw).unwrap().body else {
        panic!("a transfer")
    };
    assert_eq!((t.handle, t.delivery_id, t.settled, t.message_format), (5, Some(7), Some(true), Some(0)));
    assert_eq!(t.delivery_tag.as_deref(), Some(&[0xab, 0xcd][..]));
    assert_eq!(&payload[..], b"payload");
    // A handle of 2^40 does not fit a uint.
    let raw = transfer_frame(&[0x80, 0, 0, 1, 0, 0, 0, 0, 0], &[0x43], &[0xa0, 0]);
    assert!(decode_frame_bytes(raw).is_err());
    // A vbin8 tag longer than the frame is an error, not a slice past the end.
    let mut raw = transfer_frame(&[0x43], &[0x43], &[0xa0, 200]).to_vec();
    raw.truncate(raw.len() - b"payload".len());
    assert!(decode_frame_bytes(Bytes::from(raw)).is_err());
}

proptest! {
    /// The one-copy transfer header decodes to exactly the transfer it describes, in both its
    /// short form and the complete-field-list form some peers need.
    #[test]
    fn transfer_head_fast_path_decodes_to_its_fields(
        handle in any::<u32>(),
        delivery_id in proptest::option::of(any::<u32>()),
        tag in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=32)),
        message_format in proptest::option::of(any::<u32>()),
        settled in proptest::option::of(any::<bool>()),
        more in any::<bool>(),
        all_fields in any::<bool>(),
    ) {
        let mut out = BytesMut::new();
        prop_assert!(put_transfer_head(&mut out, handle, delivery_id, tag.as_deref(), message_format, settled, more, all_fields).is_ok());
        let raw = out.freeze();
        let mut dec = Decoder::new(&raw);
        let Performative::Transfer(t) = Performative::decode(&mut dec).unwrap() else { panic!("not a transfer") };
        prop_assert_eq!(dec.position(), raw.len(), "nothing left over");
        let want = Transfer {
            handle,
            delivery_id,
            delivery_tag: tag.map(Bytes::from),
            message_format,
            settled,
            more,
            ..Default::default()
        };
        prop_assert_eq!(&t, &want);
        // The receive side's fast reader takes this shape and agrees with the generic decoder.
        let (head, n) = decode_transfer_head(&raw).expect("the fast reader takes this shape");
        prop_assert_eq!(n, raw.len());
        prop_assert_eq!(head.to_transfer(&raw), want);
    }

    /// The fast transfer reader either declines or agrees with the generic decoder, for
    /// transfers with any field set (encoded by the generic encoder) and for arbitrary bytes.
    #[test]
    fn transfer_fast_reader_agrees_or_declines(
        handle in any::<u32>(),
        delivery_id in proptest::option::of(any::<u32>()),
        tag in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        message_format in proptest::option::of(any::<u32>()),
        settled in proptest::option::of(any::<bool>()),
        more in any::<bool>(),
        rcv_settle_mode in proptest::option::of(0u8..2),
        accepted in any::<bool>(),
        flags in any::<[bool; 3]>(),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let t = Transfer {
            handle,
            delivery_id,
            delivery_tag: tag.map(Bytes::from),
            message_format,
            settled,
            more,
            rcv_settle_mode,
            state: accepted.then_some(DeliveryState::Accepted),
            resume: flags[0],
            aborted: flags[1],
            batchable: flags[2],
        };
        let mut out = BytesMut::new();
        Performative::Transfer(t.clone()).encode(&mut out).unwrap();
        let raw = out.freeze();
        if let Some((fast, n)) = decode_transfer_head(&raw) {
            prop_assert_eq!(n, raw.len());
            prop_assert_eq!(fast.to_transfer(&raw), t);
        }
        let mut fuzzed = raw.to_vec();
        for (i, b) in noise.iter().enumerate() {
            let at = (usize::from(*b) * 7 + i) % fuzzed.len();
            fuzzed[at] ^= b.rotate_left(i as u32) | 1;
        }
        let fuzzed = Bytes::from(fuzzed);
        if let Some((fast, n)) = decode_transfer_head(&fuzzed) {
            let mut dec = Decoder::new(&fuzzed);
            let Ok(Performative::Transfer(slow)) = Performative::decode(&mut dec) else {
                return Err(TestCaseError::fail("fast reader accepted what the decoder refuses"));
            };
            prop_assert_eq!(dec.position(), n);
            prop_assert_eq!(fast.to_transfer(&fuzzed), slow);
        }
    }
}

#[test]
fn transfer_head_refuses_tags_beyond_the_spec_maximum() {
    let mut out = BytesMut::new();
    assert!(put_transfer_head(&mut out, 0, Some(0), Some(&[0u8; 33]), Some(0), Some(true), false, true).is_err());
    assert!(out.is_empty(), "nothing written when refused");
}

proptest! {
    /// The in-place readers agree with the encoder for every width it picks, and decline
    /// other types.
    #[test]
    fn raw_scalar_readers_agree_with_the_encoder(x in any::<i64>(), i in any::<i32>(), text in ".{0,300}") {
        let enc = |v: Value| { let mut b = BytesMut::new(); encode_value(&v, &mut b).unwrap(); b.freeze() };
        prop_assert_eq!(raw_long(&enc(Value::Long(x))), Some(x));
        prop_assert_eq!(raw_long(&enc(Value::Int(i))), Some(i64::from(i)));
        prop_assert_eq!(raw_timestamp(&enc(Value::Timestamp(Timestamp(x)))), Some(x));
        prop_assert_eq!(raw_long(&enc(Value::Timestamp(Timestamp(x)))), None);
        prop_assert_eq!(raw_timestamp(&enc(Value::Long(x))), None);
        for v in [Value::String(text.clone()), Value::Symbol(text.as_str().into())] {
            let raw = enc(v);
            prop_assert_eq!(raw_text(&raw), Some(text.as_str()));
            let r = raw_text_range(&raw).unwrap();
            prop_assert_eq!(&raw[r], text.as_bytes());
        }
        prop_assert_eq!(raw_text_range(&enc(Value::Long(x))), None);
    }
}
