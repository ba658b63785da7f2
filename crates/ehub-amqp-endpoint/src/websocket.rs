//! AMQP over WebSockets: the AMQP byte stream carried in binary WebSocket messages on an
//! HTTP-upgraded connection, as Azure Event Hubs and Service Bus accept on port 443 (path
//! [`PATH`], subprotocol [`SUBPROTOCOL`]).
//!
//! [`WsStream`] turns a WebSocket into an ordinary `AsyncRead + AsyncWrite` byte stream, so
//! the [`Transport`](crate::driver::Transport) and the engine do not know the difference.
//! Message boundaries carry no meaning: a frame may span messages and a message may hold many
//! frames. Pings are answered by the WebSocket layer; a close message is the end of stream.

use bytes::Bytes;
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// The request path Event Hubs serves AMQP on.
pub const PATH: &str = "/$servicebus/websocket";

/// The WebSocket subprotocol Event Hubs requires.
pub const SUBPROTOCOL: &str = "AMQPWSB10";

const PROTOCOL_HEADER: &str = "Sec-WebSocket-Protocol";

/// A WebSocket seen as a byte stream.
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
}

fn ws_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, e)
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

fn config() -> WebSocketConfig {
    // AMQP frames are at most max-frame-size; 16 MiB bounds a hostile peer's message.
    WebSocketConfig::default().max_message_size(Some(16 << 20)).max_frame_size(Some(16 << 20))
}

/// Opens AMQP over WebSockets on an established stream (TCP, TLS, or a proxy tunnel):
/// sends the upgrade request for `ws[s]://{host}{PATH}` and checks that the server agreed to
/// [`SUBPROTOCOL`].
pub async fn connect<S>(stream: S, host: &str, tls: bool) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let scheme = if tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{host}{PATH}");
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).map_err(ws_error)?;
    request.headers_mut().insert(PROTOCOL_HEADER, HeaderValue::from_static(SUBPROTOCOL));
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config())).await.map_err(ws_error)?;
    let agreed = response.headers().get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok());
    if !agreed.is_some_and(|p| p.eq_ignore_ascii_case(SUBPROTOCOL)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the server did not accept the {SUBPROTOCOL} subprotocol (it answered {agreed:?})"),
        ));
    }
    Ok(WsStream { ws, pending: Bytes::new() })
}

/// Accepts AMQP over WebSockets on an incoming stream: the request must be for [`PATH`] and
/// offer [`SUBPROTOCOL`]; anything else is refused with an HTTP error before the upgrade.
pub async fn accept<S>(stream: S) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    #[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
    let check = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let refuse = |status: StatusCode, why: String| {
            let mut r = ErrorResponse::new(Some(why));
            *r.status_mut() = status;
            r
        };
        if req.uri().path() != PATH {
            return Err(refuse(StatusCode::NOT_FOUND, format!("AMQP is served on {PATH}")));
        }
        let offered = req.headers().get_all(PROTOCOL_HEADER).iter().filter_map(|v| v.to_str().ok());
        if !offered.flat_map(|v| v.split(',')).any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL)) {
            return Err(refuse(StatusCode::BAD_REQUEST, format!("the {SUBPROTOCOL} subprotocol is required")));
        }
        resp.headers_mut().insert(PROTOCOL_HEADER, HeaderValue::from_static(SUBPROTOCOL));
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config())).await.map_err(ws_error)?;
    Ok(WsStream { ws, pending: Bytes::new() })
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                // End of stream: the caller sees a zero-byte read.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message on an AMQP WebSocket (AMQP travels in binary messages)",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_error)?;
        Pin::new(&mut self.ws).start_send(Message::Binary(Bytes::copy_from_slice(buf))).map_err(ws_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(ws_error(e))),
        }
    }
}
