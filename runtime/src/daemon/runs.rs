//! The daemon's runs: admission (backlog limit, flow `concurrency` keys),
//! one task per run being driven, queues of runs waiting for their key,
//! cancel, retry, waiting for a run to finish, and resuming at start.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rhai::Scope;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::AbortHandle;
use tracing::{error, info, warn};
use weir_nodes::script::to_dynamic;
use weir_storage::{RunRecord, RunStatus, Write};

use super::registry::Registry;
use crate::engine::{Admission, Engine, EngineError, RunControl};
use crate::flow::Flow;
use crate::metrics;

/// Why a run was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("too many unfinished runs ({0}); try again later")]
    Overloaded(usize),
    #[error("the flow's concurrency key: {0}")]
    Key(String),
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

/// A run waiting for its concurrency key: in memory (admitted while this
/// daemon ran), or on disk (found at start).
enum Queued {
    Run(RunRecord),
    OnDisk(String),
}

impl Queued {
    fn id(&self) -> &str {
        match self {
            Self::Run(run) => &run.id,
            Self::OnDisk(id) => id,
        }
    }
}

/// Runs of one (tenant, flow, concurrency key).
#[derive(Default)]
struct Slot {
    running: u32,
    queue: VecDeque<Queued>,
}

type SlotKey = (String, String, String);

pub struct Runs {
    engine: Arc<Engine>,
    registry: Arc<Registry>,
    live: Mutex<HashMap<String, Live>>,
    slots: Mutex<HashMap<SlotKey, Slot>>,
    /// Unfinished runs held in memory: driven, waiting to be, or queued.
    /// Parked runs (only timers left) are on disk alone and do not count.
    backlog: AtomicUsize,
    max_backlog: usize,
    /// How many runs are driven at once; the others wait for a permit.
    permits: Arc<Semaphore>,
    /// Parked runs by wake time.
    parked: Mutex<BTreeMap<(DateTime<Utc>, String), ()>>,
    parked_changed: Notify,
}

/// How many runs are driven at once.
pub const MAX_DRIVEN: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runs {
    /// Must be called within a Tokio runtime: it starts the task that wakes
    /// parked runs.
    pub fn new(engine: Arc<Engine>, registry: Arc<Registry>, max_backlog: usize) -> Arc<Self> {
        let runs = Arc::new(Self {
            engine,
            registry,
            live: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            backlog: AtomicUsize::new(0),
            max_backlog,
            permits: Arc::new(Semaphore::new(MAX_DRIVEN)),
            parked: Mutex::new(BTreeMap::new()),
            parked_changed: Notify::new(),
        });
        tokio::spawn(Self::wake_parked(runs.clone()));
        runs
    }

    /// Runs parked, waiting for their timers.
    pub fn parked(&self) -> usize {
        lock(&self.parked).len()
    }

    fn park(&self, run: &RunRecord, at: DateTime<Utc>) {
        lock(&self.parked).insert((at, run.id.clone()), ());
        self.parked_changed.notify_one();
    }

    /// Takes a run out of the parked set; true if it was there.
    fn unpark(&self, id: &str) -> bool {
        let mut parked = lock(&self.parked);
        let key = parked.keys().find(|(_, r)| r == id).cloned();
        key.is_some_and(|k| parked.remove(&k).is_some())
    }

    /// Drives parked runs again when their timers are due. Lives as long
    /// as the process (the daemon's `Runs` does too).
    async fn wake_parked(runs: Arc<Self>) {
        loop {
            let next = lock(&runs.parked).keys().next().map(|(at, _)| *at);
            let wait = match next {
                Some(at) => runs.engine.clock().until(at),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = runs.parked_changed.notified() => continue,
            }
            let now = runs.engine.clock().now();
            let due: Vec<String> = {
                let mut parked = lock(&runs.parked);
                let later = parked.split_off(&(now, String::from("\u{10FFFF}")));
                let due = std::mem::replace(&mut *parked, later);
                due.into_keys().map(|(_, id)| id).collect()
            };
            for id in due {
                match runs.engine.store().run_by_id(&id) {
                    Ok(Some(run)) if !run.status.is_finished() => {
                        runs.backlog.fetch_add(1, Ordering::Relaxed);
                        runs.launch(run, false);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        error!(run_id = %id, error = %e, "cannot read a parked run; it resumes at the next start")
                    }
                }
            }
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Unfinished runs held: being driven or queued.
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    pub fn is_overloaded(&self) -> bool {
        self.backlog() >= self.max_backlog
    }

    /// The concurrency key of an event, if the flow has a `concurrency`.
    fn concurrency_key(
        flow: &Flow,
        tenant: &str,
        event: &Value,
    ) -> Result<Option<String>, AdmitError> {
        let Some(c) = &flow.concurrency else {
            return Ok(None);
        };
        let Some(expr) = &c.key else {
            // A limit without a key holds for all runs of the flow.
            return Ok(Some(String::new()));
        };
        let mut scope = Scope::new();
        scope.push_constant_dynamic("event", to_dynamic(event));
        scope.push_constant_dynamic("vars", flow.vars_dynamic.clone());
        scope.push_constant("tenant", tenant.to_owned());
        scope.push_constant("flow", flow.id.clone());
        let value = expr
            .eval(&mut scope, None)
            .map_err(|e| AdmitError::Key(e.to_string()))?;
        let json = weir_nodes::script::to_json(&value).map_err(AdmitError::Key)?;
        Ok(Some(match json {
            Value::String(s) => s,
            other => other.to_string(),
        }))
    }

    fn limit_of(&self, flow_id: &str) -> u32 {
        self.registry
            .get(flow_id)
            .and_then(|f| f.concurrency.as_ref().map(|c| c.limit))
            .unwrap_or(1)
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
        let backlog = self.backlog.fetch_add(1, Ordering::Relaxed);
        if backlog >= self.max_backlog {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            return Err(AdmitError::Overloaded(backlog));
        }
        let key = match Self::concurrency_key(flow, tenant, &event) {
            Ok(key) => key,
            Err(e) => {
                self.backlog.fetch_sub(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let run_id = Engine::new_run_id();
        let writes = writes(&run_id);
        let mut admission = Admission {
            run_id,
            tenant: tenant.to_owned(),
            trigger: trigger.to_owned(),
            event,
            queued: false,
            concurrency_key: key.clone(),
            writes,
        };
        // Decide, in arrival order, whether it runs now or waits.
        let run = match &key {
            None => self.engine.new_run(flow, &admission),
            Some(key) => {
                let limit = flow.concurrency.as_ref().map_or(1, |c| c.limit);
                let mut slots = lock(&self.slots);
                let slot = slots
                    .entry((tenant.to_owned(), flow.id.clone(), key.clone()))
                    .or_default();
                admission.queued = slot.running >= limit;
                let run = self.engine.new_run(flow, &admission);
                if admission.queued {
                    slot.queue.push_back(Queued::Run(run.clone()));
                } else {
                    slot.running += 1;
                }
                run
            }
        };
        let mut commit = self.engine.admission_commit(flow, &run);
        commit.writes.extend(admission.writes);
        if let Err(e) = self.engine.store().commit(commit).await {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            if run.status == RunStatus::Running {
                self.release_slot(&run);
            } else {
                self.unqueue(&run.id);
            }
            return Err(AdmitError::Engine(e.into()));
        }
        metrics::run_admitted(&run);
        if run.status == RunStatus::Running {
            self.launch(run.clone(), true);
        }
        Ok(run)
    }

    /// Drives a run in its own task. `fresh`: it has no node records yet.
    fn launch(self: &Arc<Self>, run: RunRecord, fresh: bool) {
        let control = Arc::new(RunControl::new());
        let (done_tx, done_rx) = watch::channel(None);
        let id = run.id.clone();
        let this = self.clone();
        let task_control = control.clone();
        // Registered before the task can finish and remove it.
        let mut live = lock(&self.live);
        let permits = self.permits.clone();
        let handle = tokio::spawn(async move {
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
        self.backlog.fetch_sub(1, Ordering::Relaxed);
        if run.status.is_finished() {
            metrics::run_finished(run);
            self.release_slot(run);
        } else if let Some(at) = parked {
            self.park(run, at);
        }
    }

    /// Frees a run's concurrency slot and starts the next queued run of it.
    fn release_slot(self: &Arc<Self>, run: &RunRecord) {
        let Some(key) = &run.concurrency_key else {
            return;
        };
        let slot_key = (run.tenant.clone(), run.flow.clone(), key.clone());
        let limit = self.limit_of(&run.flow);
        let mut next = Vec::new();
        {
            let mut slots = lock(&self.slots);
            if let Some(slot) = slots.get_mut(&slot_key) {
                slot.running = slot.running.saturating_sub(1);
                while slot.running < limit {
                    let Some(queued) = slot.queue.pop_front() else {
                        break;
                    };
                    slot.running += 1;
                    next.push(queued);
                }
                if slot.running == 0 && slot.queue.is_empty() {
                    slots.remove(&slot_key);
                }
            }
        }
        for queued in next {
            self.start_queued(queued);
        }
    }

    fn start_queued(self: &Arc<Self>, queued: Queued) {
        let this = self.clone();
        tokio::spawn(async move {
            let queued = match queued {
                Queued::Run(run) => run,
                Queued::OnDisk(id) => match this.engine.store().run_by_id(&id) {
                    Ok(Some(run)) if run.status == RunStatus::Queued => {
                        this.backlog.fetch_add(1, Ordering::Relaxed);
                        run
                    }
                    Ok(_) => {
                        // Cancelled meanwhile: the next one may go.
                        if let Ok(Some(run)) = this.engine.store().run_by_id(&id) {
                            this.release_slot(&run);
                        }
                        return;
                    }
                    Err(e) => {
                        error!(run_id = %id, error = %e, "cannot read a queued run; it starts at the next start");
                        return;
                    }
                },
            };
            match this.engine.promote(queued.clone()).await {
                // A retried run may wait in a queue too: it has records.
                Ok(run) => {
                    let fresh = run.attempt == 1;
                    this.launch(run, fresh)
                }
                Err(e) => {
                    error!(run_id = %queued.id, error = %e, "cannot start a queued run");
                    this.backlog.fetch_sub(1, Ordering::Relaxed);
                }
            }
        });
    }

    /// Takes a queued run out of its queue; true if it was there.
    fn unqueue(&self, id: &str) -> bool {
        let mut slots = lock(&self.slots);
        for slot in slots.values_mut() {
            if let Some(i) = slot.queue.iter().position(|q| q.id() == id) {
                slot.queue.remove(i);
                return true;
            }
        }
        false
    }

    /// Resumes every unfinished run found on disk: queued ones wait for
    /// their key again, in arrival order; the others are driven. Only the
    /// index of unfinished runs is read here; the runs themselves are read
    /// and driven in the background, a bounded number at a time, so the
    /// daemon serves at once and its memory stays bounded.
    pub fn resume_all(self: &Arc<Self>) -> Result<usize, EngineError> {
        let mut runs = self.engine.store().active_runs()?;
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        let count = runs.len();
        let mut to_drive = VecDeque::new();
        let mut to_start = Vec::new();
        {
            let mut slots = lock(&self.slots);
            for run in runs {
                match run.concurrency_key {
                    None => to_drive.push_back(run.id),
                    Some(key) => {
                        let slot = slots.entry((run.tenant, run.flow, key)).or_default();
                        if run.status == RunStatus::Queued {
                            slot.queue.push_back(Queued::OnDisk(run.id));
                        } else {
                            slot.running += 1;
                            to_drive.push_back(run.id);
                        }
                    }
                }
            }
            for ((_, flow, _), slot) in slots.iter_mut() {
                let limit = self
                    .registry
                    .get(flow)
                    .and_then(|f| f.concurrency.as_ref().map(|c| c.limit))
                    .unwrap_or(1);
                while slot.running < limit {
                    let Some(queued) = slot.queue.pop_front() else {
                        break;
                    };
                    slot.running += 1;
                    to_start.push(queued);
                }
            }
        }
        for queued in to_start {
            self.start_queued(queued);
        }
        if count > 0 {
            info!(runs = count, "resuming unfinished runs");
            tokio::spawn(self.clone().feed(to_drive));
        }
        Ok(count)
    }

    /// Drives resumed runs, keeping at most [`MAX_DRIVEN`] in memory.
    async fn feed(self: Arc<Self>, mut ids: VecDeque<String>) {
        while let Some(id) = ids.pop_front() {
            while lock(&self.live).len() >= MAX_DRIVEN {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            match self.engine.store().run_by_id(&id) {
                Ok(Some(run)) if !run.status.is_finished() => {
                    self.backlog.fetch_add(1, Ordering::Relaxed);
                    self.launch(run, false);
                }
                Ok(_) => {}
                Err(e) => {
                    error!(run_id = %id, error = %e, "cannot read an unfinished run; it resumes at the next start")
                }
            }
        }
    }

    /// Waits up to `timeout` for a run to finish; `None` if it did not.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<RunRecord> {
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
                    if let Ok(Some(run)) = self.engine.store().run_by_id(id)
                        && run.status.is_finished()
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

    /// Cancels a live or queued run.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<RunRecord, ControlError> {
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
            .run_by_id(id)
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
        if self.unqueue(id) {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
        }
        let run = self.engine.cancel_stored(run).await?;
        metrics::run_finished(&run);
        if was_parked {
            self.release_slot(&run);
        }
        Ok(run)
    }

    /// Runs a failed run again from its failed nodes.
    pub async fn retry(self: &Arc<Self>, id: &str) -> Result<RunRecord, ControlError> {
        let run = self
            .engine
            .store()
            .run_by_id(id)
            .map_err(EngineError::from)?
            .ok_or_else(|| ControlError::NotFound(id.to_owned()))?;
        if run.status != RunStatus::Failed {
            return Err(ControlError::Conflict {
                id: id.to_owned(),
                status: run.status.as_str(),
                what: "only a failed run can be retried",
            });
        }
        self.backlog.fetch_add(1, Ordering::Relaxed);
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
                self.backlog.fetch_sub(1, Ordering::Relaxed);
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
                slot.queue.push_back(Queued::Run(run.clone()));
            }
        } else {
            self.launch(run.clone(), false);
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
