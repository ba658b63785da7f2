//! The client's one error type.
//!
//! Kinds follow the Python library's taxonomy (`EventHubError` at the root, then
//! `ConnectError`, `ConnectionLostError`, `AuthenticationError`, `EventDataError`,
//! `EventDataSendError`) plus the finer kinds the service's conditions make possible.
//! Every error keeps the remote AMQP condition and description when there was one.

use ehub_amqp_codec::Error as AmqpError;
use ehub_model::conditions as c;
use std::fmt;

/// What went wrong, coarse enough to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A credential was refused (wrong key, expired token, missing rights).
    Authentication,
    /// A connection or link could not be established (network, TLS, refused attach).
    Connect,
    /// An established connection or link was lost.
    ConnectionLost,
    /// An event is invalid on the client side (e.g. it does not fit into a batch).
    EventData,
    /// The service refused an event that was sent.
    EventDataSend,
    /// An operation did not finish within its timeout.
    OperationTimeout,
    /// The hub, consumer group or partition does not exist.
    ResourceNotFound,
    /// The receiver was disconnected by another receiver with a higher or equal owner level.
    ConsumerDisconnected,
    /// An event or batch is larger than the link allows.
    MessageTooLarge,
    /// The service is throttling.
    ServerBusy,
    /// The arguments given are invalid (connection string, options, positions).
    InvalidArgument,
    /// The client was closed.
    ClientClosed,
    /// A checkpoint store failed (unreachable, refused, corrupt).
    CheckpointStore,
    /// Anything else the service reported (`EventHubError`).
    EventHub,
}

impl ErrorKind {
    /// The name of the matching error class of the Python library.
    pub fn python_name(self) -> &'static str {
        match self {
            ErrorKind::Authentication => "AuthenticationError",
            ErrorKind::Connect | ErrorKind::ResourceNotFound => "ConnectError",
            ErrorKind::ConnectionLost | ErrorKind::ConsumerDisconnected => "ConnectionLostError",
            ErrorKind::EventData => "EventDataError",
            ErrorKind::EventDataSend | ErrorKind::MessageTooLarge => "EventDataSendError",
            ErrorKind::OperationTimeout => "OperationTimeoutError",
            ErrorKind::ClientClosed => "ClientClosedError",
            ErrorKind::ServerBusy | ErrorKind::InvalidArgument | ErrorKind::CheckpointStore | ErrorKind::EventHub => {
                "EventHubError"
            }
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::Authentication => "authentication",
            ErrorKind::Connect => "connect",
            ErrorKind::ConnectionLost => "connection lost",
            ErrorKind::EventData => "event data",
            ErrorKind::EventDataSend => "event data send",
            ErrorKind::OperationTimeout => "operation timeout",
            ErrorKind::ResourceNotFound => "resource not found",
            ErrorKind::ConsumerDisconnected => "consumer disconnected",
            ErrorKind::MessageTooLarge => "message too large",
            ErrorKind::ServerBusy => "server busy",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::ClientClosed => "client closed",
            ErrorKind::CheckpointStore => "checkpoint store",
            ErrorKind::EventHub => "event hub",
        };
        f.write_str(s)
    }
}

/// An error of the Event Hubs client.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    condition: Option<String>,
    description: Option<String>,
    /// Set when retrying cannot help even though the kind usually can (a TLS certificate
    /// the client does not trust is a connect error, but a permanent one).
    permanent: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), condition: None, description: None, permanent: false, source: None }
    }

    /// Keeps `source` as the cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// An error from an AMQP error the service sent, classified by its condition.
    /// `context` says what was being done ("attaching the sender", ...).
    pub fn from_amqp(e: &AmqpError, context: &str) -> Self {
        let condition = e.condition.as_str().to_owned();
        let kind = kind_of_condition(&condition, e.description.as_deref());
        let mut err = Error::new(
            kind,
            format!("{context}: {condition}{}", e.description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()),
        );
        err.condition = Some(condition);
        err.description = e.description.clone();
        err
    }

    /// An error from a management or CBS response status.
    pub fn from_status(status: i32, description: Option<String>, condition: Option<String>, context: &str) -> Self {
        let kind = match status {
            401 | 403 => ErrorKind::Authentication,
            404 => ErrorKind::ResourceNotFound,
            408 => ErrorKind::OperationTimeout,
            429 | 503 => ErrorKind::ServerBusy,
            _ => match &condition {
                Some(c) => kind_of_condition(c, description.as_deref()),
                None => ErrorKind::EventHub,
            },
        };
        let mut err = Error::new(
            kind,
            format!(
                "{context}: status {status}{}",
                description.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
            ),
        );
        err.condition = condition.or_else(|| condition_of_status(status).map(str::to_owned));
        err.description = description;
        err
    }

    /// The same error (kind, message, condition, description) without its source, for
    /// failing many waiters with one cause.
    pub(crate) fn detached_copy(&self) -> Self {
        Error {
            kind: self.kind,
            message: self.message.clone(),
            condition: self.condition.clone(),
            description: self.description.clone(),
            permanent: self.permanent,
            source: None,
        }
    }

    pub(crate) fn permanent(mut self) -> Self {
        self.permanent = true;
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The AMQP condition the service sent, if any.
    pub fn condition(&self) -> Option<&str> {
        self.condition.as_deref()
    }

    /// The service's description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// True when retrying the same operation may succeed.
    pub fn is_transient(&self) -> bool {
        if self.permanent {
            return false;
        }
        match self.kind {
            ErrorKind::ConnectionLost | ErrorKind::ServerBusy | ErrorKind::OperationTimeout => true,
            ErrorKind::Connect => !matches!(
                self.condition.as_deref(),
                Some(c::NOT_ALLOWED | c::NOT_IMPLEMENTED | c::ARGUMENT_ERROR | c::ARGUMENT_OUT_OF_RANGE)
            ),
            ErrorKind::EventHub => matches!(
                self.condition.as_deref(),
                Some(c::INTERNAL_ERROR | c::TIMEOUT | c::OPERATION_CANCELLED | c::DETACH_FORCED | c::CONNECTION_FORCED)
            ),
            _ => false,
        }
    }

    pub(crate) fn client_closed() -> Self {
        Error::new(ErrorKind::ClientClosed, "the client was closed")
    }

    pub(crate) fn connection_lost(why: impl Into<String>) -> Self {
        Error::new(ErrorKind::ConnectionLost, why)
    }

    pub(crate) fn invalid(why: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, why)
    }

    pub(crate) fn timeout(what: &str, after: std::time::Duration) -> Self {
        Error::new(ErrorKind::OperationTimeout, format!("{what} did not complete within {after:?}"))
    }
}

fn kind_of_condition(condition: &str, description: Option<&str>) -> ErrorKind {
    match condition {
        c::UNAUTHORIZED_ACCESS | "com.microsoft:auth-failed" => ErrorKind::Authentication,
        c::NOT_FOUND => {
            // The service also uses not-found for gone links; only entity texts mean "no such hub".
            let entity = description.is_none_or(|d| d.contains("could not be found") || d.contains("status-code: 404"));
            if entity {
                ErrorKind::ResourceNotFound
            } else {
                ErrorKind::Connect
            }
        }
        c::LINK_STOLEN => ErrorKind::ConsumerDisconnected,
        c::MESSAGE_SIZE_EXCEEDED => ErrorKind::MessageTooLarge,
        c::SERVER_BUSY => ErrorKind::ServerBusy,
        c::TIMEOUT => ErrorKind::OperationTimeout,
        c::CONNECTION_FORCED | c::DETACH_FORCED | "amqp:connection:framing-error" => ErrorKind::ConnectionLost,
        c::ENTITY_DISABLED => ErrorKind::ResourceNotFound,
        c::NOT_ALLOWED | c::ARGUMENT_ERROR | c::ARGUMENT_OUT_OF_RANGE | c::RESOURCE_LIMIT_EXCEEDED => {
            ErrorKind::Connect
        }
        _ => ErrorKind::EventHub,
    }
}

fn condition_of_status(status: i32) -> Option<&'static str> {
    Some(match status {
        401 => c::UNAUTHORIZED_ACCESS,
        404 => c::NOT_FOUND,
        400 => c::ARGUMENT_ERROR,
        408 => c::TIMEOUT,
        503 => c::SERVER_BUSY,
        500 => c::INTERNAL_ERROR,
        _ => return None,
    })
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.python_name())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<ehub_model::ConnectionStringError> for Error {
    fn from(e: ehub_model::ConnectionStringError) -> Self {
        Error::invalid(format!("invalid connection string: {e}")).with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_map_to_kinds_and_transience() {
        let e = Error::from_amqp(&AmqpError::new(c::LINK_STOLEN, "new receiver"), "receiving");
        assert_eq!(e.kind(), ErrorKind::ConsumerDisconnected);
        assert!(!e.is_transient(), "a stolen link is never retried");
        assert_eq!(e.condition(), Some(c::LINK_STOLEN));
        assert_eq!(e.description(), Some("new receiver"));
        let e = Error::from_amqp(&AmqpError::new(c::SERVER_BUSY, "slow down"), "sending");
        assert!(e.is_transient());
        let e = Error::from_amqp(&AmqpError::new(c::MESSAGE_SIZE_EXCEEDED, "big"), "sending");
        assert_eq!(e.kind(), ErrorKind::MessageTooLarge);
        assert!(!e.is_transient());
        let e = Error::from_amqp(&AmqpError::new(c::CONNECTION_FORCED, "bye"), "x");
        assert_eq!(e.kind(), ErrorKind::ConnectionLost);
        assert!(e.is_transient());
        let e = Error::from_status(404, Some("The messaging entity 'sb://h/x' could not be found.".into()), None, "m");
        assert_eq!(e.kind(), ErrorKind::ResourceNotFound);
        assert_eq!(e.condition(), Some(c::NOT_FOUND));
        assert_eq!(Error::from_status(401, None, None, "t").kind(), ErrorKind::Authentication);
    }
}
