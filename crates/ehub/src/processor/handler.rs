//! The push shape: the processor calls the user's code for each partition it wins, as the
//! official Python (`receive_batch(on_event_batch, on_error, on_partition_initialize,
//! on_partition_close)`), JavaScript (`subscribe`) and .NET processors do.
//!
//! Two ways to write that code: one [`EventHandler`] shared by every partition (`&self`), or the
//! seed's shape, a factory that makes one [`PartitionProcessor`] per claimed partition
//! (`&mut self`, state of its own).

use super::{EventProcessor, PartitionClient};
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::{Error, ErrorKind, ReceivedEventData, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Why the processing of a partition ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another processor took the partition (or its receiver failed and it was given back to be
    /// opened again).
    OwnershipLost,
    /// This processor is stopping.
    Shutdown,
}

/// The partition a handler call is about, and its checkpoint writer.
#[derive(Clone)]
pub struct PartitionContext {
    pub(crate) store: Arc<dyn CheckpointStore>,
    pub(crate) template: Checkpoint,
}

impl std::fmt::Debug for PartitionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionContext")
            .field("namespace", &self.template.namespace)
            .field("eventhub_name", &self.template.event_hub)
            .field("consumer_group", &self.template.consumer_group)
            .field("partition_id", &self.template.partition_id)
            .finish()
    }
}

impl PartitionContext {
    /// The partition.
    pub fn partition_id(&self) -> &str {
        &self.template.partition_id
    }

    /// The hub.
    pub fn eventhub_name(&self) -> &str {
        &self.template.event_hub
    }

    /// The consumer group.
    pub fn consumer_group(&self) -> &str {
        &self.template.consumer_group
    }

    /// The namespace as the checkpoint store names it.
    pub fn fully_qualified_namespace(&self) -> &str {
        &self.template.namespace
    }

    /// Records `event` (typically the last of a batch) as processed: a restarted processor, or
    /// another that takes the partition, continues after it.
    pub async fn update_checkpoint(&self, event: &ReceivedEventData) -> Result<()> {
        let c = Checkpoint {
            offset: Some(event.offset().to_string()),
            sequence_number: Some(event.sequence_number()),
            ..self.template.clone()
        };
        self.store.update_checkpoint(&c).await
    }
}

/// User code called for every partition the processor wins; one instance serves all of them,
/// concurrently (each partition's calls come in order, one at a time).
#[async_trait::async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// A partition was won, before its first batch.
    async fn initialize(&self, _context: &PartitionContext) -> Result<()> {
        Ok(())
    }

    /// A batch of events (at most `max_batch_size`; empty only with `max_wait_time` set). An
    /// error returned here goes to [`EventHandler::process_error`]; processing goes on.
    async fn process_events(&self, events: Vec<ReceivedEventData>, context: &PartitionContext) -> Result<()>;

    /// The partition's processing ended; checkpoint here if you hold back checkpoints.
    async fn close(&self, _context: &PartitionContext, _reason: CloseReason) {}

    /// Something failed: a partition's receiver or a handler call (with its partition), or a
    /// load-balancing cycle (the checkpoint store or the hub unreachable, without one). The
    /// processor keeps going; failed partitions are opened again by a later cycle.
    async fn process_error(&self, _error: Error, _context: Option<&PartitionContext>) {}
}

/// The seed's shape: one instance per claimed partition, made by the factory given to
/// [`EventProcessor::run_with_factory`], with state of its own.
#[async_trait::async_trait]
pub trait PartitionProcessor: Send + 'static {
    /// The partition was won, before its first batch.
    async fn initialize(&mut self, _context: &PartitionContext) -> Result<()> {
        Ok(())
    }

    /// A batch of events, as [`EventHandler::process_events`].
    async fn process_events(&mut self, events: Vec<ReceivedEventData>, context: &PartitionContext) -> Result<()>;

    /// The partition's processing ended.
    async fn close(&mut self, _context: &PartitionContext, _reason: CloseReason) {}

    /// A failure of this partition's receiver or of one of this instance's calls.
    async fn process_error(&mut self, _error: Error, _context: &PartitionContext) {}
}

/// A shared handler, seen as one partition's processor.
struct Shared<H: EventHandler>(Arc<H>);

#[async_trait::async_trait]
impl<H: EventHandler> PartitionProcessor for Shared<H> {
    async fn initialize(&mut self, context: &PartitionContext) -> Result<()> {
        self.0.initialize(context).await
    }
    async fn process_events(&mut self, events: Vec<ReceivedEventData>, context: &PartitionContext) -> Result<()> {
        self.0.process_events(events, context).await
    }
    async fn close(&mut self, context: &PartitionContext, reason: CloseReason) {
        self.0.close(context, reason).await
    }
    async fn process_error(&mut self, error: Error, context: &PartitionContext) {
        self.0.process_error(error, Some(context)).await
    }
}

/// How long one receive waits when the user asked for no empty batches: short enough that a
/// lost partition is noticed promptly (the receive also ends at once when it is).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Reads one partition into `p` until the partition is lost, the processor stops, or its
/// receiver fails (then reported and given back, to be opened again by a later cycle).
async fn drive(
    mut client: PartitionClient,
    mut p: impl PartitionProcessor,
    max_batch_size: usize,
    max_wait: Option<Duration>,
) {
    let ctx = client.context();
    if let Err(e) = p.initialize(&ctx).await {
        p.process_error(e, &ctx).await;
    }
    let reason = loop {
        match client.receive_batch(max_batch_size.max(1), max_wait.unwrap_or(IDLE_POLL)).await {
            Ok(events) if events.is_empty() && max_wait.is_none() => continue,
            Ok(events) => {
                if let Err(e) = p.process_events(events, &ctx).await {
                    p.process_error(e, &ctx).await;
                }
            }
            Err(_) if client.is_ownership_lost() => {
                break if client.is_stopping() { CloseReason::Shutdown } else { CloseReason::OwnershipLost };
            }
            Err(e) => {
                debug!(partition_id = %ctx.partition_id(), error = %e, "partition receiver ended");
                // Another processor's receiver took the link after its claim won: the normal
                // end of an ownership, not an error.
                if e.kind() == ErrorKind::ConsumerDisconnected && client.taken_by_another().await {
                    break CloseReason::OwnershipLost;
                }
                // Otherwise the receiver is done (a reader with a higher owner level outside the
                // processors, or a failure its retries did not fix): report it; the partition
                // goes back to the pool and a later cycle opens it again.
                warn!(partition_id = %ctx.partition_id(), error = %e, "partition receiver ended; giving the partition back");
                p.process_error(e, &ctx).await;
                break CloseReason::OwnershipLost;
            }
        }
    };
    p.close(&ctx, reason).await;
    client.close().await;
}

impl EventProcessor {
    /// Runs the processor (load balancing, as [`EventProcessor::run`]) and pushes every won
    /// partition's events to `handler`, until [`EventProcessor::shutdown`]. On shutdown each
    /// partition's [`EventHandler::close`] runs (with [`CloseReason::Shutdown`]) before the
    /// partitions are released.
    ///
    /// ```no_run
    /// # async fn demo() -> ehub::Result<()> {
    /// use ehub::processor::{EventHandler, EventProcessor, PartitionContext};
    /// use ehub::{ConsumerClient, InMemoryCheckpointStore, ReceivedEventData};
    /// use std::sync::Arc;
    ///
    /// struct Print;
    ///
    /// #[async_trait::async_trait]
    /// impl EventHandler for Print {
    ///     async fn process_events(&self, events: Vec<ReceivedEventData>, ctx: &PartitionContext) -> ehub::Result<()> {
    ///         for e in &events {
    ///             println!("{}: {:?}", ctx.partition_id(), e.body_as_str());
    ///         }
    ///         match events.last() {
    ///             Some(last) => ctx.update_checkpoint(last).await,
    ///             None => Ok(()),
    ///         }
    ///     }
    /// }
    ///
    /// let cs = "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;\
    ///           SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
    /// let consumer = ConsumerClient::from_connection_string(cs, Some("eh1"), None).await?;
    /// let processor = EventProcessor::new(consumer, Arc::new(InMemoryCheckpointStore::new()), None)?;
    /// processor.run_with_handler(Arc::new(Print)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_with_handler<H: EventHandler>(&self, handler: Arc<H>) -> Result<()> {
        let on_error = Arc::clone(&handler);
        self.push(
            move |_| Shared(Arc::clone(&handler)),
            move |e| {
                let h = Arc::clone(&on_error);
                async move { h.process_error(e, None).await }
            },
        )
        .await
    }

    /// As [`EventProcessor::run_with_handler`], with a new [`PartitionProcessor`] from `factory`
    /// for each partition won. Load-balancing failures, which belong to no partition, are logged.
    pub async fn run_with_factory<P, F>(&self, factory: F) -> Result<()>
    where
        P: PartitionProcessor,
        F: Fn(&PartitionContext) -> P + Send + Sync + 'static,
    {
        self.push(factory, |_| async {}).await
    }

    async fn push<P, F, E, Fut>(&self, factory: F, on_error: E) -> Result<()>
    where
        P: PartitionProcessor,
        F: Fn(&PartitionContext) -> P + Send + Sync + 'static,
        E: Fn(Error) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (tx, mut errors) = mpsc::channel(64);
        self.set_error_sink(tx);
        let (batch, wait) = (self.options().max_batch_size, self.options().max_wait_time);
        let balance = self.run();
        let dispatch = async {
            let mut partitions = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    client = self.next_partition_client() => match client {
                        Some(client) => {
                            let p = factory(&client.context());
                            partitions.spawn(drive(client, p, batch, wait));
                        }
                        None => break,
                    },
                    Some(e) = errors.recv() => on_error(e).await,
                    Some(_) = partitions.join_next(), if !partitions.is_empty() => {}
                }
            }
            // Stopping: the partitions end (their close handlers run) before `run` releases them.
            while partitions.join_next().await.is_some() {}
            while let Ok(e) = errors.try_recv() {
                on_error(e).await;
            }
        };
        let (result, ()) = tokio::join!(balance, dispatch);
        result
    }
}
