//! A backend consuming weir's events over AMQP.
//!
//! It declares a durable queue, binds it to weir's exchange, and prints each
//! message once: weir delivers at least once (a delivery may be sent again
//! after a crash or a lost confirm, always with the same `message_id`), so a
//! consumer dedupes on `message_id`. This one remembers the ids it saw in
//! memory; a real backend keeps them with the effect, in the same
//! transaction (e.g. a unique column).
//!
//! ```text
//! cargo run --release -p weir-runtime --example consumer -- \
//!     --exchange crm.events --binding 'contact.#' --queue crm-backend
//! ```
//! Options: `--url` (default amqp://guest:guest@127.0.0.1:5672/%2f),
//! `--exchange`, `--binding` (a topic pattern, default `#`), `--queue`,
//! `--count N` (exit after N distinct messages), `--delete` (delete the
//! queue on exit), `--idle-exit SECONDS` (exit
//! when nothing arrived for that long), `--quiet`, and `--latency FIELD`:
//! report the latency from the Unix-microseconds timestamp in the payload's
//! FIELD (set by `examples/loadgen.rs --stamp`) to consumption.

use std::collections::HashSet;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, ExchangeKind};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = arg("--url").unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let exchange = arg("--exchange").unwrap_or_else(|| "crm.events".into());
    let binding = arg("--binding").unwrap_or_else(|| "#".into());
    let queue = arg("--queue").unwrap_or_else(|| format!("{exchange}.consumer"));
    let count: Option<usize> = arg("--count").and_then(|n| n.parse().ok());
    let idle_exit: Option<f64> = arg("--idle-exit").and_then(|n| n.parse().ok());
    let latency_field = arg("--latency");
    let quiet = std::env::args().any(|a| a == "--quiet");
    let delete = std::env::args().any(|a| a == "--delete");

    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    // weir declares its exchanges as durable topic exchanges; declaring the
    // same here is harmless and lets the consumer start first.
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
    let queue_options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), queue_options, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            binding.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel.basic_qos(256, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "weir-example-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    eprintln!("consuming {queue} (bound to {exchange} with {binding})");

    let mut seen = HashSet::new();
    let mut duplicates = 0usize;
    let mut latencies_us: Vec<i64> = Vec::new();
    let mut first: Option<std::time::Instant> = None;
    let mut last = std::time::Instant::now();
    loop {
        let next = match idle_exit {
            Some(secs) => match tokio::time::timeout(
                std::time::Duration::from_secs_f64(secs),
                consumer.next(),
            )
            .await
            {
                Ok(next) => next,
                Err(_) => break,
            },
            None => consumer.next().await,
        };
        let Some(delivery) = next else {
            break;
        };
        let delivery = delivery?;
        first.get_or_insert_with(std::time::Instant::now);
        last = std::time::Instant::now();
        if let Some(field) = &latency_field {
            let body: serde_json::Value =
                serde_json::from_slice(&delivery.data).unwrap_or_default();
            let body = if body.get("specversion").is_some() {
                body["data"].clone()
            } else {
                body
            };
            if let Some(sent) = body.get(field).and_then(serde_json::Value::as_i64) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                latencies_us.push(now - sent);
            }
        }
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        if seen.insert(id.clone()) {
            if !quiet {
                let header = |name: &str| match delivery
                    .properties
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get(name))
                {
                    Some(AMQPValue::LongString(s)) => s.to_string(),
                    _ => String::new(),
                };
                println!(
                    "{id} tenant={} flow={} routing_key={} body={}",
                    header("weir-tenant"),
                    header("weir-flow"),
                    delivery.routing_key,
                    String::from_utf8_lossy(&delivery.data)
                );
            }
        } else {
            duplicates += 1;
        }
        // Acknowledge after the effect (here: printing) is done.
        delivery.ack(BasicAckOptions::default()).await?;
        if count.is_some_and(|n| seen.len() >= n) {
            break;
        }
    }
    if delete {
        channel
            .queue_delete(
                queue.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await?;
    }
    eprintln!(
        "{} distinct messages, {duplicates} duplicates skipped",
        seen.len()
    );
    if let Some(first) = first {
        let secs = (last - first).as_secs_f64().max(1e-3);
        eprintln!("consumed {:.0} messages/s", seen.len() as f64 / secs);
    }
    if !latencies_us.is_empty() {
        latencies_us.sort_unstable();
        let p = |q: f64| {
            latencies_us[((latencies_us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
        };
        eprintln!(
            "webhook sent → message consumed, ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            p(0.5),
            p(0.9),
            p(0.99),
            p(1.0)
        );
    }
    Ok(())
}
