//! Transports: an HTTP CONNECT proxy and TLS with a test CA, both real, in the test.

mod common;

use common::T;
use ehub::{ClientOptions, ErrorKind, ProducerClient, ProxyOptions, SendEventOptions};
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
