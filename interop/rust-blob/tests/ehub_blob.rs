//! The official Rust Blob checkpoint store against `ehub serve`'s Blob endpoint, through a
//! container SAS (the only account-level auth that store has): it claims, renews and
//! checkpoints, and `ehub checkpoints list` (ehub's own Blob store) reads what it wrote.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ehub_bin() -> std::path::PathBuf {
    std::env::var_os("EHUB_BIN").map(Into::into).unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/ehub")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_official_rust_blob_store_claims_and_checkpoints_in_ehub_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (amqp, blob) = (free_port(), free_port());
    let bin = ehub_bin();
    assert!(bin.exists(), "{} not found: run `cargo build --release` at the workspace root", bin.display());
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{amqp}"), "--listen-blob", &format!("127.0.0.1:{blob}")])
        .args(["--listen-management", "off", "--listen-kafka", "off"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("EHUB_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while !lines.next().expect("ehub serve exited early").unwrap().contains("ehub broker listening") {}
    std::thread::spawn(move || for _ in lines {});
    let _broker = Broker(child);

    let key = ehub_storage_auth::SharedKey::new(ehub_storage_auth::DEV_ACCOUNT, ehub_storage_auth::DEV_ACCOUNT_KEY)
        .unwrap();
    let sas = key.sign_sas(
        &[("sv", "2025-11-05"), ("sr", "c"), ("sp", "rwdl"), ("se", "2099-01-01T00:00:00Z"), ("spr", "https,http")],
        Some(("checkpoints", None)),
    );
    let url = format!("http://127.0.0.1:{blob}/devstoreaccount1/checkpoints?{sas}");
    let ns = format!("localhost:{amqp}");
    let out = Command::new(env!("CARGO_BIN_EXE_ehub-interop-rust-blob"))
        .args([&url, &ns, "eh1", "4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["owned"], 4);
    assert_eq!(v["checkpoints"], serde_json::json!({"0": 100, "1": 101, "2": 102, "3": 103}));

    // ehub's own store reads the official store's records, with the lag against the hub.
    let storage = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint=http://127.0.0.1:{blob}/devstoreaccount1;",
        ehub_storage_auth::DEV_ACCOUNT_KEY
    );
    let cs = format!(
        "Endpoint=sb://localhost:{amqp};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
    );
    let out = Command::new(&bin)
        .args(["--connection-string", &cs, "--hub", "eh1", "--output", "json", "checkpoints", "list"])
        .env("AZURE_STORAGE_CONNECTION_STRING", storage)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (i, p) in v["partitions"].as_array().unwrap().iter().enumerate() {
        assert_eq!(p["owner_id"], "official-rust");
        assert_eq!(p["checkpoint_sequence_number"], 100 + i as i64);
    }
}
