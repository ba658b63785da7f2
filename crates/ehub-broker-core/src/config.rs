//! What the core needs to know: storage, limits, auth policies and hubs. Listener addresses
//! and the protocol fronts' own settings live with the fronts and the `ehub-broker` assembly.

use ehub_partition_log::FsyncPolicy;
use std::path::PathBuf;
use std::time::Duration;

/// Rights a policy grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rights {
    /// May send.
    pub send: bool,
    /// May receive.
    pub listen: bool,
    /// May manage (implies both).
    pub manage: bool,
}

impl Rights {
    /// Everything.
    pub const ALL: Rights = Rights { send: true, listen: true, manage: true };
    /// May send.
    pub fn can_send(&self) -> bool {
        self.send || self.manage
    }
    /// May receive.
    pub fn can_listen(&self) -> bool {
        self.listen || self.manage
    }
}

/// A shared access policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Policy (key) name.
    pub name: String,
    /// The key.
    pub key: String,
    /// Rights.
    pub rights: Rights,
}

/// One Event Hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Name (case-insensitive).
    pub name: String,
    /// Partition count (1..=1024).
    pub partitions: u32,
    /// Consumer groups besides `$Default`.
    pub consumer_groups: Vec<String>,
    /// Retention by age for this hub's events (`None`: the broker's [`CoreConfig::retention`]).
    pub retention: Option<Duration>,
}

/// The core's settings.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Simultaneous connections across the fronts that count them.
    pub max_connections: usize,
    /// Simultaneous connections from one client address.
    pub max_connections_per_address: usize,
    /// Connections that have not finished their handshake (TLS, SASL, AMQP open) at once.
    pub max_pending_connections: usize,
    /// Failed authorizations (refused tokens) from one client address within
    /// [`CoreConfig::auth_failure_window`] before its further attempts are refused unchecked
    /// until the window ends; 0: no limit.
    pub max_auth_failures: u32,
    /// The window [`CoreConfig::max_auth_failures`] counts in.
    pub auth_failure_window: Duration,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Durability policy.
    pub fsync: FsyncPolicy,
    /// Segment size.
    pub segment_bytes: u64,
    /// Tail cache per partition.
    pub cache_bytes_per_partition: usize,
    /// Writer threads.
    pub writer_threads: usize,
    /// Zeros written ahead of the data in each active segment, this many bytes at a time
    /// (0: off). See [`ehub_partition_log::LogConfig::preallocate_bytes`].
    pub preallocate_bytes: u64,
    /// Retention by age.
    pub retention: Option<Duration>,
    /// Retention by size.
    pub retention_bytes: Option<u64>,
    /// Largest event or batch.
    pub max_message_size: u64,
    /// Non-epoch receivers per partition per consumer group.
    pub max_receivers_per_partition: usize,
    /// Time a new connection gets to open (protocol header, SASL, AMQP open); a client that
    /// connects and sends nothing is closed after it.
    pub handshake_timeout: Duration,
    /// Consumer groups per hub, `$Default` included, for those created at run time (the
    /// service's Standard tier: 20).
    pub max_consumer_groups_per_hub: usize,
    /// Partitions of a hub created at run time (the configuration file allows up to 1024).
    pub max_partitions_per_hub: u32,
    /// Verify SAS tokens.
    pub verify_sas: bool,
    /// Accept jwt tokens unverified.
    pub accept_jwt: bool,
    /// Policies.
    pub policies: Vec<Policy>,
    /// Hubs.
    pub hubs: Vec<HubConfig>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            max_connections: 10_000,
            max_connections_per_address: 10_000,
            max_pending_connections: 1_000,
            max_auth_failures: 30,
            auth_failure_window: Duration::from_secs(60),
            data_dir: PathBuf::from("./ehub-data"),
            fsync: FsyncPolicy::Always,
            segment_bytes: 128 << 20,
            cache_bytes_per_partition: 8 << 20,
            writer_threads: 1,
            preallocate_bytes: 1 << 20,
            retention: None,
            retention_bytes: None,
            max_message_size: 1 << 20,
            max_receivers_per_partition: 5,
            handshake_timeout: Duration::from_secs(30),
            max_consumer_groups_per_hub: 20,
            max_partitions_per_hub: 1024,
            verify_sas: true,
            accept_jwt: true,
            policies: vec![Policy {
                name: "RootManageSharedAccessKey".into(),
                key: "SAS_KEY_VALUE".into(),
                rights: Rights::ALL,
            }],
            hubs: vec![HubConfig {
                name: "eh1".into(),
                partitions: 4,
                consumer_groups: vec!["cg1".into()],
                retention: None,
            }],
        }
    }
}
