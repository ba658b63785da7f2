//! Retention: whole segments are removed when they are older than the retention time or when
//! the partition is larger than its size limit. The active segment is never removed.

use crate::partition::Partition;
use crate::LogConfig;

pub(crate) fn apply(p: &Partition, cfg: &LogConfig, now_ms: i64) {
    let mut removed = Vec::new();
    {
        let mut st = p.lock();
        loop {
            if st.segments.len() <= 1 {
                break;
            }
            let total: u64 = st.segments.iter().map(|s| s.size).sum();
            let oldest = &st.segments[0];
            let too_old =
                p.retention.or(cfg.retention).is_some_and(|r| oldest.last_time < now_ms - r.as_millis() as i64);
            let too_big = cfg.retention_bytes.is_some_and(|b| total > b);
            if !(too_old || too_big) {
                break;
            }
            let seg = st.segments.remove(0);
            let begin = st.segments[0].base_seq;
            while st.cache.front().is_some_and(|c| c.first_seq < begin) {
                if let Some(c) = st.cache.pop_front() {
                    st.cache_bytes -= c.data.len();
                }
            }
            removed.push(seg);
        }
    }
    for seg in removed {
        tracing::info!(partition_id = %p.id, segment = %seg.path.display(), "retention removed segment");
        if let Err(e) = std::fs::remove_file(&seg.path) {
            tracing::warn!(partition_id = %p.id, error = %e, "could not remove expired segment");
        }
    }
}
