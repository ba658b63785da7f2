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
