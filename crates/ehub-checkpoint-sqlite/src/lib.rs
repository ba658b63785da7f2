//! # ehub-checkpoint-sqlite
//!
//! An SQLite [`CheckpointStore`] for ehub's event processor: partition ownership and checkpoints
//! in one file, which several processes on one machine share safely (WAL, conditional updates in
//! immediate transactions, a busy timeout), or in memory. The seed's `Sqlite3PartitionManager`,
//! done properly. SQLite is bundled: no system library is needed.
//!
//! ```no_run
//! # async fn demo() -> ehub::Result<()> {
//! use ehub::checkpoint::{Checkpoint, CheckpointStore};
//! use ehub_checkpoint_sqlite::SqliteCheckpointStore;
//!
//! let store = SqliteCheckpointStore::open("checkpoints.db").await?;
//! store
//!     .update_checkpoint(&Checkpoint {
//!         namespace: "localhost:5672".into(),
//!         event_hub: "eh1".into(),
//!         consumer_group: "$default".into(),
//!         partition_id: "0".into(),
//!         offset: Some("1024".into()),
//!         sequence_number: Some(9),
//!     })
//!     .await?;
//! let checkpoints = store.list_checkpoints("localhost:5672", "eh1", "$default").await?;
//! # Ok(()) }
//! ```
//!
//! Durability: a write returns once SQLite has committed it with `synchronous = FULL`, so an
//! acknowledged checkpoint or claim survives a crash of the process or the machine.
#![warn(missing_docs)]

use ehub::checkpoint::{store_error, Checkpoint, CheckpointStore, Ownership, Scope};
use ehub::Result;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a write waits for another process's transaction on the same file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ownership (
    namespace TEXT NOT NULL,
    event_hub TEXT NOT NULL,
    consumer_group TEXT NOT NULL,
    partition_id TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    etag INTEGER NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (namespace, event_hub, consumer_group, partition_id)
);
CREATE TABLE IF NOT EXISTS checkpoint (
    namespace TEXT NOT NULL,
    event_hub TEXT NOT NULL,
    consumer_group TEXT NOT NULL,
    partition_id TEXT NOT NULL,
    offset TEXT,
    sequence_number INTEGER,
    PRIMARY KEY (namespace, event_hub, consumer_group, partition_id)
);
-- The last ETag given out, so that every write gets a new one, from any process.
CREATE TABLE IF NOT EXISTS etag (id INTEGER PRIMARY KEY CHECK (id = 0), last INTEGER NOT NULL);
INSERT OR IGNORE INTO etag (id, last) VALUES (0, 0);
";

/// A checkpoint store in an SQLite database.
#[derive(Clone)]
pub struct SqliteCheckpointStore {
    conn: Arc<Mutex<Connection>>,
    /// Checkpoint updates wait here for the writer thread, which commits all that are waiting
    /// in one durable transaction (group commit).
    updates: std::sync::mpsc::SyncSender<PendingUpdate>,
}

/// One checkpoint update waiting for its commit.
struct PendingUpdate {
    checkpoint: Checkpoint,
    done: tokio::sync::oneshot::Sender<Result<()>>,
}

/// Updates waiting at most; a caller beyond that waits for room (backpressure).
const UPDATE_QUEUE: usize = 8192;

/// Commits every waiting update in one transaction, then answers each; until the store's last
/// clone is dropped.
fn write_updates(conn: Arc<Mutex<Connection>>, updates: std::sync::mpsc::Receiver<PendingUpdate>) {
    while let Ok(first) = updates.recv() {
        let mut batch = vec![first];
        while batch.len() < UPDATE_QUEUE {
            match updates.try_recv() {
                Ok(u) => batch.push(u),
                Err(_) => break,
            }
        }
        let result = match conn.lock() {
            Ok(mut conn) => commit_updates(&mut conn, &batch),
            Err(_) => Err(store_error("SQLite checkpoint store: a writer panicked")),
        };
        let failure = result.err().map(|e| e.to_string());
        for u in batch {
            let _ = u.done.send(match &failure {
                None => Ok(()),
                Some(why) => Err(store_error(why.clone())),
            });
        }
    }
}

fn commit_updates(conn: &mut Connection, batch: &[PendingUpdate]) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error("starting a checkpoint commit", e))?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO checkpoint (namespace, event_hub, consumer_group, partition_id, offset, sequence_number)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (namespace, event_hub, consumer_group, partition_id)
                 DO UPDATE SET offset = excluded.offset, sequence_number = excluded.sequence_number",
            )
            .map_err(|e| sql_error("writing a checkpoint", e))?;
        // In arrival order: of several updates to one partition, the last one stays.
        for u in batch {
            let c = &u.checkpoint;
            let scope = Scope::new(&c.namespace, &c.event_hub, &c.consumer_group);
            stmt.execute(params![
                scope.namespace,
                scope.event_hub,
                scope.consumer_group,
                c.partition_id,
                c.offset,
                c.sequence_number
            ])
            .map_err(|e| sql_error("writing a checkpoint", e))?;
        }
    }
    tx.commit().map_err(|e| sql_error("committing checkpoints", e))
}

impl std::fmt::Debug for SqliteCheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCheckpointStore").finish_non_exhaustive()
    }
}

fn sql_error(what: &str, e: rusqlite::Error) -> ehub::Error {
    store_error(format!("SQLite checkpoint store: {what}: {e}")).with_source(e)
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn etag_text(n: i64) -> String {
    format!("\"{n}\"")
}

impl SqliteCheckpointStore {
    /// Opens (creating if need be) the store in the database file at `path`. A file that is not
    /// an SQLite database, or one this process cannot write, is an error here rather than later.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        tokio::task::spawn_blocking(move || {
            let conn = Connection::open(&path).map_err(|e| sql_error(&format!("opening {}", path.display()), e))?;
            Self::prepare(conn, true)
        })
        .await
        .map_err(|e| store_error(format!("SQLite checkpoint store: the opening task failed: {e}")))?
    }

    /// A store in memory (SQLite's `:memory:`), gone when the last clone is dropped.
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(|e| sql_error("opening in memory", e))?;
        Self::prepare(conn, false)
    }

    fn prepare(conn: Connection, file: bool) -> Result<Self> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sql_error("setting the busy timeout", e))?;
        if file {
            // WAL lets readers in other processes go on while one writes; FULL makes each commit
            // durable before it returns.
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(|e| sql_error("reading the file (is it an SQLite database?)", e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(store_error(format!("SQLite checkpoint store: the file refused WAL mode ({mode})")));
            }
        }
        conn.execute_batch("PRAGMA synchronous = FULL;").map_err(|e| sql_error("setting synchronous", e))?;
        conn.execute_batch(SCHEMA).map_err(|e| sql_error("creating the tables", e))?;
        let conn = Arc::new(Mutex::new(conn));
        let (updates, queue) = std::sync::mpsc::sync_channel(UPDATE_QUEUE);
        let writer = Arc::clone(&conn);
        std::thread::Builder::new()
            .name("ehub-sqlite-checkpoints".into())
            .spawn(move || write_updates(writer, queue))
            .map_err(|e| store_error(format!("SQLite checkpoint store: starting the writer thread: {e}")))?;
        Ok(SqliteCheckpointStore { conn, updates })
    }

    /// Runs `f` on the connection off the async reactor.
    async fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| store_error("SQLite checkpoint store: a writer panicked"))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| store_error(format!("SQLite checkpoint store: a task failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl CheckpointStore for SqliteCheckpointStore {
    async fn list_ownerships(&self, namespace: &str, event_hub: &str, consumer_group: &str) -> Result<Vec<Ownership>> {
        let scope = Scope::new(namespace, event_hub, consumer_group);
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT partition_id, owner_id, etag, last_modified_ms FROM ownership
                     WHERE namespace = ?1 AND event_hub = ?2 AND consumer_group = ?3 ORDER BY partition_id",
                )
                .map_err(|e| sql_error("listing ownerships", e))?;
            let rows = stmt
                .query_map(params![scope.namespace, scope.event_hub, scope.consumer_group], |r| {
                    Ok(scope.ownership(
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        Some(etag_text(r.get(2)?)),
                        Some(UNIX_EPOCH + Duration::from_millis(r.get::<_, i64>(3)?.max(0) as u64)),
                    ))
                })
                .map_err(|e| sql_error("listing ownerships", e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| sql_error("reading ownerships", e))
        })
        .await
    }

    async fn claim_ownerships(&self, ownerships: &[Ownership]) -> Result<Vec<Ownership>> {
        let claims = ownerships.to_vec();
        self.with_conn(move |conn| {
            // One immediate transaction: the check and the write of each claim are atomic across
            // processes, and the claims share one durable commit.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_error("starting a claim", e))?;
            let mut won = Vec::new();
            for o in claims {
                let Scope { namespace: ns, event_hub: hub, consumer_group: cg } =
                    Scope::new(&o.namespace, &o.event_hub, &o.consumer_group);
                let current: Option<i64> = tx
                    .query_row(
                        "SELECT etag FROM ownership WHERE namespace = ?1 AND event_hub = ?2 AND consumer_group = ?3
                         AND partition_id = ?4",
                        params![ns, hub, cg, o.partition_id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| sql_error("reading an ownership", e))?;
                if current.map(etag_text) != o.etag {
                    continue;
                }
                let etag: i64 = tx
                    .query_row("UPDATE etag SET last = last + 1 WHERE id = 0 RETURNING last", [], |r| r.get(0))
                    .map_err(|e| sql_error("taking an ETag", e))?;
                let now = SystemTime::now();
                tx.execute(
                    "INSERT INTO ownership (namespace, event_hub, consumer_group, partition_id, owner_id, etag, last_modified_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (namespace, event_hub, consumer_group, partition_id)
                     DO UPDATE SET owner_id = excluded.owner_id, etag = excluded.etag, last_modified_ms = excluded.last_modified_ms",
                    params![ns, hub, cg, o.partition_id, o.owner_id, etag, millis(now)],
                )
                .map_err(|e| sql_error("writing an ownership", e))?;
                won.push(Ownership {
                    namespace: ns,
                    event_hub: hub,
                    consumer_group: cg,
                    etag: Some(etag_text(etag)),
                    // Millisecond precision, as the listing reads it back.
                    last_modified: Some(UNIX_EPOCH + Duration::from_millis(millis(now) as u64)),
                    ..o
                });
            }
            tx.commit().map_err(|e| sql_error("committing a claim", e))?;
            Ok(won)
        })
        .await
    }

    async fn list_checkpoints(
        &self,
        namespace: &str,
        event_hub: &str,
        consumer_group: &str,
    ) -> Result<Vec<Checkpoint>> {
        let scope = Scope::new(namespace, event_hub, consumer_group);
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT partition_id, offset, sequence_number FROM checkpoint
                     WHERE namespace = ?1 AND event_hub = ?2 AND consumer_group = ?3 ORDER BY partition_id",
                )
                .map_err(|e| sql_error("listing checkpoints", e))?;
            let rows = stmt
                .query_map(params![scope.namespace, scope.event_hub, scope.consumer_group], |r| {
                    Ok(scope.checkpoint(r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(|e| sql_error("listing checkpoints", e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| sql_error("reading checkpoints", e))
        })
        .await
    }

    /// Returns once the update is committed durably. Updates from many callers (partitions,
    /// processors sharing the store) that wait at the same time share one commit.
    async fn update_checkpoint(&self, c: &Checkpoint) -> Result<()> {
        let (done, committed) = tokio::sync::oneshot::channel();
        let pending = PendingUpdate { checkpoint: c.clone(), done };
        let stopped = || store_error("SQLite checkpoint store: the writer thread stopped");
        match self.updates.try_send(pending) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(pending)) => {
                // A full queue: wait for room off the reactor.
                let updates = self.updates.clone();
                tokio::task::spawn_blocking(move || updates.send(pending).map_err(drop))
                    .await
                    .map_err(|e| store_error(format!("SQLite checkpoint store: a task failed: {e}")))?
                    .map_err(|_| stopped())?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(stopped()),
        }
        committed.await.map_err(|_| stopped())?
    }
}
