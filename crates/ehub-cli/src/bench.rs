//! `ehub bench send|receive|e2e|process|idle-links`: throughput, latency and memory of the client
//! library.

use crate::client::{consumer, generated_body, parse_position, producer, runtime, Progress};
use crate::{Output, Target};
use anyhow::{bail, Result};
use ehub::{EventData, EventDataBatchOptions, EventPosition, OpenReceiverOptions, ProducerClient, SendEventOptions};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Acknowledged sends: events/s, MB/s and latency per send.
    Send(BenchArgs),
    /// Reading a partition: events/s and MB/s.
    Receive(BenchArgs),
    /// Producer to consumer latency at a fixed rate.
    E2e(BenchArgs),
    /// The event processor end to end: every partition from the earliest, with checkpoints.
    Process(ProcessBenchArgs),
    /// Client memory: the RSS a producer adds while holding idle partition links.
    IdleLinks(IdleLinksArgs),
}

#[derive(clap::Args, Clone)]
pub(crate) struct IdleLinksArgs {
    /// Partition links to open (one event is sent on each, then they idle).
    #[arg(long, default_value_t = 32)]
    links: usize,
    /// Seconds to stay idle before measuring.
    #[arg(long, default_value_t = 2.0)]
    idle: f64,
}

#[derive(clap::Args, Clone)]
pub(crate) struct ProcessBenchArgs {
    /// Events to process, over all partitions (the hub must hold them; send some first).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Where the processor keeps ownership and checkpoints: memory, sqlite:PATH, blob:CONTAINER.
    /// Each run writes its records under a namespace of its own, so runs never resume each other.
    #[arg(long, default_value = "memory", value_name = "STORE")]
    checkpoint_store: String,
    /// Checkpoint every K events per partition.
    #[arg(long, default_value_t = 1000, value_name = "K")]
    checkpoint_every: u64,
    /// Consumer group.
    #[arg(long, default_value = "$Default")]
    consumer_group: String,
    /// Receiver prefetch per partition (default: the processor's).
    #[arg(long)]
    prefetch: Option<u32>,
    /// Most events handed to the handler at once.
    #[arg(long, default_value_t = 300)]
    batch: usize,
    /// With blob:CONTAINER: the storage connection string (default: the development account).
    #[arg(long, env = "AZURE_STORAGE_CONNECTION_STRING", hide_env_values = true)]
    storage_connection_string: Option<String>,
}

#[derive(clap::Args, Clone)]
pub(crate) struct BenchArgs {
    /// Events to send or receive (default 100000 unless --duration is given).
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Event size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Events per send (1 = single-event sends).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Use this partition.
    #[arg(long, conflicts_with = "partitions")]
    partition: Option<String>,
    /// Spread over the first N partitions (default: all for send, 0 for receive and e2e).
    #[arg(long)]
    partitions: Option<usize>,
    /// Sends in flight per partition.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Start position for receive: earliest, latest, seq:N, offset:O, time:RFC3339.
    #[arg(long, default_value = "earliest")]
    from: String,
    /// Consumer group for receive and e2e.
    #[arg(long, default_value = "$Default")]
    consumer_group: String,
    /// Events per second for e2e.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Receiver prefetch (link credit).
    #[arg(long, default_value_t = ehub::DEFAULT_PREFETCH)]
    prefetch: u32,
    /// send: through the buffered producer, events enqueued one by one from --tasks tasks,
    /// then a flush; events/s from the first enqueue to the last success callback.
    #[arg(long)]
    buffered: bool,
    /// Tasks enqueueing, with --buffered.
    #[arg(long, default_value_t = 8)]
    tasks: usize,
}

impl BenchArgs {
    fn limit(&self) -> (u64, Option<Duration>) {
        let d = self.duration.map(Duration::from_secs_f64);
        (self.count.unwrap_or(if d.is_some() { u64::MAX } else { 100_000 }), d)
    }
}

pub(crate) fn run(t: &Target, cmd: &BenchCommand) -> Result<()> {
    runtime()?.block_on(async {
        match cmd {
            BenchCommand::Send(a) => send(t, a).await,
            BenchCommand::Receive(a) => receive(t, a).await,
            BenchCommand::E2e(a) => e2e(t, a).await,
            BenchCommand::Process(a) => process(t, a).await,
            BenchCommand::IdleLinks(a) => idle_links(t, a).await,
        }
    })
}

/// What the broker says about itself (ehub brokers name their fsync policy).
async fn broker_info(p: &ProducerClient) -> (String, String) {
    let props = p.connection_properties().await.unwrap_or_default();
    let get = |k: &str| props.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone());
    let product = get("product").unwrap_or_else(|| "unknown".into());
    let fsync = get(ehub_model::EHUB_FSYNC_PROPERTY).unwrap_or_else(|| "unknown (not an ehub broker)".into());
    (product, fsync)
}

async fn partitions(p: &ProducerClient, a: &BenchArgs, all_by_default: bool) -> Result<Vec<String>> {
    if let Some(p) = &a.partition {
        return Ok(vec![p.clone()]);
    }
    let ids = p.get_partition_ids().await?;
    let n = a.partitions.unwrap_or(if all_by_default { ids.len() } else { 1 });
    if n == 0 || n > ids.len() {
        bail!("--partitions {n}: the hub has {} partitions", ids.len());
    }
    Ok(ids.into_iter().take(n).collect())
}

fn percentiles(mut v: Vec<u64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    json!({"p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "max": v[v.len() - 1], "samples": v.len()})
}

struct Report {
    mode: &'static str,
    settings: serde_json::Value,
    product: String,
    fsync: String,
    events: u64,
    bytes: u64,
    seconds: f64,
    latency_us: serde_json::Value,
    latency_label: &'static str,
}

impl Report {
    fn print(&self, output: Output) {
        let eps = self.events as f64 / self.seconds.max(1e-9);
        let mbps = self.bytes as f64 / self.seconds.max(1e-9) / 1e6;
        match output {
            Output::Json => println!(
                "{}",
                json!({
                    "mode": self.mode,
                    "settings": self.settings,
                    "broker": {"product": self.product, "fsync": self.fsync},
                    "events": self.events,
                    "bytes": self.bytes,
                    "seconds": self.seconds,
                    "events_per_s": eps,
                    "mb_per_s": mbps,
                    "latency_us": self.latency_us,
                    "latency_of": self.latency_label,
                })
            ),
            Output::Text => {
                println!("ehub bench {}  settings: {}", self.mode, self.settings);
                println!("broker: {}, fsync={}", self.product, self.fsync);
                println!(
                    "result: {} events in {:.3} s = {:.0} events/s, {:.1} MB/s of payload",
                    self.events, self.seconds, eps, mbps
                );
                if !self.latency_us.is_null() {
                    let l = &self.latency_us;
                    println!(
                        "latency of {} (µs): p50 {}  p99 {}  p999 {}  max {}",
                        self.latency_label, l["p50"], l["p99"], l["p999"], l["max"]
                    );
                }
            }
        }
    }
}

async fn send(t: &Target, a: &BenchArgs) -> Result<()> {
    if a.buffered {
        return send_buffered(t, a).await;
    }
    if a.batch == 0 || a.in_flight == 0 {
        bail!("--batch and --in-flight must be at least 1");
    }
    let p = producer(t).await?;
    let (product, fsync) = broker_info(&p).await;
    let parts = partitions(&p, a, true).await?;
    let (limit, duration) = a.limit();
    let body = generated_body(0, a.size);
    let claimed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let mut tasks = tokio::task::JoinSet::new();
    for pid in &parts {
        let mut template = p
            .create_batch(Some(EventDataBatchOptions { partition_id: Some(pid.clone()), ..Default::default() }))
            .await?;
        for _ in 0..a.batch {
            if !template.try_add(&EventData::from(body.clone()))? {
                bail!("{} events of {} bytes do not fit into one message", a.batch, a.size);
            }
        }
        for _ in 0..a.in_flight {
            let (p, template, claimed, done, body, pid) =
                (p.clone(), template.clone(), claimed.clone(), done.clone(), body.clone(), pid.clone());
            let n = a.batch as u64;
            tasks.spawn(async move {
                let mut lat = Vec::new();
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) || claimed.fetch_add(n, Ordering::Relaxed) >= limit
                    {
                        return Ok::<_, ehub::Error>(lat);
                    }
                    let t0 = Instant::now();
                    if n == 1 {
                        let o = SendEventOptions { partition_id: Some(pid.clone()), ..Default::default() };
                        p.send_event(EventData::from(body.clone()), Some(o)).await?;
                    } else {
                        p.send_batch(&template).await?;
                    }
                    lat.push(t0.elapsed().as_micros() as u64);
                    done.fetch_add(n, Ordering::Relaxed);
                }
            });
        }
    }
    let mut progress = Progress::new("sent", (limit != u64::MAX).then_some(limit));
    let mut lat = Vec::new();
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(r) => lat.extend(r??),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(250)) => progress.update(done.load(Ordering::Relaxed)),
        }
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let events = done.load(Ordering::Relaxed);
    p.close().await;
    Report {
        mode: "send",
        settings: json!({"count": a.count, "duration": a.duration, "size": a.size, "batch": a.batch,
                         "partitions": parts, "in_flight": a.in_flight}),
        product,
        fsync,
        events,
        bytes: events * a.size as u64,
        seconds,
        latency_us: percentiles(lat),
        latency_label: if a.batch == 1 { "each acknowledged send" } else { "each acknowledged batch" },
    }
    .print(t.output);
    Ok(())
}

async fn receive(t: &Target, a: &BenchArgs) -> Result<()> {
    let p = producer(t).await?;
    let (product, fsync) = broker_info(&p).await;
    let parts = partitions(&p, a, false).await?;
    if parts.len() != 1 {
        bail!("bench receive reads one partition; pass --partition");
    }
    let (limit, duration) = a.limit();
    let c = consumer(t, &a.consumer_group).await?;
    let opts = OpenReceiverOptions {
        start_position: parse_position(&a.from, false)?,
        prefetch: a.prefetch.max(1),
        ..Default::default()
    };
    let mut r = c.open_receiver_on_partition(&parts[0], Some(opts)).await?;
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let (mut events, mut bytes) = (0u64, 0u64);
    let mut progress = Progress::new("received", (limit != u64::MAX).then_some(limit));
    while events < limit && deadline.is_none_or(|d| Instant::now() < d) {
        let batch = r.receive_batch(a.prefetch.max(1) as usize, Duration::from_secs(10)).await?;
        if batch.is_empty() {
            if a.count.is_some() {
                bail!("only {events} of {limit} events arrived: the partition holds fewer (send some first)");
            }
            break;
        }
        let take = batch.len().min((limit - events) as usize);
        for e in &batch[..take] {
            bytes += e.body().map_or(0, |b| b.len() as u64);
        }
        events += take as u64;
        progress.update(events);
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    r.close().await;
    c.close().await;
    p.close().await;
    Report {
        mode: "receive",
        settings: json!({"count": a.count, "duration": a.duration, "partition": parts[0], "from": a.from,
                         "prefetch": a.prefetch}),
        product,
        fsync,
        events,
        bytes,
        seconds,
        latency_us: serde_json::Value::Null,
        latency_label: "",
    }
    .print(t.output);
    Ok(())
}

async fn e2e(t: &Target, a: &BenchArgs) -> Result<()> {
    if a.rate == 0 || a.size < 16 {
        bail!("--rate must be positive and --size at least 16 (the send time travels in the body)");
    }
    let p = producer(t).await?;
    let (product, fsync) = broker_info(&p).await;
    let parts = partitions(&p, a, false).await?;
    let pid = parts[0].clone();
    let (limit, duration) = a.limit();
    let c = consumer(t, &a.consumer_group).await?;
    let opts = OpenReceiverOptions {
        start_position: EventPosition::Latest,
        prefetch: a.prefetch.max(1),
        ..Default::default()
    };
    let mut r = c.open_receiver_on_partition(&pid, Some(opts)).await?;
    let epoch = Instant::now();
    let size = a.size;
    let rate = a.rate;
    let mut sender = Some({
        let (p, pid) = (p.clone(), pid.clone());
        tokio::spawn(async move {
            // Sends `rate` events per second, a tick every millisecond, each event on its own.
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = 0u64;
            let mut inflight = tokio::task::JoinSet::new();
            let stop_at = duration.map(|d| epoch + d);
            while sent < limit && stop_at.is_none_or(|s| Instant::now() < s) {
                tick.tick().await;
                let due = ((epoch.elapsed().as_secs_f64() * rate as f64) as u64).min(limit);
                while sent < due {
                    let mut body = (epoch.elapsed().as_nanos() as u64).to_be_bytes().to_vec();
                    body.resize(size, b'.');
                    let (p, pid) = (p.clone(), pid.clone());
                    inflight.spawn(async move {
                        let o = SendEventOptions { partition_id: Some(pid), ..Default::default() };
                        p.send_event(EventData::from(body), Some(o)).await
                    });
                    sent += 1;
                }
                while let Some(r) = inflight.try_join_next() {
                    r??;
                }
            }
            while let Some(r) = inflight.join_next().await {
                r??;
            }
            Ok::<u64, anyhow::Error>(sent)
        })
    });
    let mut lat = Vec::new();
    let mut received = 0u64;
    let mut bytes = 0u64;
    let mut progress = Progress::new("received", (limit != u64::MAX).then_some(limit));
    let mut sent_total = None;
    loop {
        if let Some(s) = sent_total {
            if received >= s {
                break;
            }
        }
        let batch = r.receive_batch(1000, Duration::from_millis(200)).await?;
        let now = epoch.elapsed().as_nanos() as u64;
        for e in &batch {
            if let Some(b) = e.body() {
                if b.len() >= 8 {
                    let t0 = u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
                    lat.push(now.saturating_sub(t0) / 1000);
                }
                bytes += b.len() as u64;
            }
        }
        received += batch.len() as u64;
        progress.update(received);
        if let Some(h) = sender.take_if(|h| h.is_finished()) {
            sent_total = Some(h.await??);
        } else if batch.is_empty() && sent_total.is_some() {
            break;
        }
    }
    progress.finish();
    let seconds = epoch.elapsed().as_secs_f64();
    c.close().await;
    p.close().await;
    if received < sent_total.unwrap_or(0) {
        bail!("only {received} of {} events arrived", sent_total.unwrap_or(0));
    }
    Report {
        mode: "e2e",
        settings: json!({"count": a.count, "duration": a.duration, "size": a.size, "rate": a.rate, "partition": pid}),
        product,
        fsync,
        events: received,
        bytes,
        seconds,
        latency_us: percentiles(lat),
        latency_label: "producer to consumer",
    }
    .print(t.output);
    Ok(())
}

/// `bench send --buffered`: --tasks tasks enqueue single events, spread over the chosen
/// partitions by event number, then flush; the clock runs from the first enqueue to the last
/// success.
async fn send_buffered(t: &Target, a: &BenchArgs) -> Result<()> {
    use ehub::buffered::{BufferedProducerClient, EnqueueEventOptions};
    if a.tasks == 0 {
        bail!("--tasks must be at least 1");
    }
    let p = producer(t).await?;
    let (product, fsync) = broker_info(&p).await;
    let parts = Arc::new(partitions(&p, a, true).await?);
    if a.duration.is_some() || a.count.is_none() {
        bail!("bench send --buffered measures a fixed number of events: give --count, not --duration");
    }
    let limit = a.limit().0;
    let reported = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let all_reported = Arc::new(tokio::sync::Notify::new());
    let (r, f, n) = (reported.clone(), failed.clone(), all_reported.clone());
    let (r2, n2) = (reported.clone(), all_reported.clone());
    let buffered = BufferedProducerClient::builder()
        .with_on_send_succeeded(move |events, _| {
            if r.fetch_add(events.len() as u64, Ordering::Relaxed) + events.len() as u64 >= limit {
                n.notify_one();
            }
        })
        .with_on_send_failed(move |events, _, error| {
            tracing::warn!(error = %error, events = events.len(), "buffered send failed");
            f.fetch_add(events.len() as u64, Ordering::Relaxed);
            if r2.fetch_add(events.len() as u64, Ordering::Relaxed) + events.len() as u64 >= limit {
                n2.notify_one();
            }
        })
        .open_on(p.clone())
        .await?;
    let body = bytes::Bytes::from(generated_body(0, a.size));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..a.tasks as u64 {
        let (buffered, parts, body) = (buffered.clone(), parts.clone(), body.clone());
        let share = limit / a.tasks as u64 + u64::from(task < limit % a.tasks as u64);
        tasks.spawn(async move {
            let routes: Vec<EnqueueEventOptions> = parts
                .iter()
                .map(|id| EnqueueEventOptions { partition_id: Some(id.clone()), ..Default::default() })
                .collect();
            for i in 0..share {
                let route = routes[((task + i) % routes.len() as u64) as usize].clone();
                buffered.enqueue_event(EventData::from(body.clone()), Some(route)).await?;
            }
            Ok::<_, ehub::Error>(())
        });
    }
    let mut progress = Progress::new("reported", Some(limit));
    while let Some(r) = tasks.join_next().await {
        r??;
        progress.update(reported.load(Ordering::Relaxed));
    }
    // Nothing more to enqueue: send the partial batches now, as a program ending its stream
    // does, rather than timing their max_wait_time.
    buffered.flush(None).await?;
    while reported.load(Ordering::Relaxed) < limit {
        tokio::select! {
            _ = all_reported.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => progress.update(reported.load(Ordering::Relaxed)),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();
    buffered.close(true, None).await?;
    let failures = failed.load(Ordering::Relaxed);
    if failures > 0 {
        bail!("{failures} of {limit} events went to on_error (see the log with --log warn)");
    }
    Report {
        mode: "send-buffered",
        settings: json!({"count": limit, "size": a.size, "partitions": parts.as_slice(), "tasks": a.tasks}),
        product,
        fsync,
        events: limit,
        bytes: limit * a.size as u64,
        seconds,
        latency_us: serde_json::Value::Null,
        latency_label: "",
    }
    .print(t.output);
    Ok(())
}

/// What every partition's processor adds to: events, payload bytes, checkpoint write times.
struct ProcessTally {
    events: AtomicU64,
    bytes: AtomicU64,
    checkpoint_us: std::sync::Mutex<Vec<u64>>,
    limit: u64,
    done: tokio_util::sync::CancellationToken,
}

/// One partition: counts, and checkpoints every K events and at its end.
struct BenchPartition {
    tally: Arc<ProcessTally>,
    every: u64,
    since: u64,
    last: Option<ehub::ReceivedEventData>,
}

impl BenchPartition {
    async fn checkpoint(&mut self, ctx: &ehub::processor::PartitionContext) -> ehub::Result<()> {
        if let Some(e) = self.last.take() {
            let t0 = Instant::now();
            ctx.update_checkpoint(&e).await?;
            let us = t0.elapsed().as_micros() as u64;
            if let Ok(mut v) = self.tally.checkpoint_us.lock() {
                v.push(us);
            }
        }
        self.since = 0;
        Ok(())
    }
}

#[async_trait::async_trait]
impl ehub::processor::PartitionProcessor for BenchPartition {
    async fn process_events(
        &mut self,
        events: Vec<ehub::ReceivedEventData>,
        ctx: &ehub::processor::PartitionContext,
    ) -> ehub::Result<()> {
        let n = events.len() as u64;
        let bytes: u64 = events.iter().map(|e| e.body().map_or(0, |b| b.len() as u64)).sum();
        self.since += n;
        self.last = events.into_iter().next_back();
        if self.since >= self.every {
            self.checkpoint(ctx).await?;
        }
        self.tally.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.tally.events.fetch_add(n, Ordering::Relaxed) + n >= self.tally.limit {
            self.tally.done.cancel();
        }
        Ok(())
    }

    async fn close(&mut self, ctx: &ehub::processor::PartitionContext, _reason: ehub::processor::CloseReason) {
        if let Err(e) = self.checkpoint(ctx).await {
            tracing::warn!(partition_id = %ctx.partition_id(), error = %e, "final checkpoint failed");
        }
    }

    async fn process_error(&mut self, error: ehub::Error, ctx: &ehub::processor::PartitionContext) {
        tracing::warn!(partition_id = %ctx.partition_id(), error = %error, "processing failed");
    }
}

async fn process(t: &Target, a: &ProcessBenchArgs) -> Result<()> {
    if a.count == 0 || a.checkpoint_every == 0 || a.batch == 0 {
        bail!("--count, --checkpoint-every and --batch must be at least 1");
    }
    let p = producer(t).await?;
    let (product, fsync) = broker_info(&p).await;
    let mut available = 0u64;
    let ids = p.get_partition_ids().await?;
    for id in &ids {
        let props = p.get_partition_properties(id).await?;
        if !props.is_empty {
            available += (props.last_enqueued_sequence_number - props.beginning_sequence_number + 1).max(0) as u64;
        }
    }
    if available < a.count {
        bail!("the hub holds {available} events, fewer than --count {}: send some first", a.count);
    }
    let store = crate::process::open_store(&a.checkpoint_store, a.storage_connection_string.as_deref()).await?;
    let c = consumer(t, &a.consumer_group).await?;
    let defaults = ehub::processor::EventProcessorOptions::default();
    let prefetch = a.prefetch.unwrap_or(defaults.prefetch);
    let options = ehub::processor::EventProcessorOptions {
        strategy: ehub::LoadBalancingStrategy::Greedy,
        load_balancing_interval: Duration::from_secs(1),
        ownership_expiry: Duration::from_secs(10),
        default_start_position: EventPosition::Earliest,
        prefetch,
        max_batch_size: a.batch,
        // A namespace of this run's own: earlier runs' checkpoints in the same store are not
        // resumed from, and their ownerships do not get in the way.
        checkpoint_namespace: Some(format!("bench-{}", uuid::Uuid::new_v4().simple())),
        ..defaults
    };
    let processor = ehub::processor::EventProcessor::new(c.clone(), store, Some(options))?;
    let tally = Arc::new(ProcessTally {
        events: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        checkpoint_us: std::sync::Mutex::new(Vec::new()),
        limit: a.count,
        done: tokio_util::sync::CancellationToken::new(),
    });
    let started = Instant::now();
    let run = {
        let (p, tally, every) = (processor.clone(), tally.clone(), a.checkpoint_every);
        tokio::spawn(async move {
            p.run_with_factory(move |_| BenchPartition { tally: tally.clone(), every, since: 0, last: None }).await
        })
    };
    let mut progress = Progress::new("processed", Some(a.count));
    loop {
        tokio::select! {
            _ = tally.done.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => progress.update(tally.events.load(Ordering::Relaxed)),
        }
        if run.is_finished() {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish();
    processor.shutdown();
    run.await??;
    c.close().await;
    p.close().await;
    let events = tally.events.load(Ordering::Relaxed);
    let checkpoints = std::mem::take(&mut *tally.checkpoint_us.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Report {
        mode: "process",
        settings: json!({"count": a.count, "checkpoint_store": a.checkpoint_store, "checkpoint_every": a.checkpoint_every,
                         "partitions": ids.len(), "prefetch": prefetch, "batch": a.batch,
                         "checkpoints": checkpoints.len()}),
        product,
        fsync,
        events,
        bytes: tally.bytes.load(Ordering::Relaxed),
        seconds,
        latency_us: percentiles(checkpoints),
        latency_label: "each checkpoint write",
    }
    .print(t.output);
    Ok(())
}

/// Resident set size of this process in bytes (Linux: /proc/self/statm; 4 KiB pages).
fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(pages * 4096)
}

async fn idle_links(t: &Target, a: &IdleLinksArgs) -> Result<()> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let before = rss_bytes()?;
    let p = producer(t).await?;
    let ids = p.get_partition_ids().await?;
    if ids.len() < a.links {
        bail!("--links {}: the hub has only {} partitions", a.links, ids.len());
    }
    let connected = rss_bytes()?;
    for pid in ids.iter().take(a.links) {
        let o = SendEventOptions { partition_id: Some(pid.clone()), ..Default::default() };
        p.send_event(EventData::from(generated_body(0, 100)), Some(o)).await?;
    }
    tokio::time::sleep(Duration::from_secs_f64(a.idle)).await;
    let after = rss_bytes()?;
    let (product, fsync) = broker_info(&p).await;
    match t.output {
        Output::Json => println!(
            "{}",
            json!({
                "mode": "idle-links",
                "links": a.links,
                "broker": {"product": product, "fsync": fsync},
                "rss_before_bytes": before,
                "rss_connected_bytes": connected,
                "rss_with_links_bytes": after,
                "added_by_producer_bytes": after.saturating_sub(before),
                "added_by_links_bytes": after.saturating_sub(connected),
            })
        ),
        Output::Text => {
            println!("ehub bench idle-links  links: {}  broker: {product}, fsync={fsync}", a.links);
            println!(
                "RSS: before the producer {:.2} MiB, connected {:.2} MiB, with {} idle partition links {:.2} MiB",
                mib(before),
                mib(connected),
                a.links,
                mib(after)
            );
            println!(
                "result: the producer adds {:.2} MiB, of which the links add {:.2} MiB",
                mib(after.saturating_sub(before)),
                mib(after.saturating_sub(connected))
            );
        }
    }
    p.close().await;
    Ok(())
}
