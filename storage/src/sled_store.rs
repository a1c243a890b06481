//! The [`Store`] on sled, with group commit.
//!
//! Every commit goes through one committer thread. It takes all commits waiting
//! in its queue, applies them in one multi-tree transaction, calls
//! `Db::flush` once on a blocking thread, and then wakes every waiter it
//! covered. One flush costs about as much as a single small write (~0.2 ms on
//! the reference disk), so batching is what buys throughput; and flushing from
//! one task only avoids sled 0.34's deadlock between concurrent
//! `flush_async` calls (spacejam/sled#1308).
//!
//! Durability: on Linux, sled's flush writes with `sync_file_range`, which
//! survives a killed process but is not a full `fsync`; a power loss may lose
//! the last commits. See docs/ARCHITECTURE.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Db, Tree};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use crate::keys;
use crate::records::{
    ActiveRun, ConnectionRecord, ConnectionRequestRecord, DedupeRecord, DeliveryRecord,
    FlowSnapshot, IdempotencyRecord, Listed, NodeRecord, RunRecord, SeenRecord, TriggerKey,
    Unreadable,
};
use crate::store::{Commit, Expired, Store, TenantCounts, Ticket, Write, counts_of};
use crate::{Error, Result};

/// The most memory sled's page cache uses.
const CACHE_BYTES: u64 = 64 << 20;

/// How many commits the committer takes into one transaction and flush at most.
const MAX_GROUP: usize = 1024;

/// The trees, in the order of [`T`]'s constants.
const TREE_NAMES: [&str; 14] = [
    "runs",
    "active",
    "nodes",
    "snapshots",
    "outbox",
    "by_id",
    "dedupe",
    "cron",
    "seen",
    "cursors",
    "events",
    "connections",
    "requests",
    "idempotency",
];

/// Indexes into [`Trees`].
struct T;
impl T {
    const RUNS: usize = 0;
    const ACTIVE: usize = 1;
    const NODES: usize = 2;
    const SNAPSHOTS: usize = 3;
    const OUTBOX: usize = 4;
    const BY_ID: usize = 5;
    const DEDUPE: usize = 6;
    const CRON: usize = 7;
    const SEEN: usize = 8;
    const CURSORS: usize = 9;
    const EVENTS: usize = 10;
    const CONNECTIONS: usize = 11;
    const REQUESTS: usize = 12;
    const IDEMPOTENCY: usize = 13;
}

// Every index names a tree.
const _: () = assert!(T::IDEMPOTENCY < TREE_NAMES.len());

#[derive(Clone)]
struct Trees(Arc<Vec<Tree>>);

impl Trees {
    fn get(&self, i: usize) -> &Tree {
        &self.0[i]
    }
}

enum Pending {
    Commit {
        commit: Commit,
        done: oneshot::Sender<Result<()>>,
    },
    /// Flush, stop the committer and release its handle on the database.
    Close(oneshot::Sender<()>),
}

/// Runs, node records, flow snapshots and the outbox in a sled database.
pub struct SledStore {
    trees: Trees,
    stats: Arc<Stats>,
    queue: mpsc::UnboundedSender<Pending>,
    /// Set by the committer when a group fails to apply or flush.
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl SledStore {
    /// Opens (or creates) the database in `dir` and starts its committer
    /// thread.
    pub fn open(dir: &Path) -> Result<Arc<Self>> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            // sled's default cache is 1 GiB; this bounds the daemon's memory.
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| Error::Open {
                path: dir.display().to_string(),
                why: open_failure(&e),
            })?;
        let trees = Trees(Arc::new(
            TREE_NAMES
                .iter()
                .map(|name| db.open_tree(name))
                .collect::<sled::Result<_>>()?,
        ));
        let (queue, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let failure = Arc::new(std::sync::Mutex::new(None));
        let (db2, trees2, stats2, failure2) =
            (db.clone(), trees.clone(), stats.clone(), failure.clone());
        std::thread::Builder::new()
            .name("weir-committer".into())
            .spawn(move || committer(db2, trees2, stats2, failure2, rx))
            .map_err(|e| Error::Commit(format!("cannot start the committer thread: {e}")))?;
        Ok(Arc::new(Self {
            trees,
            stats,
            queue,
            failure,
        }))
    }

    /// Flushes everything committed so far and stops the committer; later
    /// commits fail with [`Error::Closed`]. The database is released when the
    /// last handle on this store is dropped.
    pub async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.queue.send(Pending::Close(done)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// What sled's error on open means for the user.
fn open_failure(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("{io}; weir needs to read and write it: check its owner and permissions")
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => format!(
            "{io}; another weir process (or another program) holds it: stop it, or give this one its own --data folder"
        ),
        sled::Error::Io(io) => format!("{io}"),
        sled::Error::Corruption { .. } => "its files are corrupt; restore the folder from a backup, or move it away to start with an empty one".into(),
        other => format!("{other}"),
    }
}

/// Counters of the committer: how well commits are grouped; and how many
/// stored records were found unreadable.
#[derive(Debug, Default)]
pub struct Stats {
    /// Commits applied.
    pub commits: AtomicU64,
    /// Transactions and flushes (one per group).
    pub flushes: AtomicU64,
    /// Records found that cannot be read back, each counted (and logged)
    /// once.
    pub unreadable: AtomicU64,
    unreadable_keys: std::sync::Mutex<std::collections::HashSet<(usize, Vec<u8>)>>,
}

impl Stats {
    /// Counts and logs, once per record, a record that does not decode.
    fn unreadable(&self, tree: usize, key: &[u8], error: &Error) {
        let new = self
            .unreadable_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((tree, key.to_vec()));
        if new {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
            warn!(tree = TREE_NAMES[tree], key = %String::from_utf8_lossy(key).replace('\0', "/"), error = %error, "a stored record cannot be read; it is skipped");
        }
    }
}

impl SledStore {
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A run record read back, with its event (kept in its own tree). One
    /// that does not decode is [`Error::Unreadable`] (and counted).
    fn with_event(&self, key: &[u8], record: &[u8]) -> Result<RunRecord> {
        let read = || -> Result<RunRecord> {
            let mut run: RunRecord = decode(record)?;
            if let Some(event) = self.trees.get(T::EVENTS).get(key)? {
                run.event = Arc::new(decode(&event)?);
            }
            Ok(run)
        };
        read().map_err(|e| match e {
            Error::Decode(_) => {
                self.stats.unreadable(T::RUNS, key, &e);
                let (tenant, id) = keys::run_parts(key);
                Error::Unreadable(Unreadable {
                    tenant,
                    id,
                    error: e.to_string(),
                })
            }
            other => other,
        })
    }

    /// A record of `tree` decoded, or `None` (counted and logged) if it
    /// cannot be.
    fn readable<R: serde::de::DeserializeOwned>(
        &self,
        tree: usize,
        key: &[u8],
        value: &[u8],
    ) -> Option<R> {
        match decode(value) {
            Ok(record) => Some(record),
            Err(e) => {
                self.stats.unreadable(tree, key, &e);
                None
            }
        }
    }

    /// A run as a list holds it.
    fn listed(&self, key: &[u8], record: &[u8]) -> Result<Listed> {
        match self.with_event(key, record) {
            Ok(run) => Ok(Listed::Run(run)),
            Err(Error::Unreadable(u)) => Ok(Listed::Unreadable(u)),
            Err(e) => Err(e),
        }
    }
}

/// The committer's loop, on its own thread: it blocks on the queue, takes
/// everything waiting (up to [`MAX_GROUP`]), applies and flushes it, wakes
/// the waiters, and starts over.
fn committer(
    db: Db,
    trees: Trees,
    stats: Arc<Stats>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut group = Vec::new();
    let mut closing = None;
    while closing.is_none() {
        match rx.blocking_recv() {
            Some(first) => group.push(first),
            None => break,
        }
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        let mut commits = Vec::with_capacity(group.len());
        let mut waiters = Vec::with_capacity(group.len());
        for pending in group.drain(..) {
            match pending {
                Pending::Commit { commit, done } => {
                    commits.push(commit);
                    waiters.push(done);
                }
                Pending::Close(done) => closing = Some(done),
            }
        }
        if commits.is_empty() {
            continue;
        }
        let result = apply(&trees, &commits).and_then(|()| Ok(db.flush().map(|_| ())?));
        stats
            .commits
            .fetch_add(waiters.len() as u64, Ordering::Relaxed);
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            error!(error = %e, commits = waiters.len(), "commit failed");
            failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| e.to_string());
        }
        for waiter in waiters {
            // A dropped ticket means nobody waits for this commit: fine.
            let _ = waiter.send(result.clone());
        }
    }
    rx.close();
    // Commits that raced with the close fail rather than hang.
    while let Ok(pending) = rx.try_recv() {
        if let Pending::Commit { done, .. } = pending {
            let _ = done.send(Err(Error::Closed));
        }
    }
    drop((db, trees));
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Applies a group of commits in one transaction, in order.
fn apply(trees: &Trees, commits: &[Commit]) -> Result<()> {
    // Encode outside the transaction closure, which sled may call again on a
    // conflict.
    let mut puts: Vec<(usize, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    // Runs to forget, each with the number of puts that go before it.
    let mut forgets: Vec<(usize, Forget)> = Vec::new();
    for write in commits.iter().flat_map(|c| &c.writes) {
        match write {
            Write::ForgetRun { tenant, run } | Write::HandOffRun { tenant, run } => {
                let any_status = matches!(write, Write::HandOffRun { .. });
                // Its node records: those on disk, and those written earlier
                // in this group (a transaction cannot scan). If a retry
                // restarted the run, nothing is removed: see `forget`.
                let prefix = keys::nodes_of(tenant, run);
                let mut nodes = trees
                    .get(T::NODES)
                    .scan_prefix(&prefix)
                    .keys()
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                nodes.extend(
                    puts.iter()
                        .filter(|(tree, key, _)| *tree == T::NODES && key.starts_with(&prefix))
                        .map(|(_, key, _)| sled::IVec::from(key.as_slice())),
                );
                forgets.push((
                    puts.len(),
                    Forget {
                        run: keys::run(tenant, run),
                        id: keys::by_id(run),
                        nodes,
                        any_status,
                    },
                ));
            }
            Write::NewRun(run) => {
                let key = keys::run(&run.tenant, &run.id);
                puts.push((
                    T::EVENTS,
                    key.clone(),
                    Some(serde_json::to_vec(&*run.event)?),
                ));
                puts.push((
                    T::BY_ID,
                    keys::by_id(&run.id),
                    Some(run.tenant.as_bytes().to_vec()),
                ));
                puts.push((T::RUNS, key.clone(), Some(serde_json::to_vec(run)?)));
                let active = (!run.status.is_finished())
                    .then(|| serde_json::to_vec(&ActiveRun::from(run)))
                    .transpose()?;
                puts.push((T::ACTIVE, key, active));
            }
            Write::Run(run) => {
                let key = keys::run(&run.tenant, &run.id);
                puts.push((T::RUNS, key.clone(), Some(serde_json::to_vec(run)?)));
                let active = (!run.status.is_finished())
                    .then(|| serde_json::to_vec(&ActiveRun::from(run)))
                    .transpose()?;
                puts.push((T::ACTIVE, key, active));
            }
            Write::Node {
                tenant,
                run,
                record,
            } => puts.push((
                T::NODES,
                keys::node(tenant, run, &record.key),
                Some(serde_json::to_vec(record)?),
            )),
            Write::Snapshot(s) => puts.push((
                T::SNAPSHOTS,
                keys::snapshot(&s.flow, &s.version),
                Some(serde_json::to_vec(s)?),
            )),
            Write::Delivery(d) => puts.push((
                T::OUTBOX,
                keys::delivery(&d.id),
                Some(serde_json::to_vec(d)?),
            )),
            Write::RemoveDelivery(id) => puts.push((T::OUTBOX, keys::delivery(id), None)),
            Write::Dedupe {
                trigger,
                key,
                record,
            } => puts.push((
                T::DEDUPE,
                keys::trigger_item(trigger, key),
                Some(serde_json::to_vec(record)?),
            )),
            Write::RemoveDedupe { trigger, key } => {
                puts.push((T::DEDUPE, keys::trigger_item(trigger, key), None))
            }
            Write::CronFired { trigger, at } => puts.push((
                T::CRON,
                keys::trigger(trigger),
                Some(serde_json::to_vec(at)?),
            )),
            Write::Seen {
                trigger,
                key,
                record,
            } => puts.push((
                T::SEEN,
                keys::trigger_item(trigger, key),
                record.as_ref().map(serde_json::to_vec).transpose()?,
            )),
            Write::Cursor { trigger, cursor } => puts.push((
                T::CURSORS,
                keys::trigger(trigger),
                Some(serde_json::to_vec(cursor)?),
            )),
            Write::EraseTenant(tenant) => erase_tenant(trees, tenant, &mut puts)?,
            Write::Connection(c) => puts.push((
                T::CONNECTIONS,
                keys::connection(&c.tenant, &c.id),
                Some(serde_json::to_vec(c)?),
            )),
            Write::RemoveConnection { tenant, id } => {
                remove_connection(trees, tenant, id, &mut puts)?
            }
            Write::ConnectionRequest(r) => puts.push((
                T::REQUESTS,
                keys::connection_request(&r.id),
                Some(serde_json::to_vec(r)?),
            )),
            Write::Idempotency(r) => puts.push((
                T::IDEMPOTENCY,
                keys::idempotency(&r.tenant, &r.key),
                Some(serde_json::to_vec(r)?),
            )),
            Write::RemoveIdempotency { tenant, key } => {
                puts.push((T::IDEMPOTENCY, keys::idempotency(tenant, key), None))
            }
        }
    }
    trees
        .0
        .as_slice()
        .transaction(|views| {
            let mut forgets = forgets.iter().peekable();
            for (at, (tree, key, value)) in puts.iter().enumerate() {
                while let Some((_, f)) = forgets.next_if(|(before, _)| *before == at) {
                    forget(views, f)?;
                }
                let view = &views[*tree];
                match value {
                    Some(v) => view.insert(key.as_slice(), v.as_slice())?,
                    None => view.remove(key.as_slice())?,
                };
            }
            for (_, f) in forgets {
                forget(views, f)?;
            }
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            TransactionError::Storage(e) => Error::Sled(e),
            TransactionError::Abort(()) => Error::Commit("transaction aborted".into()),
        })
}

/// The trees keyed by tenant first.
const TENANT_TREES: [usize; 10] = [
    T::RUNS,
    T::ACTIVE,
    T::NODES,
    T::EVENTS,
    T::DEDUPE,
    T::CRON,
    T::SEEN,
    T::CURSORS,
    T::CONNECTIONS,
    T::IDEMPOTENCY,
];

type Put = (usize, Vec<u8>, Option<Vec<u8>>);

/// Adds to `puts` the removal of every record of `tenant`: those on disk,
/// and those written earlier in this group (a transaction cannot scan).
/// The committer is the only writer, so what it reads here is what the
/// transaction will see.
/// A connection, and its triggers' state (cron instants, seen records and
/// cursors of per-connection flows), also what this group wrote of it.
fn remove_connection(trees: &Trees, tenant: &str, id: &str, puts: &mut Vec<Put>) -> Result<()> {
    let prefix = keys::tenant_prefix(tenant);
    let mut removals: Vec<Put> = vec![(T::CONNECTIONS, keys::connection(tenant, id), None)];
    for tree in [T::CRON, T::SEEN, T::CURSORS] {
        for key in trees.get(tree).scan_prefix(&prefix).keys() {
            let key = key?;
            if keys::is_connection_state(&key, id) {
                removals.push((tree, key.to_vec(), None));
            }
        }
    }
    for (tree, key, _) in puts.iter() {
        if matches!(*tree, T::CRON | T::SEEN | T::CURSORS)
            && key.starts_with(&prefix)
            && keys::is_connection_state(key, id)
        {
            removals.push((*tree, key.clone(), None));
        }
    }
    puts.extend(removals);
    Ok(())
}

fn erase_tenant(trees: &Trees, tenant: &str, puts: &mut Vec<Put>) -> Result<()> {
    let prefix = keys::tenant_prefix(tenant);
    let shared = keys::tenant_prefix("");
    let mut removals: Vec<Put> = Vec::new();
    let remove = |tree: usize, key: &[u8], removals: &mut Vec<Put>| {
        if tree == T::RUNS {
            let (_, run) = keys::run_parts(key);
            removals.push((T::BY_ID, keys::by_id(&run), None));
        }
        removals.push((tree, key.to_vec(), None));
    };
    let ours_delivery = |v: &[u8]| decode::<DeliveryRecord>(v).is_ok_and(|d| d.tenant == tenant);
    let ours_request =
        |v: &[u8]| decode::<ConnectionRequestRecord>(v).is_ok_and(|r| r.tenant == tenant);
    let ours_dedupe =
        |v: &[u8]| decode::<DedupeRecord>(v).is_ok_and(|d| d.tenant.as_deref() == Some(tenant));
    for tree in TENANT_TREES {
        for key in trees.get(tree).scan_prefix(&prefix).keys() {
            remove(tree, &key?, &mut removals);
        }
    }
    // Deliveries and shared dedupe keys name their tenant in their value:
    // the last value written to a key decides, this group's first.
    let mut decided: std::collections::HashSet<(usize, &[u8])> = Default::default();
    for (tree, key, value) in puts.iter().rev() {
        let ours = match (*tree, value) {
            (T::OUTBOX, _) | (T::DEDUPE, _) | (T::REQUESTS, _) if !decided.insert((*tree, key)) => {
                false
            }
            (T::OUTBOX, Some(v)) => ours_delivery(v),
            (T::REQUESTS, Some(v)) => ours_request(v),
            (T::DEDUPE, Some(v)) if key.starts_with(&shared) => ours_dedupe(v),
            (tree, _) => TENANT_TREES.contains(&tree) && key.starts_with(&prefix),
        };
        if ours {
            remove(*tree, key, &mut removals);
        }
    }
    for item in trees.get(T::OUTBOX).iter() {
        let (key, value) = item?;
        if !decided.contains(&(T::OUTBOX, &key[..])) && ours_delivery(&value) {
            remove(T::OUTBOX, &key, &mut removals);
        }
    }
    for item in trees.get(T::REQUESTS).iter() {
        let (key, value) = item?;
        if !decided.contains(&(T::REQUESTS, &key[..])) && ours_request(&value) {
            remove(T::REQUESTS, &key, &mut removals);
        }
    }
    for item in trees.get(T::DEDUPE).scan_prefix(&shared) {
        let (key, value) = item?;
        if !decided.contains(&(T::DEDUPE, &key[..])) && ours_dedupe(&value) {
            remove(T::DEDUPE, &key, &mut removals);
        }
    }
    drop(decided);
    puts.extend(removals);
    Ok(())
}

/// The keys of a run to forget.
struct Forget {
    run: Vec<u8>,
    id: Vec<u8>,
    nodes: Vec<sled::IVec>,
    /// Unfinished too ([`Write::HandOffRun`]).
    any_status: bool,
}

/// Removes a run's keys, if the run is finished as the transaction sees it
/// (or whatever its status, for a hand-off).
fn forget(
    views: &[sled::transaction::TransactionalTree],
    f: &Forget,
) -> std::result::Result<(), ConflictableTransactionError<()>> {
    let finished = views[T::RUNS]
        .get(&f.run)?
        .and_then(|v| decode::<RunRecord>(&v).ok())
        .is_some_and(|r| r.status.is_finished());
    if !finished && !f.any_status {
        return Ok(());
    }
    views[T::RUNS].remove(f.run.as_slice())?;
    views[T::EVENTS].remove(f.run.as_slice())?;
    views[T::ACTIVE].remove(f.run.as_slice())?;
    views[T::BY_ID].remove(f.id.as_slice())?;
    for node in &f.nodes {
        views[T::NODES].remove(node)?;
    }
    Ok(())
}

/// Decodes a record. Without serde_json's recursion guard: commits refuse
/// values deeper than [`crate::MAX_VALUE_DEPTH`], so what weir wrote is
/// bounded (and records of earlier versions, which could be a little
/// deeper than the guard allows, still read back).
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

impl Store for SledStore {
    fn commit(&self, commit: Commit) -> Ticket {
        if let Err(e) = commit.check() {
            return Ticket::ready(Err(e));
        }
        if let Some(why) = self.failure() {
            return Ticket::ready(Err(Error::Failed(why)));
        }
        let (done, rx) = oneshot::channel();
        match self.queue.send(Pending::Commit { commit, done }) {
            Ok(()) => Ticket::waiting(rx),
            Err(_) => Ticket::ready(Err(Error::Closed)),
        }
    }

    fn run(&self, tenant: &str, run: &str) -> Result<Option<RunRecord>> {
        let key = keys::run(tenant, run);
        match self.trees.get(T::RUNS).get(&key)? {
            Some(v) => Ok(Some(self.with_event(&key, &v)?)),
            None => Ok(None),
        }
    }

    fn nodes(&self, tenant: &str, run: &str) -> Result<Vec<NodeRecord>> {
        let mut out = Vec::new();
        for kv in self
            .trees
            .get(T::NODES)
            .scan_prefix(keys::nodes_of(tenant, run))
        {
            let (k, v) = kv?;
            out.extend(self.readable(T::NODES, &k, &v));
        }
        Ok(out)
    }

    fn unfinished_runs(&self) -> Result<Vec<RunRecord>> {
        let mut runs = Vec::new();
        for key in self.trees.get(T::ACTIVE).iter().keys() {
            let key = key?;
            match self.trees.get(T::RUNS).get(&key)? {
                Some(v) => match self.with_event(&key, &v) {
                    Ok(run) => runs.push(run),
                    Err(Error::Unreadable(_)) => {}
                    Err(e) => return Err(e),
                },
                None => {
                    return Err(Error::Corrupt(format!(
                        "active run without record: {key:?}"
                    )));
                }
            }
        }
        Ok(runs)
    }

    fn active_runs(&self) -> Result<(Vec<ActiveRun>, Vec<Unreadable>)> {
        let mut runs = Vec::new();
        let mut unreadable = Vec::new();
        for kv in self.trees.get(T::ACTIVE).iter() {
            let (key, value) = kv?;
            if let Ok(active) = decode::<ActiveRun>(&value) {
                runs.push(active);
                continue;
            }
            // Written before the index kept anything (or unreadable): the
            // record says.
            match self.trees.get(T::RUNS).get(&key)? {
                Some(v) => match self.with_event(&key, &v) {
                    Ok(run) => runs.push(ActiveRun::from(&run)),
                    Err(Error::Unreadable(u)) => unreadable.push(u),
                    Err(e) => return Err(e),
                },
                None => {
                    let (tenant, id) = keys::run_parts(&key);
                    unreadable.push(Unreadable {
                        tenant,
                        id,
                        error: "the index of unfinished runs names it, but its record is missing"
                            .into(),
                    });
                }
            }
        }
        Ok((runs, unreadable))
    }

    fn list_runs(&self, tenant: &str, after: Option<&str>, limit: usize) -> Result<Vec<Listed>> {
        let start = keys::run(tenant, "");
        let end = match after {
            Some(after) => keys::run(tenant, after),
            None => {
                let mut end = keys::run(tenant, "");
                end.push(0xff);
                end
            }
        };
        self.trees
            .get(T::RUNS)
            .range(start..end)
            .rev()
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                self.listed(&k, &v)
            })
            .collect()
    }

    fn snapshot(&self, flow: &str, version: &str) -> Result<Option<FlowSnapshot>> {
        self.trees
            .get(T::SNAPSHOTS)
            .get(keys::snapshot(flow, version))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn deliveries(&self) -> Result<Vec<DeliveryRecord>> {
        let mut out = Vec::new();
        for kv in self.trees.get(T::OUTBOX).iter() {
            let (k, v) = kv?;
            out.extend(self.readable(T::OUTBOX, &k, &v));
        }
        Ok(out)
    }

    fn run_by_id(&self, run: &str) -> Result<Option<RunRecord>> {
        match self.trees.get(T::BY_ID).get(keys::by_id(run))? {
            Some(tenant) => self.run(&String::from_utf8_lossy(&tenant), run),
            None => Ok(None),
        }
    }

    fn list_all_runs(
        &self,
        after: Option<&str>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&Listed) -> bool,
    ) -> Result<Vec<Listed>> {
        let ids = self.trees.get(T::BY_ID);
        let iter = match after {
            Some(after) => ids.range(..keys::by_id(after)),
            None => ids.range::<&[u8], _>(..),
        };
        let mut out = Vec::new();
        for kv in iter.rev().take(scan) {
            let (id, tenant) = kv?;
            let key = keys::run(
                &String::from_utf8_lossy(&tenant),
                &String::from_utf8_lossy(&id),
            );
            let Some(value) = self.trees.get(T::RUNS).get(&key)? else {
                continue;
            };
            let listed = self.listed(&key, &value)?;
            if keep(&listed) {
                out.push(listed);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn finished_before(
        &self,
        before: DateTime<Utc>,
        after: Option<&str>,
        scan: usize,
    ) -> Result<Expired> {
        let ids = self.trees.get(T::BY_ID);
        let iter = match after {
            Some(after) => ids.range((
                std::ops::Bound::Excluded(keys::by_id(after)),
                std::ops::Bound::Unbounded,
            )),
            None => ids.range::<&[u8], _>(..),
        };
        let mut expired = Expired::default();
        for (looked, kv) in iter.take(scan).enumerate() {
            let (id, tenant) = kv?;
            let (tenant, id) = (
                String::from_utf8_lossy(&tenant).into_owned(),
                String::from_utf8_lossy(&id).into_owned(),
            );
            if looked + 1 == scan {
                expired.next = Some(id.clone());
            }
            // The record alone: the event is not needed to decide.
            let key = keys::run(&tenant, &id);
            let Some(value) = self.trees.get(T::RUNS).get(&key)? else {
                continue;
            };
            let Some(run) = self.readable::<RunRecord>(T::RUNS, &key, &value) else {
                continue;
            };
            if run.created_at >= before {
                expired.next = None;
                return Ok(expired);
            }
            if run.status.is_finished() && run.finished_at.is_some_and(|at| at < before) {
                expired.runs.push((tenant, id.clone()));
            }
        }
        Ok(expired)
    }

    fn dedupe(&self, trigger: &TriggerKey, key: &str) -> Result<Option<DedupeRecord>> {
        self.trees
            .get(T::DEDUPE)
            .get(keys::trigger_item(trigger, key))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn dedupes_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(TriggerKey, String)>> {
        let mut out = Vec::new();
        for kv in self.trees.get(T::DEDUPE).iter() {
            let (key, value) = kv?;
            let Some(record) = self.readable::<DedupeRecord>(T::DEDUPE, &key, &value) else {
                continue;
            };
            if record.at >= before {
                continue;
            }
            let mut parts = key.splitn(4, |b| *b == 0);
            let mut next =
                || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let (tenant, flow, part, item) = (next(), next(), next(), next());
            let (trigger, connection) = keys::trigger_of(&part);
            out.push((
                TriggerKey {
                    tenant,
                    flow,
                    trigger,
                    connection,
                },
                item,
            ));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn cron_fired(&self, trigger: &TriggerKey) -> Result<Option<DateTime<Utc>>> {
        self.trees
            .get(T::CRON)
            .get(keys::trigger(trigger))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn seen(&self, trigger: &TriggerKey) -> Result<Vec<(String, SeenRecord)>> {
        let prefix = keys::trigger_items(trigger);
        let mut out = Vec::new();
        for kv in self.trees.get(T::SEEN).scan_prefix(&prefix) {
            let (k, v) = kv?;
            if let Some(record) = self.readable(T::SEEN, &k, &v) {
                out.push((keys::item_of(&k, prefix.len()), record));
            }
        }
        Ok(out)
    }

    fn cursor(&self, trigger: &TriggerKey) -> Result<Option<Value>> {
        self.trees
            .get(T::CURSORS)
            .get(keys::trigger(trigger))?
            .map(|v| decode(&v))
            .transpose()
    }

    fn tenants(&self) -> Result<BTreeMap<String, TenantCounts>> {
        let mut out: BTreeMap<String, TenantCounts> = BTreeMap::new();
        for key in self.trees.get(T::RUNS).iter().keys() {
            counts_of(&mut out, keys::tenant_of(&key?)).runs += 1;
        }
        for key in self.trees.get(T::ACTIVE).iter().keys() {
            counts_of(&mut out, keys::tenant_of(&key?)).unfinished += 1;
        }
        for value in self.trees.get(T::OUTBOX).iter().values() {
            if let Ok(d) = decode::<DeliveryRecord>(&value?) {
                counts_of(&mut out, d.tenant).deliveries += 1;
            }
        }
        for item in self.trees.get(T::DEDUPE).iter() {
            let (key, value) = item?;
            let mut tenant = keys::tenant_of(&key);
            if tenant.is_empty() {
                tenant = decode::<DedupeRecord>(&value)
                    .ok()
                    .and_then(|d| d.tenant)
                    .unwrap_or_default();
            }
            counts_of(&mut out, tenant).dedupe_keys += 1;
        }
        for tree in [T::CRON, T::CURSORS, T::SEEN] {
            for key in self.trees.get(tree).iter().keys() {
                counts_of(&mut out, keys::tenant_of(&key?)).trigger_states += 1;
            }
        }
        for key in self.trees.get(T::CONNECTIONS).iter().keys() {
            counts_of(&mut out, keys::tenant_of(&key?)).connections += 1;
        }
        out.remove("");
        Ok(out)
    }

    fn connection(&self, tenant: &str, id: &str) -> Result<Option<ConnectionRecord>> {
        match self
            .trees
            .get(T::CONNECTIONS)
            .get(keys::connection(tenant, id))?
        {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn connections(&self, tenant: &str) -> Result<Vec<ConnectionRecord>> {
        self.trees
            .get(T::CONNECTIONS)
            .scan_prefix(keys::tenant_prefix(tenant))
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    fn all_connections(&self) -> Result<Vec<ConnectionRecord>> {
        self.trees
            .get(T::CONNECTIONS)
            .iter()
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    fn connection_request(&self, id: &str) -> Result<Option<ConnectionRequestRecord>> {
        match self
            .trees
            .get(T::REQUESTS)
            .get(keys::connection_request(id))?
        {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn idempotency(&self, tenant: &str, key: &str) -> Result<Option<IdempotencyRecord>> {
        match self
            .trees
            .get(T::IDEMPOTENCY)
            .get(keys::idempotency(tenant, key))?
        {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    fn idempotency_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for kv in self.trees.get(T::IDEMPOTENCY).iter() {
            let (key, value) = kv?;
            let Some(r) = self.readable::<IdempotencyRecord>(T::IDEMPOTENCY, &key, &value) else {
                continue;
            };
            if r.at < before {
                out.push((r.tenant, r.key));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn unreadable_records(&self) -> u64 {
        self.stats.unreadable.load(Ordering::Relaxed)
    }

    fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
