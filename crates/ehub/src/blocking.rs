//! The same clients without `async`: each call blocks the calling thread.
//!
//! The async core runs on a small background runtime owned by the client, so the connection,
//! heartbeats and token refresh keep going between calls.
//!
//! ```no_run
//! use ehub::blocking::ProducerClient;
//! let cs = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
//! let producer = ProducerClient::from_connection_string(cs, Some("eh1"))?;
//! producer.send_event("hello", None)?;
//! producer.close();
//! # Ok::<(), ehub::Error>(())
//! ```

use crate::error::{Error, ErrorKind, Result};
use crate::{
    EventData, EventDataBatch, EventDataBatchOptions, EventHubProperties, LastEnqueuedEventProperties,
    OpenReceiverOptions, PartitionProperties, ReceivedEventData, SendEventOptions,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

fn runtime() -> Result<Arc<Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ehub-blocking")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| Error::new(ErrorKind::Connect, format!("starting the background runtime: {e}")).with_source(e))
}

/// Blocking [`crate::ProducerClient`].
#[derive(Debug, Clone)]
pub struct ProducerClient {
    inner: crate::ProducerClient,
    rt: Arc<Runtime>,
}

impl ProducerClient {
    /// Opens a producer from a connection string.
    pub fn from_connection_string(connection_string: &str, eventhub: Option<&str>) -> Result<Self> {
        Self::with_options(connection_string, eventhub, crate::ClientOptions::default())
    }

    /// Opens a producer from a connection string with options.
    pub fn with_options(
        connection_string: &str,
        eventhub: Option<&str>,
        options: crate::ClientOptions,
    ) -> Result<Self> {
        let rt = runtime()?;
        let inner = rt.block_on(
            crate::ProducerClient::builder()
                .with_options(options)
                .open_with_connection_string(connection_string, eventhub),
        )?;
        Ok(ProducerClient { inner, rt })
    }

    /// Opens a producer for a namespace, hub and credential.
    pub fn open(
        fully_qualified_namespace: &str,
        eventhub: &str,
        credential: impl Into<crate::Credential>,
    ) -> Result<Self> {
        let rt = runtime()?;
        let inner =
            rt.block_on(crate::ProducerClient::builder().open(fully_qualified_namespace, eventhub, credential))?;
        Ok(ProducerClient { inner, rt })
    }

    /// See [`crate::ProducerClient::send_event`].
    pub fn send_event(&self, event: impl Into<EventData>, options: Option<SendEventOptions>) -> Result<()> {
        self.rt.block_on(self.inner.send_event(event, options))
    }

    /// See [`crate::ProducerClient::send_events`].
    pub fn send_events(
        &self,
        events: impl IntoIterator<Item = EventData>,
        options: Option<SendEventOptions>,
    ) -> Result<()> {
        self.rt.block_on(self.inner.send_events(events, options))
    }

    /// See [`crate::ProducerClient::create_batch`].
    pub fn create_batch(&self, options: Option<EventDataBatchOptions>) -> Result<EventDataBatch> {
        self.rt.block_on(self.inner.create_batch(options))
    }

    /// See [`crate::ProducerClient::send_batch`].
    pub fn send_batch(&self, batch: &EventDataBatch) -> Result<()> {
        self.rt.block_on(self.inner.send_batch(batch))
    }

    /// See [`crate::ProducerClient::get_eventhub_properties`].
    pub fn get_eventhub_properties(&self) -> Result<EventHubProperties> {
        self.rt.block_on(self.inner.get_eventhub_properties())
    }

    /// See [`crate::ProducerClient::get_partition_ids`].
    pub fn get_partition_ids(&self) -> Result<Vec<String>> {
        self.rt.block_on(self.inner.get_partition_ids())
    }

    /// See [`crate::ProducerClient::get_partition_properties`].
    pub fn get_partition_properties(&self, partition_id: &str) -> Result<PartitionProperties> {
        self.rt.block_on(self.inner.get_partition_properties(partition_id))
    }

    /// Closes the client.
    pub fn close(&self) {
        self.rt.block_on(self.inner.close())
    }
}

/// Blocking [`crate::ConsumerClient`].
#[derive(Debug, Clone)]
pub struct ConsumerClient {
    inner: crate::ConsumerClient,
    rt: Arc<Runtime>,
}

impl ConsumerClient {
    /// Opens a consumer from a connection string (consumer group `$Default` when `None`).
    pub fn from_connection_string(
        connection_string: &str,
        eventhub: Option<&str>,
        consumer_group: Option<&str>,
    ) -> Result<Self> {
        let rt = runtime()?;
        let inner =
            rt.block_on(crate::ConsumerClient::from_connection_string(connection_string, eventhub, consumer_group))?;
        Ok(ConsumerClient { inner, rt })
    }

    /// See [`crate::ConsumerClient::get_eventhub_properties`].
    pub fn get_eventhub_properties(&self) -> Result<EventHubProperties> {
        self.rt.block_on(self.inner.get_eventhub_properties())
    }

    /// See [`crate::ConsumerClient::get_partition_ids`].
    pub fn get_partition_ids(&self) -> Result<Vec<String>> {
        self.rt.block_on(self.inner.get_partition_ids())
    }

    /// See [`crate::ConsumerClient::get_partition_properties`].
    pub fn get_partition_properties(&self, partition_id: &str) -> Result<PartitionProperties> {
        self.rt.block_on(self.inner.get_partition_properties(partition_id))
    }

    /// See [`crate::ConsumerClient::open_receiver_on_partition`].
    pub fn open_receiver_on_partition(
        &self,
        partition_id: &str,
        options: Option<OpenReceiverOptions>,
    ) -> Result<EventReceiver> {
        let inner = self.rt.block_on(self.inner.open_receiver_on_partition(partition_id, options))?;
        Ok(EventReceiver { inner, rt: self.rt.clone() })
    }

    /// See [`crate::ConsumerClient::receive`].
    pub fn receive<F>(&self, options: crate::ReceiveOptions, on_event: F) -> Result<()>
    where
        F: FnMut(ReceivedEventData) -> std::ops::ControlFlow<()>,
    {
        self.rt.block_on(self.inner.receive(options, on_event))
    }

    /// Closes the client.
    pub fn close(&self) {
        self.rt.block_on(self.inner.close())
    }
}

/// Blocking [`crate::EventReceiver`].
#[derive(Debug)]
pub struct EventReceiver {
    inner: crate::EventReceiver,
    rt: Arc<Runtime>,
}

impl EventReceiver {
    /// See [`crate::EventReceiver::recv`].
    pub fn recv(&mut self) -> Result<ReceivedEventData> {
        self.rt.block_on(self.inner.recv())
    }

    /// See [`crate::EventReceiver::receive_batch`].
    pub fn receive_batch(&mut self, max_batch_size: usize, max_wait_time: Duration) -> Result<Vec<ReceivedEventData>> {
        self.rt.block_on(self.inner.receive_batch(max_batch_size, max_wait_time))
    }

    /// See [`crate::EventReceiver::last_enqueued_event_properties`].
    pub fn last_enqueued_event_properties(&self) -> Option<&LastEnqueuedEventProperties> {
        self.inner.last_enqueued_event_properties()
    }

    /// Detaches the link.
    pub fn close(self) {
        self.rt.block_on(self.inner.close())
    }
}

/// What a blocking handler's calls are about: the partition, and a blocking checkpoint writer.
#[derive(Debug, Clone)]
pub struct PartitionContext {
    inner: crate::processor::PartitionContext,
    rt: tokio::runtime::Handle,
}

impl PartitionContext {
    /// The partition.
    pub fn partition_id(&self) -> &str {
        self.inner.partition_id()
    }

    /// The hub.
    pub fn eventhub_name(&self) -> &str {
        self.inner.eventhub_name()
    }

    /// The consumer group.
    pub fn consumer_group(&self) -> &str {
        self.inner.consumer_group()
    }

    /// Records `event` as processed, as [`crate::processor::PartitionContext::update_checkpoint`].
    pub fn update_checkpoint(&self, event: &ReceivedEventData) -> Result<()> {
        self.rt.block_on(self.inner.update_checkpoint(event))
    }
}

/// Blocking [`crate::processor::EventHandler`]: each call runs on a thread that may block.
pub trait EventHandler: Send + Sync + 'static {
    /// A partition was won, before its first batch.
    fn initialize(&self, _context: &PartitionContext) -> Result<()> {
        Ok(())
    }
    /// A batch of events; an error goes to [`EventHandler::process_error`].
    fn process_events(&self, events: Vec<ReceivedEventData>, context: &PartitionContext) -> Result<()>;
    /// The partition's processing ended.
    fn close(&self, _context: &PartitionContext, _reason: crate::processor::CloseReason) {}
    /// A failure, with its partition when it has one.
    fn process_error(&self, _error: Error, _context: Option<&PartitionContext>) {}
}

/// A blocking handler, run off the reactor.
struct OnThreads<H>(Arc<H>);

impl<H: EventHandler> OnThreads<H> {
    async fn call<T: Send + 'static>(
        &self,
        ctx: Option<&crate::processor::PartitionContext>,
        f: impl FnOnce(&H, Option<&PartitionContext>) -> T + Send + 'static,
    ) -> T {
        let h = Arc::clone(&self.0);
        let ctx = ctx.map(|c| PartitionContext { inner: c.clone(), rt: tokio::runtime::Handle::current() });
        tokio::task::spawn_blocking(move || f(&h, ctx.as_ref()))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

#[async_trait::async_trait]
impl<H: EventHandler> crate::processor::EventHandler for OnThreads<H> {
    async fn initialize(&self, ctx: &crate::processor::PartitionContext) -> Result<()> {
        self.call(Some(ctx), |h, c| h.initialize(c.expect("context"))).await
    }
    async fn process_events(
        &self,
        events: Vec<ReceivedEventData>,
        ctx: &crate::processor::PartitionContext,
    ) -> Result<()> {
        self.call(Some(ctx), move |h, c| h.process_events(events, c.expect("context"))).await
    }
    async fn close(&self, ctx: &crate::processor::PartitionContext, reason: crate::processor::CloseReason) {
        self.call(Some(ctx), move |h, c| h.close(c.expect("context"), reason)).await
    }
    async fn process_error(&self, error: Error, ctx: Option<&crate::processor::PartitionContext>) {
        self.call(ctx, move |h, c| h.process_error(error, c)).await
    }
}

/// Blocking [`crate::processor::EventProcessor`], push shape: [`EventProcessor::run`] blocks
/// the calling thread, calling the handler for every partition won, until another thread calls
/// [`EventProcessor::shutdown`] (it is `Clone`).
///
/// ```no_run
/// use ehub::blocking::{ConsumerClient, EventHandler, EventProcessor, PartitionContext};
/// use ehub::{InMemoryCheckpointStore, ReceivedEventData};
/// use std::sync::Arc;
///
/// struct Print;
/// impl EventHandler for Print {
///     fn process_events(&self, events: Vec<ReceivedEventData>, ctx: &PartitionContext) -> ehub::Result<()> {
///         for e in &events {
///             println!("{}: {:?}", ctx.partition_id(), e.body_as_str());
///         }
///         events.last().map_or(Ok(()), |e| ctx.update_checkpoint(e))
///     }
/// }
///
/// let cs = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
/// let consumer = ConsumerClient::from_connection_string(cs, Some("eh1"), None)?;
/// let processor = EventProcessor::new(&consumer, Arc::new(InMemoryCheckpointStore::new()), None)?;
/// processor.run(Arc::new(Print))?;
/// # Ok::<(), ehub::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EventProcessor {
    inner: crate::processor::EventProcessor,
    rt: Arc<Runtime>,
}

impl EventProcessor {
    /// A processor reading `consumer`'s hub and consumer group, with `store`.
    pub fn new(
        consumer: &ConsumerClient,
        store: Arc<dyn crate::CheckpointStore>,
        options: Option<crate::processor::EventProcessorOptions>,
    ) -> Result<Self> {
        let inner = crate::processor::EventProcessor::new(consumer.inner.clone(), store, options)?;
        Ok(EventProcessor { inner, rt: Arc::clone(&consumer.rt) })
    }

    /// Runs until [`EventProcessor::shutdown`]; then each partition's close handler runs and
    /// the partitions are released.
    pub fn run<H: EventHandler>(&self, handler: Arc<H>) -> Result<()> {
        self.rt.block_on(self.inner.run_with_handler(Arc::new(OnThreads(handler))))
    }

    /// Stops [`EventProcessor::run`], from any thread.
    pub fn shutdown(&self) {
        self.inner.shutdown()
    }

    /// The partitions this instance holds now.
    pub fn owned_partitions(&self) -> Vec<String> {
        self.inner.owned_partitions()
    }
}

/// Blocking [`crate::buffered::BufferedProducerClient`]: `enqueue_event` blocks only while the
/// partition's buffer is full; sends and callbacks run on the client's background runtime.
///
/// ```no_run
/// use ehub::blocking::BufferedProducerClient;
/// let cs = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
/// let producer = BufferedProducerClient::from_connection_string(
///     cs,
///     Some("eh1"),
///     |events, partition| println!("{} sent to {partition}", events.len()),
///     |events, partition, error| eprintln!("{} failed in {partition}: {error}", events.len()),
///     None,
/// )?;
/// producer.enqueue_event("hello", None)?;
/// producer.close(true, None)?;
/// # Ok::<(), ehub::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BufferedProducerClient {
    inner: crate::buffered::BufferedProducerClient,
    rt: Arc<Runtime>,
}

impl BufferedProducerClient {
    /// Opens a buffered producer; both callbacks are required.
    pub fn from_connection_string(
        connection_string: &str,
        eventhub: Option<&str>,
        on_success: impl Fn(Vec<EventData>, &str) + Send + Sync + 'static,
        on_error: impl Fn(Vec<EventData>, &str, Error) + Send + Sync + 'static,
        options: Option<crate::buffered::BufferedProducerOptions>,
    ) -> Result<Self> {
        let rt = runtime()?;
        let inner = rt.block_on(
            crate::buffered::BufferedProducerClient::builder()
                .with_buffered_options(options.unwrap_or_default())
                .with_on_send_succeeded(on_success)
                .with_on_send_failed(on_error)
                .open_with_connection_string(connection_string, eventhub),
        )?;
        Ok(BufferedProducerClient { inner, rt })
    }

    /// Buffers an event, as [`crate::buffered::BufferedProducerClient::enqueue_event`].
    pub fn enqueue_event(
        &self,
        event: impl Into<EventData>,
        options: Option<crate::buffered::EnqueueEventOptions>,
    ) -> Result<()> {
        self.rt.block_on(self.inner.enqueue_event(event, options))
    }

    /// Waits until everything enqueued before the call has been reported.
    pub fn flush(&self, timeout: Option<Duration>) -> Result<()> {
        self.rt.block_on(self.inner.flush(timeout))
    }

    /// Closes, flushing first or abandoning what waits.
    pub fn close(&self, flush: bool, timeout: Option<Duration>) -> Result<()> {
        self.rt.block_on(self.inner.close(flush, timeout))
    }

    /// Events enqueued for a partition and not yet reported.
    pub fn get_buffered_event_count(&self, partition_id: &str) -> usize {
        self.inner.get_buffered_event_count(partition_id)
    }

    /// Events enqueued and not yet reported.
    pub fn total_buffered_event_count(&self) -> usize {
        self.inner.total_buffered_event_count()
    }
}
