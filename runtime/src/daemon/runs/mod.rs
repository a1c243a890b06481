//! The daemon's runs: admission (backlog limit, flow `concurrency` keys),
//! one task per run being driven, queues of runs waiting for their key,
//! cancel, retry, waiting for a run to finish, and resuming at start.
//!
//! Runs are driven on a Tokio runtime of their own (`work`), apart from
//! the HTTP edge's: a script that burns CPU holds a worker of that runtime,
//! never one that answers webhooks or health checks.
//!
//! - `backlog`: the runs held in memory, counted by the permits they hold
//! - `queue`: concurrency keys: who runs, who waits
//! - `resume`: resuming at start, parking runs that only wait on timers
//! - `retention`: forgetting finished runs once their retention ends

mod backlog;
mod queue;
mod resume;
pub mod retention;

use crate::auth::Scope;
pub use backlog::{Backlog, BacklogPermit};
use queue::{Queued, Slot, SlotKey};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::AbortHandle;
use tracing::{error, warn};
use weir_storage::{ConnectionRecord, RunRecord, RunStatus, Write};

use super::registry::Registry;
use crate::engine::{Admission, Engine, EngineError, RunControl};
use crate::flow::Flow;
use crate::metrics;

/// A run whose admission is submitted to the store, not yet on disk
/// ([`Runs::submit`]); [`Runs::admitted`] waits for it.
pub struct Submitted(Pending);

enum Pending {
    /// Admitted here: the commit is on its way to disk.
    Local {
        run: RunRecord,
        ticket: weir_storage::Ticket,
        /// Its place in the backlog, if it starts at once (a queued run's
        /// place waits in its queue with it).
        permit: Option<BacklogPermit>,
    },
    /// Forwarded to a worker (`--role ingest`): the publish is on its way.
    Forwarded {
        run: RunRecord,
        confirmed: tokio::sync::oneshot::Receiver<Result<(), AdmitError>>,
    },
}

/// Why a run was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("too many unfinished runs ({0}); try again later")]
    Overloaded(usize),
    /// Storage failed: nothing can be made durable (weir is stopping).
    #[error("weir cannot store events now: {0}")]
    Unavailable(String),
    #[error("the flow's concurrency key: {0}")]
    Key(String),
    /// `--role ingest`: the event broker cannot take the event now.
    #[error("weir cannot queue events now: {0}")]
    Broker(String),
    /// `--role ingest`: the event queue is at its bound.
    #[error("{0}; try again later")]
    QueueFull(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Why a run could not be cancelled or retried.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no run {0}")]
    NotFound(String),
    #[error("run {id} is {status}; {what}")]
    Conflict {
        id: String,
        status: &'static str,
        what: &'static str,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

struct Live {
    control: Arc<RunControl>,
    done: watch::Receiver<Option<RunRecord>>,
    abort: AbortHandle,
}

pub struct Runs {
    engine: Arc<Engine>,
    registry: Arc<Registry>,
    /// Where runs and trigger tasks are driven.
    work: tokio::runtime::Handle,
    live: Mutex<HashMap<String, Live>>,
    slots: Mutex<HashMap<SlotKey, Slot>>,
    /// Unfinished runs held in memory: driven, waiting to be, or queued.
    /// Parked runs (only timers left) are on disk alone and do not count.
    backlog: Arc<Backlog>,
    /// How many runs are driven at once; the others wait for a permit.
    permits: Arc<Semaphore>,
    /// Parked runs by wake time.
    parked: Mutex<BTreeMap<(DateTime<Utc>, String), ()>>,
    parked_changed: Notify,
    /// Unfinished runs that cannot be driven because their records cannot
    /// be read back, by id, with why.
    stuck: Mutex<BTreeMap<String, String>>,
    /// Where `run.failed` notifications go (the daemon sets it).
    notifier: std::sync::OnceLock<Arc<super::notify::Notifier>>,
    /// `--role ingest`: events go to workers instead of running here.
    forward: std::sync::OnceLock<Arc<super::cluster::ingest::Forward>>,
}

/// How many runs are driven at once.
pub const MAX_DRIVEN: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runs {
    /// Drives runs on `work` (a runtime of their own), where it starts the
    /// task that wakes parked runs.
    pub fn new(
        engine: Arc<Engine>,
        registry: Arc<Registry>,
        max_backlog: usize,
        work: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let runs = Arc::new(Self {
            engine,
            registry,
            work,
            live: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            backlog: Backlog::new(max_backlog),
            permits: Arc::new(Semaphore::new(MAX_DRIVEN)),
            parked: Mutex::new(BTreeMap::new()),
            parked_changed: Notify::new(),
            stuck: Mutex::new(BTreeMap::new()),
            notifier: std::sync::OnceLock::new(),
            forward: std::sync::OnceLock::new(),
        });
        runs.work.spawn(Self::wake_parked(runs.clone()));
        runs
    }

    pub fn set_notifier(&self, notifier: Arc<super::notify::Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    /// `--role ingest`: admissions publish to the event queues.
    pub fn set_forward(&self, forward: Arc<super::cluster::ingest::Forward>) {
        let _ = self.forward.set(forward);
    }

    /// Whether admitted events run elsewhere (`--role ingest`).
    pub fn forwards(&self) -> bool {
        self.forward.get().is_some()
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The flows runs are admitted for.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The runtime runs and trigger tasks are driven on.
    pub fn work(&self) -> &tokio::runtime::Handle {
        &self.work
    }

    /// Unfinished runs held: being driven or queued.
    pub fn backlog(&self) -> usize {
        self.backlog.held()
    }

    /// Unfinished runs that cannot be driven (their records do not read
    /// back): id → why.
    pub fn stuck(&self) -> BTreeMap<String, String> {
        lock(&self.stuck).clone()
    }

    fn mark_stuck(&self, id: &str, why: String) {
        error!(run_id = %id, error = %why, "an unfinished run cannot be read back; it is not driven");
        lock(&self.stuck).insert(id.to_owned(), why);
    }

    /// Admits a run: durable when this returns. It starts at once, or waits
    /// its turn if its concurrency key is at its limit.
    pub async fn admit(
        self: &Arc<Self>,
        flow: &Arc<Flow>,
        tenant: &str,
        trigger: &str,
        event: Value,
        writes: impl FnOnce(&str) -> Vec<Write>,
    ) -> Result<RunRecord, AdmitError> {
        let submitted = self.submit(flow, tenant, None, trigger, event, writes)?;
        self.admitted(submitted).await
    }

    /// [`Runs::admit`] for one connection of a flow that runs per
    /// connection (its cron and poll triggers).
    pub async fn admit_for(
        self: &Arc<Self>,
        flow: &Arc<Flow>,
        connection: &ConnectionRecord,
        trigger: &str,
        event: Value,
        writes: impl FnOnce(&str) -> Vec<Write>,
    ) -> Result<RunRecord, AdmitError> {
        let submitted = self.submit(
            flow,
            &connection.tenant,
            Some(connection),
            trigger,
            event,
            writes,
        )?;
        self.admitted(submitted).await
    }

    /// The connection a run of a per-connection flow is for when its
    /// trigger does not name one (a webhook, an api call): the tenant's only
    /// connection to the integration, if it has exactly one.
    fn own_connection(&self, flow: &Flow, tenant: &str) -> Option<Value> {
        let integration = flow.integration.as_deref()?;
        let all = match self.engine.store().connections(tenant) {
            Ok(all) => all,
            Err(e) => {
                warn!(flow = %flow.id, tenant, error = %e, "cannot read the tenant's connections; the run starts without `connection`");
                return None;
            }
        };
        let mut of_it = all.iter().filter(|c| c.integration == integration);
        match (of_it.next(), of_it.next()) {
            (Some(only), None) => Some(crate::connect::connections::scope_value(only)),
            _ => None,
        }
    }

    /// The first half of [`Runs::admit`], which does not wait: decides,
    /// in call order, whether the run starts or waits its turn, and submits
    /// its commit. Many admissions submitted in a row share disk flushes.
    /// `connection`: the one the run is for (else, in a flow that runs per
    /// connection, the tenant's only one).
    pub fn submit(
        self: &Arc<Self>,
        flow: &Arc<Flow>,
        tenant: &str,
        connection: Option<&ConnectionRecord>,
        trigger: &str,
        event: Value,
        writes: impl FnOnce(&str) -> Vec<Write>,
    ) -> Result<Submitted, AdmitError> {
        let connection = match connection {
            Some(c) => Some(crate::connect::connections::scope_value(c)),
            None => self.own_connection(flow, tenant),
        };
        if let Some(forward) = self.forward.get() {
            if let Some(why) = self.engine.store().failure() {
                return Err(AdmitError::Unavailable(why));
            }
            // The run id is the event's id: a worker that gets the event
            // again (after another one died) starts the same run.
            let run_id = event
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(Engine::new_run_id, str::to_owned);
            let admission = Admission {
                concurrency_key: Self::concurrency_key(flow, tenant, &event)?,
                writes: Vec::new(),
                run_id,
                tenant: tenant.to_owned(),
                trigger: trigger.to_owned(),
                event: Arc::new(event),
                queued: true,
                connection,
            };
            let run = self.engine.new_run(flow, &admission);
            let confirmed = forward.send(flow, &run, writes(&run.id));
            return Ok(Submitted(Pending::Forwarded { run, confirmed }));
        }
        let run_id = Engine::new_run_id();
        self.submit_as(flow, tenant, connection, trigger, event, run_id, writes)
    }

    /// [`Runs::submit`] under a given run id, for a given connection (its
    /// public view): a worker admitting an event from the queue.
    #[allow(clippy::too_many_arguments)]
    pub fn submit_as(
        self: &Arc<Self>,
        flow: &Arc<Flow>,
        tenant: &str,
        connection: Option<Value>,
        trigger: &str,
        event: Value,
        run_id: String,
        writes: impl FnOnce(&str) -> Vec<Write>,
    ) -> Result<Submitted, AdmitError> {
        if let Some(why) = self.engine.store().failure() {
            return Err(AdmitError::Unavailable(why));
        }
        let permit = self.backlog.try_reserve().map_err(AdmitError::Overloaded)?;
        let key = Self::concurrency_key(flow, tenant, &event)?;
        let writes = writes(&run_id);
        let mut admission = Admission {
            run_id,
            tenant: tenant.to_owned(),
            trigger: trigger.to_owned(),
            event: Arc::new(event),
            queued: false,
            concurrency_key: key.clone(),
            connection,
            writes,
        };
        // Decide, in arrival order, whether it runs now or waits. A queued
        // run's permit waits in its queue with it.
        let (run, permit) = match &key {
            None => (self.engine.new_run(flow, &admission), Some(permit)),
            Some(key) => {
                let limit = flow.concurrency.as_ref().map_or(1, |c| c.limit);
                let mut slots = lock(&self.slots);
                let slot = slots
                    .entry((tenant.to_owned(), flow.id.clone(), key.clone()))
                    .or_default();
                admission.queued = slot.running >= limit;
                let run = self.engine.new_run(flow, &admission);
                if admission.queued {
                    slot.queue
                        .push_back(Queued::Run(Box::new(run.clone()), permit));
                    (run, None)
                } else {
                    slot.running += 1;
                    (run, Some(permit))
                }
            }
        };
        let mut commit = self.engine.admission_commit(flow, &run);
        commit.writes.extend(admission.writes);
        let ticket = self.engine.store().commit(commit);
        Ok(Submitted(Pending::Local {
            run,
            ticket,
            permit,
        }))
    }

    /// The second half of [`Runs::admit`]: once the run's commit is on disk,
    /// it starts (unless it waits its turn).
    pub async fn admitted(self: &Arc<Self>, submitted: Submitted) -> Result<RunRecord, AdmitError> {
        let (run, ticket, permit) = match submitted.0 {
            Pending::Local {
                run,
                ticket,
                permit,
            } => (run, ticket, permit),
            Pending::Forwarded { run, confirmed } => {
                return match confirmed.await {
                    Ok(Ok(())) => Ok(run),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(AdmitError::Broker("weir is stopping".into())),
                };
            }
        };
        if let Err(e) = ticket.await {
            if run.status == RunStatus::Running {
                self.release_slot(&run);
            } else {
                drop(self.unqueue(&run.id));
            }
            return Err(AdmitError::Engine(e.into()));
        }
        metrics::run_admitted(&run);
        if let Some(permit) = permit {
            self.launch(run.clone(), true, permit);
        }
        Ok(run)
    }

    /// Drives a run in its own task on the work runtime, holding its
    /// backlog permit until the task ends. `fresh`: it has no node records
    /// yet.
    fn launch(self: &Arc<Self>, run: RunRecord, fresh: bool, permit: BacklogPermit) {
        let control = Arc::new(RunControl::new());
        let (done_tx, done_rx) = watch::channel(None);
        let id = run.id.clone();
        let this = self.clone();
        let task_control = control.clone();
        // Registered before the task can finish and remove it.
        let mut live = lock(&self.live);
        let permits = self.permits.clone();
        let handle = self.work.spawn(async move {
            let _backlog = permit;
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let started = run.clone();
            let result = if fresh {
                this.engine.drive_new(run, task_control.clone()).await
            } else {
                this.engine.drive_with(run, task_control.clone()).await
            };
            let ended = match result {
                Ok(run) => run,
                Err(EngineError::Storage(weir_storage::Error::Unreadable(u))) => {
                    this.mark_stuck(&started.id, u.error);
                    started
                }
                Err(e) => {
                    error!(run_id = %started.id, error = %e, "run could not be driven; it stays unfinished until the next start");
                    started
                }
            };
            this.ended(&ended, task_control.parked_until());
            if ended.status.is_finished() {
                let _ = done_tx.send(Some(ended));
            }
        });
        live.insert(
            id,
            Live {
                control,
                done: done_rx,
                abort: handle.abort_handle(),
            },
        );
    }

    /// A driven run ended: finished, parked until `parked`, or stopped by
    /// an error (it stays unfinished, holding its concurrency slot, until
    /// the next start).
    fn ended(self: &Arc<Self>, run: &RunRecord, parked: Option<DateTime<Utc>>) {
        lock(&self.live).remove(&run.id);
        if run.status.is_finished() {
            metrics::run_finished(run);
            self.release_slot(run);
            if run.status == RunStatus::Failed
                && let Some(notifier) = self.notifier.get().cloned()
            {
                let run = run.clone();
                self.work
                    .spawn(async move { notifier.run_failed(&run).await });
            }
        } else if let Some(at) = parked {
            self.park(run, at);
        }
    }

    /// Waits up to `timeout` for a run to finish — its end on disk, its
    /// deliveries handed to the outbox; `None` if it did not.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<RunRecord> {
        if self.forwards() {
            // The run is a worker's.
            return None;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // A parked run comes back as a new live entry: look again.
            let live = lock(&self.live).get(id).map(|l| l.done.clone());
            match live {
                Some(mut done) => {
                    if let Ok(Ok(run)) =
                        tokio::time::timeout_at(deadline, done.wait_for(|r| r.is_some())).await
                    {
                        return run.clone();
                    }
                }
                None => {
                    // A run's last commit can be read before it is on disk
                    // and before its deliveries reach the outbox: a stored
                    // end counts only once no task drives the run. Looked
                    // at after the read, so a run launched meanwhile (a
                    // queued one whose turn came) is waited for above.
                    if let Ok(Some(run)) = self.engine.store().run_by_id(id)
                        && run.status.is_finished()
                        && !lock(&self.live).contains_key(id)
                    {
                        return Some(run);
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cancels a live or queued run of the scope.
    pub async fn cancel(
        self: &Arc<Self>,
        scope: &Scope,
        id: &str,
    ) -> Result<RunRecord, ControlError> {
        // The stored record first: a run outside the scope is not found,
        // whether it is live or not.
        let run = scope
            .run(self.engine.store().as_ref(), id)
            .map_err(EngineError::from)?
            .ok_or_else(|| ControlError::NotFound(id.to_owned()))?;
        let live = lock(&self.live)
            .get(id)
            .map(|l| (l.control.clone(), l.done.clone()));
        if let Some((control, mut done)) = live {
            control.cancel();
            if let Ok(run) = done.wait_for(|r| r.is_some()).await
                && let Some(run) = run.clone()
            {
                return Ok(run);
            }
        }
        let run = self
            .engine
            .store()
            .run(&run.tenant, id)
            .map_err(EngineError::from)?
            .ok_or_else(|| ControlError::NotFound(id.to_owned()))?;
        if run.status.is_finished() {
            return Err(ControlError::Conflict {
                id: id.to_owned(),
                status: run.status.as_str(),
                what: "only a live run can be cancelled",
            });
        }
        let was_parked = self.unpark(id);
        // Out of its queue, its place in the backlog is given back.
        drop(self.unqueue(id));
        let run = self.engine.cancel_stored(run).await?;
        metrics::run_finished(&run);
        if was_parked {
            self.release_slot(&run);
        }
        Ok(run)
    }

    /// Stops a tenant's unfinished runs (cancelled; a live one at its next
    /// step) and drops its pending deliveries, then erases every record of
    /// the tenant in one commit. Answers what was stored for it.
    pub async fn erase_tenant(
        self: &Arc<Self>,
        tenant: &str,
        outbox: &super::outbox::Outbox,
    ) -> Result<weir_storage::TenantCounts, EngineError> {
        let store = self.engine.store().clone();
        let scope = Scope::Tenant(tenant.to_owned());
        let (active, unreadable) = store.active_runs()?;
        for run in active.iter().filter(|r| r.tenant == tenant) {
            match self.cancel(&scope, &run.id).await {
                Ok(_) | Err(ControlError::NotFound(_) | ControlError::Conflict { .. }) => {}
                Err(ControlError::Engine(e)) => return Err(e),
            }
        }
        let counts = store.tenants()?.remove(tenant).unwrap_or_default();
        outbox.forget_tenant(tenant)?;
        store
            .commit(weir_storage::Commit::new().with(Write::EraseTenant(tenant.to_owned())))
            .await?;
        let mut stuck = lock(&self.stuck);
        for u in unreadable.iter().filter(|u| u.tenant == tenant) {
            stuck.remove(&u.id);
        }
        Ok(counts)
    }

    /// Runs a failed run again from its failed nodes.
    pub async fn retry(
        self: &Arc<Self>,
        scope: &Scope,
        id: &str,
    ) -> Result<RunRecord, ControlError> {
        let run = scope
            .run(self.engine.store().as_ref(), id)
            .map_err(EngineError::from)?
            .ok_or_else(|| ControlError::NotFound(id.to_owned()))?;
        if run.status != RunStatus::Failed {
            return Err(ControlError::Conflict {
                id: id.to_owned(),
                status: run.status.as_str(),
                what: "only a failed run can be retried",
            });
        }
        let permit = self.backlog.reserve();
        let queued = match &run.concurrency_key {
            None => false,
            Some(key) => {
                let limit = self.limit_of(&run.flow);
                let mut slots = lock(&self.slots);
                let slot = slots
                    .entry((run.tenant.clone(), run.flow.clone(), key.clone()))
                    .or_default();
                if slot.running >= limit {
                    true
                } else {
                    slot.running += 1;
                    false
                }
            }
        };
        let run = match self.engine.retry(run.clone(), queued).await {
            Ok(run) => run,
            Err(e) => {
                if !queued {
                    self.release_slot(&run);
                }
                return Err(e.into());
            }
        };
        if queued {
            if let Some(key) = &run.concurrency_key {
                let mut slots = lock(&self.slots);
                let slot = slots
                    .entry((run.tenant.clone(), run.flow.clone(), key.clone()))
                    .or_default();
                slot.queue
                    .push_back(Queued::Run(Box::new(run.clone()), permit));
            }
        } else {
            self.launch(run.clone(), false, permit);
        }
        Ok(run)
    }

    /// Waits until no run is working (runs that only wait on timers do not
    /// count), at most `grace`; then stops every run task. What they did is
    /// on disk; they resume at the next start.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let busy = lock(&self.live)
                .values()
                .filter(|l| l.control.is_busy())
                .count();
            if busy == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    busy,
                    "grace period over; stopping runs that are still working"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for live in lock(&self.live).values() {
            live.abort.abort();
        }
    }
}
