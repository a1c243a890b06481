//! `--role ingest`: an event that passed every check becomes a message on
//! a quorum queue. The caller is answered only once the broker confirmed
//! it (the queue's Raft majority has it) and the event's own records (a
//! dedupe key, a cron instant, what a poll saw) are on this process's disk.
//!
//! Publishes go out in admission order, one channel, so the events of one
//! concurrency key reach their partition in the order they were accepted;
//! confirms are awaited side by side.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;
use weir_storage::{Commit, RunRecord, Store, TriggerKey, Write};

use super::broker::{PublishError, properties};
use super::lead::Lead;
use super::{Cluster, EventMessage};
use crate::daemon::runs::AdmitError;
use crate::flow::Flow;

struct Job {
    queue: String,
    id: String,
    body: Vec<u8>,
    writes: Vec<Write>,
    done: oneshot::Sender<Result<(), AdmitError>>,
}

pub struct Forward {
    cluster: Arc<Cluster>,
    store: Arc<dyn Store>,
    jobs: mpsc::UnboundedSender<Job>,
    lead: OnceLock<Arc<Lead>>,
}

impl From<PublishError> for AdmitError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Unavailable(why) => AdmitError::Broker(why),
            PublishError::Full(queue) => AdmitError::QueueFull(queue),
        }
    }
}

impl Forward {
    pub fn start(cluster: Arc<Cluster>, store: Arc<dyn Store>) -> Arc<Self> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let forward = Arc::new(Self {
            cluster,
            store,
            jobs,
            lead: OnceLock::new(),
        });
        tokio::spawn(forward.clone().publish_all(rx));
        forward
    }

    /// The leader whose trigger state travels when a firing is recorded.
    pub fn set_lead(&self, lead: Arc<Lead>) {
        let _ = self.lead.set(lead);
    }

    /// Sends `run`'s event, in call order; the answer comes once it is
    /// confirmed and `writes` are on disk.
    pub fn send(
        &self,
        flow: &Flow,
        run: &RunRecord,
        writes: Vec<Write>,
    ) -> oneshot::Receiver<Result<(), AdmitError>> {
        let (done, answer) = oneshot::channel();
        let message = EventMessage::of(run);
        let body = match serde_json::to_vec(&message) {
            Ok(body) => body,
            Err(e) => {
                let _ = done.send(Err(AdmitError::Broker(format!(
                    "cannot encode the event: {e}"
                ))));
                return answer;
            }
        };
        let topology = &self.cluster.topology;
        let queue = match &run.concurrency_key {
            None => topology.events(),
            Some(key) => topology.partition(topology.partition_of(&run.tenant, &flow.id, key)),
        };
        let job = Job {
            queue,
            id: run.id.clone(),
            body,
            writes,
            done,
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            let _ = job
                .done
                .send(Err(AdmitError::Broker("weir is stopping".into())));
        }
        answer
    }

    async fn publish_all(self: Arc<Self>, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let broker = self.cluster.broker.clone();
        while let Some(job) = jobs.recv().await {
            let Some(link) = broker.current() else {
                let why = broker
                    .last_error()
                    .unwrap_or_else(|| "not connected yet".into());
                let _ = job.done.send(Err(AdmitError::Broker(why)));
                continue;
            };
            let sent = broker
                .send(&link, &job.queue, &job.body, properties(&job.id))
                .await;
            match sent {
                Err(e) => {
                    let _ = job.done.send(Err(e.into()));
                }
                Ok(confirm) => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let Job {
                            queue,
                            writes,
                            done,
                            ..
                        } = job;
                        let result = match this.cluster.broker.confirmed(&queue, confirm).await {
                            Ok(()) => {
                                crate::metrics::event_forwarded();
                                this.record(writes).await
                            }
                            Err(e) => Err(e.into()),
                        };
                        let _ = done.send(result);
                    });
                }
            }
        }
    }

    /// The event is on the queue: its own records go to disk, and the
    /// state of the trigger that fired it travels to its leadership queue.
    async fn record(&self, writes: Vec<Write>) -> Result<(), AdmitError> {
        if writes.is_empty() {
            return Ok(());
        }
        let keys: BTreeSet<TriggerKey> = writes
            .iter()
            .filter_map(|w| match w {
                Write::CronFired { trigger, .. }
                | Write::Seen { trigger, .. }
                | Write::Cursor { trigger, .. } => Some(trigger.clone()),
                _ => None,
            })
            .collect();
        if let Err(e) = self.store.commit(Commit { writes }).await {
            // The event is on its way; its dedupe key or trigger state is
            // not. A sender that tries again may start a second run.
            warn!(error = %e, "an event was published but its records could not be stored");
            return Err(AdmitError::Unavailable(e.to_string()));
        }
        if let Some(lead) = self.lead.get() {
            for key in keys {
                lead.changed(&key);
            }
        }
        Ok(())
    }
}
