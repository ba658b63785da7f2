//! `ehub receive --checkpoint-store STORE`: an event processor that shares the hub's partitions
//! with every other processor on the same hub, consumer group and store, prints what it reads as
//! `receive` does, and checkpoints every `--checkpoint-every` events per partition and when it
//! stops gracefully (then releasing its partitions).

use crate::client::{consumer, parse_position, print_event, runtime, ReceiveArgs, Strategy};
use crate::{Output, Target};
use anyhow::{bail, Context, Result};
use ehub::checkpoint::CheckpointStore;
use ehub::processor::{EventProcessor, EventProcessorOptions, PartitionClient};
use ehub::{InMemoryCheckpointStore, LoadBalancingStrategy, ReceivedEventData};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Opens the store a `--checkpoint-store` value names.
pub(crate) async fn open_store(spec: &str, storage: Option<&str>) -> Result<Arc<dyn CheckpointStore>> {
    Ok(match spec.split_once(':') {
        None if spec == "memory" => Arc::new(InMemoryCheckpointStore::new()),
        Some(("sqlite", path)) if !path.is_empty() => Arc::new(
            ehub_checkpoint_sqlite::SqliteCheckpointStore::open(path)
                .await
                .with_context(|| format!("opening the checkpoint store {spec}"))?,
        ),
        Some(("blob", container)) if !container.is_empty() => {
            let connection_string = storage.unwrap_or_else(|| {
                eprintln!("ehub: no --storage-connection-string or AZURE_STORAGE_CONNECTION_STRING; using the development account at 127.0.0.1:10000");
                "UseDevelopmentStorage=true"
            });
            let store = ehub_checkpoint_blob::BlobCheckpointStore::from_connection_string(connection_string, container)
                .with_context(|| format!("the checkpoint store {spec}"))?;
            // Fail at start, with the reason, rather than in the first balancing cycle.
            if !store.container_exists().await.with_context(|| format!("the checkpoint store {spec}"))? {
                bail!("the checkpoint store {spec}: the container `{container}` does not exist; create it first");
            }
            Arc::new(store)
        }
        _ => bail!("--checkpoint-store '{spec}': use memory, sqlite:PATH or blob:CONTAINER"),
    })
}

fn seconds(what: &str, v: f64) -> Result<Duration> {
    if !(v.is_finite() && v > 0.0) {
        bail!("{what} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

/// What the partition readers share: output, the event count, and when the last event came.
struct Printer {
    output: Output,
    printed: AtomicU64,
    limit: u64,
    last_event: Mutex<tokio::time::Instant>,
    /// Set when --count is reached.
    done: CancellationToken,
}

impl Printer {
    /// Prints as many of `events` as --count allows; returns the last one printed.
    fn print<'a>(&self, events: &'a [ReceivedEventData]) -> Result<Option<&'a ReceivedEventData>> {
        if events.is_empty() {
            return Ok(None);
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut last = None;
        for e in events {
            let n = self.printed.fetch_add(1, Ordering::SeqCst);
            if n >= self.limit {
                self.done.cancel();
                break;
            }
            print_event(&mut out, self.output, e)?;
            last = Some(e);
            if n + 1 >= self.limit {
                self.done.cancel();
            }
        }
        out.flush()?;
        if let Ok(mut t) = self.last_event.lock() {
            *t = tokio::time::Instant::now();
        }
        Ok(last)
    }
}

/// Reads one partition until it is lost or `stop`; checkpoints every `every` events and, on
/// `stop`, the last event printed.
async fn read_partition(mut p: PartitionClient, printer: Arc<Printer>, every: u64, stop: CancellationToken) {
    let mut since_checkpoint = 0u64;
    let mut last: Option<ReceivedEventData> = None;
    let mut checkpointed = true;
    loop {
        let batch = tokio::select! {
            b = p.receive_batch(300, Duration::from_millis(500)) => b,
            _ = stop.cancelled() => break,
        };
        let events = match batch {
            Ok(events) => events,
            Err(e) => {
                // Lost to another processor (whose reader starts from the checkpoint it found):
                // no checkpoint now, it would move the new owner's. Any other error (a token
                // that lapsed, a partition gone): closing gives the partition back, and the
                // next load-balancing cycle opens it afresh from its checkpoint.
                tracing::info!(partition_id = %p.partition_id(), error = %e, "partition ended");
                p.close().await;
                return;
            }
        };
        match printer.print(&events) {
            Ok(Some(e)) => {
                since_checkpoint += events.len() as u64;
                last = Some(e.clone());
                checkpointed = false;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the output");
                break;
            }
        }
        if since_checkpoint >= every {
            if let Some(e) = &last {
                match p.update_checkpoint(e).await {
                    Ok(()) => (since_checkpoint, checkpointed) = (0, true),
                    Err(err) => tracing::warn!(partition_id = %p.partition_id(), error = %err, "checkpoint failed"),
                }
            }
        }
    }
    if let (Some(e), false) = (&last, checkpointed) {
        if let Err(err) = p.update_checkpoint(e).await {
            tracing::warn!(partition_id = %p.partition_id(), error = %err, "final checkpoint failed");
        }
    }
    p.close().await;
}

pub(crate) fn receive(t: &Target, a: &ReceiveArgs) -> Result<()> {
    let spec = a.checkpoint_store.clone().unwrap_or_default();
    if a.partition.is_some() {
        bail!("--partition and --checkpoint-store do not go together: the processor balances all partitions");
    }
    if a.checkpoint_every == 0 {
        bail!("--checkpoint-every must be at least 1");
    }
    let interval = seconds("--balance-interval", a.balance_interval)?;
    let expiry = seconds("--ownership-expiry", a.ownership_expiry)?;
    let idle = seconds("--timeout", a.timeout)?;
    let position = parse_position(&a.from, a.inclusive)?;
    runtime()?.block_on(async {
        let store = open_store(&spec, a.storage_connection_string.as_deref()).await?;
        let c = consumer(t, &a.consumer_group).await?;
        let options = EventProcessorOptions {
            strategy: match a.strategy {
                Strategy::Balanced => LoadBalancingStrategy::Balanced,
                Strategy::Greedy => LoadBalancingStrategy::Greedy,
            },
            load_balancing_interval: interval,
            ownership_expiry: expiry,
            default_start_position: position,
            checkpoint_namespace: a.checkpoint_namespace.clone(),
            ..Default::default()
        };
        let processor = EventProcessor::new(c.clone(), store, Some(options))?;
        let runner = {
            let p = processor.clone();
            tokio::spawn(async move { p.run().await })
        };
        let printer = Arc::new(Printer {
            output: t.output,
            printed: AtomicU64::new(0),
            limit: a.count.unwrap_or(u64::MAX),
            last_event: Mutex::new(tokio::time::Instant::now()),
            done: CancellationToken::new(),
        });
        let stop = CancellationToken::new();
        let mut readers = tokio::task::JoinSet::new();
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut idle_check = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                client = processor.next_partition_client() => match client {
                    Some(p) => {
                        tracing::info!(partition_id = %p.partition_id(), "partition claimed");
                        readers.spawn(read_partition(p, printer.clone(), a.checkpoint_every, stop.clone()));
                    }
                    None => break,
                },
                _ = printer.done.cancelled() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
                _ = idle_check.tick(), if !a.follow => {
                    let last = printer.last_event.lock().map(|t| *t).unwrap_or_else(|_| tokio::time::Instant::now());
                    if last.elapsed() >= idle {
                        break;
                    }
                }
            }
        }
        // Readers checkpoint what they printed, then the processor releases its partitions.
        stop.cancel();
        while readers.join_next().await.is_some() {}
        processor.shutdown();
        let released = runner.await.context("the processor task failed")?;
        c.close().await;
        if t.output == Output::Text {
            eprintln!("received {} events", printer.printed.load(Ordering::SeqCst).min(printer.limit));
        }
        released?;
        Ok(())
    })
}
