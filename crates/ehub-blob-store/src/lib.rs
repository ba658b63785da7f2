//! # ehub-blob-store
//!
//! Durable storage accounts, containers and block blobs with the semantics of Azure Blob
//! Storage that event processors rely on: an ETag that changes on every write, conditional
//! writes (`If-Match`, `If-None-Match`) checked and applied atomically, Last-Modified from one
//! clock, and paged listing in name order. It knows no HTTP: the broker's Blob front
//! (`ehub-broker-blob`) maps requests onto it.
//!
//! Every write is applied in memory and appended to a journal under one lock, so the journal's
//! order is the order in which writes were decided. A writer thread group-commits the journal:
//! under [`Durability::Always`] a write is answered only after the fsync that covers it, so an
//! answered write survives `kill -9`. The journal is compacted into a snapshot when it grows.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ehub_blob_store::StoreError> {
//! use ehub_blob_store::{BlobStore, BlobStoreConfig, Conditions, PutBlob};
//! let dir = tempfile::tempdir().unwrap();
//! let store = BlobStore::open(BlobStoreConfig::new(dir.path()))?;
//! store.create_container("devstoreaccount1", "checkpoints", vec![]).await?;
//! let first = store
//!     .put_blob("devstoreaccount1", "checkpoints", "ns/hub/$default/ownership/0",
//!         PutBlob { metadata: vec![("ownerid".into(), "a".into())], ..PutBlob::default() },
//!         &Conditions { if_none_match: Some("*".into()), ..Conditions::default() })
//!     .await?;
//! // A second first claim loses.
//! let again = store
//!     .put_blob("devstoreaccount1", "checkpoints", "ns/hub/$default/ownership/0", PutBlob::default(),
//!         &Conditions { if_none_match: Some("*".into()), ..Conditions::default() })
//!     .await;
//! assert_eq!(again.unwrap_err().code(), "BlobAlreadyExists");
//! assert!(first.etag.matches(&first.etag.quoted()));
//! # store.shutdown(); Ok(()) }
//! ```
#![warn(missing_docs)]

mod journal;
mod record;

use bytes::Bytes;
use journal::Journal;
use md5::{Digest, Md5};
use record::Record;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Metadata pairs, in the order given. Keys are kept as given; values may be empty.
pub type Metadata = Vec<(String, String)>;

/// An entity tag. Shown as `0x` and upper-case hex (the service's form); the HTTP header
/// quotes it, listings do not. Values grow with every write, so two writes in one millisecond
/// still differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Etag(pub u64);

impl Etag {
    /// The header form, in quotes.
    pub fn quoted(&self) -> String {
        format!("\"{self}\"")
    }

    /// Whether a condition's value names this tag, quoted or not.
    pub fn matches(&self, value: &str) -> bool {
        let v = value.trim();
        let v = v.strip_prefix("W/").unwrap_or(v);
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        v == self.to_string()
    }
}

impl std::fmt::Display for Etag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:X}", self.0)
    }
}

/// When an answered write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A write is answered after the fsync that covers it (group commit). The default.
    Always,
    /// A write is answered once written; the journal is fsynced at this interval.
    Interval(Duration),
    /// A write is answered once written; fsync only at shutdown.
    Never,
}

/// Where and how the store keeps its journal.
#[derive(Debug, Clone)]
pub struct BlobStoreConfig {
    /// Directory of the journal (`blobs.journal`); created if missing.
    pub dir: PathBuf,
    /// When writes are answered.
    pub durability: Durability,
    /// The journal is compacted into a snapshot once it is larger than this and more than
    /// twice the last snapshot.
    pub compact_min_bytes: u64,
}

impl BlobStoreConfig {
    /// The defaults in `dir`: [`Durability::Always`], compaction from 64 MiB.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BlobStoreConfig { dir: dir.into(), durability: Durability::Always, compact_min_bytes: 64 << 20 }
    }
}

/// Why an operation failed. [`StoreError::code`] is the Blob service's error code.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The container does not exist.
    #[error("the specified container does not exist")]
    ContainerNotFound,
    /// Create Container of an existing container.
    #[error("the specified container already exists")]
    ContainerAlreadyExists,
    /// The blob does not exist.
    #[error("the specified blob does not exist")]
    BlobNotFound,
    /// `If-None-Match: *` on Put Blob of an existing blob.
    #[error("the specified blob already exists")]
    BlobAlreadyExists,
    /// A condition (`If-Match`, `If-None-Match`, `If-(Un)Modified-Since`) did not hold.
    #[error("the condition specified using HTTP conditional header(s) is not met")]
    ConditionNotMet,
    /// Put Blob's `Content-MD5` is not the MD5 of the body.
    #[error("the MD5 value specified in the request did not match the MD5 value calculated by the server")]
    Md5Mismatch,
    /// A container or blob name the service refuses.
    #[error("the specified resource name is not valid: {0}")]
    InvalidResourceName(String),
    /// The journal could not be written; the store refuses writes from then on.
    #[error("blob journal {path}: {message}")]
    Storage {
        /// The journal file.
        path: PathBuf,
        /// What failed.
        message: String,
        /// The I/O error, when there was one.
        #[source]
        source: Option<std::io::Error>,
    },
}

/// Broad classes of [`StoreError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The container or blob is missing.
    NotFound,
    /// It exists and must not.
    Conflict,
    /// A condition did not hold.
    PreconditionFailed,
    /// Bad input.
    InvalidInput,
    /// Disk trouble.
    Storage,
}

impl StoreError {
    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::ContainerNotFound | StoreError::BlobNotFound => ErrorKind::NotFound,
            StoreError::ContainerAlreadyExists | StoreError::BlobAlreadyExists => ErrorKind::Conflict,
            StoreError::ConditionNotMet => ErrorKind::PreconditionFailed,
            StoreError::InvalidResourceName(_) | StoreError::Md5Mismatch => ErrorKind::InvalidInput,
            StoreError::Storage { .. } => ErrorKind::Storage,
        }
    }

    /// Never: a retry of the same request meets the same state, and a failed journal stays
    /// failed until the broker restarts.
    pub fn is_transient(&self) -> bool {
        false
    }

    /// The Blob service's error code (`x-ms-error-code`).
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::ContainerNotFound => "ContainerNotFound",
            StoreError::ContainerAlreadyExists => "ContainerAlreadyExists",
            StoreError::BlobNotFound => "BlobNotFound",
            StoreError::BlobAlreadyExists => "BlobAlreadyExists",
            StoreError::ConditionNotMet => "ConditionNotMet",
            StoreError::InvalidResourceName(_) => "InvalidResourceName",
            StoreError::Md5Mismatch => "Md5Mismatch",
            StoreError::Storage { .. } => "InternalError",
        }
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Write conditions, as the request's headers give them. Dates are in seconds since the epoch
/// (HTTP dates have second precision; the comparison truncates stored milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// `If-Match`: `*` (exists) or an ETag, quoted or not.
    pub if_match: Option<String>,
    /// `If-None-Match`: `*` (does not exist) or an ETag.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<i64>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<i64>,
}

impl Conditions {
    /// Checks the conditions against the current entity (`None`: missing), as Azure does for
    /// writes (not Azurite, which lets `If-None-Match: *` pass on an existing blob).
    fn check(&self, current: Option<(Etag, i64)>, create: bool) -> Result<()> {
        let Some((etag, modified_ms)) = current else {
            return match self.if_match {
                Some(_) => Err(StoreError::ConditionNotMet),
                None => Ok(()),
            };
        };
        if let Some(m) = &self.if_match {
            if m.trim() != "*" && !etag.matches(m) {
                return Err(StoreError::ConditionNotMet);
            }
        }
        if let Some(n) = &self.if_none_match {
            if n.trim() == "*" {
                return Err(if create { StoreError::BlobAlreadyExists } else { StoreError::ConditionNotMet });
            }
            if etag.matches(n) {
                return Err(StoreError::ConditionNotMet);
            }
        }
        let modified = modified_ms.div_euclid(1000);
        if self.if_modified_since.is_some_and(|t| modified <= t) {
            return Err(StoreError::ConditionNotMet);
        }
        if self.if_unmodified_since.is_some_and(|t| modified > t) {
            return Err(StoreError::ConditionNotMet);
        }
        Ok(())
    }
}

/// A container's state.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerEntry {
    /// Changes on every write to the container itself.
    pub etag: Etag,
    /// Milliseconds since the Unix epoch.
    pub last_modified: i64,
    /// The container's metadata.
    pub metadata: Metadata,
}

/// A blob's state.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobEntry {
    /// Changes on every write.
    pub etag: Etag,
    /// When the blob was first written, ms since the Unix epoch.
    pub created: i64,
    /// When it was last written, ms since the Unix epoch.
    pub last_modified: i64,
    /// `Content-Type` (default `application/octet-stream`).
    pub content_type: String,
    /// MD5 of the body.
    pub content_md5: [u8; 16],
    /// The metadata.
    pub metadata: Metadata,
    /// The content.
    pub body: Bytes,
}

/// A blob as listed or read.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobInfo {
    /// The blob's name.
    pub name: String,
    /// Its state.
    pub entry: BlobEntry,
}

/// What Put Blob writes.
#[derive(Debug, Clone, Default)]
pub struct PutBlob {
    /// The content.
    pub body: Bytes,
    /// `Content-Type`; `application/octet-stream` when `None`.
    pub content_type: Option<String>,
    /// The MD5 the client computed (`Content-MD5`): the write fails unless the body has it.
    pub content_md5: Option<[u8; 16]>,
    /// The metadata, replacing any the blob had.
    pub metadata: Metadata,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct BlobPage {
    /// The blobs, in name order.
    pub blobs: Vec<BlobInfo>,
    /// Pass as `marker` to read on; `None` on the last page.
    pub next_marker: Option<String>,
}

#[derive(Debug, Default)]
struct Container {
    entry: Option<ContainerEntry>,
    blobs: BTreeMap<String, BlobEntry>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// (account, container) → container.
    containers: HashMap<(String, String), Container>,
    last_etag: u64,
}

impl State {
    fn apply(&mut self, record: Record) {
        match record {
            Record::PutContainer { account, name, entry } => {
                self.last_etag = self.last_etag.max(entry.etag.0);
                self.containers.entry((account, name)).or_default().entry = Some(entry);
            }
            Record::DeleteContainer { account, name } => {
                self.containers.remove(&(account, name));
            }
            Record::PutBlob { account, container, name, entry } => {
                self.last_etag = self.last_etag.max(entry.etag.0);
                self.containers.entry((account, container)).or_default().blobs.insert(name, entry);
            }
            Record::DeleteBlob { account, container, name } => {
                if let Some(c) = self.containers.get_mut(&(account, container)) {
                    c.blobs.remove(&name);
                }
            }
        }
    }

    /// Records that rebuild this state (a snapshot).
    fn snapshot(&self, out: &mut Vec<u8>) {
        for ((account, name), c) in &self.containers {
            let Some(entry) = &c.entry else { continue };
            Record::PutContainer { account: account.clone(), name: name.clone(), entry: entry.clone() }.encode(out);
            for (blob, entry) in &c.blobs {
                Record::PutBlob {
                    account: account.clone(),
                    container: name.clone(),
                    name: blob.clone(),
                    entry: entry.clone(),
                }
                .encode(out);
            }
        }
    }

    /// A new ETag: .NET ticks of now (the service's shape), and always above the last one.
    fn next_etag(&mut self, now_ms: i64) -> Etag {
        const UNIX_EPOCH_TICKS: u64 = 621_355_968_000_000_000;
        let ticks = UNIX_EPOCH_TICKS + (now_ms.max(0) as u64) * 10_000;
        self.last_etag = ticks.max(self.last_etag + 1);
        Etag(self.last_etag)
    }

    fn container(&self, account: &str, name: &str) -> Result<&Container> {
        self.containers
            .get(&(account.to_owned(), name.to_owned()))
            .filter(|c| c.entry.is_some())
            .ok_or(StoreError::ContainerNotFound)
    }
}

/// The store. Cheap to share behind an `Arc`; every method is safe to call concurrently.
#[derive(Debug)]
pub struct BlobStore {
    state: Mutex<State>,
    journal: Journal,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// How many leading bytes of `bytes` are whole, valid journal records, and how many records
/// they hold: what [`BlobStore::open`] keeps of a journal file. For tools and fuzzing.
pub fn journal_valid_prefix(bytes: &[u8]) -> (usize, usize) {
    let (mut at, mut records) = (0, 0);
    while let Some((_, n)) = Record::decode(&bytes[at..]) {
        at += n;
        records += 1;
    }
    (at, records)
}

/// Checks a container name as the service does: 3–63 lower-case letters, digits and single
/// hyphens, starting and ending with a letter or digit; `$root` and `$logs` are also valid.
pub fn validate_container_name(name: &str) -> Result<()> {
    let ok = matches!(name, "$root" | "$logs" | "$web")
        || ((3..=63).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
            && !name.contains("--"));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidResourceName(format!("container name `{name}`")))
    }
}

/// Checks a blob name: 1–1024 characters.
pub fn validate_blob_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 1024 {
        Err(StoreError::InvalidResourceName("a blob name has 1 to 1024 characters".into()))
    } else {
        Ok(())
    }
}

impl BlobStore {
    /// Opens the journal in `config.dir` (creating it), replays it, and starts the writer.
    /// A torn or damaged tail (a crash mid-write) is cut off: those writes were never answered.
    pub fn open(config: BlobStoreConfig) -> Result<Arc<Self>> {
        let (journal, records) = Journal::open(&config)?;
        let mut state = State::default();
        for r in records {
            state.apply(r);
        }
        let store = Arc::new(BlobStore { state: Mutex::new(state), journal });
        let weak = Arc::downgrade(&store);
        store.journal.start(move |out: &mut Vec<u8>| {
            let store = weak.upgrade()?;
            let state = store.lock();
            state.snapshot(out);
            // Taken under the state lock: every write decided so far is in the snapshot.
            Some(store.journal.take_pending_for_snapshot())
        });
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `record` and appends it to the journal, under the state lock already held.
    fn write(&self, state: &mut State, record: Record) -> Result<u64> {
        self.journal.check()?;
        let mut buf = Vec::new();
        record.encode(&mut buf);
        state.apply(record);
        Ok(self.journal.append(&buf))
    }

    /// Creates a container.
    pub async fn create_container(&self, account: &str, name: &str, metadata: Metadata) -> Result<ContainerEntry> {
        validate_container_name(name)?;
        let (entry, seq) = {
            let mut state = self.lock();
            if state.container(account, name).is_ok() {
                return Err(StoreError::ContainerAlreadyExists);
            }
            let now = now_ms();
            let entry = ContainerEntry { etag: state.next_etag(now), last_modified: now, metadata };
            let rec = Record::PutContainer { account: account.into(), name: name.into(), entry: entry.clone() };
            (entry, self.write(&mut state, rec)?)
        };
        self.journal.durable(seq).await?;
        Ok(entry)
    }

    /// Creates a container unless it exists (for containers the configuration names).
    pub async fn ensure_container(&self, account: &str, name: &str) -> Result<()> {
        match self.create_container(account, name, Vec::new()).await {
            Ok(_) | Err(StoreError::ContainerAlreadyExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A container's properties.
    pub fn container(&self, account: &str, name: &str) -> Result<ContainerEntry> {
        let state = self.lock();
        Ok(state.container(account, name)?.entry.clone().expect("container() checks the entry"))
    }

    /// Deletes a container and every blob in it.
    pub async fn delete_container(&self, account: &str, name: &str, conditions: &Conditions) -> Result<()> {
        let seq = {
            let mut state = self.lock();
            let c = state.container(account, name)?;
            let e = c.entry.as_ref().expect("checked");
            conditions.check(Some((e.etag, e.last_modified)), false)?;
            self.write(&mut state, Record::DeleteContainer { account: account.into(), name: name.into() })?
        };
        self.journal.durable(seq).await
    }

    /// Lists blobs in name order: those starting with `prefix`, after `marker`, at most
    /// `max_results` (1 to 5000) of them.
    pub fn list_blobs(
        &self,
        account: &str,
        container: &str,
        prefix: &str,
        marker: Option<&str>,
        max_results: usize,
    ) -> Result<BlobPage> {
        let state = self.lock();
        let c = state.container(account, container)?;
        let max = max_results.clamp(1, 5000);
        let start = match marker.filter(|m| !m.is_empty()) {
            Some(m) if m >= prefix => std::ops::Bound::Excluded(m.to_owned()),
            _ => std::ops::Bound::Included(prefix.to_owned()),
        };
        let mut page = BlobPage::default();
        let mut iter = c.blobs.range((start, std::ops::Bound::Unbounded)).take_while(|(n, _)| n.starts_with(prefix));
        for (name, entry) in iter.by_ref().take(max) {
            page.blobs.push(BlobInfo { name: name.clone(), entry: entry.clone() });
        }
        if iter.next().is_some() {
            page.next_marker = page.blobs.last().map(|b| b.name.clone());
        }
        Ok(page)
    }

    /// Put Blob: writes a whole block blob, metadata included, if `conditions` hold.
    pub async fn put_blob(
        &self,
        account: &str,
        container: &str,
        name: &str,
        blob: PutBlob,
        conditions: &Conditions,
    ) -> Result<BlobEntry> {
        validate_blob_name(name)?;
        let content_md5: [u8; 16] = Md5::digest(&blob.body).into();
        if blob.content_md5.is_some_and(|m| m != content_md5) {
            return Err(StoreError::Md5Mismatch);
        }
        let content_type = blob.content_type.unwrap_or_else(|| "application/octet-stream".into());
        self.write_blob(account, container, name, conditions, true, |current, etag, now| {
            Ok(BlobEntry {
                etag,
                created: current.map_or(now, |b| b.created),
                last_modified: now,
                content_type,
                content_md5,
                metadata: blob.metadata,
                body: blob.body,
            })
        })
        .await
    }

    /// Set Blob Metadata: replaces all of a blob's metadata if `conditions` hold. The
    /// conditions are checked before existence, as the service does: `If-Match` on a missing
    /// blob is `ConditionNotMet`, no condition on a missing blob is `BlobNotFound`.
    pub async fn set_metadata(
        &self,
        account: &str,
        container: &str,
        name: &str,
        metadata: Metadata,
        conditions: &Conditions,
    ) -> Result<BlobEntry> {
        self.write_blob(account, container, name, conditions, false, |current, etag, now| {
            let current = current.ok_or(StoreError::BlobNotFound)?;
            Ok(BlobEntry { etag, last_modified: now, metadata, ..current.clone() })
        })
        .await
    }

    /// A blob write: under the state lock, the conditions are checked against the current blob
    /// (`create`: Put Blob's answer to `If-None-Match: *`), `make` builds the new state from the
    /// current one, a new ETag and the time, and it is applied and journalled; then the answer
    /// waits for durability.
    async fn write_blob(
        &self,
        account: &str,
        container: &str,
        name: &str,
        conditions: &Conditions,
        create: bool,
        make: impl FnOnce(Option<&BlobEntry>, Etag, i64) -> Result<BlobEntry>,
    ) -> Result<BlobEntry> {
        let (entry, seq) = {
            let mut state = self.lock();
            let current = state.container(account, container)?.blobs.get(name).cloned();
            conditions.check(current.as_ref().map(|b| (b.etag, b.last_modified)), create)?;
            let now = now_ms();
            let entry = make(current.as_ref(), state.next_etag(now), now)?;
            let rec = Record::PutBlob {
                account: account.into(),
                container: container.into(),
                name: name.into(),
                entry: entry.clone(),
            };
            (entry, self.write(&mut state, rec)?)
        };
        self.journal.durable(seq).await?;
        Ok(entry)
    }

    /// A blob's state, body included (a cheap reference-counted copy).
    pub fn blob(&self, account: &str, container: &str, name: &str) -> Result<BlobEntry> {
        let state = self.lock();
        state.container(account, container)?.blobs.get(name).cloned().ok_or(StoreError::BlobNotFound)
    }

    /// Deletes a blob if `conditions` hold.
    pub async fn delete_blob(&self, account: &str, container: &str, name: &str, conditions: &Conditions) -> Result<()> {
        let seq = {
            let mut state = self.lock();
            let c = state.container(account, container)?;
            let Some(current) = c.blobs.get(name) else {
                return Err(if conditions.if_match.is_some() {
                    StoreError::ConditionNotMet
                } else {
                    StoreError::BlobNotFound
                });
            };
            conditions.check(Some((current.etag, current.last_modified)), false)?;
            let rec = Record::DeleteBlob { account: account.into(), container: container.into(), name: name.into() };
            self.write(&mut state, rec)?
        };
        self.journal.durable(seq).await
    }

    /// Writes and fsyncs what is pending and stops the writer thread. Writes after this fail.
    pub fn shutdown(&self) {
        self.journal.shutdown();
    }

    /// The journal file.
    pub fn journal_path(&self) -> &Path {
        self.journal.path()
    }
}

impl Drop for BlobStore {
    fn drop(&mut self) {
        self.journal.shutdown();
    }
}
