//! The broker's HTTP management API while clients run: hubs and consumer groups created and
//! deleted at run time, used at once by the client, kept across a restart; tokens with Manage
//! rights required; `/health` as the emulator answers it.

mod common;

use common::{http, http_text, root, token, T};
use ehub::{ConsumerClient, ErrorKind, EventPosition, OpenReceiverOptions, ProducerClient, SendEventOptions};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

fn to(p: &str) -> Option<SendEventOptions> {
    Some(SendEventOptions { partition_id: Some(p.into()), ..Default::default() })
}

fn config(dir: &std::path::Path) -> ehub_broker::BrokerConfig {
    let mut c = ehub_broker::BrokerConfig::default();
    c.core.data_dir = dir.to_owned();
    c.core.policies.push(ehub_broker::Policy {
        name: "sender".into(),
        key: "SENDER_KEY".into(),
        rights: ehub_broker::Rights { send: true, ..Default::default() },
    });
    c
}

#[tokio::test]
async fn hubs_and_consumer_groups_created_at_run_time_are_used_at_once_and_kept() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let broker = ehub_broker::TestBroker::start_with(config(dir.path())).await.unwrap();
        let admin = broker.management_addr();
        let cs = broker.connection_string();

        let (status, body) = http(admin, "GET", "/health", None, None).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("healthy")), "{body}");

        // Tokens: none, a wrong signature, a Send-only policy: refused; nothing created.
        let create = json!({ "partition_count": 3, "consumer_groups": ["audit"], "retention_hours": 36 });
        assert_eq!(http(admin, "PUT", "/hubs/orders", None, Some(create.clone())).await.0, 401);
        let forged = token("RootManageSharedAccessKey", "WRONG", "sb://localhost/");
        assert_eq!(http(admin, "PUT", "/hubs/orders", Some(&forged), Some(create.clone())).await.0, 401);
        let sender = token("sender", "SENDER_KEY", "sb://localhost/");
        let (status, body) = http(admin, "PUT", "/hubs/orders", Some(&sender), Some(create.clone())).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(http(admin, "GET", "/hubs/orders", Some(&root()), None).await.0, 404);

        let (status, body) = http(admin, "PUT", "/hubs/orders", Some(&root()), Some(create.clone())).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["partition_ids"], json!(["0", "1", "2"]));
        assert_eq!(body["consumer_groups"], json!(["$Default", "audit"]));
        assert_eq!(body["origin"], "runtime");
        assert_eq!(body["retention_hours"], 36.0);
        assert_eq!(http(admin, "PUT", "/hubs/ORDERS", Some(&root()), Some(create)).await.0, 409);
        let never = json!({ "retention_hours": 0 });
        assert_eq!(http(admin, "PUT", "/hubs/never", Some(&root()), Some(never)).await.0, 400);
        let (status, body) = http(admin, "PUT", "/hubs/-bad-", Some(&root()), Some(json!({}))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("InvalidName")), "{body}");

        // The client uses the new hub and its consumer group at once.
        let p = ProducerClient::builder().open_with_connection_string(&cs, Some("orders")).await.unwrap();
        assert_eq!(p.get_eventhub_properties().await.unwrap().partition_ids, ["0", "1", "2"]);
        p.send_event("first order", to("2")).await.unwrap();
        let (status, _) = http(admin, "PUT", "/hubs/orders/consumergroups/billing", Some(&root()), None).await;
        assert_eq!(status, 201);
        let c = ConsumerClient::builder()
            .with_consumer_group("billing")
            .open_with_connection_string(&cs, Some("orders"))
            .await
            .unwrap();
        let earliest = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
        let mut r = c.open_receiver_on_partition("2", Some(earliest.clone())).await.unwrap();
        let got = r.receive_batch(1, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got[0].body_as_str().unwrap(), "first order");
        let (_, groups) = http(admin, "GET", "/hubs/orders/consumergroups", Some(&root()), None).await;
        let names: Vec<&str> = groups.as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["$Default", "audit", "billing"]);
        let billing = &groups[2];
        assert_eq!(billing["receivers_per_partition"], json!([0, 0, 1]), "{groups}");

        // Deleting the consumer group disconnects its receiver with not-found.
        assert_eq!(http(admin, "DELETE", "/hubs/orders/consumergroups/billing", Some(&root()), None).await.0, 200);
        let e = r.receive_batch(1, Duration::from_secs(10)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceNotFound, "{e}");
        assert_eq!(http(admin, "DELETE", "/hubs/orders/consumergroups/%24Default", Some(&root()), None).await.0, 409);
        assert_eq!(http(admin, "DELETE", "/hubs/eh1", Some(&root()), None).await.0, 409);
        assert_eq!(http(admin, "PUT", "/hubs/eh1/consumergroups/extra", Some(&root()), None).await.0, 201);
        c.close().await;
        p.close().await;
        broker.stop().await.unwrap();

        // After a restart: the runtime hub with its events, the consumer groups as they were.
        let broker = ehub_broker::TestBroker::start_with(config(dir.path())).await.unwrap();
        let admin = broker.management_addr();
        let (_, hubs) = http(admin, "GET", "/hubs", Some(&root()), None).await;
        let names: Vec<(&str, &str)> = hubs
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["name"].as_str().unwrap(), h["origin"].as_str().unwrap()))
            .collect();
        assert_eq!(names, [("eh1", "config"), ("orders", "runtime")]);
        assert_eq!(hubs[1]["consumer_groups"], json!(["$Default", "audit"]));
        assert_eq!(
            (hubs[0]["retention_hours"].clone(), hubs[1]["retention_hours"].clone()),
            (json!(null), json!(36.0))
        );
        assert_eq!(hubs[0]["consumer_groups"], json!(["$Default", "cg1", "extra"]));
        let cs = broker.connection_string();
        let p = ProducerClient::builder().open_with_connection_string(&cs, Some("orders")).await.unwrap();
        assert_eq!(p.get_partition_properties("2").await.unwrap().last_enqueued_sequence_number, 0);

        // Deleting the hub: its producers are refused with not-found, it is gone for good.
        assert_eq!(http(admin, "DELETE", "/hubs/orders", Some(&root()), None).await.0, 200);
        let e = p.send_event("late order", to("0")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceNotFound, "{e}");
        assert_eq!(http(admin, "GET", "/hubs/orders", Some(&root()), None).await.0, 404);
        assert!(!dir.path().join("orders").exists());
        p.close().await;
        broker.stop().await.unwrap();
        let broker = ehub_broker::TestBroker::start_with(config(dir.path())).await.unwrap();
        let (_, hubs) = http(broker.management_addr(), "GET", "/hubs", Some(&root()), None).await;
        assert_eq!(hubs.as_array().unwrap().len(), 1, "{hubs}");
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_runtime_hub_that_the_config_file_now_declares_is_a_clear_error_at_start() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let broker = ehub_broker::TestBroker::start_with(config(dir.path())).await.unwrap();
        let (status, _) =
            http(broker.management_addr(), "PUT", "/hubs/orders", Some(&root()), Some(json!({"partition_count": 2})))
                .await;
        assert_eq!(status, 201);
        broker.stop().await.unwrap();
        let mut c = config(dir.path());
        c.core.hubs.push(ehub_broker::HubConfig {
            name: "Orders".into(),
            partitions: 8,
            consumer_groups: vec![],
            retention: None,
        });
        let e = ehub_broker::TestBroker::start_with(c).await.unwrap_err();
        assert_eq!(e.kind(), ehub_broker::ErrorKind::Config, "{e}");
        let text = e.to_string();
        assert!(text.contains("'Orders' is declared in the configuration file (8 partitions)"), "{text}");
        assert!(text.contains("_runtime.json"), "{text}");
    })
    .await
    .unwrap();
}

/// The value of the series whose line starts with `series` (name and labels, as encoded).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_traffic_receivers_connections_refusals_fsyncs_and_blob_requests() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut c = config(dir.path());
        (c.listen, c.listen_blob, c.listen_management, c.listen_kafka) = (any, Some(any), Some(any), Some(any));
        c.core.fsync = ehub_broker::parse_fsync("always", 100).unwrap(); // so that fsyncs are counted
        let broker = ehub_broker::start(c).await.unwrap();
        let cs = format!(
            "Endpoint=sb://127.0.0.1:{};SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;",
            broker.amqp.port()
        );
        let admin = broker.management.unwrap();

        let p = ProducerClient::builder().open_with_connection_string(&cs, Some("eh1")).await.unwrap();
        let mut batch = p.create_batch(Some(ehub::EventDataBatchOptions { partition_id: Some("1".into()), ..Default::default() })).await.unwrap();
        for i in 0..10 {
            assert!(batch.try_add(&ehub::EventData::from(format!("event {i}"))).unwrap());
        }
        p.send_batch(&batch).await.unwrap();
        p.send_event("eleventh", to("1")).await.unwrap();
        let consumer = ConsumerClient::builder().open_with_connection_string(&cs, Some("eh1")).await.unwrap();
        let earliest = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
        let mut r = consumer.open_receiver_on_partition("1", Some(earliest)).await.unwrap();
        let mut got = 0;
        while got < 11 {
            got += r.receive_batch(11 - got, Duration::from_secs(10)).await.unwrap().len();
        }
        let wrong = cs.replace("SAS_KEY_VALUE", "WRONG");
        let bad = ProducerClient::builder().open_with_connection_string(&wrong, Some("eh1")).await.unwrap();
        assert!(bad.send_event("refused", to("0")).await.is_err());
        // An unsigned Blob request: refused with 403.
        let (status, _) = http_text(broker.blob.unwrap(), "/devstoreaccount1/checkpoints?restype=container").await;
        assert_eq!(status, 403);

        let (status, text) = http_text(admin, "/metrics").await;
        assert_eq!(status, 200, "{text}");
        let p1 = r#"{hub="eh1",partition="1"}"#;
        assert_eq!(sample(&text, &format!("ehub_events_in_total{p1}")), 11.0);
        assert_eq!(sample(&text, &format!("ehub_events_out_total{p1}")), 11.0);
        // The events as stored: each body in an AMQP data section (5 bytes of section header).
        assert_eq!(sample(&text, &format!("ehub_bytes_in_total{p1}")), ((7 + 5) * 10 + 8 + 5) as f64);
        assert_eq!(sample(&text, &format!("ehub_bytes_out_total{p1}")), ((7 + 5) * 10 + 8 + 5) as f64);
        assert_eq!(sample(&text, &format!("ehub_partition_last_sequence_number{p1}")), 10.0);
        assert_eq!(sample(&text, r#"ehub_partition_last_sequence_number{hub="eh1",partition="0"}"#), -1.0);
        assert_eq!(sample(&text, r#"ehub_receivers{hub="eh1",consumer_group="$default",partition="1"}"#), 1.0);
        assert_eq!(sample(&text, r#"ehub_amqp_links{role="consumer"}"#), 1.0);
        assert!(sample(&text, "ehub_amqp_connections") >= 2.0, "{text}");
        assert!(sample(&text, "ehub_amqp_sessions") >= 2.0, "{text}");
        assert!(sample(&text, r#"ehub_amqp_refused_total{condition="amqp:unauthorized-access"}"#) >= 1.0);
        assert!(sample(&text, "ehub_fsyncs_total") >= 2.0, "{text}");
        assert!(sample(&text, "ehub_fsync_duration_seconds_count") >= 2.0, "{text}");
        assert_eq!(sample(&text, "ehub_hubs"), 1.0);
        assert!(text.contains(r#"ehub_blob_requests_total{operation="#) && text.contains(r#"status="403"} 1"#), "{text}");

        // Closed: the gauges go back down.
        consumer.close().await;
        p.close().await;
        bad.close().await;
        let mut settled = String::new();
        for _ in 0..100 {
            settled = http_text(admin, "/metrics").await.1;
            if sample(&settled, "ehub_amqp_connections") == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(sample(&settled, "ehub_amqp_connections"), 0.0, "{settled}");
        assert_eq!(sample(&settled, "ehub_amqp_sessions"), 0.0, "{settled}");
        assert_eq!(sample(&settled, r#"ehub_amqp_links{role="consumer"}"#), 0.0, "{settled}");
        assert_eq!(sample(&settled, r#"ehub_receivers{hub="eh1",consumer_group="$default",partition="1"}"#), 0.0);
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}

/// A hub's partition count grows while a producer, a buffered producer, a receiver and a
/// processor run: the receiver goes on, the producer's link routes over every partition, the
/// buffered producer and the processor pick the new partitions up, and the count is kept
/// across a restart. Decreases are refused, as on the service.
#[tokio::test]
async fn a_hub_grows_while_clients_run_and_they_use_the_new_partitions() {
    use ehub::buffered::{BufferedProducerClient, BufferedProducerOptions, EnqueueEventOptions};
    use ehub::processor::{EventProcessor, EventProcessorOptions};
    use std::sync::{Arc, Mutex};
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let broker = ehub_broker::TestBroker::start_with(config(dir.path())).await.unwrap();
        let admin = broker.management_addr();
        let cs = broker.connection_string();
        let p = ProducerClient::builder().open_with_connection_string(&cs, Some("eh1")).await.unwrap();
        p.send_event("before", to("0")).await.unwrap();
        // On cg1: the processor below takes $Default's partitions with owner levels.
        let c = ConsumerClient::builder()
            .with_consumer_group("cg1")
            .open_with_connection_string(&cs, Some("eh1"))
            .await
            .unwrap();
        let earliest = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
        let mut r = c.open_receiver_on_partition("0", Some(earliest)).await.unwrap();
        assert_eq!(r.receive_batch(1, Duration::from_secs(10)).await.unwrap().len(), 1);

        // A processor on every partition, and a buffered producer that refreshes its list.
        let store = Arc::new(ehub::InMemoryCheckpointStore::new());
        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let options = EventProcessorOptions {
            load_balancing_interval: Duration::from_millis(200),
            default_start_position: EventPosition::Earliest,
            ..Default::default()
        };
        let processor = EventProcessor::new(consumer, store, Some(options)).unwrap();
        let run = tokio::spawn({
            let p = processor.clone();
            async move { p.run().await }
        });
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        tokio::spawn({
            let (p, seen) = (processor.clone(), seen.clone());
            async move {
                while let Some(mut partition) = p.next_partition_client().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        while let Ok(events) = partition.receive_batch(50, Duration::from_millis(200)).await {
                            let id = partition.partition_id().to_owned();
                            seen.lock().unwrap().extend(events.iter().map(|_| id.clone()));
                        }
                    });
                }
            }
        });
        let reported: Arc<Mutex<Vec<String>>> = Arc::default();
        let ok = reported.clone();
        let buffered = BufferedProducerClient::builder()
            .with_buffered_options(BufferedProducerOptions {
                partition_refresh_interval: Duration::from_millis(100),
                max_wait_time: Duration::from_millis(20),
                ..Default::default()
            })
            .with_on_send_succeeded(move |events, pid| ok.lock().unwrap().extend(events.iter().map(|_| pid.to_owned())))
            .with_on_send_failed(|_, pid, e| panic!("partition {pid}: {e}"))
            .open_with_connection_string(&cs, Some("eh1"))
            .await
            .unwrap();

        let (status, body) =
            http(admin, "PATCH", "/hubs/eh1", Some(&root()), Some(json!({"partition_count": 6}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["partition_ids"], json!(["0", "1", "2", "3", "4", "5"]));
        let (status, body) =
            http(admin, "PATCH", "/hubs/eh1", Some(&root()), Some(json!({"partition_count": 3}))).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("can only be increased"), "{body}");

        assert_eq!(p.get_partition_ids().await.unwrap().len(), 6);
        // The receiver on partition 0 goes on.
        p.send_event("after", to("0")).await.unwrap();
        let got = r.receive_batch(1, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got[0].body_as_str().unwrap(), "after");
        // Sends without a partition, on the link opened before, reach the new partitions.
        for i in 0..12 {
            p.send_event(format!("rr-{i}"), None).await.unwrap();
        }
        for id in ["4", "5"] {
            let props = p.get_partition_properties(id).await.unwrap();
            assert!(props.last_enqueued_sequence_number >= 0, "partition {id}: {props:?}");
        }
        // The buffered producer sends to a new partition once its list is refreshed.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let to5 = EnqueueEventOptions { partition_id: Some("5".into()), ..Default::default() };
        buffered.enqueue_event("buffered", Some(to5)).await.unwrap();
        buffered.flush(Some(Duration::from_secs(10))).await.unwrap();
        assert_eq!(*reported.lock().unwrap(), ["5"]);
        // The processor reads the new partitions.
        for _ in 0..200 {
            let s = seen.lock().unwrap().clone();
            if s.iter().any(|p| p == "4") && s.iter().filter(|p| *p == "5").count() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let s = seen.lock().unwrap().clone();
        assert!(s.iter().any(|p| p == "4") && s.iter().filter(|p| *p == "5").count() >= 2, "{s:?}");

        buffered.close(true, None).await.unwrap();
        processor.shutdown();
        run.await.unwrap().unwrap();
        c.close().await;
        p.close().await;
        broker.stop().await.unwrap();
        // Kept across a restart, events and all.
        let broker = ehub_broker::TestBroker::start_with(config(dir.path())).await.unwrap();
        let p = ProducerClient::builder()
            .open_with_connection_string(&broker.connection_string(), Some("eh1"))
            .await
            .unwrap();
        assert_eq!(p.get_partition_ids().await.unwrap().len(), 6);
        assert!(p.get_partition_properties("5").await.unwrap().last_enqueued_sequence_number >= 1);
        p.close().await;
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}
