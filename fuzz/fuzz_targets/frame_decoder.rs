//! The frame decoder on arbitrary bytes: splitting a stream into frames under a size limit and
//! decoding each (performatives, SASL frames, transfers with payloads). It may refuse input and
//! must never panic. Whatever decodes must encode, and that encoding must be stable: decoding
//! it and encoding again gives the same bytes.
#![no_main]

use bytes::BytesMut;
use ehub_amqp_codec::{decode_frame_bytes, encode_frame, split_frame, FrameBody, Performative};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(raw)) = split_frame(&mut buf, 64 * 1024) {
        let Ok(frame) = decode_frame_bytes(raw) else { continue };
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
