//! `--role worker`: consumes the event queue and every partition queue with
//! manual acks and a prefetch window, admits each event as a run in this
//! process's sled under the event's id, and acks it once the run is
//! finished and every delivery it made is confirmed (or dead, which the
//! outbox shows). A worker killed before that leaves the event unacked;
//! the broker gives it to another worker, which runs it again under the
//! same run id, so its deliveries carry the same idempotency keys.
//!
//! Events are admitted in the order they arrive (a partition's events, of
//! one concurrency key, queue behind each other as in one process). What
//! cannot be run goes to the dead-letter queue with the reason, and is
//! acked: never a redelivery loop.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use tracing::{debug, error, warn};

use weir_storage::{Commit, Write};

use super::broker::{Link, properties};
use super::{Checkpoint, Cluster, DeadLetter, EVENT_FORMAT, EventMessage, Topology, short};
use crate::daemon::outbox::Outbox;
use crate::daemon::runs::{AdmitError, Runs};
use crate::flow::Flow;

/// How long a worker waits for its flows folder to catch up with an event
/// accepted against another version of a flow (both reload on change).
const RELOAD_WAIT: Duration = Duration::from_secs(3);

pub struct Worker {
    cluster: Arc<Cluster>,
    runs: Arc<Runs>,
    outbox: Arc<Outbox>,
}

impl Worker {
    /// Starts consuming (and reconnecting); deliveries of the runs admitted
    /// here are tracked from now on.
    pub fn start(
        cluster: Arc<Cluster>,
        runs: Arc<Runs>,
        outbox: Arc<Outbox>,
    ) -> tokio::task::JoinHandle<()> {
        outbox.track_runs();
        let tracker = outbox.clone();
        runs.engine()
            .on_delivery(Arc::new(move |d| tracker.track(d)));
        let worker = Arc::new(Self {
            cluster,
            runs,
            outbox,
        });
        tokio::spawn(worker.consume_forever())
    }

    async fn consume_forever(self: Arc<Self>) {
        let mut links = self.cluster.broker.watch();
        loop {
            let link = links.borrow_and_update().clone();
            let Some(link) = link else {
                if links.changed().await.is_err() {
                    return;
                }
                continue;
            };
            if let Err(e) = self.consume(&link).await {
                warn!(error = %e, "stopped consuming events; starting again");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn consume(self: &Arc<Self>, link: &Arc<Link>) -> Result<(), String> {
        let topology = &self.cluster.topology;
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|e| format!("open a channel: {e}"))?;
        // Per consumer: each queue holds at most this many unacked events
        // here.
        channel
            .basic_qos(self.cluster.settings.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| format!("set the prefetch: {e}"))?;
        let mut queues = vec![topology.events()];
        queues.extend((0..topology.partitions()).map(|i| topology.partition(i)));
        let mut consumers = Vec::with_capacity(queues.len());
        for queue in &queues {
            let consumer = channel
                .basic_consume(
                    short(queue),
                    short(""),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("consume {queue}: {e}"))?;
            consumers.push(consumer);
        }
        debug!(queues = queues.len(), "consuming events");
        let mut all = futures::stream::select_all(consumers);
        while let Some(next) = all.next().await {
            match next {
                Ok(delivery) => self.handle(link, delivery).await,
                Err(e) => return Err(format!("consuming: {e}")),
            }
        }
        Err("the broker cancelled the consumers".into())
    }

    /// Admits one event (in arrival order) and leaves the wait for its run
    /// and the ack to a task of its own.
    async fn handle(self: &Arc<Self>, link: &Arc<Link>, delivery: Delivery) {
        let message = match serde_json::from_slice::<EventMessage>(&delivery.data) {
            Ok(m) if m.v == EVENT_FORMAT => m,
            Ok(m) => {
                let why = format!(
                    "the event's format is version {}, and this worker reads version {EVENT_FORMAT}; run ingest and workers of the same weir release",
                    m.v
                );
                return self
                    .dead_letter(link, delivery, Some(&m), "corrupt", why)
                    .await;
            }
            Err(e) => {
                let why = format!(
                    "the message is not a weir event ({e}); only weir's ingest processes publish to this queue"
                );
                return self.dead_letter(link, delivery, None, "corrupt", why).await;
            }
        };
        if message.resume.is_some() {
            return self.resume(link, delivery, message).await;
        }
        // Delivered again (after a broker or worker restart): the run may
        // be here already; it is not admitted twice.
        match self.runs.engine().store().run_by_id(&message.event_id) {
            Ok(Some(_)) => {
                self.finish_then_ack(message.event_id, delivery);
                return;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(event_id = %message.event_id, error = %e, "cannot look the event's run up; the event goes back to the queue");
                return requeue_later(delivery);
            }
        }
        let flow = match self.flow_for(&message).await {
            Ok(flow) => flow,
            Err((reason, why)) => {
                return self
                    .dead_letter(link, delivery, Some(&message), reason, why)
                    .await;
            }
        };
        let EventMessage {
            event_id,
            tenant,
            trigger,
            connection,
            event,
            ..
        } = message.clone();
        let submitted = self.runs.submit_as(
            &flow,
            &tenant,
            connection,
            &trigger,
            event,
            event_id.clone(),
            |_| Vec::new(),
        );
        match submitted {
            Ok(submitted) => {
                let this = self.clone();
                tokio::spawn(async move {
                    match this.runs.admitted(submitted).await {
                        Ok(run) => this.finish_then_ack_now(run.id, delivery).await,
                        Err(e) => {
                            warn!(event_id = %event_id, error = %e, "cannot admit the event; it goes back to the queue");
                            requeue_later(delivery);
                        }
                    }
                });
            }
            Err(AdmitError::Key(e)) => {
                let why =
                    format!("the flow's concurrency key does not evaluate on this event: {e}");
                self.dead_letter(link, delivery, Some(&message), "concurrency_key", why)
                    .await;
            }
            Err(e) => {
                warn!(event_id = %event_id, error = %e, "cannot admit the event now; it goes back to the queue");
                requeue_later(delivery);
            }
        }
    }

    /// The flow the event was accepted for, in the version it was accepted
    /// against; else the dead-letter reason and why.
    async fn flow_for(&self, m: &EventMessage) -> Result<Arc<Flow>, (&'static str, String)> {
        let registry = self.runs.registry();
        let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
        loop {
            if let Some(flow) = registry.get(&m.flow)
                && flow.version == m.flow_version
            {
                if !flow.tenants.serves(&m.tenant) {
                    return Err((
                        "tenant",
                        format!(
                            "flow '{}' does not serve tenant '{}' on this worker; give every process the same flows folder",
                            m.flow, m.tenant
                        ),
                    ));
                }
                return Ok(flow);
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(match registry.get(&m.flow) {
            None => (
                "unknown_flow",
                format!(
                    "this worker has no flow '{}' (the ingest that accepted the event has it); give every process the same flows folder",
                    m.flow
                ),
            ),
            Some(flow) => (
                "flow_version",
                format!(
                    "the event was accepted against version {} of flow '{}', and this worker serves version {}; give every process the same flows folder",
                    m.flow_version, m.flow, flow.version
                ),
            ),
        })
    }

    fn finish_then_ack(self: &Arc<Self>, run: String, delivery: Delivery) {
        let this = self.clone();
        tokio::spawn(async move { this.finish_then_ack_now(run, delivery).await });
    }

    /// Waits for the run to finish and its deliveries to settle, then acks;
    /// a run that parks on a timer further away than `--hand-off-after`
    /// is handed off instead ([`Worker::hand_off`]).
    async fn finish_then_ack_now(&self, run: String, delivery: Delivery) {
        let hand_off_after = chrono::Duration::from_std(self.cluster.settings.hand_off_after)
            .unwrap_or(chrono::Duration::MAX);
        // A run with a concurrency key holds its key's slot here while it
        // waits: it is not handed off (its partition's order depends on it).
        let keyed = matches!(
            self.runs.engine().store().run_by_id(&run),
            Ok(Some(r)) if r.concurrency_key.is_some()
        );
        loop {
            if self.runs.wait(&run, Duration::from_secs(1)).await.is_some() {
                break;
            }
            let now = self.runs.engine().clock().now();
            let far = !keyed
                && self
                    .runs
                    .parked_at(&run)
                    .is_some_and(|at| at - now > hand_off_after);
            if far && self.hand_off(&run, &delivery).await {
                return;
            }
        }
        self.outbox.settled(&run).await;
        match delivery.acker.ack(BasicAckOptions::default()).await {
            Ok(_) => crate::metrics::event_acked(),
            // The channel broke: the broker delivers the event again, and
            // the run, finished here, is acked then without running again.
            Err(e) => {
                debug!(run_id = %run, error = %e, "cannot ack an event; it will be delivered again")
            }
        }
    }

    /// Hands a parked run off: once its deliveries so far are confirmed,
    /// its checkpoint (run, node records, flow version) goes to the delay
    /// queue for its wake time (confirmed), then the run leaves this
    /// worker's disk, then its event is acked — in that order, so a crash
    /// at any point leaves the run with the broker, here, or both (then
    /// it runs on under the same ids). True if it was handed off.
    async fn hand_off(&self, run_id: &str, delivery: &Delivery) -> bool {
        let Some(link) = self.cluster.broker.current() else {
            return false;
        };
        self.outbox.settled(run_id).await;
        let Some(due) = self.runs.take_parked(run_id) else {
            return false; // it woke meanwhile
        };
        let store = self.runs.engine().store().clone();
        let checkpoint = (|| {
            let run = store
                .run_by_id(run_id)?
                .ok_or_else(|| weir_storage::Error::Failed(format!("run {run_id} is gone")))?;
            let nodes = store.nodes(&run.tenant, &run.id)?;
            let snapshot = store.snapshot(&run.flow, &run.flow_version)?;
            Ok::<_, weir_storage::Error>(Checkpoint {
                run,
                nodes,
                snapshot,
                due,
            })
        })();
        let checkpoint = match checkpoint {
            Ok(c) => c,
            Err(e) => {
                warn!(run_id, error = %e, "cannot read a waiting run to hand it off; it waits here");
                self.runs.park_again(run_id, due);
                return false;
            }
        };
        let run = &checkpoint.run;
        let message = EventMessage::of(run);
        let (tenant, id) = (run.tenant.clone(), run.id.clone());
        let message = EventMessage {
            resume: Some(Box::new(checkpoint)),
            ..message
        };
        let now = self.runs.engine().clock().now();
        if let Err(e) = self.delay(&link, &message, due - now).await {
            warn!(run_id, error = %e, "cannot hand a waiting run off; it waits here");
            self.runs.park_again(run_id, due);
            return false;
        }
        let forget = Commit::new().with(Write::HandOffRun { tenant, run: id });
        if let Err(e) = store.commit(forget).await {
            // It is with the broker too: both go on, under the same ids.
            warn!(run_id, error = %e, "a handed-off run could not be removed here");
        }
        crate::metrics::run_handed_off();
        debug!(run_id, due = %due, "a waiting run is handed off");
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
            debug!(run_id, error = %e, "cannot ack a handed-off run's event; it will be delivered again");
        }
        true
    }

    /// Publishes `message` to the delay queue for `remaining` (confirmed).
    async fn delay(
        &self,
        link: &Link,
        message: &EventMessage,
        remaining: chrono::Duration,
    ) -> Result<(), String> {
        let body = serde_json::to_vec(message).map_err(|e| e.to_string())?;
        let level = Topology::wait_level(remaining.to_std().unwrap_or_default());
        self.cluster
            .broker
            .publish(
                link,
                &self.cluster.topology.wait(level),
                &body,
                properties(&message.event_id),
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// A handed-off run came back: not due yet, it waits again; due, its
    /// records are written here and it goes on (unless it is here already).
    async fn resume(self: &Arc<Self>, link: &Arc<Link>, delivery: Delivery, message: EventMessage) {
        let Some(checkpoint) = message.resume.as_deref() else {
            return;
        };
        let now = self.runs.engine().clock().now();
        let remaining = checkpoint.due - now;
        if remaining > chrono::Duration::seconds(1) {
            match self.delay(link, &message, remaining).await {
                Ok(()) => {
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                }
                Err(e) => {
                    warn!(run_id = %message.event_id, error = %e, "cannot put a handed-off run back to wait; it goes back to its queue");
                    requeue_later(delivery);
                }
            }
            return;
        }
        let store = self.runs.engine().store().clone();
        match store.run_by_id(&checkpoint.run.id) {
            Ok(Some(_)) => return self.finish_then_ack(message.event_id, delivery),
            Ok(None) => {}
            Err(e) => {
                warn!(run_id = %message.event_id, error = %e, "cannot look a handed-off run up; it goes back to its queue");
                return requeue_later(delivery);
            }
        }
        let mut run = checkpoint.run.clone();
        run.event = Arc::new(message.event.clone());
        let mut commit = Commit::new();
        if let Some(snapshot) = &checkpoint.snapshot {
            commit.push(Write::Snapshot(snapshot.clone()));
        }
        commit.push(Write::NewRun(run.clone()));
        for record in &checkpoint.nodes {
            commit.push(Write::Node {
                tenant: run.tenant.clone(),
                run: run.id.clone(),
                record: record.clone(),
            });
        }
        if let Err(e) = store.commit(commit).await {
            warn!(run_id = %run.id, error = %e, "cannot store a handed-off run; it goes back to its queue");
            return requeue_later(delivery);
        }
        debug!(run_id = %run.id, "a handed-off run goes on here");
        self.runs.drive_imported(&run.id);
        self.finish_then_ack(run.id, delivery);
    }

    /// Sends the message to the dead-letter queue with why, then acks it;
    /// if the dead-letter queue cannot take it, it goes back to its queue.
    async fn dead_letter(
        &self,
        link: &Link,
        delivery: Delivery,
        message: Option<&EventMessage>,
        reason: &'static str,
        why: String,
    ) {
        error!(event_id = ?message.map(|m| &m.event_id), reason, error = %why, "an event cannot be run; it goes to the dead-letter queue");
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            "x-weir-reason".into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            "x-weir-error".into(),
            AMQPValue::LongString(LongString::from(why.as_str())),
        );
        headers.insert(
            "x-weir-queue".into(),
            AMQPValue::LongString(LongString::from(delivery.routing_key.as_str())),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let dead = self.cluster.topology.dead();
        match self
            .cluster
            .broker
            .publish(link, &dead, &delivery.data, properties)
            .await
        {
            Ok(()) => {
                self.cluster.remember_dead(DeadLetter {
                    event_id: message.map(|m| m.event_id.clone()),
                    tenant: message.map(|m| m.tenant.clone()),
                    flow: message.map(|m| m.flow.clone()),
                    reason: reason.to_owned(),
                    message: why,
                    at: self.runs.engine().clock().now(),
                });
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            }
            Err(e) => {
                warn!(error = %e, "cannot dead-letter an event; it goes back to its queue");
                requeue_later(delivery);
            }
        }
    }
}

/// Gives an event back to its queue after a pause (so a failing store or
/// a full backlog does not spin it).
fn requeue_later(delivery: Delivery) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let options = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        let _ = delivery.acker.nack(options).await;
    });
}
