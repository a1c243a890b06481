//! The broker link of an ingest or worker process: one connection, kept
//! open by a task that reconnects with backoff (lapin does not reconnect
//! by itself), with a publishing channel in confirm mode. Each connection
//! declares the deployment's work queues first, so a process never
//! publishes to or consumes from a queue that is not there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};
use weir_nodes::backoff::Backoff;

use super::{Role, Topology, short};

const RECONNECT: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
/// How long a publish may wait for its confirm.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to the broker.
pub struct Link {
    pub connection: Connection,
    /// Publishes, with confirms, in call order.
    pub publisher: Channel,
}

/// Why a publish did not end in a confirm.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker cannot be reached, or the link broke: nothing is known
    /// to be stored (try again later).
    #[error("the event broker is not reachable: {0}")]
    Unavailable(String),
    /// The queue is at its bound and refused the message.
    #[error("the event queue `{0}` is full")]
    Full(String),
}

pub struct Broker {
    url: String,
    topology: Topology,
    role: Role,
    link: watch::Sender<Option<Arc<Link>>>,
    broke: Notify,
    last_error: Mutex<Option<String>>,
}

pub(crate) use crate::daemon::outbox::amqp::redacted;
use crate::daemon::outbox::amqp::{
    CLOSE_TIMEOUT, close_broken, open_confirming, within_connect_timeout,
};

impl Broker {
    pub fn start(url: String, topology: Topology, role: Role) -> Arc<Self> {
        let (link, _) = watch::channel(None);
        let broker = Arc::new(Self {
            url,
            topology,
            role,
            link,
            broke: Notify::new(),
            last_error: Mutex::new(None),
        });
        tokio::spawn(broker.clone().keep());
        broker
    }

    /// The link, while connected.
    pub fn current(&self) -> Option<Arc<Link>> {
        self.link.borrow().clone()
    }

    /// Sees the link come and go.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Link>>> {
        self.link.subscribe()
    }

    pub fn is_connected(&self) -> bool {
        self.link.borrow().is_some()
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    /// The link broke (a publish or a consumer found out): reconnect.
    pub fn broken(&self, why: &str) {
        self.set_error(why.to_owned());
        self.broke.notify_one();
    }

    async fn keep(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            match within_connect_timeout(self.connect()).await {
                Ok(link) => {
                    failures = 0;
                    let link = Arc::new(link);
                    self.link.send_replace(Some(link.clone()));
                    crate::metrics::cluster_broker_connected(true);
                    info!(broker = %redacted(&self.url), role = self.role.as_str(), "connected to the event broker");
                    while link.connection.status().connected()
                        && link.publisher.status().connected()
                    {
                        tokio::select! {
                            () = self.broke.notified() => break,
                            () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        }
                    }
                    self.link.send_replace(None);
                    crate::metrics::cluster_broker_connected(false);
                    close_broken(&link.connection).await;
                    warn!(broker = %redacted(&self.url), "the event broker connection broke; reconnecting (events are refused with 503 meanwhile)");
                }
                Err(e) => {
                    failures += 1;
                    self.set_error(e.clone());
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(broker = %redacted(&self.url), attempts = failures, error = %e, "cannot connect to the event broker");
                    }
                    tokio::time::sleep(RECONNECT.delay(failures, rand::random::<f64>())).await;
                }
            }
        }
    }

    async fn connect(&self) -> Result<Link, String> {
        let (connection, publisher) = open_confirming(&self.url).await?;
        let declarer = connection
            .create_channel()
            .await
            .map_err(|e| format!("open a channel: {e}"))?;
        self.declare(&declarer).await?;
        close_channel(&declarer, "declared").await;
        Ok(Link {
            connection,
            publisher,
        })
    }

    /// Declares the work queues and the dead-letter queue (a no-op when
    /// they exist with the same arguments).
    async fn declare(&self, channel: &Channel) -> Result<(), String> {
        let t = &self.topology;
        let mut queues = vec![(t.dead(), t.dead_arguments())];
        queues.push((t.events(), t.work_arguments(false)));
        for i in 0..t.partitions() {
            queues.push((t.partition(i), t.work_arguments(true)));
        }
        if self.role == Role::Worker {
            for level in 0..super::WAIT_LEVELS {
                queues.push((t.wait(level), t.wait_arguments(level)));
            }
        }
        for (name, args) in queues {
            declare_queue(channel, &name, args).await?;
        }
        Ok(())
    }

    /// Publishes `body` to `queue` (the default exchange) on the link's
    /// publishing channel and waits for the broker's confirm. Publishes
    /// are sent in call order; only the wait runs alongside others.
    pub async fn publish(
        &self,
        link: &Link,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let confirm = self.send(link, queue, body, properties).await?;
        self.confirmed(queue, confirm).await
    }

    /// The first half of [`Broker::publish`]: the message is on its way.
    pub async fn send(
        &self,
        link: &Link,
        queue: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<lapin::PublisherConfirm, PublishError> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        link.publisher
            .basic_publish(short(""), short(queue), options, body, properties)
            .await
            .map_err(|e| {
                let why = format!("publish: {e}");
                self.broken(&why);
                PublishError::Unavailable(why)
            })
    }

    /// The second half: the broker's answer.
    pub async fn confirmed(
        &self,
        queue: &str,
        confirm: lapin::PublisherConfirm,
    ) -> Result<(), PublishError> {
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                Err(PublishError::Unavailable(format!(
                    "the broker returned the message ({} {}): queue `{queue}` does not exist",
                    returned.reply_code, returned.reply_text
                )))
            }
            // A quorum queue at its bound (`reject-publish`) nacks.
            Ok(Ok(Confirmation::Nack(None))) => Err(PublishError::Full(queue.to_owned())),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Unavailable(
                "publisher confirms are not enabled".into(),
            )),
            Ok(Err(e)) => {
                let why = format!("waiting for the publisher confirm: {e}");
                self.broken(&why);
                Err(PublishError::Unavailable(why))
            }
            Err(_) => {
                let why = format!("no publisher confirm within {CONFIRM_TIMEOUT:?}");
                self.broken(&why);
                Err(PublishError::Unavailable(why))
            }
        }
    }
}

/// Declares a durable queue with `args`; says which argument to fix when
/// the broker has it with other ones.
pub async fn declare_queue(
    channel: &Channel,
    name: &str,
    args: lapin::types::FieldTable,
) -> Result<lapin::Queue, String> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(short(name), options, args)
        .await
        .map_err(|e| {
            format!(
                "cannot declare queue `{name}`: {e}; if it exists with other arguments (another --max-queue or --partitions, or not a quorum queue), give every process the same settings or delete the queue"
            )
        })
}

/// Closes a channel, without waiting long for the broker's answer (a
/// connection that just broke may never bring it).
pub async fn close_channel(channel: &Channel, why: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, short(why))).await;
}

/// Persistent JSON with an id.
pub fn properties(message_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(short("application/json"))
        .with_message_id(short(message_id))
}
