//! A Blob request from arbitrary bytes: method, request-target and header lines separated by
//! `\n`. Decoding it (path, query, metadata, conditions, range), its SharedKey string to sign
//! in both header orders, verifying a signature and reading a SAS never panic.
#![no_main]

use ehub_storage_auth::{sas::Sas, string_to_sign_ordered, HeaderOrder, SharedKey};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(Ok(method)) = lines.next().map(Method::from_bytes) else { return };
    let Some(Ok(uri)) = lines.next().map(Uri::try_from) else { return };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(&line[colon + 1..])) {
            headers.append(n, v);
        }
    }
    let _ = ehub_broker_blob::parse(&method, &uri, &headers);
    let key = SharedKey::new("devstoreaccount1", ehub_storage_auth::DEV_ACCOUNT_KEY).unwrap();
    for order in [HeaderOrder::Ordinal, HeaderOrder::Collation] {
        let _ = string_to_sign_ordered("devstoreaccount1", &method, &uri, &headers, order);
    }
    if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let _ = key.verify(&method, &uri, &headers, auth);
    }
    if let Some(sas) = Sas::parse(uri.query().unwrap_or_default()) {
        let _ = key.verify_sas(&sas, "c", Some("b"));
        let _ = sas.is_valid_at(std::time::SystemTime::now());
    }
});
