//! The frame decoder on arbitrary bytes: splitting a stream into frames under a size limit and
//! decoding each (performatives, SASL frames, transfers with payloads). It may refuse input and
//! must never panic. Whatever decodes must encode, and that encoding must be stable: decoding
//! it and encoding again gives the same bytes. The fast transfer reader, given the same bytes,
//! either declines or reads exactly what the generic decoder reads.
#![no_main]

use bytes::BytesMut;
use ehub_amqp_codec::{decode_frame_bytes, decode_transfer_head, encode_frame, split_frame, FrameBody, Performative};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(raw)) = split_frame(&mut buf, 64 * 1024) {
        // As the engine uses it: on AMQP frames with the plain 8-byte header.
        let plain = raw[4] == 2 && raw[5] == 0;
        let fast =
            raw.get(8..).filter(|_| plain).and_then(decode_transfer_head).map(|(h, n)| (h.to_transfer(&raw[8..]), n));
        let decoded = decode_frame_bytes(raw.clone());
        if let Some((t, n)) = fast {
            let Ok(frame) = &decoded else { panic!("the fast reader took a frame the decoder refuses") };
            let FrameBody::Amqp(Performative::Transfer(slow), payload) = &frame.body else {
                panic!("the fast reader took a frame that is not a transfer")
            };
            assert_eq!(&t, slow, "the fast reader and the decoder agree");
            assert_eq!(payload.len(), raw.len() - 8 - n, "and on where the payload starts");
        }
        let Ok(frame) = decoded else { continue };
        let FrameBody::Amqp(p, payload) = frame.body else { continue };
        if !matches!(p, Performative::Transfer(_)) {
            assert!(payload.is_empty(), "only transfers carry a payload");
        }
        let mut once = BytesMut::new();
        encode_frame(&mut once, frame.channel, &p, &payload).expect("a decoded performative encodes");
        let again = decode_frame_bytes(once.clone().freeze()).expect("our encoding decodes");
        let FrameBody::Amqp(p2, payload2) = again.body else { panic!("an AMQP frame came back as another kind") };
        let mut twice = BytesMut::new();
        encode_frame(&mut twice, again.channel, &p2, &payload2).expect("re-encodes");
        assert_eq!(once, twice, "encoding is stable");
    }
});
