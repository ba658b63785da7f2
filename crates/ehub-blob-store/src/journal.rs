//! The journal: an append-only file of [`Record`]s, group-committed by one writer thread and
//! compacted into a snapshot when it grows. Storage IO stays off the async reactor: writers
//! append to a buffer and await a watch channel that the thread advances after each fsync.

use crate::record::Record;
use crate::{BlobStoreConfig, Durability, StoreError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::watch;

const FILE: &str = "blobs.journal";
const TMP: &str = "blobs.journal.tmp";

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every write up to this sequence number is answered-safe under the durability policy.
    durable: u64,
    failed: bool,
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    /// Sequence number of the last appended write.
    seq: u64,
    stop: bool,
    failed: Option<String>,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    progress: watch::Sender<Progress>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    dir: PathBuf,
    durability: Durability,
    compact_min_bytes: u64,
    shared: Arc<Shared>,
    file: Mutex<Option<(File, u64)>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Storage { path: path.to_owned(), message: format!("{what}: {e}"), source: Some(e) }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Opens (creating) the journal and reads its records up to the first invalid frame, which
    /// it cuts off.
    pub(crate) fn open(config: &BlobStoreConfig) -> Result<(Journal, Vec<Record>), StoreError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, "creating the directory", e))?;
        let path = dir.join(FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| io_error(&path, "opening", e))?;
        if !existed {
            sync_dir(&dir).map_err(|e| io_error(&dir, "syncing the directory", e))?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io_error(&path, "reading", e))?;
        let mut records = Vec::new();
        let mut at = 0;
        while let Some((r, n)) = Record::decode(&bytes[at..]) {
            records.push(r);
            at += n;
        }
        if at < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                valid_bytes = at,
                dropped_bytes = bytes.len() - at,
                "blob journal: cutting off a torn or damaged tail (writes that were never answered)"
            );
            file.set_len(at as u64).map_err(|e| io_error(&path, "truncating a torn tail", e))?;
            file.sync_all().map_err(|e| io_error(&path, "syncing", e))?;
        }
        let (progress, _) = watch::channel(Progress::default());
        let journal = Journal {
            path,
            dir,
            durability: config.durability,
            compact_min_bytes: config.compact_min_bytes,
            shared: Arc::new(Shared { pending: Mutex::default(), wake: Condvar::new(), progress }),
            file: Mutex::new(Some((file, at as u64))),
            thread: Mutex::new(None),
        };
        Ok((journal, records))
    }

    /// Starts the writer thread. `snapshot` encodes the whole state and returns the sequence
    /// number it covers (see [`Journal::take_pending_for_snapshot`]), or `None` when the store
    /// is gone.
    pub(crate) fn start(&self, snapshot: impl FnMut(&mut Vec<u8>) -> Option<u64> + Send + 'static) {
        let Some((file, size)) = self.file.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let writer = Writer {
            shared: Arc::clone(&self.shared),
            path: self.path.clone(),
            dir: self.dir.clone(),
            durability: self.durability,
            compact_min_bytes: self.compact_min_bytes,
            file,
            size,
            snapshot_size: 0,
            last_sync: Instant::now(),
            dirty: false,
        };
        let handle = std::thread::Builder::new()
            .name("ehub-blob-journal".into())
            .spawn(move || writer.run(snapshot))
            .expect("spawning the blob journal thread");
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses writes once the journal failed or stopped.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        match &self.shared.lock().failed {
            Some(m) => Err(StoreError::Storage { path: self.path.clone(), message: m.clone(), source: None }),
            None => Ok(()),
        }
    }

    /// Appends one encoded record; returns its sequence number. Called under the state lock,
    /// so journal order is decision order.
    pub(crate) fn append(&self, record: &[u8]) -> u64 {
        let mut p = self.shared.lock();
        p.buf.extend_from_slice(record);
        p.seq += 1;
        self.shared.wake.notify_one();
        p.seq
    }

    /// For a snapshot taken under the state lock: the pending records are in the snapshot,
    /// so they are dropped; returns the sequence number the snapshot covers.
    pub(crate) fn take_pending_for_snapshot(&self) -> u64 {
        let mut p = self.shared.lock();
        p.buf.clear();
        p.seq
    }

    /// Waits until write `seq` is safe under the durability policy.
    pub(crate) async fn durable(&self, seq: u64) -> Result<(), StoreError> {
        let mut rx = self.shared.progress.subscribe();
        let done = rx.wait_for(|p| p.durable >= seq || p.failed).await.map(|p| p.durable >= seq);
        match done {
            Ok(true) => Ok(()),
            _ => Err(StoreError::Storage {
                path: self.path.clone(),
                message: self.shared.lock().failed.clone().unwrap_or_else(|| "the journal writer stopped".into()),
                source: None,
            }),
        }
    }

    /// Flushes, fsyncs and stops the writer; later writes fail.
    pub(crate) fn shutdown(&self) {
        {
            let mut p = self.shared.lock();
            p.stop = true;
            self.shared.wake.notify_one();
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            // The writer itself may drop the last handle to the store (it upgrades one to take a
            // snapshot); it must not wait for itself.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    path: PathBuf,
    dir: PathBuf,
    durability: Durability,
    compact_min_bytes: u64,
    file: File,
    size: u64,
    snapshot_size: u64,
    last_sync: Instant,
    dirty: bool,
}

impl Writer {
    fn run(mut self, mut snapshot: impl FnMut(&mut Vec<u8>) -> Option<u64>) {
        let mut buf = Vec::new();
        loop {
            let (seq, stop) = {
                let mut p = self.shared.lock();
                while p.buf.is_empty() && !p.stop {
                    match self.durability {
                        Durability::Interval(every) if self.dirty => {
                            let wait = every.saturating_sub(self.last_sync.elapsed());
                            if wait.is_zero() {
                                break;
                            }
                            p = self.shared.wake.wait_timeout(p, wait).unwrap_or_else(|e| e.into_inner()).0;
                        }
                        _ => p = self.shared.wake.wait(p).unwrap_or_else(|e| e.into_inner()),
                    }
                }
                std::mem::swap(&mut buf, &mut p.buf);
                (p.seq, p.stop)
            };
            let result = self.write(&buf, stop);
            buf.clear();
            if let Err(e) = result {
                self.fail(format!("{e}"));
                return;
            }
            self.publish(seq);
            if stop {
                self.shared.lock().failed.get_or_insert_with(|| "the blob store is shut down".into());
                self.shared.progress.send_modify(|p| p.failed = true);
                return;
            }
            if self.size > self.compact_min_bytes && self.size > 2 * self.snapshot_size {
                if let Err(e) = self.compact(&mut snapshot) {
                    self.fail(format!("{e}"));
                    return;
                }
            }
        }
    }

    fn write(&mut self, buf: &[u8], stop: bool) -> std::io::Result<()> {
        if !buf.is_empty() {
            self.file.write_all(buf)?;
            self.size += buf.len() as u64;
            self.dirty = true;
        }
        let sync = match self.durability {
            Durability::Always => true,
            Durability::Interval(every) => self.last_sync.elapsed() >= every,
            Durability::Never => false,
        };
        if self.dirty && (sync || stop) {
            self.file.sync_data()?;
            self.dirty = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    fn publish(&self, seq: u64) {
        self.shared.progress.send_modify(|p| p.durable = p.durable.max(seq));
    }

    fn fail(&self, message: String) {
        tracing::error!(path = %self.path.display(), error = %message, "blob journal failed; the Blob endpoint refuses writes");
        self.shared.lock().failed = Some(message);
        self.shared.progress.send_modify(|p| p.failed = true);
    }

    /// Rewrites the journal as a snapshot of the state: a new file, fsynced, renamed over the
    /// old one, then the directory fsynced. A crash at any point leaves one whole journal.
    fn compact(&mut self, snapshot: &mut impl FnMut(&mut Vec<u8>) -> Option<u64>) -> std::io::Result<()> {
        let mut out = Vec::new();
        let Some(seq) = snapshot(&mut out) else { return Ok(()) };
        let tmp = self.dir.join(TMP);
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        tracing::debug!(path = %self.path.display(), before = self.size, after = out.len(), "blob journal compacted");
        self.size = out.len() as u64;
        self.snapshot_size = self.size;
        self.dirty = false;
        self.publish(seq);
        Ok(())
    }
}
