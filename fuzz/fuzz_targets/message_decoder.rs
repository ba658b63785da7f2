//! Message-level decoding on arbitrary bytes: section scanning, full decoding, annotation lookup,
//! splicing and batch splitting, as the broker does them on every received event; and the
//! shortcut for a message of one data section agrees with full decoding.
#![no_main]

use bytes::{Bytes, BytesMut};
use ehub_amqp_codec::{
    batch_items, find_annotation, sole_data_section, splice_annotations, AnnotationEntries, Body, Message, SectionSpans,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = Bytes::copy_from_slice(data);
    let decoded = Message::decode(&raw);
    if let Some(body) = sole_data_section(&raw) {
        let m = decoded.as_ref().expect("a message of one data section decodes");
        assert_eq!(*m, Message { body: Body::Data(vec![raw.slice(body)]), ..Default::default() });
    }
    let scanned = SectionSpans::scan(&raw);
    // The fast walk of the common shape must agree with the generic one.
    assert_eq!(scanned, SectionSpans::scan_generic(&raw));
    if let Ok(spans) = scanned {
        if let Some(ma) = &spans.message_annotations {
            let _ = find_annotation(&raw, ma, "x-opt-partition-key");
        }
        let mut out = BytesMut::new();
        let ours = AnnotationEntries { replace_keys: &["x-opt-sequence-number"], entries: &[], count: 0 };
        let _ = splice_annotations(&mut out, &raw, &spans, ours, None);
        out.clear();
        let metrics = AnnotationEntries { replace_keys: &["last_enqueued_sequence_number"], entries: &[], count: 0 };
        let _ = splice_annotations(&mut out, &raw, &spans, ours, Some(metrics));
        let _ = batch_items(&raw, &spans);
    }
});
