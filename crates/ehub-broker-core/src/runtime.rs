//! What was created while the broker ran: hubs, and consumer groups added to the
//! configuration file's hubs. Kept in `<data-dir>/_runtime.json`, replaced atomically (written
//! to a temporary file, fsynced, renamed, directory fsynced) before a change is answered, so
//! an acknowledged creation survives a crash.

use crate::config::HubConfig;
use crate::error::CoreError;
use ehub_partition_log::LogError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const FILE: &str = "_runtime.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RuntimeState {
    /// Hubs created at run time, with their consumer groups.
    #[serde(default)]
    pub(crate) hubs: Vec<RuntimeHub>,
    /// Consumer groups created at run time on the configuration file's hubs.
    #[serde(default)]
    pub(crate) consumer_groups: Vec<RuntimeGroup>,
    /// Partition counts the configuration file's hubs grew to at run time.
    #[serde(default)]
    pub(crate) grown: Vec<GrownHub>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GrownHub {
    pub(crate) hub: String,
    pub(crate) partitions: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RuntimeHub {
    pub(crate) name: String,
    pub(crate) partitions: u32,
    pub(crate) created_at: i64,
    #[serde(default)]
    pub(crate) consumer_groups: Vec<String>,
    /// Retention by age, in seconds (`None`: the broker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) retention_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RuntimeGroup {
    pub(crate) hub: String,
    pub(crate) name: String,
    pub(crate) created_at: i64,
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl RuntimeHub {
    pub(crate) fn config(&self) -> HubConfig {
        HubConfig {
            name: self.name.clone(),
            partitions: self.partitions,
            consumer_groups: self.consumer_groups.clone(),
            retention: self.retention_secs.map(std::time::Duration::from_secs_f64),
        }
    }
}

impl RuntimeState {
    pub(crate) fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    pub(crate) fn load(data_dir: &Path) -> Result<Self, CoreError> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CoreError::Conflict(format!("{} is not a valid record of runtime changes: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(LogError::Io { path, source: e }.into()),
        }
    }

    pub(crate) fn save(&self, data_dir: &Path) -> Result<(), CoreError> {
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!("{FILE}.tmp"));
        let io = |p: &Path| {
            let p = p.to_owned();
            move |e| CoreError::Storage(LogError::Io { path: p, source: e })
        };
        std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let bytes = serde_json::to_vec_pretty(self).expect("serialisable");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io(data_dir))?;
        Ok(())
    }

    /// Refuses a record that contradicts the configuration file, naming both.
    pub(crate) fn check_against(&self, configured: &[HubConfig], data_dir: &Path) -> Result<(), CoreError> {
        let path = Self::path(data_dir);
        for h in &self.hubs {
            if let Some(c) = configured.iter().find(|c| same(&c.name, &h.name)) {
                return Err(CoreError::Conflict(format!(
                    "Event Hub '{}' is declared in the configuration file ({} partitions) and was also created while the broker ran ({} partitions, recorded in {}). Remove it from the configuration file, or remove its entry from {}.",
                    c.name, c.partitions, h.partitions, path.display(), path.display()
                )));
            }
        }
        for g in &self.grown {
            if !configured.iter().any(|c| same(&c.name, &g.hub)) {
                return Err(CoreError::Conflict(format!(
                    "Event Hub '{}' grew to {} partitions while the broker ran, and the configuration file no longer declares it (recorded in {}). Declare the hub again, or remove the entry from {}.",
                    g.hub, g.partitions, path.display(), path.display()
                )));
            }
        }
        for g in &self.consumer_groups {
            if !configured.iter().any(|c| same(&c.name, &g.hub)) {
                return Err(CoreError::Conflict(format!(
                    "Consumer group '{}' was created while the broker ran on Event Hub '{}', which the configuration file no longer declares (recorded in {}). Declare the hub again, or remove the entry from {}.",
                    g.name, g.hub, path.display(), path.display()
                )));
            }
        }
        Ok(())
    }

    /// The partition count a configured hub grew to at run time, if it did.
    pub(crate) fn grown_partitions(&self, hub: &str) -> Option<u32> {
        self.grown.iter().find(|g| same(&g.hub, hub)).map(|g| g.partitions)
    }

    pub(crate) fn set_partitions(&mut self, hub: &str, configured_hub: bool, partitions: u32) {
        if configured_hub {
            self.grown.retain(|g| !same(&g.hub, hub));
            self.grown.push(GrownHub { hub: hub.to_owned(), partitions });
        } else if let Some(h) = self.hubs.iter_mut().find(|h| same(&h.name, hub)) {
            h.partitions = partitions;
        }
    }

    pub(crate) fn groups_of<'a>(&'a self, hub: &'a str) -> impl Iterator<Item = &'a RuntimeGroup> + 'a {
        self.consumer_groups.iter().filter(move |g| same(&g.hub, hub))
    }

    pub(crate) fn add_hub(&mut self, h: &HubConfig, created_at: i64) {
        self.hubs.push(RuntimeHub {
            name: h.name.clone(),
            partitions: h.partitions,
            created_at,
            consumer_groups: h.consumer_groups.clone(),
            retention_secs: h.retention.map(|r| r.as_secs_f64()),
        });
    }

    pub(crate) fn remove_hub(&mut self, name: &str) {
        self.hubs.retain(|h| !same(&h.name, name));
    }

    pub(crate) fn add_group(&mut self, hub: &str, configured_hub: bool, name: &str, created_at: i64) {
        if configured_hub {
            self.consumer_groups.push(RuntimeGroup { hub: hub.to_owned(), name: name.to_owned(), created_at });
        } else if let Some(h) = self.hubs.iter_mut().find(|h| same(&h.name, hub)) {
            h.consumer_groups.push(name.to_owned());
        }
    }

    pub(crate) fn remove_group(&mut self, hub: &str, name: &str) {
        self.consumer_groups.retain(|g| !(same(&g.hub, hub) && same(&g.name, name)));
        for h in self.hubs.iter_mut().filter(|h| same(&h.name, hub)) {
            h.consumer_groups.retain(|g| !same(g, name));
        }
    }
}

/// The service's rule for entity names: letters, digits, `.`, `-` and `_`, starting and ending
/// with a letter or digit.
fn valid_name(name: &str, max: usize) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

pub(crate) fn validate_consumer_group(name: &str) -> Result<(), CoreError> {
    if valid_name(name, 50) {
        Ok(())
    } else {
        Err(CoreError::Invalid(format!(
            "'{name}' is not a valid consumer group name: 1 to 50 letters, digits, '.', '-' or '_', starting and ending with a letter or digit."
        )))
    }
}

pub(crate) fn validate_hub(h: &HubConfig, max_partitions: u32, max_groups: usize) -> Result<(), CoreError> {
    if !valid_name(&h.name, 256) {
        return Err(CoreError::Invalid(format!(
            "'{}' is not a valid Event Hub name: 1 to 256 letters, digits, '.', '-' or '_', starting and ending with a letter or digit.",
            h.name
        )));
    }
    if h.partitions == 0 || h.partitions > max_partitions {
        return Err(CoreError::Invalid(format!(
            "The partition count {} is not in 1..={max_partitions}.",
            h.partitions
        )));
    }
    for g in &h.consumer_groups {
        validate_consumer_group(g)?;
    }
    if h.retention.is_some_and(|r| r.is_zero()) {
        return Err(CoreError::Invalid("The retention must be longer than zero.".into()));
    }
    if h.consumer_groups.len() + 1 > max_groups {
        return Err(CoreError::LimitExceeded(format!("At most {max_groups} consumer groups per Event Hub.")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_services_rules() {
        for ok in ["eh1", "a", "my.hub-1_x", &"a".repeat(256)] {
            assert!(valid_name(ok, 256), "{ok}");
        }
        for bad in ["", "-a", "a-", "a/b", "a b", "é", &"a".repeat(257)] {
            assert!(!valid_name(bad, 256), "{bad}");
        }
        assert!(validate_consumer_group(&"c".repeat(51)).is_err());
    }
}
