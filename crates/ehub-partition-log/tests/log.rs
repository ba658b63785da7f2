//! Storage component tests: appends, reads from cache and files, positions, recovery, retention.

use bytes::Bytes;
use ehub_partition_log::*;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Duration;

fn ev(i: usize, key: Option<&str>) -> AppendEvent {
    AppendEvent {
        partition_key: key.map(|k| Bytes::from(k.to_owned())),
        payload: Bytes::from(format!("event-{i:06}-{}", "x".repeat(i % 50))),
    }
}

fn cfg(cache: usize, segment: u64) -> LogConfig {
    LogConfig { cache_bytes: cache, segment_bytes: segment, ..Default::default() }
}

fn fill(store: &LogStore, p: &Arc<Partition>, n: usize, per: usize) {
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + per).min(n)).map(|j| ev(j, (j % 3 == 0).then_some("k"))).collect();
        store.append_blocking(p, batch).unwrap();
        i += per;
    }
}

fn check_all(p: &Partition, n: usize) {
    let mut seq = 0i64;
    let mut last_offset = None;
    while (seq as usize) < n {
        let got = p.read(seq, 777, 64 * 1024).unwrap();
        assert!(!got.is_empty(), "no events at {seq}");
        for e in got {
            assert_eq!(e.sequence_number, seq);
            assert_eq!(e.payload, ev(seq as usize, None).payload);
            assert_eq!(e.partition_key.is_some(), seq % 3 == 0);
            if let Some(o) = last_offset {
                assert!(e.offset > o, "offsets increase");
            }
            last_offset = Some(e.offset);
            seq += 1;
        }
    }
    assert!(p.read(n as i64, 10, 1 << 20).unwrap().is_empty());
}

/// A partition directory holding `n` events in one segment, with its store shut down.
fn seeded_partition(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("0");
    let store = LogStore::new(cfg(1 << 20, 1 << 30));
    let p = store.open_partition(&pdir, "0").unwrap();
    fill(&store, &p, n, 10);
    store.shutdown();
    (dir, pdir)
}

#[test]
fn reads_from_cache_and_from_files_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny segments and cache: most reads go to files and cross segment boundaries.
    let store = LogStore::new(cfg(4096, 16 * 1024));
    let p = store.open_partition(dir.path().join("0"), "0").unwrap();
    fill(&store, &p, 3000, 37);
    check_all(&p, 3000);
    let info = p.info();
    assert_eq!((info.begin_sequence_number, info.last_sequence_number, info.is_empty), (0, 2999, false));
    let segs = std::fs::read_dir(dir.path().join("0")).unwrap().count();
    assert!(segs > 5, "expected several segments, got {segs}");
    store.shutdown();
}

#[test]
fn a_group_commit_that_rolls_the_segment_midway_reads_back_whole_from_the_cache() {
    // Many appends queued at once land in one group commit; with small segments one of those
    // batches rolls the segment after some of its requests. The cache chunk of that batch must
    // place every record where it is (its positions once restarted at the roll, and a reader
    // tailing the partition across the roll panicked).
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::new(cfg(64 << 20, 16 * 1024));
    let p = store.open_partition(dir.path().join("0"), "0").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let n = 4000;
    for i in (0..n).step_by(20) {
        let batch: Vec<_> = (i..i + 20).map(|j| ev(j, (j % 3 == 0).then_some("k"))).collect();
        let tx = tx.clone();
        store.append(&p, batch, Box::new(move |r| tx.send(r.map(|_| ())).unwrap()));
    }
    for _ in (0..n).step_by(20) {
        rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    }
    let segs = std::fs::read_dir(dir.path().join("0")).unwrap().count();
    assert!(segs > 5, "expected several segments, got {segs}");
    assert!(p.is_cached(0), "the reads below come from the cache");
    check_all(&p, n);
    store.shutdown();
}

#[test]
fn survives_restart_and_keeps_appending() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::new(cfg(1 << 20, 64 * 1024));
        let p = store.open_partition(dir.path().join("0"), "0").unwrap();
        fill(&store, &p, 1000, 10);
        store.shutdown();
    }
    let store = LogStore::new(cfg(1 << 20, 64 * 1024));
    let p = store.open_partition(dir.path().join("0"), "0").unwrap();
    assert_eq!(p.committed_seq(), 1000);
    let before = p.info();
    let a = store.append_blocking(&p, vec![ev(1000, None)]).unwrap();
    assert_eq!(a.first_sequence_number, 1000);
    assert!(a.first_offset > before.last_offset.unwrap());
    check_all(&p, 1001);
}

#[test]
fn resolves_every_kind_of_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::new(cfg(2048, 8 * 1024));
    let p = store.open_partition(dir.path().join("0"), "0").unwrap();
    fill(&store, &p, 500, 5);
    let all = p.read(0, 1000, 1 << 30).unwrap();
    assert_eq!(all.len(), 500);
    assert_eq!(p.resolve(&StartPosition::Earliest).unwrap(), 0);
    assert_eq!(p.resolve(&StartPosition::Latest).unwrap(), 500);
    assert_eq!(p.resolve(&StartPosition::Sequence { value: 10, inclusive: true }).unwrap(), 10);
    assert_eq!(p.resolve(&StartPosition::Sequence { value: 10, inclusive: false }).unwrap(), 11);
    assert_eq!(p.resolve(&StartPosition::Sequence { value: 499, inclusive: false }).unwrap(), 500);
    assert!(matches!(
        p.resolve(&StartPosition::Sequence { value: 600, inclusive: true }),
        Err(LogError::OutOfRange(_))
    ));
    for i in [0usize, 1, 77, 250, 499] {
        let o = all[i].offset;
        assert_eq!(p.resolve(&StartPosition::Offset { value: o, inclusive: true }).unwrap(), i as i64);
        assert_eq!(p.resolve(&StartPosition::Offset { value: o, inclusive: false }).unwrap(), i as i64 + 1);
    }
    let t = all[250].enqueued_time;
    let first_at_t = all.iter().position(|e| e.enqueued_time >= t).unwrap() as i64;
    let first_after_t = all.iter().position(|e| e.enqueued_time > t).map_or(500, |x| x as i64);
    assert_eq!(p.resolve(&StartPosition::Time { millis: t, inclusive: true }).unwrap(), first_at_t);
    assert_eq!(p.resolve(&StartPosition::Time { millis: t, inclusive: false }).unwrap(), first_after_t);
}

/// Where the records of a shut-down single-segment partition end (zeros may follow).
fn data_end(pdir: &std::path::Path) -> u64 {
    let store = LogStore::new(cfg(1 << 20, 1 << 30));
    let p = store.open_partition(pdir, "0").unwrap();
    let info = p.info();
    let last = p.read(info.last_sequence_number, 1, 1 << 20).unwrap().pop().unwrap();
    store.shutdown();
    info.last_offset.unwrap() + record::record_len(last.partition_key.as_deref(), last.payload.len()) as u64
}

#[test]
fn torn_tail_is_truncated_with_every_acknowledged_record_kept() {
    for preallocate in [0, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("0");
        let store = LogStore::new(LogConfig { preallocate_bytes: preallocate, ..cfg(1 << 20, 1 << 30) });
        let p = store.open_partition(&pdir, "0").unwrap();
        fill(&store, &p, 100, 10);
        store.shutdown();
        // Simulate a crash mid-write: half a record where the records end (before the zeros
        // written ahead, when there are any).
        let seg = pdir.join(format!("{:020}.log", 0));
        let end = data_end(&pdir);
        let len = std::fs::metadata(&seg).unwrap().len();
        assert_eq!(len > end, preallocate > 0, "zeros follow the data only when preallocating");
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7], end).unwrap();
        drop(f);
        let store = LogStore::new(cfg(1 << 20, 1 << 30));
        let p = store.open_partition(&pdir, "0").unwrap();
        assert_eq!(p.committed_seq(), 100);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), end, "the torn record is cut off");
        check_all(&p, 100);
        assert_eq!(store.append_blocking(&p, vec![ev(100, None)]).unwrap().first_sequence_number, 100);
        check_all(&p, 101);
    }
}

#[test]
fn zeros_written_ahead_are_a_clean_end_and_closed_segments_give_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("0");
    let c = LogConfig { preallocate_bytes: 4096, ..cfg(4096, 16 * 1024) };
    let segment_files = || {
        let mut v: Vec<(u64, u64)> = std::fs::read_dir(&pdir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let base = e.file_name().to_str().unwrap().strip_suffix(".log").unwrap().parse().unwrap();
                (base, e.metadata().unwrap().len())
            })
            .collect();
        v.sort();
        v
    };
    let end = {
        let store = LogStore::new(c.clone());
        let p = store.open_partition(&pdir, "0").unwrap();
        fill(&store, &p, 2000, 25);
        let files = segment_files();
        assert!(files.len() > 3, "the fill spans several segments");
        // A closed segment is exactly its records: the next one starts at its end.
        for w in files.windows(2) {
            assert_eq!(w[0].0 + w[0].1, w[1].0, "closed segment {} keeps no zeros", w[0].0);
        }
        let info = p.info();
        let last = p.read(info.last_sequence_number, 1, 1 << 20).unwrap().pop().unwrap();
        let end =
            info.last_offset.unwrap() + record::record_len(last.partition_key.as_deref(), last.payload.len()) as u64;
        let (base, len) = *files.last().unwrap();
        assert!(base + len > end, "the active segment has zeros ahead of its data");
        store.shutdown();
        end
    };
    // A crash between a roll and the trim leaves zeros after a closed segment.
    let (first_base, first_len) = segment_files()[0];
    let f = std::fs::OpenOptions::new().write(true).open(pdir.join(format!("{first_base:020}.log"))).unwrap();
    f.set_len(first_len + 5000).unwrap();
    drop(f);
    let store = LogStore::new(c);
    let p = store.open_partition(&pdir, "0").unwrap();
    assert_eq!(p.committed_seq(), 2000);
    assert_eq!(segment_files()[0].1, first_len, "recovery trims the closed segment");
    check_all(&p, 2000);
    let a = store.append_blocking(&p, vec![ev(2000, None)]).unwrap();
    assert_eq!((a.first_sequence_number, a.first_offset), (2000, end), "appends continue where the records end");
    check_all(&p, 2001);
}

#[test]
fn interior_corruption_refuses_to_open() {
    let (_dir, pdir) = seeded_partition(100);
    let seg = pdir.join(format!("{:020}.log", 0));
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(40)).unwrap();
    f.write_all(b"garbage!").unwrap();
    drop(f);
    let store = LogStore::new(cfg(1 << 20, 1 << 30));
    match store.open_partition(&pdir, "0") {
        Err(LogError::Corrupted { .. }) => {}
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[test]
fn retention_by_size_removes_whole_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let c = LogConfig { retention_bytes: Some(32 * 1024), ..cfg(1024, 8 * 1024) };
    let store = LogStore::new(c);
    let p = store.open_partition(dir.path().join("0"), "0").unwrap();
    fill(&store, &p, 3000, 50);
    // The writer applies retention on its periodic tick.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.info().begin_sequence_number == 0 && std::time::Instant::now() < deadline {
        store.append_blocking(&p, vec![ev(0, None)]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let begin = p.info().begin_sequence_number;
    assert!(begin > 0, "retention never ran");
    let first = p.read(0, 1, 1 << 20).unwrap();
    assert_eq!(first[0].sequence_number, begin);
    let size: u64 =
        std::fs::read_dir(dir.path().join("0")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(size <= 32 * 1024 + 16 * 1024, "size {size}");
}

#[test]
fn retention_by_time_removes_only_segments_older_than_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(2);
    let c = LogConfig {
        retention: Some(window),
        retention_check_interval: Duration::from_millis(100),
        fsync: FsyncPolicy::Never,
        ..cfg(1024, 8 * 1024)
    };
    let store = LogStore::new(c);
    let p = store.open_partition(dir.path().join("0"), "0").unwrap();
    let filled = std::time::Instant::now();
    fill(&store, &p, 3000, 50);
    let segments = || std::fs::read_dir(dir.path().join("0")).unwrap().count();
    assert!(segments() > 3, "the fill spans several segments");
    // Several sweeps run while the events are younger than the window: nothing may go.
    std::thread::sleep(Duration::from_millis(500));
    if filled.elapsed() < window {
        assert_eq!(p.info().begin_sequence_number, 0, "fresh segments were removed");
    }
    // Once the window has passed, the sweep removes every closed segment: all of them are old.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while p.info().begin_sequence_number == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let begin = p.info().begin_sequence_number;
    assert!(begin > 0, "retention by time never ran");
    assert!(filled.elapsed() >= window, "segments went before the window passed");
    assert_eq!(segments(), 1, "only the active segment remains");
    // The active segment is never removed and the log still appends after it.
    let first = p.read(begin, 1, 1 << 20).unwrap();
    assert_eq!(first[0].sequence_number, begin);
    let at = store.append_blocking(&p, vec![ev(3000, None)]).unwrap();
    assert_eq!(at.first_sequence_number, 3000);
}

#[test]
fn committed_watch_wakes_readers() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::new(LogConfig { fsync: FsyncPolicy::Never, ..Default::default() });
    let p = store.open_partition(dir.path().join("0"), "0").unwrap();
    let mut rx = p.subscribe();
    store.append_blocking(&p, vec![ev(1, None)]).unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);
}

/// A partition's own retention replaces the store's: with none in the store, a partition
/// opened with a short window loses its old segments and another keeps everything.
#[test]
fn a_partitions_own_retention_replaces_the_stores() {
    let dir = tempfile::tempdir().unwrap();
    let c = LogConfig {
        retention: None,
        retention_check_interval: Duration::from_millis(100),
        fsync: FsyncPolicy::Never,
        ..cfg(1024, 8 * 1024)
    };
    let store = LogStore::new(c);
    let short =
        store.open_partition_with_retention(dir.path().join("0"), "0", Some(Duration::from_millis(300))).unwrap();
    let kept = store.open_partition(dir.path().join("1"), "1").unwrap();
    fill(&store, &short, 2000, 50);
    fill(&store, &kept, 2000, 50);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while short.info().begin_sequence_number == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(short.info().begin_sequence_number > 0, "the partition's retention never ran");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(kept.info().begin_sequence_number, 0, "the store keeps everything");
}
