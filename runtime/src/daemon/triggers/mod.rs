//! The triggers the daemon runs itself: cron schedules and pollers, one task
//! per (tenant, flow, trigger) — per (connection, flow, trigger) in a flow
//! that runs per connection —, restarted when their flow changes; and the
//! locks and expiry of webhook dedupe keys.

mod cron;
mod poll;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use weir_nodes::TriggerKind;
use weir_storage::{Commit, ConnectionRecord, ConnectionState, TriggerKey, Write};

use super::registry::{Changes, Registry};
use super::runs::Runs;
use crate::connect::connections::Connections;
use crate::flow::Flow;

/// Striped locks: one webhook request per (trigger, dedupe key) at a time.
pub struct DedupeLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

impl Default for DedupeLocks {
    fn default() -> Self {
        Self {
            stripes: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl DedupeLocks {
    fn stripe(&self, trigger: &TriggerKey, key: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        trigger.hash(&mut h);
        key.hash(&mut h);
        (h.finish() as usize) % self.stripes.len()
    }

    /// Locks every key, in stripe order (so that two requests never wait
    /// for each other).
    pub async fn lock_all(
        &self,
        keys: &[(TriggerKey, String)],
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys.iter().map(|(t, k)| self.stripe(t, k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }
}

/// When each cron trigger fires next, by (flow, trigger).
#[derive(Default)]
pub struct Schedules {
    next: RwLock<HashMap<(String, String), DateTime<Utc>>>,
}

impl Schedules {
    pub fn next_fire_at(&self, flow: &str, trigger: &str) -> Option<DateTime<Utc>> {
        self.next
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(flow.to_owned(), trigger.to_owned()))
            .copied()
    }

    fn set(&self, flow: &str, trigger: &str, at: Option<DateTime<Utc>>) {
        let mut next = self.next.write().unwrap_or_else(|e| e.into_inner());
        let key = (flow.to_owned(), trigger.to_owned());
        match at {
            Some(at) => next.insert(key, at),
            None => next.remove(&key),
        };
    }
}

/// A trigger task and the switch that stops it (between firings, never in
/// the middle of one).
struct Task {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Task {
    /// Stops it and waits for it to end.
    async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.handle.await;
    }
}

pub struct Triggers {
    runs: Arc<Runs>,
    registry: Arc<Registry>,
    schedules: Arc<Schedules>,
    connections: Arc<Connections>,
    tasks: Mutex<HashMap<String, Vec<Task>>>,
    /// Who fires the triggers (set once, before they start).
    mode: std::sync::OnceLock<Mode>,
}

/// Who fires cron and poll triggers.
#[derive(Clone)]
pub enum Mode {
    /// This process, whenever it leads the trigger (`--role ingest`).
    Led(Arc<crate::daemon::cluster::lead::Lead>),
    /// Not this process (`--role worker`).
    Off,
}

/// Whom one trigger task fires for: a tenant, or one connection of a flow
/// that runs per connection (its tenant's; its state is read at each
/// firing).
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub tenant: String,
    pub connection: Option<String>,
}

impl Target {
    fn key(&self, flow: &str, trigger: &str) -> TriggerKey {
        match &self.connection {
            None => TriggerKey::new(&self.tenant, flow, trigger),
            Some(c) => TriggerKey::for_connection(&self.tenant, flow, trigger, c),
        }
    }

    /// For a connection: its record now, if it is ready. `Err` if it is
    /// gone (the task ends); `Ok(None)` while it is not ready (the firing
    /// is skipped).
    fn ready_connection(&self, runs: &Runs) -> Result<Option<ConnectionRecord>, ()> {
        let Some(id) = &self.connection else {
            return Ok(None);
        };
        match runs.engine().store().connection(&self.tenant, id) {
            Ok(Some(c)) => Ok((c.state == ConnectionState::Ready).then_some(c)),
            Ok(None) => Err(()),
            Err(e) => {
                warn!(tenant = %self.tenant, connection = %id, error = %e, "cannot read the connection; its triggers skip this firing");
                Ok(None)
            }
        }
    }
}

/// Sleeps until `at` or until told to stop; true if told to stop.
async fn sleep_or_stop(runs: &Runs, at: DateTime<Utc>, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = runs.engine().clock().sleep_until(at) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

impl Triggers {
    pub fn new(
        runs: Arc<Runs>,
        registry: Arc<Registry>,
        schedules: Arc<Schedules>,
        connections: Arc<Connections>,
    ) -> Arc<Self> {
        Arc::new(Self {
            runs,
            registry,
            schedules,
            connections,
            tasks: Mutex::new(HashMap::new()),
            mode: std::sync::OnceLock::new(),
        })
    }

    /// Fires triggers only when leading them, or never (default: always).
    pub fn set_mode(&self, mode: Mode) {
        let _ = self.mode.set(mode);
    }

    /// Starts the tasks of every serving flow.
    pub fn start_all(self: &Arc<Self>) {
        for flow in self.registry.all() {
            self.start_flow(&flow);
        }
    }

    fn start_flow(self: &Arc<Self>, flow: &Arc<Flow>) {
        crate::metrics::register_flow(flow);
        if matches!(self.mode.get(), Some(Mode::Off)) {
            return;
        }
        let timed = flow
            .triggers
            .iter()
            .any(|t| matches!(t.kind, TriggerKind::Cron(_) | TriggerKind::Poll(_)));
        let tasks = match &flow.integration {
            None => flow
                .tenants
                .listed()
                .iter()
                .flat_map(|tenant| {
                    let target = Target {
                        tenant: tenant.clone(),
                        connection: None,
                    };
                    self.spawn(flow, &target)
                })
                .collect(),
            Some(_) if timed => {
                let (stop, stop_rx) = watch::channel(false);
                let handle = self
                    .runs
                    .work()
                    .spawn(self.clone().per_connection(flow.clone(), stop_rx));
                vec![Task { stop, handle }]
            }
            Some(_) => Vec::new(),
        };
        if !tasks.is_empty() {
            self.tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(flow.id.clone(), tasks);
        }
    }

    /// The cron and poll tasks of `flow` for `target`.
    fn spawn(&self, flow: &Arc<Flow>, target: &Target) -> Vec<Task> {
        let mut tasks = Vec::new();
        for (index, trigger) in flow.triggers.iter().enumerate() {
            if !matches!(trigger.kind, TriggerKind::Cron(_) | TriggerKind::Poll(_)) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let (runs, flow, target) = (self.runs.clone(), flow.clone(), target.clone());
            // On the work runtime: polls evaluate expressions over
            // whole answers.
            let work = runs.work().clone();
            let key = target.key(&flow.id, &trigger.id);
            let cron = matches!(trigger.kind, TriggerKind::Cron(_));
            let schedules = self.schedules.clone();
            let task = move |stop: watch::Receiver<bool>, since: Option<DateTime<Utc>>| {
                let (runs, flow, target, schedules) = (
                    runs.clone(),
                    flow.clone(),
                    target.clone(),
                    schedules.clone(),
                );
                async move {
                    match cron {
                        true => cron::run(runs, schedules, flow, index, target, stop, since).await,
                        false => poll::run(runs, flow, index, target, stop).await,
                    }
                }
            };
            let handle = match self.mode.get() {
                Some(Mode::Led(lead)) => work.spawn(lead.clone().led(key, stop_rx, task)),
                _ => work.spawn(task(stop_rx, None)),
            };
            tasks.push(Task { stop, handle });
        }
        tasks
    }

    /// A flow that runs per connection: keeps one set of trigger tasks per
    /// connection to its integration (of the tenants it serves), started
    /// when a connection is created and stopped when it is removed. Each
    /// task checks at every firing that its connection is ready.
    async fn per_connection(self: Arc<Self>, flow: Arc<Flow>, mut stop: watch::Receiver<bool>) {
        let Some(integration) = flow.integration.clone() else {
            return;
        };
        let mut changes = self.connections.added_or_removed();
        // By connection id: its tenant and tasks.
        let mut running: HashMap<String, (String, Vec<Task>)> = HashMap::new();
        loop {
            changes.borrow_and_update();
            match self.runs.engine().store().all_connections() {
                Ok(all) => {
                    let wanted: HashMap<String, String> = all
                        .into_iter()
                        .filter(|c| c.integration == integration && flow.tenants.serves(&c.tenant))
                        .map(|c| (c.id, c.tenant))
                        .collect();
                    let gone: Vec<String> = running
                        .keys()
                        .filter(|id| !wanted.contains_key(*id))
                        .cloned()
                        .collect();
                    for id in gone {
                        let Some((tenant, tasks)) = running.remove(&id) else {
                            continue;
                        };
                        for task in tasks {
                            task.stop().await;
                        }
                        self.forget_state(&tenant, &id).await;
                    }
                    for (id, tenant) in wanted {
                        if let std::collections::hash_map::Entry::Vacant(slot) =
                            running.entry(id.clone())
                        {
                            let target = Target {
                                tenant: tenant.clone(),
                                connection: Some(id),
                            };
                            slot.insert((tenant, self.spawn(&flow, &target)));
                        }
                    }
                }
                Err(e) => {
                    warn!(flow = %flow.id, error = %e, "cannot list the connections; the flow's triggers wait for the next change of connections");
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        for task in running.into_values().flat_map(|(_, tasks)| tasks) {
            task.stop().await;
        }
    }

    /// The connection is deleted and its tasks have stopped: what they may
    /// have written after the delete goes too (removing a connection
    /// removes its triggers' state).
    async fn forget_state(&self, tenant: &str, id: &str) {
        let store = self.runs.engine().store();
        if !matches!(store.connection(tenant, id), Ok(None)) {
            return;
        }
        let forget = Write::RemoveConnection {
            tenant: tenant.to_owned(),
            id: id.to_owned(),
        };
        if let Err(e) = store.commit(Commit::new().with(forget)).await {
            warn!(tenant, connection = %id, error = %e, "cannot forget a deleted connection's trigger state");
        }
    }

    /// Stops a flow's tasks and waits for them to end.
    async fn stop_flow(&self, id: &str) {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        for task in tasks.unwrap_or_default() {
            task.stop().await;
        }
        let stale: Vec<(String, String)> = self
            .schedules
            .next
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|(flow, _)| flow == id)
            .cloned()
            .collect();
        for (flow, trigger) in stale {
            self.schedules.set(&flow, &trigger, None);
        }
    }

    /// Restarts the tasks of changed flows, stops removed ones, starts new.
    pub async fn apply(self: &Arc<Self>, changes: &Changes) {
        for id in changes.changed.iter().chain(&changes.removed) {
            self.stop_flow(id).await;
        }
        for id in changes.changed.iter().chain(&changes.added) {
            if let Some(flow) = self.registry.get(id) {
                self.start_flow(&flow);
            }
        }
    }

    pub async fn stop_all(&self) {
        let ids: Vec<String> = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.stop_flow(&id).await;
        }
    }
}

/// Forgets webhook dedupe keys older than `retention`, every `every`.
pub async fn expire_dedupe(runs: Arc<Runs>, retention: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let engine = runs.engine();
        let before =
            engine.clock().now() - chrono::Duration::from_std(retention).unwrap_or_default();
        loop {
            let old = match engine.store().dedupes_before(before, 10_000) {
                Ok(old) => old,
                Err(e) => {
                    warn!(error = %e, "cannot list expired dedupe keys");
                    break;
                }
            };
            if old.is_empty() {
                break;
            }
            let n = old.len();
            let mut commit = Commit::new();
            for (trigger, key) in old {
                commit.push(Write::RemoveDedupe { trigger, key });
            }
            if let Err(e) = engine.store().commit(commit).await {
                warn!(error = %e, "cannot forget expired dedupe keys");
                break;
            }
            info!(keys = n, "expired webhook dedupe keys forgotten");
            if n < 10_000 {
                break;
            }
        }
    }
}

/// Forgets callers' action idempotency keys older than `retention`, every
/// `every` (a key found expired before that is treated as new anyway).
pub async fn expire_idempotency(runs: Arc<Runs>, retention: chrono::TimeDelta, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let engine = runs.engine();
        let before = engine.clock().now() - retention;
        let old = match engine.store().idempotency_before(before, 10_000) {
            Ok(old) => old,
            Err(e) => {
                warn!(error = %e, "cannot list expired idempotency keys");
                continue;
            }
        };
        if old.is_empty() {
            continue;
        }
        let n = old.len();
        let mut commit = Commit::new();
        for (tenant, key) in old {
            commit.push(Write::RemoveIdempotency { tenant, key });
        }
        match engine.store().commit(commit).await {
            Ok(()) => info!(keys = n, "expired action idempotency keys forgotten"),
            Err(e) => warn!(error = %e, "cannot forget expired idempotency keys"),
        }
    }
}
