//! [`BufferedProducerClient`]: enqueue events and forget them; the client packs them into full
//! batches per partition, sends them in the background and reports each event once, to
//! `on_success` or `on_error`.
//!
//! The shape of the official Rust crate's `BufferedProducerClient` (0.16) and the option names
//! of Python's `EventHubProducerClient(buffered_mode=True)`:
//!
//! - per partition, a buffer of at most `max_buffer_length` events; a batch goes out when the
//!   buffer is full (by count, or by the link's message size), when `max_wait_time` has passed
//!   since its oldest event, or on [`BufferedProducerClient::flush`] and
//!   [`BufferedProducerClient::close`];
//! - at most `max_concurrent_sends` batches in flight per partition (default 1, which keeps the
//!   order of the partition's events);
//! - routing: a partition id; else a partition key, hashed here with the service's own function
//!   (the one the broker uses) and kept on the event; else the partition with the fewest events
//!   waiting;
//! - full buffers make `enqueue_event` wait (backpressure), up to `enqueue_timeout`.
//!
//! What "reported once" promises: every event accepted by `enqueue_event` reaches exactly one
//! callback, after the client's retry policy has run. It does not promise the event is stored
//! once: when an acknowledgement is lost and the retry sends the batch again, the hub can hold
//! it twice, while the callback still sees it once. Errors a retry cannot fix (an event larger
//! than the link allows, a refused credential, an unknown partition) go to `on_error` at once.

use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;
use crate::producer::ProducerClient;
use crate::EventDataBatchOptions;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Options of a [`BufferedProducerClient`] (Python's names where it has them).
#[derive(Debug, Clone)]
pub struct BufferedProducerOptions {
    /// Events waiting per partition, at most (default 1500). A full buffer is sent at once.
    pub max_buffer_length: usize,
    /// How long an event may wait for its batch to fill (default 1 s).
    pub max_wait_time: Duration,
    /// Batches in flight per partition, at most (default 1: the partition's order holds).
    pub max_concurrent_sends: usize,
    /// How long `enqueue_event` waits for room in a full buffer before it fails with
    /// [`ErrorKind::OperationTimeout`] (default 60 s).
    pub enqueue_timeout: Duration,
    /// How often the partition list is read again, so that added partitions are used
    /// (default 60 s).
    pub partition_refresh_interval: Duration,
}

impl Default for BufferedProducerOptions {
    fn default() -> Self {
        BufferedProducerOptions {
            max_buffer_length: 1500,
            max_wait_time: Duration::from_secs(1),
            max_concurrent_sends: 1,
            enqueue_timeout: Duration::from_secs(60),
            partition_refresh_interval: Duration::from_secs(60),
        }
    }
}

/// Where an enqueued event goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueEventOptions {
    /// This partition.
    pub partition_id: Option<String>,
    /// The partition this key hashes to (ignored when `partition_id` is set); events with the
    /// same key keep their order.
    pub partition_key: Option<String>,
}

type OnSuccess = dyn Fn(Vec<EventData>, &str) + Send + Sync;
type OnError = dyn Fn(Vec<EventData>, &str, Error) + Send + Sync;

/// Keeps what it holds on cache lines of its own, so that enqueuers on different threads do
/// not slow each other down by writing next to what another thread reads.
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The shard an enqueuing thread writes to: threads are numbered as they first enqueue.
fn shard_of_thread() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    SHARD.with(|s| *s)
}

/// One partition's buffer and its bookkeeping.
///
/// The buffer is split into shards, one per enqueuing thread (by thread number, so threads
/// rarely share one), so that tasks on different threads enqueueing to one partition do not
/// contend for one lock and one vector. Each event gets the partition's next index, taken while
/// its shard is locked: once the sender has read `enqueued` and then locked each shard in turn,
/// every event below what it read is in a shard, so it takes an unbroken prefix and puts it back
/// in index order. An event enqueued after another one returned is therefore sent after it.
struct Partition {
    id: String,
    /// Events ever enqueued: the next event's index.
    enqueued: Padded<AtomicU64>,
    /// Every event below this index has been taken from the shards by the sender; the buffer
    /// holds `enqueued - taken` events (at most `max_buffer_length`).
    taken: Padded<AtomicU64>,
    shards: Box<[Padded<Mutex<Shard>>]>,
    /// Events reported to a callback.
    reported_count: Padded<AtomicU64>,
    /// Wakes the partition's sender.
    wake: Notify,
    /// Wakes enqueuers waiting for room.
    room_freed: Notify,
    /// Send everything below this index now (flush, close).
    urgent_below: AtomicU64,
    /// Every event below this index has been reported (the flush barrier).
    reported_below: watch::Sender<u64>,
    /// Reported ranges above `reported_below` (with concurrent sends, out of order).
    reported_ranges: Mutex<BTreeMap<u64, u64>>,
}

/// What one thread's enqueues to a partition wait in.
#[derive(Default)]
struct Shard {
    /// In index order.
    entries: Vec<Entry>,
    /// An empty vector with room, for `entries` after the next take.
    spare: Vec<Entry>,
    /// Encoded-size estimate of the entries.
    bytes: usize,
    /// When the oldest entry was enqueued.
    oldest: Option<Instant>,
    /// The client is closing: no more events.
    closed: bool,
}

struct Entry {
    index: u64,
    key: Option<String>,
    event: EventData,
}

/// The size estimate an event adds to its buffer.
fn estimate(event: &EventData) -> usize {
    event.body().map_or(0, <[u8]>::len) + 64
}

/// Why an enqueue did not buffer its event.
enum NotPushed {
    Full,
    Closed,
}

/// The buffer's state as the sender sees it before deciding to send.
struct Peek {
    count: u64,
    bytes: usize,
    oldest: Option<Instant>,
}

impl Partition {
    fn new(id: String) -> Arc<Self> {
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get()).saturating_mul(2).clamp(8, 64);
        Arc::new(Partition {
            id,
            enqueued: Padded(AtomicU64::new(0)),
            taken: Padded(AtomicU64::new(0)),
            shards: (0..shards).map(|_| Padded(Mutex::new(Shard::default()))).collect(),
            reported_count: Padded(AtomicU64::new(0)),
            wake: Notify::new(),
            room_freed: Notify::new(),
            urgent_below: AtomicU64::new(0),
            reported_below: watch::Sender::new(0),
            reported_ranges: Mutex::new(BTreeMap::new()),
        })
    }

    /// Events enqueued and not yet reported.
    fn pending(&self) -> usize {
        let enqueued = self.enqueued.load(Ordering::Acquire);
        enqueued.saturating_sub(self.reported_count.load(Ordering::Acquire)) as usize
    }

    /// Whether the buffer has room for one more event.
    fn has_room(&self, max: u64) -> bool {
        let taken = self.taken.load(Ordering::Acquire);
        self.enqueued.load(Ordering::Acquire).saturating_sub(taken) < max
    }

    /// Buffers an event (taking it from `event`) in this thread's shard if there is room.
    /// Returns whether the sender should be woken (the shard's first event, to time its wait,
    /// or a full buffer).
    fn push(
        &self,
        event: &mut Option<EventData>,
        key: &mut Option<String>,
        max_len: u64,
        full_bytes: usize,
    ) -> std::result::Result<bool, NotPushed> {
        let mut shard = self.shards[shard_of_thread() % self.shards.len()].lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the shard's lock, which close takes too: nothing lands after.
        if shard.closed {
            return Err(NotPushed::Closed);
        }
        // `taken` before `enqueued`: what the sender took was below what we then read.
        let taken = self.taken.load(Ordering::Acquire);
        let mut index = self.enqueued.load(Ordering::Acquire);
        loop {
            if index.saturating_sub(taken) >= max_len {
                return Err(NotPushed::Full);
            }
            match self.enqueued.compare_exchange_weak(index, index + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => index = now,
            }
        }
        let event = event.take().expect("pushed once");
        let size = estimate(&event);
        let first = shard.entries.is_empty();
        if first {
            shard.oldest = Some(Instant::now());
        }
        let before = shard.bytes;
        shard.bytes += size;
        shard.entries.push(Entry { index, key: key.take(), event });
        let crossed = full_bytes > 0 && before < full_bytes && shard.bytes >= full_bytes;
        Ok(first || crossed || index + 1 - taken >= max_len)
    }

    /// The buffer's count, size and oldest event, for the sender.
    fn peek(&self) -> Peek {
        let count = self.enqueued.load(Ordering::Acquire) - self.taken.load(Ordering::Acquire);
        let mut bytes = 0;
        let mut oldest: Option<Instant> = None;
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            bytes += shard.bytes;
            oldest = match (oldest, shard.oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Peek { count, bytes, oldest }
    }

    /// Takes every event enqueued so far out of the shards, in index order (the sender alone
    /// calls this), and frees their room.
    fn take(&self) -> Taken {
        let start = self.taken.load(Ordering::Acquire);
        let end = self.enqueued.load(Ordering::Acquire);
        // (shard, its events below `end`)
        let mut runs: Vec<(usize, Vec<Entry>)> = Vec::new();
        for (at, shard) in self.shards.iter().enumerate() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let below = shard.entries.partition_point(|e| e.index < end);
            if below == 0 {
                continue;
            }
            let run: Vec<Entry> = if below == shard.entries.len() {
                // The shard fills again into the vector the last take emptied: no allocation,
                // and memory that is already mapped and warm.
                let mut next = std::mem::take(&mut shard.spare);
                next.reserve(below);
                std::mem::replace(&mut shard.entries, next)
            } else {
                shard.entries.drain(..below).collect()
            };
            // What stays came after `end` was read (usually nothing): its size is counted again,
            // and it has waited no longer than since then.
            shard.bytes = shard.entries.iter().map(|e| estimate(&e.event)).sum();
            shard.oldest = if shard.entries.is_empty() { None } else { Some(Instant::now()) };
            runs.push((at, run));
        }
        self.taken.store(end, Ordering::Release);
        self.room_freed.notify_waiters();
        let n = (end - start) as usize;
        let mut events = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        if let [(_, run)] = runs.as_mut_slice() {
            for e in run.drain(..) {
                events.push(e.event);
                keys.push(e.key);
            }
        } else {
            // Merge the shards' runs by index: each run is in order and together they hold
            // exactly `start..end`, so the next index is at the head of one of them.
            // (Heads are looked at in place, so each event is moved once, into `events`.)
            let mut heads: Vec<_> = runs.iter_mut().map(|(_, run)| run.drain(..)).collect();
            let mut at = 0;
            for index in start..end {
                if heads[at].as_slice().first().is_none_or(|e| e.index != index) {
                    at = heads
                        .iter()
                        .position(|h| h.as_slice().first().is_some_and(|e| e.index == index))
                        .expect("every index below `enqueued` is in a shard");
                }
                let e = heads[at].next().expect("looked at");
                events.push(e.event);
                keys.push(e.key);
            }
        }
        debug_assert_eq!(events.len(), n);
        // The emptied vectors go back as the shards' spares.
        for (at, run) in runs {
            let mut shard = self.shards[at].lock().unwrap_or_else(|p| p.into_inner());
            if run.capacity() > shard.spare.capacity() {
                shard.spare = run;
            }
        }
        Taken { events, keys, start }
    }

    /// Marks events `[start, end)` as reported and moves the barrier past every complete prefix.
    fn reported(&self, start: u64, end: u64) {
        self.reported_count.fetch_add(end - start, Ordering::AcqRel);
        let mut ranges = self.reported_ranges.lock().unwrap_or_else(|p| p.into_inner());
        ranges.insert(start, end);
        let mut below = *self.reported_below.borrow();
        while let Some(end) = ranges.remove(&below) {
            below = end;
        }
        self.reported_below.send_replace(below);
    }
}

/// Partitions a hub may have, at most (Event Hubs allows up to 2,000 on dedicated clusters).
const MAX_PARTITIONS: usize = 4096;

/// The hub's partitions. They only ever grow, so the enqueue path reads them without a lock or
/// a shared counter to bump: a load of `len` and a slot each.
struct PartitionTable {
    slots: Box<[std::sync::OnceLock<Arc<Partition>>]>,
    len: AtomicUsize,
}

impl PartitionTable {
    fn new(partitions: Vec<Arc<Partition>>) -> Self {
        let slots: Box<[std::sync::OnceLock<Arc<Partition>>]> =
            (0..MAX_PARTITIONS.max(partitions.len())).map(|_| std::sync::OnceLock::new()).collect();
        let len = partitions.len();
        for (slot, p) in slots.iter().zip(partitions) {
            let _ = slot.set(p);
        }
        PartitionTable { slots, len: AtomicUsize::new(len) }
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    fn get(&self, i: usize) -> &Arc<Partition> {
        self.slots[i].get().expect("slots below len are set")
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Partition>> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Adds a partition (the refresh task alone calls this); false when the table is full.
    fn push(&self, p: Arc<Partition>) -> bool {
        let at = self.len();
        if at >= self.slots.len() || self.slots[at].set(p).is_err() {
            return false;
        }
        self.len.store(at + 1, Ordering::Release);
        true
    }

    /// The index of a partition id: ids are `0..n` on Event Hubs, so look there first.
    fn find(&self, id: &str) -> Option<usize> {
        let n = self.len();
        if let Ok(i) = id.parse::<usize>() {
            if i < n && self.get(i).id == id {
                return Some(i);
            }
        }
        (0..n).find(|&i| self.get(i).id == id)
    }
}

/// What every handle and task shares.
struct Inner {
    producer: ProducerClient,
    options: BufferedProducerOptions,
    on_success: Arc<OnSuccess>,
    on_error: Arc<OnError>,
    partitions: PartitionTable,
    /// The link's largest message, learned from the first batch of each sender.
    max_message_size: AtomicU64,
    next: AtomicUsize,
    closed: AtomicBool,
    /// Ends the senders (after a flush, or abandoning what waits).
    stop: CancellationToken,
    /// Abandon instead of sending on stop.
    abandon: AtomicBool,
    tasks: tokio_util::task::TaskTracker,
}

impl Inner {
    /// Whether a buffer is due as full: by count, or by its size estimate against the link's
    /// largest message (once a batch has told it).
    fn is_full(&self, peek: &Peek) -> bool {
        let max = self.max_message_size.load(Ordering::Relaxed);
        peek.count >= self.options.max_buffer_length as u64 || (max > 0 && peek.bytes as u64 >= max)
    }

    /// The shard size at which an enqueue wakes the sender to check the buffer's size: a
    /// quarter of the link's largest message, so that a few busy shards are noticed in time.
    fn wake_bytes(&self) -> usize {
        (self.max_message_size.load(Ordering::Relaxed) / 4) as usize
    }
}

/// A producer that buffers events per partition and sends them in full batches in the
/// background. See the [module docs](self).
///
/// ```no_run
/// # async fn demo() -> ehub::Result<()> {
/// use ehub::buffered::{BufferedProducerClient, EnqueueEventOptions};
///
/// let cs = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;\
///           SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
/// let producer = BufferedProducerClient::builder()
///     .with_on_send_succeeded(|events, partition_id| println!("{} events in {partition_id}", events.len()))
///     .with_on_send_failed(|events, partition_id, error| eprintln!("{} events to {partition_id}: {error}", events.len()))
///     .open_with_connection_string(cs, Some("eh1"))
///     .await?;
/// producer.enqueue_event("any partition", None).await?;
/// let by_key = EnqueueEventOptions { partition_key: Some("device-7".into()), ..Default::default() };
/// producer.enqueue_event("in order with device-7's other events", Some(by_key)).await?;
/// producer.close(true, None).await?; // sends what waits, then reports it
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BufferedProducerClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BufferedProducerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferedProducerClient")
            .field("options", &self.inner.options)
            .field("buffered", &self.total_buffered_event_count())
            .finish_non_exhaustive()
    }
}

/// Builds a [`BufferedProducerClient`]; both callbacks are required.
#[derive(Default)]
pub struct BufferedProducerClientBuilder {
    client_options: crate::ClientOptions,
    options: BufferedProducerOptions,
    on_success: Option<Arc<OnSuccess>>,
    on_error: Option<Arc<OnError>>,
}

impl BufferedProducerClientBuilder {
    /// Connection options (retries, transport, TLS), as for [`ProducerClient`].
    pub fn with_options(mut self, options: crate::ClientOptions) -> Self {
        self.client_options = options;
        self
    }

    /// Buffering options.
    pub fn with_buffered_options(mut self, options: BufferedProducerOptions) -> Self {
        self.options = options;
        self
    }

    /// Called with each batch of events the hub acknowledged, and their partition.
    pub fn with_on_send_succeeded(mut self, f: impl Fn(Vec<EventData>, &str) + Send + Sync + 'static) -> Self {
        self.on_success = Some(Arc::new(f));
        self
    }

    /// Called with events that could not be sent, their partition and why (required).
    pub fn with_on_send_failed(mut self, f: impl Fn(Vec<EventData>, &str, Error) + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(f));
        self
    }

    /// Opens the client on a connection string's namespace and `eventhub`.
    pub async fn open_with_connection_string(
        self,
        connection_string: &str,
        eventhub: Option<&str>,
    ) -> Result<BufferedProducerClient> {
        let producer = ProducerClient::builder()
            .with_options(self.client_options.clone())
            .open_with_connection_string(connection_string, eventhub)
            .await?;
        self.open_on(producer).await
    }

    /// Opens the client on an existing producer (its connection and options).
    pub async fn open_on(self, producer: ProducerClient) -> Result<BufferedProducerClient> {
        let on_success =
            self.on_success.ok_or_else(|| Error::invalid("a buffered producer needs an on_send_succeeded callback"))?;
        let on_error =
            self.on_error.ok_or_else(|| Error::invalid("a buffered producer needs an on_send_failed callback"))?;
        let o = &self.options;
        if o.max_buffer_length == 0 || o.max_concurrent_sends == 0 || o.max_wait_time.is_zero() {
            return Err(Error::invalid("max_buffer_length, max_concurrent_sends and max_wait_time must be above zero"));
        }
        let ids = producer.get_partition_ids().await?;
        let partitions: Vec<Arc<Partition>> = ids.into_iter().map(Partition::new).collect();
        let inner = Arc::new(Inner {
            producer,
            options: self.options,
            on_success,
            on_error,
            partitions: PartitionTable::new(partitions.clone()),
            max_message_size: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            stop: CancellationToken::new(),
            abandon: AtomicBool::new(false),
            tasks: tokio_util::task::TaskTracker::new(),
        });
        for p in partitions {
            inner.tasks.spawn(send_partition(Arc::clone(&inner), p));
        }
        inner.tasks.spawn(refresh_partitions(Arc::clone(&inner)));
        Ok(BufferedProducerClient { inner })
    }
}

impl BufferedProducerClient {
    /// A builder.
    pub fn builder() -> BufferedProducerClientBuilder {
        BufferedProducerClientBuilder::default()
    }

    fn partitions(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.inner.partitions.iter()
    }

    /// The partition an event goes to.
    fn route(&self, options: &EnqueueEventOptions) -> Result<&Arc<Partition>> {
        let table = &self.inner.partitions;
        if let Some(id) = &options.partition_id {
            return table
                .find(id)
                .map(|i| table.get(i))
                .ok_or_else(|| Error::new(ErrorKind::ResourceNotFound, format!("the hub has no partition `{id}`")));
        }
        if let Some(key) = &options.partition_key {
            // The service's rule: the key's hash over the partitions in the hub's order.
            return Ok(table.get(ehub_model::partition_for_key(key, table.len() as u32) as usize));
        }
        // The shallowest buffer, starting the scan at a rotating place to break ties.
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let n = table.len();
        let mut best = start % n;
        let mut depth = usize::MAX;
        for i in 0..n {
            let at = (start + i) % n;
            let d = table.get(at).pending();
            if d < depth {
                best = at;
                depth = d;
                if d == 0 {
                    break;
                }
            }
        }
        Ok(table.get(best))
    }

    /// Buffers `event`; returns as soon as it is buffered. Waits while the partition's buffer
    /// is full, up to `enqueue_timeout`. The event is then reported to exactly one callback.
    pub async fn enqueue_event(&self, event: impl Into<EventData>, options: Option<EnqueueEventOptions>) -> Result<()> {
        let options = options.unwrap_or_default();
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::client_closed());
        }
        let p = self.route(&options)?;
        let mut key = if options.partition_id.is_some() { None } else { options.partition_key };
        // The caller's span is current here, not in the sender task that encodes the event.
        let mut event = Some(event.into());
        if let Some(e) = &mut event {
            e.stamp_current_trace_context();
        }
        let max_len = self.inner.options.max_buffer_length as u64;
        let mut deadline = None;
        loop {
            match p.push(&mut event, &mut key, max_len, self.inner.wake_bytes()) {
                Ok(wake) => {
                    if wake {
                        p.wake.notify_one();
                    }
                    return Ok(());
                }
                Err(NotPushed::Closed) => return Err(Error::client_closed()),
                Err(NotPushed::Full) => {
                    let timeout = self.inner.options.enqueue_timeout;
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                    // Registered before the room is checked again, so a take in between wakes it.
                    let freed = p.room_freed.notified();
                    tokio::pin!(freed);
                    freed.as_mut().enable();
                    if p.has_room(max_len) || self.inner.closed.load(Ordering::Acquire) {
                        continue;
                    }
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return Err(Error::new(
                            ErrorKind::OperationTimeout,
                            format!(
                                "partition {}'s buffer stayed full for {timeout:?}; the event was not enqueued",
                                p.id
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// Buffers several events with the same routing, in order.
    pub async fn enqueue_events(
        &self,
        events: impl IntoIterator<Item = EventData>,
        options: Option<EnqueueEventOptions>,
    ) -> Result<()> {
        let options = options.unwrap_or_default();
        for e in events {
            self.enqueue_event(e, Some(options.clone())).await?;
        }
        Ok(())
    }

    /// Events enqueued for `partition_id` and not yet reported.
    pub fn get_buffered_event_count(&self, partition_id: &str) -> usize {
        self.partitions().find(|p| p.id == partition_id).map_or(0, |p| p.pending())
    }

    /// Events enqueued and not yet reported, over all partitions.
    pub fn total_buffered_event_count(&self) -> usize {
        self.partitions().map(|p| p.pending()).sum()
    }

    /// A barrier: sends what waits now, and returns once every event enqueued before the call
    /// has been reported (other tasks may go on enqueueing meanwhile). With a timeout, fails
    /// with [`ErrorKind::OperationTimeout`] if that takes longer (the events are still sent).
    pub async fn flush(&self, timeout: Option<Duration>) -> Result<()> {
        let mut waits = Vec::new();
        for p in self.partitions() {
            // Every event whose enqueue returned before this call has an index below it.
            let target = p.enqueued.load(Ordering::Acquire);
            p.urgent_below.fetch_max(target, Ordering::AcqRel);
            p.wake.notify_one();
            let mut rx = p.reported_below.subscribe();
            waits.push(async move {
                let _ = rx.wait_for(|below| *below >= target).await;
            });
        }
        let all = futures_util::future::join_all(waits);
        match timeout {
            None => {
                all.await;
                Ok(())
            }
            Some(t) => match tokio::time::timeout(t, all).await {
                Ok(_) => Ok(()),
                Err(_) => Err(Error::timeout("flushing the buffered producer", t)),
            },
        }
    }

    /// Closes the client: with `flush`, sends and reports everything enqueued first; without,
    /// reports what waits to `on_error` with [`ErrorKind::ClientClosed`] (batches already in
    /// flight are still reported as they end). Then closes the links. Later enqueues fail with
    /// [`ErrorKind::ClientClosed`].
    pub async fn close(&self, flush: bool, timeout: Option<Duration>) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        // Enqueues waiting for room fail now, and no event lands in a buffer after this.
        for p in self.partitions() {
            for shard in p.shards.iter() {
                shard.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            }
            p.room_freed.notify_waiters();
        }
        let flushed = if flush { self.flush(timeout).await } else { Ok(()) };
        if !flush || flushed.is_err() {
            self.inner.abandon.store(true, Ordering::Release);
        }
        self.inner.stop.cancel();
        for p in self.partitions() {
            p.wake.notify_one();
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.producer.close().await;
        flushed
    }
}

/// Reads the partition list every `partition_refresh_interval` and starts senders for
/// partitions that were added.
async fn refresh_partitions(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(inner.options.partition_refresh_interval) => {}
            _ = inner.stop.cancelled() => return,
        }
        let ids = match inner.producer.get_partition_ids().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::debug!(error = %e, "buffered producer: reading the partition list failed");
                continue;
            }
        };
        let known = inner.partitions.len();
        for id in ids.into_iter().skip(known) {
            tracing::info!(partition_id = %id, "buffered producer: the hub has a new partition");
            let p = Partition::new(id);
            if !inner.partitions.push(Arc::clone(&p)) {
                break;
            }
            inner.tasks.spawn(send_partition(Arc::clone(&inner), p));
        }
    }
}

/// What one send takes from the buffer.
struct Taken {
    events: Vec<EventData>,
    keys: Vec<Option<String>>,
    start: u64,
}

/// One partition's sender: waits until a batch is due, takes it, sends it, reports it.
async fn send_partition(inner: Arc<Inner>, p: Arc<Partition>) {
    let slots = Arc::new(Semaphore::new(inner.options.max_concurrent_sends));
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        // A send slot first: while every slot is busy, events stay in the buffer (and count
        // against its room), so a stuck partition holds enqueues back.
        let slot = Arc::clone(&slots).acquire_owned().await.expect("never closed");
        let stopping = inner.stop.is_cancelled();
        let peek = p.peek();
        let due = if peek.count == 0 {
            None
        } else if inner.abandon.load(Ordering::Acquire) {
            Some(Err(p.take()))
        } else {
            let full = inner.is_full(&peek);
            let urgent = p.urgent_below.load(Ordering::Acquire) > p.taken.load(Ordering::Acquire) || stopping;
            let waited = peek.oldest.is_some_and(|t| t.elapsed() >= inner.options.max_wait_time);
            if full || urgent || waited {
                Some(Ok(p.take()))
            } else {
                None
            }
        };
        match due {
            Some(Err(abandoned)) => {
                let n = abandoned.events.len();
                let events = abandoned.events;
                let e =
                    Error::new(ErrorKind::ClientClosed, "the client closed without flushing: the event was not sent");
                (inner.on_error)(events, &p.id, e);
                p.reported(abandoned.start, abandoned.start + n as u64);
                continue;
            }
            Some(Ok(taken)) => {
                let (inner2, p2) = (Arc::clone(&inner), Arc::clone(&p));
                in_flight.spawn(async move {
                    send_taken(&inner2, &p2, taken).await;
                    drop(slot);
                });
                // Reap finished sends so the set stays small.
                while in_flight.try_join_next().is_some() {}
                continue;
            }
            None => drop(slot),
        }
        if stopping {
            // Nothing waits and the client is closing: let the sends in flight end.
            while in_flight.join_next().await.is_some() {}
            if p.peek().count == 0 {
                return;
            }
            continue;
        }
        // Sleep until an event arrives, the buffer fills, the oldest event's wait runs out,
        // a flush, or close.
        let deadline = peek.oldest.map(|t| t + inner.options.max_wait_time);
        tokio::select! {
            _ = p.wake.notified() => {}
            _ = inner.stop.cancelled() => {}
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {}
        }
    }
}

/// Sends taken events as batches that fit the link, and reports each batch.
async fn send_taken(inner: &Inner, p: &Partition, taken: Taken) {
    let Taken { mut events, keys, start } = taken;
    // `events` loses its front as batches go; `keys[index - start..]` stays beside it.
    let mut index = start;
    while !events.is_empty() {
        let mut batch = match inner
            .producer
            .create_batch(Some(EventDataBatchOptions { partition_id: Some(p.id.clone()), ..Default::default() }))
            .await
        {
            Ok(b) => b,
            Err(e) => {
                // No link: everything left fails with the reason (after the client's retries).
                let n = events.len() as u64;
                (inner.on_error)(events, &p.id, e);
                p.reported(index, index + n);
                return;
            }
        };
        inner.max_message_size.store(batch.max_size_in_bytes(), Ordering::Relaxed);
        // How many of the events, from the front, go into this batch.
        let mut fit = 0;
        let mut too_large = None;
        let first_key = (index - start) as usize;
        for (event, key) in events.iter().zip(&keys[first_key..]) {
            match batch.try_add_keyed(event, key.as_deref()) {
                Ok(true) => fit += 1,
                Ok(false) => break,
                Err(e) => {
                    // Too large for any batch (or not encodable): this event fails alone,
                    // after the ones before it are sent.
                    too_large = Some(e);
                    break;
                }
            }
        }
        if fit > 0 {
            // All of them (the usual case) go to the callback without being moved one by one.
            let rest = if fit < events.len() { events.split_off(fit) } else { Vec::new() };
            let sent = std::mem::replace(&mut events, rest);
            let n = fit as u64;
            match inner.producer.send_batch(&batch).await {
                Ok(()) => (inner.on_success)(sent, &p.id),
                Err(e) => (inner.on_error)(sent, &p.id, e),
            }
            p.reported(index, index + n);
            index += n;
        }
        if let Some(e) = too_large {
            let rest = events.split_off(1);
            let failed = std::mem::replace(&mut events, rest);
            (inner.on_error)(failed, &p.id, e);
            p.reported(index, index + 1);
            index += 1;
        }
    }
}
