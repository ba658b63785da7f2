//! The frame decoder on arbitrary bytes: splitting a stream into frames under a size limit and
//! decoding each (performatives, SASL frames, transfers with payloads). It may refuse input,
//! never panic, and never allocate beyond what the input justifies.
#![no_main]

use bytes::BytesMut;
use ehub_amqp_codec::{decode_frame_bytes, split_frame, Performative};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(raw)) = split_frame(&mut buf, 64 * 1024) {
        if let Ok(frame) = decode_frame_bytes(raw) {
            // Whatever decodes must encode again.
            if let ehub_amqp_codec::FrameBody::Amqp(p, payload) = frame.body {
                let mut out = BytesMut::new();
                if !matches!(p, Performative::Transfer(_)) {
                    assert!(payload.is_empty());
                }
                let _ = ehub_amqp_codec::encode_frame(&mut out, frame.channel, &p, &payload);
            }
        }
    }
});
