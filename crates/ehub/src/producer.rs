//! [`ProducerClient`]: sends events and batches, reads hub and partition properties.

use crate::amqp::SenderLink;
use crate::batch::{EventDataBatch, EventDataBatchOptions};
use crate::client::{ClientCore, Conn};
use crate::credential::Credential;
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventData;
use crate::options::ClientOptions;
use crate::properties::{EventHubProperties, PartitionProperties};
use bytes::Bytes;
use ehub_amqp_codec::BATCH_MESSAGE_FORMAT;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

/// Where a single event or a list of events goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendEventOptions {
    /// Send to this partition (wins over `partition_key`).
    pub partition_id: Option<String>,
    /// Route by this key.
    pub partition_key: Option<String>,
}

/// Open sender links by partition (`None` = the hub), with the connection each lives on.
type SenderLinks = HashMap<Option<String>, (Conn, SenderLink)>;

/// Builds a [`ProducerClient`] (the official Azure crate's shape).
#[derive(Debug, Clone, Default)]
pub struct ProducerClientBuilder {
    options: ClientOptions,
}

impl ProducerClientBuilder {
    crate::client::builder_options!();

    /// Opens a producer for `eventhub` in the namespace `fully_qualified_namespace`
    /// (`<name>.servicebus.windows.net`).
    pub async fn open(
        self,
        fully_qualified_namespace: &str,
        eventhub: &str,
        credential: impl Into<Credential>,
    ) -> Result<ProducerClient> {
        let core = ClientCore::new(fully_qualified_namespace, None, eventhub, credential.into(), self.options)?;
        Ok(ProducerClient::from_core(core))
    }

    /// Opens a producer from a connection string. `eventhub` may be omitted when the string
    /// has an `EntityPath`. `UseDevelopmentEmulator=true` selects plain AMQP.
    pub async fn open_with_connection_string(
        self,
        connection_string: &str,
        eventhub: Option<&str>,
    ) -> Result<ProducerClient> {
        let core = ClientCore::from_connection_string(self.options, connection_string, eventhub)?;
        Ok(ProducerClient::from_core(core))
    }
}

/// Sends events to an Event Hub.
///
/// Links are opened on first use, one per partition (or one for the hub), and kept. Many
/// sends may be in flight on a link at once: each call waits only for its own acknowledgement.
#[derive(Debug, Clone)]
pub struct ProducerClient {
    core: Arc<ClientCore>,
    links: Arc<tokio::sync::Mutex<SenderLinks>>,
}

impl ProducerClient {
    /// A builder.
    pub fn builder() -> ProducerClientBuilder {
        ProducerClientBuilder::default()
    }

    /// Shorthand for `builder().open_with_connection_string(...)`.
    pub async fn from_connection_string(connection_string: &str, eventhub: Option<&str>) -> Result<ProducerClient> {
        Self::builder().open_with_connection_string(connection_string, eventhub).await
    }

    fn from_core(core: ClientCore) -> Self {
        ProducerClient { core: Arc::new(core), links: Arc::default() }
    }

    /// The hub's name.
    pub fn eventhub_name(&self) -> &str {
        &self.core.hub
    }

    /// The namespace host.
    pub fn fully_qualified_namespace(&self) -> &str {
        &self.core.endpoint.namespace
    }

    /// The properties the service sent when the connection opened (opening one if needed).
    /// Azure sends none; an ehub broker names itself and its fsync policy
    /// ([`ehub_model::EHUB_FSYNC_PROPERTY`]).
    pub async fn connection_properties(&self) -> Result<Vec<(String, String)>> {
        let conn = self.core.retry("connecting", || self.core.connection()).await?;
        Ok(conn
            .amqp
            .remote_properties
            .iter()
            .filter_map(|(k, v)| {
                Some((k.as_text()?.to_owned(), v.as_text().map(str::to_owned).unwrap_or_else(|| format!("{v:?}"))))
            })
            .collect())
    }

    /// Hub properties.
    pub async fn get_eventhub_properties(&self) -> Result<EventHubProperties> {
        self.core.eventhub_properties().await
    }

    /// Partition ids of the hub.
    pub async fn get_partition_ids(&self) -> Result<Vec<String>> {
        Ok(self.get_eventhub_properties().await?.partition_ids)
    }

    /// Properties of one partition.
    pub async fn get_partition_properties(&self, partition_id: &str) -> Result<PartitionProperties> {
        self.core.partition_properties(partition_id).await
    }

    /// An empty batch for the partition or key in `options`, as large as the link allows
    /// unless `max_size_in_bytes` is smaller.
    pub async fn create_batch(&self, options: Option<EventDataBatchOptions>) -> Result<EventDataBatch> {
        let o = options.unwrap_or_default();
        let (_, link) = self.core.retry("opening the sender", || self.sender(o.partition_id.as_deref())).await?;
        let link_max =
            if link.max_message_size == 0 { ehub_model::DEFAULT_MAX_MESSAGE_SIZE } else { link.max_message_size };
        let max = match o.max_size_in_bytes {
            Some(m) if m > link_max => {
                return Err(Error::invalid(format!(
                    "max_size_in_bytes {m} exceeds the link's limit of {link_max} bytes"
                )))
            }
            Some(m) => m,
            None => link_max,
        };
        EventDataBatch::new(o.partition_id, o.partition_key, max)
    }

    /// Sends one event.
    pub async fn send_event(&self, event: impl Into<EventData>, options: Option<SendEventOptions>) -> Result<()> {
        let o = options.unwrap_or_default();
        let key = if o.partition_id.is_some() { None } else { o.partition_key.as_deref() };
        let payload = event.into().encode(key)?;
        let span = tracing::debug_span!("ehub.send", hub = %self.core.hub, partition_id = o.partition_id.as_deref().unwrap_or(""), event_count = 1u64);
        self.send_raw(o.partition_id.as_deref(), 0, payload).instrument(span).await
    }

    /// Sends a batch made with [`ProducerClient::create_batch`]. An empty batch is a no-op.
    pub async fn send_batch(&self, batch: &EventDataBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let span = tracing::debug_span!("ehub.send", hub = %self.core.hub, partition_id = batch.partition_id().unwrap_or(""), event_count = batch.len() as u64);
        self.send_raw(batch.partition_id.as_deref(), BATCH_MESSAGE_FORMAT, batch.to_bytes()).instrument(span).await
    }

    /// Sends a list of events as one batch; it must fit into one message.
    pub async fn send_events(
        &self,
        events: impl IntoIterator<Item = EventData>,
        options: Option<SendEventOptions>,
    ) -> Result<()> {
        let o = options.unwrap_or_default();
        let mut batch = self
            .create_batch(Some(EventDataBatchOptions {
                partition_id: o.partition_id,
                partition_key: o.partition_key,
                max_size_in_bytes: None,
            }))
            .await?;
        for (i, e) in events.into_iter().enumerate() {
            if !batch.try_add(&e)? {
                return Err(Error::new(
                    ErrorKind::MessageTooLarge,
                    format!(
                        "the events do not fit into one batch of {} bytes (event {i} overflows)",
                        batch.max_size_in_bytes()
                    ),
                ));
            }
        }
        self.send_batch(&batch).await
    }

    async fn sender(&self, partition: Option<&str>) -> Result<(Conn, SenderLink)> {
        let mut links = self.links.lock().await;
        let key = partition.map(str::to_owned);
        if let Some((c, l)) = links.get(&key) {
            if !c.amqp.is_closed() {
                return Ok((c.clone(), *l));
            }
        }
        links.remove(&key);
        let conn = self.core.connection().await?;
        let path = match partition {
            Some(p) => format!("{}/Partitions/{p}", self.core.hub),
            None => self.core.hub.clone(),
        };
        let address = self.core.url(&path);
        let r = self
            .core
            .attach_authorized(&conn, &address, || {
                let name = uuid::Uuid::new_v4().to_string();
                self.core.with_timeout("attaching the sender", conn.amqp.attach_sender(name, address.clone()))
            })
            .await;
        let link = self.core.settle_failure(&conn, r).await?;
        tracing::debug!(connection_id = conn.amqp.id, address = %address, max_message_size = link.max_message_size, "sender attached");
        links.insert(key, (conn.clone(), link));
        Ok((conn, link))
    }

    async fn forget(&self, partition: Option<&str>, conn: &Conn) {
        let mut links = self.links.lock().await;
        let key = partition.map(str::to_owned);
        if links.get(&key).is_some_and(|(c, _)| c.amqp.id == conn.amqp.id) {
            if let Some((c, l)) = links.remove(&key) {
                c.amqp.detach(l.link).await;
            }
        }
    }

    async fn send_raw(&self, partition: Option<&str>, format: u32, payload: Bytes) -> Result<()> {
        self.core
            .retry("send", || async {
                let (conn, link) = self.sender(partition).await?;
                if link.max_message_size > 0 && payload.len() as u64 > link.max_message_size {
                    return Err(Error::new(
                        ErrorKind::MessageTooLarge,
                        format!("the message is {} bytes; the link allows {}", payload.len(), link.max_message_size),
                    ));
                }
                let r = self
                    .core
                    .with_timeout("send", async {
                        let ack = conn.amqp.send(link.link, format, payload.clone()).await?;
                        ack.await
                            .map_err(|_| Error::connection_lost("the connection ended before the acknowledgement"))?
                    })
                    .await;
                if let Err(e) = &r {
                    if matches!(e.kind(), ErrorKind::ConnectionLost | ErrorKind::OperationTimeout) {
                        self.forget(partition, &conn).await;
                    }
                }
                self.core.settle_failure(&conn, r).await
            })
            .await
    }

    /// Closes the links and the connection. Later calls fail with [`ErrorKind::ClientClosed`].
    pub async fn close(&self) {
        self.links.lock().await.clear();
        self.core.close().await;
    }
}
