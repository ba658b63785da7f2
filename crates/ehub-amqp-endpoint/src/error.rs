//! Endpoint errors.

use ehub_amqp_codec::{DecodeError, EncodeError, Error as AmqpError};
use thiserror::Error;

/// Standard AMQP error conditions used by the engine.
#[allow(missing_docs)]
pub mod condition {
    pub const DECODE_ERROR: &str = "amqp:decode-error";
    pub const FRAMING_ERROR: &str = "amqp:connection:framing-error";
    pub const INVALID_FIELD: &str = "amqp:invalid-field";
    pub const NOT_ALLOWED: &str = "amqp:not-allowed";
    pub const ILLEGAL_STATE: &str = "amqp:illegal-state";
    pub const RESOURCE_LIMIT_EXCEEDED: &str = "amqp:resource-limit-exceeded";
    pub const UNATTACHED_HANDLE: &str = "amqp:session:unattached-handle";
    pub const HANDLE_IN_USE: &str = "amqp:session:handle-in-use";
    pub const WINDOW_VIOLATION: &str = "amqp:session:window-violation";
    pub const FRAME_SIZE_TOO_SMALL: &str = "amqp:frame-size-too-small";
    pub const CONNECTION_FORCED: &str = "amqp:connection:forced";
    pub const TRANSFER_LIMIT_EXCEEDED: &str = "amqp:link:transfer-limit-exceeded";
    pub const MESSAGE_SIZE_EXCEEDED: &str = "amqp:link:message-size-exceeded";
    pub const DETACH_FORCED: &str = "amqp:link:detach-forced";
    pub const INTERNAL_ERROR: &str = "amqp:internal-error";
    pub const UNAUTHORIZED_ACCESS: &str = "amqp:unauthorized-access";
    pub const NOT_FOUND: &str = "amqp:not-found";
}

/// A failure of the connection engine or its transport.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The peer sent bytes that do not decode. The connection was closed with `amqp:decode-error`
    /// (or `amqp:connection:framing-error` for a bad frame size).
    #[error("decode error: {0}")]
    Decode(#[from] DecodeError),
    /// A value could not be encoded.
    #[error("encode error: {0}")]
    Encode(#[from] EncodeError),
    /// The peer broke the protocol; the connection was closed with this error.
    #[error("protocol violation: {0}")]
    Protocol(AmqpError),
    /// The peer closed the connection with an error.
    #[error("connection closed by peer: {0}")]
    RemoteClosed(AmqpError),
    /// SASL negotiation failed.
    #[error("SASL authentication failed: {0}")]
    Sasl(String),
    /// The peer did not send anything within our idle timeout.
    #[error("idle timeout: the peer sent nothing for {0:?}")]
    IdleTimeout(std::time::Duration),
    /// An operation was called in a state that does not allow it.
    #[error("illegal state: {0}")]
    IllegalState(&'static str),
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl EndpointError {
    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            EndpointError::Decode(_) => "decode",
            EndpointError::Encode(_) => "encode",
            EndpointError::Protocol(_) => "protocol",
            EndpointError::RemoteClosed(_) => "remote-closed",
            EndpointError::Sasl(_) => "sasl",
            EndpointError::IdleTimeout(_) => "idle-timeout",
            EndpointError::IllegalState(_) => "illegal-state",
            EndpointError::Io(_) => "io",
        }
    }

    /// Whether reconnecting may help.
    pub fn is_transient(&self) -> bool {
        match self {
            EndpointError::Io(_) | EndpointError::IdleTimeout(_) => true,
            EndpointError::RemoteClosed(e) => matches!(
                e.condition.as_str(),
                condition::CONNECTION_FORCED | condition::INTERNAL_ERROR | condition::FRAMING_ERROR
            ),
            _ => false,
        }
    }

    /// The AMQP error carried, if any.
    pub fn amqp_error(&self) -> Option<&AmqpError> {
        match self {
            EndpointError::Protocol(e) | EndpointError::RemoteClosed(e) => Some(e),
            _ => None,
        }
    }
}
