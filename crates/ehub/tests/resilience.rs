//! Recovery and token lifetime: a broker restart mid-stream, short-lived tokens.

mod common;

use common::{TestBroker, T};
use ehub::{
    ClientOptions, ConsumerClient, ErrorKind, EventData, EventPosition, OpenReceiverOptions, ProducerClient, RetryMode,
    RetryOptions, SasKeyCredential, SasTokenCredential, SendEventOptions,
};
use std::time::Duration;

fn quick_retries() -> ClientOptions {
    ClientOptions {
        retry: RetryOptions {
            max_retries: 40,
            backoff_factor: Duration::from_millis(100),
            max_backoff: Duration::from_millis(100),
            mode: RetryMode::Fixed,
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn a_broker_restart_mid_stream_loses_and_repeats_nothing() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let broker = TestBroker::start_at(dir.path(), "127.0.0.1:0").await;
        let addr = broker.addr;
        let cs = broker.connection_string();
        let producer = ProducerClient::builder()
            .with_options(quick_retries())
            .open_with_connection_string(&cs, Some("eh1"))
            .await
            .unwrap();
        let to0 = || Some(SendEventOptions { partition_id: Some("0".into()), ..Default::default() });
        for i in 0..100 {
            producer.send_event(format!("e{i}"), to0()).await.unwrap();
        }
        let consumer = ConsumerClient::builder()
            .with_options(quick_retries())
            .open_with_connection_string(&cs, Some("eh1"))
            .await
            .unwrap();
        let opts = OpenReceiverOptions { start_position: EventPosition::Earliest, prefetch: 10, ..Default::default() };
        let mut r = consumer.open_receiver_on_partition("0", Some(opts)).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 50 {
            seen.push(r.recv().await.unwrap());
        }

        broker.stop().await;
        let broker = TestBroker::start_at(dir.path(), &addr.to_string()).await;

        for i in 100..200 {
            producer.send_event(format!("e{i}"), to0()).await.unwrap();
        }
        while seen.len() < 200 {
            seen.push(r.recv().await.unwrap());
        }
        for (i, e) in seen.iter().enumerate() {
            assert_eq!(e.sequence_number(), i as i64, "in order, no gap, no duplicate");
            assert_eq!(e.body_as_str().unwrap(), format!("e{i}"));
        }
        let extra = r.receive_batch(10, Duration::from_millis(300)).await.unwrap();
        assert!(extra.is_empty(), "no duplicates after the end: {extra:?}");
        broker.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_on_a_live_connection() {
    tokio::time::timeout(T, async {
        let f = common::start().await;
        let endpoint = format!("amqp://{}", f.broker.addr);
        let opts = || Some(OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() });

        // A refreshable credential: tokens live 3 s and are renewed before they lapse.
        let cred = SasKeyCredential::new("RootManageSharedAccessKey", "SAS_KEY_VALUE")
            .with_token_lifetime(Duration::from_secs(3));
        let consumer =
            ConsumerClient::builder().with_custom_endpoint(&endpoint).open("localhost", "eh1", cred).await.unwrap();
        let _first = consumer.open_receiver_on_partition("0", opts()).await.unwrap();

        // A token that cannot be refreshed, for contrast.
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3;
        let token =
            ehub_model::generate_sas_token("amqps://localhost/eh1", "RootManageSharedAccessKey", "SAS_KEY_VALUE", exp);
        let fixed = ConsumerClient::builder()
            .with_custom_endpoint(&endpoint)
            .open("localhost", "eh1", SasTokenCredential::new(token).unwrap())
            .await
            .unwrap();
        let _first_fixed = fixed.open_receiver_on_partition("0", opts()).await.unwrap();

        tokio::time::sleep(Duration::from_secs(7)).await;
        // Same connection, same audience: the attach is covered only if the token was renewed.
        let again = consumer.open_receiver_on_partition("0", opts()).await;
        assert!(again.is_ok(), "the refreshed token covers a new link: {:?}", again.err());
        let e = fixed.open_receiver_on_partition("0", opts()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "an expired fixed token is refused: {e}");
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn many_sends_in_flight_on_one_link_are_all_acknowledged() {
    tokio::time::timeout(T, async {
        let f = common::start().await;
        let producer =
            ProducerClient::from_connection_string(&f.broker.connection_string(), Some("eh1")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let p = producer.clone();
            tasks.push(tokio::spawn(async move {
                let o = SendEventOptions { partition_id: Some("3".into()), ..Default::default() };
                p.send_events((0..10).map(|j| EventData::from(format!("{i}-{j}"))), Some(o)).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let p = producer.get_partition_properties("3").await.unwrap();
        assert_eq!(p.last_enqueued_sequence_number, 639);
        f.broker.stop().await;
    })
    .await
    .unwrap();
}
