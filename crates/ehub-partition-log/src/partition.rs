//! One partition: its segments, sparse index, tail cache and reads.

use crate::error::LogError;
use crate::record::{self, Check, StoredEvent, HEADER_LEN};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Index an entry every this many bytes of log.
pub(crate) const INDEX_INTERVAL: u64 = 4096;

#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexEntry {
    pub seq: i64,
    pub pos: u64,
    pub time: i64,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: u64,
    pub base_seq: i64,
    pub path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
    /// File length: `size` plus zeros written ahead of the data (see
    /// [`crate::LogConfig::preallocate_bytes`]).
    pub allocated: u64,
    /// Next sequence number after the last record in this segment.
    pub end_seq: i64,
    pub last_time: i64,
    pub index: Vec<IndexEntry>,
    pub since_index: u64,
}

impl Segment {
    pub(crate) fn file_name(base_offset: u64) -> String {
        format!("{base_offset:020}.log")
    }

    pub(crate) fn create(dir: &Path, base_offset: u64, base_seq: i64) -> Result<Self, LogError> {
        let path = dir.join(Self::file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        Ok(Segment {
            base_offset,
            base_seq,
            path,
            file: Arc::new(file),
            size: 0,
            allocated: 0,
            end_seq: base_seq,
            last_time: i64::MIN,
            index: Vec::new(),
            since_index: INDEX_INTERVAL,
        })
    }

    /// Notes a record appended at `pos` (relative) for the sparse index.
    pub(crate) fn note_record(&mut self, seq: i64, pos: u64, len: u64, time: i64) {
        if self.since_index >= INDEX_INTERVAL {
            self.index.push(IndexEntry { seq, pos, time });
            self.since_index = 0;
        }
        self.since_index += len;
        self.end_seq = seq + 1;
        self.last_time = time;
    }
}

/// A contiguous run of encoded records kept in memory for tailing readers.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub first_seq: i64,
    pub first_offset: u64,
    pub data: Bytes,
    /// Relative position of each record.
    pub positions: Vec<u32>,
}

impl Chunk {
    fn end_seq(&self) -> i64 {
        self.first_seq + self.positions.len() as i64
    }
}

/// Summary of a partition for management queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// First retained sequence number (the next one when empty).
    pub begin_sequence_number: i64,
    /// Last committed sequence number, -1 when nothing was ever written.
    pub last_sequence_number: i64,
    /// Offset of the last committed event (None when nothing was ever written).
    pub last_offset: Option<u64>,
    /// Enqueued time of the last committed event.
    pub last_enqueued_time: Option<i64>,
    /// No retained events.
    pub is_empty: bool,
}

/// Where a reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// First retained event.
    Earliest,
    /// After the last committed event.
    Latest,
    /// By sequence number.
    Sequence {
        /// Sequence number.
        value: i64,
        /// Include it.
        inclusive: bool,
    },
    /// By offset.
    Offset {
        /// Offset.
        value: u64,
        /// Include it.
        inclusive: bool,
    },
    /// By enqueued time.
    Time {
        /// Unix milliseconds.
        millis: i64,
        /// Include events enqueued exactly then.
        inclusive: bool,
    },
}

#[derive(Debug)]
pub(crate) struct State {
    pub dir: PathBuf,
    pub segments: Vec<Segment>,
    /// Next sequence number to assign.
    pub next_seq: i64,
    /// Logical end (offset of the next record).
    pub end_offset: u64,
    /// Next sequence number visible to readers.
    pub committed_seq: i64,
    pub last_committed: Option<(i64, u64, i64)>,
    pub last_time: i64,
    pub cache: VecDeque<Chunk>,
    pub cache_bytes: usize,
    pub cache_limit: usize,
    pub failed: bool,
}

impl State {
    pub(crate) fn begin_seq(&self) -> i64 {
        self.segments.first().map_or(self.next_seq, |s| s.base_seq)
    }

    pub(crate) fn push_chunk(&mut self, chunk: Chunk) {
        self.cache_bytes += chunk.data.len();
        self.cache.push_back(chunk);
        while self.cache_bytes > self.cache_limit && self.cache.len() > 1 {
            if let Some(c) = self.cache.pop_front() {
                self.cache_bytes -= c.data.len();
            }
        }
    }
}

/// A partition log. Shared by the writer thread and readers.
#[derive(Debug)]
pub struct Partition {
    pub(crate) id: String,
    /// Retention by age for this partition, over the store's (its hub's setting).
    pub(crate) retention: Option<std::time::Duration>,
    pub(crate) state: Mutex<State>,
    pub(crate) committed: watch::Sender<i64>,
    pub(crate) writer: usize,
}

impl Partition {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The partition id given at open.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Watches the next committed sequence number: readers at the end wait for it to change.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.committed.subscribe()
    }

    /// Next sequence number visible to readers.
    pub fn committed_seq(&self) -> i64 {
        *self.committed.borrow()
    }

    /// Whether a write or fsync failed, turning the partition read-only until restart.
    pub fn is_failed(&self) -> bool {
        self.lock().failed
    }

    /// Management summary.
    pub fn info(&self) -> PartitionInfo {
        let st = self.lock();
        let begin = st.begin_seq();
        PartitionInfo {
            begin_sequence_number: begin,
            last_sequence_number: st.committed_seq - 1,
            last_offset: st.last_committed.map(|(_, o, _)| o),
            last_enqueued_time: st.last_committed.map(|(_, _, t)| t),
            is_empty: begin >= st.committed_seq,
        }
    }

    /// Reads committed events starting at `seq`, at most `max_events` and about `max_bytes`.
    /// Events before the first retained one are skipped. May read files: call it off the async
    /// reactor unless [`Partition::is_cached`] says the start is in memory.
    pub fn read(&self, seq: i64, max_events: usize, max_bytes: usize) -> Result<Vec<StoredEvent>, LogError> {
        let (seq, file, pos, base_offset, committed) = {
            let st = self.lock();
            let seq = seq.max(st.begin_seq());
            if seq >= st.committed_seq || max_events == 0 {
                return Ok(Vec::new());
            }
            if let Some(events) = read_cache(&st, seq, max_events, max_bytes) {
                return Ok(events);
            }
            let Some(seg) = st.segments.iter().rev().find(|s| s.base_seq <= seq) else {
                return Ok(Vec::new());
            };
            let i = seg.index.partition_point(|e| e.seq <= seq);
            let pos = if i == 0 { 0 } else { seg.index[i - 1].pos };
            // The sparse index bounds how far `max_events` can reach, so a reader that wants
            // a few thousand events does not read (and zero) megabytes it will not use.
            let last = seq.saturating_add(max_events as i64);
            let j = seg.index.partition_point(|e| e.seq <= last);
            let reach = seg.index.get(j).map_or(seg.size, |e| e.pos);
            (
                seq,
                Arc::clone(&seg.file),
                (pos, seg.size, seg.path.clone(), seg.end_seq, reach),
                seg.base_offset,
                st.committed_seq,
            )
        };
        let (mut pos, seg_size, path, seg_end_seq, reach) = pos;
        let mut events = Vec::new();
        let mut bytes = 0;
        let want = (max_bytes.max(64 * 1024) as u64)
            .min(reach.saturating_sub(pos).max(64 * 1024))
            .min(seg_size - pos.min(seg_size)) as usize;
        while events.len() < max_events && pos < seg_size {
            let n = want.min((seg_size - pos) as usize).max(HEADER_LEN);
            let buf = Bytes::from(read_vec(&file, n, pos).map_err(|e| LogError::io(&path, e))?);
            let mut p = 0;
            let mut progressed = false;
            while p < buf.len() {
                match record::check(&buf[p..]) {
                    Check::Valid(len) => {
                        let (s, _) = record::header(&buf[p..]);
                        if s >= committed {
                            return Ok(events);
                        }
                        if s >= seq {
                            events.push(record::to_event(&buf, p, len, base_offset + pos + p as u64));
                            bytes += len;
                            if events.len() >= max_events || bytes >= max_bytes {
                                return Ok(events);
                            }
                        }
                        p += len;
                        progressed = true;
                    }
                    Check::Incomplete => {
                        if !progressed && p == 0 {
                            // One record larger than the buffer: read it whole.
                            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                            let big = read_vec(&file, len, pos).map_err(|e| LogError::io(&path, e))?;
                            if big.len() < len {
                                return Ok(events);
                            }
                            let big = Bytes::from(big);
                            if let Check::Valid(l) = record::check(&big) {
                                let (s, _) = record::header(&big);
                                if s >= committed {
                                    return Ok(events);
                                }
                                if s >= seq {
                                    events.push(record::to_event(&big, 0, l, base_offset + pos));
                                }
                                p = l;
                                progressed = true;
                            } else {
                                return Err(LogError::Corrupted { path, position: pos, reason: "bad record".into() });
                            }
                        }
                        break;
                    }
                    Check::Invalid(reason) => {
                        return Err(LogError::Corrupted { path, position: pos + p as u64, reason: reason.into() });
                    }
                }
            }
            if !progressed {
                break;
            }
            pos += p as u64;
        }
        // The segment ended: continue in the next one.
        let next = events.last().map_or(seg_end_seq, |e| e.sequence_number + 1);
        if next >= seg_end_seq && next > seq && next < committed && events.len() < max_events && bytes < max_bytes {
            let mut rest = self.read(next, max_events - events.len(), max_bytes - bytes)?;
            events.append(&mut rest);
        }
        Ok(events)
    }

    /// True when reading from `seq` will be served from memory.
    pub fn is_cached(&self, seq: i64) -> bool {
        let st = self.lock();
        seq >= st.committed_seq || st.cache.front().is_some_and(|c| c.first_seq <= seq.max(st.begin_seq()))
    }

    /// Resolves a start position to the sequence number of the first event to deliver.
    /// May read files.
    pub fn resolve(&self, pos: &StartPosition) -> Result<i64, LogError> {
        let (begin, committed) = {
            let st = self.lock();
            (st.begin_seq(), st.committed_seq)
        };
        match *pos {
            StartPosition::Earliest => Ok(begin),
            StartPosition::Latest => Ok(committed),
            StartPosition::Sequence { value, inclusive } => {
                let s = if inclusive { value } else { value.saturating_add(1) };
                if s > committed {
                    return Err(LogError::OutOfRange(format!(
                        "The supplied sequence number '{value}' is invalid. The last sequence number in the system is '{}'",
                        committed - 1
                    )));
                }
                Ok(s.max(begin))
            }
            StartPosition::Offset { value, inclusive } => {
                let start = {
                    let st = self.lock();
                    if value > st.end_offset {
                        return Err(LogError::OutOfRange(format!(
                            "The supplied offset '{value}' is invalid. The last offset in the system is '{}'",
                            st.last_committed.map_or(-1, |(_, o, _)| o as i64)
                        )));
                    }
                    index_lookup(&st, |e, base| base + e.pos <= value)
                };
                self.scan(start, |e| if inclusive { e.offset >= value } else { e.offset > value })
            }
            StartPosition::Time { millis, inclusive } => {
                let start = {
                    let st = self.lock();
                    index_lookup(&st, |e, _| e.time < millis)
                };
                self.scan(start, |e| if inclusive { e.enqueued_time >= millis } else { e.enqueued_time > millis })
            }
        }
    }

    /// First sequence number at or after `start` whose event satisfies `pred`; the committed end
    /// when none does.
    fn scan(&self, start: i64, pred: impl Fn(&StoredEvent) -> bool) -> Result<i64, LogError> {
        let mut seq = start;
        loop {
            let batch = self.read(seq, 4096, 4 << 20)?;
            let Some(last) = batch.last() else {
                return Ok(self.committed_seq().max(seq));
            };
            if let Some(e) = batch.iter().find(|e| pred(e)) {
                return Ok(e.sequence_number);
            }
            seq = last.sequence_number + 1;
        }
    }
}

/// The sequence number of the last index entry satisfying `before` (or the first retained).
fn index_lookup(st: &State, before: impl Fn(&IndexEntry, u64) -> bool) -> i64 {
    let mut best = st.begin_seq();
    for seg in &st.segments {
        match seg.index.first() {
            Some(first) if before(first, seg.base_offset) => {
                let i = seg.index.partition_point(|e| before(e, seg.base_offset));
                best = seg.index[i - 1].seq;
            }
            _ => break,
        }
    }
    best
}

fn read_cache(st: &State, seq: i64, max_events: usize, max_bytes: usize) -> Option<Vec<StoredEvent>> {
    let first = st.cache.front()?;
    if seq < first.first_seq {
        return None;
    }
    let ci = st.cache.partition_point(|c| c.end_seq() <= seq);
    let mut events = Vec::new();
    let mut bytes = 0;
    for c in st.cache.range(ci..) {
        let mut i = (seq.max(c.first_seq) - c.first_seq) as usize;
        while i < c.positions.len() {
            let s = c.first_seq + i as i64;
            if s >= st.committed_seq {
                return Some(events);
            }
            let p = c.positions[i] as usize;
            let end = c.positions.get(i + 1).map_or(c.data.len(), |&n| n as usize);
            events.push(record::to_event(&c.data, p, end - p, c.first_offset + p as u64));
            bytes += end - p;
            if events.len() >= max_events || bytes >= max_bytes {
                return Some(events);
            }
            i += 1;
        }
    }
    Some(events)
}

fn read_full(file: &File, buf: &mut [u8], mut pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], pos)?;
        if n == 0 {
            break;
        }
        done += n;
        pos += n as u64;
    }
    Ok(done)
}

/// Reads up to `len` bytes at `pos` (fewer only at the end of the file) into a new buffer,
/// without zeroing it first: every consumer read goes through here, and the memset of
/// `vec![0; n]` showed in the broker's profiles.
fn read_vec(file: &File, len: usize, mut pos: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let n = rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), pos)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
    }
    Ok(buf)
}

/// Result of scanning a segment at recovery.
pub(crate) struct Scan {
    pub valid_len: u64,
    pub bad: Option<(u64, &'static str)>,
    pub file_len: u64,
}

/// Scans a segment file, building its index. Reads in large chunks; never loads the file whole.
pub(crate) fn scan_segment(seg: &mut Segment, expect_seq: Option<i64>) -> Result<Scan, LogError> {
    let len = seg.file.metadata().map_err(|e| LogError::io(&seg.path, e))?.len();
    let mut pos = 0u64;
    let mut carry = BytesMut::new();
    let mut expect = expect_seq;
    const CHUNK: usize = 8 << 20;
    let mut buf = vec![0u8; CHUNK];
    while pos < len {
        let at = pos + carry.len() as u64;
        if at >= len {
            break;
        }
        let n = read_full(&seg.file, &mut buf[..CHUNK.min((len - at) as usize)], at)
            .map_err(|e| LogError::io(&seg.path, e))?;
        if n == 0 {
            break;
        }
        carry.extend_from_slice(&buf[..n]);
        let mut p = 0;
        loop {
            match record::check(&carry[p..]) {
                Check::Valid(l) => {
                    let (seq, time) = record::header(&carry[p..]);
                    if let Some(e) = expect {
                        if seq != e {
                            return Ok(Scan {
                                valid_len: pos + p as u64,
                                bad: Some((pos + p as u64, "sequence gap")),
                                file_len: len,
                            });
                        }
                    } else {
                        seg.base_seq = seq;
                        seg.end_seq = seq;
                    }
                    seg.note_record(seq, pos + p as u64, l as u64, time);
                    expect = Some(seq + 1);
                    p += l;
                }
                Check::Incomplete => break,
                Check::Invalid(r) => {
                    return Ok(Scan { valid_len: pos + p as u64, bad: Some((pos + p as u64, r)), file_len: len })
                }
            }
        }
        pos += p as u64;
        let _ = carry.split_to(p);
        if n < CHUNK.min((len - at) as usize) {
            break;
        }
    }
    if pos < len {
        return Ok(Scan { valid_len: pos, bad: Some((pos, "incomplete record")), file_len: len });
    }
    Ok(Scan { valid_len: pos, bad: None, file_len: len })
}

/// True when the file holds only zeros from `from` to its end (`seg.allocated`, the file
/// length the scan saw): space written ahead of the data.
pub(crate) fn zeros_to_end(seg: &Segment, from: u64) -> Result<bool, LogError> {
    let len = seg.allocated;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = from;
    while pos < len {
        let n = ((len - pos) as usize).min(buf.len());
        let got = read_full(&seg.file, &mut buf[..n], pos).map_err(|e| LogError::io(&seg.path, e))?;
        if got == 0 {
            break;
        }
        if buf[..got].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += got as u64;
    }
    Ok(true)
}

/// After a bad record at `from` in the last segment: is there any valid record later with a
/// higher sequence number? If so the damage is interior, not a torn tail.
pub(crate) fn valid_record_after(seg: &Segment, from: u64, after_seq: i64) -> Result<bool, LogError> {
    let len = seg.allocated;
    if from >= len {
        return Ok(false);
    }
    let buf = read_vec(&seg.file, (len - from) as usize, from).map_err(|e| LogError::io(&seg.path, e))?;
    for p in 1..buf.len().saturating_sub(HEADER_LEN) {
        let b = &buf[p..];
        let seq = i64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
        if seq > after_seq && seq < after_seq + (1 << 32) {
            if let Check::Valid(_) = record::check(b) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
