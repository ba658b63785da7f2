//! Fault injection (`POST /faults` on the management endpoint) against our client: it
//! recovers from each transient fault as it would on Azure, with no event lost or repeated on
//! the consumer side, and surfaces link-stolen.

mod common;

use common::{http, http_text, root, T};
use ehub::{
    ConsumerClient, ErrorKind, EventPosition, EventReceiver, OpenReceiverOptions, ProducerClient, SendEventOptions,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

async fn fault(admin: SocketAddr, body: Value) -> Value {
    let (status, v) = http(admin, "POST", "/faults", Some(&root()), Some(body)).await;
    assert_eq!(status, 201, "{v}");
    v
}

fn to0() -> Option<SendEventOptions> {
    Some(SendEventOptions { partition_id: Some("0".into()), ..Default::default() })
}

/// Sends `n` events to partition 0 one by one and reads them back; returns their bodies.
async fn round(p: &ProducerClient, r: &mut EventReceiver, label: &str, n: usize) -> Vec<String> {
    for i in 0..n {
        p.send_event(format!("{label}-{i}"), to0()).await.unwrap_or_else(|e| panic!("{label}: {e}"));
    }
    let mut got = Vec::new();
    while got.len() < n {
        let batch =
            r.receive_batch(n - got.len(), Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{label}: {e}"));
        got.extend(batch.iter().map(|e| e.body_as_str().unwrap().to_owned()));
    }
    got
}

/// A producer, a consumer, and a receiver of partition 0 from the earliest event, on hub eh1.
async fn clients(cs: &str) -> (ProducerClient, ConsumerClient, EventReceiver) {
    let p = ProducerClient::builder().open_with_connection_string(cs, Some("eh1")).await.unwrap();
    let c = ConsumerClient::builder().open_with_connection_string(cs, Some("eh1")).await.unwrap();
    let earliest = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
    let r = c.open_receiver_on_partition("0", Some(earliest)).await.unwrap();
    (p, c, r)
}

/// Polls /metrics until `series` reads `value`.
async fn wait_for(admin: SocketAddr, series: &str, value: f64) {
    for _ in 0..500 {
        let (_, text) = http_text(admin, "/metrics").await;
        let now = text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse::<f64>().ok());
        if now == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{series} never read {value}");
}

#[tokio::test]
async fn our_client_rides_out_every_transient_fault_and_surfaces_link_stolen() {
    tokio::time::timeout(T, async {
        let broker = ehub_broker::TestBroker::start().await.unwrap();
        let admin = broker.management_addr();
        let cs = broker.connection_string();
        let (p, c, mut r) = clients(&cs).await;
        let mut all = round(&p, &mut r, "before", 5).await;

        let v =
            fault(admin, json!({"kind": "detach", "hub": "eh1", "partition": "0", "condition": "detach-forced"})).await;
        assert_eq!(v["connections"], 2, "{v}");
        all.extend(round(&p, &mut r, "after-detach", 5).await);
        // The fault reaches connections a moment after the answer; a send racing it may be
        // stored and its acknowledgement lost with the connection, and then sent again (a
        // producer is at-least-once, on Azure too). Wait until the connections are gone.
        fault(admin, json!({"kind": "close-connections"})).await;
        wait_for(admin, "ehub_amqp_connections", 0.0).await;
        all.extend(round(&p, &mut r, "after-close", 5).await);
        // Expired tokens: as on Azure when a token is not renewed, an operation on a link that
        // depended on it fails with an authentication error (once per link; the fault reaches
        // the connection a moment after the answer, so the first operations may pass); the
        // next one puts a fresh token on a new link, and the receiver goes on where it was.
        fault(admin, json!({"kind": "expire-tokens"})).await;
        let mut refused = 0;
        for i in 0..5 {
            let body = format!("after-expiry-{i}");
            if let Err(e) = p.send_event(body.clone(), to0()).await {
                assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
                refused += 1;
                p.send_event(body, to0()).await.unwrap();
            }
        }
        while all.len() < 20 {
            match r.receive_batch(20 - all.len(), Duration::from_secs(10)).await {
                Ok(b) => all.extend(b.iter().map(|e| e.body_as_str().unwrap().to_owned())),
                Err(e) => {
                    // Not transient: this receiver is done; a new one continues after the last
                    // event seen (sequence numbers are 0, 1, … here).
                    assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
                    refused += 1;
                    let after = EventPosition::SequenceNumber { value: all.len() as i64 - 1, inclusive: false };
                    let o = OpenReceiverOptions { start_position: after, ..Default::default() };
                    r = c.open_receiver_on_partition("0", Some(o)).await.unwrap();
                }
            }
        }
        assert!(refused <= 2, "at most once per link");
        // Management requests carry their own token: they go on after the expiry (they failed
        // with 401 on every later call before the broker took the token for `$management`).
        assert_eq!(p.get_partition_ids().await.unwrap().len(), 4);
        assert_eq!(c.get_partition_ids().await.unwrap().len(), 4);
        let busy = fault(admin, json!({"kind": "server-busy", "hub": "eh1", "seconds": 1.0})).await;
        assert_eq!(busy["kind"], "server-busy");
        let (_, listed) = http(admin, "GET", "/faults", Some(&root()), None).await;
        assert_eq!(listed["active"][0]["id"], busy["id"], "{listed}");
        let (_, text) = http_text(admin, "/metrics").await;
        assert!(text.lines().any(|l| l == "ehub_faults_active 1"), "{text}");
        all.extend(round(&p, &mut r, "through-busy", 3).await);
        fault(admin, json!({"kind": "fsync-latency", "millis": 20, "seconds": 30})).await;
        fault(admin, json!({"kind": "frame-latency", "millis": 5, "seconds": 30})).await;
        all.extend(round(&p, &mut r, "slow", 3).await);
        assert_eq!(http(admin, "DELETE", "/faults", Some(&root()), None).await.0, 200);
        let (_, listed) = http(admin, "GET", "/faults", Some(&root()), None).await;
        assert_eq!(listed["active"], json!([]));
        let (_, text) = http_text(admin, "/metrics").await;
        assert!(text.lines().any(|l| l == "ehub_faults_active 0"), "{text}");

        // Every event exactly once, in order.
        let expected: Vec<String> = [
            ("before", 5),
            ("after-detach", 5),
            ("after-close", 5),
            ("after-expiry", 5),
            ("through-busy", 3),
            ("slow", 3),
        ]
        .iter()
        .flat_map(|(l, n)| (0..*n).map(move |i| format!("{l}-{i}")))
        .collect();
        assert_eq!(all, expected);

        // Link stolen is the user's business: surfaced, not retried.
        fault(admin, json!({"kind": "detach", "hub": "eh1", "condition": "link-stolen"})).await;
        let e = r.receive_batch(1, Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConsumerDisconnected, "{e}");

        let (_, text) = http_text(admin, "/metrics").await;
        for kind in ["detach", "close-connections", "expire-tokens", "server-busy", "fsync-latency", "frame-latency"] {
            assert!(text.contains(&format!("ehub_faults_injected_total{{kind=\"{kind}\"}}")), "{kind}: {text}");
        }
        assert!(text.contains(r#"ehub_amqp_refused_total{condition="com.microsoft:server-busy"}"#), "{text}");

        let (status, v) = http(admin, "POST", "/faults", Some(&root()), Some(json!({"kind": "meteor"}))).await;
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some("InvalidFault")), "{v}");
        let (status, _) = http(admin, "POST", "/faults", None, Some(json!({"kind": "close-connections"}))).await;
        assert_eq!(status, 401);
        c.close().await;
        p.close().await;
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}

/// The service's idle rules, shortened by the `idle-timeouts` fault: idle producer and
/// consumer links are detached (`amqp:link:detach-forced`), then the connections left without
/// links are closed (`amqp:connection:forced`). Our client reattaches and reconnects on its
/// next operation, and the receiver goes on where it was, with no event lost or repeated.
#[tokio::test]
async fn idle_links_are_detached_and_empty_connections_closed_and_our_client_carries_on() {
    tokio::time::timeout(T, async {
        let broker = ehub_broker::TestBroker::start().await.unwrap();
        let admin = broker.management_addr();
        let cs = broker.connection_string();
        let (p, c, mut r) = clients(&cs).await;
        let mut all = round(&p, &mut r, "before", 3).await;
        let f = fault(
            admin,
            json!({"kind": "idle-timeouts", "link_idle_seconds": 0.3, "connection_idle_seconds": 0.5, "seconds": 60}),
        )
        .await;
        assert_eq!(f["kind"], "idle-timeouts", "{f}");
        wait_for(admin, r#"ehub_amqp_links{role="producer"}"#, 0.0).await;
        wait_for(admin, r#"ehub_amqp_links{role="consumer"}"#, 0.0).await;
        wait_for(admin, "ehub_amqp_connections", 0.0).await;
        all.extend(round(&p, &mut r, "after-idle", 3).await);
        assert_eq!(http(admin, "DELETE", "/faults", Some(&root()), None).await.0, 200);
        let expected: Vec<String> =
            ["before", "after-idle"].iter().flat_map(|l| (0..3).map(move |i| format!("{l}-{i}"))).collect();
        assert_eq!(all, expected);
        let (_, text) = http_text(admin, "/metrics").await;
        assert!(text.contains(r#"ehub_faults_injected_total{kind="idle-timeouts"}"#), "{text}");
        c.close().await;
        p.close().await;
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}

/// With a small `max_frame_size` (from the broker's configuration to its `open`), events far
/// larger than a frame go both ways in several transfer frames.
#[tokio::test]
async fn events_larger_than_the_frame_size_go_in_several_frames() {
    use ehub_amqp_endpoint::{driver::Transport, Connection, ConnectionConfig, ConnectionRole, Event, SaslConfig};
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ehub_broker::BrokerConfig::default();
        config.core.data_dir = dir.path().to_owned();
        config.amqp.max_frame_size = 512;
        let broker = ehub_broker::TestBroker::start_with(config).await.unwrap();
        // The broker advertises the configured size.
        let sock = tokio::net::TcpStream::connect(broker.amqp_addr()).await.unwrap();
        let cfg =
            ConnectionConfig { sasl: SaslConfig::Anonymous, hostname: Some("localhost".into()), ..Default::default() };
        let mut engine = Connection::new(ConnectionRole::Initiator, cfg, std::time::Instant::now());
        let mut t = Transport::new(sock);
        let open = loop {
            if let Event::Opened(o) = t.next_event(&mut engine).await.unwrap() {
                break o;
            }
        };
        assert_eq!(open.max_frame_size, Some(512));
        let cs = broker.connection_string();
        let (p, c, mut r) = clients(&cs).await;
        let big = "x".repeat(20_000);
        p.send_event(big.clone(), to0()).await.unwrap();
        let got = r.receive_batch(1, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got[0].body_as_str().unwrap(), big);
        c.close().await;
        p.close().await;
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}
