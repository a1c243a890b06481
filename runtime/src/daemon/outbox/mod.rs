//! The outbox dispatcher: sends the deliveries `deliver` nodes wrote, and
//! lets each leave the outbox only once the broker (publisher confirm) or
//! the backend (HTTP 2xx) confirmed it.
//!
//! Deliveries are grouped in lanes — a run's deliveries, or those of runs
//! sharing a concurrency key — and a lane sends one delivery at a time, in
//! the order the `deliver` nodes ran; lanes go out concurrently (at most
//! [`AMQP_WINDOW`] unconfirmed AMQP messages and [`HTTP_WINDOW`] HTTP
//! requests at once). There is no order across lanes.
//!
//! Order and liveness trade like this: a delivery that fails keeps its
//! lane waiting while it is retried (exponential backoff with jitter, or
//! the backend's `Retry-After`), so order holds through outages. It leaves
//! the lane — dead, listed with its error, retried by hand — after its
//! node's `retry.max_attempts`; at once when an HTTP backend refuses it
//! (4xx); and after [`REFUSED_ATTEMPTS`] (or its `max_attempts`) when the
//! broker refuses it as it is (an exchange of another type, no access),
//! so one broken delivery cannot hold its lane's others forever. Without
//! `max_attempts`, a delivery waiting for its backend (down, unroutable,
//! 5xx) is retried without bound.
//!
//! - `amqp`: the broker connection, publishing with confirms
//! - `http`: signed HTTP deliveries
//! - `message`: what a delivery looks like on the wire

pub(crate) mod amqp;
mod http;
pub mod message;

use crate::auth::Scope;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore, mpsc};
use tracing::{debug, info, warn};
use weir_nodes::backoff::Backoff;
use weir_storage::{
    Commit, DeliveryRecord, DeliveryStatus, DeliveryTarget, Store, TargetKind, Write,
};

use crate::engine::Clock;

/// Unconfirmed AMQP messages at once.
pub const AMQP_WINDOW: usize = 256;
/// HTTP deliveries in flight at once.
pub const HTTP_WINDOW: usize = 64;
/// The waits after failed attempts.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
/// Attempts of a delivery the broker refuses as it is (its exchange has
/// another type, access is refused) before it is dead, unless its node's
/// `retry.max_attempts` says otherwise: time for an operator to fix it,
/// without holding its lane forever.
pub const REFUSED_ATTEMPTS: u32 = 5;

/// Why an attempt failed, and what follows.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    pub kind: FailureKind,
    /// How long the backend asked to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Try again later.
    Retry,
    /// Returned by the broker: no queue bound yet; try again later.
    Unroutable,
    /// The broker refuses it as it is: dead after [`REFUSED_ATTEMPTS`].
    Refused,
    /// The backend refused it: it will not go through by trying again.
    Dead,
}

impl Failure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind,
            retry_after: None,
        }
    }

    pub fn retry(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Retry, message)
    }

    pub fn unroutable(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Unroutable, message)
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Refused, message)
    }

    pub fn dead(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Dead, message)
    }

    pub fn after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    /// Whether the delivery is dead after this, its `attempts`-th failure.
    fn is_final(&self, attempts: u32, max_attempts: Option<u32>) -> bool {
        match self.kind {
            FailureKind::Dead => true,
            FailureKind::Refused => attempts >= max_attempts.unwrap_or(REFUSED_ATTEMPTS),
            FailureKind::Retry | FailureKind::Unroutable => {
                max_attempts.is_some_and(|max| attempts >= max)
            }
        }
    }
}

#[derive(Default)]
struct State {
    /// Pending deliveries by lane, oldest first.
    lanes: HashMap<String, VecDeque<DeliveryRecord>>,
    /// Lanes whose first delivery is due.
    ready: VecDeque<String>,
    /// Lanes whose first delivery waits for its next attempt.
    timers: BTreeSet<(DateTime<Utc>, String)>,
    /// Due AMQP lanes while the broker is not connected.
    waiting_for_broker: Vec<String>,
    /// Lanes with a delivery in flight.
    busy: HashSet<String>,
    /// Ids of pending deliveries.
    known: HashSet<String>,
    /// Pending deliveries per target.
    pending: HashMap<TargetKind, usize>,
    dead: HashMap<TargetKind, usize>,
    /// Pending deliveries whose last attempt failed, by id: their target
    /// and when they failed. A target's `last_error` is its most recent
    /// one's (kept per delivery, so another delivery's success does not
    /// hide it).
    failing: HashMap<String, (TargetKind, DateTime<Utc>)>,
    /// With [`Outbox::track_runs`]: the unsettled deliveries of each run
    /// (neither confirmed nor dead), by run id.
    tracked: Option<HashMap<String, HashSet<String>>>,
    stopping: bool,
}

impl State {
    /// A delivery is confirmed, dead or forgotten.
    fn settled(&mut self, d: &DeliveryRecord) -> bool {
        let Some(tracked) = &mut self.tracked else {
            return false;
        };
        let Some(ids) = tracked.get_mut(&d.run) else {
            return false;
        };
        ids.remove(&d.id);
        if ids.is_empty() {
            tracked.remove(&d.run);
        }
        true
    }
}

impl State {
    fn schedule(&mut self, lane: &str, now: DateTime<Utc>) {
        let Some(head) = self.lanes.get(lane).and_then(|q| q.front()) else {
            self.lanes.remove(lane);
            return;
        };
        match head.next_attempt_at {
            Some(at) if at > now => {
                self.timers.insert((at, lane.to_owned()));
            }
            _ => self.ready.push_back(lane.to_owned()),
        }
    }

    fn add(&mut self, d: DeliveryRecord, now: DateTime<Utc>) {
        if d.status != DeliveryStatus::Pending || !self.known.insert(d.id.clone()) {
            return;
        }
        *self.pending.entry(d.target.kind()).or_default() += 1;
        let lane = d.lane.clone();
        let queue = self.lanes.entry(lane.clone()).or_default();
        let first = queue.is_empty();
        // Keep the lane in order: by run, then by the delivery's place in it.
        let at = queue.partition_point(|q| (q.run.as_str(), q.seq) <= (d.run.as_str(), d.seq));
        // The first delivery may be in flight: nothing goes before it.
        let at = if self.busy.contains(&lane) {
            at.max(1)
        } else {
            at
        };
        queue.insert(at, d);
        if first && !self.busy.contains(&lane) {
            self.schedule(&lane, now);
        }
    }
}

pub struct Outbox {
    store: Arc<dyn Store>,
    clock: Clock,
    state: Mutex<State>,
    wake: Arc<Notify>,
    amqp: Option<Arc<amqp::Amqp>>,
    amqp_window: Arc<Semaphore>,
    http_window: Arc<Semaphore>,
    /// Signalled when a tracked delivery settles.
    run_settled: Notify,
}

/// Why an outbox request was refused.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("no delivery {0}")]
    NotFound(String),
    #[error("delivery {0} is not dead; only dead deliveries can be retried")]
    NotDead(String),
    #[error(transparent)]
    Storage(#[from] weir_storage::Error),
}

impl Outbox {
    /// Loads the pending deliveries, connects to the broker (if `amqp_url`),
    /// and starts sending; `incoming` brings new deliveries once they are on
    /// disk.
    pub fn start(
        store: Arc<dyn Store>,
        clock: Clock,
        amqp_url: Option<String>,
        mut incoming: mpsc::UnboundedReceiver<DeliveryRecord>,
    ) -> Result<Arc<Self>, weir_storage::Error> {
        let wake = Arc::new(Notify::new());
        let amqp = amqp_url.map(|url| amqp::Amqp::start(url, wake.clone()));
        let outbox = Arc::new(Self {
            store: store.clone(),
            clock: clock.clone(),
            state: Mutex::new(State::default()),
            wake,
            amqp,
            amqp_window: Arc::new(Semaphore::new(AMQP_WINDOW)),
            http_window: Arc::new(Semaphore::new(HTTP_WINDOW)),
            run_settled: Notify::new(),
        });
        let mut pending = 0;
        {
            let now = clock.now();
            let mut state = outbox.state();
            for d in store.deliveries()? {
                match d.status {
                    DeliveryStatus::Pending => {
                        pending += 1;
                        state.add(d, now);
                    }
                    DeliveryStatus::Dead => *state.dead.entry(d.target.kind()).or_default() += 1,
                }
            }
        }
        if pending > 0 {
            info!(
                deliveries = pending,
                "pending deliveries found in the outbox"
            );
        }
        outbox.publish_gauges();
        let intake = outbox.clone();
        tokio::spawn(async move {
            while let Some(d) = incoming.recv().await {
                intake.add(d);
            }
        });
        tokio::spawn(outbox.clone().dispatch());
        Ok(outbox)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, d: DeliveryRecord) {
        if d.target.kind() == TargetKind::Amqp && self.amqp.is_none() {
            debug!(delivery = %d.id, "an AMQP delivery waits: no broker is configured (--amqp)");
        }
        self.state().add(d, self.clock.now());
        self.publish_counts();
        self.wake.notify_one();
    }

    /// Sends what is due, then sleeps until something changes or the next
    /// retry is due.
    async fn dispatch(self: Arc<Self>) {
        loop {
            let next_timer = self.send_due();
            let wait = next_timer.map_or(Duration::from_secs(3600), |at| self.clock.until(at));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
            if self.state().stopping {
                return;
            }
        }
    }

    /// Starts every due delivery the windows allow; answers when the next
    /// timer is due.
    fn send_due(self: &Arc<Self>) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let connected = self.amqp.as_ref().is_some_and(|a| a.is_connected());
        let mut state = self.state();
        if state.stopping {
            return None;
        }
        while let Some((at, _)) = state.timers.first() {
            if *at > now {
                break;
            }
            if let Some((_, lane)) = state.timers.pop_first() {
                state.ready.push_back(lane);
            }
        }
        if connected && !state.waiting_for_broker.is_empty() {
            let lanes = std::mem::take(&mut state.waiting_for_broker);
            state.ready.extend(lanes);
        }
        let mut postponed = Vec::new();
        while let Some(lane) = state.ready.pop_front() {
            let Some(head) = state.lanes.get(&lane).and_then(|q| q.front()).cloned() else {
                state.lanes.remove(&lane);
                continue;
            };
            let permit = match &head.target {
                DeliveryTarget::Amqp { .. } => {
                    if !connected {
                        state.waiting_for_broker.push(lane);
                        continue;
                    }
                    self.amqp_window.clone().try_acquire_owned()
                }
                DeliveryTarget::Http { .. } => self.http_window.clone().try_acquire_owned(),
            };
            let Ok(permit) = permit else {
                // Its window is full: after a completion wakes us.
                postponed.push(lane);
                continue;
            };
            state.busy.insert(lane.clone());
            let this = self.clone();
            tokio::spawn(async move {
                let result = this.attempt(&head).await;
                drop(permit);
                this.settle(lane, head, result).await;
            });
        }
        for lane in postponed.into_iter().rev() {
            state.ready.push_front(lane);
        }
        state.timers.first().map(|(at, _)| *at)
    }

    async fn attempt(&self, d: &DeliveryRecord) -> Result<(), Failure> {
        match &d.target {
            DeliveryTarget::Amqp { .. } => match &self.amqp {
                Some(amqp) => amqp.publish(d).await,
                None => Err(Failure::retry(
                    "no AMQP broker is configured (--amqp or WEIR_AMQP_URL)",
                )),
            },
            DeliveryTarget::Http { .. } => http::post(d, self.clock.now()).await,
        }
    }

    /// Records how an attempt went and schedules the lane's next delivery.
    async fn settle(&self, lane: String, mut d: DeliveryRecord, result: Result<(), Failure>) {
        let now = self.clock.now();
        let target = d.target.kind();
        let write = match &result {
            Ok(()) => {
                crate::metrics::delivery_confirmed(target.as_str());
                debug!(delivery = %d.id, target = target.as_str(), "delivered");
                Write::RemoveDelivery(d.id.clone())
            }
            Err(failure) => {
                d.attempts += 1;
                d.last_error = Some(failure.message.clone());
                d.unroutable = failure.kind == FailureKind::Unroutable;
                if failure.is_final(d.attempts, d.max_attempts) {
                    d.status = DeliveryStatus::Dead;
                    d.next_attempt_at = None;
                    warn!(delivery = %d.id, target = target.as_str(), attempts = d.attempts, error = %failure.message, "delivery is dead; its lane goes on; retry it with `weir outbox retry ID`");
                } else {
                    let wait = BACKOFF
                        .delay(d.attempts, rand::random::<f64>())
                        .max(failure.retry_after.unwrap_or_default());
                    d.next_attempt_at =
                        Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
                    if d.attempts == 1 || d.attempts.is_power_of_two() {
                        warn!(delivery = %d.id, target = target.as_str(), attempts = d.attempts, error = %failure.message, retry_in_ms = wait.as_millis() as u64, "delivery failed; will retry");
                    }
                }
                Write::Delivery(d.clone())
            }
        };
        // The outbox's state on disk first, then in memory, so the API never
        // shows one before the other. (A crash before this lands sends the
        // delivery again, with the same id, which consumers dedupe.) The
        // commit is submitted under the state's lock: a delivery whose tenant
        // was erased meanwhile (`forget_tenant`) is not written back.
        let ticket = {
            let mut state = self.state();
            if !state.known.contains(&d.id) {
                state.busy.remove(&lane);
                state.failing.remove(&d.id);
                return;
            }
            self.store.commit(Commit::new().with(write))
        };
        if let Err(e) = ticket.await {
            warn!(delivery = %d.id, error = %e, "cannot record the delivery's state");
        }
        {
            let mut state = self.state();
            state.busy.remove(&lane);
            match (&result, d.status) {
                (Err(_), DeliveryStatus::Pending) => {
                    state.failing.insert(d.id.clone(), (target, now));
                }
                _ => {
                    state.failing.remove(&d.id);
                }
            }
            let queue = state.lanes.entry(lane.clone()).or_default();
            match (&result, d.status) {
                (Ok(()), _) | (Err(_), DeliveryStatus::Dead) => {
                    queue.pop_front();
                    state.known.remove(&d.id);
                    if state.settled(&d) {
                        self.run_settled.notify_waiters();
                    }
                    if let Some(n) = state.pending.get_mut(&target) {
                        *n = n.saturating_sub(1);
                    }
                    if d.status == DeliveryStatus::Dead {
                        *state.dead.entry(target).or_default() += 1;
                    }
                }
                (Err(_), DeliveryStatus::Pending) => {
                    if let Some(head) = queue.front_mut() {
                        *head = d.clone();
                    }
                }
            }
            state.schedule(&lane, now);
        }
        self.publish_counts();
        self.wake.notify_one();
    }

    /// Sets the pending gauges from the counts kept as deliveries come and
    /// go (cheap: called on every change).
    fn publish_counts(&self) {
        let pending = self.state().pending.clone();
        for target in TargetKind::ALL {
            crate::metrics::outbox_pending(
                target.as_str(),
                pending.get(&target).copied().unwrap_or(0),
            );
        }
    }

    /// Pending count and oldest age per target (reads every pending
    /// delivery: for the API and metrics scrapes, not per delivery).
    fn pending_by_target(
        &self,
        scope: &Scope,
    ) -> HashMap<TargetKind, (usize, Option<DateTime<Utc>>)> {
        let state = self.state();
        let mut out: HashMap<TargetKind, (usize, Option<DateTime<Utc>>)> = HashMap::new();
        for d in state
            .lanes
            .values()
            .flatten()
            .filter(|d| scope.sees(&d.tenant))
        {
            let entry = out.entry(d.target.kind()).or_default();
            entry.0 += 1;
            entry.1 = Some(
                entry
                    .1
                    .map_or(d.created_at, |t: DateTime<Utc>| t.min(d.created_at)),
            );
        }
        out
    }

    /// Sets the outbox gauges, the oldest pending age included.
    pub fn publish_gauges(&self) {
        let now = self.clock.now();
        let pending = self.pending_by_target(&Scope::All);
        for target in TargetKind::ALL {
            let (n, oldest) = pending.get(&target).copied().unwrap_or_default();
            let age = oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
            crate::metrics::outbox(target.as_str(), n, age);
        }
    }

    /// `GET /api/v1/outbox`: per target, its connection, counts and the
    /// error of its most recently failed pending delivery; the pending
    /// deliveries that are failing, each with its own error; and the dead
    /// ones — all of them the scope's (the broker's own error is shown to
    /// admins only).
    pub fn view(&self, scope: &Scope) -> Result<OutboxView, weir_storage::Error> {
        let now = self.clock.now();
        let pending = self.pending_by_target(scope);
        let failing = {
            let state = self.state();
            let mut failing: Vec<(DateTime<Utc>, TargetKind, DeliveryRecord)> = Vec::new();
            for d in state
                .lanes
                .values()
                .flatten()
                .filter(|d| scope.sees(&d.tenant))
            {
                if let Some((target, at)) = state.failing.get(&d.id) {
                    failing.push((*at, *target, d.clone()));
                }
            }
            failing.sort_by_key(|f| std::cmp::Reverse(f.0));
            failing
        };
        let dead: Vec<DeliveryRecord> = self
            .store
            .deliveries()?
            .into_iter()
            .filter(|d| d.status == DeliveryStatus::Dead && scope.sees(&d.tenant))
            .collect();
        let mut dead_counts: HashMap<TargetKind, usize> = HashMap::new();
        for d in &dead {
            *dead_counts.entry(d.target.kind()).or_default() += 1;
        }
        let targets = TargetKind::ALL
            .iter()
            .map(|target| {
                let (n, oldest) = pending.get(target).copied().unwrap_or_default();
                let connected = match target {
                    TargetKind::Amqp => self.amqp.as_ref().is_some_and(|a| a.is_connected()),
                    TargetKind::Http => true,
                };
                let last_error = match target {
                    TargetKind::Amqp if !connected && *scope == Scope::All => {
                        self.amqp.as_ref().and_then(|a| a.last_error()).or_else(|| {
                            Some("no AMQP broker is configured (--amqp or WEIR_AMQP_URL)".into())
                        })
                    }
                    _ => failing
                        .iter()
                        .find(|(_, t, _)| t == target)
                        .and_then(|(_, _, d)| d.last_error.clone()),
                };
                TargetView {
                    target: target.as_str(),
                    connected,
                    pending: n,
                    failing: failing.iter().filter(|(_, t, _)| t == target).count(),
                    dead: dead_counts.get(target).copied().unwrap_or(0),
                    oldest_pending_age_s: oldest
                        .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
                    last_error,
                }
            })
            .collect();
        let failing = failing.into_iter().take(1000).map(|(_, _, d)| d).collect();
        let dead = dead.into_iter().take(1000).collect();
        Ok(OutboxView {
            targets,
            failing,
            dead,
        })
    }

    /// Sends a dead delivery of the scope again, from its first attempt.
    pub async fn retry(&self, scope: &Scope, id: &str) -> Result<DeliveryRecord, OutboxError> {
        let mut d = self
            .store
            .deliveries()?
            .into_iter()
            .find(|d| d.id == id && scope.sees(&d.tenant))
            .ok_or_else(|| OutboxError::NotFound(id.to_owned()))?;
        if d.status != DeliveryStatus::Dead {
            return Err(OutboxError::NotDead(id.to_owned()));
        }
        d.status = DeliveryStatus::Pending;
        d.attempts = 0;
        d.next_attempt_at = None;
        d.unroutable = false;
        self.store
            .commit(Commit::new().with(Write::Delivery(d.clone())))
            .await?;
        {
            let mut state = self.state();
            if let Some(n) = state.dead.get_mut(&d.target.kind()) {
                *n = n.saturating_sub(1);
            }
        }
        self.add(d.clone());
        Ok(d)
    }

    /// Drops a tenant's pending deliveries from memory, before its records
    /// are erased: none of them is sent or written again (one in flight
    /// ends unrecorded).
    pub fn forget_tenant(&self, tenant: &str) -> Result<(), weir_storage::Error> {
        let dead: Vec<TargetKind> = self
            .store
            .deliveries()?
            .into_iter()
            .filter(|d| d.tenant == tenant && d.status == DeliveryStatus::Dead)
            .map(|d| d.target.kind())
            .collect();
        let mut state = self.state();
        for target in dead {
            if let Some(n) = state.dead.get_mut(&target) {
                *n = n.saturating_sub(1);
            }
        }
        let lanes: Vec<String> = state
            .lanes
            .iter()
            .filter(|(_, q)| q.iter().any(|d| d.tenant == tenant))
            .map(|(lane, _)| lane.clone())
            .collect();
        for lane in lanes {
            let Some(queue) = state.lanes.get_mut(&lane) else {
                continue;
            };
            let (gone, kept): (VecDeque<_>, VecDeque<_>) =
                queue.drain(..).partition(|d| d.tenant == tenant);
            *queue = kept;
            for d in gone {
                state.known.remove(&d.id);
                state.failing.remove(&d.id);
                state.settled(&d);
                if let Some(n) = state.pending.get_mut(&d.target.kind()) {
                    *n = n.saturating_sub(1);
                }
            }
            if state.lanes.get(&lane).is_some_and(VecDeque::is_empty) {
                state.lanes.remove(&lane);
                state.ready.retain(|l| *l != lane);
                state.timers.retain(|(_, l)| *l != lane);
                state.waiting_for_broker.retain(|l| *l != lane);
            }
        }
        drop(state);
        self.run_settled.notify_waiters();
        self.publish_counts();
        Ok(())
    }

    /// Starts keeping, per run, the deliveries not settled yet (the ones
    /// pending now, and each one `track` is told of).
    pub fn track_runs(&self) {
        let mut state = self.state();
        let mut tracked: HashMap<String, HashSet<String>> = HashMap::new();
        for d in state.lanes.values().flatten() {
            tracked
                .entry(d.run.clone())
                .or_default()
                .insert(d.id.clone());
        }
        state.tracked = Some(tracked);
    }

    /// A delivery on its way here (called before it is handed over).
    pub fn track(&self, d: &DeliveryRecord) {
        if d.status != DeliveryStatus::Pending {
            return;
        }
        if let Some(tracked) = &mut self.state().tracked {
            tracked
                .entry(d.run.clone())
                .or_default()
                .insert(d.id.clone());
        }
    }

    /// Waits until every delivery of run `run` is confirmed (or dead).
    pub async fn settled(&self, run: &str) {
        loop {
            let notified = self.run_settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let waiting = self
                .state()
                .tracked
                .as_ref()
                .is_some_and(|t| t.contains_key(run));
            if !waiting {
                return;
            }
            notified.await;
        }
    }

    /// Pending and dead deliveries, all targets.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.state();
        (state.pending.values().sum(), state.dead.values().sum())
    }

    /// Stops sending; what was not confirmed stays in the outbox.
    pub fn stop(&self) {
        self.state().stopping = true;
        self.wake.notify_one();
    }
}

/// The outbox as `GET /api/v1/outbox` shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OutboxView {
    /// One entry per kind of target.
    pub targets: Vec<TargetView>,
    /// Pending deliveries whose last attempt failed, most recent first
    /// (at most 1,000).
    pub failing: Vec<DeliveryRecord>,
    /// Dead deliveries (at most 1,000): `POST /api/v1/outbox/{id}/retry`
    /// sends one again.
    pub dead: Vec<DeliveryRecord>,
}

/// One kind of target (`amqp`, `http`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TargetView {
    pub target: &'static str,
    /// Whether weir is connected to it (always `true` for `http`).
    pub connected: bool,
    pub pending: usize,
    pub failing: usize,
    pub dead: usize,
    /// How long the oldest pending delivery has waited, in seconds.
    pub oldest_pending_age_s: f64,
    pub last_error: Option<String>,
}
