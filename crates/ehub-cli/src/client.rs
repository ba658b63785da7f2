//! `ehub info`, `ehub send` and `ehub receive`, on the ehub client library.

use crate::timefmt::{format_millis, parse_rfc3339};
use crate::{Output, Target};
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use ehub::{
    ConsumerClient, EventData, EventDataBatchOptions, EventPosition, OpenReceiverOptions, ProducerClient,
    ReceiveOptions, ReceivedEventData, Value,
};
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

pub(crate) async fn producer(t: &Target) -> Result<ProducerClient> {
    Ok(ProducerClient::builder()
        .with_options(t.options.clone())
        .open_with_connection_string(&t.connection_string, t.hub.as_deref())
        .await?)
}

pub(crate) async fn consumer(t: &Target, group: &str) -> Result<ConsumerClient> {
    Ok(ConsumerClient::builder()
        .with_options(t.options.clone())
        .with_consumer_group(group)
        .open_with_connection_string(&t.connection_string, t.hub.as_deref())
        .await?)
}

fn time_millis(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

pub(crate) fn info(t: &Target) -> Result<()> {
    let entity_path = ehub_model::ConnectionString::parse(&t.connection_string).ok().and_then(|c| c.entity_path);
    if t.hub.is_none() && entity_path.is_none() {
        // No hub named and none to choose: list what there is, or say how to name one.
        let Some(hubs) = &t.known_hubs else {
            anyhow::bail!("no hub named: give --hub NAME, or EntityPath=NAME in the connection string");
        };
        match t.output {
            Output::Json => println!("{}", json!({ "hubs": hubs })),
            Output::Text => {
                println!("hubs: {}", hubs.join(", "));
                println!("`ehub info --hub NAME` shows one");
            }
        }
        return Ok(());
    }
    runtime()?.block_on(async {
        let p = producer(t).await?;
        let hub = p.get_eventhub_properties().await?;
        let mut parts = Vec::new();
        for id in &hub.partition_ids {
            parts.push(p.get_partition_properties(id).await?);
        }
        p.close().await;
        match t.output {
            Output::Json => {
                let partitions: Vec<_> = parts
                    .iter()
                    .map(|p| {
                        json!({
                            "id": p.id,
                            "beginning_sequence_number": p.beginning_sequence_number,
                            "last_enqueued_sequence_number": p.last_enqueued_sequence_number,
                            "last_enqueued_offset": p.last_enqueued_offset,
                            "last_enqueued_time_utc": format_millis(time_millis(p.last_enqueued_time_utc)),
                            "is_empty": p.is_empty,
                        })
                    })
                    .collect();
                let v = json!({
                    "name": hub.name,
                    "created_at": format_millis(time_millis(hub.created_at)),
                    "partition_ids": hub.partition_ids,
                    "partitions": partitions,
                });
                println!("{v}");
            }
            Output::Text => {
                println!("hub:        {}", hub.name);
                println!("created at: {}", format_millis(time_millis(hub.created_at)));
                println!("partitions: {}", hub.partition_ids.len());
                println!();
                println!(
                    "{:>9}  {:>14}  {:>14}  {:>14}  {:<24}  empty",
                    "partition", "first seq", "last seq", "last offset", "last enqueued"
                );
                for p in &parts {
                    let time =
                        if p.is_empty { "-".to_owned() } else { format_millis(time_millis(p.last_enqueued_time_utc)) };
                    println!(
                        "{:>9}  {:>14}  {:>14}  {:>14}  {:<24}  {}",
                        p.id,
                        p.beginning_sequence_number,
                        p.last_enqueued_sequence_number,
                        p.last_enqueued_offset,
                        time,
                        p.is_empty
                    );
                }
            }
        }
        Ok(())
    })
}

#[derive(clap::Args)]
pub(crate) struct SendArgs {
    /// Event bodies, one event each. Without bodies, --file or --count, stdin is read, one
    /// event per line.
    bodies: Vec<String>,
    /// Send to this partition.
    #[arg(long)]
    pub(crate) partition: Option<String>,
    /// Route by this partition key.
    #[arg(long, conflicts_with = "partition")]
    partition_key: Option<String>,
    /// Application property `key=value` (string value), repeatable.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Send each file's content as one event, repeatable.
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Send this many generated events.
    #[arg(long, conflicts_with_all = ["bodies", "files"])]
    pub(crate) count: Option<u64>,
    /// Size in bytes of generated events.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Events per batch (default: as many as fit into one message).
    #[arg(long)]
    batch: Option<usize>,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
}

pub(crate) fn parse_properties(props: &[String]) -> Result<Vec<(String, String)>> {
    props
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--property '{p}' is not KEY=VALUE"))
        })
        .collect()
}

/// A generated body of `size` bytes that starts with the event's index.
pub(crate) fn generated_body(i: u64, size: usize) -> Vec<u8> {
    let mut b = format!("{i:010}").into_bytes();
    b.resize(size, b'.');
    b.truncate(size);
    b
}

pub(crate) fn send(t: &Target, a: &SendArgs) -> Result<()> {
    let props = parse_properties(&a.properties)?;
    if a.batch == Some(0) || a.in_flight == 0 {
        bail!("--batch and --in-flight must be at least 1");
    }
    let events: Box<dyn Iterator<Item = Result<Vec<u8>>>> =
        if let Some(n) = a.count {
            let size = a.size;
            Box::new((0..n).map(move |i| Ok(generated_body(i, size))))
        } else if !a.bodies.is_empty() || !a.files.is_empty() {
            let files = a.files.clone();
            Box::new(a.bodies.clone().into_iter().map(|b| Ok(b.into_bytes())).chain(
                files.into_iter().map(|f| std::fs::read(&f).with_context(|| format!("reading {}", f.display()))),
            ))
        } else {
            if std::io::stdin().is_terminal() {
                eprintln!("reading events from stdin, one per line (Ctrl-D to end)");
            }
            Box::new(std::io::stdin().lock().lines().map(|l| l.context("reading stdin").map(String::into_bytes)))
        };
    let total_hint = a.count;
    let streamed = a.count.is_some() || (a.bodies.is_empty() && a.files.is_empty());
    if streamed && a.batch.is_none() {
        return send_buffered(t, a, &props, events);
    }
    runtime()?.block_on(async {
        let p = producer(t).await?;
        let started = Instant::now();
        let opts = EventDataBatchOptions {
            partition_id: a.partition.clone(),
            partition_key: a.partition_key.clone(),
            max_size_in_bytes: None,
        };
        let mut inflight = tokio::task::JoinSet::new();
        let (mut sent, mut bytes) = (0u64, 0u64);
        let mut progress = Progress::new("sent", total_hint);
        let mut batch = p.create_batch(Some(opts.clone())).await?;
        let per_batch = a.batch.unwrap_or(usize::MAX);
        let mut pending = 0u64;
        let mut pending_bytes = 0u64;
        let flush = |batch: ehub::EventDataBatch,
                     inflight: &mut tokio::task::JoinSet<ehub::Result<(u64, u64)>>,
                     n: u64,
                     b: u64| {
            let p = p.clone();
            inflight.spawn(async move { p.send_batch(&batch).await.map(|_| (n, b)) });
        };
        for body in events {
            let body = body?;
            let len = body.len() as u64;
            let mut e = EventData::from(body);
            for (k, v) in &props {
                e.set_property(k.clone(), v.as_str());
            }
            if batch.len() >= per_batch || !batch.try_add(&e)? {
                let full = std::mem::replace(&mut batch, p.create_batch(Some(opts.clone())).await?);
                flush(full, &mut inflight, pending, pending_bytes);
                pending = 0;
                pending_bytes = 0;
                while inflight.len() >= a.in_flight {
                    let (n, b) = inflight.join_next().await.expect("non-empty")??;
                    sent += n;
                    bytes += b;
                    progress.update(sent);
                }
                if !batch.try_add(&e)? {
                    bail!("an event of {len} bytes does not fit into an empty batch");
                }
            }
            pending += 1;
            pending_bytes += len;
        }
        if !batch.is_empty() {
            flush(batch, &mut inflight, pending, pending_bytes);
        }
        while let Some(r) = inflight.join_next().await {
            let (n, b) = r??;
            sent += n;
            bytes += b;
            progress.update(sent);
        }
        progress.finish();
        let secs = started.elapsed().as_secs_f64();
        p.close().await;
        let target = match (&a.partition, &a.partition_key) {
            (Some(p), _) => format!("partition {p}"),
            (None, Some(k)) => format!("partition key '{k}'"),
            _ => "the hub (round-robin)".into(),
        };
        match t.output {
            Output::Json => println!(
                "{}",
                json!({"sent": sent, "bytes": bytes, "seconds": secs, "hub": p.eventhub_name(),
                       "partition": a.partition, "partition_key": a.partition_key})
            ),
            Output::Text => {
                println!("sent {sent} events ({bytes} bytes) to {} {target} in {secs:.3} s", p.eventhub_name())
            }
        }
        Ok(())
    })
}

/// Streams generated events or stdin through the buffered producer: full batches per
/// partition, each partition's events in order, and a line typed at a terminal goes out within
/// a second rather than when a batch fills.
fn send_buffered(
    t: &Target,
    a: &SendArgs,
    props: &[(String, String)],
    events: Box<dyn Iterator<Item = Result<Vec<u8>>>>,
) -> Result<()> {
    use ehub::buffered::EnqueueEventOptions;
    use std::sync::atomic::Ordering;
    runtime()?.block_on(async {
        let p = producer(t).await?;
        let (buffered, tally) = buffered_with_tally(&p).await?;
        let route = EnqueueEventOptions { partition_id: a.partition.clone(), partition_key: a.partition_key.clone() };
        let started = Instant::now();
        let mut progress = Progress::new("sent", a.count);
        for body in events {
            let mut e = EventData::from(body?);
            for (k, v) in props {
                e.set_property(k.clone(), v.as_str());
            }
            buffered.enqueue_event(e, Some(route.clone())).await?;
            progress.update(tally.sent.load(Ordering::Relaxed));
        }
        buffered.close(true, None).await?;
        progress.finish();
        let secs = started.elapsed().as_secs_f64();
        let (sent, bytes) = (tally.sent.load(Ordering::Relaxed), tally.bytes.load(Ordering::Relaxed));
        let (failures, first) = tally.failures();
        let target = match (&a.partition, &a.partition_key) {
            (Some(p), _) => format!("partition {p}"),
            (None, Some(k)) => format!("partition key '{k}'"),
            _ => "the hub (spread over its partitions)".into(),
        };
        match t.output {
            Output::Json => println!(
                "{}",
                json!({"sent": sent, "failed": failures, "bytes": bytes, "seconds": secs, "hub": p.eventhub_name(),
                       "partition": a.partition, "partition_key": a.partition_key})
            ),
            Output::Text => {
                println!("sent {sent} events ({bytes} bytes) to {} {target} in {secs:.3} s", p.eventhub_name())
            }
        }
        match first {
            Some(e) => Err(anyhow::Error::new(e).context(format!("{failures} events could not be sent"))),
            None => Ok(()),
        }
    })
}

/// What a buffered producer reported: events and body bytes sent, and failures with the first
/// error.
pub(crate) struct Tally {
    pub sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::Mutex<(u64, Option<ehub::Error>)>>,
}

impl Tally {
    /// Events that failed and the first error, taken out.
    pub(crate) fn failures(&self) -> (u64, Option<ehub::Error>) {
        std::mem::take(&mut *self.failed.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A buffered producer on `p` whose callbacks count into a [`Tally`]. Batches fill to the
/// message size rather than to a count.
pub(crate) async fn buffered_with_tally(p: &ProducerClient) -> Result<(ehub::buffered::BufferedProducerClient, Tally)> {
    use ehub::buffered::{BufferedProducerClient, BufferedProducerOptions};
    use std::sync::atomic::Ordering;
    let tally = Tally { sent: Default::default(), bytes: Default::default(), failed: Default::default() };
    let (s, b, f) = (tally.sent.clone(), tally.bytes.clone(), tally.failed.clone());
    let buffered = BufferedProducerClient::builder()
        .with_buffered_options(BufferedProducerOptions { max_buffer_length: 20_000, ..Default::default() })
        .with_on_send_succeeded(move |events, _| {
            s.fetch_add(events.len() as u64, Ordering::Relaxed);
            b.fetch_add(events.iter().map(|e| e.body().map_or(0, |x| x.len() as u64)).sum(), Ordering::Relaxed);
        })
        .with_on_send_failed(move |events, _, error| {
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            f.0 += events.len() as u64;
            f.1.get_or_insert(error);
        })
        .open_on(p.clone())
        .await?;
    Ok((buffered, tally))
}

/// A progress bar on stderr (indicatif), drawn only when stderr is a terminal: nothing extra
/// when output is piped or read by a program.
pub(crate) struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    pub(crate) fn new(what: &'static str, total: Option<u64>) -> Self {
        let target = if std::io::stderr().is_terminal() {
            indicatif::ProgressDrawTarget::stderr_with_hz(4)
        } else {
            indicatif::ProgressDrawTarget::hidden()
        };
        let bar = match total {
            Some(t) => {
                let bar = indicatif::ProgressBar::with_draw_target(Some(t), target);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "[{bar:30}] {pos}/{len} {msg} ({percent}%, {per_sec}, eta {eta})",
                    )
                    .expect("a valid template")
                    .progress_chars("#>."),
                );
                bar
            }
            None => {
                let bar = indicatif::ProgressBar::with_draw_target(None, target);
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{spinner} {pos} {msg} ({per_sec})")
                        .expect("a valid template"),
                );
                bar
            }
        };
        bar.set_message(what);
        Progress { bar }
    }

    pub(crate) fn update(&mut self, n: u64) {
        self.bar.set_position(n);
    }

    pub(crate) fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[derive(clap::Args)]
pub(crate) struct ReceiveArgs {
    /// Read this partition (default: all partitions).
    #[arg(long)]
    pub(crate) partition: Option<String>,
    /// Consumer group.
    #[arg(long, default_value = "$Default")]
    pub(crate) consumer_group: String,
    /// Start position: earliest, latest, seq:N, offset:O or time:RFC3339.
    #[arg(long, default_value = "earliest")]
    pub(crate) from: String,
    /// Include the event at the start position (for seq, offset and time).
    #[arg(long)]
    pub(crate) inclusive: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Stop when no event arrives for this many seconds (ignored with --follow).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) timeout: f64,
    /// Keep waiting for new events (until --count or Ctrl-C).
    #[arg(long)]
    pub(crate) follow: bool,
    /// Owner level (epoch) of the receivers.
    #[arg(long)]
    owner_level: Option<i64>,
    /// Run an event processor sharing the partitions with every other processor (ours or an
    /// official SDK's) on the same hub, group and store: memory, sqlite:PATH or blob:CONTAINER
    /// (Azure Blob Storage, in the layout every official SDK uses). Starts each partition after
    /// its checkpoint, else at --from.
    #[arg(long, value_name = "STORE")]
    pub(crate) checkpoint_store: Option<String>,
    /// With --checkpoint-store: checkpoint every N events per partition (and on a graceful stop).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub(crate) checkpoint_every: u64,
    /// With --checkpoint-store: balanced (one new partition per cycle) or greedy.
    #[arg(long, value_enum, default_value_t = Strategy::Balanced)]
    pub(crate) strategy: Strategy,
    /// With --checkpoint-store: seconds between load-balancing cycles (fractions allowed).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub(crate) balance_interval: f64,
    /// With --checkpoint-store: seconds an ownership lasts without renewal (at least 3 intervals).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub(crate) ownership_expiry: f64,
    /// With --checkpoint-store blob:CONTAINER: the storage account's connection string
    /// (default: the development account at 127.0.0.1:10000, Azurite's and `ehub serve`'s).
    #[arg(long, env = "AZURE_STORAGE_CONNECTION_STRING", hide_env_values = true, value_name = "CONNECTION_STRING")]
    pub(crate) storage_connection_string: Option<String>,
    /// With --checkpoint-store: the namespace as the store's records name it (default: the
    /// host, with :port when the connection string has one, as the Python SDK writes it; the
    /// JavaScript SDK writes the host alone against an emulator).
    #[arg(long, value_name = "NAME")]
    pub(crate) checkpoint_namespace: Option<String>,
}

/// How a processor takes on partitions.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Strategy {
    /// One new partition per cycle.
    Balanced,
    /// The whole fair share at once.
    Greedy,
}

pub(crate) fn parse_position(from: &str, inclusive: bool) -> Result<EventPosition> {
    Ok(match from {
        "earliest" => EventPosition::Earliest,
        "latest" => EventPosition::Latest,
        _ => match from.split_once(':') {
            Some(("seq", n)) => EventPosition::SequenceNumber {
                value: n.parse().with_context(|| format!("--from seq:{n}: not a number"))?,
                inclusive,
            },
            Some(("offset", o)) if !o.is_empty() => EventPosition::Offset { value: o.to_owned(), inclusive },
            Some(("time", ts)) => EventPosition::EnqueuedTime {
                millis: parse_rfc3339(ts).with_context(|| format!("--from time:{ts}: not an RFC 3339 time"))?,
                inclusive,
            },
            _ => bail!("--from '{from}': use earliest, latest, seq:N, offset:O or time:RFC3339"),
        },
    })
}

pub(crate) fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Ubyte(n) => json!(n),
        Value::Ushort(n) => json!(n),
        Value::Uint(n) => json!(n),
        Value::Ulong(n) => json!(n),
        Value::Byte(n) => json!(n),
        Value::Short(n) => json!(n),
        Value::Int(n) => json!(n),
        Value::Long(n) => json!(n),
        Value::Float(f) => json!(f),
        Value::Double(f) => json!(f),
        Value::String(s) => json!(s),
        Value::Symbol(s) => json!(s.as_str()),
        Value::Char(c) => json!(c.to_string()),
        Value::Timestamp(t) => json!(format_millis(t.0)),
        Value::Binary(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Uuid(u) => json!(uuid_text(u)),
        Value::List(l) => serde_json::Value::Array(l.iter().map(value_json).collect()),
        Value::Array(a) => serde_json::Value::Array(a.items.iter().map(value_json).collect()),
        Value::Map(m) => serde_json::Value::Object(m.iter().map(|(k, v)| (key_text(k), value_json(v))).collect()),
        other => json!(format!("{other:?}")),
    }
}

fn uuid_text(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn key_text(k: &Value) -> String {
    k.as_text().map(str::to_owned).unwrap_or_else(|| value_json(k).to_string())
}

pub(crate) fn event_json(e: &ReceivedEventData) -> serde_json::Value {
    let (body, encoding) = match e.body() {
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (json!(s), "utf8"),
            Err(_) => (json!(base64::engine::general_purpose::STANDARD.encode(b)), "base64"),
        },
        None => match &e.raw_amqp_message().body {
            ehub::AmqpBody::Value(v) => (value_json(v), "amqp-value"),
            ehub::AmqpBody::Sequence(s) => {
                (serde_json::Value::Array(s.iter().flatten().map(value_json).collect()), "amqp-sequence")
            }
            _ => (serde_json::Value::Null, "none"),
        },
    };
    let props: serde_json::Map<String, serde_json::Value> =
        e.properties().iter().map(|(k, v)| (key_text(k), value_json(v))).collect();
    json!({
        "partition_id": e.partition_id(),
        "sequence_number": e.sequence_number(),
        "offset": e.offset(),
        "enqueued_time": format_millis(e.enqueued_time_millis()),
        "partition_key": e.partition_key(),
        "body": body,
        "body_encoding": encoding,
        "properties": props,
    })
}

/// Writes one received event as `receive` prints it: a JSON object per line, or a text line.
pub(crate) fn print_event(out: &mut impl Write, output: Output, e: &ReceivedEventData) -> Result<()> {
    match output {
        Output::Json => writeln!(out, "{}", event_json(e))?,
        Output::Text => {
            let body = match e.body() {
                Some(b) => String::from_utf8_lossy(b).into_owned(),
                None => format!("{:?}", e.raw_amqp_message().body),
            };
            let props = if e.properties().is_empty() {
                String::new()
            } else {
                let p: Vec<String> =
                    e.properties().iter().map(|(k, v)| format!("{}={}", key_text(k), value_json(v))).collect();
                format!("  {{{}}}", p.join(", "))
            };
            writeln!(
                out,
                "[{} #{} {}] {body}{props}",
                e.partition_id(),
                e.sequence_number(),
                format_millis(e.enqueued_time_millis())
            )?;
        }
    }
    Ok(())
}

pub(crate) fn receive(t: &Target, a: &ReceiveArgs) -> Result<()> {
    if a.checkpoint_store.is_some() {
        return crate::process::receive(t, a);
    }
    let position = parse_position(&a.from, a.inclusive)?;
    if a.timeout.is_nan() || a.timeout <= 0.0 {
        bail!("--timeout must be positive");
    }
    runtime()?.block_on(async {
        let c = consumer(t, &a.consumer_group).await?;
        let opts = OpenReceiverOptions { start_position: position, owner_level: a.owner_level, ..Default::default() };
        let mut batches = c.receive_all(ReceiveOptions { partition_id: a.partition.clone(), receiver: opts }).await?;
        let idle = Duration::from_secs_f64(a.timeout);
        let limit = a.count.unwrap_or(u64::MAX);
        let mut n = 0u64;
        let stdout = std::io::stdout();
        // A bar only when the events go elsewhere than the terminal (a file, a pipe).
        let mut progress = (!stdout.is_terminal()).then(|| Progress::new("received", a.count));
        let result = loop {
            if n >= limit {
                break Ok(());
            }
            let next = if a.follow {
                tokio::select! {
                    b = batches.next() => b,
                    _ = tokio::signal::ctrl_c() => break Ok(()),
                }
            } else {
                match tokio::time::timeout(idle, batches.next()).await {
                    Ok(b) => b,
                    Err(_) => break Ok(()),
                }
            };
            let events = match next {
                Some(Ok(events)) => events,
                Some(Err(e)) => break Err(anyhow::Error::from(e)),
                None => break Ok(()),
            };
            let mut out = stdout.lock();
            for e in events {
                if n >= limit {
                    break;
                }
                n += 1;
                print_event(&mut out, t.output, &e)?;
            }
            out.flush()?;
            if let Some(p) = progress.as_mut() {
                p.update(n);
            }
        };
        if let Some(p) = progress.as_mut() {
            p.finish();
        }
        batches.close().await;
        c.close().await;
        if t.output == Output::Text {
            eprintln!("received {n} events");
        }
        result
    })
}
