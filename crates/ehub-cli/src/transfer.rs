//! `ehub export` and `ehub import`: capture a partition's events as JSON lines (the format of
//! `receive --output json`), and send such lines back, so traffic can be recorded once and
//! replayed in tests.

use crate::client::{buffered_with_tally, consumer, event_json, parse_position, producer, runtime};
use crate::{Output, Target};
use anyhow::{bail, Context, Result};
use base64::Engine;
use ehub::buffered::EnqueueEventOptions;
use ehub::{EventData, EventPosition, OpenReceiverOptions, Value};
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    /// The partition to export.
    #[arg(long)]
    partition: String,
    /// Where to start: earliest, seq:N, offset:O or time:RFC3339 (exclusive for seq and offset).
    /// Ignored when --file already holds events: the export continues after the last one.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Where to stop: latest (the partition's last event when the export starts), seq:N
    /// (inclusive), or time:RFC3339 (events enqueued before it).
    #[arg(long, default_value = "latest")]
    until: String,
    /// Append the events to this file; when it holds events, continue after its last one.
    /// Default: stdout.
    #[arg(long)]
    file: Option<PathBuf>,
    /// The consumer group to read with.
    #[arg(long, default_value = "$Default")]
    consumer_group: String,
}

#[derive(clap::Args)]
pub(crate) struct ImportArgs {
    /// JSON lines as `export` or `receive --output json` write them. Default: stdin.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Send every event to this partition. Default: events with a partition key go by their key
    /// (the same partition on a hub with the same partition count), the others to the partition
    /// they came from.
    #[arg(long)]
    partition: Option<String>,
}

enum Until {
    Latest,
    Seq(i64),
    TimeMillis(i64),
}

fn parse_until(s: &str) -> Result<Until> {
    Ok(match s {
        "latest" => Until::Latest,
        _ => match s.split_once(':') {
            Some(("seq", n)) => Until::Seq(n.parse().with_context(|| format!("--until {s}: not a sequence number"))?),
            Some(("time", t)) => Until::TimeMillis(
                crate::timefmt::parse_rfc3339(t).with_context(|| format!("--until {s}: not an RFC 3339 time"))?,
            ),
            _ => bail!("--until '{s}': use latest, seq:N or time:RFC3339"),
        },
    })
}

/// The sequence number of the last event in a JSON-lines file, if it has one.
fn last_exported(path: &PathBuf) -> Result<Option<i64>> {
    let Ok(f) = std::fs::File::open(path) else { return Ok(None) };
    let mut last = None;
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}: a line is not JSON", path.display()))?;
        last = v["sequence_number"].as_i64().or(last);
    }
    Ok(last)
}

pub(crate) fn export(t: &Target, a: &ExportArgs) -> Result<()> {
    let until = parse_until(&a.until)?;
    let resume = match &a.file {
        Some(f) => last_exported(f)?,
        None => None,
    };
    let start = match resume {
        Some(seq) => EventPosition::SequenceNumber { value: seq, inclusive: false },
        None => parse_position(&a.from, false)?,
    };
    runtime()?.block_on(async {
        let c = consumer(t, &a.consumer_group).await?;
        let props = c.get_partition_properties(&a.partition).await?;
        let mut last = props.last_enqueued_sequence_number;
        if let Until::Seq(n) = until {
            last = last.min(n);
        }
        let mut out: Box<dyn Write> = match &a.file {
            Some(f) => Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(f)
                    .with_context(|| format!("opening {}", f.display()))?,
            )),
            None => Box::new(std::io::BufWriter::new(std::io::stdout())),
        };
        let mut count = 0u64;
        let mut first_last: Option<(i64, i64)> = None;
        let done_already = props.is_empty || resume.is_some_and(|r| r >= last);
        if !done_already {
            let opts = OpenReceiverOptions { start_position: start, ..Default::default() };
            let mut receiver = c.open_receiver_on_partition(&a.partition, Some(opts)).await?;
            'read: loop {
                let batch = receiver.receive_batch(1000, Duration::from_secs(1)).await?;
                if batch.is_empty() {
                    // Nothing after the start position (a time past the last event).
                    break;
                }
                for e in &batch {
                    let seq = e.sequence_number();
                    if seq > last {
                        break 'read;
                    }
                    if let Until::TimeMillis(t) = until {
                        if e.enqueued_time_millis() >= t {
                            break 'read;
                        }
                    }
                    writeln!(out, "{}", event_json(e))?;
                    count += 1;
                    first_last = Some((first_last.map_or(seq, |f| f.0), seq));
                    if seq >= last {
                        break 'read;
                    }
                }
            }
            receiver.close().await;
        }
        out.flush()?;
        c.close().await;
        let range = first_last.map_or_else(|| "none".to_owned(), |(f, l)| format!("{f}..={l}"));
        match t.output {
            Output::Json => eprintln!("{}", json!({"exported": count, "partition": a.partition, "sequence_numbers": range, "resumed": resume.is_some()})),
            Output::Text => eprintln!(
                "exported {count} events of partition {} (sequence numbers {range}){}",
                a.partition,
                if resume.is_some() { ", continuing the file" } else { "" }
            ),
        }
        Ok(())
    })
}

/// A JSON property value as an AMQP value: strings, integers (long), floats (double) and
/// booleans as such; anything else as its JSON text.
fn property_value(v: &serde_json::Value) -> Option<Value> {
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Long(i),
            None => Value::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        other => Value::String(other.to_string()),
    })
}

/// One exported line as an event and where it goes.
fn event_of(line: &str, n: usize, partition: Option<&String>) -> Result<(EventData, EnqueueEventOptions)> {
    let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("line {n}: not JSON"))?;
    let body = match (v["body_encoding"].as_str().unwrap_or("utf8"), &v["body"]) {
        ("utf8", serde_json::Value::String(s)) => s.clone().into_bytes(),
        ("base64", serde_json::Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .with_context(|| format!("line {n}: the body is not base64"))?,
        (enc, _) => bail!("line {n}: a body with encoding `{enc}` cannot be imported (only utf8 and base64)"),
    };
    let mut e = EventData::from(body);
    if let Some(props) = v["properties"].as_object() {
        for (k, pv) in props {
            if let Some(val) = property_value(pv) {
                e.set_property(k.clone(), val);
            }
        }
    }
    let key = v["partition_key"].as_str().map(str::to_owned);
    let route = match (partition, key) {
        (Some(p), _) => EnqueueEventOptions { partition_id: Some(p.clone()), partition_key: None },
        (None, Some(k)) => EnqueueEventOptions { partition_id: None, partition_key: Some(k) },
        (None, None) => {
            let p = v["partition_id"].as_str().with_context(|| format!("line {n}: no partition_id"))?;
            EnqueueEventOptions { partition_id: Some(p.to_owned()), partition_key: None }
        }
    };
    Ok((e, route))
}

pub(crate) fn import(t: &Target, a: &ImportArgs) -> Result<()> {
    let input: Box<dyn BufRead> = match &a.file {
        Some(f) => Box::new(std::io::BufReader::new(
            std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    runtime()?.block_on(async {
        let p = producer(t).await?;
        let (buffered, tally) = buffered_with_tally(&p).await?;
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let (e, route) = event_of(&line, i + 1, a.partition.as_ref())?;
            buffered.enqueue_event(e, Some(route)).await?;
        }
        buffered.close(true, None).await?;
        p.close().await;
        let sent = tally.sent.load(Ordering::Relaxed);
        let (failures, first) = tally.failures();
        match t.output {
            Output::Json => println!("{}", json!({"imported": sent, "failed": failures})),
            Output::Text => println!("imported {sent} events"),
        }
        match first {
            Some(e) => Err(anyhow::Error::new(e).context(format!("{failures} events could not be sent"))),
            None => Ok(()),
        }
    })
}
