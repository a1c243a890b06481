//! Who fires a cron or poll trigger when several ingest processes run: per
//! (tenant, flow, trigger) — per connection in a flow that runs per
//! connection — a quorum queue with a single active consumer. Every
//! ingest process consumes it; the broker delivers only to the active one,
//! and when that one goes away (it stops, dies, or loses its connection)
//! the next one becomes active.
//!
//! The queue holds the trigger's state as one message, the token: the last
//! instant fired, or what a poll saw and its cursor. The leader holds the
//! newest token unacknowledged; after each firing it publishes a newer
//! token (confirmed) and only then acks the one it held, so the queue
//! always has the latest state, and a leader that dies hands its token to
//! the next one. At most one token is ready at a time (`x-max-length: 1`,
//! `drop-head`); a token older than the one a leader holds is discarded.
//!
//! The guarantee: while a leader runs, each instant fires once. When a
//! leader dies between publishing an instant's event and publishing its
//! token, the next leader fires that instant again — under the same event
//! and run id ([`super::instant_id`]), so its deliveries carry the same
//! idempotency keys. Instants missed while no ingest process was up are
//! handled by `catch_up`, as in a single process.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};
use weir_storage::{Commit, SeenRecord, Store, TriggerKey, Write};

use super::broker::{Link, close_channel, declare_queue, properties};
use super::{Cluster, short};

/// How often a leader publishes its token again when nothing fired: well
/// inside RabbitMQ's consumer timeout (30 minutes by default), which
/// would otherwise close a channel that holds a message that long.
const REFRESH: Duration = Duration::from_secs(60);
/// How often a standby checks that its queue has a token at all (the first
/// process to declare it may have died before seeding it).
const SEED_CHECK: Duration = Duration::from_secs(30);

/// Resolves once `stop` is set (and holds no borrow of it afterwards).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The trigger's state, as it travels.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TriggerState {
    #[serde(default)]
    cron_fired: Option<DateTime<Utc>>,
    #[serde(default)]
    seen: Vec<(String, SeenRecord)>,
    /// `Some` once a poll completed (a full scan's cursor is `null`): it
    /// travels as a present field, so `null` is not read back as `None`
    /// (which would make the next leader's first poll a baseline).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    cursor: Option<Value>,
}

/// A present field, `null` included, is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, Deserialize)]
struct Token {
    seq: u64,
    /// `None`: a seed (the queue is new); the leader keeps what it has.
    state: Option<TriggerState>,
}

enum Command {
    /// Publish the state as it is on disk now.
    Update,
    /// Publish it one last time and step down.
    Release(oneshot::Sender<()>),
}

pub struct Lead {
    cluster: Arc<Cluster>,
    store: Arc<dyn Store>,
    leases: Mutex<HashMap<TriggerKey, mpsc::UnboundedSender<Command>>>,
}

/// Leadership of one trigger, while it lasts.
pub struct Lease {
    commands: mpsc::UnboundedSender<Command>,
    lost: watch::Receiver<bool>,
}

impl Lease {
    /// Resolves when leadership is lost (the link broke).
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|l| *l).await;
    }

    /// Publishes the latest state and steps down.
    pub async fn release(self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Release(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
    }
}

impl Lead {
    pub fn new(cluster: Arc<Cluster>, store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            cluster,
            store,
            leases: Mutex::new(HashMap::new()),
        })
    }

    fn leases(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TriggerKey, mpsc::UnboundedSender<Command>>> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A firing of `key` is on disk: its token follows.
    pub fn changed(&self, key: &TriggerKey) {
        if let Some(commands) = self.leases().get(key) {
            let _ = commands.send(Command::Update);
        }
    }

    /// Runs `task` (a trigger's task, given its stop switch and since when
    /// this process stood by) whenever this process leads `key`, until
    /// `stop`.
    pub async fn led<F, Fut>(
        self: Arc<Self>,
        key: TriggerKey,
        mut stop: watch::Receiver<bool>,
        task: F,
    ) where
        F: Fn(watch::Receiver<bool>, Option<DateTime<Utc>>) -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            let since = Utc::now();
            let Some(mut lease) = self.acquire(&key, &mut stop).await else {
                return;
            };
            info!(tenant = %key.tenant, flow = %key.flow, trigger = %key.trigger, "this process leads the trigger");
            let (inner, inner_rx) = watch::channel(false);
            let run = task(inner_rx, Some(since));
            tokio::pin!(run);
            tokio::select! {
                () = &mut run => {
                    lease.release().await;
                    return;
                }
                () = stopped(&mut stop) => {
                    inner.send_replace(true);
                    run.await;
                    lease.release().await;
                    return;
                }
                () = lease.lost() => {
                    inner.send_replace(true);
                    run.await;
                    warn!(tenant = %key.tenant, flow = %key.flow, trigger = %key.trigger, "leadership of the trigger lost; another process takes over");
                }
            }
        }
    }

    /// Waits until this process leads `key` (`None`: told to stop first).
    async fn acquire(
        self: &Arc<Self>,
        key: &TriggerKey,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Lease> {
        let mut links = self.cluster.broker.watch();
        loop {
            if *stop.borrow() {
                return None;
            }
            let link = links.borrow_and_update().clone();
            let Some(link) = link else {
                tokio::select! {
                    _ = links.changed() => continue,
                    () = stopped(stop) => return None,
                }
            };
            match self.try_lead(&link, key, stop).await {
                Ok(lease) => return lease,
                Err(e) => {
                    warn!(tenant = %key.tenant, flow = %key.flow, trigger = %key.trigger, error = %e, "cannot wait for the trigger's leadership; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = stopped(stop) => return None,
                    }
                }
            }
        }
    }

    async fn try_lead(
        self: &Arc<Self>,
        link: &Arc<Link>,
        key: &TriggerKey,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Lease>, String> {
        let name = self.cluster.topology.lead(key);
        let channel = link
            .connection
            .create_channel()
            .await
            .map_err(|e| format!("open a channel: {e}"))?;
        channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .map_err(|e| format!("set the prefetch: {e}"))?;
        let queue = declare_queue(&channel, &name, self.cluster.topology.lead_arguments()).await?;
        // No consumer and no message: no token anywhere (a held one comes
        // back when its holder goes away).
        if queue.message_count() == 0 && queue.consumer_count() == 0 {
            self.seed(link, &name).await?;
        }
        let mut consumer = channel
            .basic_consume(
                short(&name),
                short(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consume {name}: {e}"))?;
        // Only the active consumer gets the token.
        let delivery = loop {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(d)) => break d,
                    Some(Err(e)) => return Err(format!("waiting on {name}: {e}")),
                    None => return Err(format!("the broker cancelled the consumer of {name}")),
                },
                () = tokio::time::sleep(SEED_CHECK) => {
                    self.seed_if_empty(link, &name).await;
                }
                () = stopped(stop) => {
                    close_channel(&channel, "stopping").await;
                    return Ok(None);
                }
            }
        };
        let token: Token = match serde_json::from_slice(&delivery.data) {
            Ok(t) => t,
            Err(e) => {
                warn!(queue = %name, error = %e, "a leadership token does not read; starting from this process's own state");
                Token {
                    seq: 0,
                    state: None,
                }
            }
        };
        if let Some(state) = token.state {
            self.import(key, state).await?;
        }
        let (commands, rx) = mpsc::unbounded_channel();
        let (lost_tx, lost) = watch::channel(false);
        self.leases().insert(key.clone(), commands.clone());
        let hold = Hold {
            lead: self.clone(),
            key: key.clone(),
            name,
            link: link.clone(),
            channel,
            held: Some(delivery.acker),
            seq: token.seq,
        };
        tokio::spawn(hold.run(consumer, rx, lost_tx));
        Ok(Some(Lease { commands, lost }))
    }

    async fn seed(&self, link: &Link, name: &str) -> Result<(), String> {
        let seed = Token {
            seq: 0,
            state: None,
        };
        let body = serde_json::to_vec(&seed).map_err(|e| e.to_string())?;
        self.cluster
            .broker
            .publish(link, name, &body, properties("seed"))
            .await
            .map_err(|e| format!("seed {name}: {e}"))
    }

    async fn seed_if_empty(&self, link: &Link, name: &str) {
        let Ok(channel) = link.connection.create_channel().await else {
            return;
        };
        let options = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if let Ok(q) = channel
            .queue_declare(short(name), options, FieldTable::default())
            .await
            && q.message_count() == 0
        {
            // A leader holding its token unacked shows 0 ready too: then
            // this seed waits, is dropped by the leader's next token
            // (`drop-head`), or discarded by it as older.
            let _ = self.seed(link, name).await;
        }
        close_channel(&channel, "checked").await;
    }

    /// The state as it is on this process's disk.
    fn export(&self, key: &TriggerKey) -> Result<TriggerState, weir_storage::Error> {
        Ok(TriggerState {
            cron_fired: self.store.cron_fired(key)?,
            seen: self.store.seen(key)?,
            cursor: self.store.cursor(key)?,
        })
    }

    /// A token's state replaces what this process had of the trigger.
    async fn import(&self, key: &TriggerKey, state: TriggerState) -> Result<(), String> {
        let mut commit = Commit::new();
        if let Some(at) = state.cron_fired {
            commit.push(Write::CronFired {
                trigger: key.clone(),
                at,
            });
        }
        let theirs: HashSet<&String> = state.seen.iter().map(|(k, _)| k).collect();
        let local = self.store.seen(key).map_err(|e| e.to_string())?;
        for (k, _) in local.iter().filter(|(k, _)| !theirs.contains(k)) {
            commit.push(Write::Seen {
                trigger: key.clone(),
                key: k.clone(),
                record: None,
            });
        }
        for (k, record) in &state.seen {
            commit.push(Write::Seen {
                trigger: key.clone(),
                key: k.clone(),
                record: Some(record.clone()),
            });
        }
        if let Some(cursor) = state.cursor {
            commit.push(Write::Cursor {
                trigger: key.clone(),
                cursor,
            });
        }
        if commit.writes.is_empty() {
            return Ok(());
        }
        self.store
            .commit(commit)
            .await
            .map_err(|e| format!("store the trigger's state: {e}"))
    }
}

/// A leader's hold on its token.
struct Hold {
    lead: Arc<Lead>,
    key: TriggerKey,
    name: String,
    link: Arc<Link>,
    channel: Channel,
    /// The newest token, unacked; `None` between publishing a newer one
    /// and receiving it.
    held: Option<lapin::Acker>,
    seq: u64,
}

impl Hold {
    async fn run(
        mut self,
        mut consumer: lapin::Consumer,
        mut commands: mpsc::UnboundedReceiver<Command>,
        lost: watch::Sender<bool>,
    ) {
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.tick().await;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Update) => {
                        // Several firings in a row: one token for all.
                        while let Ok(Command::Update) = commands.try_recv() {}
                        if let Err(e) = self.publish().await {
                            warn!(queue = %self.name, error = %e, "cannot publish the trigger's state");
                            break;
                        }
                    }
                    Some(Command::Release(done)) => {
                        if let Err(e) = self.publish().await {
                            warn!(queue = %self.name, error = %e, "cannot publish the trigger's state before stepping down");
                        }
                        close_channel(&self.channel, "stepping down").await;
                        let _ = done.send(());
                        break;
                    }
                    None => {
                        close_channel(&self.channel, "stepping down").await;
                        break;
                    }
                },
                next = consumer.next() => match next {
                    Some(Ok(d)) => {
                        let seq = serde_json::from_slice::<Token>(&d.data).map_or(0, |t| t.seq);
                        if seq >= self.seq && self.held.is_none() {
                            self.seq = seq;
                            self.held = Some(d.acker);
                        } else {
                            // Older than what this leader holds (a seed).
                            let _ = d.acker.ack(BasicAckOptions::default()).await;
                        }
                    }
                    _ => break,
                },
                _ = refresh.tick() => {
                    if let Err(e) = self.publish().await {
                        warn!(queue = %self.name, error = %e, "cannot refresh the trigger's token");
                        break;
                    }
                }
            }
        }
        self.lead.leases().remove(&self.key);
        lost.send_replace(true);
    }

    /// Publishes the state on disk as a newer token, then acks the held
    /// one (in that order: the queue always has the latest state).
    async fn publish(&mut self) -> Result<(), String> {
        let state = self.lead.export(&self.key).map_err(|e| e.to_string())?;
        let token = Token {
            seq: self.seq + 1,
            state: Some(state),
        };
        let body = serde_json::to_vec(&token).map_err(|e| e.to_string())?;
        self.lead
            .cluster
            .broker
            .publish(
                &self.link,
                &self.name,
                &body,
                properties(&format!("token-{}", token.seq)),
            )
            .await
            .map_err(|e| e.to_string())?;
        self.seq = token.seq;
        if let Some(held) = self.held.take() {
            held.ack(BasicAckOptions::default())
                .await
                .map_err(|e| format!("ack the previous token: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_scans_null_cursor_travels_as_polled() {
        let polled = TriggerState {
            cursor: Some(Value::Null),
            ..TriggerState::default()
        };
        let back: TriggerState =
            serde_json::from_slice(&serde_json::to_vec(&polled).unwrap()).unwrap();
        assert_eq!(back.cursor, Some(Value::Null));
        let never: TriggerState =
            serde_json::from_slice(&serde_json::to_vec(&TriggerState::default()).unwrap()).unwrap();
        assert_eq!(never.cursor, None);
        let cursor: TriggerState = serde_json::from_str(r#"{"cursor": {"since": 7}}"#).unwrap();
        assert_eq!(cursor.cursor, Some(json!({"since": 7})));
    }
}
