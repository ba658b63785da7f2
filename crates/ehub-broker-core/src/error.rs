//! The core's one error type.

use ehub_partition_log::LogError;

/// Why a core operation failed. The texts are the service's where it has one, so that fronts
/// can pass them on unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// Storage failed (opening, writing or removing a partition log or the runtime record).
    #[error(transparent)]
    Storage(#[from] LogError),
    /// The entity already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The hub or consumer group does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A name or value the service would refuse.
    #[error("{0}")]
    Invalid(String),
    /// Declared in the configuration file (or `$Default`): not removable at run time.
    #[error("{0}")]
    Declared(String),
    /// A configured limit (consumer groups per hub, partitions per hub) would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// What was created at run time contradicts the configuration file; reported at start.
    #[error("{0}")]
    Conflict(String),
}

/// Broad classes of [`CoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreErrorKind {
    /// Storage failed.
    Storage,
    /// Already exists.
    AlreadyExists,
    /// Does not exist.
    NotFound,
    /// Invalid name or value.
    Invalid,
    /// Declared in the configuration file.
    Declared,
    /// A limit would be exceeded.
    LimitExceeded,
    /// Runtime record and configuration disagree.
    Conflict,
}

impl CoreError {
    /// The class of the failure.
    pub fn kind(&self) -> CoreErrorKind {
        match self {
            CoreError::Storage(_) => CoreErrorKind::Storage,
            CoreError::AlreadyExists(_) => CoreErrorKind::AlreadyExists,
            CoreError::NotFound(_) => CoreErrorKind::NotFound,
            CoreError::Invalid(_) => CoreErrorKind::Invalid,
            CoreError::Declared(_) => CoreErrorKind::Declared,
            CoreError::LimitExceeded(_) => CoreErrorKind::LimitExceeded,
            CoreError::Conflict(_) => CoreErrorKind::Conflict,
        }
    }

    /// Whether trying again may help (storage trouble may pass).
    pub fn is_transient(&self) -> bool {
        self.kind() == CoreErrorKind::Storage
    }

    /// The service's text for a missing hub.
    pub(crate) fn not_found(hub: &str) -> Self {
        CoreError::NotFound(format!("The messaging entity '{hub}' could not be found."))
    }
}
