//! The Blob store's journal decoder on arbitrary bytes (a damaged or torn file): it finds the
//! valid prefix and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (valid, _records) = ehub_blob_store::journal_valid_prefix(data);
    assert!(valid <= data.len());
});
