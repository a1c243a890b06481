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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rhai::{Dynamic, Scope};
use serde_json::{Value, json};
use tracing::{Instrument, debug, info_span, warn};
use weir_nodes::functions::deliver::{Delivery, RenderedTarget};
use weir_nodes::node::{NodeDef, NodeError, NodeKind, OnError, Outcome, Taken};
use weir_nodes::script::{to_dynamic, to_json};
use weir_storage::{
    Commit, DeliveryRecord, DeliveryStatus, DeliveryTarget, NodeRecord, NodeStatus, RunRecord,
    RunStatus, Ticket, Write,
};

use super::{Engine, Result, scope};
use crate::flow::{Flow, Graph};

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
    /// Commits submitted and not yet known to be on disk.
    tickets: Mutex<Vec<Ticket>>,
    /// Nodes ready or working (not sleeping), and nodes sleeping; the run
    /// is `waiting` when only sleepers are left.
    work: Mutex<(usize, usize)>,
}

/// Per node of a frame.
struct NodeState {
    resolved_in: usize,
    taken_in: usize,
    attempts: u32,
    record: NodeRecord,
}

struct Frame<'g> {
    graph: &'g Graph,
    /// Prefix of node keys: `""`, or `loop[2].` inside an iteration.
    prefix: String,
    /// Loop indexes, outermost first, for idempotency keys.
    indexes: Vec<usize>,
    scope: Scope<'static>,
    state: Vec<NodeState>,
    ready: VecDeque<usize>,
    /// Nodes made ready since the work count last saw them.
    newly_ready: Vec<usize>,
    sink_output: Value,
}

impl<'e> Runner<'e> {
    pub(super) fn new(
        engine: &'e Engine,
        flow: std::sync::Arc<Flow>,
        run: RunRecord,
        records: Vec<NodeRecord>,
    ) -> Self {
        Self {
            engine,
            flow,
            run: Mutex::new(run),
            records: records.into_iter().map(|r| (r.key.clone(), r)).collect(),
            tickets: Mutex::new(Vec::new()),
            work: Mutex::new((0, 0)),
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
            let end = self.run_frame(frame).await?;
            self.sync().await?;
            let mut run = self.run_record();
            let now = self.engine.clock.now();
            run.finished_at = Some(now);
            match end {
                FrameEnd::Done(_) => run.status = RunStatus::Succeeded,
                FrameEnd::Failed(failure) => {
                    run.status = RunStatus::Failed;
                    run.error = Some(failure.to_string());
                }
            }
            self.engine
                .store
                .commit(Commit::new().run(run.clone()))
                .await?;
            debug!(status = run.status.as_str(), "run finished");
            Ok(run)
        }
        .instrument(span)
        .await
    }

    /// Submits a commit; waits for the disk if every step must be durable.
    async fn submit(&self, commit: Commit) -> Result<()> {
        let ticket = self.engine.store.commit(commit);
        if self.engine.options.durable_each_step {
            ticket.await?;
        } else {
            self.tickets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ticket);
        }
        Ok(())
    }

    /// Waits until every commit submitted so far is on disk.
    async fn sync(&self) -> Result<()> {
        let tickets = std::mem::take(&mut *self.tickets.lock().unwrap_or_else(|e| e.into_inner()));
        for ticket in tickets {
            ticket.await?;
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
            commit.push(Write::Delivery(d));
        }
        self.submit(commit).await
    }

    // ---- run status: running ↔ waiting -------------------------------------

    fn work_started(&self) {
        self.work.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
    }

    fn work_ended(&self) {
        let mut work = self.work.lock().unwrap_or_else(|e| e.into_inner());
        work.0 = work.0.saturating_sub(1);
    }

    /// A node goes to sleep; the run's new record if it is now `waiting`.
    fn sleep_started(&self) -> Option<RunRecord> {
        let mut work = self.work.lock().unwrap_or_else(|e| e.into_inner());
        work.0 = work.0.saturating_sub(1);
        work.1 += 1;
        (work.0 == 0)
            .then(|| self.set_status(RunStatus::Waiting))
            .flatten()
    }

    /// A node wakes; the run's new record if it was `waiting`.
    fn sleep_ended(&self) -> Option<RunRecord> {
        let mut work = self.work.lock().unwrap_or_else(|e| e.into_inner());
        work.1 = work.1.saturating_sub(1);
        work.0 += 1;
        self.set_status(RunStatus::Running)
    }

    fn set_status(&self, status: RunStatus) -> Option<RunRecord> {
        let mut run = self.run.lock().unwrap_or_else(|e| e.into_inner());
        (run.status != status).then(|| {
            run.status = status;
            run.clone()
        })
    }

    // ---- frames ------------------------------------------------------------

    /// Runs a graph to its end.
    fn run_frame<'a>(&'a self, mut frame: Frame<'a>) -> BoxFuture<'a, Result<FrameEnd>> {
        Box::pin(async move {
            let mut inflight: FuturesUnordered<BoxFuture<'a, Result<Event>>> =
                FuturesUnordered::new();
            for &i in &frame.graph.order {
                if frame.graph.incoming[i].is_empty() {
                    self.work_started();
                    frame.ready.push_back(i);
                }
            }
            loop {
                while let Some(i) = frame.ready.pop_front() {
                    if let Some(failure) = self.step(&mut frame, i, &mut inflight).await? {
                        return Ok(FrameEnd::Failed(failure));
                    }
                }
                let Some(event) = inflight.next().await else {
                    break;
                };
                let failure = match event? {
                    Event::Woke(i) => self.attempt(&mut frame, i, &mut inflight).await?,
                    Event::Finished(i, done) => {
                        self.finish(&mut frame, i, done, &mut inflight).await?
                    }
                };
                if let Some(failure) = failure {
                    return Ok(FrameEnd::Failed(failure));
                }
            }
            Ok(FrameEnd::Done(std::mem::take(&mut frame.sink_output)))
        })
    }

    /// A node became ready: skip it, take its recorded result, or run it.
    async fn step<'a>(
        &'a self,
        frame: &mut Frame<'a>,
        i: usize,
        inflight: &mut Inflight<'a>,
    ) -> Result<Option<Failure>> {
        let graph = frame.graph;
        let node = &graph.nodes[i];
        if !graph.incoming[i].is_empty() && frame.state[i].taken_in == 0 {
            let mut record = frame.state[i].record.clone();
            record.status = NodeStatus::Skipped;
            if self.records.get(&record.key).map(|r| r.status) != Some(NodeStatus::Skipped) {
                self.commit_node(&record, None, None).await?;
            }
            frame.state[i].record = record;
            self.work_ended();
            frame.resolve(i, Taken::Nothing);
            self.count_ready(frame);
            return Ok(None);
        }
        let key = frame.key(node);
        if let Some(recorded) = self.records.get(&key) {
            frame.state[i].attempts = recorded.attempts;
            match recorded.status {
                NodeStatus::Succeeded => {
                    let output = recorded.output.clone().unwrap_or(Value::Null);
                    frame.state[i].record = recorded.clone();
                    self.work_ended();
                    return Ok(self.resolved_ok(frame, i, output, None));
                }
                NodeStatus::Failed if node.on_error != OnError::Fail => {
                    let error = recorded.error.clone().unwrap_or_default();
                    frame.state[i].record = recorded.clone();
                    self.work_ended();
                    return Ok(self.resolved_error(frame, i, error));
                }
                NodeStatus::Waiting => {
                    if let Some(wake_at) = recorded.wake_at {
                        frame.state[i].record = recorded.clone();
                        // Its waiting record (and the run's status) is on disk.
                        let _ = self.sleep_started();
                        let is_delay = matches!(node.kind, NodeKind::Delay(_));
                        inflight.push(Box::pin(self.wake(i, wake_at, is_delay)));
                        return Ok(None);
                    }
                }
                _ => {}
            }
            if matches!(node.kind, NodeKind::ForEach(_)) {
                frame.state[i].record.state = recorded.state.clone();
            }
        }
        self.attempt(frame, i, inflight).await
    }

    /// Runs one attempt of node `i`.
    async fn attempt<'a>(
        &'a self,
        frame: &mut Frame<'a>,
        i: usize,
        inflight: &mut Inflight<'a>,
    ) -> Result<Option<Failure>> {
        let graph = frame.graph;
        let node = &graph.nodes[i];
        let now = self.engine.clock.now();
        frame.state[i].attempts += 1;
        let attempt = frame.state[i].attempts;
        {
            let record = &mut frame.state[i].record;
            record.attempts = attempt;
            record.status = NodeStatus::Running;
            record.started_at.get_or_insert(now);
            record.wake_at = None;
        }
        let span = info_span!("node", node = %node.id, r#type = node.kind.type_name(), attempt);
        let scope = &mut frame.scope;
        if let Some(result) = span.in_scope(|| node.kind.run_now(scope, node.timeout)) {
            let done = match result {
                Ok(Outcome::Output(dynamic)) => match to_json(&dynamic) {
                    Ok(output) => Done::Ok {
                        output,
                        dynamic: Some(dynamic),
                        delivery: None,
                    },
                    Err(e) => Done::Error(NodeError::Invalid(format!(
                        "the output cannot be stored: {e}"
                    ))),
                },
                Ok(Outcome::Deliver(delivery)) => Done::Ok {
                    output: json!({"delivery_id": frame.idempotency_key(&self.run_id(), node)}),
                    dynamic: None,
                    delivery: Some(delivery),
                },
                Ok(Outcome::Fail(message)) => Done::Fail(message),
                Err(e) => Done::Error(e),
            };
            return self.finish(frame, i, done, inflight).await;
        }
        let key = frame.idempotency_key(&self.run_id(), node);
        match &node.kind {
            NodeKind::Http(http) => {
                let request = match http.prepare(&mut frame.scope, node.timeout) {
                    Ok(request) => request,
                    Err(e) => {
                        return self.finish(frame, i, Done::Error(e), inflight).await;
                    }
                };
                // A side effect: what it depends on must be on disk first.
                self.sync().await?;
                self.commit_node(&frame.state[i].record, None, None).await?;
                let timeout = node.timeout;
                inflight.push(Box::pin(
                    async move {
                        let done = match request.send(&key, timeout).await {
                            Ok(output) => Done::Ok {
                                output,
                                dynamic: None,
                                delivery: None,
                            },
                            Err(e) => Done::Error(NodeError::Http(e)),
                        };
                        Ok(Event::Finished(i, done))
                    }
                    .instrument(span.clone()),
                ));
            }
            NodeKind::Delay(delay) => {
                let wake_at = match delay.wake_at(now, &mut frame.scope, node.timeout) {
                    // Milliseconds, as the output shows it.
                    Ok(t) => chrono::SubsecRound::trunc_subsecs(t, 3),
                    Err(e) => {
                        return self.finish(frame, i, Done::Error(e), inflight).await;
                    }
                };
                let record = &mut frame.state[i].record;
                record.status = NodeStatus::Waiting;
                record.wake_at = Some(wake_at);
                let run = self.sleep_started();
                self.commit_node(record, run, None).await?;
                // The timer must be on disk before it is relied on.
                self.sync().await?;
                inflight.push(Box::pin(self.wake(i, wake_at, true)));
            }
            NodeKind::ForEach(fe) => {
                let items: Vec<Value> = match frame.state[i]
                    .record
                    .state
                    .as_ref()
                    .and_then(|s| s.get("items"))
                {
                    Some(Value::Array(items)) => items.clone(),
                    _ => match fe.items(&mut frame.scope, node.timeout) {
                        Ok(items) => items,
                        Err(e) => {
                            return self.finish(frame, i, Done::Error(e), inflight).await;
                        }
                    },
                };
                frame.state[i].record.state = Some(json!({"items": items}));
                self.commit_node(&frame.state[i].record, None, None).await?;
                // The loop itself is not work; its iterations' nodes are.
                self.work_ended();
                let body = graph.bodies[i].as_ref();
                let iterations = self.iterations(frame, i, body, items, fe.concurrency);
                inflight.push(Box::pin(iterations.instrument(span.clone())));
            }
            other => {
                // `run_now` handles every other type; keep the run alive anyway.
                let e = NodeError::Invalid(format!(
                    "internal error: `{}` nodes cannot run here",
                    other.type_name()
                ));
                return self.finish(frame, i, Done::Error(e), inflight).await;
            }
        }
        Ok(None)
    }

    /// Sleeps until `wake_at`; a delay then finishes, a retry attempts again.
    async fn wake(&self, i: usize, wake_at: DateTime<Utc>, is_delay: bool) -> Result<Event> {
        self.engine.clock.sleep_until(wake_at).await;
        if let Some(run) = self.sleep_ended() {
            self.submit(Commit::new().run(run)).await?;
        }
        Ok(if is_delay {
            Event::Finished(
                i,
                Done::Ok {
                    output: json!({"until": wake_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)}),
                    dynamic: None,
                    delivery: None,
                },
            )
        } else {
            Event::Woke(i)
        })
    }

    /// Runs a loop's iterations, `concurrency` at a time, outputs in item
    /// order.
    fn iterations<'a>(
        &'a self,
        frame: &Frame<'a>,
        i: usize,
        body: Option<&'a Graph>,
        items: Vec<Value>,
        concurrency: usize,
    ) -> impl std::future::Future<Output = Result<Event>> + 'a {
        let node = &frame.graph.nodes[i];
        let prefix = format!("{}{}", frame.prefix, node.id);
        let indexes = frame.indexes.clone();
        let parent = frame.scope.clone();
        async move {
            let Some(body) = body else {
                return Ok(Event::Finished(
                    i,
                    Done::Error(NodeError::Invalid("the loop has no body".into())),
                ));
            };
            let runs = items.into_iter().enumerate().map(|(n, item)| {
                let mut indexes = indexes.clone();
                indexes.push(n);
                let scope = scope::for_iteration(&parent, to_dynamic(&item), n);
                let frame = Frame::new(body, format!("{prefix}[{n}]."), indexes, scope);
                self.run_frame(frame)
            });
            let mut outputs = Vec::new();
            let mut stream = futures::stream::iter(runs).buffered(concurrency.max(1));
            let mut n = 0;
            while let Some(end) = stream.next().await {
                match end? {
                    FrameEnd::Done(output) => outputs.push(output),
                    FrameEnd::Failed(failure) => {
                        let message = format!("iteration {n}: {failure}");
                        self.work_started();
                        return Ok(Event::Finished(i, Done::Error(NodeError::Invalid(message))));
                    }
                }
                n += 1;
            }
            self.work_started();
            Ok(Event::Finished(
                i,
                Done::Ok {
                    output: Value::Array(outputs),
                    dynamic: None,
                    delivery: None,
                },
            ))
        }
    }

    fn run_id(&self) -> String {
        self.run
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .id
            .clone()
    }

    /// Records how an attempt ended and routes on.
    async fn finish<'a>(
        &'a self,
        frame: &mut Frame<'a>,
        i: usize,
        done: Done,
        inflight: &mut Inflight<'a>,
    ) -> Result<Option<Failure>> {
        let graph = frame.graph;
        let node = &graph.nodes[i];
        let now = self.engine.clock.now();
        match done {
            Done::Ok {
                output,
                dynamic,
                delivery,
            } => {
                let record = &mut frame.state[i].record;
                record.status = NodeStatus::Succeeded;
                record.finished_at = Some(now);
                record.output = Some(output.clone());
                record.error = None;
                record.wake_at = None;
                let delivery = delivery.map(|d| self.delivery_record(&output, d, node, now));
                if node.kind.has_effect() {
                    // Its result is on disk before anything that depends on it.
                    self.commit_node(record, None, delivery).await?;
                    self.sync().await?;
                } else {
                    self.commit_node(record, None, delivery).await?;
                }
                self.work_ended();
                Ok(self.resolved_ok(frame, i, output, dynamic))
            }
            Done::Fail(message) => {
                let record = &mut frame.state[i].record;
                record.status = NodeStatus::Failed;
                record.finished_at = Some(now);
                record.error = Some(message.clone());
                self.commit_node(record, None, None).await?;
                self.work_ended();
                Ok(Some(Failure {
                    node: record.key.clone(),
                    message,
                }))
            }
            Done::Error(error) => {
                let attempts = frame.state[i].attempts;
                let message = error.to_string();
                if error.is_retryable() && attempts < node.retry.max_attempts {
                    let backoff = node.retry.backoff(attempts, rand::random::<f64>());
                    let wake_at = now + chrono::Duration::from_std(backoff).unwrap_or_default();
                    warn!(node = %node.id, attempt = attempts, error = %message, retry_in_ms = backoff.as_millis() as u64, "node failed; will retry");
                    let record = &mut frame.state[i].record;
                    record.status = NodeStatus::Waiting;
                    record.error = Some(message);
                    record.wake_at = Some(wake_at);
                    let run = self.sleep_started();
                    self.commit_node(record, run, None).await?;
                    self.sync().await?;
                    inflight.push(Box::pin(self.wake(i, wake_at, false)));
                    return Ok(None);
                }
                let record = &mut frame.state[i].record;
                record.status = NodeStatus::Failed;
                record.finished_at = Some(now);
                record.error = Some(message.clone());
                record.wake_at = None;
                if node.on_error != OnError::Fail {
                    record.output = Some(json!({"error": message}));
                }
                warn!(node = %node.id, attempts, error = %message, "node failed");
                self.commit_node(record, None, None).await?;
                self.work_ended();
                if node.on_error == OnError::Fail {
                    return Ok(Some(Failure {
                        node: frame.state[i].record.key.clone(),
                        message,
                    }));
                }
                Ok(self.resolved_error(frame, i, message))
            }
        }
    }

    /// A succeeded node: its output joins the scope, its routes are taken.
    fn resolved_ok(
        &self,
        frame: &mut Frame<'_>,
        i: usize,
        output: Value,
        dynamic: Option<Dynamic>,
    ) -> Option<Failure> {
        let node = &frame.graph.nodes[i];
        let taken = node.kind.taken(&output);
        if frame.graph.sink == Some(i) {
            frame.sink_output = output.clone();
        }
        let dynamic = dynamic.unwrap_or_else(|| to_dynamic(&output));
        scope::set_output(&mut frame.scope, &node.id, dynamic);
        frame.resolve(i, taken);
        self.count_ready(frame);
        None
    }

    /// A failed node with `on_error: continue` or a handler.
    fn resolved_error(&self, frame: &mut Frame<'_>, i: usize, message: String) -> Option<Failure> {
        let node = &frame.graph.nodes[i];
        let output = json!({"error": message});
        if frame.graph.sink == Some(i) {
            frame.sink_output = output.clone();
        }
        scope::set_output(&mut frame.scope, &node.id, to_dynamic(&output));
        let taken = match &node.on_error {
            OnError::Handler(_) => Taken::Only(weir_nodes::Route::OnError),
            _ => Taken::Next,
        };
        frame.resolve(i, taken);
        self.count_ready(frame);
        None
    }

    /// Nodes that just became ready count as work.
    fn count_ready(&self, frame: &mut Frame<'_>) {
        for _ in frame.newly_ready.drain(..) {
            self.work_started();
        }
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
                    format: format.as_str().to_owned(),
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
        }
    }
}

impl<'g> Frame<'g> {
    fn new(graph: &'g Graph, prefix: String, indexes: Vec<usize>, scope: Scope<'static>) -> Self {
        let state = graph
            .nodes
            .iter()
            .map(|n| NodeState {
                resolved_in: 0,
                taken_in: 0,
                attempts: 0,
                record: NodeRecord::new(format!("{prefix}{}", n.id), n.id.clone()),
            })
            .collect();
        Self {
            graph,
            prefix,
            indexes,
            scope,
            state,
            ready: VecDeque::new(),
            newly_ready: Vec::new(),
            sink_output: Value::Null,
        }
    }

    fn key(&self, node: &NodeDef) -> String {
        format!("{}{}", self.prefix, node.id)
    }

    /// `{run_id}:{node_id}`, plus `:{index}` per enclosing loop.
    fn idempotency_key(&self, run_id: &str, node: &NodeDef) -> String {
        let mut key = format!("{run_id}:{}", node.id);
        for i in &self.indexes {
            key.push(':');
            key.push_str(&i.to_string());
        }
        key
    }

    /// Marks node `i` resolved: each outgoing edge counts as taken or not.
    fn resolve(&mut self, i: usize, taken: Taken) {
        for &e in &self.graph.outgoing[i] {
            let edge = self.graph.edges[e];
            let to = &mut self.state[edge.to];
            to.resolved_in += 1;
            if taken.takes(edge.route) {
                to.taken_in += 1;
            }
            if to.resolved_in == self.graph.incoming[edge.to].len() {
                self.ready.push_back(edge.to);
                self.newly_ready.push(edge.to);
            }
        }
    }
}
