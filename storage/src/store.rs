//! The narrow interface the engine uses: write a [`Commit`] atomically and
//! durably, read records back.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::records::{
    ActiveRun, ConnectionRecord, ConnectionRequestRecord, DedupeRecord, DeliveryRecord,
    FlowSnapshot, IdempotencyRecord, Listed, MAX_VALUE_DEPTH, NodeRecord, RunRecord, SeenRecord,
    TriggerKey, Unreadable, nests_deeper,
};
use crate::{Error, Result};

/// One write of a commit.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// A new run: its record and its event.
    NewRun(RunRecord),
    /// Replace a run's record (its event stays as written by `NewRun`). A
    /// finished run leaves the index of unfinished runs in the same commit.
    Run(RunRecord),
    /// Forget a finished run: its record, event, node records and id index
    /// entry (its retention ended). Nothing happens if the run is not
    /// finished when the commit applies (a retry may have restarted it).
    ForgetRun { tenant: String, run: String },
    /// Forget a run whatever its status: another process goes on with it
    /// (a worker handed its checkpoint off through the broker).
    HandOffRun { tenant: String, run: String },
    /// Insert or replace one node record of a run.
    Node {
        tenant: String,
        run: String,
        record: NodeRecord,
    },
    /// Keep a flow version (idempotent: the same version has the same text).
    Snapshot(FlowSnapshot),
    /// Insert or replace a delivery in the outbox.
    Delivery(DeliveryRecord),
    /// A confirmed delivery leaves the outbox.
    RemoveDelivery(String),
    /// Remember a webhook's dedupe key.
    Dedupe {
        trigger: TriggerKey,
        key: String,
        record: DedupeRecord,
    },
    /// Forget a dedupe key (its retention ended).
    RemoveDedupe { trigger: TriggerKey, key: String },
    /// The last instant a cron trigger fired.
    CronFired {
        trigger: TriggerKey,
        at: DateTime<Utc>,
    },
    /// What a poll trigger saw of a record; `None` forgets it (deleted).
    Seen {
        trigger: TriggerKey,
        key: String,
        record: Option<SeenRecord>,
    },
    /// The cursor a poll trigger's next request uses.
    Cursor { trigger: TriggerKey, cursor: Value },
    /// Erase every record of a tenant: runs (records, events, node
    /// records, id index entries), dedupe keys (those it shares with other
    /// tenants' triggers too), cron and poll state, and its deliveries.
    /// Writes later in the same group apply after it.
    EraseTenant(String),
    /// Insert or replace a connection.
    Connection(ConnectionRecord),
    /// Forget a connection and its credentials.
    RemoveConnection { tenant: String, id: String },
    /// Insert or replace an OAuth2 connection request.
    ConnectionRequest(ConnectionRequestRecord),
    /// Remember a caller's idempotency key (with the run it started).
    Idempotency(IdempotencyRecord),
    /// Forget one (expired).
    RemoveIdempotency { tenant: String, key: String },
}

/// Writes applied together or not at all: a node's result, the run's next
/// state and an outbox record share one commit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Commit {
    pub writes: Vec<Write>,
}

impl Commit {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn run(mut self, run: RunRecord) -> Self {
        self.writes.push(Write::Run(run));
        self
    }

    pub fn node(mut self, tenant: &str, run: &str, record: NodeRecord) -> Self {
        self.writes.push(Write::Node {
            tenant: tenant.to_owned(),
            run: run.to_owned(),
            record,
        });
        self
    }

    pub fn with(mut self, write: Write) -> Self {
        self.writes.push(write);
        self
    }

    pub fn push(&mut self, write: Write) {
        self.writes.push(write);
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Refuses a commit holding a value nested deeper than
    /// [`MAX_VALUE_DEPTH`]: what a store accepts, it can read back.
    pub fn check(&self) -> Result<()> {
        for write in &self.writes {
            let (what, values): (&'static str, [Option<&Value>; 2]) = match write {
                Write::NewRun(run) => ("a run's event", [Some(&*run.event), None]),
                Write::Node { record, .. } => (
                    "a node's output or state",
                    [record.output.as_ref(), record.state.as_ref()],
                ),
                Write::Delivery(d) => ("a delivery's payload", [Some(&d.payload), None]),
                Write::Seen {
                    record: Some(r), ..
                } => ("a poll record", [Some(&r.version), Some(&r.item)]),
                Write::Cursor { cursor, .. } => ("a poll cursor", [Some(cursor), None]),
                Write::Connection(c) => ("a connection's parameters", [Some(&c.parameters), None]),
                Write::ConnectionRequest(r) => (
                    "a connection request's parameters",
                    [Some(&r.parameters), None],
                ),
                _ => continue,
            };
            if values
                .into_iter()
                .flatten()
                .any(|v| nests_deeper(v, MAX_VALUE_DEPTH))
            {
                return Err(Error::TooDeep { what });
            }
        }
        Ok(())
    }
}

/// What is stored for one tenant (see [`Store::tenants`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TenantCounts {
    /// Runs, finished or not.
    pub runs: u64,
    /// Of which unfinished.
    pub unfinished: u64,
    /// Deliveries in the outbox (pending and dead).
    pub deliveries: u64,
    /// Webhook dedupe keys.
    pub dedupe_keys: u64,
    /// Cron and poll state: last firings, cursors, records a poll saw.
    pub trigger_states: u64,
    /// Connections to integrations.
    pub connections: u64,
}

/// The counts of `tenant` in `out`.
pub(crate) fn counts_of(
    out: &mut std::collections::BTreeMap<String, TenantCounts>,
    tenant: impl Into<String>,
) -> &mut TenantCounts {
    out.entry(tenant.into()).or_default()
}

/// What [`Store::finished_before`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expired {
    /// (tenant, run id) of each finished run.
    pub runs: Vec<(String, String)>,
    /// Where the next look goes on from; `None` when there is nothing more.
    pub next: Option<String>,
}

/// Resolves when its commit is on disk (or failed). Dropping it does not undo
/// the commit.
pub struct Ticket(TicketInner);

enum TicketInner {
    Done(Option<Result<()>>),
    Waiting(oneshot::Receiver<Result<()>>),
}

impl Ticket {
    pub(crate) fn ready(result: Result<()>) -> Self {
        Self(TicketInner::Done(Some(result)))
    }

    pub(crate) fn waiting(rx: oneshot::Receiver<Result<()>>) -> Self {
        Self(TicketInner::Waiting(rx))
    }
}

impl Future for Ticket {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match &mut self.get_mut().0 {
            TicketInner::Done(result) => Poll::Ready(result.take().unwrap_or(Err(Error::Closed))),
            TicketInner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(Error::Closed))),
        }
    }
}

/// Durable state of runs, flow versions and the outbox. Implemented on sled
/// ([`crate::SledStore`]) and in memory ([`crate::MemoryStore`], the model the
/// sled store is tested against).
pub trait Store: Send + Sync + 'static {
    /// Applies `commit` atomically; the ticket resolves once it is on disk.
    /// Commits are applied in the order they are submitted, and when a
    /// ticket resolves without error every commit submitted before it is on
    /// disk too. Submitting never blocks: overload is refused at the edges
    /// (webhook 429), not here.
    fn commit(&self, commit: Commit) -> Ticket;

    fn run(&self, tenant: &str, run: &str) -> Result<Option<RunRecord>>;

    /// All node records of a run, ordered by key.
    fn nodes(&self, tenant: &str, run: &str) -> Result<Vec<NodeRecord>>;

    /// Every run that has not finished, oldest first within a tenant (runs
    /// whose record cannot be read are left out, and counted).
    fn unfinished_runs(&self) -> Result<Vec<RunRecord>>;

    /// The same runs as [`Store::unfinished_runs`], from the index alone:
    /// cheap enough to read at start with many runs on disk. Runs of the
    /// index whose entry and record cannot be read come second.
    fn active_runs(&self) -> Result<(Vec<ActiveRun>, Vec<Unreadable>)>;

    /// Runs of a tenant, newest first, starting after the run id `after`.
    /// A run whose record cannot be read is listed as such.
    fn list_runs(&self, tenant: &str, after: Option<&str>, limit: usize) -> Result<Vec<Listed>>;

    fn snapshot(&self, flow: &str, version: &str) -> Result<Option<FlowSnapshot>>;

    /// Every delivery in the outbox, pending and dead, ordered by id (those
    /// that cannot be read are left out, and counted).
    fn deliveries(&self) -> Result<Vec<DeliveryRecord>>;

    /// A run by id alone, whatever its tenant (runs written by `NewRun`).
    /// A record that cannot be read is [`Error::Unreadable`].
    fn run_by_id(&self, run: &str) -> Result<Option<RunRecord>>;

    /// Runs of all tenants, newest first, starting after the run id `after`.
    /// `keep` filters; at most `scan` runs are looked at, so a filter that
    /// matches little cannot make one call read everything.
    fn list_all_runs(
        &self,
        after: Option<&str>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&Listed) -> bool,
    ) -> Result<Vec<Listed>>;

    /// Finished runs that ended before `before`, oldest first: looks at run
    /// ids after `after` (exclusive), at most `scan` of them, and stops at
    /// the first run created at or after `before`. Answers the runs found
    /// and, if the scan limit ended the look, the id to go on after.
    fn finished_before(
        &self,
        before: DateTime<Utc>,
        after: Option<&str>,
        scan: usize,
    ) -> Result<Expired>;

    fn dedupe(&self, trigger: &TriggerKey, key: &str) -> Result<Option<DedupeRecord>>;

    /// Dedupe keys remembered before `before`, at most `limit`.
    fn dedupes_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(TriggerKey, String)>>;

    fn cron_fired(&self, trigger: &TriggerKey) -> Result<Option<DateTime<Utc>>>;

    /// Everything a poll trigger has seen, by record key.
    fn seen(&self, trigger: &TriggerKey) -> Result<Vec<(String, SeenRecord)>>;

    fn cursor(&self, trigger: &TriggerKey) -> Result<Option<Value>>;

    /// Every tenant something is stored for, with counts. Reads every
    /// key (an admin's question, not a hot path).
    fn tenants(&self) -> Result<std::collections::BTreeMap<String, TenantCounts>>;

    fn connection(&self, tenant: &str, id: &str) -> Result<Option<ConnectionRecord>>;

    /// A tenant's connections, by id.
    fn connections(&self, tenant: &str) -> Result<Vec<ConnectionRecord>>;

    /// Every tenant's connections, by tenant then id.
    fn all_connections(&self) -> Result<Vec<ConnectionRecord>>;

    /// An OAuth2 connection request by id (its tenant is in it).
    fn connection_request(&self, id: &str) -> Result<Option<ConnectionRequestRecord>>;

    /// A caller's idempotency key of a tenant.
    fn idempotency(&self, tenant: &str, key: &str) -> Result<Option<IdempotencyRecord>>;

    /// Up to `limit` idempotency keys remembered before `before`, as
    /// (tenant, key).
    fn idempotency_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, String)>>;

    /// How many stored records were found that cannot be read back (each
    /// counted once).
    fn unreadable_records(&self) -> u64 {
        0
    }

    /// Why writing failed, once a write or flush has failed: from then on
    /// every commit fails (the store cannot be trusted to hold what it
    /// says until it is opened again).
    fn failure(&self) -> Option<String> {
        None
    }
}
