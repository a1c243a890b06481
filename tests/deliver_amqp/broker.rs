//! The RabbitMQ broker as the tests see it: whether it is there at all
//! ([`Broker::connect_or_skip`]), exchanges and queues with unique names
//! that are deleted when the test ends, and [`Inbox`]: a consumer that
//! keeps every message it received.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

/// The broker when `WEIR_TEST_AMQP_URL` is not set.
const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// How long a broker operation of the test itself may take.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// An AMQP URL cut around its `host:port`, so that the same credentials and
/// virtual host can be used through the test's proxy.
#[derive(Clone, Debug)]
pub struct BrokerUrl {
    /// `amqp://user:password@`
    prefix: String,
    /// `host:port` (the port made explicit)
    pub host_port: String,
    /// `/vhost?options`
    suffix: String,
}

impl BrokerUrl {
    fn parse(url: &str) -> Self {
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let rest = &url[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let host_start = authority.rfind('@').map_or(0, |i| i + 1);
        let host = &authority[host_start..];
        let host_port = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:5672")
        };
        Self {
            prefix: url[..scheme_end + host_start].to_owned(),
            host_port,
            suffix: rest[authority_end..].to_owned(),
        }
    }

    /// The full URL.
    pub fn url(&self) -> String {
        self.via(&self.host_port)
    }

    /// The same URL with another `host:port` (a proxy's).
    pub fn via(&self, host_port: &str) -> String {
        format!("{}{host_port}{}", self.prefix, self.suffix)
    }

    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host_port.to_socket_addrs().ok()?.next()
    }
}

/// The broker the tests use: `WEIR_TEST_AMQP_URL`, or guest on
/// 127.0.0.1:5672. `None` (after a loud notice on stderr) when it does not
/// answer; with `CI=true` a missing broker fails the test instead.
pub fn available(test: &str) -> Option<BrokerUrl> {
    let url = std::env::var("WEIR_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let broker = BrokerUrl::parse(&url);
    let reached = match broker.socket_addr() {
        Some(addr) => TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map(drop)
            .map_err(|e| e.to_string()),
        None => Err("the address does not resolve".to_owned()),
    };
    let Err(why) = reached else {
        return Some(broker);
    };
    let hint = "start it with `rabbitmq-server -detached`, or point WEIR_TEST_AMQP_URL at one";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: no AMQP broker on {} ({why}); {hint}. CI=true, so this fails instead of skipping",
        broker.host_port
    );
    eprintln!(
        "\n==== SKIPPED {test}: no AMQP broker on {} ({why}); {hint} ====\n",
        broker.host_port
    );
    None
}

/// One message a consumer received.
#[derive(Clone, Debug)]
pub struct Got {
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
    /// When the consumer got it.
    pub at: Instant,
}

impl Got {
    pub fn message_id(&self) -> String {
        self.properties
            .message_id()
            .as_ref()
            .map(ShortString::to_string)
            .unwrap_or_default()
    }

    /// A header's value, if it is a string.
    pub fn header(&self, name: &str) -> Option<String> {
        match self.properties.headers().as_ref()?.inner().get(name)? {
            AMQPValue::LongString(s) => Some(s.to_string()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The messages a consumer received so far, in arrival order.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<Got>>>);

impl Inbox {
    pub fn messages(&self) -> Vec<Got> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits (up to `timeout`) for at least `n` messages.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Got> {
        weir_testkit::wait_until(&format!("{n} message(s) arrive"), timeout, || {
            self.len() >= n
        });
        self.messages()
    }
}

/// A connection of the test to the broker, with its own Tokio runtime (the
/// tests are blocking). Exchanges and queues made with [`Broker::unique`]
/// are deleted when it is dropped; drop the daemon first, so that it does
/// not declare them again (locals drop in reverse order: declare the
/// broker before the daemon).
pub struct Broker {
    pub url: BrokerUrl,
    runtime: tokio::runtime::Runtime,
    connection: Connection,
    exchanges: Mutex<Vec<String>>,
    queues: Mutex<Vec<String>>,
}

impl Broker {
    /// Connects to the broker, or answers `None` as [`available`] does.
    pub fn connect_or_skip(test: &str) -> Option<Self> {
        let url = available(test)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-amqp")
            .enable_all()
            .build()
            .expect("start the test's AMQP runtime");
        let connection = runtime
            .block_on(Connection::connect(
                &url.url(),
                ConnectionProperties::default(),
            ))
            .unwrap_or_else(|e| panic!("{test}: connect to the broker at {}: {e}", url.host_port));
        Some(Self {
            url,
            runtime,
            connection,
            exchanges: Mutex::new(Vec::new()),
            queues: Mutex::new(Vec::new()),
        })
    }

    /// Runs `future` on the broker's runtime, at most [`OP_TIMEOUT`].
    pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime
            .block_on(async { tokio::time::timeout(OP_TIMEOUT, future).await })
            .expect("a broker operation timed out")
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// A fresh channel: a refused declaration closes its channel, so each
    /// operation that may be refused gets its own.
    fn channel(&self) -> Channel {
        self.block_on(self.connection.create_channel())
            .expect("open a channel")
    }

    /// A name no other test (or earlier run) uses, deleted at the end as an
    /// exchange and as a queue.
    pub fn unique(&self, what: &str) -> String {
        let name = format!(
            "weir-test.{what}.{}.{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        self.exchanges.lock().unwrap().push(name.clone());
        self.queues.lock().unwrap().push(name.clone());
        name
    }

    /// Declares `exchange` (durable, of `kind`): `Err` if it exists with
    /// other settings.
    pub fn declare_exchange(&self, exchange: &str, kind: ExchangeKind) -> Result<(), lapin::Error> {
        let channel = self.channel();
        let options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let declared = self.block_on(channel.exchange_declare(
            exchange.into(),
            kind,
            options,
            FieldTable::default(),
        ));
        let _ = self.block_on(channel.close(200, "done".into()));
        declared
    }

    /// Whether `exchange` exists (a passive declaration).
    pub fn exchange_exists(&self, exchange: &str) -> bool {
        let channel = self.channel();
        let options = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let found = self.block_on(channel.exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        ));
        let _ = self.block_on(channel.close(200, "done".into()));
        found.is_ok()
    }

    /// Deletes `queue` (one weir declared) when the test ends.
    #[allow(dead_code)] // not every test binary uses it
    pub fn delete_at_end(&self, queue: &str) {
        self.queues.lock().unwrap().push(queue.to_owned());
    }

    /// Declares `queue` (durable) with `args` on a channel of its own:
    /// the broker's answer (a queue that exists with other arguments is
    /// refused, naming the argument that differs).
    #[allow(dead_code)] // not every test binary uses it
    pub fn declare_queue(
        &self,
        queue: &str,
        args: FieldTable,
    ) -> Result<lapin::Queue, lapin::Error> {
        let channel = self.channel();
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let declared = self.block_on(channel.queue_declare(queue.into(), options, args));
        let _ = self.block_on(channel.close(200, "done".into()));
        declared
    }

    /// Publishes `body` to `queue` (the default exchange), confirmed.
    #[allow(dead_code)] // not every test binary uses it
    pub fn publish_to_queue(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        let channel = self.channel();
        self.block_on(channel.confirm_select(lapin::options::ConfirmSelectOptions::default()))
            .expect("confirm mode");
        let confirm = self
            .block_on(channel.basic_publish(
                "".into(),
                queue.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                properties,
            ))
            .unwrap_or_else(|e| panic!("publish to {queue}: {e}"));
        let confirmation = self.block_on(confirm).expect("a confirm");
        assert!(
            confirmation.is_ack(),
            "the broker refused the message: {confirmation:?}"
        );
        let _ = self.block_on(channel.close(200, "done".into()));
    }

    /// Takes one message from `queue` (acked), if it has one.
    #[allow(dead_code)] // not every test binary uses it
    pub fn get_from_queue(&self, queue: &str) -> Option<Got> {
        let channel = self.channel();
        let got = self
            .block_on(channel.basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            ))
            .unwrap_or_else(|e| panic!("get from {queue}: {e}"));
        let _ = self.block_on(channel.close(200, "done".into()));
        got.map(|m| Got {
            routing_key: m.delivery.routing_key.to_string(),
            properties: m.delivery.properties.clone(),
            body: m.delivery.data.clone(),
            at: Instant::now(),
        })
    }

    /// Declares a queue named like the exchange, binds it with `pattern`
    /// and consumes from it. The exchange must exist.
    pub fn bind_and_consume(&self, exchange: &str, pattern: &str) -> Inbox {
        let queue = exchange;
        let channel = self.channel();
        let options = QueueDeclareOptions {
            // Gone with the test's connection even if the test cannot
            // delete it.
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        self.block_on(channel.queue_declare(queue.into(), options, FieldTable::default()))
            .unwrap_or_else(|e| panic!("declare queue {queue}: {e}"));
        self.block_on(channel.queue_bind(
            queue.into(),
            exchange.into(),
            pattern.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ))
        .unwrap_or_else(|e| panic!("bind queue {queue} to {exchange}: {e}"));
        let options = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let mut consumer = self
            .block_on(channel.basic_consume(
                queue.into(),
                "".into(),
                options,
                FieldTable::default(),
            ))
            .unwrap_or_else(|e| panic!("consume from {queue}: {e}"));
        let inbox = Inbox::default();
        let into = inbox.clone();
        self.runtime.spawn(async move {
            // Keeps the channel open as long as the consumer runs.
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                let got = Got {
                    routing_key: delivery.routing_key.to_string(),
                    properties: delivery.properties.clone(),
                    body: delivery.data.clone(),
                    at: Instant::now(),
                };
                into.0.lock().unwrap_or_else(|e| e.into_inner()).push(got);
            }
        });
        inbox
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let exchanges =
            std::mem::take(&mut *self.exchanges.lock().unwrap_or_else(|e| e.into_inner()));
        let queues = std::mem::take(&mut *self.queues.lock().unwrap_or_else(|e| e.into_inner()));
        let connection = &self.connection;
        let cleanup = async {
            // A queue or exchange that was never made is a 404 that closes
            // the channel: one channel per deletion.
            for queue in &queues {
                if let Ok(channel) = connection.create_channel().await {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                    let _ = channel.close(200, "done".into()).await;
                }
            }
            for exchange in &exchanges {
                if let Ok(channel) = connection.create_channel().await {
                    let _ = channel
                        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                    let _ = channel.close(200, "done".into()).await;
                }
            }
            let _ = connection.close(200, "the test is over".into()).await;
        };
        let done = self
            .runtime
            .block_on(async { tokio::time::timeout(OP_TIMEOUT, cleanup).await });
        if done.is_err() {
            eprintln!(
                "could not delete the test's exchanges and queues within {OP_TIMEOUT:?}: {exchanges:?}"
            );
        }
    }
}
