//! Client options: retries, transport, proxy, endpoint, timeouts.

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// How delays between retries grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryMode {
    /// `backoff_factor * 2^attempt`, capped at `max_backoff`.
    #[default]
    Exponential,
    /// Always `backoff_factor`.
    Fixed,
}

/// Retry policy, with the Python library's semantics and defaults (`retry_total=3`,
/// `retry_backoff_factor=0.8`, `retry_backoff_max=120`, exponential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOptions {
    /// How many times a failed operation is retried (0 = no retries).
    pub max_retries: u32,
    /// Base delay.
    pub backoff_factor: Duration,
    /// Largest delay.
    pub max_backoff: Duration,
    /// Exponential or fixed delays.
    pub mode: RetryMode,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_retries: 3,
            backoff_factor: Duration::from_millis(800),
            max_backoff: Duration::from_secs(120),
            mode: RetryMode::Exponential,
        }
    }
}

impl RetryOptions {
    /// The delay before retry number `retried` (0-based).
    pub fn delay(&self, retried: u32) -> Duration {
        let d = match self.mode {
            RetryMode::Fixed => self.backoff_factor,
            RetryMode::Exponential => self.backoff_factor.saturating_mul(1u32.checked_shl(retried).unwrap_or(u32::MAX)),
        };
        d.min(self.max_backoff)
    }
}

/// How the client reaches the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportType {
    /// AMQP over TLS, port 5671 (the service's default).
    #[default]
    AmqpTls,
    /// Plain AMQP, port 5672: emulators and `ehub serve`. Chosen automatically for connection
    /// strings with `UseDevelopmentEmulator=true`.
    Amqp,
    /// AMQP over WebSockets over TLS, port 443 (path `/$servicebus/websocket`, subprotocol
    /// `AMQPWSB10`): for networks that only let HTTPS out. Works through the HTTP proxy too.
    AmqpWebSockets,
}

/// An HTTP CONNECT proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    /// `host:port` of the proxy.
    pub address: String,
    /// Basic-auth user name.
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
}

/// Options shared by producers and consumers.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Retry policy.
    pub retry: RetryOptions,
    /// Transport.
    pub transport: TransportType,
    /// Connect to this address instead of the namespace (`amqp://host:port`,
    /// `amqps://host:port`, `wss://host:port`, `ws://host:port` or `host:port`). Host names in
    /// the protocol (AMQP `hostname`, token audiences, link addresses) still use the namespace.
    /// A scheme overrides the transport: `ws`/`wss` mean AMQP over WebSockets.
    pub custom_endpoint: Option<String>,
    /// HTTP CONNECT proxy.
    pub proxy: Option<ProxyOptions>,
    /// Extra PEM CA certificates trusted for TLS (in addition to the web PKI roots).
    pub ca_certificates: Option<PathBuf>,
    /// Idle timeout advertised to the service (`None` = no idle timeout).
    pub idle_timeout: Option<Duration>,
    /// Prefix of the `user-agent` connection property.
    pub user_agent: Option<String>,
    /// Time allowed for a CBS put-token (Python's `auth_timeout`).
    pub auth_timeout: Duration,
    /// Time allowed to open a socket and complete the AMQP handshake.
    pub connect_timeout: Duration,
    /// Time allowed for one attempt of an operation (a send acknowledgement, a management
    /// request, a link attach).
    pub operation_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryOptions::default(),
            transport: TransportType::AmqpTls,
            custom_endpoint: None,
            proxy: None,
            ca_certificates: None,
            idle_timeout: None,
            user_agent: None,
            auth_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(60),
        }
    }
}

/// Where the client connects and what it calls the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// The namespace host (no port): AMQP `hostname`, audiences and addresses use it.
    pub namespace: String,
    /// The port the connection string named, if any (checkpoint stores name the namespace with
    /// it, as the official Python SDK does for emulator endpoints).
    pub named_port: Option<u16>,
    /// Host to dial.
    pub dial_host: String,
    /// Port to dial.
    pub dial_port: u16,
    /// Wrap the socket in TLS.
    pub tls: bool,
    /// Carry AMQP in WebSocket messages (over TLS when `tls`).
    pub websocket: bool,
}

impl Endpoint {
    /// Resolves the dial address from the namespace, an optional port from the connection
    /// string, and the options.
    pub(crate) fn resolve(namespace: &str, port: Option<u16>, options: &ClientOptions) -> Result<Self> {
        let (namespace, ns_port) = split_host_port(namespace)?;
        let port = port.or(ns_port);
        let tls_default = options.transport != TransportType::Amqp;
        let ws_default = options.transport == TransportType::AmqpWebSockets;
        let default_port = |tls: bool, ws: bool| match (tls, ws) {
            (true, true) => 443,
            (false, true) => 80,
            (true, false) => 5671,
            (false, false) => 5672,
        };
        if let Some(custom) = &options.custom_endpoint {
            let schemes =
                [("amqps://", true, false), ("amqp://", false, false), ("wss://", true, true), ("ws://", false, true)];
            let (tls, websocket, rest) = match schemes.iter().find(|(p, ..)| custom.starts_with(p)) {
                Some((p, tls, ws)) => (*tls, *ws, &custom[p.len()..]),
                None if custom.contains("://") => {
                    return Err(Error::invalid(format!(
                        "custom endpoint '{custom}': use amqps://, amqp://, wss:// or ws://"
                    )));
                }
                None => (tls_default, ws_default, custom.as_str()),
            };
            // A WebSocket endpoint may carry the service's path; the path is ours to add.
            let rest = rest.split('/').next().unwrap_or_default();
            let (host, p) = split_host_port(rest)?;
            return Ok(Endpoint {
                namespace,
                named_port: port,
                dial_host: host,
                dial_port: p.unwrap_or(default_port(tls, websocket)),
                tls,
                websocket,
            });
        }
        Ok(Endpoint {
            dial_host: namespace.clone(),
            namespace,
            named_port: port,
            // The port of a connection string applies to AMQP; WebSockets always use HTTPS's.
            dial_port: if ws_default {
                default_port(true, true)
            } else {
                port.unwrap_or(default_port(tls_default, false))
            },
            tls: tls_default,
            websocket: ws_default,
        })
    }
}

fn split_host_port(s: &str) -> Result<(String, Option<u16>)> {
    let s = s.trim_start_matches("sb://").trim_end_matches('/');
    if s.is_empty() {
        return Err(Error::invalid("the namespace host is empty"));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
            let port = p.parse::<u16>().map_err(|_| Error::invalid(format!("'{s}': the port is not a number")))?;
            Ok((h.to_owned(), Some(port)))
        }
        _ => Ok((s.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_follow_the_python_formula() {
        let r = RetryOptions::default();
        assert_eq!(r.delay(0), Duration::from_millis(800));
        assert_eq!(r.delay(2), Duration::from_millis(3200));
        assert_eq!(r.delay(40), Duration::from_secs(120), "capped at max_backoff");
        let f = RetryOptions { mode: RetryMode::Fixed, ..Default::default() };
        assert_eq!(f.delay(5), Duration::from_millis(800));
    }

    #[test]
    fn endpoints_resolve_ports_and_schemes() {
        let o = ClientOptions::default();
        let e = Endpoint::resolve("ns.servicebus.windows.net", None, &o).unwrap();
        assert_eq!((e.dial_port, e.tls), (5671, true));
        let plain = ClientOptions { transport: TransportType::Amqp, ..Default::default() };
        let e = Endpoint::resolve("localhost:5999", None, &plain).unwrap();
        assert_eq!((e.namespace.as_str(), e.dial_port, e.tls), ("localhost", 5999, false));
        let custom = ClientOptions { custom_endpoint: Some("amqp://127.0.0.1:7000".into()), ..Default::default() };
        let e = Endpoint::resolve("ns.example", None, &custom).unwrap();
        assert_eq!(
            (e.namespace.as_str(), e.dial_host.as_str(), e.dial_port, e.tls),
            ("ns.example", "127.0.0.1", 7000, false)
        );
        assert!(Endpoint::resolve("h:notaport", None, &o).is_err());
        let ws = ClientOptions { transport: TransportType::AmqpWebSockets, ..Default::default() };
        let e = Endpoint::resolve("ns.servicebus.windows.net", None, &ws).unwrap();
        assert_eq!((e.dial_port, e.tls, e.websocket), (443, true, true));
        let custom = ClientOptions { custom_endpoint: Some("ws://127.0.0.1:8080/".into()), ..Default::default() };
        let e = Endpoint::resolve("ns.example", None, &custom).unwrap();
        assert_eq!((e.dial_host.as_str(), e.dial_port, e.tls, e.websocket), ("127.0.0.1", 8080, false, true));
        let custom = ClientOptions { custom_endpoint: Some("wss://gw.example/$servicebus/websocket".into()), ..o };
        let e = Endpoint::resolve("ns.example", None, &custom).unwrap();
        assert_eq!((e.dial_host.as_str(), e.dial_port, e.tls, e.websocket), ("gw.example", 443, true, true));
        assert!(Endpoint::resolve(
            "ns",
            None,
            &ClientOptions { custom_endpoint: Some("http://x".into()), ..Default::default() }
        )
        .is_err());
    }
}
