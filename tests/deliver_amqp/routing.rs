//! Deliveries the broker cannot route: no queue bound yet (the message is
//! returned and kept), and an exchange of another type than weir's.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use lapin::ExchangeKind;
use serde_json::json;

use crate::broker::Broker;
use crate::{AmqpApi, Api, TIMEOUT, start_daemon, write_deliver_flow};
use weir_testkit::wait_until;

/// docs/ARCHITECTURE.md with `mandatory`: a message returned because no queue is
/// bound stays pending, marked unroutable, while its run has succeeded;
/// once a queue is bound, a retry brings it there and the outbox empties.
/// The exchange weir declared is a durable topic exchange.
#[test]
fn an_unroutable_delivery_waits_until_a_queue_is_bound() {
    let Some(broker) = Broker::connect_or_skip("unroutable") else {
        return;
    };
    let exchange = broker.unique("unroutable");
    let dir = tempfile::tempdir().unwrap();
    write_deliver_flow(dir.path(), "unbound", &exchange, "payload");
    let daemon = start_daemon(dir.path(), "daemon", &broker.url.url());
    let api = Api::new(&daemon);

    let accepted = api.send_hook("unbound", &json!({"email": "u@x.org", "n": 7}));
    api.wait_succeeded(&accepted.run_id);
    let mut outbox = serde_json::Value::Null;
    wait_until("the outbox shows the delivery unroutable", TIMEOUT, || {
        outbox = api.amqp_outbox();
        outbox["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("unroutable"))
    });
    assert_eq!(outbox["pending"], 1, "{outbox:#}");
    assert_eq!(outbox["dead"], 0, "{outbox:#}");
    assert_eq!(outbox["connected"], true, "{outbox:#}");
    broker
        .declare_exchange(&exchange, ExchangeKind::Topic)
        .unwrap_or_else(|e| panic!("weir's exchange is not a durable topic exchange: {e}"));

    let bound = Instant::now();
    let inbox = broker.bind_and_consume(&exchange, "#");
    let got = inbox.wait_for(1, TIMEOUT).remove(0);
    eprintln!(
        "the unroutable delivery arrived {:?} after the queue was bound",
        got.at - bound
    );
    assert_eq!(got.message_id(), format!("{}:publish", accepted.run_id));
    assert_eq!(
        got.json(),
        json!({"email": "u@x.org", "n": 7, "kind": "contact"})
    );
    wait_until("the outbox is empty", TIMEOUT, || api.pending() == 0);
    assert_eq!(inbox.len(), 1, "{:#?}", inbox.messages());
    // lapin logs each returned message whole (its payload included): not
    // in weir's log.
    let log = daemon.weir.stderr();
    assert!(!log.contains("Server returned us a message"), "{log}");
}

/// Two exchanges of the test's own: `{prefix}fanout` (a fanout exchange,
/// which weir cannot declare as its topic exchange) and `{prefix}good` (a
/// topic exchange with a queue bound to everything, consumed).
fn fanout_and_good(broker: &Broker, prefix: &str) -> (String, String, crate::broker::Inbox) {
    let fanout = broker.unique(&format!("{prefix}fanout"));
    let good = broker.unique(&format!("{prefix}good"));
    broker
        .declare_exchange(&fanout, ExchangeKind::Fanout)
        .unwrap();
    broker.declare_exchange(&good, ExchangeKind::Topic).unwrap();
    let inbox = broker.bind_and_consume(&good, "#");
    (fanout, good, inbox)
}

/// An exchange that exists as `fanout` cannot be declared as weir's topic
/// exchange: the delivery waits with an error naming the exchange, the
/// daemon keeps running, and deliveries to other exchanges go out; after
/// its attempts the refused delivery is dead.
#[test]
fn an_exchange_of_another_type_holds_only_its_own_deliveries() {
    let Some(broker) = Broker::connect_or_skip("exchange type") else {
        return;
    };
    let (fanout, good, inbox) = fanout_and_good(&broker, "");
    let dir = tempfile::tempdir().unwrap();
    write_deliver_flow(dir.path(), "to-fanout", &fanout, "payload");
    write_deliver_flow(dir.path(), "to-good", &good, "payload");
    let mut daemon = start_daemon(dir.path(), "daemon", &broker.url.url());
    let api = Api::new(&daemon);

    let stuck = api.send_hook("to-fanout", &json!({"email": "f@x.org", "n": 1}));
    api.wait_succeeded(&stuck.run_id);
    let mut outbox = serde_json::Value::Null;
    wait_until(
        "the outbox names the exchange in its error",
        TIMEOUT,
        || {
            outbox = api.amqp_outbox();
            outbox["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(&fanout))
        },
    );
    eprintln!("last_error for a fanout exchange: {}", outbox["last_error"]);
    assert_eq!(outbox["pending"], 1, "{outbox:#}");

    let mut expected = Vec::new();
    for n in 0..3 {
        let accepted = api.send_hook("to-good", &json!({"email": "g@x.org", "n": n}));
        expected.push(format!("{}:publish", accepted.run_id));
    }
    wait_until(
        "the deliveries to the good exchange arrive",
        TIMEOUT,
        || {
            let ids: Vec<String> = inbox.messages().iter().map(|g| g.message_id()).collect();
            expected.iter().all(|id| ids.contains(id))
        },
    );
    daemon.weir.assert_running();
    api.get_ok("/healthz");
    // The broker refuses it as it is: after its attempts it is dead, with
    // its error, and out of the way.
    // (A good delivery can reach the consumer before weir has its
    // confirm: pending drops to 0 once the confirms are in.)
    wait_until(
        "the fanout delivery is dead and nothing is pending",
        TIMEOUT,
        || {
            outbox = api.amqp_outbox();
            outbox["dead"] == 1 && outbox["pending"] == 0
        },
    );
    let view = api.outbox();
    let dead = &view["dead"][0];
    assert_eq!(dead["id"], format!("{}:publish", stuck.run_id), "{view:#}");
    assert_eq!(dead["attempts"], 5, "{view:#}");
    assert!(
        dead["last_error"].as_str().unwrap().contains(&fanout),
        "{view:#}"
    );
    // weir left the exchange as it was.
    broker
        .declare_exchange(&fanout, ExchangeKind::Fanout)
        .unwrap_or_else(|e| panic!("the fanout exchange changed: {e}"));
    let duplicates = inbox.len() - expected.len();
    eprintln!("deliveries to the good exchange: {duplicates} duplicate(s)");
}

/// Deliveries stuck on a mistyped exchange.
const STUCK: usize = 100;
/// Deliveries to a good exchange sent after them.
const GOOD: usize = 100;

/// Many deliveries to a mistyped exchange must not starve the others.
/// A refused declaration closes the channel it was made on; weir declares
/// on a channel of its own, so publishing goes on. (Declaring on the
/// publishing channel once meant a reconnect per refusal: with STUCK such
/// deliveries the good ones trickled in over tens of seconds.)
#[test]
fn many_deliveries_to_a_mistyped_exchange_do_not_starve_the_others() {
    let Some(broker) = Broker::connect_or_skip("mistyped exchange storm") else {
        return;
    };
    let (fanout, good, inbox) = fanout_and_good(&broker, "storm-");
    let dir = tempfile::tempdir().unwrap();
    write_deliver_flow(dir.path(), "to-fanout", &fanout, "payload");
    write_deliver_flow(dir.path(), "to-good", &good, "payload");
    let daemon = start_daemon(dir.path(), "daemon", &broker.url.url());
    let api = Api::new(&daemon);

    for n in 0..STUCK {
        api.send_hook("to-fanout", &json!({"email": "f@x.org", "n": n}));
    }
    wait_until("the stuck deliveries are refused", TIMEOUT, || {
        api.amqp_outbox()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&fanout))
    });
    let connects_before = daemon
        .weir
        .stderr()
        .matches("connected to the AMQP broker")
        .count();
    let sent = Instant::now();
    let expected: HashSet<String> = (0..GOOD)
        .map(|n| {
            let accepted = api.send_hook("to-good", &json!({"email": "g@x.org", "n": n}));
            format!("{}:publish", accepted.run_id)
        })
        .collect();
    let all_arrived = || {
        let ids: HashSet<String> = inbox.messages().iter().map(|g| g.message_id()).collect();
        expected.is_subset(&ids)
    };
    while !all_arrived() && sent.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = sent.elapsed();
    let reconnects = daemon
        .weir
        .stderr()
        .matches("connected to the AMQP broker")
        .count()
        - connects_before;
    eprintln!(
        "{GOOD} good deliveries next to {STUCK} stuck ones: all arrived: {}, after {took:?}, {reconnects} reconnects, {} duplicate(s)",
        all_arrived(),
        inbox.len().saturating_sub(GOOD)
    );
    assert!(all_arrived(), "good deliveries were lost");
    assert!(
        took < Duration::from_secs(3) && reconnects <= 2,
        "good deliveries took {took:?} and weir reconnected {reconnects} times"
    );
}

/// A run whose first delivery the broker refuses (its exchange has
/// another type) and whose second goes to a good exchange: the second
/// waits behind the first (a run's deliveries leave in order) only until
/// the first is dead after its attempts; then it goes out.
#[test]
fn a_refused_delivery_goes_dead_and_its_runs_next_delivery_goes_out() {
    let Some(broker) = Broker::connect_or_skip("refused delivery in a lane") else {
        return;
    };
    let (fanout, good, inbox) = fanout_and_good(&broker, "lane-");
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    weir_testkit::write_flow(
        &flows,
        "two.yaml",
        &format!(
            "id: two\ntriggers: [{{id: hook, type: webhook}}]\nnodes:\n  - {{id: first, type: deliver, target: amqp, exchange: {fanout}, routing_key: a, payload: event.body, next: second}}\n  - {{id: second, type: deliver, target: amqp, exchange: {good}, routing_key: b, payload: event.body}}\n"
        ),
    );
    let daemon = start_daemon(dir.path(), "daemon", &broker.url.url());
    let api = Api::new(&daemon);
    let accepted = api.send_hook("two", &json!({"email": "l@x.org", "n": 1}));
    api.wait_succeeded(&accepted.run_id);
    let got = inbox.wait_for(1, Duration::from_secs(60)).remove(0);
    assert_eq!(got.message_id(), format!("{}:second", accepted.run_id));
    let view = api.outbox();
    assert_eq!(
        view["dead"][0]["id"],
        format!("{}:first", accepted.run_id),
        "{view:#}"
    );
    assert_eq!(api.pending(), 0);
}
