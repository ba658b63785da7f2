//! The `ehub` binary against an `ehub serve` process: the fixed command forms, piping send
//! into receive, benchmarks and exit codes.

use assert_cmd::Command;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

struct Server {
    child: Child,
    cs: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ehub"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env("EHUB_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("ehub serve exited before listening").unwrap();
        if line.contains("ehub broker listening") {
            break;
        }
    }
    // Keep draining the log so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let cs = format!(
        "Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
    );
    Server { child, cs, _dir: dir }
}

fn ehub(s: &Server) -> Command {
    let mut c = Command::cargo_bin("ehub").unwrap();
    c.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING").args(["--connection-string", &s.cs, "--hub", "eh1"]);
    c
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn fixed_forms_send_then_receive_json() {
    let s = serve();
    let out = ehub(&s).args(["send", "--partition", "0", "--count", "50", "--size", "64"]).assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("sent 50 events"));
    ehub(&s)
        .args(["send", "--partition", "0", "--property", "k=v", "--property", "n=1", "the body"])
        .assert()
        .success();
    let out = ehub(&s)
        .args([
            "receive",
            "--partition",
            "0",
            "--from",
            "earliest",
            "--count",
            "51",
            "--timeout",
            "10",
            "--output",
            "json",
        ])
        .assert()
        .success();
    let events = json_lines(&out.get_output().stdout);
    assert_eq!(events.len(), 51);
    for (i, e) in events[..50].iter().enumerate() {
        assert_eq!(e["sequence_number"], i as i64);
        assert_eq!(e["partition_id"], "0");
        let body = e["body"].as_str().unwrap();
        assert_eq!(body.len(), 64);
        assert!(body.starts_with(&format!("{i:010}")), "{body}");
        assert!(e["enqueued_time"].as_str().unwrap().ends_with('Z'));
        assert!(e["offset"].is_string());
    }
    let last = &events[50];
    assert_eq!(last["body"], "the body");
    assert_eq!(last["properties"], serde_json::json!({"k": "v", "n": "1"}));
}

#[test]
fn stdin_lines_pipe_into_receive_and_binary_bodies_are_base64() {
    let s = serve();
    ehub(&s).args(["send", "--partition-key", "user-1"]).write_stdin("alpha\nbeta\ngamma\n").assert().success();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("blob.bin");
    std::fs::write(&f, [0xffu8, 0x00, 0xfe]).unwrap();
    ehub(&s).args(["send", "--partition-key", "user-1", "--file"]).arg(&f).assert().success();
    // All partitions: the key put everything into one of them.
    let out = ehub(&s)
        .args(["receive", "--from", "earliest", "--count", "4", "--timeout", "10", "--output", "json"])
        .assert()
        .success();
    let events = json_lines(&out.get_output().stdout);
    let bodies: Vec<&str> = events.iter().map(|e| e["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["alpha", "beta", "gamma", "/wD+"]);
    assert_eq!(events[3]["body_encoding"], "base64");
    assert!(events.iter().all(|e| e["partition_key"] == "user-1"));
    let want = ehub_model::partition_for_key("user-1", 4).to_string();
    assert!(events.iter().all(|e| e["partition_id"] == want.as_str()));
}

#[test]
fn bench_fixed_forms_report_events_per_second_and_the_fsync_policy() {
    let s = serve();
    let out = ehub(&s)
        .args([
            "bench",
            "send",
            "--partition",
            "0",
            "--count",
            "20000",
            "--size",
            "100",
            "--batch",
            "100",
            "--output",
            "json",
        ])
        .assert()
        .success();
    let r: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(r["events"], 20000);
    assert!(r["events_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(r["broker"]["fsync"], "always");
    assert!(r["latency_us"]["p99"].as_u64().is_some());
    let out = ehub(&s)
        .args(["bench", "receive", "--partition", "0", "--from", "earliest", "--count", "20000", "--output", "json"])
        .assert()
        .success();
    let r: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(r["events"], 20000);
    assert_eq!(r["bytes"], 2_000_000);
    assert!(r["events_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn info_and_exit_codes_follow_the_error_kind() {
    let s = serve();
    let out = ehub(&s).args(["info", "--output", "json"]).assert().success();
    let r: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(r["name"], "eh1");
    assert_eq!(r["partitions"].as_array().unwrap().len(), 4);

    let mut c = Command::cargo_bin("ehub").unwrap();
    c.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING");
    let out = c.args(["--connection-string", &s.cs, "--hub", "nohub", "info"]).assert().code(5);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("hint:"));

    let bad = s.cs.replace("SAS_KEY_VALUE", "wrong");
    let mut c = Command::cargo_bin("ehub").unwrap();
    c.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING");
    c.args(["--connection-string", &bad, "--hub", "eh1", "send", "--partition", "0", "x"]).assert().code(3);
}

#[test]
fn with_no_connection_string_the_cli_uses_a_local_default_broker_and_says_so() {
    // Whether or not something listens on 127.0.0.1:5672, the CLI says what it connects to.
    let out = Command::cargo_bin("ehub")
        .unwrap()
        .timeout(T)
        .env_remove("EVENTHUB_CONNECTION_STRING")
        .args(["info"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("using the local `ehub serve` at 127.0.0.1:5672, hub eh1"), "{err}");
    assert_eq!(err.matches("no connection string given").count(), 1, "said once: {err}");
    assert!(matches!(out.status.code(), Some(0 | 4)), "{:?}: {err}", out.status);
}
