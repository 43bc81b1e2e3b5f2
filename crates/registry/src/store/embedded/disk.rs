//! The embedded store's file: a redb database, loaded once at start and
//! then written by one thread with group commit.
//!
//! Each mutation is a small batch of puts and deletes plus the new indexes.
//! The writer task takes every mutation that is waiting, applies them all
//! in one write transaction and commits once (fsync), then answers each
//! caller: under a burst of registrations the cost of a commit is shared
//! instead of paid per request, and a caller is answered only once its
//! change is on disk (so an acknowledged registration survives `kill -9`).
//! The commit itself runs on tokio's blocking pool, which also keeps a
//! paused test clock from jumping ahead while the disk works.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use redb::{Database, DatabaseError, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use crate::error::StoreError;

/// `service/id` → the instance record (JSON of the wire `Instance`).
const INSTANCES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("instances");
/// `service` → the index of its last change.
const SERVICE_INDEX: TableDefinition<'_, &str, u64> = TableDefinition::new("service_index");
/// `"index"` → the store's index.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Most mutations folded into one commit.
const MAX_GROUP: usize = 4096;
/// How long `open` waits for a previous handle of the same file (one that
/// is still being dropped in this process) to let go of it.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// One change to write.
#[derive(Debug)]
pub(crate) enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// One mutation: its writes and the indexes it moves.
#[derive(Debug)]
pub(crate) struct Mutation {
    pub ops: Vec<Op>,
    /// Services that changed, all at `index`.
    pub services: Vec<String>,
    pub index: u64,
}

type Reply = oneshot::Sender<Result<(), String>>;

/// Everything read back at start.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub index: u64,
    pub service_index: Vec<(String, u64)>,
    /// `(key, value)` of every instance.
    pub instances: Vec<(String, Vec<u8>)>,
}

/// The handle that queues mutations for the writer task.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<(Mutation, Reply)>,
}

pub(crate) fn file(dir: &Path) -> PathBuf {
    dir.join("registry.redb")
}

/// Opens (creating if needed) the database in `dir` and reads it. Blocking:
/// call it on the blocking pool.
pub(crate) fn open(dir: &Path) -> Result<(Loaded, Database), StoreError> {
    let open_err = |reason: String| StoreError::Open {
        path: dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
    let path = file(dir);
    let started = Instant::now();
    let db = loop {
        match Database::create(&path) {
            Ok(db) => break db,
            Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < REOPEN_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(open_err(e.to_string())),
        }
    };
    let loaded = load(&db)?;
    info!(path = %path.display(), instances = loaded.instances.len(), index = loaded.index, "embedded store opened");
    Ok((loaded, db))
}

/// Starts the writer task that owns `db`.
pub(crate) fn start_writer(db: Database) -> Writer {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(Arc::new(db), rx));
    Writer { tx }
}

fn load(db: &Database) -> Result<Loaded, StoreError> {
    // Create the tables on first use so reads below find them.
    let txn = db.begin_write()?;
    {
        txn.open_table(INSTANCES)?;
        txn.open_table(SERVICE_INDEX)?;
        txn.open_table(META)?;
    }
    txn.commit()?;
    let txn = db.begin_read()?;
    let mut out = Loaded::default();
    let meta = txn.open_table(META)?;
    out.index = meta.get("index")?.map(|v| v.value()).unwrap_or(0);
    for row in txn.open_table(SERVICE_INDEX)?.iter()? {
        let (k, v) = row?;
        out.service_index.push((k.value().to_owned(), v.value()));
    }
    for row in txn.open_table(INSTANCES)?.iter()? {
        let (k, v) = row?;
        out.instances
            .push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

impl Writer {
    /// Queues a mutation; the receiver answers once it is committed.
    /// Queue order is commit order.
    pub(crate) fn submit(&self, m: Mutation) -> oneshot::Receiver<Result<(), String>> {
        let (reply, rx) = oneshot::channel();
        // A send fails only when the writer task is gone; the dropped
        // reply then tells the caller.
        let _ = self.tx.send((m, reply));
        rx
    }
}

async fn write_loop(db: Arc<Database>, mut rx: mpsc::UnboundedReceiver<(Mutation, Reply)>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(m) => group.push(m),
                Err(_) => break,
            }
        }
        let (mutations, replies): (Vec<Mutation>, Vec<Reply>) = group.into_iter().unzip();
        let db = db.clone();
        let result = match tokio::task::spawn_blocking(move || commit(&db, mutations.iter())).await
        {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the commit task failed: {e}")),
        };
        if let Err(e) = &result {
            error!(error = %e, "embedded store commit failed");
        }
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
    // Every sender is gone: the store was dropped. Dropping `db` here
    // releases the file for the next `open`.
}

fn commit<'a>(db: &Database, group: impl Iterator<Item = &'a Mutation>) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        let mut instances = txn.open_table(INSTANCES)?;
        let mut services = txn.open_table(SERVICE_INDEX)?;
        let mut meta = txn.open_table(META)?;
        let mut top = 0;
        for m in group {
            for op in &m.ops {
                match op {
                    Op::Put { key, value } => {
                        instances.insert(key.as_str(), value.as_slice())?;
                    }
                    Op::Delete { key } => {
                        instances.remove(key.as_str())?;
                    }
                }
            }
            for s in &m.services {
                services.insert(s.as_str(), m.index)?;
            }
            top = top.max(m.index);
        }
        meta.insert("index", top)?;
    }
    txn.commit()?;
    Ok(())
}
