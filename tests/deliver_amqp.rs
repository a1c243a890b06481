//! AMQP deliveries against the real RabbitMQ broker, end to end (docs/ARCHITECTURE.md,
//! docs/api.md `/api/v1/outbox`, docs/consuming.md): the message's properties, headers and
//! body in both formats, and the publisher's metrics; an unroutable
//! delivery that waits until a queue is bound; an exchange of the wrong
//! type that does not stop other deliveries; a broker outage (through a
//! proxy the test cuts), before or in the middle of a burst, during which
//! runs complete and deliveries wait, then all go out; and `kill -9` under
//! load, after which every acknowledged webhook's delivery arrives.
//!
//! Layout: this file holds the daemon's API and the flows; `broker.rs`
//! the test's own connection to the broker (and whether there is one),
//! `proxy.rs` the TCP proxy, and the tests are in `format.rs`,
//! `routing.rs`, `outage.rs` and `kill_loop.rs`.
//!
//! Every test first looks for the broker (127.0.0.1:5672, or
//! `WEIR_TEST_AMQP_URL`). Without one it prints a notice and passes, unless
//! `CI=true`, where it fails. Each test uses exchanges and queues with
//! names of its own and deletes them at its end; it never stops the broker.
//! Duplicates (at-least-once) are allowed and printed, never failed on.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "deliver_amqp/broker.rs"]
mod broker;
#[path = "deliver_amqp/format.rs"]
mod format;
#[path = "deliver_amqp/kill_loop.rs"]
mod kill_loop;
#[path = "deliver_amqp/outage.rs"]
mod outage;
#[path = "deliver_amqp/proxy.rs"]
mod proxy;
#[path = "deliver_amqp/routing.rs"]
mod routing;

use std::time::Duration;

use serde_json::Value;
use weir_testkit::{Api, Daemon};

/// How long a run, or a delivery on a connected broker, may take (a debug
/// build on a loaded machine).
const TIMEOUT: Duration = Duration::from_secs(20);

/// The flow every test uses: a webhook, a `map` that shapes the body, and
/// a `deliver` to `exchange` with `routing_key` (a template) in `format`.
fn deliver_flow(id: &str, exchange: &str, routing_key: &str, format: &str) -> String {
    format!(
        r#"id: {id}
triggers:
  - id: hook
    type: webhook
nodes:
  - id: shape
    type: map
    mapping:
      email: event.body.email.to_lower()
      n: event.body.n
      kind: '"contact"'
    next: publish
  - id: publish
    type: deliver
    target: amqp
    exchange: {exchange}
    routing_key: {routing_key}
    format: {format}
    payload: nodes.shape
"#
    )
}

/// The routing key most flows use, and what it becomes for a webhook.
const ROUTING_TEMPLATE: &str = "contact.${event.type}";
const ROUTING_KEY: &str = "contact.webhook";

/// Writes [`deliver_flow`] with [`ROUTING_TEMPLATE`] into the daemon's
/// folder `dir/flows` (before [`Daemon::start`], which creates it too).
fn write_deliver_flow(dir: &std::path::Path, id: &str, exchange: &str, format: &str) {
    write_flow_with_key(dir, id, exchange, ROUTING_TEMPLATE, format);
}

/// [`write_deliver_flow`] with another routing key.
fn write_flow_with_key(
    dir: &std::path::Path,
    id: &str,
    exchange: &str,
    routing_key: &str,
    format: &str,
) {
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    weir_testkit::write_flow(
        &flows,
        &format!("{id}.yaml"),
        &deliver_flow(id, exchange, routing_key, format),
    );
}

/// Starts `weir serve --amqp URL` in `dir`.
fn start_daemon(dir: &std::path::Path, label: &str, amqp_url: &str) -> Daemon {
    Daemon::start(dir, label, &["--amqp", amqp_url], &[])
}

/// A webhook's 202: the run and the event it started.
#[derive(Clone, Debug)]
struct Accepted {
    run_id: String,
    event_id: String,
}

/// The calls these tests make, on the shared API client.
trait AmqpApi {
    /// A webhook that must be accepted.
    fn send_hook(&self, flow: &str, body: &Value) -> Accepted;
    /// The `amqp` entry of `GET /api/v1/outbox`.
    fn amqp_outbox(&self) -> Value;
    fn pending(&self) -> u64;
    /// Polls a run until it finished; it must have succeeded.
    fn wait_succeeded(&self, run_id: &str) -> Value;
}

impl AmqpApi for Api {
    fn send_hook(&self, flow: &str, body: &Value) -> Accepted {
        let (run_id, event_id) = self.accepted(flow, body);
        Accepted { run_id, event_id }
    }

    fn amqp_outbox(&self) -> Value {
        self.outbox_target("amqp")
    }

    fn pending(&self) -> u64 {
        self.amqp_outbox()["pending"].as_u64().unwrap()
    }

    fn wait_succeeded(&self, run_id: &str) -> Value {
        let run = self.wait_finished(run_id);
        assert_eq!(run["status"], "succeeded", "{run:#}");
        run
    }
}

fn accepted(answer: &Value) -> Accepted {
    let field = |k: &str| {
        answer[k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k} in the 202: {answer}"))
            .to_owned()
    };
    Accepted {
        run_id: field("run_id"),
        event_id: field("event_id"),
    }
}
