//! Running nodes within a frame: skip, resume from a record, attempt,
//! retry, finish, route on.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rhai::Dynamic;
use serde_json::{Value, json};
use tracing::{Instrument, info_span, warn};
use weir_nodes::functions::http::HttpError;
use weir_nodes::node::{NodeError, NodeKind, OnError, Outcome, Taken};
use weir_nodes::script::{to_dynamic, to_json};
use weir_storage::{Commit, NodeStatus};

use super::frame::Frame;
use super::{Done, Event, Failure, FrameEnd, Inflight, Runner};
use crate::engine::{Result, scope};
use crate::flow::Graph;

impl<'e> Runner<'e> {
    /// Runs a graph to its end.
    pub(super) fn run_frame<'a>(&'a self, mut frame: Frame<'a>) -> BoxFuture<'a, Result<FrameEnd>> {
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
                    if self.control.is_cancelled() {
                        return Ok(FrameEnd::Cancelled);
                    }
                    if let Some(failure) = self.step(&mut frame, i, &mut inflight).await? {
                        return Ok(FrameEnd::Failed(failure));
                    }
                }
                if inflight.is_empty() {
                    break;
                }
                // The last work may have ended here rather than by going to
                // sleep (a skipped branch, say): then the run waits.
                self.check_idle().await?;
                let event = tokio::select! {
                    event = inflight.next() => event,
                    () = self.control.cancelled() => return Ok(FrameEnd::Cancelled),
                };
                let Some(event) = event else {
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
                        let _ = self.sleep_started(wake_at);
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
                let mut request = match http.prepare(&mut frame.scope, node.timeout) {
                    Ok(request) => request,
                    Err(e) => {
                        return self.finish(frame, i, Done::Error(e), inflight).await;
                    }
                };
                if let Some(via) = &mut request.via
                    && via.id.is_none()
                {
                    via.id = self.own_connection(via);
                }
                // A side effect: what it depends on must be on disk first.
                self.sync().await?;
                self.commit_node(&frame.state[i].record, None, None).await?;
                let timeout = node.timeout;
                let (connector, tenant) = (self.engine.connector(), self.tenant());
                inflight.push(Box::pin(
                    async move {
                        let done = ended(send(&request, &key, timeout, connector, &tenant).await);
                        Ok(Event::Finished(i, done))
                    }
                    .instrument(span.clone()),
                ));
            }
            NodeKind::Action(action) => {
                let call = match action.prepare(&mut frame.scope, node.timeout) {
                    Ok(call) => call,
                    Err(e) => {
                        return self.finish(frame, i, Done::Error(e), inflight).await;
                    }
                };
                self.sync().await?;
                self.commit_node(&frame.state[i].record, None, None).await?;
                let timeout = node.timeout;
                let (actor, tenant) = (self.engine.actor(), self.tenant());
                let own = self.run_connection_id();
                inflight.push(Box::pin(
                    async move {
                        let result = match actor {
                            None => Err(NodeError::Invalid(format!(
                                "`action: {}` needs the daemon (weir serve), which holds the actions and connections",
                                call.action
                            ))),
                            Some(actor) => {
                                actor.run(&tenant, own.as_deref(), &call, &key, timeout).await
                            }
                        };
                        Ok(Event::Finished(i, ended(result)))
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
                let run = self.sleep_started(wake_at);
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
        if let Some(run) = self.sleep_ended(wake_at) {
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
                    // The frame around sees the cancellation too.
                    FrameEnd::Cancelled => std::future::pending::<()>().await,
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
                mut output,
                dynamic,
                delivery,
            } => {
                if node.kind.has_effect() {
                    // A response may echo what the request sent.
                    self.flow.secrets.redact_value(&mut output);
                }
                let record = &mut frame.state[i].record;
                record.status = NodeStatus::Succeeded;
                record.finished_at = Some(now);
                record.output = Some(output.clone());
                record.error = None;
                record.wake_at = None;
                let delivery = delivery.map(|d| self.delivery_record(&output, d, node, now));
                // Even a side effect's result waits in the pending commit:
                // it reaches the disk before the next side effect starts,
                // before a timer, and with the run's end, whichever comes
                // first (a delivery goes to the outbox then, not before).
                // Lost in a crash before that, the node runs again with the
                // same idempotency key, as a request in flight does.
                self.commit_node(record, None, delivery).await?;
                self.work_ended();
                crate::metrics::node_executed(node.kind.type_name(), "succeeded");
                Ok(self.resolved_ok(frame, i, output, dynamic))
            }
            Done::Fail(message) => {
                let message = self.flow.secrets.redact(&message).into_owned();
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
                let message = self.flow.secrets.redact(&error.to_string()).into_owned();
                if error.is_retryable() && attempts < node.retry.max_attempts {
                    // As long as the server asked (`Retry-After`), if longer.
                    let backoff = node
                        .retry
                        .backoff(attempts, rand::random::<f64>())
                        .max(error.retry_after().unwrap_or_default());
                    let wake_at = now + chrono::Duration::from_std(backoff).unwrap_or_default();
                    warn!(node = %node.id, attempt = attempts, error = %message, retry_in_ms = backoff.as_millis() as u64, "node failed; will retry");
                    let record = &mut frame.state[i].record;
                    record.status = NodeStatus::Waiting;
                    record.error = Some(message);
                    record.wake_at = Some(wake_at);
                    let run = self.sleep_started(wake_at);
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
                // What the app answered, for the run's reader and for a
                // flow that goes on after the error.
                let answered = match &error {
                    NodeError::Http(HttpError::Status { status, body, .. }) => {
                        let body = self.flow.secrets.redact(body);
                        Some((
                            *status,
                            serde_json::from_str::<Value>(&body)
                                .unwrap_or_else(|_| Value::String(body.into_owned())),
                        ))
                    }
                    _ => None,
                };
                record.output = match (answered, node.on_error != OnError::Fail) {
                    (Some((status, body)), _) => {
                        Some(json!({"error": message, "status": status, "body": body}))
                    }
                    (None, true) => Some(json!({"error": message})),
                    (None, false) => None,
                };
                warn!(node = %node.id, attempts, error = %message, "node failed");
                crate::metrics::node_executed(node.kind.type_name(), "failed");
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
}

/// How an attempt whose work (a request, an action) answered `result` ended.
fn ended(result: Result<Value, NodeError>) -> Done {
    match result {
        Ok(output) => Done::Ok {
            output,
            dynamic: None,
            delivery: None,
        },
        Err(e) => Done::Error(e),
    }
}

/// Sends a request (an `http` node's, a poll's), through its connection if
/// it names one: the credentials applied, and on a 401 the connection's
/// token refreshed and the request repeated once (or the connection
/// disconnected).
pub(crate) async fn send(
    request: &weir_nodes::functions::http::Request,
    key: &str,
    timeout: Option<std::time::Duration>,
    connector: Option<std::sync::Arc<dyn weir_nodes::functions::http::Connector>>,
    tenant: &str,
) -> Result<Value, NodeError> {
    use weir_nodes::functions::http::HttpError;
    let Some(via) = &request.via else {
        return request.send(key, timeout).await.map_err(NodeError::Http);
    };
    let Some(connector) = connector else {
        return Err(NodeError::Invalid(format!(
            "`connection: {}` needs the daemon (weir serve), which holds the tenants' connections",
            via.integration
        )));
    };
    let authorized = connector.authorize(tenant, via, request).await?;
    match request.send_to(key, timeout, Some(&authorized)).await {
        Err(e @ HttpError::Status { status: 401, .. }) => {
            // Once: a refreshed token gets one more try.
            match connector
                .rejected(tenant, request, &authorized, &e.to_string())
                .await
            {
                Ok(again) => request
                    .send_to(key, timeout, Some(&again))
                    .await
                    .map_err(NodeError::Http),
                Err(note) => Err(NodeError::Invalid(format!("{e}; {note}"))),
            }
        }
        other => other.map_err(NodeError::Http),
    }
}
