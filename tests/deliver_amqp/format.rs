//! What a delivery looks like on the wire (docs/consuming.md), in both formats, and
//! the publisher's metrics.

use std::time::{SystemTime, UNIX_EPOCH};

use lapin::ExchangeKind;
use serde_json::{Value, json};

use crate::broker::{Broker, Got};
use crate::{
    Accepted, AmqpApi, Api, ROUTING_KEY, TIMEOUT, start_daemon, write_deliver_flow,
    write_flow_with_key,
};
use weir_testkit::wait_until;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The properties and headers every delivery carries, whatever its format.
fn assert_common_properties(got: &Got, flow: &str, accepted: &Accepted, sent_s: u64) {
    let p = &got.properties;
    let text = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.to_string());
    let message_id = format!("{}:publish", accepted.run_id);
    assert_eq!(got.routing_key, ROUTING_KEY);
    assert_eq!(p.delivery_mode(), &Some(2), "persistent: {p:?}");
    assert_eq!(text(p.message_id()), Some(message_id), "{p:?}");
    assert_eq!(text(p.app_id()).as_deref(), Some("weir"), "{p:?}");
    assert_eq!(text(p.kind()).as_deref(), Some(ROUTING_KEY), "{p:?}");
    let timestamp = p
        .timestamp()
        .unwrap_or_else(|| panic!("no timestamp: {p:?}"));
    assert!(
        (sent_s.saturating_sub(1)..=now_s() + 1).contains(&timestamp),
        "timestamp {timestamp} is not the time of the webhook ({sent_s}): {p:?}"
    );
    for (name, value) in [
        ("weir-tenant", "default"),
        ("weir-flow", flow),
        ("weir-run", &accepted.run_id),
        ("weir-node", "publish"),
        ("weir-event", &accepted.event_id),
    ] {
        assert_eq!(
            got.header(name).as_deref(),
            Some(value),
            "header {name}: {p:?}"
        );
    }
}

/// docs/consuming.md, format `payload`: persistent, `application/json`, the
/// idempotency key as `message_id`, timestamp, `app_id`, `type`, the five
/// `weir-*` headers, the payload as the body; and the exchange weir
/// declares is a durable topic exchange.
#[test]
fn a_delivery_carries_the_documented_properties_headers_and_body() {
    let Some(broker) = Broker::connect_or_skip("format") else {
        return;
    };
    let exchange = broker.unique("format");
    let dir = tempfile::tempdir().unwrap();
    write_deliver_flow(dir.path(), "contacts", &exchange, "payload");
    // A flow whose messages nobody binds: weir declares the exchange for
    // it, so that the test can check how before binding its queue.
    write_flow_with_key(dir.path(), "warmup", &exchange, "warmup", "payload");
    let daemon = start_daemon(dir.path(), "daemon", &broker.url.url());
    let api = Api::new(&daemon);

    let warmup = api.send_hook("warmup", &json!({"email": "W@x.org", "n": 0}));
    api.wait_succeeded(&warmup.run_id);
    wait_until("weir declares the exchange", TIMEOUT, || {
        broker.exchange_exists(&exchange)
    });
    // Declaring it again as a durable topic exchange is refused (406) if
    // it exists with another type or durability.
    broker
        .declare_exchange(&exchange, ExchangeKind::Topic)
        .unwrap_or_else(|e| panic!("weir's exchange is not a durable topic exchange: {e}"));
    let inbox = broker.bind_and_consume(&exchange, "contact.#");

    let sent_s = now_s();
    let accepted = api.send_hook("contacts", &json!({"email": "Ada@Example.com", "n": 1}));
    let run = api.wait_succeeded(&accepted.run_id);
    let got = inbox.wait_for(1, TIMEOUT).remove(0);

    assert_common_properties(&got, "contacts", &accepted, sent_s);
    let content_type = got
        .properties
        .content_type()
        .as_ref()
        .map(|s| s.to_string());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(
        got.json(),
        json!({"email": "ada@example.com", "n": 1, "kind": "contact"})
    );
    let publish = run["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"] == "publish"))
        .unwrap_or_else(|| panic!("no publish node: {run:#}"));
    assert_eq!(publish["output"]["delivery_id"], got.message_id().as_str());
    assert_eq!(inbox.len(), 1, "one webhook, one message");
}

/// docs/consuming.md, `format: cloudevents`: a CloudEvents 1.0 structured envelope
/// whose `id` is the `message_id`, with the same properties and headers.
#[test]
fn the_cloudevents_format_wraps_the_payload_in_a_structured_envelope() {
    let Some(broker) = Broker::connect_or_skip("cloudevents") else {
        return;
    };
    let exchange = broker.unique("cloudevents");
    // A consumer that starts first declares the exchange as weir would.
    broker
        .declare_exchange(&exchange, ExchangeKind::Topic)
        .unwrap();
    let inbox = broker.bind_and_consume(&exchange, "#");
    let dir = tempfile::tempdir().unwrap();
    write_deliver_flow(dir.path(), "contacts-ce", &exchange, "cloudevents");
    let daemon = start_daemon(dir.path(), "daemon", &broker.url.url());
    let api = Api::new(&daemon);

    let sent_s = now_s();
    let accepted = api.send_hook(
        "contacts-ce",
        &json!({"email": "Grace@Example.com", "n": 2}),
    );
    let got = inbox.wait_for(1, TIMEOUT).remove(0);

    assert_common_properties(&got, "contacts-ce", &accepted, sent_s);
    let content_type = got
        .properties
        .content_type()
        .as_ref()
        .map(|s| s.to_string());
    assert_eq!(
        content_type.as_deref(),
        Some("application/cloudevents+json")
    );
    let envelope = got.json();
    assert_eq!(envelope["specversion"], "1.0", "{envelope:#}");
    assert_eq!(envelope["id"], got.message_id().as_str(), "{envelope:#}");
    assert_eq!(
        envelope["source"], "weir/default/contacts-ce",
        "{envelope:#}"
    );
    assert_eq!(envelope["type"], ROUTING_KEY, "{envelope:#}");
    assert_eq!(
        envelope["data"],
        json!({"email": "grace@example.com", "n": 2, "kind": "contact"}),
        "{envelope:#}"
    );
}

/// The value of the metric line that starts with `series` (name and
/// labels as Prometheus prints them).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// The publisher's metrics: publishes, confirms, confirm latency, the
/// connection, and the pending gauge.
#[test]
fn publisher_metrics_count_publishes_confirms_and_the_connection() {
    let Some(broker) = Broker::connect_or_skip("metrics") else {
        return;
    };
    let exchange = broker.unique("metrics");
    broker
        .declare_exchange(&exchange, ExchangeKind::Topic)
        .unwrap();
    let inbox = broker.bind_and_consume(&exchange, "#");
    let dir = tempfile::tempdir().unwrap();
    write_deliver_flow(dir.path(), "counted", &exchange, "payload");
    let daemon = start_daemon(dir.path(), "daemon", &broker.url.url());
    let api = Api::new(&daemon);

    for n in 0..3 {
        api.send_hook("counted", &json!({"email": "m@x.org", "n": n}));
    }
    inbox.wait_for(3, TIMEOUT);
    let mut text = String::new();
    wait_until("the metrics count 3 confirms", TIMEOUT, || {
        text = api.metrics();
        metric(&text, r#"weir_outbox_confirmed_total{target="amqp"}"#) == Some(3.0)
    });
    let value = |series: &str| {
        metric(&text, series).unwrap_or_else(|| panic!("no `{series}` in /metrics:\n{text}"))
    };
    assert_eq!(value("weir_amqp_connected"), 1.0);
    assert_eq!(value(r#"weir_outbox_published_total{target="amqp"}"#), 3.0);
    assert_eq!(value("weir_outbox_confirm_seconds_count"), 3.0);
    assert_eq!(value(r#"weir_outbox_pending{target="amqp"}"#), 0.0);
    assert_eq!(
        value(r#"weir_outbox_oldest_pending_seconds{target="amqp"}"#),
        0.0
    );
    let outbox = api.amqp_outbox();
    assert_eq!(outbox["connected"], Value::Bool(true), "{outbox}");
    assert_eq!(outbox["pending"], 0, "{outbox}");
}

/// Notifications go through the same outbox: a failed run is a
/// `run.failed` message on `--notify-exchange`, its type as routing key.
#[test]
fn a_failed_run_is_notified_on_the_notify_exchange() {
    let Some(broker) = Broker::connect_or_skip("notify") else {
        return;
    };
    let exchange = broker.unique("notify");
    broker
        .declare_exchange(&exchange, ExchangeKind::Topic)
        .unwrap_or_else(|e| panic!("declare {exchange}: {e}"));
    let inbox = broker.bind_and_consume(&exchange, "run.#");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    weir_testkit::write_flow(
        &dir.path().join("flows"),
        "broken.yaml",
        "id: broken\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: stop, type: fail, message: '\"no stock\"'}\n",
    );
    let daemon = weir_testkit::Daemon::start(
        dir.path(),
        "daemon",
        &["--amqp", &broker.url.url(), "--notify-exchange", &exchange],
        &[],
    );
    let api = Api::new(&daemon);
    let started = api.post("/api/v1/flows/broken/runs", &json!({}));
    assert_eq!(started.status, 202, "{started}");
    let run = started.body["run_id"].as_str().unwrap().to_owned();
    let got = inbox.wait_for(1, TIMEOUT).remove(0);
    assert_eq!(got.routing_key, "run.failed");
    let body = got.json();
    assert_eq!(body["type"], "run.failed");
    assert_eq!(body["tenant"], "default");
    assert_eq!(body["data"]["run"]["id"], run.as_str());
    assert!(
        body["data"]["run"]["error"]
            .as_str()
            .unwrap()
            .contains("no stock"),
        "{body}"
    );
    assert_eq!(got.header("weir-run").as_deref(), Some(run.as_str()));
}
