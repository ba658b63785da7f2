//! Shared broker state: hubs, their partitions and consumer groups, and the receiver registry
//! that enforces owner-level (epoch) rules. No wire protocol: a front registers a receiver
//! with a callback that disconnects it in the front's own terms.

use crate::admission::Admission;
use crate::auth::now_millis;
use crate::config::{CoreConfig, HubConfig, Policy};
use crate::error::CoreError;
use crate::faults::Faults;
use crate::metrics::{partition_labels, receiver_labels, CoreMetrics, PartitionCounters};
use crate::runtime::RuntimeState;
use ehub_partition_log::{AppendCallback, AppendEvent, LogConfig, LogError, LogStore, Partition};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Why a registered receiver is being disconnected, with the service's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Displaced {
    /// A receiver with a higher owner level took the partition (AMQP: `amqp:link:stolen`).
    Stolen(String),
    /// Its hub or consumer group was deleted (AMQP: `amqp:not-found`).
    Deleted(String),
}

/// Called when a receiver is displaced (by a higher owner level, or a deletion).
pub type OnDisplaced = Box<dyn Fn(Displaced) + Send + Sync>;

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
    /// Unix milliseconds when it was created (the hub's creation for configured groups).
    pub created_at: i64,
    /// Per partition; grows with the hub's partition count.
    receivers: RwLock<Vec<Mutex<Vec<ReceiverEntry>>>>,
}

impl ConsumerGroup {
    fn new(name: &str, partitions: usize, created_at: i64) -> Self {
        ConsumerGroup {
            name: name.to_owned(),
            created_at,
            receivers: RwLock::new((0..partitions).map(|_| Mutex::new(Vec::new())).collect()),
        }
    }

    fn receivers(&self) -> std::sync::RwLockReadGuard<'_, Vec<Mutex<Vec<ReceiverEntry>>>> {
        self.receivers.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for receivers of `partitions` partitions (the hub grew).
    fn grow(&self, partitions: usize) {
        let mut r = self.receivers.write().unwrap_or_else(|p| p.into_inner());
        while r.len() < partitions {
            r.push(Mutex::new(Vec::new()));
        }
    }

    /// Receivers connected to each partition.
    pub fn receiver_counts(&self) -> Vec<usize> {
        self.receivers().iter().map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).len()).collect()
    }

    /// Disconnects every receiver (the group or its hub is going away).
    fn displace_all(&self, text: &str) {
        for list in self.receivers().iter() {
            let gone: Vec<ReceiverEntry> = list.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
            for r in gone {
                (r.on_displaced)(Displaced::Deleted(text.to_owned()));
            }
        }
    }

    /// Applies the service's epoch rules (reference §10.3). On success the new receiver is
    /// registered and every displaced receiver's `on_displaced` is called.
    pub fn admit(&self, partition: usize, new: ReceiverEntry, max_non_epoch: usize) -> Result<(), AdmitError> {
        let receivers = self.receivers();
        let mut list = receivers[partition].lock().unwrap_or_else(|p| p.into_inner());
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
                    (old.on_displaced)(Displaced::Stolen(text));
                }
            }
            (None, None) => {}
        }
        list.push(new);
        Ok(())
    }

    /// Unregisters receiver `id`.
    pub fn remove(&self, partition: usize, id: u64) {
        self.receivers()[partition].lock().unwrap_or_else(|p| p.into_inner()).retain(|r| r.id != id);
    }
}

/// Where a hub or consumer group was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// In the configuration file (removed only by editing it).
    Config,
    /// Created while the broker ran (kept in the data directory across restarts).
    Runtime,
}

/// A hub's consumer groups by lower-case name, with where each was declared.
type GroupMap = HashMap<String, (Arc<ConsumerGroup>, Origin)>;

/// One Event Hub.
#[derive(Debug)]
pub struct Hub {
    /// The name as configured.
    pub name: String,
    /// Unix milliseconds of the hub's first start.
    pub created_at: i64,
    /// Where it was declared.
    pub origin: Origin,
    /// Retention by age of its events (`None`: the broker's).
    pub retention: Option<std::time::Duration>,
    /// The partitions' logs.
    pub partitions: Vec<Arc<Partition>>,
    /// Partition ids (`"0"`, `"1"`, …).
    pub partition_ids: Vec<String>,
    /// Each partition's traffic counters (metrics), by index.
    pub counters: Vec<PartitionCounters>,
    /// Consumer groups by lower-case name; shared with the hub's later handles when its
    /// partition count grows.
    consumer_groups: Arc<RwLock<GroupMap>>,
    /// Where sends without a partition or key go next.
    pub round_robin: AtomicU64,
    /// Set when the hub is deleted; shared by every handle of the hub (a handle from before
    /// the partition count grew is deleted with it).
    deleted: Arc<AtomicBool>,
    /// The hub's partition count grew: a newer handle holds every partition.
    replaced: AtomicBool,
}

impl Hub {
    /// The index of partition `id`.
    pub fn partition_index(&self, id: &str) -> Option<usize> {
        let i: usize = id.parse().ok()?;
        (i < self.partitions.len() && self.partition_ids[i] == id).then_some(i)
    }

    /// A consumer group, by name in any case.
    pub fn consumer_group(&self, name: &str) -> Option<Arc<ConsumerGroup>> {
        self.consumer_groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .map(|c| Arc::clone(&c.0))
    }

    /// Every consumer group with where it was declared, by name.
    pub fn consumer_groups(&self) -> Vec<(Arc<ConsumerGroup>, Origin)> {
        let mut v: Vec<_> = self.consumer_groups.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        v.sort_by_key(|g| g.0.name.to_ascii_lowercase());
        v
    }

    /// Whether the hub was deleted while this handle was held: fronts refuse further sends
    /// on links opened before.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Whether the hub's partition count grew since this handle was taken: fronts that route
    /// sends over the partitions take the new handle from [`Broker::hub`]. This handle's
    /// partitions stay valid (the new one has the same first ones).
    pub fn is_replaced(&self) -> bool {
        self.replaced.load(Ordering::Acquire)
    }
}

/// The broker's shared state.
#[derive(Debug)]
pub struct Broker {
    pub(crate) config: CoreConfig,
    store: LogStore,
    metrics: Arc<CoreMetrics>,
    faults: Arc<Faults>,
    admission: Arc<Admission>,
    hubs: RwLock<HashMap<String, Arc<Hub>>>,
    /// What was created at run time, as persisted; held while a change is applied so that
    /// changes are serialised and the file always matches the map.
    runtime: Mutex<RuntimeState>,
    next_id: AtomicU64,
}

impl Broker {
    /// Opens (recovering) every partition of every hub: those of the configuration, then those
    /// created at run time (recorded in `<data-dir>/_runtime.json`). A runtime record that
    /// contradicts the configuration is an error naming both, never resolved silently.
    pub fn open(config: impl Into<CoreConfig>) -> Result<Arc<Self>, CoreError> {
        let config = config.into();
        let admission = Arc::new(Admission::new(
            config.max_connections,
            config.max_connections_per_address,
            config.max_pending_connections,
            config.max_auth_failures,
            config.auth_failure_window,
        ));
        let metrics = Arc::new(CoreMetrics::default());
        let faults = Arc::new(Faults::default());
        let observer = Arc::new(Observer { metrics: Arc::clone(&metrics), faults: Arc::clone(&faults) });
        let store = LogStore::new(LogConfig {
            segment_bytes: config.segment_bytes,
            fsync: config.fsync,
            retention: config.retention,
            retention_bytes: config.retention_bytes,
            cache_bytes: config.cache_bytes_per_partition,
            writer_threads: config.writer_threads,
            preallocate_bytes: config.preallocate_bytes,
            observer: Some(observer as Arc<dyn ehub_partition_log::LogObserver>),
            ..LogConfig::default()
        });
        let runtime = RuntimeState::load(&config.data_dir)?;
        runtime.check_against(&config.hubs, &config.data_dir)?;
        let mut hubs = HashMap::new();
        for h in &config.hubs {
            let mut h = h.clone();
            if let Some(grown) = runtime.grown_partitions(&h.name).filter(|&n| n > h.partitions) {
                tracing::info!(entity = %h.name, partitions = grown, configured = h.partitions, "the hub's partition count grew at run time; keeping the larger count");
                h.partitions = grown;
            }
            let h = &h;
            let hub = open_hub(&store, &metrics, &config.data_dir, h, Origin::Config)?;
            for cg in runtime.groups_of(&h.name) {
                let group = ConsumerGroup::new(&cg.name, hub.partitions.len(), cg.created_at);
                hub.consumer_groups
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(cg.name.to_ascii_lowercase())
                    .or_insert_with(|| (Arc::new(group), Origin::Runtime));
            }
            hubs.insert(h.name.to_ascii_lowercase(), hub);
        }
        for h in &runtime.hubs {
            let hub = open_hub(&store, &metrics, &config.data_dir, &h.config(), Origin::Runtime)?;
            hubs.insert(h.name.to_ascii_lowercase(), hub);
        }
        Ok(Arc::new(Broker {
            config,
            store,
            metrics,
            faults,
            hubs: RwLock::new(hubs),
            runtime: Mutex::new(runtime),
            next_id: AtomicU64::new(1),
            admission,
        }))
    }

    /// A hub, by name in any case.
    pub fn hub(&self, name: &str) -> Option<Arc<Hub>> {
        self.hubs.read().unwrap_or_else(|p| p.into_inner()).get(&name.to_ascii_lowercase()).cloned()
    }

    /// Every hub, by name.
    pub fn hubs(&self) -> Vec<Arc<Hub>> {
        let mut v: Vec<_> = self.hubs.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        v.sort_by_key(|h| h.name.to_ascii_lowercase());
        v
    }

    /// Creates a hub while running (blocking file IO: call it off the reactor). It is kept
    /// across restarts. The name follows the service's rules for Event Hub names.
    pub fn create_hub(&self, hub: HubConfig) -> Result<Arc<Hub>, CoreError> {
        crate::runtime::validate_hub(
            &hub,
            self.config.max_partitions_per_hub,
            self.config.max_consumer_groups_per_hub,
        )?;
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        if self.hub(&hub.name).is_some() {
            return Err(CoreError::AlreadyExists(format!("The messaging entity '{}' already exists.", hub.name)));
        }
        let key = hub.name.to_ascii_lowercase();
        let dir = self.config.data_dir.join(&key);
        if dir.exists() {
            // Left by a deletion interrupted by a crash, or by an older hub of that name: a new
            // hub starts empty, as on the service.
            remove_dir(&dir)?;
        }
        let created = open_hub(&self.store, &self.metrics, &self.config.data_dir, &hub, Origin::Runtime)?;
        let mut next = runtime.clone();
        next.add_hub(&hub, created.created_at);
        next.save(&self.config.data_dir)?;
        *runtime = next;
        self.hubs.write().unwrap_or_else(|p| p.into_inner()).insert(key, Arc::clone(&created));
        tracing::info!(entity = %hub.name, partitions = hub.partitions, "hub created");
        Ok(created)
    }

    /// Deletes a hub created at run time with its events, disconnecting its receivers and
    /// refusing further sends (blocking file IO). Hubs from the configuration file are
    /// removed by editing it.
    pub fn delete_hub(&self, name: &str) -> Result<(), CoreError> {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let hub = self.hub(name).ok_or_else(|| CoreError::not_found(name))?;
        if hub.origin == Origin::Config {
            return Err(CoreError::Declared(format!(
                "Event Hub '{}' is declared in the configuration file; remove it there and restart.",
                hub.name
            )));
        }
        let mut next = runtime.clone();
        next.remove_hub(&hub.name);
        next.save(&self.config.data_dir)?;
        *runtime = next;
        let key = hub.name.to_ascii_lowercase();
        self.hubs.write().unwrap_or_else(|p| p.into_inner()).remove(&key);
        hub.deleted.store(true, Ordering::Release);
        let text = format!("The messaging entity '{}' was deleted.", hub.name);
        let groups = hub.consumer_groups();
        for (cg, _) in &groups {
            cg.displace_all(&text);
        }
        let names: Vec<String> = groups.iter().map(|(g, _)| g.name.clone()).collect();
        self.metrics.remove_hub(&hub.name, &hub.partition_ids, &names);
        // Writers still holding a partition write into unlinked files until they let go.
        remove_dir(&self.config.data_dir.join(&key))?;
        tracing::info!(entity = %hub.name, "hub deleted");
        Ok(())
    }

    /// Grows a hub's partition count while running (the service allows increases only;
    /// blocking file IO). Kept across restarts; a configured hub keeps the larger of its
    /// configured and grown counts. Receivers and producers on the existing partitions go on;
    /// clients see the new partitions when they next ask for the partition ids.
    pub fn grow_partitions(&self, name: &str, partitions: u32) -> Result<Arc<Hub>, CoreError> {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let hub = self.hub(name).ok_or_else(|| CoreError::not_found(name))?;
        let now = hub.partitions.len() as u32;
        if partitions < now {
            return Err(CoreError::Invalid(format!(
                "The partition count of Event Hub '{}' can only be increased: it has {now}, not {partitions}.",
                hub.name
            )));
        }
        if partitions == now {
            return Ok(hub);
        }
        if partitions > self.config.max_partitions_per_hub {
            return Err(CoreError::LimitExceeded(format!(
                "The partition count {partitions} is above the limit of {} per Event Hub.",
                self.config.max_partitions_per_hub
            )));
        }
        let dir = self.config.data_dir.join(hub.name.to_ascii_lowercase());
        let mut parts = hub.partitions.clone();
        let mut ids = hub.partition_ids.clone();
        let mut counters = hub.counters.clone();
        for i in now..partitions {
            let id = i.to_string();
            parts.push(self.store.open_partition_with_retention(dir.join(&id), &id, hub.retention)?);
            counters.push(self.metrics.partition(&hub.name, &id));
            ids.push(id);
        }
        let mut next = runtime.clone();
        next.set_partitions(&hub.name, hub.origin == Origin::Config, partitions);
        next.save(&self.config.data_dir)?;
        *runtime = next;
        for (g, _) in hub.consumer_groups() {
            g.grow(partitions as usize);
        }
        let grown = Arc::new(Hub {
            name: hub.name.clone(),
            created_at: hub.created_at,
            origin: hub.origin,
            retention: hub.retention,
            partitions: parts,
            partition_ids: ids,
            counters,
            consumer_groups: Arc::clone(&hub.consumer_groups),
            round_robin: AtomicU64::new(hub.round_robin.load(Ordering::Relaxed)),
            deleted: Arc::clone(&hub.deleted),
            replaced: AtomicBool::new(false),
        });
        self.hubs.write().unwrap_or_else(|p| p.into_inner()).insert(hub.name.to_ascii_lowercase(), Arc::clone(&grown));
        hub.replaced.store(true, Ordering::Release);
        tracing::info!(entity = %hub.name, from = now, partitions, "hub partition count grown");
        Ok(grown)
    }

    /// Creates a consumer group in a hub while running; kept across restarts.
    pub fn create_consumer_group(&self, hub_name: &str, name: &str) -> Result<Arc<ConsumerGroup>, CoreError> {
        crate::runtime::validate_consumer_group(name)?;
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let hub = self.hub(hub_name).ok_or_else(|| CoreError::not_found(hub_name))?;
        let mut groups = hub.consumer_groups.write().unwrap_or_else(|p| p.into_inner());
        if groups.contains_key(&name.to_ascii_lowercase()) {
            return Err(CoreError::AlreadyExists(format!(
                "Consumer group '{name}' already exists in Event Hub '{}'.",
                hub.name
            )));
        }
        if groups.len() >= self.config.max_consumer_groups_per_hub {
            return Err(CoreError::LimitExceeded(format!(
                "Event Hub '{}' has {} consumer groups, the most allowed.",
                hub.name,
                groups.len()
            )));
        }
        let created_at = now_millis();
        let mut next = runtime.clone();
        next.add_group(&hub.name, hub.origin == Origin::Config, name, created_at);
        next.save(&self.config.data_dir)?;
        *runtime = next;
        let group = Arc::new(ConsumerGroup::new(name, hub.partitions.len(), created_at));
        groups.insert(name.to_ascii_lowercase(), (Arc::clone(&group), Origin::Runtime));
        tracing::info!(entity = %hub.name, consumer_group = %name, "consumer group created");
        Ok(group)
    }

    /// Deletes a consumer group created at run time, disconnecting its receivers.
    /// `$Default` and the configuration file's groups stay.
    pub fn delete_consumer_group(&self, hub_name: &str, name: &str) -> Result<(), CoreError> {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let hub = self.hub(hub_name).ok_or_else(|| CoreError::not_found(hub_name))?;
        let mut groups = hub.consumer_groups.write().unwrap_or_else(|p| p.into_inner());
        let key = name.to_ascii_lowercase();
        let Some((group, origin)) = groups.get(&key).cloned() else {
            return Err(CoreError::NotFound(format!(
                "Consumer group '{name}' does not exist in Event Hub '{}'.",
                hub.name
            )));
        };
        if key == "$default" {
            return Err(CoreError::Declared("The $Default consumer group cannot be deleted.".into()));
        }
        if origin == Origin::Config {
            return Err(CoreError::Declared(format!(
                "Consumer group '{}' of Event Hub '{}' is declared in the configuration file; remove it there and restart.",
                group.name, hub.name
            )));
        }
        let mut next = runtime.clone();
        next.remove_group(&hub.name, &group.name);
        next.save(&self.config.data_dir)?;
        *runtime = next;
        groups.remove(&key);
        drop(groups);
        group.displace_all(&format!("The messaging entity '{}/ConsumerGroups/{}' was deleted.", hub.name, group.name));
        tracing::info!(entity = %hub.name, consumer_group = %group.name, "consumer group deleted");
        Ok(())
    }

    /// Whether storage takes writes: the data directory accepts a file, and no partition has
    /// turned read-only after a failed write (for health probes; blocking IO).
    pub fn storage_writable(&self) -> Result<(), String> {
        let probe = self.config.data_dir.join(".health-probe");
        std::fs::write(&probe, b"ok").map_err(|e| format!("{}: {e}", self.config.data_dir.display()))?;
        let _ = std::fs::remove_file(&probe);
        for hub in self.hubs() {
            for p in &hub.partitions {
                if p.is_failed() {
                    return Err(format!("partition {} of {} is read-only after a failed write", p.id(), hub.name));
                }
            }
        }
        Ok(())
    }

    /// A policy, by name.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.config.policies.iter().find(|p| p.name == name)
    }

    /// Appends events to partition `index` of `hub` like [`Broker::append`], and counts them
    /// in the partition's metrics once they are acknowledged.
    pub fn append_to(&self, hub: &Hub, index: usize, events: Vec<AppendEvent>, done: AppendCallback) {
        let (n, bytes) = (events.len() as u64, events.iter().map(|e| e.payload.len() as u64).sum::<u64>());
        let c = &hub.counters[index];
        let (events_in, bytes_in) = (c.events_in.clone(), c.bytes_in.clone());
        self.store.append(
            &hub.partitions[index],
            events,
            Box::new(move |r| {
                if r.is_ok() {
                    events_in.inc_by(n);
                    bytes_in.inc_by(bytes);
                }
                done(r)
            }),
        );
    }

    /// Connection slots and the failed-authorization limiter.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// Fault injection: what is in force, and the connections it reaches.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The core's metrics (register them with [`CoreMetrics::register`]).
    pub fn metrics(&self) -> &Arc<CoreMetrics> {
        &self.metrics
    }

    /// Sets the metrics read from the state (hub count, last sequence numbers, receivers per
    /// consumer group and partition); call before encoding a scrape.
    pub fn refresh_metrics(&self) {
        let hubs = self.hubs();
        self.metrics.hubs.set(hubs.len() as i64);
        self.faults.refresh_metrics();
        for hub in hubs {
            for (id, p) in hub.partition_ids.iter().zip(&hub.partitions) {
                self.metrics.last_sequence.get_or_create(&partition_labels(&hub.name, id)).set(p.committed_seq() - 1);
            }
            for (g, _) in hub.consumer_groups() {
                for (id, n) in hub.partition_ids.iter().zip(g.receiver_counts()) {
                    self.metrics.receivers.get_or_create(&receiver_labels(&hub.name, &g.name, id)).set(n as i64);
                }
            }
        }
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

fn open_hub(
    store: &LogStore,
    metrics: &CoreMetrics,
    data_dir: &std::path::Path,
    h: &HubConfig,
    origin: Origin,
) -> Result<Arc<Hub>, CoreError> {
    let dir = data_dir.join(h.name.to_ascii_lowercase());
    std::fs::create_dir_all(&dir).map_err(|e| LogError::Io { path: dir.clone(), source: e })?;
    let created_at = hub_created_at(&dir)?;
    let mut partitions = Vec::new();
    let mut ids = Vec::new();
    for i in 0..h.partitions {
        let id = i.to_string();
        partitions.push(store.open_partition_with_retention(dir.join(&id), &id, h.retention)?);
        ids.push(id);
    }
    let mut cgs = HashMap::new();
    for cg in std::iter::once("$Default".to_string()).chain(h.consumer_groups.iter().cloned()) {
        cgs.entry(cg.to_ascii_lowercase())
            .or_insert_with(|| (Arc::new(ConsumerGroup::new(&cg, h.partitions as usize, created_at)), origin));
    }
    let counters = ids.iter().map(|id| metrics.partition(&h.name, id)).collect();
    Ok(Arc::new(Hub {
        name: h.name.clone(),
        created_at,
        origin,
        retention: h.retention,
        partitions,
        partition_ids: ids,
        counters,
        consumer_groups: Arc::new(RwLock::new(cgs)),
        round_robin: AtomicU64::new(0),
        deleted: Arc::default(),
        replaced: AtomicBool::new(false),
    }))
}

/// The writers' observer: fsyncs counted in the metrics, delayed by an injected fault.
#[derive(Debug)]
struct Observer {
    metrics: Arc<CoreMetrics>,
    faults: Arc<Faults>,
}

impl ehub_partition_log::LogObserver for Observer {
    fn fsync(&self, took: std::time::Duration) {
        self.metrics.observe_fsync(took);
    }

    fn fsync_delay(&self) -> Option<std::time::Duration> {
        self.faults.fsync_delay()
    }
}

fn remove_dir(dir: &std::path::Path) -> Result<(), CoreError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::Io { path: dir.to_owned(), source: e }.into()),
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
    let now = now_millis();
    std::fs::write(&path, now.to_string()).map_err(|e| LogError::Io { path: path.clone(), source: e })?;
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> CoreConfig {
        CoreConfig { data_dir: dir.to_owned(), ..CoreConfig::default() }
    }

    #[test]
    fn hubs_grow_keep_their_receivers_and_stay_grown_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(config(dir.path())).unwrap();
        let old = broker.hub("eh1").unwrap();
        let cg = old.consumer_group("$default").unwrap();
        let entry = |id| ReceiverEntry { id, epoch: Some(1), name: None, on_displaced: Box::new(|_| {}) };
        cg.admit(3, entry(1), 5).unwrap();
        assert!(broker.grow_partitions("EH1", 2).unwrap_err().to_string().contains("only be increased"));
        assert_eq!(broker.grow_partitions("eh1", 9999).unwrap_err().kind(), crate::CoreErrorKind::LimitExceeded);
        let grown = broker.grow_partitions("eh1", 6).unwrap();
        assert_eq!(grown.partition_ids, ["0", "1", "2", "3", "4", "5"]);
        assert!(old.is_replaced() && !grown.is_replaced());
        assert!(Arc::ptr_eq(&old.partitions[3], &grown.partitions[3]), "the same logs");
        let same_cg = grown.consumer_group("$Default").unwrap();
        assert!(Arc::ptr_eq(&cg, &same_cg), "the same consumer groups");
        assert_eq!(same_cg.receiver_counts(), [0, 0, 0, 1, 0, 0]);
        same_cg.admit(5, entry(2), 5).unwrap();
        broker.shutdown_storage();
        drop((broker, old, grown, cg, same_cg));

        // The configured hub keeps the larger count; a larger configured count wins.
        let broker = Broker::open(config(dir.path())).unwrap();
        assert_eq!(broker.hub("eh1").unwrap().partitions.len(), 6);
        broker.shutdown_storage();
        drop(broker);
        let mut c = config(dir.path());
        c.hubs[0].partitions = 8;
        let broker = Broker::open(c).unwrap();
        assert_eq!(broker.hub("eh1").unwrap().partitions.len(), 8);
        // A hub deleted after it grew is deleted for the handles from before, too.
        let h = broker
            .create_hub(HubConfig { name: "runtime".into(), partitions: 1, consumer_groups: vec![], retention: None })
            .unwrap();
        broker.grow_partitions("runtime", 2).unwrap();
        broker.delete_hub("runtime").unwrap();
        assert!(h.is_replaced() && h.is_deleted());
        broker.shutdown_storage();
        drop(broker);
        // A grown record for a hub the file no longer declares is a clear error.
        let mut c = config(dir.path());
        c.hubs[0].name = "other".into();
        let e = Broker::open(c).unwrap_err().to_string();
        assert!(e.contains("'eh1' grew to 6 partitions"), "{e}");
    }
}
