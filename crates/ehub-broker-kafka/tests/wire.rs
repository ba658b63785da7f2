//! The Kafka endpoint over TCP, with requests written by the `kafka-protocol` crate's client
//! side: what real clients rarely show (a retried idempotent batch, an oversized batch, a
//! long-polling fetch woken by a produce), and our own AMQP client reading what Kafka produced.

use bytes::{Bytes, BytesMut};
use ehub::{ConsumerClient, EventPosition, OpenReceiverOptions};
use indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(60);

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

struct Client {
    sock: Box<dyn Stream>,
    next: i32,
}

/// A TLS connection trusting only the broker's development CA, as a SASL_SSL client.
async fn tls_stream(addr: SocketAddr, ca: &std::path::Path) -> std::io::Result<Box<dyn Stream>> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    Ok(Box::new(connector.connect(name, TcpStream::connect(addr).await?).await?))
}

impl Client {
    async fn connect(addr: SocketAddr, cs: &str) -> Client {
        Client::authenticate(Box::new(TcpStream::connect(addr).await.unwrap()), cs).await
    }

    async fn authenticate(sock: Box<dyn Stream>, cs: &str) -> Client {
        let mut c = Client { sock, next: 1 };
        let r: SaslHandshakeResponse =
            c.call(SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")), 1).await;
        assert_eq!(r.error_code, 0);
        let token = Bytes::from(format!("\0$ConnectionString\0{cs}"));
        let r: SaslAuthenticateResponse = c.call(SaslAuthenticateRequest::default().with_auth_bytes(token), 2).await;
        assert_eq!(r.error_code, 0, "{:?}", r.error_message);
        c
    }

    async fn send<R: Request>(&mut self, req: R, version: i16) -> i32 {
        let cid = self.next;
        self.next += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(cid)
            .with_client_id(Some(StrBytes::from_static_str("wire-test")));
        let mut buf = BytesMut::new();
        header.encode(&mut buf, R::header_version(version)).unwrap();
        req.encode(&mut buf, version).unwrap();
        self.sock.write_all(&(buf.len() as u32).to_be_bytes()).await.unwrap();
        self.sock.write_all(&buf).await.unwrap();
        self.sock.flush().await.unwrap();
        cid
    }

    async fn receive<R: Request>(&mut self, cid: i32, version: i16) -> R::Response {
        let len = self.sock.read_u32().await.unwrap() as usize;
        let mut buf = vec![0; len];
        self.sock.read_exact(&mut buf).await.unwrap();
        let mut b = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut b, R::Response::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, cid, "responses come back in request order");
        R::Response::decode(&mut b, version).unwrap()
    }

    async fn call<R: Request>(&mut self, req: R, version: i16) -> R::Response {
        let cid = self.send(req, version).await;
        self.receive::<R>(cid, version).await
    }
}

fn batch(values: &[&[u8]], producer: Option<(i64, i32)>) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut headers = IndexMap::new();
            headers.insert(StrBytes::from_static_str("trace"), Some(Bytes::from_static(b"\x01\x02")));
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: producer.map_or(-1, |p| p.0),
                producer_epoch: if producer.is_some() { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: producer.map_or(-1, |p| p.1 + i as i32),
                timestamp: 0,
                key: Some(Bytes::from_static(b"order-1")),
                value: Some(Bytes::copy_from_slice(v)),
                headers,
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions { version: 2, compression: Compression::Gzip },
    )
    .unwrap();
    buf.freeze()
}

fn produce(partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str("eh1")))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(records))])])
}

fn first(r: &ProduceResponse) -> (i16, i64) {
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

#[tokio::test]
async fn a_retried_idempotent_batch_is_stored_once_and_our_amqp_client_reads_the_records() {
    tokio::time::timeout(T, async {
        let broker = ehub_broker::TestBroker::start().await.unwrap();
        let cs = broker.connection_string();
        let mut c = Client::connect(broker.kafka_addr(), &cs).await;
        let id: InitProducerIdResponse = c
            .call(InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000), 4)
            .await;
        assert_eq!(id.error_code, 0);
        let pid = id.producer_id.0;

        let b0 = batch(&[b"a", b"b", b"c"], Some((pid, 0)));
        assert_eq!(first(&c.call(produce(0, b0.clone()), 8).await), (0, 0));
        // The same batch again (the acknowledgement was lost): answered with its first offset.
        assert_eq!(first(&c.call(produce(0, b0), 8).await), (0, 0));
        assert_eq!(first(&c.call(produce(0, batch(&[b"d", b"e", b"f"], Some((pid, 3)))), 8).await), (0, 3));
        // A gap in the sequence is refused, and nothing is stored.
        assert_eq!(first(&c.call(produce(0, batch(&[b"x"], Some((pid, 10)))), 8).await).0, 45);
        // Not idempotent: stored as it comes.
        assert_eq!(first(&c.call(produce(0, batch(&[b"g"], None)), 8).await), (0, 6));

        let consumer = ConsumerClient::builder().open_with_connection_string(&cs, Some("eh1")).await.unwrap();
        let earliest = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
        let mut r = consumer.open_receiver_on_partition("0", Some(earliest)).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 7 {
            got.extend(r.receive_batch(7 - got.len(), Duration::from_secs(5)).await.unwrap());
        }
        assert!(r.receive_batch(1, Duration::from_millis(300)).await.unwrap().is_empty(), "nothing stored twice");
        let bodies: Vec<_> = got.iter().map(|e| e.body_as_str().unwrap().to_owned()).collect();
        assert_eq!(bodies, ["a", "b", "c", "d", "e", "f", "g"]);
        assert_eq!(got.iter().map(|e| e.sequence_number()).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
        let key = ehub_amqp_codec::map_get(got[0].system_properties(), "x-opt-kafka-key");
        assert_eq!(key, Some(&ehub_amqp_codec::Value::Binary(Bytes::from_static(b"order-1"))));
        assert_eq!(got[0].property("trace"), Some(&ehub_amqp_codec::Value::Binary(Bytes::from_static(b"\x01\x02"))));
        assert_eq!(got[0].partition_key(), None, "the Kafka key is not the partition key");
        // The front's producer mark stays inside the broker.
        assert_eq!(ehub_amqp_codec::map_get(got[0].system_properties(), "x-opt-kafka-producer"), None);
        consumer.close().await;
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn oversized_unknown_and_out_of_range_requests_get_their_errors() {
    tokio::time::timeout(T, async {
        let broker = ehub_broker::TestBroker::start().await.unwrap();
        let mut c = Client::connect(broker.kafka_addr(), &broker.connection_string()).await;
        let big = vec![b'x'; 1_100_000];
        assert_eq!(first(&c.call(produce(1, batch(&[&big], None)), 8).await).0, 10, "MESSAGE_TOO_LARGE");
        assert_eq!(first(&c.call(produce(9, batch(&[b"a"], None)), 8).await).0, 3, "no partition 9");
        let mut other = produce(0, batch(&[b"a"], None));
        other.topic_data[0].name = TopicName(StrBytes::from_static_str("nope"));
        assert_eq!(first(&c.call(other, 8).await).0, 3, "no such topic");
        // Nothing of the refused batches was stored.
        let list: ListOffsetsResponse = c
            .call(
                ListOffsetsRequest::default().with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("eh1")))
                    .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(1)
                        .with_timestamp(-1)])]),
                5,
            )
            .await;
        assert_eq!(list.topics[0].partitions[0].offset, 0);
        // A fetch past the end is out of range.
        let f: FetchResponse = c.call(fetch(1, 5, 0), 11).await;
        assert_eq!(f.responses[0].partitions[0].error_code, 1, "OFFSET_OUT_OF_RANGE");
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}

fn fetch(partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default().with_max_wait_ms(max_wait_ms).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(vec![
        FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str("eh1"))).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ]),
    ])
}

#[tokio::test]
async fn a_long_polling_fetch_wakes_up_when_a_record_arrives() {
    // The fetch may wait 120 s, far past this test's bound: only the produce can end it in time.
    tokio::time::timeout(T, async {
        let broker = ehub_broker::TestBroker::start().await.unwrap();
        let cs = broker.connection_string();
        let mut consumer = Client::connect(broker.kafka_addr(), &cs).await;
        let mut producer = Client::connect(broker.kafka_addr(), &cs).await;
        let cid = consumer.send(fetch(2, 0, 120_000), 11).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(first(&producer.call(produce(2, batch(&[b"wake"], None)), 8).await), (0, 0));
        let f = consumer.receive::<FetchRequest>(cid, 11).await;
        let p = &f.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 1));
        let mut records = p.records.clone().unwrap();
        let set = RecordBatchDecoder::decode(&mut records).unwrap();
        assert_eq!(set.records.len(), 1);
        assert_eq!(set.records[0].value.as_deref(), Some(&b"wake"[..]));
        assert_eq!(set.records[0].key.as_deref(), Some(&b"order-1"[..]));
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_idempotent_batch_retried_after_a_restart_is_not_stored_again() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let start = || async {
            let mut config = ehub_broker::BrokerConfig::default();
            config.core.data_dir = dir.path().to_owned();
            ehub_broker::TestBroker::start_with(config).await.unwrap()
        };
        let broker = start().await;
        let mut c = Client::connect(broker.kafka_addr(), &broker.connection_string()).await;
        let id: InitProducerIdResponse = c
            .call(InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000), 4)
            .await;
        let pid = id.producer_id.0;
        let b0 = batch(&[b"a", b"b"], Some((pid, 0)));
        let b1 = batch(&[b"c"], Some((pid, 2)));
        assert_eq!(first(&c.call(produce(3, b0.clone()), 8).await), (0, 0));
        assert_eq!(first(&c.call(produce(3, b1.clone()), 8).await), (0, 2));
        drop(c);
        broker.stop().await.unwrap();

        // The acknowledgements were lost: the producer sends both batches again.
        let broker = start().await;
        let mut c = Client::connect(broker.kafka_addr(), &broker.connection_string()).await;
        assert_eq!(first(&c.call(produce(3, b0), 8).await), (0, 0), "answered with its first offset");
        assert_eq!(first(&c.call(produce(3, b1), 8).await), (0, 2));
        assert_eq!(first(&c.call(produce(3, batch(&[b"d"], Some((pid, 3)))), 8).await), (0, 3));
        let f: FetchResponse = c.call(fetch(3, 0, 0), 11).await;
        let mut records = f.responses[0].partitions[0].records.clone().unwrap();
        let values: Vec<_> = RecordBatchDecoder::decode_all(&mut records)
            .unwrap()
            .into_iter()
            .flat_map(|s| s.records)
            .map(|r| r.value.unwrap())
            .collect();
        assert_eq!(values, ["a", "b", "c", "d"].map(|v| Bytes::from_static(v.as_bytes())), "stored once each");
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sasl_ssl_serves_the_same_hubs_over_tls_and_advertises_its_own_port() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ehub_broker::BrokerConfig::default();
        config.core.data_dir = dir.path().to_owned();
        config.tls.source = ehub_broker::TlsSource::SelfSigned;
        let broker = ehub_broker::TestBroker::start_with(config).await.unwrap();
        let (plain, tls) = (broker.kafka_addr(), broker.kafka_tls_addr().expect("SASL_SSL with TLS on"));
        let ca = broker.ca_path().unwrap().to_owned();
        let cs = broker.connection_string();
        let mut c = Client::authenticate(tls_stream(tls, &ca).await.unwrap(), &cs).await;

        // Metadata sends SASL_SSL clients back to the TLS port, not the plain one.
        let md: MetadataResponse = c.call(MetadataRequest::default().with_topics(None), 12).await;
        assert_eq!(md.brokers.len(), 1);
        assert_eq!((md.brokers[0].host.as_str(), md.brokers[0].port), ("127.0.0.1", i32::from(tls.port())));
        assert_eq!(first(&c.call(produce(2, batch(&[b"over", b"tls"], None)), 8).await), (0, 0));
        let f: FetchResponse = c.call(fetch(2, 0, 0), 11).await;
        let mut records = f.responses[0].partitions[0].records.clone().unwrap();
        let set = RecordBatchDecoder::decode(&mut records).unwrap();
        let values: Vec<_> = set.records.iter().map(|r| r.value.clone().unwrap()).collect();
        assert_eq!(values, [Bytes::from_static(b"over"), Bytes::from_static(b"tls")]);

        // The plain listener sees the same partition, and advertises itself.
        let mut p = Client::connect(plain, &cs).await;
        let md: MetadataResponse = p.call(MetadataRequest::default().with_topics(None), 12).await;
        assert_eq!(md.brokers[0].port, i32::from(plain.port()));
        let f: FetchResponse = p.call(fetch(2, 1, 0), 11).await;
        assert!(f.responses[0].partitions[0].records.as_ref().is_some_and(|r| !r.is_empty()));

        // Plain Kafka bytes on the TLS port end that connection, and the listener goes on.
        let mut raw = TcpStream::connect(tls).await.unwrap();
        raw.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0]).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut sink)).await.unwrap();
        let mut again = Client::authenticate(tls_stream(tls, &ca).await.unwrap(), &cs).await;
        assert_eq!(first(&again.call(produce(2, batch(&[b"after"], None)), 8).await), (0, 2));
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}
