//! Transports: an HTTP CONNECT proxy, TLS with a test CA, and AMQP over WebSockets, all real.

mod common;

use common::T;
use ehub::{
    ClientOptions, ConsumerClient, ErrorKind, EventPosition, OpenReceiverOptions, ProducerClient, ProxyOptions,
    SendEventOptions,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A minimal CONNECT proxy: records each request head, optionally demands basic auth.
async fn proxy(required_auth: Option<&'static str>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let h = heads.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let h = h.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(s.read_u8().await.unwrap());
                }
                let text = String::from_utf8(head).unwrap();
                h.lock().unwrap().push(text.clone());
                if let Some(auth) = required_auth {
                    if !text.contains(&format!("Proxy-Authorization: Basic {auth}\r\n")) {
                        s.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await.unwrap();
                        return;
                    }
                }
                let target = text.split_whitespace().nth(1).unwrap().to_owned();
                let mut upstream = TcpStream::connect(target).await.unwrap();
                s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut upstream).await;
            });
        }
    });
    (addr, heads)
}

fn to0() -> Option<SendEventOptions> {
    Some(SendEventOptions { partition_id: Some("0".into()), ..Default::default() })
}

#[tokio::test]
async fn sends_through_a_connect_proxy_with_basic_auth() {
    tokio::time::timeout(T, async {
        let f = common::start().await;
        // "user:pass" in base64.
        let (paddr, heads) = proxy(Some("dXNlcjpwYXNz")).await;
        let with_proxy = |password: &str| ClientOptions {
            proxy: Some(ProxyOptions {
                address: paddr.to_string(),
                username: Some("user".into()),
                password: Some(password.into()),
            }),
            ..Default::default()
        };
        let cs = f.broker.connection_string();
        let p = ProducerClient::builder()
            .with_options(with_proxy("pass"))
            .open_with_connection_string(&cs, Some("eh1"))
            .await
            .unwrap();
        p.send_event("via proxy", to0()).await.unwrap();
        assert_eq!(p.get_partition_properties("0").await.unwrap().last_enqueued_sequence_number, 0);
        let first = heads.lock().unwrap()[0].clone();
        assert!(first.starts_with(&format!("CONNECT {} HTTP/1.1\r\n", f.broker.addr)), "{first}");

        let bad = ProducerClient::builder()
            .with_options(with_proxy("wrong"))
            .open_with_connection_string(&cs, Some("eh1"))
            .await
            .unwrap();
        let e = bad.send_event("x", to0()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

/// A TLS terminator in front of the broker, with a certificate for `localhost` from a test CA.
async fn tls_front(broker: SocketAddr, dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf, Arc<AtomicUsize>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "ehub test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let n = handshakes.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let n = n.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else { return };
                n.fetch_add(1, Ordering::SeqCst);
                let mut upstream = TcpStream::connect(broker).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (addr, ca_path, handshakes)
}

#[tokio::test]
async fn tls_with_a_custom_ca_works_and_an_unknown_ca_is_refused() {
    tokio::time::timeout(T, async {
        let f = common::start().await;
        let (front, ca_path, handshakes) = tls_front(f.broker.addr, f.dir.path()).await;
        let cred = ehub::SasKeyCredential::new("RootManageSharedAccessKey", "SAS_KEY_VALUE");
        let opts = ClientOptions {
            custom_endpoint: Some(format!("amqps://localhost:{}", front.port())),
            ca_certificates: Some(ca_path),
            ..Default::default()
        };
        let p =
            ProducerClient::builder().with_options(opts.clone()).open("localhost", "eh1", cred.clone()).await.unwrap();
        p.send_event("over tls", to0()).await.unwrap();
        assert_eq!(handshakes.load(Ordering::SeqCst), 1);

        let untrusted = ClientOptions { ca_certificates: None, ..opts };
        let p = ProducerClient::builder().with_options(untrusted).open("localhost", "eh1", cred).await.unwrap();
        let e = p.send_event("x", to0()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        assert!(e.to_string().contains("TLS"), "{e}");
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn amqp_over_websockets_plain_through_a_proxy_and_over_tls() {
    tokio::time::timeout(T, async {
        let f = common::start().await;
        let ws = f.broker.ws_addr;
        let cred = ehub::SasKeyCredential::new("RootManageSharedAccessKey", "SAS_KEY_VALUE");
        let open = |opts: ClientOptions| {
            let cred = cred.clone();
            async move { ProducerClient::builder().with_options(opts).open("localhost", "eh1", cred).await.unwrap() }
        };
        // Plain ws://, as a gateway without TLS would offer it.
        let plain = open(ClientOptions { custom_endpoint: Some(format!("ws://{ws}")), ..Default::default() }).await;
        plain.send_event("ws", to0()).await.unwrap();
        // Through the CONNECT proxy: the tunnel carries the HTTP upgrade.
        let (paddr, heads) = proxy(None).await;
        let proxied = open(ClientOptions {
            custom_endpoint: Some(format!("ws://{ws}")),
            proxy: Some(ProxyOptions { address: paddr.to_string(), username: None, password: None }),
            ..Default::default()
        })
        .await;
        proxied.send_event("ws via proxy", to0()).await.unwrap();
        assert!(heads.lock().unwrap()[0].starts_with(&format!("CONNECT {ws} ")));
        // wss:// with the test CA: TLS, then the upgrade, then AMQP, as on the service's port 443.
        let (front, ca_path, handshakes) = tls_front(ws, f.dir.path()).await;
        let opts = ClientOptions {
            custom_endpoint: Some(format!("wss://localhost:{}", front.port())),
            ca_certificates: Some(ca_path),
            ..Default::default()
        };
        let consumer =
            ConsumerClient::builder().with_options(opts).open("localhost", "eh1", cred.clone()).await.unwrap();
        let earliest = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
        let mut r = consumer.open_receiver_on_partition("0", Some(earliest)).await.unwrap();
        let got = r.receive_batch(2, std::time::Duration::from_secs(10)).await.unwrap();
        let bodies: Vec<_> = got.iter().map(|e| e.body_as_str().unwrap().to_owned()).collect();
        assert_eq!(bodies, ["ws", "ws via proxy"]);
        assert_eq!(handshakes.load(Ordering::SeqCst), 1);
        consumer.close().await;
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

/// Sends a raw upgrade request and returns the status line of the answer.
async fn upgrade_status(addr: SocketAddr, path: &str, protocol: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(p) = protocol {
        req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    String::from_utf8(head).unwrap().trim_end().to_owned()
}

#[tokio::test]
async fn the_websocket_listener_wants_the_service_path_and_subprotocol() {
    tokio::time::timeout(T, async {
        let f = common::start().await;
        let ws = f.broker.ws_addr;
        assert!(upgrade_status(ws, "/$servicebus/websocket", Some("AMQPWSB10")).await.contains(" 101 "));
        assert!(upgrade_status(ws, "/other", Some("AMQPWSB10")).await.contains(" 404 "));
        assert!(upgrade_status(ws, "/$servicebus/websocket", None).await.contains(" 400 "));
        assert!(upgrade_status(ws, "/$servicebus/websocket", Some("mqtt, amqp")).await.contains(" 400 "));
        // The broker lives on.
        let cs = f.broker.connection_string();
        let p = ProducerClient::from_connection_string(&cs, Some("eh1")).await.unwrap();
        p.send_event("still here", to0()).await.unwrap();
        f.broker.stop().await;
    })
    .await
    .unwrap();
}

/// The broker's own TLS listeners, with the development CA it creates: AMQP over TLS (5671's
/// path) and AMQP over WebSockets over TLS (443's path), with the client's default transport
/// and nothing but the CA and a custom endpoint set. A client without the CA is refused.
#[tokio::test]
async fn the_brokers_own_tls_listeners_with_its_development_ca() {
    tokio::time::timeout(T, async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ehub_broker::BrokerConfig::default();
        config.core.data_dir = dir.path().to_owned();
        config.tls.source = ehub_broker::TlsSource::SelfSigned;
        config.tls.listen_websocket = Some("127.0.0.1:0".parse().unwrap());
        let broker = ehub_broker::TestBroker::start_with(config).await.unwrap();
        let ca = broker.ca_path().unwrap().to_owned();
        assert_eq!(ca, dir.path().join("tls/ca.pem"));
        let cred = ehub::SasKeyCredential::new("RootManageSharedAccessKey", "SAS_KEY_VALUE");
        let opts = |endpoint: String, ca: Option<std::path::PathBuf>| ClientOptions {
            custom_endpoint: Some(endpoint),
            ca_certificates: ca,
            ..Default::default()
        };
        let tls = broker.tls_addr().unwrap();
        let wss = broker.websocket_tls_addr().unwrap();
        let p = ProducerClient::builder()
            .with_options(opts(format!("amqps://localhost:{}", tls.port()), Some(ca.clone())))
            .open("localhost", "eh1", cred.clone())
            .await
            .unwrap();
        p.send_event("amqps", to0()).await.unwrap();
        // By IP address too: the certificate names 127.0.0.1.
        let by_ip = ProducerClient::builder()
            .with_options(opts(format!("amqps://127.0.0.1:{}", tls.port()), Some(ca.clone())))
            .open("127.0.0.1", "eh1", cred.clone())
            .await
            .unwrap();
        by_ip.send_event("amqps by ip", to0()).await.unwrap();
        let consumer = ConsumerClient::builder()
            .with_options(opts(format!("wss://localhost:{}", wss.port()), Some(ca.clone())))
            .open("localhost", "eh1", cred.clone())
            .await
            .unwrap();
        let earliest = OpenReceiverOptions { start_position: EventPosition::Earliest, ..Default::default() };
        let mut r = consumer.open_receiver_on_partition("0", Some(earliest)).await.unwrap();
        let got = r.receive_batch(2, std::time::Duration::from_secs(10)).await.unwrap();
        let bodies: Vec<_> = got.iter().map(|e| e.body_as_str().unwrap().to_owned()).collect();
        assert_eq!(bodies, ["amqps", "amqps by ip"]);

        let untrusted = ProducerClient::builder()
            .with_options(opts(format!("amqps://localhost:{}", tls.port()), None))
            .open("localhost", "eh1", cred)
            .await
            .unwrap();
        let e = untrusted.send_event("x", to0()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
        consumer.close().await;
        broker.stop().await.unwrap();
    })
    .await
    .unwrap();
}
