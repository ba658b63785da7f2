//! Shared broker state: hubs, their partitions and consumer groups, and the receiver registry
//! that enforces owner-level (epoch) rules. No wire protocol: a front registers a receiver
//! with a callback that disconnects it in the front's own terms.

use crate::config::{CoreConfig, Policy};
use ehub_partition_log::{AppendCallback, AppendEvent, LogConfig, LogError, LogStore, Partition};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Called when a receiver is displaced by a higher owner level, with the service's text.
pub type OnDisplaced = Box<dyn Fn(String) + Send + Sync>;

/// A receiver registered on a partition of a consumer group.
pub struct ReceiverEntry {
    /// Unique id (from [`Broker::next_id`]).
    pub id: u64,
    /// Owner level, if any.
    pub epoch: Option<i64>,
    /// The receiver's name, for messages.
    pub name: Option<String>,
    /// Disconnects the receiver (AMQP: detach with `amqp:link:stolen`).
    pub on_displaced: OnDisplaced,
}

impl std::fmt::Debug for ReceiverEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverEntry")
            .field("id", &self.id)
            .field("epoch", &self.epoch)
            .field("name", &self.name)
            .finish()
    }
}

/// Why a receiver was not admitted, with the service's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitError {
    /// A higher owner level holds the partition (AMQP: `amqp:link:stolen`).
    Stolen(String),
    /// Too many receivers without an owner level (AMQP: `amqp:resource-limit-exceeded`).
    TooManyReceivers(String),
}

/// Receivers per partition of one consumer group.
#[derive(Debug)]
pub struct ConsumerGroup {
    /// The name as configured.
    pub name: String,
    receivers: Vec<Mutex<Vec<ReceiverEntry>>>,
}

impl ConsumerGroup {
    /// Applies the service's epoch rules (reference §10.3). On success the new receiver is
    /// registered and every displaced receiver's `on_displaced` is called.
    pub fn admit(&self, partition: usize, new: ReceiverEntry, max_non_epoch: usize) -> Result<(), AdmitError> {
        let mut list = self.receivers[partition].lock().unwrap_or_else(|p| p.into_inner());
        let name = |n: &Option<String>| n.clone().unwrap_or_else(|| "nil".into());
        let existing_epoch = list.iter().filter_map(|r| r.epoch).max();
        match (new.epoch, existing_epoch) {
            (Some(e), Some(old)) if e < old => {
                return Err(AdmitError::Stolen(format!(
                        "Receiver '{}' with a higher epoch '{old}' already exists. Receiver '{}' with epoch {e} cannot be created. Make sure you are creating receiver with increasing epoch value to ensure connectivity, or ensure all old epoch receivers are closed or disconnected.",
                        name(&new.name), name(&new.name)
                )));
            }
            (None, Some(old)) => {
                return Err(AdmitError::Stolen(format!("At least one receiver for the endpoint is created with epoch of '{old}', and so non-epoch receiver is not allowed. Either reconnect with a higher epoch, or make sure all epoch receivers are closed or disconnected.")));
            }
            (None, None) if list.len() >= max_non_epoch => {
                let names: Vec<String> = list.iter().map(|r| name(&r.name)).collect();
                return Err(AdmitError::TooManyReceivers(format!(
                    "Exceeded the maximum number of allowed receivers per partition in a consumer group which is {max_non_epoch}. List of connected receivers - {}.",
                    names.join(", ")
                )));
            }
            (Some(e), _) => {
                // Equal or higher epoch wins: every other receiver goes.
                for old in list.drain(..) {
                    let text = match old.epoch {
                        Some(oe) => format!("New receiver '{}' with higher epoch of '{e}' is created hence current receiver '{}' with epoch '{oe}' is getting disconnected. If you are recreating the receiver, make sure a higher epoch is used.", name(&new.name), name(&old.name)),
                        None => format!("New receiver '{}' with higher epoch of '{e}' is created hence current receiver '{}' with epoch '0' is getting disconnected. If you are recreating the receiver, make sure a higher epoch is used.", name(&new.name), name(&old.name)),
                    };
                    (old.on_displaced)(text);
                }
            }
            (None, None) => {}
        }
        list.push(new);
        Ok(())
    }

    /// Unregisters receiver `id`.
    pub fn remove(&self, partition: usize, id: u64) {
        self.receivers[partition].lock().unwrap_or_else(|p| p.into_inner()).retain(|r| r.id != id);
    }
}

/// One Event Hub.
#[derive(Debug)]
pub struct Hub {
    /// The name as configured.
    pub name: String,
    /// Unix milliseconds of the hub's first start.
    pub created_at: i64,
    /// The partitions' logs.
    pub partitions: Vec<Arc<Partition>>,
    /// Partition ids (`"0"`, `"1"`, …).
    pub partition_ids: Vec<String>,
    /// Consumer groups by lower-case name.
    pub consumer_groups: HashMap<String, Arc<ConsumerGroup>>,
    /// Where sends without a partition or key go next.
    pub round_robin: AtomicU64,
}

impl Hub {
    /// The index of partition `id`.
    pub fn partition_index(&self, id: &str) -> Option<usize> {
        let i: usize = id.parse().ok()?;
        (i < self.partitions.len() && self.partition_ids[i] == id).then_some(i)
    }

    /// A consumer group, by name in any case.
    pub fn consumer_group(&self, name: &str) -> Option<&Arc<ConsumerGroup>> {
        self.consumer_groups.get(&name.to_ascii_lowercase())
    }
}

/// The broker's shared state.
#[derive(Debug)]
pub struct Broker {
    pub(crate) config: CoreConfig,
    store: LogStore,
    hubs: HashMap<String, Arc<Hub>>,
    next_id: AtomicU64,
}

impl Broker {
    /// Opens (recovering) every partition of every configured hub.
    pub fn open(config: impl Into<CoreConfig>) -> Result<Arc<Self>, LogError> {
        let config = config.into();
        let store = LogStore::new(LogConfig {
            segment_bytes: config.segment_bytes,
            fsync: config.fsync,
            retention: config.retention,
            retention_bytes: config.retention_bytes,
            cache_bytes: config.cache_bytes_per_partition,
            writer_threads: config.writer_threads,
            preallocate_bytes: config.preallocate_bytes,
            ..LogConfig::default()
        });
        let mut hubs = HashMap::new();
        for h in &config.hubs {
            let dir = config.data_dir.join(h.name.to_ascii_lowercase());
            std::fs::create_dir_all(&dir).map_err(|e| LogError::Io { path: dir.clone(), source: e })?;
            let created_at = hub_created_at(&dir)?;
            let mut partitions = Vec::new();
            let mut ids = Vec::new();
            for i in 0..h.partitions {
                let id = i.to_string();
                partitions.push(store.open_partition(dir.join(&id), &id)?);
                ids.push(id);
            }
            let mut cgs = HashMap::new();
            for cg in std::iter::once("$Default".to_string()).chain(h.consumer_groups.iter().cloned()) {
                let receivers = (0..h.partitions).map(|_| Mutex::new(Vec::new())).collect();
                cgs.entry(cg.to_ascii_lowercase())
                    .or_insert_with(|| Arc::new(ConsumerGroup { name: cg.clone(), receivers }));
            }
            hubs.insert(
                h.name.to_ascii_lowercase(),
                Arc::new(Hub {
                    name: h.name.clone(),
                    created_at,
                    partitions,
                    partition_ids: ids,
                    consumer_groups: cgs,
                    round_robin: AtomicU64::new(0),
                }),
            );
        }
        Ok(Arc::new(Broker { config, store, hubs, next_id: AtomicU64::new(1) }))
    }

    /// A hub, by name in any case.
    pub fn hub(&self, name: &str) -> Option<&Arc<Hub>> {
        self.hubs.get(&name.to_ascii_lowercase())
    }

    /// Every hub.
    pub fn hubs(&self) -> impl Iterator<Item = &Arc<Hub>> {
        self.hubs.values()
    }

    /// A policy, by name.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.config.policies.iter().find(|p| p.name == name)
    }

    /// Appends events to a partition's log; `done` gets the outcome once it is durable under
    /// the fsync policy (group commit across all callers).
    pub fn append(&self, partition: &Arc<Partition>, events: Vec<AppendEvent>, done: AppendCallback) {
        self.store.append(partition, events, done);
    }

    /// A fresh id for a receiver or request.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Flushes and fsyncs every partition and stops the writers.
    pub fn shutdown_storage(&self) {
        self.store.shutdown();
    }
}

/// Reads (or records, on first start) the hub's creation time.
fn hub_created_at(dir: &std::path::Path) -> Result<i64, LogError> {
    let path = dir.join("created_at");
    if let Ok(s) = std::fs::read_to_string(&path) {
        if let Ok(v) = s.trim().parse() {
            return Ok(v);
        }
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    std::fs::write(&path, now.to_string()).map_err(|e| LogError::Io { path: path.clone(), source: e })?;
    Ok(now)
}
