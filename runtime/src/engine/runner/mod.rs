//! One run's state machine over its flow's DAG.
//!
//! A frame is one execution of a graph: the whole flow, or one iteration of
//! a `for_each` body. It keeps, per node, how many incoming edges are
//! resolved and how many of them were taken; a node whose incoming edges
//! are all resolved is ready, and runs if at least one was taken, or is
//! skipped. Nodes that finish at once (`map`, `if`, ...) run inline; `http`,
//! `delay`, `for_each` and retry timers are futures polled together, so
//! independent branches run concurrently within the run's task.
//!
//! Every node's result is committed. A node that already has a final record
//! (a resumed run) is not run again: its recorded output is used.

mod frame;
mod node;

pub(crate) use node::send;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rhai::Dynamic;
use serde_json::Value;
use tracing::{Instrument, debug, info_span};
use weir_nodes::functions::deliver::{Delivery, Format, RenderedTarget};
use weir_nodes::node::{NodeDef, NodeError};
use weir_storage::{
    Commit, DeliveryFormat, DeliveryRecord, DeliveryStatus, DeliveryTarget, NodeRecord, RunRecord,
    RunStatus, Ticket, Write,
};

use crate::engine::{Engine, Result, RunControl, scope};
use crate::flow::Flow;
use frame::Frame;

/// A run's pending commit is committed once it holds this many writes.
const MAX_PENDING_WRITES: usize = 512;

/// What the nodes of a run are doing.
#[derive(Default)]
struct Work {
    /// Ready or working.
    active: usize,
    /// Sleeping until these times (a multiset).
    sleeping: std::collections::BTreeMap<DateTime<Utc>, usize>,
}

/// Why a run (or a loop iteration) failed: the node and its message.
#[derive(Debug, Clone)]
pub struct Failure {
    pub node: String,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node '{}' failed: {}", self.node, self.message)
    }
}

/// How a frame ended: its sink's output (for loop bodies), or a failure, or
/// the engine could not go on (storage).
enum FrameEnd {
    Done(Value),
    Failed(Failure),
    /// The run was cancelled.
    Cancelled,
}

/// How one attempt of a node ended.
enum Done {
    Ok {
        output: Value,
        dynamic: Option<Dynamic>,
        delivery: Option<Delivery>,
    },
    /// An error that retries did not cure (or that is not retryable).
    Error(NodeError),
    /// A `fail` node.
    Fail(String),
}

/// The futures of a frame's nodes in flight.
type Inflight<'a> = FuturesUnordered<BoxFuture<'a, Result<Event>>>;

/// What a node's future reports.
enum Event {
    /// A node finished an attempt.
    Finished(usize, Done),
    /// A retry timer fired: attempt the node again.
    Woke(usize),
}

pub(super) struct Runner<'e> {
    engine: &'e Engine,
    flow: std::sync::Arc<Flow>,
    run: Mutex<RunRecord>,
    /// Records of a resumed run, by key.
    records: HashMap<String, NodeRecord>,
    /// Writes not committed yet (see [`Self::submit`]).
    pending: Mutex<Commit>,
    /// Deliveries written, to hand to the outbox once they are on disk.
    deliveries: Mutex<Vec<DeliveryRecord>>,
    /// How many deliveries this run made, for their order.
    delivery_seq: std::sync::atomic::AtomicU32,
    /// Commits submitted and not yet known to be on disk.
    tickets: Mutex<Vec<Ticket>>,
    /// Nodes ready or working, and the wake times of nodes sleeping; the run
    /// is `waiting` when only sleepers are left.
    work: Mutex<Work>,
    /// Signalled when a node's timer is on disk and nothing else works.
    idle: tokio::sync::Notify,
    control: Arc<RunControl>,
}

impl<'e> Runner<'e> {
    pub(super) fn new(
        engine: &'e Engine,
        flow: std::sync::Arc<Flow>,
        run: RunRecord,
        records: Vec<NodeRecord>,
        control: Arc<RunControl>,
    ) -> Self {
        Self {
            engine,
            flow,
            run: Mutex::new(run),
            records: records.into_iter().map(|r| (r.key.clone(), r)).collect(),
            pending: Mutex::new(Commit::new()),
            deliveries: Mutex::new(Vec::new()),
            delivery_seq: std::sync::atomic::AtomicU32::new(0),
            tickets: Mutex::new(Vec::new()),
            work: Mutex::new(Work::default()),
            idle: tokio::sync::Notify::new(),
            control,
        }
    }

    fn run_record(&self) -> RunRecord {
        self.run.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) async fn run(self) -> Result<RunRecord> {
        let run = self.run_record();
        let span = info_span!("run", run_id = %run.id, flow = %run.flow, tenant = %run.tenant);
        async move {
            if run.status.is_finished() {
                return Ok(run);
            }
            let scope = scope::for_run(&self.flow, &run);
            let frame = Frame::new(&self.flow.graph, String::new(), Vec::new(), scope);
            let end = match self.engine.options.park_after {
                None => self.run_frame(frame).await?,
                Some(after) => tokio::select! {
                    end = self.run_frame(frame) => end?,
                    at = self.park_when_idle(after) => {
                        // Every timer is on disk: the run can leave memory
                        // and resume from its records at `at`.
                        self.sync().await?;
                        self.control.set_parked(at);
                        debug!(until = %at, "run parked");
                        return Ok(self.run_record());
                    }
                },
            };
            let mut run = self.run_record();
            let now = self.engine.clock.now();
            run.finished_at = Some(now);
            match end {
                FrameEnd::Done(_) => run.status = RunStatus::Succeeded,
                FrameEnd::Failed(failure) => {
                    run.status = RunStatus::Failed;
                    run.error = Some(failure.to_string());
                }
                FrameEnd::Cancelled => {
                    run.status = RunStatus::Cancelled;
                    run.error = Some("cancelled".into());
                }
            }
            // The run's end shares a commit with its last nodes' results.
            self.submit(Commit::new().run(run.clone())).await?;
            self.sync().await?;
            debug!(status = run.status.as_str(), "run finished");
            Ok(run)
        }
        .instrument(span)
        .await
    }

    /// Submits a commit; waits for the disk if every step must be durable.
    ///
    /// Otherwise the writes wait in this run's pending commit: pure nodes
    /// may be recomputed after a crash (docs/ARCHITECTURE.md), so their results need
    /// not reach the disk one by one; everything pending is committed, as
    /// one commit, at the next point that needs the disk ([`Self::sync`]).
    async fn submit(&self, commit: Commit) -> Result<()> {
        if self.engine.options.durable_each_step {
            return Ok(self.engine.store.commit(commit).await?);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.writes.extend(commit.writes);
        if pending.writes.len() >= MAX_PENDING_WRITES {
            // A long loop: commit in slices rather than one huge commit.
            let full = std::mem::take(&mut *pending);
            drop(pending);
            let ticket = self.engine.store.commit(full);
            self.tickets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ticket);
        }
        Ok(())
    }

    /// Commits what is pending and waits until every commit so far is on
    /// disk.
    async fn sync(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if !pending.is_empty() {
            let ticket = self.engine.store.commit(pending);
            self.tickets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ticket);
        }
        let tickets = std::mem::take(&mut *self.tickets.lock().unwrap_or_else(|e| e.into_inner()));
        for ticket in tickets {
            ticket.await?;
        }
        let deliveries =
            std::mem::take(&mut *self.deliveries.lock().unwrap_or_else(|e| e.into_inner()));
        for d in deliveries {
            self.engine.hand_to_outbox(d);
        }
        Ok(())
    }

    /// Submits a node record (and the run record, if its status changed).
    async fn commit_node(
        &self,
        record: &NodeRecord,
        run_changed: Option<RunRecord>,
        delivery: Option<DeliveryRecord>,
    ) -> Result<()> {
        let (tenant, id) = {
            let run = self.run.lock().unwrap_or_else(|e| e.into_inner());
            (run.tenant.clone(), run.id.clone())
        };
        let mut commit = Commit::new().node(&tenant, &id, record.clone());
        if let Some(run) = run_changed {
            commit.push(Write::Run(run));
        }
        if let Some(d) = delivery {
            self.deliveries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(d.clone());
            commit.push(Write::Delivery(d));
        }
        self.submit(commit).await
    }

    // ---- run status: running ↔ waiting -------------------------------------

    fn work(&self) -> std::sync::MutexGuard<'_, Work> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work_started(&self) {
        let mut work = self.work();
        work.active += 1;
        self.control.set_busy(work.active);
    }

    fn work_ended(&self) {
        let mut work = self.work();
        work.active = work.active.saturating_sub(1);
        self.control.set_busy(work.active);
    }

    /// A node goes to sleep until `wake_at`; the run's new record if it is
    /// now `waiting`.
    fn sleep_started(&self, wake_at: DateTime<Utc>) -> Option<RunRecord> {
        let mut work = self.work();
        work.active = work.active.saturating_sub(1);
        *work.sleeping.entry(wake_at).or_default() += 1;
        self.control.set_busy(work.active);
        (work.active == 0)
            .then(|| self.set_status(RunStatus::Waiting))
            .flatten()
    }

    /// If nothing works any more and timers sleep, the run is `waiting` (its
    /// record says so) and may park. The frames call it whenever they are
    /// about to wait, so it sees the last work end however it ended: a node
    /// going to sleep, a branch skipped, a loop done.
    async fn check_idle(&self) -> Result<()> {
        let run = {
            let work = self.work();
            if work.active > 0 || work.sleeping.is_empty() {
                return Ok(());
            }
            self.set_status(RunStatus::Waiting)
        };
        if let Some(run) = run {
            self.submit(Commit::new().run(run)).await?;
        }
        self.idle.notify_one();
        Ok(())
    }

    /// A node wakes; the run's new record if it was `waiting`.
    fn sleep_ended(&self, wake_at: DateTime<Utc>) -> Option<RunRecord> {
        let mut work = self.work();
        if let Some(n) = work.sleeping.get_mut(&wake_at) {
            *n -= 1;
            if *n == 0 {
                work.sleeping.remove(&wake_at);
            }
        }
        work.active += 1;
        self.control.set_busy(work.active);
        self.set_status(RunStatus::Running)
    }

    /// Resolves, with the earliest wake time, once only timers are left and
    /// the earliest is more than `after` away.
    async fn park_when_idle(&self, after: std::time::Duration) -> DateTime<Utc> {
        loop {
            self.idle.notified().await;
            let work = self.work();
            if work.active > 0 {
                continue;
            }
            if let Some((&at, _)) = work.sleeping.iter().next()
                && self.engine.clock.until(at) > after
            {
                return at;
            }
        }
    }

    fn set_status(&self, status: RunStatus) -> Option<RunRecord> {
        let mut run = self.run.lock().unwrap_or_else(|e| e.into_inner());
        (run.status != status).then(|| {
            run.status = status;
            run.clone()
        })
    }

    // ---- frames ------------------------------------------------------------

    fn tenant(&self) -> String {
        self.run
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tenant
            .clone()
    }

    /// The connection a run of a per-connection flow is for: a request
    /// through `connection: KEY` of the flow's integration, without
    /// `connection_id`, goes through it.
    fn own_connection(&self, via: &weir_nodes::functions::http::Via) -> Option<String> {
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner());
        let c = run.connection.as_ref()?;
        (self.flow.integration.as_deref() == Some(via.integration.as_str()))
            .then(|| c.get("id")?.as_str().map(str::to_owned))
            .flatten()
    }

    /// The id of the connection a run of a per-connection flow is for.
    fn run_connection_id(&self) -> Option<String> {
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner());
        Some(run.connection.as_ref()?.get("id")?.as_str()?.to_owned())
    }

    fn run_id(&self) -> String {
        self.run
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .id
            .clone()
    }

    fn delivery_record(
        &self,
        output: &Value,
        d: Delivery,
        node: &NodeDef,
        now: DateTime<Utc>,
    ) -> DeliveryRecord {
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner());
        let id = output
            .get("delivery_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        DeliveryRecord {
            id,
            tenant: run.tenant.clone(),
            flow: run.flow.clone(),
            run: run.id.clone(),
            node: node.id.clone(),
            event: run
                .event
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            target: match d.target {
                RenderedTarget::Amqp {
                    exchange,
                    routing_key,
                    format,
                } => DeliveryTarget::Amqp {
                    exchange,
                    routing_key,
                    format: match format {
                        Format::Payload => DeliveryFormat::Payload,
                        Format::CloudEvents => DeliveryFormat::Cloudevents,
                    },
                },
                RenderedTarget::Http { url, secret_env } => DeliveryTarget::Http {
                    url,
                    secret_env: Some(secret_env),
                },
            },
            payload: d.payload,
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_error: None,
            created_at: now,
            next_attempt_at: None,
            lane: match &run.concurrency_key {
                Some(key) => format!("{}/{}/{key}", run.tenant, run.flow),
                None => run.id.clone(),
            },
            seq: self
                .delivery_seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            max_attempts: node
                .retry
                .max_attempts_set
                .then_some(node.retry.max_attempts),
            unroutable: false,
        }
    }
}
