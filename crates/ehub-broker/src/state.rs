//! Shared broker state: hubs, their partitions and consumer groups, and the receiver registry
//! that enforces owner-level (epoch) rules.

use crate::config::{BrokerConfig, Policy};
use crate::connection::Control;
use ehub_amqp_codec::Error as AmqpError;
use ehub_amqp_endpoint::LinkId;
use ehub_model::conditions;
use ehub_partition_log::{LogConfig, LogError, LogStore, Partition};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;

/// A receiver registered on a partition of a consumer group.
#[derive(Debug, Clone)]
pub(crate) struct ReceiverEntry {
    pub id: u64,
    pub epoch: Option<i64>,
    pub name: Option<String>,
    pub ctl: UnboundedSender<Control>,
    pub link: LinkId,
}

/// Receivers per partition of one consumer group.
#[derive(Debug)]
pub(crate) struct ConsumerGroup {
    pub name: String,
    pub receivers: Vec<Mutex<Vec<ReceiverEntry>>>,
}

impl ConsumerGroup {
    /// Applies the service's epoch rules (reference §10.3). On success the new receiver is
    /// registered and every displaced receiver is told to detach with `amqp:link:stolen`.
    pub(crate) fn admit(&self, partition: usize, new: ReceiverEntry, max_non_epoch: usize) -> Result<(), AmqpError> {
        let mut list = self.receivers[partition].lock().unwrap_or_else(|p| p.into_inner());
        let name = |n: &Option<String>| n.clone().unwrap_or_else(|| "nil".into());
        let existing_epoch = list.iter().filter_map(|r| r.epoch).max();
        match (new.epoch, existing_epoch) {
            (Some(e), Some(old)) if e < old => {
                return Err(AmqpError::new(
                    conditions::LINK_STOLEN,
                    format!(
                        "Receiver '{}' with a higher epoch '{old}' already exists. Receiver '{}' with epoch {e} cannot be created. Make sure you are creating receiver with increasing epoch value to ensure connectivity, or ensure all old epoch receivers are closed or disconnected.",
                        name(&new.name), name(&new.name)
                    ),
                ));
            }
            (None, Some(old)) => {
                return Err(AmqpError::new(
                    conditions::LINK_STOLEN,
                    format!("At least one receiver for the endpoint is created with epoch of '{old}', and so non-epoch receiver is not allowed. Either reconnect with a higher epoch, or make sure all epoch receivers are closed or disconnected."),
                ));
            }
            (None, None) if list.len() >= max_non_epoch => {
                let names: Vec<String> = list.iter().map(|r| name(&r.name)).collect();
                return Err(AmqpError::new(
                    conditions::RESOURCE_LIMIT_EXCEEDED,
                    format!(
                        "Exceeded the maximum number of allowed receivers per partition in a consumer group which is {max_non_epoch}. List of connected receivers - {}.",
                        names.join(", ")
                    ),
                ));
            }
            (Some(e), _) => {
                // Equal or higher epoch wins: every other receiver goes.
                for old in list.drain(..) {
                    let text = match old.epoch {
                        Some(oe) => format!("New receiver '{}' with higher epoch of '{e}' is created hence current receiver '{}' with epoch '{oe}' is getting disconnected. If you are recreating the receiver, make sure a higher epoch is used.", name(&new.name), name(&old.name)),
                        None => format!("New receiver '{}' with higher epoch of '{e}' is created hence current receiver '{}' with epoch '0' is getting disconnected. If you are recreating the receiver, make sure a higher epoch is used.", name(&new.name), name(&old.name)),
                    };
                    let _ = old
                        .ctl
                        .send(Control::Steal { link: old.link, error: AmqpError::new(conditions::LINK_STOLEN, text) });
                }
            }
            (None, None) => {}
        }
        list.push(new);
        Ok(())
    }

    pub(crate) fn remove(&self, partition: usize, id: u64) {
        self.receivers[partition].lock().unwrap_or_else(|p| p.into_inner()).retain(|r| r.id != id);
    }
}

/// One Event Hub.
#[derive(Debug)]
pub(crate) struct Hub {
    pub name: String,
    pub created_at: i64,
    pub partitions: Vec<Arc<Partition>>,
    pub partition_ids: Vec<String>,
    pub consumer_groups: HashMap<String, Arc<ConsumerGroup>>,
    pub round_robin: AtomicU64,
}

impl Hub {
    pub(crate) fn partition_index(&self, id: &str) -> Option<usize> {
        let i: usize = id.parse().ok()?;
        (i < self.partitions.len() && self.partition_ids[i] == id).then_some(i)
    }

    pub(crate) fn consumer_group(&self, name: &str) -> Option<&Arc<ConsumerGroup>> {
        self.consumer_groups.get(&name.to_ascii_lowercase())
    }
}

/// The broker's shared state.
#[derive(Debug)]
pub struct Broker {
    pub(crate) config: BrokerConfig,
    pub(crate) store: LogStore,
    pub(crate) hubs: HashMap<String, Arc<Hub>>,
    pub(crate) next_id: AtomicU64,
}

impl Broker {
    /// Opens (recovering) every partition of every configured hub.
    pub fn open(config: BrokerConfig) -> Result<Arc<Self>, LogError> {
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

    pub(crate) fn hub(&self, name: &str) -> Option<&Arc<Hub>> {
        self.hubs.get(&name.to_ascii_lowercase())
    }

    pub(crate) fn policy(&self, name: &str) -> Option<&Policy> {
        self.config.policies.iter().find(|p| p.name == name)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrokerConfig {
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
