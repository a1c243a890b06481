//! The engine: starts runs, drives them node by node with durable commits,
//! and resumes unfinished runs after a restart.
//!
//! - [`Engine`]: start a run, drive it, resume what is unfinished
//! - `runner`: one run's state machine over the flow's DAG
//! - `scope`: the Rhai scope a run's expressions see
//! - [`Clock`]: time, as an argument

mod clock;
mod runner;
mod scope;

pub(crate) use runner::send;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use weir_storage::{Commit, FlowSnapshot, RunRecord, RunStatus, Store, Write};

pub use clock::Clock;

use crate::flow::{self, Flow};

/// What can stop the engine from driving a run. A run whose driving failed
/// stays unfinished on disk and resumes on the next start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Storage(#[from] weir_storage::Error),
    #[error("run {run}: the version {version} of flow '{flow}' is not on disk")]
    MissingSnapshot {
        run: String,
        flow: String,
        version: String,
    },
    #[error("run {run}: the stored version of flow '{flow}' no longer loads: {error}")]
    BadSnapshot {
        run: String,
        flow: String,
        error: String,
    },
    #[error("flow '{flow}' has no trigger '{trigger}'")]
    UnknownTrigger { flow: String, trigger: String },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// A new run: what [`Engine::admit`] writes.
#[derive(Debug, Clone)]
pub struct Admission {
    pub run_id: String,
    pub tenant: String,
    pub trigger: String,
    pub event: std::sync::Arc<Value>,
    /// Waits for its turn under the flow's `concurrency` limit.
    pub queued: bool,
    pub concurrency_key: Option<String>,
    /// The connection the run is for (a flow that runs per connection).
    pub connection: Option<Value>,
    /// Written in the same commit as the run.
    pub writes: Vec<Write>,
}

/// A handle on a run being driven.
#[derive(Debug)]
pub struct RunControl {
    cancel: tokio::sync::watch::Sender<bool>,
    /// Nodes working or ready (not sleeping on a timer).
    busy: std::sync::atomic::AtomicUsize,
    parked: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl Default for RunControl {
    fn default() -> Self {
        Self::new()
    }
}

impl RunControl {
    pub fn new() -> Self {
        Self {
            cancel: tokio::sync::watch::Sender::new(false),
            busy: std::sync::atomic::AtomicUsize::new(0),
            parked: std::sync::Mutex::new(None),
        }
    }

    /// If the run parked (see [`EngineOptions::park_after`]): when to drive
    /// it again.
    pub fn parked_until(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        *self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_parked(&self, at: chrono::DateTime<chrono::Utc>) {
        *self.parked.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    /// Asks the run to stop: it ends `cancelled` at its next step.
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves once the run is asked to stop.
    pub async fn cancelled(&self) {
        let mut rx = self.cancel.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Whether a node is working (not only timers waiting).
    pub fn is_busy(&self) -> bool {
        self.busy.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    pub(crate) fn set_busy(&self, n: usize) {
        self.busy.store(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How the engine commits.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Wait for every node's commit to reach the disk before the next node
    /// starts. Off (the default), pure nodes run back to back while their
    /// commits are flushed in the background; the engine still waits for the
    /// disk before any side effect (an `http` request, a timer) and before a
    /// run is reported finished, which is all the durability promises ask (docs/ARCHITECTURE.md).
    pub durable_each_step: bool,
    /// Let a run leave memory when all it waits for are timers, the earliest
    /// more than this far away; it is driven again from its records when the
    /// timer is due ([`RunControl::parked_until`]). `None`: never.
    pub park_after: Option<std::time::Duration>,
}

/// Starts and drives runs over a [`Store`].
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Clock,
    options: EngineOptions,
    /// Loaded flows by (id, version): the ones runs started on, and the ones
    /// read back from snapshots for resumed runs.
    flows: Mutex<HashMap<(String, String), Arc<Flow>>>,
    /// Where deliveries go once they are on disk (the daemon's outbox).
    outbox: Mutex<Option<tokio::sync::mpsc::UnboundedSender<weir_storage::DeliveryRecord>>>,
    /// What `http` nodes with `connection:` go through (the daemon's
    /// connections).
    connector: std::sync::OnceLock<Arc<dyn weir_nodes::functions::http::Connector>>,
    /// Runs `action` nodes (the daemon's actions).
    actor: std::sync::OnceLock<Arc<dyn weir_nodes::functions::action::Actor>>,
    /// Learns of each delivery before it is handed to the outbox (a
    /// worker waits for a run's deliveries before it acks its event).
    on_delivery: std::sync::OnceLock<DeliveryHook>,
}

type DeliveryHook = Arc<dyn Fn(&weir_storage::DeliveryRecord) + Send + Sync>;

impl Engine {
    pub fn new(store: Arc<dyn Store>, clock: Clock, options: EngineOptions) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            options,
            flows: Mutex::new(HashMap::new()),
            outbox: Mutex::new(None),
            connector: std::sync::OnceLock::new(),
            actor: std::sync::OnceLock::new(),
            on_delivery: std::sync::OnceLock::new(),
        })
    }

    /// Calls `hook` with each delivery before it goes to the outbox.
    pub fn on_delivery(&self, hook: DeliveryHook) {
        let _ = self.on_delivery.set(hook);
    }

    /// Gives `http` nodes with `connection:` their connections.
    pub fn set_connector(&self, connector: Arc<dyn weir_nodes::functions::http::Connector>) {
        let _ = self.connector.set(connector);
    }

    pub(crate) fn connector(&self) -> Option<Arc<dyn weir_nodes::functions::http::Connector>> {
        self.connector.get().cloned()
    }

    /// Gives `action` nodes what runs them.
    pub fn set_actor(&self, actor: Arc<dyn weir_nodes::functions::action::Actor>) {
        let _ = self.actor.set(actor);
    }

    pub(crate) fn actor(&self) -> Option<Arc<dyn weir_nodes::functions::action::Actor>> {
        self.actor.get().cloned()
    }

    /// Hands every delivery, once it is on disk, to `outbox`.
    pub fn set_outbox(
        &self,
        outbox: tokio::sync::mpsc::UnboundedSender<weir_storage::DeliveryRecord>,
    ) {
        *self.outbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(outbox);
    }

    pub(crate) fn hand_to_outbox(&self, delivery: weir_storage::DeliveryRecord) {
        if let Some(hook) = self.on_delivery.get() {
            hook(&delivery);
        }
        if let Some(tx) = &*self.outbox.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(delivery);
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A new run id: UUIDv7 text, so ids sort by creation time.
    pub fn new_run_id() -> String {
        uuid::Uuid::now_v7().to_string()
    }

    /// Creates a run of `flow` for `event` and writes it, with the flow's
    /// snapshot, to disk. Returns once both are durable; [`Engine::drive`]
    /// then runs it.
    pub async fn start(
        &self,
        flow: &Arc<Flow>,
        tenant: &str,
        trigger: &str,
        event: Value,
    ) -> Result<RunRecord> {
        let admission = Admission {
            run_id: Self::new_run_id(),
            tenant: tenant.to_owned(),
            trigger: trigger.to_owned(),
            event: Arc::new(event),
            queued: false,
            concurrency_key: None,
            connection: None,
            writes: Vec::new(),
        };
        self.admit(flow, admission).await
    }

    /// Writes a new run (and the flow's snapshot, and the admission's other
    /// writes: a dedupe key, a cron instant, a poll's seen record) in one
    /// commit, and returns once it is on disk: the moment an event may be
    /// acknowledged.
    pub async fn admit(&self, flow: &Arc<Flow>, admission: Admission) -> Result<RunRecord> {
        let run = self.new_run(flow, &admission);
        let mut commit = self.admission_commit(flow, &run);
        commit.writes.extend(admission.writes);
        self.store.commit(commit).await?;
        Ok(run)
    }

    /// The run record an admission creates.
    pub fn new_run(&self, flow: &Arc<Flow>, a: &Admission) -> RunRecord {
        let now = self.clock.now();
        RunRecord {
            id: a.run_id.clone(),
            tenant: a.tenant.clone(),
            flow: flow.id.clone(),
            flow_version: flow.version.clone(),
            trigger: a.trigger.clone(),
            concurrency_key: a.concurrency_key.clone(),
            connection: a.connection.clone(),
            attempt: 1,
            status: if a.queued {
                RunStatus::Queued
            } else {
                RunStatus::Running
            },
            event: a.event.clone(),
            error: None,
            created_at: now,
            started_at: (!a.queued).then_some(now),
            finished_at: None,
        }
    }

    /// The commit that creates `run`: its record, and the flow's snapshot if
    /// this engine has not written it yet.
    pub fn admission_commit(&self, flow: &Arc<Flow>, run: &RunRecord) -> Commit {
        let mut commit = Commit::new();
        if self.remember(flow) {
            commit.push(Write::Snapshot(FlowSnapshot {
                flow: flow.id.clone(),
                version: flow.version.clone(),
                file: flow.file.clone(),
                source: flow.source.clone(),
            }));
        }
        commit.push(Write::NewRun(run.clone()));
        commit
    }

    /// A queued run's turn has come: it becomes `running` (on disk).
    pub async fn promote(&self, mut run: RunRecord) -> Result<RunRecord> {
        run.status = RunStatus::Running;
        run.started_at = Some(self.clock.now());
        self.store.commit(Commit::new().run(run.clone())).await?;
        Ok(run)
    }

    /// A failed run gets another attempt: its failed nodes run again, its
    /// finished ones keep their outputs. `queued`: it waits for its turn.
    pub async fn retry(&self, mut run: RunRecord, queued: bool) -> Result<RunRecord> {
        run.status = if queued {
            RunStatus::Queued
        } else {
            RunStatus::Running
        };
        run.attempt += 1;
        run.error = None;
        run.finished_at = None;
        // Written whole, event and id index included, like a new run: if the
        // retention sweep forgot the run between reading and this commit,
        // the run is whole again (its node records are gone, so every node
        // runs again).
        self.store
            .commit(Commit::new().with(Write::NewRun(run.clone())))
            .await?;
        Ok(run)
    }

    /// Marks a run that is not being driven (queued, or left unfinished) as
    /// cancelled.
    pub async fn cancel_stored(&self, mut run: RunRecord) -> Result<RunRecord> {
        run.status = RunStatus::Cancelled;
        run.error = Some("cancelled".into());
        run.finished_at = Some(self.clock.now());
        self.store.commit(Commit::new().run(run.clone())).await?;
        Ok(run)
    }

    /// Keeps `flow` for the runs that start on it; true if it is new here
    /// (its snapshot must be written).
    fn remember(&self, flow: &Arc<Flow>) -> bool {
        let key = (flow.id.clone(), flow.version.clone());
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        if flows.contains_key(&key) {
            return false;
        }
        flows.insert(key, flow.clone());
        true
    }

    /// The flow version a run started on: in memory, or read back from its
    /// snapshot.
    pub fn flow_of(&self, run: &RunRecord) -> Result<Arc<Flow>> {
        let key = (run.flow.clone(), run.flow_version.clone());
        if let Some(flow) = self
            .flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(flow.clone());
        }
        let snapshot = self
            .store
            .snapshot(&run.flow, &run.flow_version)?
            .ok_or_else(|| EngineError::MissingSnapshot {
                run: run.id.clone(),
                flow: run.flow.clone(),
                version: run.flow_version.clone(),
            })?;
        let flow = flow::load_snapshot(&snapshot.source, &snapshot.file).map_err(|e| {
            EngineError::BadSnapshot {
                run: run.id.clone(),
                flow: run.flow.clone(),
                error: e.to_string(),
            }
        })?;
        let flow = Arc::new(flow);
        self.flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, flow.clone());
        Ok(flow)
    }

    /// Drives a run until it finishes, resuming from its node records if it
    /// ran before. Returns the finished run, which is on disk.
    pub async fn drive(&self, run: RunRecord) -> Result<RunRecord> {
        self.drive_with(run, Arc::new(RunControl::new())).await
    }

    /// [`Engine::drive`], with a handle to cancel the run and to see whether
    /// it is busy or only waiting on timers.
    pub async fn drive_with(&self, run: RunRecord, control: Arc<RunControl>) -> Result<RunRecord> {
        let flow = self.flow_of(&run)?;
        let records = self.store.nodes(&run.tenant, &run.id)?;
        runner::Runner::new(self, flow, run, records, control)
            .run()
            .await
    }

    /// [`Engine::drive_with`] for a run that has never been driven (just
    /// admitted, or promoted from its queue): there are no node records to
    /// read back.
    pub async fn drive_new(&self, run: RunRecord, control: Arc<RunControl>) -> Result<RunRecord> {
        let flow = self.flow_of(&run)?;
        runner::Runner::new(self, flow, run, Vec::new(), control)
            .run()
            .await
    }

    /// The runs that did not finish before the last stop, oldest first.
    pub fn unfinished(&self) -> Result<Vec<RunRecord>> {
        let mut runs = self.store.unfinished_runs()?;
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(runs)
    }
}

#[cfg(test)]
mod tests;
