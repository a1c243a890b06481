//! The AMQP target: one connection and one channel with publisher confirms,
//! kept open by a task that reconnects with exponential backoff and jitter.
//! lapin does not reconnect by itself; a publish in flight when the
//! connection drops fails, and the outbox sends it again (same
//! `message_id`) once the connection is back.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Notify;
use tracing::{info, warn};
use weir_nodes::backoff::Backoff;
use weir_storage::{DeliveryRecord, DeliveryTarget};

use super::{Failure, message};

/// The waits between connection attempts.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(400), Duration::from_secs(30));
/// How long a publish may wait for its confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting (TCP, the AMQP handshake, opening channels and
/// declaring) may take: a broker behind a cut network can accept a
/// connection and never answer (the cluster's broker link too).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing a broken connection may take: lapin's close waits for
/// the broker's answer, which a dead connection may never bring.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// `connect` within [`CONNECT_TIMEOUT`].
pub(crate) async fn within_connect_timeout<T>(
    connect: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from the broker within {CONNECT_TIMEOUT:?}"
            ))
        })
}

/// A connection to `url` and a channel on it in confirm mode.
pub(crate) async fn open_confirming(url: &str) -> Result<(Connection, Channel), String> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("open a channel: {e}"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| format!("enable publisher confirms: {e}"))?;
    Ok((connection, channel))
}

/// Closes a connection that broke, without waiting long on it.
pub(crate) async fn close_broken(connection: &Connection) {
    let close = connection.close(200, ShortString::from("weir reconnects"));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}

struct Link {
    connection: Connection,
    /// Publishes, with confirms.
    channel: Channel,
    /// Declares exchanges. A refused declaration closes its channel; on a
    /// channel of its own, that does not interrupt publishing.
    declarer: tokio::sync::Mutex<Option<Channel>>,
    /// Exchanges declared (or found) on this connection.
    declared: Mutex<HashSet<String>>,
}

pub struct Amqp {
    url: String,
    link: Mutex<Option<Arc<Link>>>,
    connected: AtomicBool,
    /// Signalled when the link breaks (the keeper reconnects) or comes up.
    changed: Notify,
    last_error: Mutex<Option<String>>,
}

/// The URL without its password, for logs (the cluster's broker link too).
pub(crate) fn redacted(url: &str) -> String {
    // amqp://user:password@host → amqp://user:***@host
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Amqp {
    /// Starts the task that keeps a connection to `url` open.
    pub fn start(url: String, on_change: Arc<Notify>) -> Arc<Self> {
        let amqp = Arc::new(Self {
            url,
            link: Mutex::new(None),
            connected: AtomicBool::new(false),
            changed: Notify::new(),
            last_error: Mutex::new(None),
        });
        tokio::spawn(amqp.clone().keep(on_change));
        amqp
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
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

    /// Connects, and connects again whenever the link breaks.
    async fn keep(self: Arc<Self>, on_change: Arc<Notify>) {
        let mut failures = 0u32;
        loop {
            match within_connect_timeout(self.connect()).await {
                Ok(link) => {
                    failures = 0;
                    let link = Arc::new(link);
                    *self.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
                    self.connected.store(true, Ordering::Relaxed);
                    crate::metrics::broker_connected(true);
                    info!(broker = %redacted(&self.url), "connected to the AMQP broker");
                    on_change.notify_one();
                    // Until a publish or a heartbeat finds it broken.
                    while link.connection.status().connected() && link.channel.status().connected()
                    {
                        tokio::select! {
                            () = self.changed.notified() => {}
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    self.connected.store(false, Ordering::Relaxed);
                    crate::metrics::broker_connected(false);
                    *self.link.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    close_broken(&link.connection).await;
                    warn!(broker = %redacted(&self.url), "the AMQP connection broke; reconnecting");
                    on_change.notify_one();
                }
                Err(e) => {
                    failures += 1;
                    self.set_error(e.clone());
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(broker = %redacted(&self.url), attempts = failures, error = %e, "cannot connect to the AMQP broker; deliveries wait in the outbox");
                    }
                    let wait = RECONNECT.delay(failures, rand::random::<f64>());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn connect(&self) -> Result<Link, String> {
        let (connection, channel) = open_confirming(&self.url).await?;
        Ok(Link {
            connection,
            channel,
            declarer: tokio::sync::Mutex::new(None),
            declared: Mutex::new(HashSet::new()),
        })
    }

    /// The link broke: the keeper reconnects.
    fn broken(&self, link: &Link, why: &str) {
        self.set_error(why.to_owned());
        self.connected.store(false, Ordering::Relaxed);
        let mut current = self.link.lock().unwrap_or_else(|e| e.into_inner());
        if current
            .as_ref()
            .is_some_and(|l| std::ptr::eq(l.as_ref(), link))
        {
            *current = None;
        }
        drop(current);
        self.changed.notify_one();
    }

    /// Publishes one delivery and waits for the broker's confirm.
    pub async fn publish(&self, d: &DeliveryRecord) -> Result<(), Failure> {
        let DeliveryTarget::Amqp {
            exchange,
            routing_key,
            ..
        } = &d.target
        else {
            return Err(Failure::dead("not an AMQP delivery"));
        };
        let Some(link) = self.link.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Err(Failure::retry(
                self.last_error()
                    .unwrap_or_else(|| "not connected to the AMQP broker".into()),
            ));
        };
        let declared = link
            .declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(exchange);
        if !declared && !exchange.is_empty() {
            declare(&link, exchange).await?;
            link.declared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(exchange.clone());
        }
        let (body, content_type) = message::body(d);
        let started = Instant::now();
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let publish = link
            .channel
            .basic_publish(
                ShortString::from(exchange.as_str()),
                ShortString::from(routing_key.as_str()),
                options,
                &body,
                message::properties(d, content_type),
            )
            .await;
        let confirm = match publish {
            Ok(confirm) => confirm,
            Err(e) => {
                let message = format!("publish: {e}");
                self.broken(&link, &message);
                return Err(Failure::retry(message));
            }
        };
        crate::metrics::delivery_published("amqp");
        let confirmation = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let message = format!("waiting for the publisher confirm: {e}");
                self.broken(&link, &message);
                return Err(Failure::retry(message));
            }
            Err(_) => {
                let message = format!("no publisher confirm within {CONFIRM_TIMEOUT:?}");
                self.broken(&link, &message);
                return Err(Failure::retry(message));
            }
        };
        crate::metrics::confirm_latency(started.elapsed().as_secs_f64());
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(Failure::unroutable(format!(
                    "unroutable: the broker returned it ({} {}); no queue is bound to exchange `{exchange}` with routing key `{routing_key}`",
                    returned.reply_code, returned.reply_text
                )))
            }
            Confirmation::Nack(None) => {
                Err(Failure::retry("the broker refused the message (nack)"))
            }
            Confirmation::NotRequested => Err(Failure::retry("publisher confirms are not enabled")),
        }
    }
}

/// Declares `exchange` as a durable topic exchange (a no-op if it exists as
/// one), on the link's declaring channel.
async fn declare(link: &Link, exchange: &str) -> Result<(), Failure> {
    let mut declarer = link.declarer.lock().await;
    let channel = match declarer.as_ref().filter(|c| c.status().connected()) {
        Some(channel) => channel.clone(),
        None => {
            let channel =
                link.connection.create_channel().await.map_err(|e| {
                    Failure::retry(format!("open a channel to declare exchanges: {e}"))
                })?;
            *declarer = Some(channel.clone());
            channel
        }
    };
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let result = channel
        .exchange_declare(
            ShortString::from(exchange),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await;
    result.map_err(|e| {
        *declarer = None;
        let message = format!(
            "cannot declare exchange `{exchange}` as a durable topic exchange: {e}; if it exists with another type or durability, delete it or deliver to another exchange"
        );
        // The broker refused it (another type, no access): trying again
        // helps only once someone changes the broker.
        match e.is_amqp_soft_error() {
            true => Failure::refused(message),
            false => Failure::retry(message),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redacted("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redacted("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
    }
}
