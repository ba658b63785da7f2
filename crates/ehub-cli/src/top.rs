//! `ehub top`: a live view of an `ehub serve`, from its `/metrics`: rates in and out per
//! partition, last sequence numbers, receivers, connections and fsyncs.

use crate::admin::Admin;
use crate::{Output, Target};
use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Args)]
pub(crate) struct TopArgs {
    /// Seconds between samples (fractions allowed).
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many samples (default: until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
}

/// One scrape: series (name and labels) to value.
#[derive(Default)]
struct Scrape(BTreeMap<(String, Vec<(String, String)>), f64>);

/// Parses the Prometheus/OpenMetrics text format: `name{k="v",…} value`.
fn parse(text: &str) -> Scrape {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = match line.rsplit_once(' ') {
            Some((s, v)) => (s.trim(), v),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        out.insert((name.to_owned(), labels), value);
    }
    Scrape(out)
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((k.trim_start_matches(',').to_owned(), value));
        rest = &after[end..];
    }
    labels
}

impl Scrape {
    fn get(&self, name: &str) -> f64 {
        self.0.iter().filter(|((n, _), _)| n == name).map(|(_, v)| v).sum()
    }

    /// Values of `name` by the value of label `by` … keyed by (hub, partition).
    fn by_partition(&self, name: &str) -> BTreeMap<(String, u32), f64> {
        let mut out = BTreeMap::new();
        for ((n, labels), v) in &self.0 {
            if n != name {
                continue;
            }
            let label = |k: &str| labels.iter().find(|(lk, _)| lk == k).map(|(_, v)| v.clone());
            if let (Some(h), Some(p)) = (label("hub"), label("partition").and_then(|p| p.parse().ok())) {
                *out.entry((h, p)).or_insert(0.0) += v;
            }
        }
        out
    }
}

pub(crate) fn run(t: &Target, management: Option<&str>, a: &TopArgs) -> Result<()> {
    let admin = Admin::new(&t.connection_string, management)?;
    let interval = Duration::from_secs_f64(a.interval.max(0.05));
    let live = std::io::stdout().is_terminal() && t.output == Output::Text;
    let mut previous = parse(&admin.get_text("/metrics")?);
    let mut at = Instant::now();
    let mut n = 0;
    loop {
        std::thread::sleep(interval.saturating_sub(at.elapsed()));
        let now = parse(&admin.get_text("/metrics")?);
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        at = Instant::now();
        // Per-partition rates from two scrapes, each series indexed once.
        let rates = |name: &str| {
            let (now_v, before) = (now.by_partition(name), previous.by_partition(name));
            move |key: &(String, u32)| {
                (now_v.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)) / secs
            }
        };
        let (rate_in, rate_out) = (rates("ehub_events_in_total"), rates("ehub_events_out_total"));
        let last = now.by_partition("ehub_partition_last_sequence_number");
        let receivers = now.by_partition("ehub_receivers");
        let fsyncs = now.get("ehub_fsyncs_total") - previous.get("ehub_fsyncs_total");
        let fsync_s = now.get("ehub_fsync_duration_seconds_sum") - previous.get("ehub_fsync_duration_seconds_sum");
        let fsync_ms = if fsyncs > 0.0 { fsync_s / fsyncs * 1e3 } else { 0.0 };
        let rows: Vec<_> = last
            .iter()
            .map(|(key, seq)| {
                (key.clone(), rate_in(key), rate_out(key), *seq, receivers.get(key).copied().unwrap_or(0.0))
            })
            .collect();
        match t.output {
            Output::Json => {
                let partitions: Vec<_> = rows
                    .iter()
                    .map(|((hub, p), i, o, seq, r)| {
                        json!({"hub": hub, "partition": p.to_string(), "events_in_per_s": i, "events_out_per_s": o,
                               "last_sequence_number": seq, "receivers": r})
                    })
                    .collect();
                let v = json!({
                    "connections": now.get("ehub_amqp_connections"),
                    "links": now.get("ehub_amqp_links"),
                    "fsyncs_per_s": fsyncs / secs,
                    "fsync_mean_ms": fsync_ms,
                    "partitions": partitions,
                });
                println!("{v}");
            }
            Output::Text => {
                let mut s = String::new();
                if live {
                    s.push_str("\x1b[2J\x1b[H");
                }
                s += &format!(
                    "ehub top  connections {}  links {}  fsyncs {:.0}/s (mean {:.2} ms)\n\n",
                    now.get("ehub_amqp_connections"),
                    now.get("ehub_amqp_links"),
                    fsyncs / secs,
                    fsync_ms
                );
                s += &format!(
                    "{:<20} {:>9} {:>14} {:>14} {:>14} {:>9}\n",
                    "hub", "partition", "in events/s", "out events/s", "last seq", "receivers"
                );
                let (mut tin, mut tout) = (0.0, 0.0);
                for ((hub, p), i, o, seq, r) in &rows {
                    tin += i;
                    tout += o;
                    s += &format!("{hub:<20} {p:>9} {i:>14.0} {o:>14.0} {seq:>14} {r:>9}\n");
                }
                s += &format!("{:<20} {:>9} {tin:>14.0} {tout:>14.0}\n", "total", "");
                print!("{s}");
                if !live {
                    println!();
                }
            }
        }
        previous = now;
        n += 1;
        if a.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format_with_escaped_labels() {
        let s = parse(
            "# HELP x y\nehub_events_in_total{hub=\"eh1\",partition=\"0\"} 5\nehub_events_in_total{hub=\"eh1\",partition=\"1\"} 7\nehub_amqp_connections 2\nodd{a=\"q\\\"uote\"} 1\n# EOF\n",
        );
        assert_eq!(s.get("ehub_events_in_total"), 12.0);
        assert_eq!(s.get("ehub_amqp_connections"), 2.0);
        assert_eq!(s.by_partition("ehub_events_in_total")[&("eh1".to_owned(), 1)], 7.0);
        assert!(s.0.contains_key(&("odd".to_owned(), vec![("a".to_owned(), "q\"uote".to_owned())])));
    }
}
