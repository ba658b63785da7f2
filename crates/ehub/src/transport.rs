//! Opening the byte stream under AMQP: TCP, optionally through an HTTP CONNECT proxy,
//! optionally wrapped in TLS (rustls with the web PKI roots plus a custom CA bundle),
//! optionally carried in WebSocket messages.

use crate::error::{Error, ErrorKind, Result};
use crate::options::{ClientOptions, Endpoint, ProxyOptions};
use base64::Engine as _;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Any byte stream the AMQP connection can run over.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub(crate) type BoxStream = Box<dyn Stream>;

fn connect_error(what: String, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Connect, format!("{what}: {e}")).with_source(e)
}

/// Opens the stream for `endpoint`.
pub(crate) async fn connect(endpoint: &Endpoint, options: &ClientOptions) -> Result<BoxStream> {
    let target = format!("{}:{}", endpoint.dial_host, endpoint.dial_port);
    let tcp = match &options.proxy {
        Some(p) => through_proxy(p, &target).await?,
        None => TcpStream::connect(&target).await.map_err(|e| connect_error(format!("connecting to {target}"), e))?,
    };
    let _ = tcp.set_nodelay(true);
    if !endpoint.tls {
        return websocket_if_asked(endpoint, tcp).await;
    }
    let config = tls_config(options)?;
    let name = rustls::pki_types::ServerName::try_from(endpoint.dial_host.clone())
        .map_err(|e| Error::invalid(format!("'{}' is not a valid TLS server name: {e}", endpoint.dial_host)))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| {
        // rustls reports certificate and protocol failures as InvalidData: retrying
        // cannot fix those.
        let permanent = e.kind() == std::io::ErrorKind::InvalidData;
        let err = connect_error(format!("TLS handshake with {target}"), e);
        if permanent {
            err.permanent()
        } else {
            err
        }
    })?;
    websocket_if_asked(endpoint, tls).await
}

async fn websocket_if_asked<S: Stream>(endpoint: &Endpoint, stream: S) -> Result<BoxStream> {
    if !endpoint.websocket {
        return Ok(Box::new(stream));
    }
    let default_port = if endpoint.tls { 443 } else { 80 };
    let host = if endpoint.dial_port == default_port {
        endpoint.dial_host.clone()
    } else {
        format!("{}:{}", endpoint.dial_host, endpoint.dial_port)
    };
    let ws = ehub_amqp_endpoint::websocket::connect(stream, &host, endpoint.tls)
        .await
        .map_err(|e| connect_error(format!("WebSocket upgrade with {host}"), e))?;
    Ok(Box::new(ws))
}

fn tls_config(options: &ClientOptions) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &options.ca_certificates {
        let pem = std::fs::read(path)
            .map_err(|e| Error::invalid(format!("reading CA bundle {}: {e}", path.display())).with_source(e))?;
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| Error::invalid(format!("CA bundle {}: {e}", path.display())).with_source(e))?;
            roots.add(cert).map_err(|e| Error::invalid(format!("CA bundle {}: {e}", path.display())).with_source(e))?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::invalid(format!("CA bundle {} holds no PEM certificate", path.display())));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Connect, format!("TLS setup: {e}")).with_source(e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Opens a tunnel to `target` through an HTTP CONNECT proxy.
async fn through_proxy(proxy: &ProxyOptions, target: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(&proxy.address)
        .await
        .map_err(|e| connect_error(format!("connecting to proxy {}", proxy.address), e))?;
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(user) = &proxy.username {
        let cred = format!("{user}:{}", proxy.password.as_deref().unwrap_or(""));
        let b64 = base64::engine::general_purpose::STANDARD.encode(cred);
        req.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| connect_error("writing to the proxy".into(), e))?;
    // Read the response head byte by byte so no tunnelled byte is consumed.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(Error::new(ErrorKind::Connect, "the proxy sent an oversized response head"));
        }
        let b = s.read_u8().await.map_err(|e| connect_error("reading the proxy response".into(), e))?;
        head.push(b);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or("");
    let code = status.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(200..=299) => Ok(s),
        Some(407) => Err(Error::new(
            ErrorKind::Authentication,
            format!("the proxy {} refused the credentials: {status}", proxy.address),
        )),
        _ => Err(Error::new(
            ErrorKind::Connect,
            format!("the proxy {} refused CONNECT {target}: {status}", proxy.address),
        )),
    }
}
