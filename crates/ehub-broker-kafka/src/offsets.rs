//! Committed Kafka offsets, kept durably: an append-only journal of CRC-checked records
//! (`<data-dir>/_kafka/offsets.log`), replayed into a map at start and rewritten as a snapshot
//! when most of it is stale; and the producer-id counter (`producer-ids`), reserved in blocks.
//!
//! A commit is answered after its record is written and, under `fsync=always`, synced; a torn
//! record at the end (a crash mid-write) is cut off at the next start.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The next offset the group will read.
    pub offset: i64,
    /// The leader epoch the client gave (-1 when none).
    pub leader_epoch: i32,
    /// The client's metadata string.
    pub metadata: Option<String>,
    /// When it was committed, Unix milliseconds.
    pub commit_time: i64,
}

/// (group, topic, partition).
pub type OffsetKey = (String, String, i32);

#[derive(Debug)]
struct Journal {
    file: File,
    records: usize,
}

/// The committed offsets of every Kafka group, durable.
#[derive(Debug)]
pub struct OffsetStore {
    dir: PathBuf,
    sync: bool,
    map: Mutex<HashMap<OffsetKey, Committed>>,
    journal: Mutex<Journal>,
    producer_ids: Mutex<(i64, i64)>,
}

const HEADER: usize = 8;
const MAX_RECORD: usize = 1 << 20;
const ID_BLOCK: i64 = 1000;

fn encode(out: &mut BytesMut, key: &OffsetKey, c: &Committed) {
    let start = out.len();
    out.put_u64(0);
    for s in [&key.0, &key.1] {
        out.put_u16(s.len() as u16);
        out.put_slice(s.as_bytes());
    }
    out.put_i32(key.2);
    out.put_i64(c.offset);
    out.put_i32(c.leader_epoch);
    match &c.metadata {
        Some(m) => {
            out.put_i32(m.len() as i32);
            out.put_slice(m.as_bytes());
        }
        None => out.put_i32(-1),
    }
    out.put_i64(c.commit_time);
    let len = (out.len() - start - HEADER) as u32;
    let crc = crc32c::crc32c(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

fn string(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_u16() as usize;
    if b.remaining() < n {
        return None;
    }
    String::from_utf8(b.split_to(n).to_vec()).ok()
}

fn decode(mut b: Bytes) -> Option<(OffsetKey, Committed)> {
    let group = string(&mut b)?;
    let topic = string(&mut b)?;
    if b.remaining() < 20 {
        return None;
    }
    let (partition, offset, leader_epoch, mlen) = (b.get_i32(), b.get_i64(), b.get_i32(), b.get_i32());
    let metadata = if mlen < 0 {
        None
    } else {
        if b.remaining() < mlen as usize {
            return None;
        }
        Some(String::from_utf8(b.split_to(mlen as usize).to_vec()).ok()?)
    };
    if b.remaining() < 8 {
        return None;
    }
    let commit_time = b.get_i64();
    Some(((group, topic, partition), Committed { offset, leader_epoch, metadata, commit_time }))
}

/// Reads every whole record; returns them and the length of the valid prefix.
fn replay(data: &[u8]) -> (Vec<(OffsetKey, Committed)>, usize) {
    let (mut out, mut pos) = (Vec::new(), 0);
    while data.len() - pos >= HEADER {
        let len = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_be_bytes(data[pos + 4..pos + 8].try_into().unwrap_or_default());
        if len > MAX_RECORD || data.len() - pos - HEADER < len {
            break;
        }
        let body = &data[pos + HEADER..pos + HEADER + len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        match decode(Bytes::copy_from_slice(body)) {
            Some(r) => out.push(r),
            None => break,
        }
        pos += HEADER + len;
    }
    (out, pos)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    write_atomically_with(dir, name, data, &mut OpenOptions::new())
}

/// Writes `name` whole or not at all; `options` may add a file mode (set at creation, so the
/// data is never readable with a wider one).
fn write_atomically_with(dir: &Path, name: &str, data: &[u8], options: &mut OpenOptions) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = std::fs::remove_file(&tmp); // a stale one would keep its old mode
    let mut f = options.write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Replaces the journal with one record per live entry; returns it opened for appending.
fn compact(dir: &Path, map: &HashMap<OffsetKey, Committed>) -> std::io::Result<File> {
    let mut snap = BytesMut::new();
    for (k, c) in map {
        encode(&mut snap, k, c);
    }
    write_atomically(dir, "offsets.log", &snap)?;
    OpenOptions::new().append(true).open(dir.join("offsets.log"))
}

impl OffsetStore {
    /// Opens (or creates) the store in `dir`; `sync` fsyncs every commit before it is answered.
    pub fn open(dir: &Path, sync: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("offsets.log");
        let mut data = Vec::new();
        if let Ok(mut f) = File::open(&path) {
            f.read_to_end(&mut data)?;
        }
        let (records, valid) = replay(&data);
        if valid < data.len() {
            tracing::warn!(path = %path.display(), valid, len = data.len(), "Kafka offsets: cutting off a torn record at the end");
        }
        let count = records.len();
        let map: HashMap<_, _> = records.into_iter().collect();
        // Rewrite as a snapshot of the live entries when most records are stale (or the tail was torn).
        let file = if valid < data.len() || count > 2 * map.len() + 1024 {
            compact(dir, &map)?
        } else {
            OpenOptions::new().create(true).append(true).open(&path)?
        };
        let records = map.len();
        let next_id = std::fs::read_to_string(dir.join("producer-ids"))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        Ok(OffsetStore {
            dir: dir.to_path_buf(),
            sync,
            map: Mutex::new(map),
            journal: Mutex::new(Journal { file, records }),
            // Ids below the reserved mark may have been handed out before a crash: start there.
            producer_ids: Mutex::new((next_id, next_id)),
        })
    }

    /// Commits offsets durably (blocking IO: call it off the async reactor).
    pub fn commit(&self, entries: Vec<(OffsetKey, Committed)>) -> std::io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = BytesMut::new();
        for (k, c) in &entries {
            encode(&mut buf, k, c);
        }
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        j.file.write_all(&buf)?;
        if self.sync {
            j.file.sync_data()?;
        }
        j.records += entries.len();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for (k, c) in entries {
            map.insert(k, c);
        }
        if j.records > 2 * map.len() + 4096 {
            j.file = compact(&self.dir, &map)?;
            j.records = map.len();
        }
        Ok(())
    }

    /// The committed offset of a group's partition.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(group.to_owned(), topic.to_owned(), partition)).cloned()
    }

    /// Every committed offset of a group: (topic, partition, committed).
    pub fn of_group(&self, group: &str) -> Vec<(String, i32, Committed)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> =
            map.iter().filter(|(k, _)| k.0 == group).map(|(k, c)| (k.1.clone(), k.2, c.clone())).collect();
        v.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        v
    }

    /// The groups that have committed offsets.
    pub fn groups(&self) -> Vec<String> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = map.keys().map(|k| k.0.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The data directory's secret for producer marks ([`crate::producers`]): 32 random bytes
    /// made at the first start and kept (owner-only) in `<dir>/secret`.
    pub fn secret(&self) -> std::io::Result<[u8; 32]> {
        let path = self.dir.join("secret");
        if let Ok(b) = std::fs::read(&path) {
            if let Ok(s) = <[u8; 32]>::try_from(b.as_slice()) {
                return Ok(s);
            }
            tracing::warn!(path = %path.display(), "Kafka: the producer-mark secret is damaged; making a new one");
        }
        let s: [u8; 32] = rand::random();
        let mut owner_only = OpenOptions::new();
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut owner_only, 0o600);
        write_atomically_with(&self.dir, "secret", &s, &mut owner_only)?;
        Ok(s)
    }

    /// Whether this data directory ever handed out a producer id (if not, no partition holds
    /// an idempotent producer's batch, and there is nothing to recover at start).
    pub fn issued_producer_ids(&self) -> bool {
        self.producer_ids.lock().unwrap_or_else(|p| p.into_inner()).1 > 0
    }

    /// A new producer id, never handed out before, also across restarts (blocking IO when a
    /// new block of ids is reserved).
    pub fn next_producer_id(&self) -> std::io::Result<i64> {
        let mut ids = self.producer_ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.0 >= ids.1 {
            let reserved = ids.0 + ID_BLOCK;
            write_atomically(&self.dir, "producer-ids", reserved.to_string().as_bytes())?;
            ids.1 = reserved;
        }
        ids.0 += 1;
        Ok(ids.0 - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(offset: i64, metadata: Option<&str>) -> Committed {
        Committed { offset, leader_epoch: -1, metadata: metadata.map(str::to_owned), commit_time: 7 }
    }

    fn key(g: &str, p: i32) -> OffsetKey {
        (g.into(), "eh1".into(), p)
    }

    #[test]
    fn commits_survive_a_reopen_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path(), true).unwrap();
        s.commit(vec![(key("g", 0), c(5, Some("m"))), (key("g", 1), c(9, None))]).unwrap();
        s.commit(vec![(key("g", 0), c(6, Some("")))]).unwrap();
        drop(s);
        // A crash mid-write leaves half a record.
        let mut f = OpenOptions::new().append(true).open(dir.path().join("offsets.log")).unwrap();
        f.write_all(&[0, 0, 0, 40, 1, 2]).unwrap();
        drop(f);
        let s = OffsetStore::open(dir.path(), true).unwrap();
        assert_eq!(s.get("g", "eh1", 0), Some(c(6, Some(""))));
        assert_eq!(s.get("g", "eh1", 1), Some(c(9, None)));
        assert_eq!(s.get("h", "eh1", 0), None);
        assert_eq!(s.groups(), vec!["g".to_string()]);
        s.commit(vec![(key("h", 3), c(1, None))]).unwrap();
        drop(s);
        let s = OffsetStore::open(dir.path(), false).unwrap();
        assert_eq!(s.of_group("h"), vec![("eh1".to_string(), 3, c(1, None))]);
    }

    #[test]
    fn the_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = OffsetStore::open(dir.path(), true).unwrap().secret().unwrap();
        let b = OffsetStore::open(dir.path(), true).unwrap().secret().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, [0; 32]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("secret")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "readable by the owner only");
        }
    }

    #[test]
    fn producer_ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path(), true).unwrap();
        assert!(!s.issued_producer_ids(), "a new store has issued none: start-up skips recovery");
        let (a, b) = (s.next_producer_id().unwrap(), s.next_producer_id().unwrap());
        assert_eq!((a, b), (0, 1));
        drop(s);
        let s = OffsetStore::open(dir.path(), true).unwrap();
        assert!(s.issued_producer_ids(), "known after a restart: start-up recovers");
        assert!(s.next_producer_id().unwrap() > b);
    }

    #[test]
    fn many_updates_are_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let s = OffsetStore::open(dir.path(), false).unwrap();
        for i in 0..10_000 {
            s.commit(vec![(key("g", 0), c(i, None))]).unwrap();
        }
        let len = std::fs::metadata(dir.path().join("offsets.log")).unwrap().len();
        assert!(len < 4097 * 64, "journal rewritten: {len} bytes");
        drop(s);
        let s = OffsetStore::open(dir.path(), false).unwrap();
        assert_eq!(s.get("g", "eh1", 0).unwrap().offset, 9_999);
    }
}
