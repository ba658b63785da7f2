//! Decode and encode errors.

use thiserror::Error;

/// Why a decode failed.
///
/// `Incomplete` is not a protocol error: the caller must supply more bytes. The other two
/// variants are fatal for the frame (and, at the connection level, for the connection).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes are needed before anything can be decoded.
    #[error("incomplete input: need {needed} more byte(s)")]
    Incomplete {
        /// A lower bound on the number of extra bytes needed.
        needed: usize,
    },
    /// The bytes do not form a valid AMQP encoding.
    #[error("malformed input at byte {offset}: {reason}")]
    Malformed {
        /// Byte position (relative to the start of the decoded buffer) where the problem was found.
        offset: usize,
        /// What was wrong.
        reason: &'static str,
    },
    /// A declared size exceeds a configured limit; nothing was allocated for it.
    #[error("size {actual} exceeds the limit of {limit}")]
    TooLarge {
        /// The limit in force.
        limit: u64,
        /// The size the input declared.
        actual: u64,
    },
}

impl DecodeError {
    pub(crate) fn malformed(offset: usize, reason: &'static str) -> Self {
        DecodeError::Malformed { offset, reason }
    }

    /// A short machine-readable name of the variant.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Incomplete { .. } => "incomplete",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::TooLarge { .. } => "too-large",
        }
    }

    /// Decode errors never go away by retrying the same bytes, except `Incomplete`.
    pub fn is_transient(&self) -> bool {
        matches!(self, DecodeError::Incomplete { .. })
    }
}

/// Why an encode failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An array held values of different kinds.
    #[error("array elements must all have the same type")]
    HeterogeneousArray,
    /// A value is larger than the 32-bit AMQP size fields allow.
    #[error("value too large to encode ({0} bytes)")]
    TooLarge(usize),
}

impl EncodeError {
    /// A short machine-readable name of the variant.
    pub fn kind(&self) -> &'static str {
        match self {
            EncodeError::HeterogeneousArray => "heterogeneous-array",
            EncodeError::TooLarge(_) => "too-large",
        }
    }

    /// Encode errors are never transient.
    pub fn is_transient(&self) -> bool {
        false
    }
}
