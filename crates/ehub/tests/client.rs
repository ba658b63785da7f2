//! The client over TCP against a real in-process broker.

mod common;

use common::{start, T};
use ehub::{
    ConsumerClient, ErrorKind, EventData, EventDataBatchOptions, EventPosition, OpenReceiverOptions, ProducerClient,
    SendEventOptions, Value,
};
use std::time::Duration;

fn to(p: &str) -> Option<SendEventOptions> {
    Some(SendEventOptions { partition_id: Some(p.into()), ..Default::default() })
}

fn earliest() -> Option<OpenReceiverOptions> {
    Some(OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() })
}

#[tokio::test]
async fn properties_send_and_receive_round_trip() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let producer = ProducerClient::from_connection_string(&cs, Some("eh1")).await.unwrap();
        let props = producer.get_eventhub_properties().await.unwrap();
        assert_eq!(props.name, "eh1");
        assert_eq!(props.partition_ids, vec!["0", "1", "2", "3"]);
        let p = producer.get_partition_properties("2").await.unwrap();
        assert!(p.is_empty);
        assert_eq!(p.last_enqueued_sequence_number, -1);

        let event = EventData::from("hello")
            .with_property("int", 7i32)
            .with_property("text", "t")
            .with_property("flag", true)
            .with_content_type("text/plain")
            .with_correlation_id("corr")
            .with_message_id("m-1");
        producer.send_event(event, to("2")).await.unwrap();
        producer.send_events(vec![EventData::from("a"), EventData::from(vec![0u8, 1, 2])], to("2")).await.unwrap();

        let p = producer.get_partition_properties("2").await.unwrap();
        assert_eq!((p.beginning_sequence_number, p.last_enqueued_sequence_number, p.is_empty), (0, 2, false));

        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let mut r = consumer.open_receiver_on_partition("2", earliest()).await.unwrap();
        let e = r.recv().await.unwrap();
        assert_eq!(e.body_as_str(), Some("hello"));
        assert_eq!(e.sequence_number(), 0);
        assert_eq!(e.partition_id(), "2");
        assert_eq!(e.property("int"), Some(&Value::Int(7)));
        assert_eq!(e.property("text"), Some(&Value::from("t")));
        assert_eq!(e.property("flag"), Some(&Value::Bool(true)));
        assert_eq!(e.content_type(), Some("text/plain"));
        assert_eq!(e.correlation_id(), Some(&Value::from("corr")));
        assert_eq!(e.message_id(), Some(&Value::from("m-1")));
        assert!(e.enqueued_time_millis() > 0);
        let rest = r.receive_batch(10, Duration::from_secs(5)).await.unwrap();
        let bodies: Vec<_> = rest.iter().map(|e| e.body().unwrap().to_vec()).collect();
        assert_eq!(bodies, vec![b"a".to_vec(), vec![0, 1, 2]]);
        assert_eq!(rest[1].sequence_number(), 2);
        let none = r.receive_batch(10, Duration::from_millis(200)).await.unwrap();
        assert!(none.is_empty(), "nothing more: {none:?}");
        producer.close().await;
        consumer.close().await;
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

/// The management node's reply link gets credit back with every response: once it granted
/// only its first 16, and the 17th request on a connection never got an answer.
#[tokio::test]
async fn many_management_requests_on_one_connection_all_get_answers() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let producer =
            ProducerClient::from_connection_string(&f.broker.connection_string(), Some("eh1")).await.unwrap();
        for i in 0..200 {
            let p = producer.get_partition_properties(&(i % 4).to_string()).await.unwrap();
            assert_eq!(p.id, (i % 4).to_string());
        }
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let producer = producer.clone();
                tokio::spawn(async move { producer.get_eventhub_properties().await.map(|p| p.partition_ids.len()) })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 4);
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn keys_route_like_the_service_and_batches_fill_exactly() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let producer = ProducerClient::from_connection_string(&cs, Some("eh1")).await.unwrap();
        let key_opts = Some(SendEventOptions { partition_key: Some("7".into()), ..Default::default() });
        producer.send_event("keyed", key_opts).await.unwrap();
        let want = ehub_model::partition_for_key("7", 4).to_string();
        let mut batch = producer
            .create_batch(Some(EventDataBatchOptions {
                partition_key: Some("7".into()),
                max_size_in_bytes: Some(4000),
                ..Default::default()
            }))
            .await
            .unwrap();
        let mut n = 0;
        while batch.try_add(&EventData::from(format!("{n:0>100}"))).unwrap() {
            n += 1;
        }
        assert!(n > 10 && batch.size_in_bytes() <= 4000, "{n} events, {} bytes", batch.size_in_bytes());
        producer.send_batch(&batch).await.unwrap();

        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let mut r = consumer.open_receiver_on_partition(&want, earliest()).await.unwrap();
        let first = r.recv().await.unwrap();
        assert_eq!(first.body_as_str(), Some("keyed"));
        assert_eq!(first.partition_key(), Some("7"));
        let mut got = 0;
        while got < n {
            let b = r.receive_batch(1000, Duration::from_secs(5)).await.unwrap();
            assert!(!b.is_empty(), "batch events missing after {got}");
            for e in &b {
                assert_eq!(e.body_as_str().unwrap(), format!("{got:0>100}"));
                assert_eq!(e.partition_key(), Some("7"));
                got += 1;
            }
        }
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_key_unknown_hub_and_oversized_event_fail_with_their_kinds() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let bad = common::connection_string(f.broker.addr, "not-the-key");
        let p = ProducerClient::from_connection_string(&bad, Some("eh1")).await.unwrap();
        let e = p.send_event("x", to("0")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert!(!e.is_transient());

        let cs = f.broker.connection_string();
        let p = ProducerClient::from_connection_string(&cs, Some("nohub")).await.unwrap();
        let e = p.get_eventhub_properties().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceNotFound, "{e}");
        let e = p.send_event("x", None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ResourceNotFound, "{e}");

        let p = ProducerClient::from_connection_string(&cs, Some("eh1")).await.unwrap();
        let e = p.send_event(vec![1u8; 1 << 20], to("0")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::MessageTooLarge, "{e}");
        // The producer stays usable.
        p.send_event("small", to("0")).await.unwrap();
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_higher_owner_level_disconnects_the_old_receiver() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let opts = |level| {
            Some(OpenReceiverOptions {
                owner_level: Some(level),
                start_position: EventPosition::Earliest,
                ..Default::default()
            })
        };
        let mut old = consumer.open_receiver_on_partition("1", opts(1)).await.unwrap();
        let other = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let _new = other.open_receiver_on_partition("1", opts(2)).await.unwrap();
        let e = old.recv().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConsumerDisconnected, "{e}");
        assert_eq!(e.condition(), Some("amqp:link:stolen"));
        let e = other.open_receiver_on_partition("1", opts(1)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConsumerDisconnected, "a lower level is refused: {e}");
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn receive_over_all_partitions_and_the_event_stream() {
    use futures_util::StreamExt;
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let producer = ProducerClient::from_connection_string(&cs, Some("eh1")).await.unwrap();
        for p in ["0", "1", "2", "3"] {
            producer.send_event(format!("to {p}"), to(p)).await.unwrap();
        }
        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let options = ehub::ReceiveOptions { partition_id: None, receiver: earliest().unwrap() };
        let mut seen = Vec::new();
        consumer
            .receive(options, |e| {
                seen.push((e.partition_id().to_owned(), e.body_as_str().unwrap().to_owned()));
                if seen.len() == 4 {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            })
            .await
            .unwrap();
        seen.sort();
        let want: Vec<_> = ["0", "1", "2", "3"].iter().map(|p| (p.to_string(), format!("to {p}"))).collect();
        assert_eq!(seen, want);

        let mut r = consumer.open_receiver_on_partition("3", earliest()).await.unwrap();
        producer.send_event("second", to("3")).await.unwrap();
        let bodies: Vec<String> =
            r.stream_events().take(2).map(|e| e.unwrap().body_as_str().unwrap().to_owned()).collect().await;
        assert_eq!(bodies, ["to 3", "second"]);
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_active_trace_context_is_stamped_on_sent_events() {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let producer = ProducerClient::from_connection_string(&cs, Some("eh1")).await.unwrap();
        producer.send_event("untraced", to("1")).await.unwrap();
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "v1")]).unwrap(),
        );
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        {
            // Thread-local: the guard covers the synchronous encoding inside these calls.
            let _active = opentelemetry::Context::new().with_remote_span_context(sc).attach();
            producer.send_event("traced", to("1")).await.unwrap();
            let forwarded = EventData::from("forwarded").with_property("Diagnostic-Id", "00-original");
            let mut batch = producer
                .create_batch(Some(EventDataBatchOptions { partition_id: Some("1".into()), ..Default::default() }))
                .await
                .unwrap();
            assert!(batch.try_add(&forwarded).unwrap());
            producer.send_batch(&batch).await.unwrap();
        }
        let consumer = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let mut r = consumer.open_receiver_on_partition("1", earliest()).await.unwrap();
        let got = r.receive_batch(3, Duration::from_secs(10)).await.unwrap();
        assert_eq!(got.len(), 3);
        assert!(got[0].properties().is_empty(), "no context, no properties: {:?}", got[0].properties());
        assert_eq!(got[1].property(ehub::DIAGNOSTIC_ID_PROPERTY), Some(&Value::from(parent)));
        assert_eq!(got[1].property(ehub::TRACEPARENT_PROPERTY), Some(&Value::from(parent)));
        assert_eq!(got[1].property(ehub::TRACESTATE_PROPERTY), Some(&Value::from("vendor=v1")));
        assert_eq!(got[2].property("Diagnostic-Id"), Some(&Value::from("00-original")), "an existing id is kept");
        assert_eq!(got[2].property("traceparent"), Some(&Value::from(parent)));
        consumer.close().await;
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

/// Large events with a small byte bound: the window shrinks to one event and every event still
/// arrives, in order; small events after them widen it again.
#[tokio::test]
async fn a_byte_bounded_window_still_delivers_large_and_small_events_in_order() {
    tokio::time::timeout(T, async {
        let f = start().await;
        let cs = f.broker.connection_string();
        let p = ProducerClient::from_connection_string(&cs, Some("eh1")).await.unwrap();
        for i in 0..20u8 {
            p.send_event(EventData::from(vec![i; 300 * 1024]), to("2")).await.unwrap();
        }
        p.send_events((0..500).map(|i| EventData::from(format!("small {i}"))).collect::<Vec<_>>(), to("2"))
            .await
            .unwrap();
        let c = ConsumerClient::from_connection_string(&cs, Some("eh1"), None).await.unwrap();
        let opts = OpenReceiverOptions {
            start_position: EventPosition::Earliest,
            prefetch_bytes: 256 * 1024,
            ..Default::default()
        };
        let mut r = c.open_receiver_on_partition("2", Some(opts)).await.unwrap();
        let mut seqs = Vec::new();
        while seqs.len() < 520 {
            for e in r.receive_batch(100, Duration::from_secs(5)).await.unwrap() {
                if e.sequence_number() < 20 {
                    assert_eq!(e.body().unwrap().len(), 300 * 1024);
                }
                seqs.push(e.sequence_number());
            }
        }
        assert_eq!(seqs, (0..520).collect::<Vec<i64>>());
        r.close().await;
        c.close().await;
        p.close().await;
    })
    .await
    .unwrap();
}
