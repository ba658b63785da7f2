//! Checkpoint stores: where event processors keep partition ownership and checkpoints.
//!
//! A [`CheckpointStore`] holds two kinds of record per hub and consumer group, in the layout
//! every official SDK shares (so a Python, JavaScript, .NET, Go or Rust processor and ours can
//! share one store):
//!
//! - an [`Ownership`] per partition: which processor instance owns it, with an ETag that changes
//!   on every write and the time of the last write. A claim is conditional on the ETag it was read
//!   with (or on the record not existing yet), so two processors racing for a partition cannot
//!   both win. An owner id of `""` means the partition was released;
//! - a [`Checkpoint`] per partition: the offset (an opaque string) and sequence number of the
//!   last event processed.
//!
//! Namespace, hub and consumer group are lower-cased in every name
//! ([`ownership_prefix`], [`checkpoint_prefix`]), as .NET, JavaScript, Python and Go do.
//!
//! [`InMemoryCheckpointStore`] is for tests and single-process use; the SQLite and Azure Blob
//! stores live in their own crates. Every store passes the same conformance suite
//! ([`conformance`], cargo feature `conformance`).

use crate::{Error, ErrorKind, Result};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// Who owns a partition of a hub for a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The namespace as the processors name it (the host they connect to, with its port where
    /// it has one, as the official SDKs write it).
    pub namespace: String,
    /// The hub.
    pub event_hub: String,
    /// The consumer group.
    pub consumer_group: String,
    /// The partition.
    pub partition_id: String,
    /// The owning processor instance; `""` means released.
    pub owner_id: String,
    /// The ETag of the record as last read or written; `None` for a claim of a partition that has
    /// never had an ownership record.
    pub etag: Option<String>,
    /// When the record was last written, by the store's clock.
    pub last_modified: Option<SystemTime>,
}

impl Ownership {
    /// Whether the ownership was released (an empty owner id): the partition is free to claim.
    pub fn is_released(&self) -> bool {
        self.owner_id.is_empty()
    }
}

/// How far a consumer group has processed a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The namespace, as in [`Ownership::namespace`].
    pub namespace: String,
    /// The hub.
    pub event_hub: String,
    /// The consumer group.
    pub consumer_group: String,
    /// The partition.
    pub partition_id: String,
    /// The offset of the last event processed: an opaque string (geo-replicated namespaces use
    /// non-numeric offsets).
    pub offset: Option<String>,
    /// The sequence number of the last event processed.
    pub sequence_number: Option<i64>,
}

/// Storage for partition ownership and checkpoints, shared by cooperating event processors.
#[async_trait::async_trait]
pub trait CheckpointStore: Send + Sync {
    /// Every ownership record of the hub and consumer group.
    async fn list_ownerships(&self, namespace: &str, event_hub: &str, consumer_group: &str) -> Result<Vec<Ownership>>;

    /// Claims the given ownerships, each only if its record still has the ETag it carries (or,
    /// with `etag: None`, does not exist yet). Returns the claims that won, with their new ETag
    /// and last-modified time; a claim that lost is left out, not an error.
    async fn claim_ownerships(&self, ownerships: &[Ownership]) -> Result<Vec<Ownership>>;

    /// Every checkpoint of the hub and consumer group.
    async fn list_checkpoints(&self, namespace: &str, event_hub: &str, consumer_group: &str)
        -> Result<Vec<Checkpoint>>;

    /// Writes a checkpoint, replacing the partition's previous one (no condition: the caller owns
    /// the partition).
    async fn update_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()>;
}

/// Namespace, hub and consumer group as every store names them: lower-cased, as .NET,
/// JavaScript, Python and Go do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    /// The namespace, lower-cased.
    pub namespace: String,
    /// The hub, lower-cased.
    pub event_hub: String,
    /// The consumer group, lower-cased.
    pub consumer_group: String,
}

impl Scope {
    /// The scope of a hub and consumer group.
    pub fn new(namespace: &str, event_hub: &str, consumer_group: &str) -> Self {
        Scope {
            namespace: namespace.to_lowercase(),
            event_hub: event_hub.to_lowercase(),
            consumer_group: consumer_group.to_lowercase(),
        }
    }

    fn path(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.event_hub, self.consumer_group)
    }

    /// An ownership record of this scope, as a store reads it back.
    pub fn ownership(
        &self,
        partition_id: impl Into<String>,
        owner_id: impl Into<String>,
        etag: Option<String>,
        last_modified: Option<SystemTime>,
    ) -> Ownership {
        Ownership {
            namespace: self.namespace.clone(),
            event_hub: self.event_hub.clone(),
            consumer_group: self.consumer_group.clone(),
            partition_id: partition_id.into(),
            owner_id: owner_id.into(),
            etag,
            last_modified,
        }
    }

    /// A checkpoint of this scope, as a store reads it back.
    pub fn checkpoint(
        &self,
        partition_id: impl Into<String>,
        offset: Option<String>,
        sequence_number: Option<i64>,
    ) -> Checkpoint {
        Checkpoint {
            namespace: self.namespace.clone(),
            event_hub: self.event_hub.clone(),
            consumer_group: self.consumer_group.clone(),
            partition_id: partition_id.into(),
            offset,
            sequence_number,
        }
    }

    fn ownership_of(&self, partition_id: &str, r: &Record) -> Ownership {
        self.ownership(partition_id, r.owner_id.clone(), Some(etag_text(r.etag)), Some(r.last_modified))
    }
}

/// The name prefix of a hub's and consumer group's ownership records:
/// `{namespace}/{hub}/{consumer group}/ownership/`, lower-cased, as every official SDK names them.
pub fn ownership_prefix(namespace: &str, event_hub: &str, consumer_group: &str) -> String {
    format!("{}/ownership/", Scope::new(namespace, event_hub, consumer_group).path())
}

/// The name prefix of a hub's and consumer group's checkpoints:
/// `{namespace}/{hub}/{consumer group}/checkpoint/`, lower-cased.
pub fn checkpoint_prefix(namespace: &str, event_hub: &str, consumer_group: &str) -> String {
    format!("{}/checkpoint/", Scope::new(namespace, event_hub, consumer_group).path())
}

/// An error of kind [`ErrorKind::CheckpointStore`], for store implementations.
pub fn store_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::CheckpointStore, message)
}

#[derive(Clone)]
struct Record {
    owner_id: String,
    etag: u64,
    last_modified: SystemTime,
}

/// A checkpoint store in memory, with the same ETag semantics as the durable stores: for tests
/// and for processors that run alone and may reprocess after a restart.
#[derive(Default)]
pub struct InMemoryCheckpointStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By scope and partition (ordered, so listings come sorted by partition id).
    ownerships: BTreeMap<(Scope, String), Record>,
    checkpoints: BTreeMap<(Scope, String), (Option<String>, Option<i64>)>,
    /// The last ETag given out: every write gets a new one, even two in the same instant.
    etags: u64,
}

impl InMemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for InMemoryCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryCheckpointStore").finish_non_exhaustive()
    }
}

/// The ETag text of a store-wide write counter.
fn etag_text(n: u64) -> String {
    format!("\"0x{n:016X}\"")
}

#[async_trait::async_trait]
impl CheckpointStore for InMemoryCheckpointStore {
    async fn list_ownerships(&self, namespace: &str, event_hub: &str, consumer_group: &str) -> Result<Vec<Ownership>> {
        let scope = Scope::new(namespace, event_hub, consumer_group);
        let inner = self.inner.lock().map_err(|_| store_error("the store's lock is poisoned"))?;
        Ok(inner
            .ownerships
            .iter()
            .filter(|((s, _), _)| *s == scope)
            .map(|((s, partition), r)| s.ownership_of(partition, r))
            .collect())
    }

    async fn claim_ownerships(&self, ownerships: &[Ownership]) -> Result<Vec<Ownership>> {
        let mut inner = self.inner.lock().map_err(|_| store_error("the store's lock is poisoned"))?;
        let mut won = Vec::new();
        for o in ownerships {
            let key = (Scope::new(&o.namespace, &o.event_hub, &o.consumer_group), o.partition_id.clone());
            if inner.ownerships.get(&key).map(|r| etag_text(r.etag)) != o.etag {
                continue;
            }
            inner.etags += 1;
            let record = Record { owner_id: o.owner_id.clone(), etag: inner.etags, last_modified: SystemTime::now() };
            won.push(key.0.ownership_of(&key.1, &record));
            inner.ownerships.insert(key, record);
        }
        Ok(won)
    }

    async fn list_checkpoints(
        &self,
        namespace: &str,
        event_hub: &str,
        consumer_group: &str,
    ) -> Result<Vec<Checkpoint>> {
        let scope = Scope::new(namespace, event_hub, consumer_group);
        let inner = self.inner.lock().map_err(|_| store_error("the store's lock is poisoned"))?;
        Ok(inner
            .checkpoints
            .iter()
            .filter(|((s, _), _)| *s == scope)
            .map(|((s, partition), (offset, seq))| s.checkpoint(partition.clone(), offset.clone(), *seq))
            .collect())
    }

    async fn update_checkpoint(&self, c: &Checkpoint) -> Result<()> {
        let key = (Scope::new(&c.namespace, &c.event_hub, &c.consumer_group), c.partition_id.clone());
        let mut inner = self.inner.lock().map_err(|_| store_error("the store's lock is poisoned"))?;
        inner.checkpoints.insert(key, (c.offset.clone(), c.sequence_number));
        Ok(())
    }
}

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_lowercase_namespace_hub_and_group_as_the_official_sdks_do() {
        assert_eq!(ownership_prefix("127.0.0.1:54393", "EH1", "$Default"), "127.0.0.1:54393/eh1/$default/ownership/");
        assert_eq!(
            checkpoint_prefix("MyNs.servicebus.windows.net", "Hub", "CG"),
            "myns.servicebus.windows.net/hub/cg/checkpoint/"
        );
    }

    #[tokio::test]
    async fn the_in_memory_store_passes_the_conformance_suite() {
        conformance::run_all(&InMemoryCheckpointStore::new()).await;
    }

    #[test]
    fn etags_are_quoted_and_distinct() {
        assert_ne!(etag_text(1), etag_text(2));
        assert!(etag_text(1).starts_with('"') && etag_text(1).ends_with('"'));
    }
}
