//! [`ConsumerClient`] and [`EventReceiver`]: read events from partitions.

use crate::amqp::{ReceiverLink, ReceiverSpec, RecvItem};
use crate::client::{ClientCore, Conn};
use crate::credential::Credential;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{LastEnqueuedEventProperties, ReceivedEventData};
use crate::options::ClientOptions;
use crate::properties::{EventHubProperties, PartitionProperties};
use bytes::Bytes;
use ehub_amqp_codec::{Source, Symbol, Value};
use ehub_model::{link as link_props, EventPosition};
use futures_core::Stream;
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The default consumer group.
pub const DEFAULT_CONSUMER_GROUP: &str = "$Default";

/// The default most events requested ahead of a receiver's application. The official SDKs use
/// 300; with 100-byte events that window drains in about 150 µs here, less than a credit round
/// trip, so reads stalled on credit. With 3,000 the broker still ran out of credit about once
/// every 1,000 events of a fast reader; 10,000 hides the round trip. The byte bound
/// ([`DEFAULT_PREFETCH_BYTES`]) keeps the deeper window cheap: about 1.7 MB of 100-byte events,
/// and the count never matters for events above about 400 bytes.
pub const DEFAULT_PREFETCH: u32 = 10_000;
/// The default most bytes of events requested ahead of a receiver's application: 4 MiB.
pub const DEFAULT_PREFETCH_BYTES: u64 = 4 * 1024 * 1024;

/// Options of [`ConsumerClient::open_receiver_on_partition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReceiverOptions {
    /// Where to start (default: only events enqueued from now on, like the official SDKs).
    pub start_position: EventPosition,
    /// Owner level (epoch): an exclusive receiver that disconnects lower levels.
    pub owner_level: Option<i64>,
    /// The most events requested ahead of the application (link credit); at least 1. The
    /// receiver keeps as deep a window as this and [`OpenReceiverOptions::prefetch_bytes`]
    /// allow: small events stream without waiting for credit, large ones stay bounded in memory.
    pub prefetch: u32,
    /// The most bytes of events requested ahead: the window is at most `prefetch_bytes` divided
    /// by the average size of the events seen so far (and at least one event). Until the first
    /// events arrive, the window is 32 events (or `prefetch`, if smaller).
    pub prefetch_bytes: u64,
    /// Ask the service for the partition's last-enqueued metrics on every event.
    pub track_last_enqueued_event_properties: bool,
    /// Name shown in the service's error texts about this receiver.
    pub identifier: Option<String>,
}

impl Default for OpenReceiverOptions {
    fn default() -> Self {
        OpenReceiverOptions {
            start_position: EventPosition::Latest,
            owner_level: None,
            prefetch: DEFAULT_PREFETCH,
            prefetch_bytes: DEFAULT_PREFETCH_BYTES,
            track_last_enqueued_event_properties: false,
            identifier: None,
        }
    }
}

/// Builds a [`ConsumerClient`].
#[derive(Debug, Clone, Default)]
pub struct ConsumerClientBuilder {
    options: ClientOptions,
    consumer_group: Option<String>,
}

impl ConsumerClientBuilder {
    crate::client::builder_options!();

    /// Sets the consumer group (default `$Default`).
    pub fn with_consumer_group(mut self, group: impl Into<String>) -> Self {
        self.consumer_group = Some(group.into());
        self
    }

    /// Opens a consumer for `eventhub` in `fully_qualified_namespace`.
    pub async fn open(
        self,
        fully_qualified_namespace: &str,
        eventhub: &str,
        credential: impl Into<Credential>,
    ) -> Result<ConsumerClient> {
        let core = ClientCore::new(fully_qualified_namespace, None, eventhub, credential.into(), self.options)?;
        Ok(ConsumerClient::from_core(core, self.consumer_group))
    }

    /// Opens a consumer from a connection string.
    pub async fn open_with_connection_string(
        self,
        connection_string: &str,
        eventhub: Option<&str>,
    ) -> Result<ConsumerClient> {
        let core = ClientCore::from_connection_string(self.options, connection_string, eventhub)?;
        Ok(ConsumerClient::from_core(core, self.consumer_group))
    }
}

/// Reads events from an Event Hub's partitions within one consumer group.
#[derive(Debug, Clone)]
pub struct ConsumerClient {
    core: Arc<ClientCore>,
    consumer_group: String,
}

/// Options of [`ConsumerClient::receive`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Read only this partition (default: all).
    pub partition_id: Option<String>,
    /// Receiver options applied to every partition.
    pub receiver: OpenReceiverOptions,
}

impl ConsumerClient {
    /// A builder.
    pub fn builder() -> ConsumerClientBuilder {
        ConsumerClientBuilder::default()
    }

    /// Shorthand for `builder().with_consumer_group(group).open_with_connection_string(...)`.
    pub async fn from_connection_string(
        connection_string: &str,
        eventhub: Option<&str>,
        consumer_group: Option<&str>,
    ) -> Result<ConsumerClient> {
        let mut b = Self::builder();
        if let Some(g) = consumer_group {
            b = b.with_consumer_group(g);
        }
        b.open_with_connection_string(connection_string, eventhub).await
    }

    fn from_core(core: ClientCore, group: Option<String>) -> Self {
        ConsumerClient { core: Arc::new(core), consumer_group: group.unwrap_or_else(|| DEFAULT_CONSUMER_GROUP.into()) }
    }

    /// The hub's name.
    pub fn eventhub_name(&self) -> &str {
        &self.core.hub
    }

    /// The consumer group.
    pub fn consumer_group(&self) -> &str {
        &self.consumer_group
    }

    /// The namespace as checkpoint stores name it: the host, with the port when the connection
    /// string named one (as the official Python SDK writes it, e.g. `127.0.0.1:5672`).
    pub fn checkpoint_namespace(&self) -> String {
        match self.core.endpoint.named_port {
            Some(port) => format!("{}:{port}", self.core.endpoint.namespace),
            None => self.core.endpoint.namespace.clone(),
        }
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

    /// Opens a receiver on one partition. The link is attached before this returns, so a
    /// missing hub, a refused token or an owner-level conflict is reported here.
    pub async fn open_receiver_on_partition(
        &self,
        partition_id: &str,
        options: Option<OpenReceiverOptions>,
    ) -> Result<EventReceiver> {
        let options = options.unwrap_or_default();
        let mut r = EventReceiver {
            core: self.core.clone(),
            consumer_group: self.consumer_group.clone(),
            undelivered: Undelivered::new(partition_id, options.track_last_enqueued_event_properties),
            options,
            link: None,
            failed: false,
        };
        self.core.retry("opening the receiver", || r.attach_once()).await.map(|link| {
            r.link = Some(link);
            r
        })
    }

    /// Opens a receiver on `options.partition_id` or on every partition and merges what they
    /// read: [`EventBatches::next`] yields each partition's batches as they arrive.
    pub async fn receive_all(&self, options: ReceiveOptions) -> Result<EventBatches> {
        let partitions = match &options.partition_id {
            Some(p) => vec![p.clone()],
            None => self.get_partition_ids().await?,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(partitions.len().max(1) * 2);
        let mut tasks = tokio::task::JoinSet::new();
        for p in partitions {
            let (tx, me, ro) = (tx.clone(), self.clone(), options.receiver.clone());
            tasks.spawn(async move {
                let mut r = match me.open_receiver_on_partition(&p, Some(ro.clone())).await {
                    Ok(r) => r,
                    Err(e) => return drop(tx.send(Err(e)).await),
                };
                loop {
                    let batch = r.receive_batch(ro.prefetch.max(1) as usize, Duration::from_secs(3600)).await;
                    let stop = batch.is_err();
                    if tx.send(batch).await.is_err() || stop {
                        return;
                    }
                }
            });
        }
        Ok(EventBatches { rx, tasks })
    }

    /// Reads `options.partition_id` or every partition, calling `on_event` for each event
    /// until it returns [`ControlFlow::Break`], or a partition fails with an error that is not
    /// transient (that error is returned).
    pub async fn receive<F>(&self, options: ReceiveOptions, mut on_event: F) -> Result<()>
    where
        F: FnMut(ReceivedEventData) -> ControlFlow<()>,
    {
        let mut batches = self.receive_all(options).await?;
        let result = loop {
            match batches.next().await {
                Some(Ok(events)) => {
                    if events.into_iter().any(|e| on_event(e).is_break()) {
                        break Ok(());
                    }
                }
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        };
        batches.close().await;
        result
    }

    /// Closes the connection. Receivers opened from this client stop working.
    pub async fn close(&self) {
        self.core.close().await;
    }
}

/// Batches from several partitions, merged ([`ConsumerClient::receive_all`]). Dropping it
/// stops the receivers.
#[derive(Debug)]
pub struct EventBatches {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<ReceivedEventData>>>,
    tasks: tokio::task::JoinSet<()>,
}

impl EventBatches {
    /// The next batch from any partition; an error ends that partition's receiver. `None`
    /// once every receiver has ended.
    pub async fn next(&mut self) -> Option<Result<Vec<ReceivedEventData>>> {
        self.rx.recv().await
    }

    /// Stops the receivers and waits for them.
    pub async fn close(mut self) {
        self.tasks.shutdown().await;
    }
}

/// A receiver on one partition. It reconnects after transient failures and resumes right
/// after the last event it received, so no event is lost or repeated.
#[derive(Debug)]
pub struct EventReceiver {
    core: Arc<ClientCore>,
    consumer_group: String,
    options: OpenReceiverOptions,
    link: Option<(Conn, ReceiverLink)>,
    undelivered: Undelivered,
    failed: bool,
}

/// Received messages the application has not taken yet, decoded as it takes them, so an
/// undecodable message fails only its own turn: the events around it are still delivered.
#[derive(Debug)]
struct Undelivered {
    raw: VecDeque<Bytes>,
    /// The partition id, shared by every received event.
    partition_id: Arc<str>,
    track_last: bool,
    /// The last event handed to the application: a reconnect resumes after it (the receiver
    /// reconnects only once nothing is waiting here).
    last_sequence_number: Option<i64>,
    last_enqueued: Option<LastEnqueuedEventProperties>,
    /// An undecodable message met after a batch had events: the next call reports it.
    error: Option<Error>,
}

impl Undelivered {
    fn new(partition_id: &str, track_last: bool) -> Self {
        Undelivered {
            raw: VecDeque::new(),
            partition_id: Arc::from(partition_id),
            track_last,
            last_sequence_number: None,
            last_enqueued: None,
            error: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.raw.is_empty() && self.error.is_none()
    }

    /// The next event, or the error of an undecodable message (removed). `None` when empty.
    fn next(&mut self) -> Option<Result<ReceivedEventData>> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let raw = self.raw.pop_front()?;
        Some(ReceivedEventData::decode(raw, &self.partition_id, self.track_last).map(|(ev, last)| {
            self.last_sequence_number = Some(ev.sequence_number());
            if last.is_some() {
                self.last_enqueued = last;
            }
            ev
        }))
    }

    /// Moves events to `out` until it holds `max` or none are left. An undecodable message
    /// is reported at once when `out` is empty, otherwise by the next call, so the events
    /// before it are not held back.
    fn take(&mut self, max: usize, out: &mut Vec<ReceivedEventData>) -> Result<()> {
        out.reserve(max.saturating_sub(out.len()).min(self.raw.len()));
        while out.len() < max {
            match self.next() {
                None => break,
                Some(Ok(e)) => out.push(e),
                Some(Err(e)) if out.is_empty() => return Err(e),
                Some(Err(e)) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        Ok(())
    }
}

impl EventReceiver {
    /// The partition.
    pub fn partition_id(&self) -> &str {
        &self.undelivered.partition_id
    }

    /// The partition's last-enqueued metrics, as of the last event received (only with
    /// `track_last_enqueued_event_properties`).
    pub fn last_enqueued_event_properties(&self) -> Option<&LastEnqueuedEventProperties> {
        self.undelivered.last_enqueued.as_ref()
    }

    async fn attach_once(&self) -> Result<(Conn, ReceiverLink)> {
        let conn = self.core.connection().await?;
        let address = self.core.url(&format!(
            "{}/ConsumerGroups/{}/Partitions/{}",
            self.core.hub,
            self.consumer_group,
            self.partition_id()
        ));
        let position = match self.undelivered.last_sequence_number {
            Some(s) => EventPosition::SequenceNumber { value: s, inclusive: false },
            None => self.options.start_position.clone(),
        };
        let mut properties = Vec::new();
        if let Some(level) = self.options.owner_level {
            properties.push((Value::Symbol(link_props::EPOCH.into()), Value::Long(level)));
        }
        if let Some(id) = &self.options.identifier {
            properties.push((Value::Symbol(link_props::RECEIVER_NAME.into()), Value::String(id.clone())));
        }
        let mut caps = Vec::new();
        if self.options.track_last_enqueued_event_properties {
            caps.push(Symbol::from(link_props::RUNTIME_METRIC_CAPABILITY));
        }
        let spec = ReceiverSpec {
            name: uuid::Uuid::new_v4().to_string(),
            source: Source {
                address: Some(address.clone()),
                filter: Some(vec![position.to_filter_entry()]),
                ..Default::default()
            },
            properties: (!properties.is_empty()).then_some(properties),
            desired_capabilities: caps,
            prefetch: self.options.prefetch.max(1),
            prefetch_bytes: self.options.prefetch_bytes.max(1),
        };
        let r = self
            .core
            .attach_authorized(&conn, &address, || {
                self.core.with_timeout("attaching the receiver", conn.amqp.attach_receiver(spec.clone()))
            })
            .await;
        let link = self.core.settle_failure(&conn, r).await?;
        tracing::debug!(connection_id = conn.amqp.id, address = %address, "receiver attached");
        Ok((conn, link))
    }

    /// Waits for the next batch of deliveries and moves it into the buffer. Returns false
    /// when `deadline` passed first.
    async fn fill(&mut self, deadline: Option<Instant>) -> Result<bool> {
        // Only called once everything received was taken, so a reconnect resuming after the
        // last event taken loses and repeats nothing.
        debug_assert!(self.undelivered.is_empty(), "fill with events still waiting");
        if self.failed {
            return Err(Error::new(ErrorKind::ConnectionLost, "the receiver failed earlier; open a new one"));
        }
        let mut retried = 0u32;
        loop {
            if self.link.is_none() {
                match self.attach_once().await {
                    Ok(l) => self.link = Some(l),
                    Err(e) if e.is_transient() && retried < self.core.options.retry.max_retries => {
                        tokio::time::sleep(self.core.options.retry.delay(retried)).await;
                        retried += 1;
                        continue;
                    }
                    Err(e) => {
                        self.failed = true;
                        return Err(e);
                    }
                }
            }
            let (conn, link) = self.link.as_mut().expect("attached above");
            let item = match deadline {
                Some(d) => match tokio::time::timeout_at(d, link.rx.recv()).await {
                    Ok(item) => item,
                    Err(_) => return Ok(false),
                },
                None => link.rx.recv().await,
            };
            let err = match item {
                Some(RecvItem::Deliveries(ds)) => {
                    conn.amqp.credit(link.link, ds.len() as u32).await;
                    self.undelivered.raw.extend(ds.into_iter().map(|d| d.payload));
                    return Ok(true);
                }
                Some(RecvItem::Detached(e)) => e,
                None => Error::connection_lost("the connection ended"),
            };
            let (conn, _) = self.link.take().expect("present");
            if err.kind() == ErrorKind::ConnectionLost {
                self.core.discard(&conn).await;
            }
            if err.is_transient() && retried < self.core.options.retry.max_retries {
                tracing::info!(partition_id = %self.partition_id(), error = %err, "receiver lost; resuming");
                tokio::time::sleep(self.core.options.retry.delay(retried)).await;
                retried += 1;
                continue;
            }
            self.failed = true;
            return Err(err);
        }
    }

    /// The next event, waiting as long as it takes.
    pub async fn recv(&mut self) -> Result<ReceivedEventData> {
        loop {
            if let Some(e) = self.undelivered.next() {
                return e;
            }
            self.fill(None).await?;
        }
    }

    /// Up to `max_batch_size` events: whatever is available once at least one event arrived,
    /// or an empty list when none arrived within `max_wait_time`.
    pub async fn receive_batch(
        &mut self,
        max_batch_size: usize,
        max_wait_time: Duration,
    ) -> Result<Vec<ReceivedEventData>> {
        let deadline = Instant::now() + max_wait_time;
        let mut out = Vec::new();
        loop {
            // With events in hand, return: `take` stopped at the batch size, at the end of what
            // was received, or before an undecodable message (reported by the next call).
            self.undelivered.take(max_batch_size, &mut out)?;
            if !out.is_empty() || max_batch_size == 0 {
                return Ok(out);
            }
            if !self.fill(Some(deadline)).await? {
                return Ok(out);
            }
        }
    }

    /// The events as a [`Stream`]. It ends after yielding an error that is not transient.
    pub fn stream_events(&mut self) -> impl Stream<Item = Result<ReceivedEventData>> + '_ {
        futures_util::stream::unfold(self, |r| async move {
            if r.failed && r.undelivered.is_empty() {
                return None;
            }
            let item = r.recv().await;
            Some((item, r))
        })
    }

    /// Detaches the link.
    pub async fn close(mut self) {
        if let Some((conn, link)) = self.link.take() {
            conn.amqp.detach(link.link).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehub_amqp_codec::Message;
    use ehub_model::annotations as ann;

    /// A message as the service delivers it: sequence number `seq`, offset `seq * 100`.
    fn delivered(seq: i64) -> Bytes {
        let mut m = Message::with_data(Bytes::from(format!("event {seq}")));
        m.message_annotations = Some(vec![
            (Value::Symbol(ann::SEQUENCE_NUMBER.into()), Value::Long(seq)),
            (Value::Symbol(ann::OFFSET.into()), Value::String((seq * 100).to_string())),
        ]);
        m.to_bytes().unwrap()
    }

    fn bodies(events: &[ReceivedEventData]) -> Vec<&str> {
        events.iter().map(|e| e.body_as_str().unwrap()).collect()
    }

    #[test]
    fn an_undecodable_message_fails_its_own_turn_and_loses_no_event_around_it() {
        let mut u = Undelivered::new("0", false);
        u.raw.extend([delivered(1), delivered(2), Bytes::from_static(b"\x00\x53garbage"), delivered(3)]);
        let mut out = Vec::new();
        // The events before it come out first; the error waits for the next call.
        u.take(10, &mut out).unwrap();
        assert_eq!(bodies(&out), ["event 1", "event 2"]);
        assert!(!u.is_empty(), "the error is still owed");
        let err = u.take(10, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::EventData);
        assert!(!err.is_transient());
        // Then the event after it.
        let mut out = Vec::new();
        u.take(10, &mut out).unwrap();
        assert_eq!(bodies(&out), ["event 3"]);
        assert!(u.is_empty());
        assert_eq!(u.last_sequence_number, Some(3));
    }

    #[test]
    fn take_stops_at_the_batch_size_and_next_takes_one() {
        let mut u = Undelivered::new("0", false);
        u.raw.extend((1..=5).map(delivered));
        let mut out = Vec::new();
        u.take(3, &mut out).unwrap();
        assert_eq!(bodies(&out), ["event 1", "event 2", "event 3"]);
        assert_eq!(u.next().unwrap().unwrap().sequence_number(), 4);
        assert_eq!(u.last_sequence_number, Some(4));
        assert_eq!(u.next().unwrap().unwrap().offset(), "500");
        assert!(u.next().is_none());
    }
}
