//! # ehub-partition-log
//!
//! Durable, segmented, append-only partition logs. Each record carries a CRC32C, its sequence
//! number, its enqueued time and its partition key, followed by the event bytes as received
//! (see [`record`] for the byte layout). The log knows nothing of AMQP.
//!
//! - **Group commit:** writer threads take every waiting append, write one buffer per
//!   partition, fsync each touched file once, then acknowledge. With [`FsyncPolicy::Always`]
//!   (the default) an append is acknowledged only after the fsync that covers it.
//! - **Reads** of recent events come from an in-memory tail cache (zero-copy `Bytes`); older
//!   ones from the segment files through a sparse index by sequence number, offset and time.
//! - **Retention** removes whole segments by age and by size.
//! - **Recovery** truncates a torn tail with a warning and refuses to open on interior
//!   corruption. Zeros from the end of the records to the end of a file are the space written
//!   ahead of the data under [`FsyncPolicy::Always`] ([`LogConfig::preallocate_bytes`]), not
//!   damage.
//!
//! ```
//! use ehub_partition_log::{AppendEvent, LogConfig, LogStore};
//! use bytes::Bytes;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = LogStore::new(LogConfig::default());
//! let p = store.open_partition(dir.path().join("0"), "0").unwrap();
//! let a = store.append_blocking(&p, vec![AppendEvent { partition_key: None, payload: Bytes::from_static(b"hi") }]).unwrap();
//! assert_eq!(a.first_sequence_number, 0);
//! let events = p.read(0, 10, 1 << 20).unwrap();
//! assert_eq!(&events[0].payload[..], b"hi");
//! store.shutdown();
//! ```
#![warn(missing_docs)]

mod error;
mod partition;
pub mod record;
mod retention;
mod writer;

pub use error::LogError;
pub use partition::{Partition, PartitionInfo, StartPosition};
pub use record::StoredEvent;
pub use writer::AppendCallback;

use bytes::Bytes;
use partition::{scan_segment, valid_record_after, zeros_to_end, Segment, State};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;
use writer::WriterMsg;

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before acknowledging (group commit). The default.
    Always,
    /// Acknowledge after the write; fsync at this interval.
    Interval(Duration),
    /// Acknowledge after the write; fsync only at shutdown.
    Never,
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => write!(f, "always"),
            FsyncPolicy::Interval(d) => write!(f, "interval({}ms)", d.as_millis()),
            FsyncPolicy::Never => write!(f, "never"),
        }
    }
}

/// Told about the writers' work, for metrics. Called on writer threads: keep it cheap.
pub trait LogObserver: Send + Sync + std::fmt::Debug {
    /// One fsync of a group commit (or of an interval) took `took`.
    fn fsync(&self, took: Duration);

    /// A delay to wait before the next fsync (fault injection); none by default.
    fn fsync_delay(&self) -> Option<Duration> {
        None
    }
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll to a new segment beyond this size.
    pub segment_bytes: u64,
    /// Durability policy.
    pub fsync: FsyncPolicy,
    /// Remove segments whose newest event is older than this.
    pub retention: Option<Duration>,
    /// Remove the oldest segments while a partition is larger than this.
    pub retention_bytes: Option<u64>,
    /// How often the writer applies retention. Retention is a background sweep, not part of
    /// the append path, so a segment may outlive its retention by up to this long.
    pub retention_check_interval: Duration,
    /// Bytes of recent records kept in memory per partition for tailing readers.
    pub cache_bytes: usize,
    /// Number of writer threads.
    pub writer_threads: usize,
    /// Zeros written ahead of the data in the active segment, this many bytes at a time (0: off),
    /// with [`FsyncPolicy::Always`] (the other policies do not fsync per append).
    /// Overwriting blocks that already exist lets an fsync flush data alone, without a journal
    /// commit for the file's new size; on ext4 that halves the cost of the fsync per partition.
    /// Recovery treats a run of zeros up to the end of a file as its clean end.
    pub preallocate_bytes: u64,
    /// Told about fsyncs (metrics), if set.
    pub observer: Option<std::sync::Arc<dyn LogObserver>>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 << 20,
            fsync: FsyncPolicy::Always,
            retention: None,
            retention_bytes: None,
            retention_check_interval: Duration::from_secs(5),
            cache_bytes: 8 << 20,
            writer_threads: 1,
            preallocate_bytes: 1 << 20,
            observer: None,
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct AppendEvent {
    /// Partition key to store with the event.
    pub partition_key: Option<Bytes>,
    /// The event bytes.
    pub payload: Bytes,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number of the first event.
    pub first_sequence_number: i64,
    /// Sequence number of the last event.
    pub last_sequence_number: i64,
    /// Offset of the first event.
    pub first_offset: u64,
    /// Enqueued time shared by all events of the append.
    pub enqueued_time: i64,
}

/// Owns the writer threads; opens partitions.
#[derive(Debug)]
pub struct LogStore {
    cfg: LogConfig,
    writers: Mutex<Vec<SyncSender<WriterMsg>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for WriterMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterMsg")
    }
}

impl LogStore {
    /// Starts the writer threads.
    pub fn new(cfg: LogConfig) -> Self {
        let n = cfg.writer_threads.max(1);
        let mut writers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let (tx, rx) = sync_channel(65536);
            let c = cfg.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ehub-log-writer-{i}"))
                    .spawn(move || writer::run(rx, c))
                    .expect("spawning a writer thread"),
            );
            writers.push(tx);
        }
        LogStore { cfg, writers: Mutex::new(writers), threads: Mutex::new(threads), next: AtomicUsize::new(0) }
    }

    /// The configuration.
    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    fn sender(&self, i: usize) -> Option<SyncSender<WriterMsg>> {
        self.writers.lock().unwrap_or_else(|p| p.into_inner()).get(i).cloned()
    }

    /// Opens (creating if needed) the partition stored in `dir`, recovering it.
    pub fn open_partition(&self, dir: impl Into<PathBuf>, id: &str) -> Result<Arc<Partition>, LogError> {
        self.open_partition_with_retention(dir, id, None)
    }

    /// [`LogStore::open_partition`] with its own retention by age, which replaces
    /// [`LogConfig::retention`] for this partition (`None`: the store's). Retention by size
    /// stays the store's.
    pub fn open_partition_with_retention(
        &self,
        dir: impl Into<PathBuf>,
        id: &str,
        retention: Option<Duration>,
    ) -> Result<Arc<Partition>, LogError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| LogError::io(&dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                let stem = p.file_name()?.to_str()?.strip_suffix(".log")?.to_owned();
                Some((stem.parse().ok()?, p))
            })
            .collect();
        names.sort();
        let mut segments: Vec<Segment> = Vec::new();
        let count = names.len();
        for (i, (base, path)) in names.into_iter().enumerate() {
            let file =
                std::fs::OpenOptions::new().read(true).write(true).open(&path).map_err(|e| LogError::io(&path, e))?;
            let expect = segments.last().map(|s| s.end_seq);
            let mut seg = Segment {
                base_offset: base,
                base_seq: expect.unwrap_or(0),
                path: path.clone(),
                file: Arc::new(file),
                size: 0,
                allocated: 0,
                end_seq: expect.unwrap_or(0),
                last_time: i64::MIN,
                index: Vec::new(),
                since_index: partition::INDEX_INTERVAL,
            };
            if let Some(prev) = segments.last() {
                if prev.base_offset + prev.size != base {
                    return Err(LogError::Corrupted {
                        path,
                        position: 0,
                        reason: "segment does not start where the previous one ended".into(),
                    });
                }
            }
            let scan = scan_segment(&mut seg, expect)?;
            seg.allocated = scan.file_len;
            let last = i + 1 == count;
            if let Some((pos, reason)) = scan.bad {
                if zeros_to_end(&seg, pos)? {
                    // The clean end of space written ahead. A segment that is no longer the
                    // active one gives it back (a crash came between its roll and its trim).
                    if !last {
                        seg.file.set_len(pos).map_err(|e| LogError::io(&path, e))?;
                        seg.allocated = pos;
                    }
                } else {
                    if !last || valid_record_after(&seg, pos, seg.end_seq - 1)? {
                        return Err(LogError::Corrupted { path, position: pos, reason: reason.into() });
                    }
                    tracing::warn!(partition_id = %id, segment = %path.display(), position = pos, reason, "truncating torn tail");
                    seg.file.set_len(pos).map_err(|e| LogError::io(&path, e))?;
                    seg.file.sync_all().map_err(|e| LogError::io(&path, e))?;
                    seg.allocated = pos;
                }
            }
            seg.size = scan.valid_len;
            if seg.size == 0 && i + 1 < count {
                return Err(LogError::Corrupted { path, position: 0, reason: "empty interior segment".into() });
            }
            segments.push(seg);
        }
        let next_seq = segments.last().map_or(0, |s| s.end_seq);
        let end_offset = segments.last().map_or(0, |s| s.base_offset + s.size);
        let last_time = segments.iter().rev().map(|s| s.last_time).find(|&t| t != i64::MIN).unwrap_or(i64::MIN);
        let state = State {
            dir,
            segments,
            next_seq,
            end_offset,
            committed_seq: next_seq,
            last_committed: None,
            last_time,
            cache: Default::default(),
            cache_bytes: 0,
            cache_limit: self.cfg.cache_bytes,
            failed: false,
        };
        let writer = self.next.fetch_add(1, Ordering::Relaxed) % self.cfg.writer_threads.max(1);
        let (tx, _) = watch::channel(next_seq);
        let part =
            Arc::new(Partition { id: id.to_owned(), retention, state: Mutex::new(state), committed: tx, writer });
        if next_seq > 0 {
            // Find the last event's offset and time for management queries.
            let last = part.read(next_seq - 1, 1, 1)?.pop();
            part.lock().last_committed = last.map(|e| (e.sequence_number, e.offset, e.enqueued_time));
        }
        if let Some(tx) = self.sender(writer) {
            let _ = tx.send(WriterMsg::Register(Arc::downgrade(&part)));
        }
        Ok(part)
    }

    /// Submits an append; `done` runs on the writer thread once it is committed (or failed).
    pub fn append(&self, part: &Arc<Partition>, events: Vec<AppendEvent>, done: AppendCallback) {
        match self.sender(part.writer) {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(WriterMsg::Append { done, .. })) =
                    tx.send(WriterMsg::Append { part: Arc::clone(part), events, done })
                {
                    done(Err(LogError::ShutDown));
                }
            }
            None => done(Err(LogError::ShutDown)),
        }
    }

    /// Appends and waits (for tests and tools).
    pub fn append_blocking(&self, part: &Arc<Partition>, events: Vec<AppendEvent>) -> Result<Appended, LogError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.append(
            part,
            events,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().map_err(|_| LogError::ShutDown)?
    }

    /// Makes everything written so far durable on every writer.
    pub fn sync(&self) {
        let senders: Vec<_> = self.writers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut waits = Vec::new();
        for tx in senders {
            let (stx, srx) = std::sync::mpsc::channel();
            if tx.send(WriterMsg::Sync(stx)).is_ok() {
                waits.push(srx);
            }
        }
        for w in waits {
            let _ = w.recv();
        }
    }

    /// Flushes, fsyncs and stops the writer threads.
    pub fn shutdown(&self) {
        self.sync();
        self.writers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let threads: Vec<_> = self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}
