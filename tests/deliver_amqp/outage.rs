//! A broker outage (docs/ARCHITECTURE.md): weir reaches the broker through a proxy the
//! test cuts. While cut, webhooks are acknowledged, runs complete, the
//! deliveries wait and the API shows the backlog; once restored, every
//! delivery goes out and the outbox drains.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use lapin::ExchangeKind;
use serde_json::{Value, json};

use crate::broker::Broker;
use crate::proxy::Proxy;
use crate::{Accepted, AmqpApi, Api, TIMEOUT, start_daemon, write_deliver_flow};
use weir_testkit::wait_until;

/// Webhooks sent while the broker is away.
const DURING: usize = 200;
/// Threads sending them.
const SENDERS: usize = 8;
/// After the proxy is restored: weir's reconnect backoff (up to 30 s with
/// jitter) plus the backlog's delivery.
const RECOVERY: Duration = Duration::from_secs(60);

/// Sends `n` webhooks to `flow` from [`SENDERS`] threads; each must get 202.
fn send_all(api: &Api, flow: &str, n: usize) -> Vec<Accepted> {
    std::thread::scope(|s| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|t| {
                s.spawn(move || {
                    (t..n)
                        .step_by(SENDERS)
                        .map(|i| api.send_hook(flow, &json!({"email": "o@x.org", "n": i})))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|h| h.join().expect("a sender thread panicked"))
            .collect()
    })
}

#[test]
fn deliveries_wait_out_a_broker_outage_and_then_all_go_out() {
    let Some(broker) = Broker::connect_or_skip("outage") else {
        return;
    };
    let exchange = broker.unique("outage");
    broker
        .declare_exchange(&exchange, ExchangeKind::Topic)
        .unwrap();
    // The consumer reaches the broker directly, not through the proxy.
    let inbox = broker.bind_and_consume(&exchange, "#");
    let upstream = broker.url.socket_addr().expect("the broker's address");
    let proxy = Proxy::start(broker.runtime(), upstream);
    let dir = tempfile::tempdir().unwrap();
    write_deliver_flow(dir.path(), "outage", &exchange, "payload");
    let daemon = start_daemon(
        dir.path(),
        "daemon",
        &broker.url.via(&proxy.addr.to_string()),
    );
    let api = Api::new(&daemon);

    // The path through the proxy works.
    let before = api.send_hook("outage", &json!({"email": "o@x.org", "n": -1}));
    inbox.wait_for(1, TIMEOUT);
    assert_eq!(
        inbox.messages()[0].message_id(),
        format!("{}:publish", before.run_id)
    );

    proxy.cut();
    let cut_at = Instant::now();
    wait_until("weir sees the broker gone", TIMEOUT, || {
        api.amqp_outbox()["connected"] == false
    });
    let accepted = send_all(&api, "outage", DURING);
    assert_eq!(accepted.len(), DURING);
    let mut outbox = Value::Null;
    wait_until("every delivery waits in the outbox", TIMEOUT, || {
        outbox = api.amqp_outbox();
        outbox["pending"] == DURING
    });
    eprintln!("outbox during the outage: {outbox}");
    assert_eq!(outbox["connected"], false, "{outbox:#}");
    assert!(
        outbox["oldest_pending_age_s"].as_f64().unwrap() > 0.0,
        "{outbox:#}"
    );
    assert!(outbox["last_error"].is_string(), "{outbox:#}");
    // The runs completed without the broker.
    let succeeded = api.get_ok("/api/v1/runs?flow=outage&status=succeeded&limit=500");
    assert_eq!(
        succeeded["items"].as_array().unwrap().len(),
        DURING + 1,
        "runs complete while the broker is away"
    );
    let metrics = api.metrics();
    for line in [
        "weir_amqp_connected 0",
        &format!("weir_outbox_pending{{target=\"amqp\"}} {DURING}"),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in /metrics:\n{metrics}"
        );
    }
    assert_eq!(inbox.len(), 1, "nothing reached the broker during the cut");

    proxy.restore();
    let restored_at = Instant::now();
    eprintln!("the broker was away for {:?}", restored_at - cut_at);
    let expected: HashSet<String> = accepted
        .iter()
        .map(|a| format!("{}:publish", a.run_id))
        .collect();
    wait_until("every delivery arrives", RECOVERY, || {
        let ids: HashSet<String> = inbox.messages().iter().map(|g| g.message_id()).collect();
        expected.is_subset(&ids)
    });
    eprintln!(
        "all {DURING} deliveries arrived {:?} after the proxy was restored",
        restored_at.elapsed()
    );
    wait_until("the outbox drains", TIMEOUT, || {
        let outbox = api.amqp_outbox();
        outbox["pending"] == 0 && outbox["connected"] == true
    });

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for got in inbox.messages() {
        *counts.entry(got.message_id()).or_default() += 1;
    }
    let repeated: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let duplicates: usize = repeated.iter().map(|(_, n)| **n - 1).sum();
    eprintln!(
        "outage: {} messages, {} distinct, {duplicates} duplicate(s): {repeated:?}",
        inbox.len(),
        counts.len()
    );
    assert_eq!(
        counts.len(),
        DURING + 1,
        "only weir's deliveries: {counts:?}"
    );
}

/// Webhooks sent in a burst that the cut interrupts.
const BURST: usize = 600;

/// The proxy is cut while deliveries are being published and confirmed:
/// the publishes in flight fail and are sent again once the broker is
/// back (same `message_id`), so every delivery arrives.
#[test]
fn a_cut_in_the_middle_of_a_burst_loses_no_delivery() {
    let Some(broker) = Broker::connect_or_skip("cut during a burst") else {
        return;
    };
    let exchange = broker.unique("burst");
    broker
        .declare_exchange(&exchange, ExchangeKind::Topic)
        .unwrap();
    let inbox = broker.bind_and_consume(&exchange, "#");
    let upstream = broker.url.socket_addr().expect("the broker's address");
    let proxy = Proxy::start(broker.runtime(), upstream);
    let dir = tempfile::tempdir().unwrap();
    write_deliver_flow(dir.path(), "burst", &exchange, "payload");
    let daemon = start_daemon(
        dir.path(),
        "daemon",
        &broker.url.via(&proxy.addr.to_string()),
    );
    let api = Api::new(&daemon);
    wait_until("weir connects through the proxy", TIMEOUT, || {
        api.amqp_outbox()["connected"] == true
    });

    let (accepted, consumed_at_cut) = std::thread::scope(|s| {
        let sending = s.spawn(|| send_all(&api, "burst", BURST));
        wait_until("deliveries are flowing", TIMEOUT, || {
            inbox.len() >= BURST / 6
        });
        proxy.cut();
        let consumed_at_cut = inbox.len();
        wait_until("weir sees the broker gone", TIMEOUT, || {
            api.amqp_outbox()["connected"] == false
        });
        let accepted = sending.join().expect("the senders panicked");
        (accepted, consumed_at_cut)
    });
    wait_until("the runs' deliveries wait in the outbox", TIMEOUT, || {
        api.amqp_outbox()["pending"].as_u64().unwrap() > 0
    });
    let waiting = api.amqp_outbox();
    proxy.restore();
    let restored_at = Instant::now();

    let expected: HashSet<String> = accepted
        .iter()
        .map(|a| format!("{}:publish", a.run_id))
        .collect();
    wait_until("every delivery arrives", RECOVERY, || {
        let ids: HashSet<String> = inbox.messages().iter().map(|g| g.message_id()).collect();
        expected.is_subset(&ids)
    });
    wait_until("the outbox drains", TIMEOUT, || api.pending() == 0);
    let distinct: HashSet<String> = inbox.messages().iter().map(|g| g.message_id()).collect();
    eprintln!(
        "burst: cut after {consumed_at_cut} messages with {} pending; all {BURST} arrived {:?} after the restore; {} messages, {} duplicate(s)",
        waiting["pending"],
        restored_at.elapsed(),
        inbox.len(),
        inbox.len() - distinct.len()
    );
    assert_eq!(distinct, expected, "only the burst's deliveries");
}
