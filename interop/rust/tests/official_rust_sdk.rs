//! The official Rust SDK (`azure_messaging_eventhubs` 0.16, unmodified) against `ehub serve`, and
//! against our client through the same broker. Also: the frames the official Rust and Python SDKs
//! send, recorded by a proxy, compared with the frames our client sends for the same operations
//! (the Python SDK runs from `interop/python/.venv`, which `scripts/test` creates, or `EHUB_PYTHON`).

use azure_messaging_eventhubs::models::EventData as SdkEventData;
use azure_messaging_eventhubs::{EventDataBatchOptions, ProducerClient, SendEventOptions};
use ehub_amqp_codec::Value;
use ehub_interop_rust::dialect::{dialect, facets, Item};
use ehub_interop_rust::{
    custom_endpoint, emulator_connection_string, python_sdk_dialect_ops, sdk_consumer, sdk_from_earliest, Broker,
    RecordingProxy,
};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

/// Runs a test body with a time limit. (It ran as a spawned task while the broker could still
/// lose the SDK's settlements: on the test's main thread the race hit more often. The broker now
/// settles twice for this SDK, see `crates/ehub-broker/src/settle.rs`, so the body runs as is.)
async fn bounded<F: Future>(f: F) -> F::Output {
    ehub_interop_rust::install_crypto_provider();
    // EHUB_TEST_LOG=<filter> logs the SDK (and fe2o3, when built with its `tracing` feature).
    ehub_interop_rust::log_to_stderr_from("EHUB_TEST_LOG");
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("test timed out")
}

async fn sdk_producer(port: u16) -> ProducerClient {
    ProducerClient::builder()
        .with_custom_endpoint(custom_endpoint(port))
        .open_with_connection_string(&emulator_connection_string(port), Some("eh1"))
        .await
        .expect("official SDK producer opens against ehub serve")
}

/// The next event of an official-SDK receiver.
async fn next_event(
    rx: &azure_messaging_eventhubs::EventReceiver,
) -> azure_messaging_eventhubs::models::ReceivedEventData {
    rx.stream_events().next().await.expect("the stream ended").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_rust_sdk_properties_send_and_receive() {
    bounded(async {
        let broker = Broker::start("always");
        let producer = sdk_producer(broker.port).await;
        let props = producer.get_eventhub_properties().await.unwrap();
        assert_eq!(props.name, "eh1");
        assert_eq!(props.partition_ids, vec!["0", "1", "2", "3"]);
        let p0 = producer.get_partition_properties("0").await.unwrap();
        assert_eq!(p0.id, "0");
        assert_eq!(p0.eventhub, "eh1");

        // One event to a partition, with properties.
        let ev = SdkEventData::builder()
            .with_body(b"hello from the official SDK".to_vec())
            .with_content_type("text/plain".into())
            .add_property("color".into(), "blue")
            .build();
        producer.send_event(ev, Some(SendEventOptions { partition_id: Some("0".into()) })).await.unwrap();

        // A batch of 100 to partition 1.
        let batch = producer
            .create_batch(Some(EventDataBatchOptions { partition_id: Some("1".into()), ..Default::default() }))
            .await
            .unwrap();
        for i in 0..100 {
            assert!(batch.try_add_event_data(format!("batch event {i}").into_bytes(), None).unwrap());
        }
        producer.send_batch(batch, None).await.unwrap();

        // A batch by partition key lands on one partition, the same every time.
        for _ in 0..2 {
            let batch = producer
                .create_batch(Some(EventDataBatchOptions {
                    partition_key: Some("device-7".into()),
                    ..Default::default()
                }))
                .await
                .unwrap();
            batch.try_add_event_data(b"keyed".to_vec(), None).unwrap();
            producer.send_batch(batch, None).await.unwrap();
        }

        let consumer = sdk_consumer(broker.port).await;
        let rx = consumer.open_receiver_on_partition("0".into(), Some(sdk_from_earliest(None, None))).await.unwrap();
        let e = next_event(&rx).await;
        assert_eq!(e.event_data().body(), Some(&b"hello from the official SDK"[..]));
        assert_eq!(e.event_data().content_type(), Some("text/plain"));
        assert_eq!(e.sequence_number(), Some(0));
        assert!(e.enqueued_time().is_some() && e.offset().is_some());
        assert!(e.event_data().properties().unwrap().contains_key("color"));
        rx.close().await.unwrap();

        let rx = consumer.open_receiver_on_partition("1".into(), Some(sdk_from_earliest(None, None))).await.unwrap();
        let got: Vec<_> = rx.stream_events().take(100).map(|e| e.unwrap()).collect().await;
        for (i, e) in got.iter().enumerate() {
            assert_eq!(e.event_data().body(), Some(format!("batch event {i}").as_bytes()));
            assert_eq!(e.sequence_number(), Some(i as i64));
        }
        rx.close().await.unwrap();

        let mut keyed = 0;
        for p in ["0", "1", "2", "3"] {
            let props = consumer.get_partition_properties(p).await.unwrap();
            let expected_before = match p {
                "0" => 1,
                "1" => 100,
                _ => 0,
            };
            let count =
                if props.last_enqueued_sequence_number >= 0 { props.last_enqueued_sequence_number + 1 } else { 0 };
            keyed += count - expected_before;
        }
        assert_eq!(keyed, 2, "both keyed events stored once");
        consumer.close().await.unwrap();
        producer.close().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_rust_sdk_and_ehub_client_read_each_other() {
    bounded(async {
        let broker = Broker::start("always");
        let cs = emulator_connection_string(broker.port);
        // Ours → the official SDK.
        let ours = ehub::ProducerClient::from_connection_string(&cs, Some("eh1")).await.unwrap();
        let to2 = ehub::SendEventOptions { partition_id: Some("2".into()), ..Default::default() };
        ours.send_event(ehub::EventData::from("from ehub").with_property("n", 42i64), Some(to2)).await.unwrap();
        let consumer = sdk_consumer(broker.port).await;
        let rx = consumer.open_receiver_on_partition("2".into(), Some(sdk_from_earliest(None, None))).await.unwrap();
        let e = next_event(&rx).await;
        assert_eq!(e.event_data().body(), Some(&b"from ehub"[..]));
        assert!(e.event_data().properties().unwrap().contains_key("n"));
        rx.close().await.unwrap();

        // The official SDK → ours.
        let producer = sdk_producer(broker.port).await;
        let ev = SdkEventData::builder().with_body(b"from the SDK".to_vec()).add_property("k".into(), "v").build();
        producer.send_event(ev, Some(SendEventOptions { partition_id: Some("3".into()) })).await.unwrap();
        let ours_c = ehub::ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let opts = ehub::OpenReceiverOptions { start_position: ehub::EventPosition::Earliest, ..Default::default() };
        let mut r = ours_c.open_receiver_on_partition("3", Some(opts)).await.unwrap();
        let e = r.recv().await.unwrap();
        assert_eq!(e.body(), Some(&b"from the SDK"[..]));
        assert_eq!(e.sequence_number(), 0);
        assert!(e.properties().iter().any(|(k, v)| *k == Value::from("k") && *v == Value::from("v")));
        r.close().await;
        producer.close().await.unwrap();
        consumer.close().await.unwrap();
        ours.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_rust_sdk_owner_level_steal_and_wrong_key() {
    bounded(async {
        let broker = Broker::start("always");
        let producer = sdk_producer(broker.port).await;
        producer.send_event(b"x".to_vec(), Some(SendEventOptions { partition_id: Some("0".into()) })).await.unwrap();
        let consumer = sdk_consumer(broker.port).await;
        let low =
            consumer.open_receiver_on_partition("0".into(), Some(sdk_from_earliest(None, Some(1)))).await.unwrap();
        let mut low_stream = Box::pin(low.stream_events());
        assert!(low_stream.next().await.unwrap().is_ok());
        // A higher owner level (ours) takes the partition over: the SDK's receiver fails.
        let cs = emulator_connection_string(broker.port);
        let ours = ehub::ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let opts = ehub::OpenReceiverOptions {
            start_position: ehub::EventPosition::Earliest,
            owner_level: Some(2),
            ..Default::default()
        };
        let mut high = ours.open_receiver_on_partition("0", Some(opts)).await.unwrap();
        assert!(high.recv().await.is_ok());
        let stolen =
            tokio::time::timeout(Duration::from_secs(20), low_stream.next()).await.expect("the SDK saw the steal");
        let err = format!("{:?}", stolen.expect("stream ends with an error").expect_err("an error"));
        assert!(err.to_lowercase().contains("stolen") || err.contains("epoch"), "{err}");
        drop(low_stream);

        // A wrong key: the SDK's first operation fails with an authentication error.
        let bad = emulator_connection_string(broker.port).replace("SAS_KEY_VALUE", "wrong");
        let p = ProducerClient::builder()
            .with_custom_endpoint(custom_endpoint(broker.port))
            .with_retry_options(azure_messaging_eventhubs::RetryOptions { max_retries: 0, ..Default::default() })
            .open_with_connection_string(&bad, Some("eh1"))
            .await;
        let failed = first_sdk_error(p).await.expect("a wrong key was accepted");
        // The SDK surfaces the 401 put-token answer as an authorization failure.
        assert!(failed.to_lowercase().contains("authoriz"), "{failed}");
        high.close().await;
        consumer.close().await.unwrap();
        producer.close().await.unwrap();
    })
    .await;
}

/// The first error of an official-SDK producer: from opening it, or from its first request (the
/// SDK authenticates lazily).
/// The official SDK authorises each connection on a throwaway `$cbs` session: after put-token it
/// drops the two links and the session together, sending `detach`, `detach`, `end` without
/// waiting for answers. If our answers to the detaches reach fe2o3-amqp 0.16 before it has
/// processed its own `end`, it fails the session with `unattached-handle`, and our `end` then
/// kills the whole connection ("Connection dropped", "Session is not found"). The broker holds
/// those answers back and drops them when the `end` comes
/// (`ehub_amqp_endpoint::Connection::delay_detach_reply`). With `src/bin/sdkloop.rs` (release
/// build, fe2o3's tracing compiled in) 2 of 85 connections died this way against the broker before
/// that change and none of 260 after it. This test opens 40 connections, each reading one event;
/// it caught the old broker in 1 of 6 release runs, more rarely in debug builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_rust_sdk_survives_many_connections_in_a_row() {
    bounded(async {
        let broker = Broker::start("never");
        let producer = sdk_producer(broker.port).await;
        producer.send_event(b"x".to_vec(), Some(SendEventOptions { partition_id: Some("0".into()) })).await.unwrap();
        producer.close().await.unwrap();
        for _ in 0..40 {
            let consumer = sdk_consumer(broker.port).await;
            let rx =
                consumer.open_receiver_on_partition("0".into(), Some(sdk_from_earliest(None, None))).await.unwrap();
            assert_eq!(next_event(&rx).await.event_data().body(), Some(&b"x"[..]));
            rx.close().await.unwrap();
            consumer.close().await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_rust_sdk_finds_an_unknown_hub_not_found() {
    bounded(async {
        let broker = Broker::start("never");
        let p = ProducerClient::builder()
            .with_custom_endpoint(custom_endpoint(broker.port))
            .with_retry_options(azure_messaging_eventhubs::RetryOptions { max_retries: 0, ..Default::default() })
            .open_with_connection_string(&emulator_connection_string(broker.port), Some("nope"))
            .await;
        let started = std::time::Instant::now();
        let failed = first_sdk_error(p).await.expect("an unknown hub was found");
        // The broker answers the token for a missing hub 404 with the service's text, which the
        // SDK reports at once instead of retrying.
        assert!(failed.contains("404") || failed.contains("could not be found"), "{failed}");
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    })
    .await;
}

async fn first_sdk_error(p: azure_messaging_eventhubs::Result<ProducerClient>) -> Option<String> {
    // The error and its sources, which carry the status the broker answered.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut out = format!("{e:?}");
        let mut source = e.source();
        while let Some(s) = source {
            out.push_str(&format!(" <- {s:?}"));
            source = s.source();
        }
        out
    }
    match p {
        Err(e) => Some(chain(&e)),
        Ok(p) => p.get_eventhub_properties().await.err().map(|e| chain(&e)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ehub_client_speaks_the_official_sdks_dialect() {
    bounded(async {
        let broker = Broker::start("never");
        let proxy = RecordingProxy::start(broker.port).await;
        let port = proxy.port;

        // The official SDK: properties, a send to partition 0, a send of a batch to the hub,
        // a receiver with an owner level from the earliest event.
        {
            let producer = ProducerClient::builder()
                .with_custom_endpoint(custom_endpoint(port))
                .open_with_connection_string(&emulator_connection_string(port), Some("eh1"))
                .await
                .unwrap();
            producer.get_eventhub_properties().await.unwrap();
            producer.get_partition_properties("1").await.unwrap();
            producer
                .send_event(b"a".to_vec(), Some(SendEventOptions { partition_id: Some("0".into()) }))
                .await
                .unwrap();
            let batch = producer.create_batch(None).await.unwrap();
            batch.try_add_event_data(b"b".to_vec(), None).unwrap();
            producer.send_batch(batch, None).await.unwrap();
            let consumer = sdk_consumer(port).await;
            let rx =
                consumer.open_receiver_on_partition("0".into(), Some(sdk_from_earliest(None, Some(3)))).await.unwrap();
            next_event(&rx).await;
            rx.close().await.unwrap();
            // The SDK cannot always detach a receiver it has just read from: its
            // `close_receiver` skips the detach while an in-flight receive still holds the
            // link ("close_receiver could not detach by-value"), and ending the session under
            // the still-attached link then fails inside fe2o3 with "Illegal local state". A
            // race on the client's side (seen once in about 50 runs); the connection closes
            // as the client is dropped, and the dialect compared here (attaches, tokens,
            // management requests) was sent either way.
            if let Err(e) = consumer.close().await {
                let text = format!("{e} {e:?}");
                assert!(text.contains("Illegal local state"), "the official consumer's close: {text}");
            }
            producer.close().await.unwrap();
        }
        let sdk = dialect(&proxy.take_when_closed().await);

        // Ours, the same operations.
        {
            let cs = emulator_connection_string(port);
            let producer = ehub::ProducerClient::from_connection_string(&cs, Some("eh1")).await.unwrap();
            producer.get_eventhub_properties().await.unwrap();
            producer.get_partition_properties("1").await.unwrap();
            let to0 = ehub::SendEventOptions { partition_id: Some("0".into()), ..Default::default() };
            producer.send_event("a", Some(to0)).await.unwrap();
            let mut batch = producer.create_batch(None).await.unwrap();
            batch.try_add(&ehub::EventData::from("b")).unwrap();
            producer.send_batch(&batch).await.unwrap();
            let consumer = ehub::ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
            // The SDK always names its receivers; ours does when given an identifier.
            let opts = ehub::OpenReceiverOptions {
                start_position: ehub::EventPosition::Earliest,
                owner_level: Some(3),
                identifier: Some("dialect-test".into()),
                ..Default::default()
            };
            let mut rx = consumer.open_receiver_on_partition("0", Some(opts)).await.unwrap();
            rx.recv().await.unwrap();
            rx.close().await;
            consumer.close().await;
            producer.close().await;
        }
        let ours = dialect(&proxy.take_when_closed().await);

        // The official Python SDK (interop/python's pinned azure-eventhub), the same operations
        // (tests/python/dialect_ops.py).
        python_sdk_dialect_ops(&emulator_connection_string(port)).await;
        let python = dialect(&proxy.take_when_closed().await);

        let only_sdk: Vec<_> = sdk.difference(&ours).collect();
        let only_ours: Vec<_> = ours.difference(&sdk).collect();
        assert!(
            only_sdk.is_empty() && only_ours.is_empty(),
            "dialects differ\nonly the official SDK sent: {only_sdk:#?}\nonly ehub sent: {only_ours:#?}\nboth: {:#?}",
            sdk.intersection(&ours).collect::<Vec<_>>()
        );
        // And the comparison saw the interesting parts.
        assert!(sdk.iter().any(|i| matches!(i, Item::PutToken { .. })));
        assert!(sdk.iter().any(|i| matches!(i, Item::Management { .. })));
        assert!(sdk.iter().any(|i| matches!(i, Item::Attach { filters, .. } if !filters.is_empty())));

        // The two official SDKs do not speak identically (settle modes, the port in addresses
        // and audiences, optional link properties, the filter's descriptor form, and more);
        // the service accepts both. Facet by facet, ours must be one of theirs, and the same
        // links, token requests and management requests must be there.
        let (rust_f, python_f, ours_f) = (facets(&sdk), facets(&python), facets(&ours));
        let keys = |f: &BTreeMap<(String, &'static str), String>| {
            f.keys().map(|(what, _)| what.clone()).collect::<BTreeSet<_>>()
        };
        assert_eq!(keys(&python_f), keys(&ours_f), "the Python SDK and ehub open different links or requests");
        let mut python_differs = Vec::new();
        for (k, v) in &ours_f {
            let (r, p) = (&rust_f[k], &python_f[k]);
            assert!(v == r || v == p, "{k:?}: ehub sends {v}, the Rust SDK {r}, the Python SDK {p}");
            if v != p {
                python_differs.push(format!("{} / {}: Python {p}; Rust SDK and ehub {v}", k.0, k.1));
            }
        }
        println!("where the Python SDK differs from the Rust SDK and ehub:\n  {}", python_differs.join("\n  "));
        // The comparison must have covered the receive link's filter and owner level.
        let receive = "receiver on consumer partition".to_string();
        assert_eq!(python_f[&(receive.clone(), "filter expression")], ours_f[&(receive.clone(), "filter expression")]);
        assert!(python_f[&(receive, "properties")].contains("com.microsoft:epoch"));
    })
    .await;
}
