//! Log errors.

use std::path::PathBuf;
use thiserror::Error;

/// Any partition-log failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    /// An I/O operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Stored data failed validation somewhere other than the tail.
    #[error("corrupted log {path} at byte {position}: {reason}")]
    Corrupted {
        /// The segment file.
        path: PathBuf,
        /// Byte position within the segment.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// An earlier write or fsync failed; the log refuses further writes (fsync is never retried).
    #[error("a previous write or fsync failed; the partition is read-only until restart")]
    PreviousIoFailure,
    /// The requested position is past the end of the log.
    #[error("position out of range: {0}")]
    OutOfRange(String),
    /// The log store is shutting down.
    #[error("the log store is shut down")]
    ShutDown,
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LogError::Io { path: path.into(), source }
    }

    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            LogError::Io { .. } => "io",
            LogError::Corrupted { .. } => "corrupted",
            LogError::PreviousIoFailure => "previous-io-failure",
            LogError::OutOfRange(_) => "out-of-range",
            LogError::ShutDown => "shut-down",
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::ShutDown)
    }
}
