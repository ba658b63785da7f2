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
    /// The development account's connection string for the broker's Blob endpoint.
    storage: String,
    /// The management endpoint's URL.
    management: String,
    /// The broker's "listening" log line (addresses of every listener).
    listening: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Kills the broker (SIGKILL) and starts another on the same data directory.
    fn restart(mut self, extra: &[&std::ffi::OsStr]) -> Server {
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        drop(self);
        serve_in(dir, extra, "info", None)
    }

    /// The broker's resident memory (VmRSS), in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
        kib.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
    }
}

fn serve() -> Server {
    serve_with(&[])
}

/// An `ehub serve` on a free port and a temporary data directory, with `extra` arguments.
fn serve_with(extra: &[&std::ffi::OsStr]) -> Server {
    serve_logged(extra, "info", None)
}

/// [`serve_with`] at log filter `log`, every log line copied into `capture` when given.
fn serve_logged(
    extra: &[&std::ffi::OsStr],
    log: &str,
    capture: Option<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
) -> Server {
    serve_in(tempfile::tempdir().unwrap(), extra, log, capture)
}

/// [`serve_logged`] on the data directory `dir`.
fn serve_in(
    dir: tempfile::TempDir,
    extra: &[&std::ffi::OsStr],
    log: &str,
    capture: Option<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ehub"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--listen-blob",
            "127.0.0.1:0",
            "--listen-management",
            "127.0.0.1:0",
            "--listen-kafka",
            "127.0.0.1:0",
            // Used only with TLS on; the default is the fixed 9093.
            "--listen-kafka-tls",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(extra)
        .env("EHUB_LOG", log)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (blob, management, listening) = loop {
        let line = lines.next().expect("ehub serve exited before listening").unwrap();
        if let Some(c) = &capture {
            c.lock().unwrap().push(line.clone());
        }
        if line.contains("ehub broker listening") {
            let field = |name: &str| {
                line.split(&format!("{name}=")).nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_owned()
            };
            break (field("listen_blob"), format!("http://{}", field("listen_management")), line.clone());
        }
    };
    // Keep draining the log so the broker never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(c) = &capture {
                c.lock().unwrap().push(line);
            }
        }
    });
    let cs = format!(
        "Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
    );
    let storage = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint=http://{blob}/devstoreaccount1;",
        ehub_storage_auth::DEV_ACCOUNT_KEY
    );
    Server { child, cs, storage, management, listening, _dir: dir }
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

/// A processor keeps its checkpoints in the broker's own Blob endpoint (its `checkpoints`
/// container exists from the start), and `ehub checkpoints list` shows them with the lag.
#[test]
fn a_processor_checkpoints_in_ehub_serve_and_checkpoints_list_shows_owner_checkpoint_and_lag() {
    let s = serve();
    ehub(&s).args(["send", "--partition", "0", "--count", "10"]).assert().success();
    ehub(&s).args(["send", "--partition", "1", "--count", "5"]).assert().success();
    ehub(&s)
        .env("AZURE_STORAGE_CONNECTION_STRING", &s.storage)
        .args(["receive", "--checkpoint-store", "blob:checkpoints", "--checkpoint-every", "1", "--count", "15"])
        .args(["--from", "earliest", "--timeout", "20", "--balance-interval", "0.2", "--ownership-expiry", "1"])
        .assert()
        .success();
    ehub(&s).args(["send", "--partition", "1", "--count", "3"]).assert().success();
    let out = ehub(&s)
        .env("AZURE_STORAGE_CONNECTION_STRING", &s.storage)
        .args(["--output", "json", "checkpoints", "list"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let parts = v["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0]["checkpoint_sequence_number"], 9);
    assert_eq!(parts[0]["lag"], 0);
    assert_eq!(parts[1]["checkpoint_sequence_number"], 4);
    assert_eq!(parts[1]["last_enqueued_sequence_number"], 7);
    assert_eq!(parts[1]["lag"], 3);
    assert_eq!(parts[2]["lag"], 0);
    assert_eq!(v["total_lag"], 3);
    assert_eq!(parts[0]["owner_id"], "", "released when the processor stopped");
    let out = ehub(&s)
        .env("AZURE_STORAGE_CONNECTION_STRING", &s.storage)
        .args(["checkpoints", "list", "--consumer-group", "$Default"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("(released)") && text.contains("total lag: 3"), "{text}");
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

/// An `ehub serve` with an 8-partition hub `eh8` (fsync=never).
fn serve_eight_partitions(dir: &std::path::Path) -> Server {
    let config = dir.join("eh8.toml");
    std::fs::write(&config, "[[hubs]]\nname = \"eh8\"\npartitions = 8\n").unwrap();
    serve_with(&["--fsync".as_ref(), "never".as_ref(), "--config".as_ref(), config.as_os_str()])
}

/// A `receive --checkpoint-store` process; its JSON events are collected by a thread, its log
/// (the processor's claims and losses) goes to a file that a timed-out wait shows.
struct Processor {
    child: std::process::Child,
    events: std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>>,
    log: tempfile::NamedTempFile,
}

impl Processor {
    /// The last lines of this processor's log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// What the processors were doing, for a wait that timed out: the live owners and each log.
fn processors_state(db: &std::path::Path, s: &Server, ps: &[&Processor]) -> String {
    let mut out = format!("live owners (partitions each): {:?}", owners(db, s));
    for (i, p) in ps.iter().enumerate() {
        out += &format!("\n--- processor {i} (pid {}) log tail:\n{}", p.child.id(), p.log_tail());
    }
    out
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn processor(s: &Server, store: &str, strategy: &str) -> Processor {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ehub"))
        .env_remove("EVENTHUB_CONNECTION_STRING")
        .env("EHUB_LOG", "warn,ehub::processor=debug")
        .args(["--connection-string", &s.cs, "--hub", "eh8", "--output", "json", "receive", "--follow"])
        .args(["--checkpoint-store", store, "--checkpoint-every", "5", "--strategy", strategy])
        .args(["--balance-interval", "0.3", "--ownership-expiry", "1.5"])
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            let p = v["partition_id"].as_str().unwrap().to_owned();
            sink.lock().unwrap().push((p, v["sequence_number"].as_i64().unwrap()));
        }
    });
    Processor { child, events, log }
}

fn owners(store_path: &std::path::Path, s: &Server) -> std::collections::HashMap<String, usize> {
    use ehub::checkpoint::CheckpointStore;
    let port = s.cs.split(':').nth(2).unwrap().split(';').next().unwrap().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = ehub_checkpoint_sqlite::SqliteCheckpointStore::open(store_path).await.unwrap();
        let now = std::time::SystemTime::now();
        let mut count = std::collections::HashMap::new();
        for o in store.list_ownerships(&format!("127.0.0.1:{port}"), "eh8", "$default").await.unwrap() {
            let live = o
                .last_modified
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() < Duration::from_millis(1500));
            if !o.is_released() && live {
                *count.entry(o.owner_id).or_default() += 1;
            }
        }
        count
    })
}

/// Waits until the three processors `ps` hold 3, 3 and 2 of the 8 partitions.
fn wait_for_split(db: &std::path::Path, s: &Server, ps: &[&Processor]) -> Duration {
    let split = || {
        let mut n: Vec<usize> = owners(db, s).into_values().collect();
        n.sort_unstable();
        n == [2, 3, 3]
    };
    wait_until_or("a 3/3/2 split", Duration::from_secs(30), split, || processors_state(db, s, ps))
}

fn wait_until(what: &str, limit: Duration, done: impl FnMut() -> bool) -> Duration {
    wait_until_or(what, limit, done, String::new)
}

/// [`wait_until`], with `state` in the failure message when it times out.
fn wait_until_or(what: &str, limit: Duration, mut done: impl FnMut() -> bool, state: impl Fn() -> String) -> Duration {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() >= limit {
            panic!("timed out after {limit:?} waiting for: {what}\n{}", state());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn send_to_eight(s: &Server, per_partition: u32) {
    for p in 0..8 {
        let mut c = Command::cargo_bin("ehub").unwrap();
        c.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING");
        c.args(["--connection-string", &s.cs, "--hub", "eh8", "send", "--partition", &p.to_string()])
            .args(["--count", &per_partition.to_string(), "--size", "20"])
            .assert()
            .success();
    }
}

fn seen_all(ps: &[&Processor], per_partition: i64) -> bool {
    let mut seen = std::collections::HashSet::new();
    for p in ps {
        seen.extend(p.events.lock().unwrap().iter().cloned());
    }
    (0..8).all(|p| (0..per_partition).all(|q| seen.contains(&(p.to_string(), q))))
}

#[test]
fn three_processor_processes_share_eight_partitions_survive_a_kill_and_hand_over_on_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_eight_partitions(dir.path());
    let db = dir.path().join("cp.db");
    let store = format!("sqlite:{}", db.display());
    send_to_eight(&s, 20);
    let a = processor(&s, &store, "balanced");
    let b = processor(&s, &store, "balanced");
    let mut c = processor(&s, &store, "balanced");
    let settled = wait_for_split(&db, &s, &[&a, &b, &c]);
    eprintln!("balanced: 3 processors settled on 8 partitions in {settled:?}");
    wait_until("every event processed", Duration::from_secs(30), || seen_all(&[&a, &b, &c], 20));

    // kill -9 one: the others take its partitions once its ownerships expire, and resume from its
    // last checkpoints: nothing lost.
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    let took = wait_until_or(
        "the survivors hold all 8",
        Duration::from_secs(30),
        || {
            let o = owners(&db, &s);
            o.len() == 2 && o.values().sum::<usize>() == 8
        },
        || processors_state(&db, &s, &[&a, &b]),
    );
    eprintln!("after kill -9: all 8 partitions owned again {took:?} later (expiry 1.5 s)");
    send_to_eight(&s, 20);
    wait_until("the second round processed", Duration::from_secs(30), || seen_all(&[&a, &b, &c], 40));

    // A graceful stop (SIGTERM): b checkpoints what it printed, releases its partitions (owner id
    // "") and exits 0; a takes them as free partitions, one a cycle (balanced), without waiting
    // for them to expire.
    let mut b = b;
    let pid = b.child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = b.child.wait().unwrap();
    assert!(status.success(), "b exits 0 on SIGTERM: {status:?}");
    let o = owners(&db, &s);
    assert_eq!(o.len(), 1, "b's partitions are released as it exits, not left to expire: {o:?}");
    let all = wait_until_or(
        "a holds all 8",
        Duration::from_secs(30),
        || owners(&db, &s).values().sum::<usize>() == 8,
        || processors_state(&db, &s, &[&a]),
    );
    eprintln!("after a graceful stop: a held all 8 partitions {all:?} after b exited");
    send_to_eight(&s, 20);
    wait_until("the third round processed", Duration::from_secs(30), || seen_all(&[&a, &b, &c], 60));
    drop((a, b));
}

#[path = "../../ehub-checkpoint-blob/tests/support/azurite.rs"]
mod azurite;

/// A Blob store that cannot work stops the processor at start with the reason, never a
/// processor that runs and reads nothing.
#[test]
fn a_blob_store_with_a_missing_container_or_a_wrong_key_fails_at_start_with_the_reason() {
    let s = serve();
    let azurite = azurite::Azurite::start();
    let run = |storage: &str, container: &str| {
        let out = ehub(&s)
            .args([
                "receive",
                "--checkpoint-store",
                &format!("blob:{container}"),
                "--storage-connection-string",
                storage,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&azurite.connection_string(), "nosuch");
    assert!(err.contains("the container `nosuch` does not exist"), "{err}");
    let wrong = azurite.connection_string().replace(ehub_storage_auth::DEV_ACCOUNT_KEY, "d3Jvbmcga2V5");
    let err = run(&wrong, "nosuch");
    assert!(err.contains("403"), "{err}");
}

/// Greedy processors settle too: each claims its whole share in one cycle, so three started
/// together reach 3/3/2 in a few cycles (compare the balanced test's time, printed beside).
#[test]
fn three_greedy_processor_processes_settle_at_three_three_two() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_eight_partitions(dir.path());
    let db = dir.path().join("cp.db");
    let store = format!("sqlite:{}", db.display());
    send_to_eight(&s, 10);
    let ps = [processor(&s, &store, "greedy"), processor(&s, &store, "greedy"), processor(&s, &store, "greedy")];
    let settled = wait_for_split(&db, &s, &[&ps[0], &ps[1], &ps[2]]);
    eprintln!("greedy: settled at 3/3/2 in {settled:?} (0.3 s cycles)");
    wait_until("every event processed", Duration::from_secs(30), || seen_all(&[&ps[0], &ps[1], &ps[2]], 10));
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = Command::cargo_bin("ehub").unwrap().timeout(T).args(["completions", shell]).assert().success();
        let script = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        assert!(
            script.contains("checkpoints") && script.contains("listen-blob"),
            "{shell}: {}",
            &script[..200.min(script.len())]
        );
    }
    let out = Command::cargo_bin("ehub").unwrap().timeout(T).arg("man").assert().success();
    let page = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(page.contains(".TH ehub 1") && page.contains("checkpoints"), "{page}");
    Command::cargo_bin("ehub").unwrap().timeout(T).args(["completions", "tcsh"]).assert().code(2);
}

/// Traffic captured with `export` (continued where the file ends) and replayed with `import`
/// on another broker: bodies, properties and partition keys come back.
#[test]
fn export_continues_its_file_and_import_replays_it_on_another_broker() {
    let a = serve();
    ehub(&a).args(["send", "--partition", "2", "--count", "10", "--property", "team=red"]).assert().success();
    // A key that hashes to another partition than 2.
    let key = (0..).map(|i| format!("user-{i}")).find(|k| ehub_model::partition_for_key(k, 4) != 2).unwrap();
    ehub(&a).args(["send", "--partition-key", &key]).write_stdin("k1\nk2\n").assert().success();
    let key_partition = ehub_model::partition_for_key(&key, 4).to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p2.jsonl");
    ehub(&a).args(["export", "--partition", "2", "--file"]).arg(&file).assert().success();
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 10);
    ehub(&a).args(["send", "--partition", "2", "--count", "5"]).assert().success();
    let out = ehub(&a).args(["export", "--partition", "2", "--file"]).arg(&file).assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("exported 5 events"));
    let lines = json_lines(std::fs::read_to_string(&file).unwrap().as_bytes());
    let seqs: Vec<i64> = lines.iter().map(|l| l["sequence_number"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (0..15).collect::<Vec<_>>(), "continued after the last line, nothing twice");
    let keyed = ehub(&a).args(["export", "--partition", &key_partition]).assert().success().get_output().stdout.clone();
    let keyed = String::from_utf8(keyed).unwrap();
    assert!(keyed.lines().filter(|l| l.contains(key.as_str())).count() == 2, "{keyed}");

    let b = serve();
    ehub(&b).args(["import", "--file"]).arg(&file).assert().success();
    ehub(&b).arg("import").write_stdin(keyed).assert().success();
    let out = ehub(&b)
        .args([
            "receive",
            "--partition",
            "2",
            "--from",
            "earliest",
            "--count",
            "15",
            "--timeout",
            "10",
            "--output",
            "json",
        ])
        .assert()
        .success();
    let events = json_lines(&out.get_output().stdout);
    assert_eq!(events.len(), 15);
    for (e, original) in events.iter().zip(&lines) {
        assert_eq!(e["body"], original["body"]);
        assert_eq!(e["properties"], original["properties"]);
    }
    assert_eq!(events[0]["properties"], serde_json::json!({"team": "red"}));
    let out = ehub(&b)
        .args(["receive", "--partition", &key_partition, "--from", "earliest", "--count", "2", "--timeout", "10"])
        .args(["--output", "json"])
        .assert()
        .success();
    let events = json_lines(&out.get_output().stdout);
    assert!(events.iter().all(|e| e["partition_key"] == key.as_str()), "{events:?}");
    let bodies: Vec<&str> = events.iter().map(|e| e["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["k1", "k2"]);
}

/// `ehub hubs` and `ehub consumer-groups` against the broker's management endpoint; a hub
/// created there is used by `send` at once; refusals carry the API's message and exit codes.
#[test]
fn hubs_and_consumer_groups_from_the_cli() {
    let s = serve();
    let admin = |args: &[&str]| {
        let mut c = Command::cargo_bin("ehub").unwrap();
        c.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING").env_remove("EHUB_MANAGEMENT");
        c.args(["--connection-string", &s.cs, "--management", &s.management]).args(args);
        c
    };
    // One hub: commands find it without --hub.
    let out = admin(&["--output", "json", "info"]).assert().success();
    let info: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(info["name"], "eh1", "{info}");

    let out = admin(&["hubs", "create", "orders", "--partitions", "2", "--consumer-group", "audit"]).assert().success();
    assert_eq!(String::from_utf8_lossy(&out.get_output().stdout), "created hub orders with 2 partitions\n");
    let out = admin(&["--output", "json", "hubs", "list"]).assert().success();
    let hubs: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let names: Vec<&str> = hubs.as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["eh1", "orders"]);
    // Two hubs and none named: `info` lists them.
    let out = admin(&["--output", "json", "info"]).assert().success();
    let info: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(info, serde_json::json!({ "hubs": ["eh1", "orders"] }));
    admin(&["--hub", "orders", "consumer-groups", "create", "billing"]).assert().success();
    let out = admin(&["--hub", "orders", "consumer-groups", "list"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    for g in ["$Default", "audit", "billing"] {
        assert!(text.contains(g), "{text}");
    }
    admin(&["--hub", "orders", "send", "--partition", "1", "to orders"]).assert().success();
    let out = admin(&["--hub", "orders", "--output", "json", "receive", "--partition", "1", "--count", "1"])
        .args(["--consumer-group", "billing", "--from", "earliest"])
        .assert()
        .success();
    assert_eq!(json_lines(&out.get_output().stdout)[0]["body"], "to orders");

    let out = admin(&["hubs", "create", "orders"]).assert().failure().code(1);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("already exists"));
    let out = admin(&["hubs", "delete", "eh1"]).assert().failure();
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("declared in the configuration file"));
    admin(&["hubs", "delete", "orders"]).assert().success();
    admin(&["--hub", "orders", "consumer-groups", "list"]).assert().failure().code(5);
    let wrong_key = s.cs.replace("SAS_KEY_VALUE", "WRONG");
    Command::cargo_bin("ehub")
        .unwrap()
        .timeout(T)
        .args(["--connection-string", &wrong_key, "--management", &s.management, "hubs", "list"])
        .assert()
        .failure()
        .code(3);
}

/// `ehub top` reads the broker's /metrics: partitions with their last sequence numbers, and
/// rates in while a producer sends.
#[test]
fn top_shows_partitions_and_rates_from_the_metrics() {
    let s = serve();
    ehub(&s).args(["send", "--partition", "0", "--count", "50"]).assert().success();
    let top = || {
        let mut c = Command::cargo_bin("ehub").unwrap();
        c.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING");
        c.args(["--connection-string", &s.cs, "--management", &s.management, "--output", "json"]);
        c.args(["top", "--interval", "0.5", "--count", "2"]);
        c
    };
    let out = top().assert().success();
    let samples = json_lines(&out.get_output().stdout);
    assert_eq!(samples.len(), 2);
    let parts = samples[1]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4, "{}", samples[1]);
    assert_eq!(parts[0]["partition"], "0");
    assert_eq!(parts[0]["last_sequence_number"], 49.0);
    assert_eq!(parts[1]["last_sequence_number"], -1.0);
    // While events flow, the rate in shows.
    let mut sender = std::process::Command::new(assert_cmd::cargo::cargo_bin("ehub"))
        .env_remove("EVENTHUB_CONNECTION_STRING")
        .args(["--connection-string", &s.cs, "--hub", "eh1", "bench", "send", "--partition", "2"])
        .args(["--duration", "4", "--batch", "10", "--in-flight", "1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = top().assert().success();
    sender.wait().unwrap();
    let samples = json_lines(&out.get_output().stdout);
    let p2 = &samples[1]["partitions"][2];
    assert!(p2["events_in_per_s"].as_f64().unwrap() > 0.0, "{p2}");
    assert!(samples[1]["connections"].as_f64().unwrap() >= 1.0);
}

/// `ehub fault`: a server-busy period makes sends fail after the client's retries with exit
/// code 9; `fault list` shows it and `fault clear` ends it; a bad condition is a usage error.
#[test]
fn faults_from_the_cli() {
    let s = serve();
    let fault = |args: &[&str]| {
        let mut c = Command::cargo_bin("ehub").unwrap();
        c.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING");
        c.args(["--connection-string", &s.cs, "--management", &s.management]).args(args);
        c
    };
    let out = fault(&["--hub", "eh1", "fault", "server-busy", "--seconds", "60"]).assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("server-busy"));
    let out = fault(&["--output", "json", "fault", "list"]).assert().success();
    let listed: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(listed["active"][0]["kind"], "server-busy", "{listed}");
    let out = ehub(&s).args(["send", "--partition", "0", "throttled"]).assert().failure().code(9);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("server-busy"));
    fault(&["fault", "clear"]).assert().success();
    ehub(&s).args(["send", "--partition", "0", "through"]).assert().success();
    let out = fault(&["fault", "detach", "--condition", "bogus"]).assert().failure().code(2);
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("is not link-stolen"));
    let out = fault(&["fault", "close-connections"]).assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).starts_with("close-connections: sent to"));
}

/// The client commands over TLS to `ehub serve --tls-self-signed`, as to Azure: a connection
/// string without the emulator flag, `--custom-endpoint` and `--ca-file`.
#[test]
fn send_and_receive_over_tls_with_the_development_ca() {
    let s = serve_with(&["--tls-self-signed".as_ref(), "--listen-tls".as_ref(), "127.0.0.1:0".as_ref()]);
    let tls = s.listening.split("listen_tls=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_owned();
    let port = tls.rsplit(':').next().unwrap();
    let ca = s._dir.path().join("tls/ca.pem");
    let cs = "Endpoint=sb://localhost/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE";
    let tls_cmd = |args: &[&str]| {
        let mut c = Command::cargo_bin("ehub").unwrap();
        c.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING").args(["--connection-string", cs, "--hub", "eh1"]);
        c.args(["--custom-endpoint", &format!("amqps://localhost:{port}")]).arg("--ca-file").arg(&ca).args(args);
        c
    };
    tls_cmd(&["send", "--partition", "3", "over tls"]).assert().success();
    let out = tls_cmd(&["--output", "json", "receive", "--partition", "3", "--from", "earliest", "--count", "1"])
        .assert()
        .success();
    assert_eq!(json_lines(&out.get_output().stdout)[0]["body"], "over tls");
    // Without the CA: refused, exit code 4 (connection).
    let mut c = Command::cargo_bin("ehub").unwrap();
    c.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING").args(["--connection-string", cs, "--hub", "eh1"]);
    c.args(["--custom-endpoint", &format!("amqps://localhost:{port}"), "send", "--partition", "3", "x"]);
    c.assert().failure().code(4);
}

/// At the most verbose log level, with good and bad credentials on every front (AMQP CBS, the
/// management API, the Blob endpoint), no key, token or signature reaches the broker's log.
#[test]
fn no_key_token_or_signature_appears_in_the_log_even_at_trace() {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = serve_logged(&[], "trace", Some(log.clone()));
    ehub(&s).args(["send", "--partition", "0", "hello"]).assert().success();
    let wrong = s.cs.replace("SAS_KEY_VALUE", "WRONG_KEY_VALUE");
    let bad = |args: &[&str]| {
        let mut c = Command::cargo_bin("ehub").unwrap();
        c.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING");
        c.args(["--connection-string", &wrong, "--hub", "eh1", "--management", &s.management]).args(args);
        c.assert().failure();
    };
    bad(&["send", "--partition", "0", "refused"]);
    bad(&["hubs", "list"]);
    let wrong_storage = s.storage.replace(ehub_storage_auth::DEV_ACCOUNT_KEY, "V1JPTkdfS0VZX1ZBTFVFX1dST05HX0tFWQ==");
    ehub(&s).env("AZURE_STORAGE_CONNECTION_STRING", &wrong_storage).args(["checkpoints", "list"]).assert().failure();
    ehub(&s).env("AZURE_STORAGE_CONNECTION_STRING", &s.storage).args(["checkpoints", "list"]).assert().success();
    std::thread::sleep(Duration::from_millis(300));
    let text = log.lock().unwrap().join("\n");
    assert!(text.contains("frame in") && text.contains("token refused"), "the log is at trace level: {text}");
    for secret in [
        "SAS_KEY_VALUE",
        "WRONG_KEY_VALUE",
        "SharedAccessSignature",
        "sig=",
        ehub_storage_auth::DEV_ACCOUNT_KEY,
        "V1JPTkdfS0VZX1ZBTFVFX1dST05HX0tFWQ",
        "SharedKey devstoreaccount1:",
    ] {
        assert!(!text.contains(secret), "the log shows '{secret}'");
    }
}

/// A processor (`receive --checkpoint-store`) whose links lose their token (the broker's
/// expire-tokens fault) gives the partitions back and reads them again from its checkpoints:
/// every event sent afterwards still arrives.
#[test]
fn a_processor_goes_on_after_its_tokens_lapse() {
    let s = serve();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ehub"))
        .env_remove("EVENTHUB_CONNECTION_STRING")
        .args(["--connection-string", &s.cs, "--hub", "eh1", "--output", "json", "receive"])
        .args(["--checkpoint-store", "memory", "--checkpoint-every", "1", "--balance-interval", "0.2"])
        .args(["--ownership-expiry", "1", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let sink = seen.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            sink.lock().unwrap().insert(v["body"].as_str().unwrap().to_owned());
        }
    });
    ehub(&s).args(["send", "--partition", "0", "before"]).assert().success();
    wait_until("the first event", T, || seen.lock().unwrap().contains("before"));
    let mut fault = Command::cargo_bin("ehub").unwrap();
    fault.timeout(T).env_remove("EVENTHUB_CONNECTION_STRING");
    fault.args(["--connection-string", &s.cs, "--management", &s.management, "fault", "expire-tokens"]);
    fault.assert().success();
    for i in 0..3 {
        ehub(&s).args(["send", "--partition", "0", &format!("after-{i}")]).assert().success();
    }
    wait_until("the events after the expiry", T, || {
        let s = seen.lock().unwrap();
        (0..3).all(|i| s.contains(&format!("after-{i}")))
    });
    let _ = child.kill();
    let _ = child.wait();
}

/// A consumer that stops taking large events costs the broker a few megabytes, not the
/// partition: the broker reads ahead only while the link has credit, and then only about
/// 2 MiB (its read-ahead is bounded in bytes as well as in events). Either guard alone holds
/// this test; with both removed the broker grew by about 100 MB here. The events come from
/// segment files (a restarted broker has nothing in its tail cache), where each read allocates.
#[test]
fn a_slow_reader_of_large_events_holds_the_brokers_read_ahead_to_a_few_megabytes() {
    use ehub::{ConsumerClient, EventPosition, OpenReceiverOptions};
    const EVENTS: usize = 80;
    const SIZE: usize = 1_000_000;
    let never: [&std::ffi::OsStr; 2] = ["--fsync".as_ref(), "never".as_ref()];
    let s = serve_with(&never);
    let count = EVENTS.to_string();
    let size = SIZE.to_string();
    ehub(&s)
        .args(["bench", "send", "--partition", "0", "--batch", "1", "--in-flight", "4"])
        .args(["--size", &size, "--count", &count])
        .assert()
        .success();
    let s = s.restart(&never);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = ConsumerClient::from_connection_string(&s.cs, Some("eh1"), None).await.unwrap();
        let props = tokio::time::timeout(T, c.get_partition_properties("0")).await.unwrap().unwrap();
        assert_eq!(props.last_enqueued_sequence_number, EVENTS as i64 - 1);
        let before = s.rss();
        let options =
            OpenReceiverOptions { start_position: EventPosition::Earliest, prefetch: 1, ..Default::default() };
        let mut r = tokio::time::timeout(T, c.open_receiver_on_partition("0", Some(options))).await.unwrap().unwrap();
        let first = tokio::time::timeout(T, r.recv()).await.unwrap().unwrap();
        assert_eq!((first.sequence_number(), first.body().map(<[u8]>::len)), (0, Some(SIZE)));
        // The reader stops here, with credit for one more event. A broker that read ahead
        // without credit, and up to 2,048 events, would now read the whole partition (80 MB);
        // give it the time to.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let grown = s.rss().saturating_sub(before);
        assert!(grown < 24 << 20, "the broker grew by {} MiB for a reader that stopped", grown >> 20);
        // Nothing was lost by waiting: the rest arrives, in order, whole.
        for seq in 1..EVENTS as i64 {
            let e = tokio::time::timeout(T, r.recv()).await.unwrap().unwrap();
            assert_eq!((e.sequence_number(), e.body().map(<[u8]>::len)), (seq, Some(SIZE)));
        }
        r.close().await;
        c.close().await;
    });
}
