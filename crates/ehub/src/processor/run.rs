//! The event processor: load-balancing cycles over a checkpoint store, and a partition client
//! for each partition it wins (the pull shape of the official Rust and Go SDKs).

use super::{LoadBalancer, LoadBalancingStrategy};
use crate::checkpoint::{Checkpoint, CheckpointStore, Ownership};
use crate::{
    ConsumerClient, Error, ErrorKind, EventPosition, EventReceiver, OpenReceiverOptions, ReceivedEventData, Result,
};
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Options of an [`EventProcessor`].
#[derive(Debug, Clone)]
pub struct EventProcessorOptions {
    /// Balanced (default) or greedy.
    pub strategy: LoadBalancingStrategy,
    /// Time between load-balancing cycles (default 10 s); each wait is this times a random factor
    /// between 0.8 and 1.3, so that processors started together do not stay in step.
    pub load_balancing_interval: Duration,
    /// How long an ownership lasts without renewal (default 60 s, at least 3 intervals).
    pub ownership_expiry: Duration,
    /// The most events requested ahead per partition (default
    /// [`crate::DEFAULT_PREFETCH`]; see [`OpenReceiverOptions::prefetch`]).
    pub prefetch: u32,
    /// The most bytes of events requested ahead per partition (default 4 MiB; see
    /// [`OpenReceiverOptions::prefetch_bytes`]).
    pub prefetch_bytes: u64,
    /// Where a partition without a checkpoint starts (default: the latest event, as the
    /// official SDKs do).
    pub default_start_position: EventPosition,
    /// Start positions of particular partitions without a checkpoint.
    pub start_positions: HashMap<String, EventPosition>,
    /// Ask for the partitions' last-enqueued properties with every event.
    pub track_last_enqueued_event_properties: bool,
    /// This instance's owner id (default: a new UUID).
    pub owner_id: Option<String>,
    /// The namespace as the store's records name it (default:
    /// [`ConsumerClient::checkpoint_namespace`]: the host, with `:port` when the connection
    /// string names a port, as the Python SDK writes it). Against an emulator-style endpoint the
    /// JavaScript SDK leaves the port out, so to share a store with JavaScript processors there,
    /// set the host alone. Against Azure every SDK writes the plain host name.
    pub checkpoint_namespace: Option<String>,
    /// Push shape: the most events handed to a handler at once (default 300).
    pub max_batch_size: usize,
    /// Push shape: how long to wait for events before handing over an empty batch; `None`
    /// (default) never hands over empty batches.
    pub max_wait_time: Option<Duration>,
}

impl Default for EventProcessorOptions {
    fn default() -> Self {
        EventProcessorOptions {
            strategy: LoadBalancingStrategy::Balanced,
            load_balancing_interval: Duration::from_secs(10),
            ownership_expiry: Duration::from_secs(60),
            prefetch: crate::consumer::DEFAULT_PREFETCH,
            prefetch_bytes: crate::consumer::DEFAULT_PREFETCH_BYTES,
            default_start_position: EventPosition::Latest,
            start_positions: HashMap::new(),
            track_last_enqueued_event_properties: false,
            owner_id: None,
            checkpoint_namespace: None,
            max_batch_size: 300,
            max_wait_time: None,
        }
    }
}

/// A partition this instance holds: the record it last wrote, and the signal that ends its
/// partition client when the partition is lost or the processor stops.
struct Held {
    record: Ownership,
    lost: CancellationToken,
}

struct Shared {
    consumer: ConsumerClient,
    store: Arc<dyn CheckpointStore>,
    options: EventProcessorOptions,
    balancer: LoadBalancer,
    namespace: String,
    held: Mutex<HashMap<String, Held>>,
    stop: CancellationToken,
    /// One token per partition client alive: a stop releases the partitions only once their
    /// clients are done (so that their last checkpoints land before another processor reads them).
    clients: TaskTracker,
    /// Where cycle failures go besides the log (the push shape's `process_error`).
    errors: Mutex<Option<mpsc::Sender<Error>>>,
}

/// How long a stop waits for partition clients to finish before it releases their partitions.
const CLIENTS_GRACE: Duration = Duration::from_secs(30);

impl Shared {
    /// Gives a partition back (owner id `""`) if this instance still holds it, so that the next
    /// cycle, here or elsewhere, opens it afresh from its checkpoint.
    async fn give_back(&self, partition_id: &str) {
        let record = match self.held.lock() {
            Ok(mut held) => held.remove(partition_id),
            Err(_) => None,
        };
        if let Some(h) = record {
            h.lost.cancel();
            let released = Ownership { owner_id: String::new(), ..h.record };
            if let Err(e) = self.store.claim_ownerships(&[released]).await {
                warn!(owner_id = %self.balancer.owner_id, partition_id, error = %e, "could not release the partition");
            }
        }
    }

    fn report(&self, e: Error) {
        warn!(owner_id = %self.balancer.owner_id, error = %e, "load-balancing cycle failed");
        if let Ok(sink) = self.errors.lock() {
            if let Some(tx) = sink.as_ref() {
                let _ = tx.try_send(e);
            }
        }
    }
}

/// Reads every partition of a hub for a consumer group, sharing them with the other processors
/// (ours or the official SDKs') that use the same checkpoint store.
///
/// Run [`EventProcessor::run`] in a task; take the partitions it wins with
/// [`EventProcessor::next_partition_client`]; stop it with [`EventProcessor::shutdown`], which
/// makes `run` release every partition it holds and return.
///
/// ```no_run
/// # async fn demo() -> ehub::Result<()> {
/// use ehub::{ConsumerClient, InMemoryCheckpointStore};
/// use ehub::processor::{EventProcessor, EventProcessorOptions};
/// use std::sync::Arc;
///
/// let cs = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;\
///           SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
/// let consumer = ConsumerClient::from_connection_string(cs, Some("eh1"), None).await?;
/// let processor = EventProcessor::new(consumer, Arc::new(InMemoryCheckpointStore::new()), None)?;
/// let runner = { let p = processor.clone(); tokio::spawn(async move { p.run().await }) };
/// while let Some(mut partition) = processor.next_partition_client().await {
///     tokio::spawn(async move {
///         while let Ok(events) = partition.receive_batch(100, std::time::Duration::from_secs(1)).await {
///             if let Some(last) = events.last() {
///                 let _ = partition.update_checkpoint(last).await;
///             }
///         }
///     });
/// }
/// # runner.await.unwrap()?; Ok(()) }
/// ```
#[derive(Clone)]
pub struct EventProcessor {
    shared: Arc<Shared>,
    clients: Arc<tokio::sync::Mutex<mpsc::Receiver<PartitionClient>>>,
    client_tx: mpsc::Sender<PartitionClient>,
}

impl std::fmt::Debug for EventProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProcessor").field("owner_id", &self.shared.balancer.owner_id).finish_non_exhaustive()
    }
}

/// Partition clients waiting to be taken.
const HANDOFF: usize = 1024;

impl EventProcessor {
    /// Sends cycle failures to `tx` as well as to the log.
    pub(crate) fn set_error_sink(&self, tx: mpsc::Sender<Error>) {
        if let Ok(mut sink) = self.shared.errors.lock() {
            *sink = Some(tx);
        }
    }

    /// The pull shape's `process_error`: failed load-balancing cycles (the store or the hub
    /// unreachable, a refused key, a missing container) arrive here as they happen, besides the
    /// log, while the processor keeps retrying at each interval. Up to 64 wait; more are dropped
    /// until some are taken. A second call replaces the first receiver.
    ///
    /// ```no_run
    /// # async fn f(processor: ehub::processor::EventProcessor) {
    /// let mut errors = processor.subscribe_errors();
    /// tokio::spawn(async move {
    ///     while let Some(e) = errors.recv().await {
    ///         eprintln!("processor: {e} (transient: {})", e.is_transient());
    ///     }
    /// });
    /// # }
    /// ```
    pub fn subscribe_errors(&self) -> mpsc::Receiver<Error> {
        let (tx, rx) = mpsc::channel(64);
        self.set_error_sink(tx);
        rx
    }

    pub(crate) fn options(&self) -> &EventProcessorOptions {
        &self.shared.options
    }

    /// A processor reading `consumer`'s hub and consumer group, keeping ownership and
    /// checkpoints in `store`.
    pub fn new(
        consumer: ConsumerClient,
        store: Arc<dyn CheckpointStore>,
        options: Option<EventProcessorOptions>,
    ) -> Result<Self> {
        let options = options.unwrap_or_default();
        if options.load_balancing_interval.is_zero() {
            return Err(Error::new(ErrorKind::InvalidArgument, "the load-balancing interval must be positive"));
        }
        if options.ownership_expiry < options.load_balancing_interval * 3 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the ownership expiry ({:?}) must be at least three load-balancing intervals ({:?}): \
                     otherwise ownerships lapse between renewals",
                    options.ownership_expiry, options.load_balancing_interval
                ),
            ));
        }
        let owner_id = options.owner_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let balancer = LoadBalancer::new(owner_id, options.strategy, options.ownership_expiry);
        let namespace = options.checkpoint_namespace.clone().unwrap_or_else(|| consumer.checkpoint_namespace());
        let (client_tx, client_rx) = mpsc::channel(HANDOFF);
        Ok(EventProcessor {
            shared: Arc::new(Shared {
                consumer,
                store,
                options,
                balancer,
                namespace,
                held: Mutex::new(HashMap::new()),
                stop: CancellationToken::new(),
                clients: TaskTracker::new(),
                errors: Mutex::new(None),
            }),
            clients: Arc::new(tokio::sync::Mutex::new(client_rx)),
            client_tx,
        })
    }

    /// This instance's owner id in the checkpoint store.
    pub fn owner_id(&self) -> &str {
        &self.shared.balancer.owner_id
    }

    /// The partitions this instance holds now.
    pub fn owned_partitions(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.shared.held.lock().map(|h| h.keys().cloned().collect()).unwrap_or_default();
        ids.sort();
        ids
    }

    /// The next partition this instance has won, or `None` once it has stopped.
    pub async fn next_partition_client(&self) -> Option<PartitionClient> {
        let mut rx = self.clients.lock().await;
        tokio::select! {
            c = rx.recv() => c,
            _ = self.shared.stop.cancelled() => None,
        }
    }

    /// Asks [`EventProcessor::run`] to release every partition and return.
    pub fn shutdown(&self) {
        self.shared.stop.cancel();
    }

    /// Runs load-balancing cycles until [`EventProcessor::shutdown`]; then releases every held
    /// partition (owner id `""`) so that other processors take them at their next cycle, and
    /// returns. A cycle that fails (the store or the hub unreachable) is logged and retried at
    /// the next interval; partitions whose renewal fails stay held until they expire.
    pub async fn run(&self) -> Result<()> {
        let s = &self.shared;
        info!(owner_id = %s.balancer.owner_id, entity = %s.consumer.eventhub_name(), consumer_group = %s.consumer.consumer_group(), "event processor started");
        loop {
            if let Err(e) = self.cycle().await {
                s.report(e);
            }
            let factor = rand::thread_rng().gen_range(0.8..1.3);
            let wait = s.options.load_balancing_interval.mul_f64(factor);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = s.stop.cancelled() => break,
            }
        }
        self.release_all().await
    }

    /// One cycle: list, plan, claim; hand out clients for new partitions, end those lost.
    async fn cycle(&self) -> Result<()> {
        let s = &self.shared;
        let (hub, group) = (s.consumer.eventhub_name().to_owned(), s.consumer.consumer_group().to_owned());
        let partition_ids = s.consumer.get_partition_ids().await?;
        let ownerships = s.store.list_ownerships(&s.namespace, &hub, &group).await?;
        let template = Ownership {
            namespace: s.namespace.clone(),
            event_hub: hub.clone(),
            consumer_group: group.clone(),
            partition_id: String::new(),
            owner_id: s.balancer.owner_id.clone(),
            etag: None,
            last_modified: None,
        };
        let plan = s.balancer.plan(&partition_ids, &ownerships, &template, SystemTime::now());
        let won = if plan.is_empty() { Vec::new() } else { s.store.claim_ownerships(&plan).await? };
        let won_ids: Vec<&str> = won.iter().map(|o| o.partition_id.as_str()).collect();
        let mut fresh = Vec::new();
        {
            let mut held = s.held.lock().map_err(|_| Error::new(ErrorKind::EventHub, "processor state poisoned"))?;
            // Held before but not renewed now: someone else has it.
            let lost: Vec<String> = held.keys().filter(|p| !won_ids.contains(&p.as_str())).cloned().collect();
            for p in lost {
                if let Some(h) = held.remove(&p) {
                    info!(owner_id = %s.balancer.owner_id, partition_id = %p, "ownership lost");
                    h.lost.cancel();
                }
            }
            for o in won {
                match held.get_mut(&o.partition_id) {
                    Some(h) => h.record = o,
                    None => fresh.push(o),
                }
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let checkpoints = s.store.list_checkpoints(&s.namespace, &hub, &group).await?;
        for o in fresh {
            let start = start_position(
                &s.options,
                checkpoints.iter().find(|c| c.partition_id == o.partition_id),
                &o.partition_id,
            );
            let receiver_options = OpenReceiverOptions {
                start_position: start.clone(),
                owner_level: Some(0),
                prefetch: s.options.prefetch,
                prefetch_bytes: s.options.prefetch_bytes,
                track_last_enqueued_event_properties: s.options.track_last_enqueued_event_properties,
                identifier: Some(s.balancer.owner_id.clone()),
            };
            let receiver = match s.consumer.open_receiver_on_partition(&o.partition_id, Some(receiver_options)).await {
                Ok(r) => r,
                Err(e) => {
                    // Give the partition back so that it is not renewed while nobody reads it.
                    warn!(owner_id = %s.balancer.owner_id, partition_id = %o.partition_id, error = %e, "could not open the partition; releasing it");
                    let _ = s.store.claim_ownerships(&[Ownership { owner_id: String::new(), ..o }]).await;
                    continue;
                }
            };
            debug!(owner_id = %s.balancer.owner_id, partition_id = %o.partition_id, start = ?start, "partition claimed");
            let lost = s.stop.child_token();
            let client = PartitionClient {
                partition_id: o.partition_id.clone(),
                shared: Arc::clone(&self.shared),
                _alive: s.clients.token(),
                receiver,
                store: Arc::clone(&s.store),
                template: Checkpoint {
                    namespace: s.namespace.clone(),
                    event_hub: hub.clone(),
                    consumer_group: group.clone(),
                    partition_id: o.partition_id.clone(),
                    offset: None,
                    sequence_number: None,
                },
                lost: lost.clone(),
            };
            if let Ok(mut held) = s.held.lock() {
                held.insert(o.partition_id.clone(), Held { record: o, lost });
            }
            if self.client_tx.send(client).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn release_all(&self) -> Result<()> {
        let s = &self.shared;
        // End every partition client, let them finish (their last checkpoints), then release.
        if let Ok(held) = s.held.lock() {
            held.values().for_each(|h| h.lost.cancel());
        }
        // Clients won but never taken (a claim just before the stop, nobody left to take it)
        // would hold the wait below: drop them.
        {
            let mut unclaimed = self.clients.lock().await;
            while unclaimed.try_recv().is_ok() {}
        }
        s.clients.close();
        if tokio::time::timeout(CLIENTS_GRACE, s.clients.wait()).await.is_err() {
            warn!(owner_id = %s.balancer.owner_id, "partition clients still open after {CLIENTS_GRACE:?}; releasing their partitions anyway");
        }
        let records: Vec<Ownership> = match s.held.lock() {
            Ok(mut held) => held.drain().map(|(_, h)| Ownership { owner_id: String::new(), ..h.record }).collect(),
            Err(_) => Vec::new(),
        };
        if !records.is_empty() {
            let released = s.store.claim_ownerships(&records).await?;
            info!(owner_id = %s.balancer.owner_id, released = released.len(), "event processor stopped; partitions released");
        }
        Ok(())
    }
}

/// Where a newly won partition starts: after its checkpoint (by sequence number, else by offset),
/// else at its configured or the default start position.
fn start_position(
    options: &EventProcessorOptions,
    checkpoint: Option<&Checkpoint>,
    partition_id: &str,
) -> EventPosition {
    if let Some(c) = checkpoint {
        if let Some(seq) = c.sequence_number {
            return EventPosition::SequenceNumber { value: seq, inclusive: false };
        }
        if let Some(offset) = &c.offset {
            return EventPosition::Offset { value: offset.clone(), inclusive: false };
        }
    }
    options.start_positions.get(partition_id).cloned().unwrap_or_else(|| options.default_start_position.clone())
}

/// One partition won by an [`EventProcessor`]: read its events and record checkpoints. It ends
/// (with [`ErrorKind::ConsumerDisconnected`]) when another processor takes the partition or this
/// one stops.
pub struct PartitionClient {
    partition_id: String,
    shared: Arc<Shared>,
    /// Keeps a stop's release waiting until this client is done.
    _alive: TaskTrackerToken,
    receiver: EventReceiver,
    store: Arc<dyn CheckpointStore>,
    template: Checkpoint,
    lost: CancellationToken,
}

impl std::fmt::Debug for PartitionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionClient").field("partition_id", &self.partition_id).finish_non_exhaustive()
    }
}

impl PartitionClient {
    /// The partition.
    pub fn partition_id(&self) -> &str {
        &self.partition_id
    }

    fn ownership_lost(&self) -> Error {
        Error::new(
            ErrorKind::ConsumerDisconnected,
            format!(
                "partition {}: ownership ended (taken by another processor, or this one stopped)",
                self.partition_id
            ),
        )
    }

    /// Up to `max` events, waiting at most `max_wait` for the first; an error once the partition
    /// is no longer this processor's.
    pub async fn receive_batch(&mut self, max: usize, max_wait: Duration) -> Result<Vec<ReceivedEventData>> {
        if self.lost.is_cancelled() {
            return Err(self.ownership_lost());
        }
        tokio::select! {
            r = self.receiver.receive_batch(max, max_wait) => r,
            _ = self.lost.cancelled() => Err(self.ownership_lost()),
        }
    }

    /// Records `event` as processed: a restarted or another processor continues after it.
    pub async fn update_checkpoint(&self, event: &ReceivedEventData) -> Result<()> {
        self.context().update_checkpoint(event).await
    }

    /// Whether the partition is no longer this processor's (taken by another, or this one is
    /// stopping).
    pub fn is_ownership_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Whether the store says another processor holds the partition now (its link was taken
    /// by that processor's receiver before this one's cycle noticed the claim).
    pub(crate) async fn taken_by_another(&self) -> bool {
        let s = &self.shared;
        let t = &self.template;
        let Ok(ownerships) = s.store.list_ownerships(&t.namespace, &t.event_hub, &t.consumer_group).await else {
            return false;
        };
        let now = SystemTime::now();
        ownerships.iter().any(|o| {
            o.partition_id == self.partition_id
                && !o.is_released()
                && o.owner_id != s.balancer.owner_id
                && o.last_modified
                    .is_some_and(|t| now.duration_since(t).unwrap_or_default() < s.options.ownership_expiry)
        })
    }

    /// Whether this processor is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        self.shared.stop.is_cancelled()
    }

    /// A context for handlers: the partition's names and its checkpoint writer.
    pub(crate) fn context(&self) -> super::PartitionContext {
        super::PartitionContext { store: Arc::clone(&self.store), template: self.template.clone() }
    }

    /// Closes the partition's receiver. A partition this processor still holds is given back
    /// (owner id `""`), so that the next load-balancing cycle, here or in another processor,
    /// opens it afresh from its checkpoint: close a client whose `receive_batch` failed, and
    /// the partition is read again rather than left owned and unread.
    pub async fn close(self) {
        self.receiver.close().await;
        if !self.lost.is_cancelled() {
            self.shared.give_back(&self.partition_id).await;
        }
    }
}
