//! Broker configuration: our TOML file, or Microsoft's emulator Config.json unchanged.

use crate::tls::{TlsConfig, TlsSource};
use ehub_broker_admin::{AdminAuth, AdminConfig};
use ehub_broker_amqp::AmqpLimits;
use ehub_broker_blob::{BlobAuth, BlobConfig, StorageAccount};
use ehub_broker_core::{CoreConfig, HubConfig, Policy, Rights};
use ehub_broker_kafka::KafkaConfig;
use ehub_partition_log::FsyncPolicy;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// A configuration problem, naming the offending key.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config value for `{key}`: {message}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "read",
            ConfigError::Parse { .. } => "parse",
            ConfigError::Invalid { .. } => "invalid",
        }
    }
    /// Never transient.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// Everything the broker needs: the core's settings and the fronts'. [`CoreConfig`] is the
/// core's share (`config.into()`).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Listen address (plain AMQP).
    pub listen: SocketAddr,
    /// Listen address for AMQP over WebSockets (no TLS), if any.
    pub listen_websocket: Option<SocketAddr>,
    /// Where the Azure Blob endpoint listens (path-style `/<account>/<container>/<blob>`),
    /// if anywhere. Default 127.0.0.1:10000, Azurite's port, which the SDKs treat as
    /// path-style.
    pub listen_blob: Option<SocketAddr>,
    /// The Blob endpoint's accounts, auth mode and containers created at start.
    pub blob: BlobConfig,
    /// TLS: the certificate, and the AMQP-over-TLS and WebSockets-over-TLS listeners.
    pub tls: TlsConfig,
    /// Where the HTTP management endpoint (health, hubs and consumer groups) listens, if
    /// anywhere. Default 127.0.0.1:5300, the emulator's health port.
    pub listen_management: Option<SocketAddr>,
    /// The management endpoint's settings.
    pub management: AdminConfig,
    /// The AMQP front's limits: sessions, links, frame size, idle rules.
    pub amqp: AmqpLimits,
    /// Where the Kafka endpoint listens (SASL_PLAINTEXT, PLAIN with a connection string), if
    /// anywhere. Default 127.0.0.1:9092, the emulator's Kafka port.
    pub listen_kafka: Option<SocketAddr>,
    /// Where the Kafka endpoint listens over TLS (SASL_SSL, the service's port 9093) when
    /// [`BrokerConfig::tls`] has a certificate. Default 127.0.0.1:9093.
    pub listen_kafka_tls: Option<SocketAddr>,
    /// The Kafka endpoint's settings (the address it advertises, the request size limit).
    pub kafka: KafkaConfig,
    /// The core's settings: storage, limits, auth policies, hubs.
    pub core: CoreConfig,
}

impl From<BrokerConfig> for CoreConfig {
    fn from(c: BrokerConfig) -> CoreConfig {
        c.core
    }
}

impl Default for BrokerConfig {
    /// The core's defaults, AMQP on 127.0.0.1:5672 and Blob on 127.0.0.1:10000.
    fn default() -> Self {
        BrokerConfig {
            listen: "127.0.0.1:5672".parse().expect("valid address"),
            listen_websocket: None,
            listen_blob: Some("127.0.0.1:10000".parse().expect("valid address")),
            blob: BlobConfig::default(),
            tls: TlsConfig::default(),
            listen_management: Some("127.0.0.1:5300".parse().expect("valid address")),
            management: AdminConfig::default(),
            amqp: AmqpLimits::default(),
            listen_kafka: Some("127.0.0.1:9092".parse().expect("valid address")),
            listen_kafka_tls: Some("127.0.0.1:9093".parse().expect("valid address")),
            kafka: KafkaConfig::default(),
            core: CoreConfig::default(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    server: TomlServer,
    #[serde(default)]
    storage: TomlStorage,
    #[serde(default)]
    retention: TomlRetention,
    #[serde(default)]
    limits: TomlLimits,
    #[serde(default)]
    auth: TomlAuth,
    policies: Option<Vec<TomlPolicy>>,
    hubs: Option<Vec<TomlHub>>,
    #[serde(default)]
    blob: TomlBlob,
    #[serde(default)]
    tls: TomlTls,
    #[serde(default)]
    management: TomlManagement,
    #[serde(default)]
    kafka: TomlKafka,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlKafka {
    listen: Option<String>,
    advertised: Option<String>,
    listen_tls: Option<String>,
    advertised_tls: Option<String>,
    max_request_bytes: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlManagement {
    listen: Option<String>,
    auth: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed: Option<bool>,
    hosts: Option<Vec<String>>,
    listen: Option<String>,
    listen_websocket: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlServer {
    listen: Option<String>,
    listen_websocket: Option<String>,
    max_connections: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlStorage {
    data_dir: Option<PathBuf>,
    fsync: Option<String>,
    fsync_interval_ms: Option<u64>,
    segment_bytes: Option<u64>,
    cache_bytes_per_partition: Option<usize>,
    writer_threads: Option<usize>,
    preallocate_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlRetention {
    hours: Option<u64>,
    max_bytes_per_partition: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlLimits {
    max_message_size: Option<u64>,
    max_receivers_per_partition: Option<usize>,
    max_consumer_groups_per_hub: Option<usize>,
    max_partitions_per_hub: Option<u32>,
    handshake_timeout_secs: Option<f64>,
    max_connections_per_address: Option<usize>,
    max_pending_connections: Option<usize>,
    max_sessions_per_connection: Option<u16>,
    max_links_per_session: Option<u32>,
    max_frame_size: Option<u32>,
    max_auth_failures: Option<u32>,
    auth_failure_window_secs: Option<f64>,
    link_idle_timeout_secs: Option<f64>,
    empty_connection_timeout_secs: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlAuth {
    verify_sas: Option<bool>,
    accept_jwt: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlPolicy {
    name: String,
    key: String,
    rights: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlHub {
    name: String,
    partitions: u32,
    #[serde(default)]
    consumer_groups: Vec<String>,
    /// This hub's retention by age, in hours (fractions allowed); the broker's `[retention]`
    /// without it.
    retention_hours: Option<f64>,
}

/// Parses a listener address that may be turned off: `HOST:PORT`, or `off` (or empty) for
/// `None`.
pub fn parse_listen(s: &str) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
    match s {
        "" | "off" => Ok(None),
        _ => s.parse().map(Some),
    }
}

/// Parses the Kafka endpoint's advertised address, `HOST:PORT` ("" or "auto": the address
/// each client reached).
pub fn parse_advertised(s: &str) -> Result<Option<(String, u16)>, String> {
    if s.is_empty() || s == "auto" {
        return Ok(None);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("'{s}' is not HOST:PORT"))?;
    let port = port.parse::<u16>().map_err(|_| format!("'{port}' is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("'{s}' has no host"));
    }
    Ok(Some((host.to_owned(), port)))
}

/// Parses a fsync policy name.
pub fn parse_fsync(s: &str, interval_ms: u64) -> Option<FsyncPolicy> {
    match s.to_ascii_lowercase().as_str() {
        "always" => Some(FsyncPolicy::Always),
        "interval" => Some(FsyncPolicy::Interval(Duration::from_millis(interval_ms.max(1)))),
        "never" => Some(FsyncPolicy::Never),
        _ => None,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TomlBlob {
    listen: Option<String>,
    auth: Option<String>,
    containers: Option<Vec<String>>,
    max_blob_bytes: Option<usize>,
    accounts: Option<Vec<TomlAccount>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlAccount {
    name: String,
    key: String,
    key2: Option<String>,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl BrokerConfig {
    /// Loads a file: `.json` files are read as Microsoft's emulator Config.json, anything else
    /// as our TOML.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let cfg = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            Self::from_emulator_json(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })?
        } else {
            Self::from_toml(&text).map_err(|e| match e {
                ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.to_owned(), message },
                other => other,
            })?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses our TOML format.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let f: TomlFile =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), message: e.to_string() })?;
        let mut c = BrokerConfig::default();
        if let Some(l) = f.server.listen {
            c.listen = l.parse().map_err(|_| invalid("server.listen", format!("'{l}' is not HOST:PORT")))?;
        }
        if let Some(l) = f.server.listen_websocket.filter(|l| !l.is_empty()) {
            c.listen_websocket =
                Some(l.parse().map_err(|_| invalid("server.listen_websocket", format!("'{l}' is not HOST:PORT")))?);
        }
        if let Some(m) = f.server.max_connections {
            c.core.max_connections = m;
        }
        if let Some(d) = f.storage.data_dir {
            c.core.data_dir = d;
        }
        if let Some(s) = f.storage.fsync {
            c.core.fsync = parse_fsync(&s, f.storage.fsync_interval_ms.unwrap_or(100))
                .ok_or_else(|| invalid("storage.fsync", format!("'{s}' is not always, interval or never")))?;
        }
        if let Some(v) = f.storage.segment_bytes {
            c.core.segment_bytes = v;
        }
        if let Some(v) = f.storage.cache_bytes_per_partition {
            c.core.cache_bytes_per_partition = v;
        }
        if let Some(v) = f.storage.writer_threads {
            c.core.writer_threads = v;
        }
        if let Some(v) = f.storage.preallocate_bytes {
            c.core.preallocate_bytes = v;
        }
        c.core.retention = f.retention.hours.filter(|&h| h > 0).map(|h| Duration::from_secs(h * 3600));
        c.core.retention_bytes = f.retention.max_bytes_per_partition.filter(|&b| b > 0);
        if let Some(v) = f.limits.max_message_size {
            c.core.max_message_size = v;
        }
        if let Some(v) = f.limits.max_receivers_per_partition {
            c.core.max_receivers_per_partition = v;
        }
        if let Some(v) = f.auth.verify_sas {
            c.core.verify_sas = v;
        }
        if let Some(v) = f.auth.accept_jwt {
            c.core.accept_jwt = v;
        }
        if let Some(ps) = f.policies {
            c.core.policies = ps
                .into_iter()
                .map(|p| {
                    let mut r = Rights::default();
                    for right in &p.rights {
                        match right.to_ascii_lowercase().as_str() {
                            "send" => r.send = true,
                            "listen" => r.listen = true,
                            "manage" => r.manage = true,
                            other => return Err(invalid("policies.rights", format!("unknown right '{other}'"))),
                        }
                    }
                    Ok(Policy { name: p.name, key: p.key, rights: r })
                })
                .collect::<Result<_, _>>()?;
        }
        let optional_addr =
            |key: &str, l: String| parse_listen(&l).map_err(|_| invalid(key, format!("'{l}' is not HOST:PORT or off")));
        if let Some(l) = f.blob.listen {
            c.listen_blob = optional_addr("blob.listen", l)?;
        }
        if let Some(a) = f.blob.auth {
            c.blob.auth = match a.as_str() {
                "key" => BlobAuth::Key,
                "none" => BlobAuth::None,
                other => return Err(invalid("blob.auth", format!("'{other}' is not key or none"))),
            };
        }
        if let Some(cs) = f.blob.containers {
            c.blob.containers = cs;
        }
        if let Some(m) = f.blob.max_blob_bytes {
            c.blob.max_blob_bytes = m;
        }
        if let Some(accounts) = f.blob.accounts {
            c.blob.accounts = accounts
                .into_iter()
                .map(|a| StorageAccount { name: a.name, keys: std::iter::once(a.key).chain(a.key2).collect() })
                .collect();
        }
        c.tls.source = match (f.tls.cert, f.tls.key, f.tls.self_signed.unwrap_or(false)) {
            (Some(_), _, true) | (_, Some(_), true) => {
                return Err(invalid("tls.self_signed", "give either cert and key, or self_signed, not both"))
            }
            (Some(cert), Some(key), false) => TlsSource::Files { cert, key },
            (Some(_), None, false) => return Err(invalid("tls.key", "a certificate needs its key")),
            (None, Some(_), false) => return Err(invalid("tls.cert", "a key needs its certificate")),
            (None, None, true) => TlsSource::SelfSigned,
            (None, None, false) => TlsSource::Off,
        };
        if let Some(h) = f.tls.hosts {
            c.tls.hosts = h;
        }
        if let Some(l) = f.tls.listen {
            c.tls.listen = optional_addr("tls.listen", l)?;
        }
        if let Some(l) = f.tls.listen_websocket {
            c.tls.listen_websocket = optional_addr("tls.listen_websocket", l)?;
        }
        if let Some(l) = f.kafka.listen {
            c.listen_kafka = optional_addr("kafka.listen", l)?;
        }
        if let Some(a) = f.kafka.advertised {
            c.kafka.advertised = parse_advertised(&a).map_err(|e| invalid("kafka.advertised", e))?;
        }
        if let Some(l) = f.kafka.listen_tls {
            c.listen_kafka_tls = optional_addr("kafka.listen_tls", l)?;
        }
        if let Some(a) = f.kafka.advertised_tls {
            c.kafka.advertised_tls = parse_advertised(&a).map_err(|e| invalid("kafka.advertised_tls", e))?;
        }
        if let Some(m) = f.kafka.max_request_bytes {
            c.kafka.max_request_size = m;
        }
        if let Some(l) = f.management.listen {
            c.listen_management = optional_addr("management.listen", l)?;
        }
        if let Some(a) = f.management.auth {
            c.management.auth = match a.as_str() {
                "sas" => AdminAuth::Sas,
                "none" => AdminAuth::None,
                other => return Err(invalid("management.auth", format!("'{other}' is not sas or none"))),
            };
        }
        if let Some(v) = f.limits.max_consumer_groups_per_hub {
            c.core.max_consumer_groups_per_hub = v;
        }
        if let Some(v) = f.limits.max_partitions_per_hub {
            c.core.max_partitions_per_hub = v;
        }
        if let Some(v) = f.limits.handshake_timeout_secs {
            if !(v > 0.0 && v <= 3600.0) {
                return Err(invalid("limits.handshake_timeout_secs", format!("{v} is not in (0, 3600]")));
            }
            c.core.handshake_timeout = Duration::from_secs_f64(v);
        }
        let l = &f.limits;
        let secs = |v: Option<f64>, key: &str, into: &mut Duration| -> Result<(), ConfigError> {
            if let Some(v) = v {
                if !(v > 0.0 && v <= 86_400.0) {
                    return Err(invalid(key, format!("{v} is not in (0, 86400]")));
                }
                *into = Duration::from_secs_f64(v);
            }
            Ok(())
        };
        secs(l.auth_failure_window_secs, "limits.auth_failure_window_secs", &mut c.core.auth_failure_window)?;
        secs(l.link_idle_timeout_secs, "limits.link_idle_timeout_secs", &mut c.amqp.link_idle_timeout)?;
        secs(
            l.empty_connection_timeout_secs,
            "limits.empty_connection_timeout_secs",
            &mut c.amqp.empty_connection_timeout,
        )?;
        if let Some(v) = l.max_connections_per_address {
            c.core.max_connections_per_address = v;
        }
        if let Some(v) = l.max_pending_connections {
            c.core.max_pending_connections = v;
        }
        if let Some(v) = l.max_auth_failures {
            c.core.max_auth_failures = v;
        }
        if let Some(v) = l.max_sessions_per_connection {
            c.amqp.max_sessions_per_connection = v;
        }
        if let Some(v) = l.max_links_per_session {
            c.amqp.max_links_per_session = v;
        }
        if let Some(v) = l.max_frame_size {
            c.amqp.max_frame_size = v;
        }
        if let Some(hs) = f.hubs {
            c.core.hubs = hs
                .into_iter()
                .map(|h| {
                    let retention = h
                        .retention_hours
                        .map(|v| {
                            if v > 0.0 && v <= 24.0 * 3650.0 {
                                Ok(Duration::from_secs_f64(v * 3600.0))
                            } else {
                                Err(invalid("hubs.retention_hours", format!("{v} is not in (0, 87600]")))
                            }
                        })
                        .transpose()?;
                    Ok(HubConfig {
                        name: h.name,
                        partitions: h.partitions,
                        consumer_groups: h.consumer_groups,
                        retention,
                    })
                })
                .collect::<Result<_, ConfigError>>()?;
        }
        Ok(c)
    }

    /// Reads Microsoft's emulator Config.json (reference §14.2). `PartitionCount` may be a
    /// number or a string; `$Default` is always added.
    pub fn from_emulator_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let ns = v
            .pointer("/UserConfig/NamespaceConfig")
            .and_then(|n| n.as_array())
            .and_then(|a| a.first())
            .ok_or("missing UserConfig.NamespaceConfig[0]")?;
        let entities = ns.get("Entities").and_then(|e| e.as_array()).ok_or("missing Entities")?;
        let mut hubs = Vec::new();
        for e in entities {
            let name = e.get("Name").and_then(|n| n.as_str()).ok_or("entity without Name")?.to_owned();
            let pc = match e.get("PartitionCount") {
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            }
            .ok_or_else(|| format!("entity '{name}' has no valid PartitionCount"))?;
            let cgs = e
                .get("ConsumerGroups")
                .and_then(|c| c.as_array())
                .map(|a| a.iter().filter_map(|c| c.get("Name")?.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            hubs.push(HubConfig { name, partitions: pc as u32, consumer_groups: cgs, retention: None });
        }
        // Microsoft's emulator does not verify signatures (its samples use different keys).
        let mut c = BrokerConfig::default();
        c.core.hubs = hubs;
        c.core.verify_sas = false;
        Ok(c)
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.core.hubs.is_empty() {
            return Err(invalid("hubs", "at least one hub is needed"));
        }
        let mut seen = std::collections::HashSet::new();
        for h in &self.core.hubs {
            if h.name.is_empty() || h.name.contains('/') {
                return Err(invalid("hubs.name", format!("'{}' is not a valid hub name", h.name)));
            }
            if !seen.insert(h.name.to_ascii_lowercase()) {
                return Err(invalid("hubs.name", format!("hub '{}' is declared twice", h.name)));
            }
            if !(1..=1024).contains(&h.partitions) {
                return Err(invalid(
                    "hubs.partitions",
                    format!("hub '{}': {} is not in 1..=1024", h.name, h.partitions),
                ));
            }
        }
        if self.core.max_message_size < 1024 {
            return Err(invalid("limits.max_message_size", "must be at least 1024"));
        }
        if !(512..=16 << 20).contains(&self.amqp.max_frame_size) {
            return Err(invalid("limits.max_frame_size", "must be in 512..=16777216 (AMQP's minimum is 512)"));
        }
        if self.amqp.max_sessions_per_connection == 0 || self.amqp.max_links_per_session == 0 {
            return Err(invalid("limits", "max_sessions_per_connection and max_links_per_session must be at least 1"));
        }
        if self.core.max_connections_per_address == 0 || self.core.max_pending_connections == 0 {
            return Err(invalid(
                "limits",
                "max_connections_per_address and max_pending_connections must be at least 1",
            ));
        }
        if self.core.segment_bytes < 4096 {
            return Err(invalid("storage.segment_bytes", "must be at least 4096"));
        }
        for c in &self.blob.containers {
            ehub_blob_store::validate_container_name(c).map_err(|e| invalid("blob.containers", e.to_string()))?;
        }
        for a in &self.blob.accounts {
            if a.name.is_empty() || !a.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
                return Err(invalid(
                    "blob.accounts.name",
                    format!("'{}' is not a storage account name (lower-case letters and digits)", a.name),
                ));
            }
            for k in &a.keys {
                ehub_storage_auth::SharedKey::new(&a.name, k)
                    .map_err(|e| invalid("blob.accounts.key", e.to_string()))?;
            }
        }
        if self.blob.auth == BlobAuth::Key && self.blob.accounts.is_empty() {
            return Err(invalid("blob.accounts", "with auth = \"key\" at least one account is needed"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_toml_equals_builtin_defaults() {
        let c = BrokerConfig::from_toml(include_str!("../config/default.toml")).unwrap();
        let d = BrokerConfig::default();
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.core.fsync, d.core.fsync);
        assert_eq!(c.core.hubs.len(), 1);
        assert_eq!(c.core.hubs[0].partitions, 4);
        assert_eq!(c.core.policies[0].key, "SAS_KEY_VALUE");
        assert_eq!(c.listen_blob, d.listen_blob);
        assert_eq!(c.blob, d.blob);
        assert_eq!(c.tls, d.tls);
        assert_eq!(c.listen_management, d.listen_management);
        assert_eq!(c.management.auth, d.management.auth);
        assert_eq!(c.core.max_consumer_groups_per_hub, d.core.max_consumer_groups_per_hub);
        assert_eq!(c.core.max_partitions_per_hub, d.core.max_partitions_per_hub);
        assert_eq!(c.core.handshake_timeout, d.core.handshake_timeout);
        assert_eq!(c.core.max_connections_per_address, d.core.max_connections_per_address);
        assert_eq!(c.core.max_pending_connections, d.core.max_pending_connections);
        assert_eq!(
            (c.core.max_auth_failures, c.core.auth_failure_window),
            (d.core.max_auth_failures, d.core.auth_failure_window)
        );
        assert_eq!(c.amqp, d.amqp);
        c.validate().unwrap();
    }

    #[test]
    fn hubs_may_have_their_own_retention_and_limits_are_checked() {
        let c = BrokerConfig::from_toml(
            "[[hubs]]\nname = \"a\"\npartitions = 2\nretention_hours = 1.5\n[[hubs]]\nname = \"b\"\npartitions = 1\n[limits]\nmax_frame_size = 4096\nlink_idle_timeout_secs = 60\n",
        )
        .unwrap();
        assert_eq!(c.core.hubs[0].retention, Some(Duration::from_secs(5400)));
        assert_eq!(c.core.hubs[1].retention, None);
        assert_eq!((c.amqp.max_frame_size, c.amqp.link_idle_timeout), (4096, Duration::from_secs(60)));
        c.validate().unwrap();
        let e = BrokerConfig::from_toml("[[hubs]]\nname = \"a\"\npartitions = 2\nretention_hours = 0\n").unwrap_err();
        assert!(e.to_string().contains("hubs.retention_hours"), "{e}");
        let c = BrokerConfig::from_toml("[limits]\nmax_frame_size = 100\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("max_frame_size"));
    }

    #[test]
    fn tls_settings_parse_and_contradictions_are_named() {
        let c = BrokerConfig::from_toml(
            "[tls]\nself_signed = true\nhosts = [\"ehub.test\"]\nlisten = \"0.0.0.0:5671\"\nlisten_websocket = \"127.0.0.1:5443\"\n",
        )
        .unwrap();
        assert_eq!(c.tls.source, TlsSource::SelfSigned);
        assert_eq!(c.tls.hosts, ["ehub.test"]);
        assert_eq!(c.tls.listen, Some("0.0.0.0:5671".parse().unwrap()));
        assert_eq!(c.tls.listen_websocket, Some("127.0.0.1:5443".parse().unwrap()));
        let files = BrokerConfig::from_toml("[tls]\ncert = \"a.pem\"\nkey = \"k.pem\"\nlisten = \"off\"\n").unwrap();
        assert_eq!(files.tls.source, TlsSource::Files { cert: "a.pem".into(), key: "k.pem".into() });
        assert_eq!(files.tls.listen, None);
        for (text, key) in [
            ("[tls]\ncert = \"a.pem\"\n", "tls.key"),
            ("[tls]\nkey = \"k.pem\"\n", "tls.cert"),
            ("[tls]\ncert = \"a.pem\"\nkey = \"k.pem\"\nself_signed = true\n", "tls.self_signed"),
            ("[tls]\nlisten = \"nowhere\"\n", "tls.listen"),
        ] {
            match BrokerConfig::from_toml(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn emulator_config_json() {
        let j = r#"{"UserConfig":{"NamespaceConfig":[{"Type":"EventHub","Name":"emulatorNs1","Entities":[
            {"Name":"eh1","PartitionCount":"2","ConsumerGroups":[{"Name":"cg1"}]},
            {"Name":"eh2","PartitionCount":32,"ConsumerGroups":[]}]}],"LoggingConfig":{"Type":"File"}}}"#;
        let c = BrokerConfig::from_emulator_json(j).unwrap();
        assert_eq!(c.core.hubs[0].partitions, 2);
        assert_eq!(c.core.hubs[0].consumer_groups, vec!["cg1"]);
        assert_eq!(c.core.hubs[1].partitions, 32);
        assert!(!c.core.verify_sas);
    }

    #[test]
    fn the_kafka_section() {
        let c = BrokerConfig::from_toml(
            "[kafka]\nlisten = \"0.0.0.0:19092\"\nadvertised = \"kafka.local:9093\"\nmax_request_bytes = 4096\nlisten_tls = \"0.0.0.0:19093\"\nadvertised_tls = \"kafka.local:443\"\n",
        )
        .unwrap();
        assert_eq!(c.listen_kafka, Some("0.0.0.0:19092".parse().unwrap()));
        assert_eq!(c.kafka.advertised, Some(("kafka.local".to_string(), 9093)));
        assert_eq!(c.kafka.max_request_size, 4096);
        assert_eq!(c.listen_kafka_tls, Some("0.0.0.0:19093".parse().unwrap()));
        assert_eq!(c.kafka.advertised_tls, Some(("kafka.local".to_string(), 443)));
        let off = BrokerConfig::from_toml("[kafka]\nlisten = \"off\"\nadvertised = \"auto\"\nlisten_tls = \"off\"\n")
            .unwrap();
        assert_eq!((off.listen_kafka, off.kafka.advertised, off.listen_kafka_tls), (None, None, None));
        assert_eq!(BrokerConfig::default().listen_kafka_tls, Some("127.0.0.1:9093".parse().unwrap()));
        assert_eq!(BrokerConfig::default().listen_kafka, Some("127.0.0.1:9092".parse().unwrap()));
        assert_eq!(parse_advertised("[::1]:9092").unwrap(), Some(("::1".to_string(), 9092)));
        for bad in ["nohost", ":9092", "h:port"] {
            assert!(BrokerConfig::from_toml(&format!("[kafka]\nadvertised = \"{bad}\"\n")).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_blob_section() {
        let c = BrokerConfig::from_toml(
            "[blob]\nlisten = \"off\"\nauth = \"none\"\ncontainers = [\"a-b\", \"ckpt\"]\n\
             [[blob.accounts]]\nname = \"acct\"\nkey = \"QUJD\"\nkey2 = \"REVG\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen_blob, None);
        assert_eq!(c.blob.auth, BlobAuth::None);
        assert_eq!(c.blob.containers, vec!["a-b", "ckpt"]);
        assert_eq!(c.blob.accounts[0].keys, vec!["QUJD", "REVG"]);
        let d = BrokerConfig::default();
        assert_eq!(d.listen_blob, Some("127.0.0.1:10000".parse().unwrap()));
        assert_eq!(d.blob.containers, vec!["checkpoints"]);
        let e = BrokerConfig::from_toml("[blob]\ncontainers = [\"Bad_Name\"]").unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("blob.containers"), "{e}");
        let e = BrokerConfig::from_toml("[[blob.accounts]]\nname = \"a\"\nkey = \"not base64!\"")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("blob.accounts.key"), "{e}");
        assert!(BrokerConfig::from_toml("[blob]\nauth = \"maybe\"").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let e = BrokerConfig::from_toml("[storage]\nfsync = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("storage.fsync"), "{e}");
        let e = BrokerConfig::from_toml("[[hubs]]\nname=\"a\"\npartitions=0").unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("hubs.partitions"), "{e}");
        assert!(BrokerConfig::from_toml("bogus = 1").is_err());
    }
}
