//! # ehub-checkpoint-blob
//!
//! An Azure Blob Storage [`CheckpointStore`] for ehub's event processor, in the layout every
//! official Event Hubs SDK shares, so an ehub processor and a Python, JavaScript, .NET, Go or
//! Java one balance partitions and resume from each other's checkpoints in one container:
//!
//! - `{namespace}/{hub}/{consumer group}/ownership/{partition}`: an empty block blob whose
//!   metadata `ownerid` names the owner (`""` once released); claims are conditional
//!   (`If-Match` on the ETag read, `If-None-Match: *` for a first claim);
//! - `{namespace}/{hub}/{consumer group}/checkpoint/{partition}`: metadata `offset` and
//!   `sequencenumber`.
//!
//! Namespace, hub and consumer group are lower-cased, as .NET, JavaScript, Python and Go do.
//! It works against Azure Storage (SharedKey or SAS), Azurite and `ehub serve`'s Blob endpoint.
//! The container must exist (no official store creates it);
//! [`BlobCheckpointStore::create_container_if_missing`] is there for setup.
//!
//! ```no_run
//! # async fn demo() -> ehub::Result<()> {
//! use ehub::checkpoint::CheckpointStore;
//! use ehub_checkpoint_blob::BlobCheckpointStore;
//!
//! // Azurite's (and `ehub serve`'s) development account; or a real account's connection string.
//! let store = BlobCheckpointStore::from_connection_string("UseDevelopmentStorage=true", "checkpoints")?;
//! store.create_container_if_missing().await?;
//! let checkpoints = store.list_checkpoints("localhost:5672", "eh1", "$default").await?;
//! # Ok(()) }
//! ```
//!
//! Errors are typed: a refused key or SAS is [`ErrorKind::Authentication`], a missing container
//! [`ErrorKind::ResourceNotFound`], an unreachable service [`ErrorKind::Connect`]; transient
//! failures (408, 429, 5xx, connection errors) are retried twice before they are returned.
#![warn(missing_docs)]

mod container;
mod xml;

use container::{quoted, status_error, ContainerClient, Response};
use ehub::checkpoint::{checkpoint_prefix, ownership_prefix, Checkpoint, CheckpointStore, Ownership, Scope};
use ehub::{Error, ErrorKind, Result};
pub use ehub_storage_auth::{Credential, SharedKey, StorageConnectionString};
use http::header::{IF_MATCH, IF_NONE_MATCH};
use http::{Method, StatusCode};
use std::collections::BTreeMap;

/// Checkpoints and ownership in a Blob container.
#[derive(Clone)]
pub struct BlobCheckpointStore {
    container: ContainerClient,
}

impl std::fmt::Debug for BlobCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCheckpointStore").field("container", &self.container.url()).finish()
    }
}

impl BlobCheckpointStore {
    /// The store in `container` of the account a storage connection string names
    /// (`AccountName=…;AccountKey=…;BlobEndpoint=…`, `UseDevelopmentStorage=true`, or one with
    /// `SharedAccessSignature=…`).
    pub fn from_connection_string(connection_string: &str, container: &str) -> Result<Self> {
        let cs: StorageConnectionString = connection_string.parse().map_err(storage_auth_error)?;
        let credential = cs.credential().map_err(storage_auth_error)?;
        Self::new(&cs.blob_endpoint, container, credential)
    }

    /// The store in `container` under a Blob endpoint (`https://account.blob.core.windows.net`,
    /// or path-style `http://127.0.0.1:10000/devstoreaccount1`).
    pub fn new(blob_endpoint: &str, container: &str, credential: Credential) -> Result<Self> {
        Ok(BlobCheckpointStore { container: ContainerClient::new(blob_endpoint, container, credential)? })
    }

    /// The store in the container a URL names, with the SAS in its query if there is one:
    /// `https://account.blob.core.windows.net/checkpoints?sv=…&sig=…`.
    pub fn from_container_url(url: &str) -> Result<Self> {
        let (path, sas) = match url.split_once('?') {
            Some((p, q)) if !q.is_empty() => (p, Credential::Sas(q.to_owned())),
            Some((p, _)) => (p, Credential::Anonymous),
            None => (url, Credential::Anonymous),
        };
        let (endpoint, container) = path
            .trim_end_matches('/')
            .rsplit_once('/')
            .filter(|(e, _)| e.contains("://") && !e.ends_with('/'))
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, format!("`{path}` is not a container URL")))?;
        Self::new(endpoint, container, sas)
    }

    /// Retries transient failures (connection errors, timeouts, 408, 429, 5xx) by this policy
    /// (default: twice, after 200 and 400 ms).
    pub fn with_retry_options(mut self, retry: ehub::RetryOptions) -> Self {
        self.container.retry = retry;
        self
    }

    /// Lists in pages of at most `n` blobs (`maxresults`; the service's default is 5000).
    pub fn with_list_page_size(mut self, n: u32) -> Self {
        self.container.page_size = Some(n.max(1));
        self
    }

    /// The container's name.
    pub fn container(&self) -> &str {
        self.container.container()
    }

    /// Creates the container unless it exists; returns whether it created it.
    pub async fn create_container_if_missing(&self) -> Result<bool> {
        self.container.create().await
    }

    /// Whether the container exists (and the credential may read it).
    pub async fn container_exists(&self) -> Result<bool> {
        self.container.exists().await
    }

    async fn claim_one(&self, o: &Ownership) -> Result<Option<Ownership>> {
        let name = format!("{}{}", ownership_prefix(&o.namespace, &o.event_hub, &o.consumer_group), o.partition_id);
        let metadata = BTreeMap::from([("ownerid", o.owner_id.as_str())]);
        let create_only = || Some((IF_NONE_MATCH, "*".to_owned()));
        let r = match &o.etag {
            Some(etag) => {
                let r = self.container.set_metadata(&name, &metadata, Some((IF_MATCH, quoted(etag)))).await?;
                if r.status == StatusCode::NOT_FOUND && r.error_code().as_deref() == Some("BlobNotFound") {
                    // The record was deleted since it was read: claim it as new (as .NET does).
                    self.container.put_empty(&name, &metadata, create_only()).await?
                } else {
                    r
                }
            }
            None => self.container.put_empty(&name, &metadata, create_only()).await?,
        };
        match r.status {
            StatusCode::OK | StatusCode::CREATED => {
                let (etag, time) = r.etag_and_time()?;
                let scope = Scope::new(&o.namespace, &o.event_hub, &o.consumer_group);
                Ok(Some(scope.ownership(&o.partition_id, &o.owner_id, Some(etag), Some(time))))
            }
            // Another processor wrote the record first: the claim lost.
            StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => Ok(None),
            _ => Err(status_error(&Method::PUT, &name, &r)),
        }
    }
}

fn storage_auth_error(e: ehub_storage_auth::Error) -> Error {
    Error::new(ErrorKind::InvalidArgument, e.to_string()).with_source(e)
}

/// The partition id of a record: the name after its prefix.
fn partition_of<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix).filter(|p| !p.is_empty() && !p.contains('/'))
}

/// A metadata value by key, whatever case the service returned the key in.
fn meta<'a>(m: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    m.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
}

fn set_ok(r: &Response) -> bool {
    r.status == StatusCode::OK || r.status == StatusCode::CREATED
}

#[async_trait::async_trait]
impl CheckpointStore for BlobCheckpointStore {
    async fn list_ownerships(&self, namespace: &str, event_hub: &str, consumer_group: &str) -> Result<Vec<Ownership>> {
        let prefix = ownership_prefix(namespace, event_hub, consumer_group);
        let scope = Scope::new(namespace, event_hub, consumer_group);
        let blobs = self.container.list(&prefix).await?;
        Ok(blobs
            .into_iter()
            .filter_map(|b| {
                let partition_id = partition_of(&b.name, &prefix)?;
                // A record without `ownerid` (its metadata wiped by hand or by a buggy client)
                // is read as released, so it can be claimed again.
                let owner_id = meta(&b.metadata, "ownerid").unwrap_or_default();
                Some(scope.ownership(partition_id, owner_id, Some(quoted(&b.etag)), b.last_modified))
            })
            .collect())
    }

    async fn claim_ownerships(&self, ownerships: &[Ownership]) -> Result<Vec<Ownership>> {
        let results = futures_util::future::join_all(ownerships.iter().map(|o| self.claim_one(o))).await;
        let mut won = Vec::with_capacity(results.len());
        for r in results {
            won.extend(r?);
        }
        Ok(won)
    }

    async fn list_checkpoints(
        &self,
        namespace: &str,
        event_hub: &str,
        consumer_group: &str,
    ) -> Result<Vec<Checkpoint>> {
        let prefix = checkpoint_prefix(namespace, event_hub, consumer_group);
        let scope = Scope::new(namespace, event_hub, consumer_group);
        let mut checkpoints = Vec::new();
        for b in self.container.list(&prefix).await? {
            let Some(partition_id) = partition_of(&b.name, &prefix) else { continue };
            // .NET may write empty values; they mean "not set".
            let sequence_number = match meta(&b.metadata, "sequencenumber").filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(s.parse::<i64>().map_err(|_| {
                    Error::new(
                        ErrorKind::CheckpointStore,
                        format!("checkpoint store: blob `{}` has sequencenumber `{s}`, not a number", b.name),
                    )
                })?),
            };
            let offset = meta(&b.metadata, "offset").filter(|s| !s.is_empty()).map(str::to_owned);
            checkpoints.push(scope.checkpoint(partition_id, offset, sequence_number));
        }
        Ok(checkpoints)
    }

    async fn update_checkpoint(&self, c: &Checkpoint) -> Result<()> {
        let name = format!("{}{}", checkpoint_prefix(&c.namespace, &c.event_hub, &c.consumer_group), c.partition_id);
        let sequence = c.sequence_number.map(|s| s.to_string());
        let mut metadata = BTreeMap::new();
        if let Some(offset) = &c.offset {
            metadata.insert("offset", offset.as_str());
        }
        if let Some(s) = &sequence {
            metadata.insert("sequencenumber", s.as_str());
        }
        let r = self.container.set_metadata(&name, &metadata, None).await?;
        if set_ok(&r) {
            return Ok(());
        }
        if r.status == StatusCode::NOT_FOUND && r.error_code().as_deref() == Some("BlobNotFound") {
            // The partition's first checkpoint: create the record (as every official store does).
            let r = self.container.put_empty(&name, &metadata, None).await?;
            if set_ok(&r) {
                return Ok(());
            }
            return Err(status_error(&Method::PUT, &name, &r));
        }
        Err(status_error(&Method::PUT, &name, &r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_ids_are_the_names_after_the_prefix() {
        assert_eq!(partition_of("ns/h/$default/ownership/3", "ns/h/$default/ownership/"), Some("3"));
        assert_eq!(partition_of("ns/h/$default/ownership/", "ns/h/$default/ownership/"), None);
        assert_eq!(partition_of("ns/h/$default/ownership/3/x", "ns/h/$default/ownership/"), None);
    }

    #[test]
    fn container_urls_split_into_endpoint_container_and_sas() {
        let s = BlobCheckpointStore::from_container_url("https://a.blob.core.windows.net/ckpt?sv=1&sig=x").unwrap();
        assert_eq!(s.container(), "ckpt");
        let s = BlobCheckpointStore::from_container_url("http://127.0.0.1:10000/devstoreaccount1/ckpt/").unwrap();
        assert_eq!(s.container(), "ckpt");
        for bad in ["ckpt", "https://a.blob.core.windows.net", "https://"] {
            assert_eq!(
                BlobCheckpointStore::from_container_url(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
        let e = BlobCheckpointStore::from_connection_string("nonsense", "c").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }
}
