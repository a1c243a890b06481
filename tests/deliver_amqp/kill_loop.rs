//! `kill -9` under load (docs/ARCHITECTURE.md): while threads post webhooks, the
//! test kills the daemon again and again and restarts it on the same data
//! folder. Every webhook answered 202 must end as a message on the queue,
//! with the idempotency key `{run_id}:publish`; duplicates are allowed
//! (at-least-once) and counted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::ExchangeKind;
use reqwest::blocking::Client;
use serde_json::json;

use crate::broker::Broker;
use crate::{AmqpApi, Api, TIMEOUT, accepted, start_daemon, write_deliver_flow};
use weir_testkit::wait_until;

/// Webhooks to send.
const TOTAL: usize = 3000;
/// Threads sending them.
const SENDERS: usize = 16;
/// Times the daemon is killed.
const KILLS: usize = 6;
/// After the last webhook: how long the deliveries may take to arrive.
const DRAIN: Duration = Duration::from_secs(30);

/// What the senders share.
#[derive(Default)]
struct Load {
    /// The base URL of the daemon now running (it changes at each restart).
    base: Mutex<String>,
    /// The next webhook to send.
    next: AtomicUsize,
    /// The run id of each webhook answered 202, by webhook number.
    acked: Mutex<Vec<(usize, String)>>,
    /// Answers other than 202, 429 and 503 (each a weir bug).
    unexpected: Mutex<Vec<String>>,
    /// Requests that failed without an answer (daemon down or killed).
    failed: AtomicUsize,
    stop: AtomicBool,
}

impl Load {
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Sends webhooks until all are acknowledged; a request without an
    /// answer, or answered 429/503, is sent again (to whichever daemon
    /// runs by then).
    fn send(&self) {
        let http = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        loop {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            if n >= TOTAL {
                return;
            }
            while !self.stop.load(Ordering::SeqCst) {
                let base = self.base.lock().unwrap().clone();
                let answer = http
                    .post(format!("{base}/hooks/default/load/hook"))
                    .header("content-type", "application/json")
                    .body(json!({"email": "k@x.org", "n": n}).to_string())
                    .send()
                    .map(|r| (r.status().as_u16(), r.json().unwrap_or_default()));
                match answer {
                    Ok((202, body)) => {
                        let run = accepted(&body).run_id;
                        self.acked.lock().unwrap().push((n, run));
                        break;
                    }
                    Ok((429 | 503, _)) => std::thread::sleep(Duration::from_millis(20)),
                    Ok((status, body)) => {
                        self.unexpected
                            .lock()
                            .unwrap()
                            .push(format!("webhook {n}: {status} {body}"));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => {
                        self.failed.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }
}

/// Stops the senders when the test ends, also by a panic.
struct StopOnDrop(Arc<Load>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn every_acknowledged_webhook_is_delivered_across_repeated_kill_9() {
    let Some(broker) = Broker::connect_or_skip("kill loop") else {
        return;
    };
    let started = Instant::now();
    let exchange = broker.unique("kill-loop");
    broker
        .declare_exchange(&exchange, ExchangeKind::Topic)
        .unwrap();
    let inbox = broker.bind_and_consume(&exchange, "#");
    let dir = tempfile::tempdir().unwrap();
    write_deliver_flow(dir.path(), "load", &exchange, "payload");
    let url = broker.url.url();
    let mut daemon = start_daemon(dir.path(), "daemon-0", &url);

    let load = Arc::new(Load::default());
    *load.base.lock().unwrap() = daemon.base.clone();
    let _stop = StopOnDrop(load.clone());
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let load = load.clone();
            std::thread::spawn(move || load.send())
        })
        .collect();

    // Kill at evenly spaced points of the load, each a little after the
    // threshold so that requests and deliveries are in flight.
    for k in 1..=KILLS {
        let threshold = TOTAL * k / (KILLS + 1);
        wait_until(
            &format!("{threshold} webhooks acknowledged"),
            TIMEOUT * 2,
            || {
                daemon.weir.assert_running();
                load.acked() >= threshold
            },
        );
        // A random point past the threshold, then a short down time during
        // which the senders' requests fail and are sent again.
        std::thread::sleep(Duration::from_millis(rand::random_range(0..150)));
        daemon.weir.assert_running();
        daemon.weir.kill();
        let acked = load.acked();
        std::thread::sleep(Duration::from_millis(100));
        daemon = start_daemon(dir.path(), &format!("daemon-{k}"), &url);
        *load.base.lock().unwrap() = daemon.base.clone();
        eprintln!(
            "kill {k}: after {acked} acknowledged webhooks, {} messages consumed, at {:?}",
            inbox.len(),
            started.elapsed()
        );
    }
    for sender in senders {
        sender.join().expect("a sender thread panicked");
    }
    let sent_at = started.elapsed();
    let acked: Vec<(usize, String)> = load.acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        TOTAL,
        "every webhook is acknowledged in the end"
    );
    let unexpected = load.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");

    // Every acknowledged webhook's delivery arrives.
    let expected: HashSet<String> = acked
        .iter()
        .map(|(_, run)| format!("{run}:publish"))
        .collect();
    let deadline = Instant::now() + DRAIN;
    let api = Api::new(&daemon);
    loop {
        let ids: HashSet<String> = inbox.messages().iter().map(|g| g.message_id()).collect();
        let missing: Vec<&String> = expected.difference(&ids).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let sample: Vec<_> = missing.iter().take(5).collect();
            let runs: Vec<_> = sample
                .iter()
                .map(|id| {
                    let run = id.trim_end_matches(":publish");
                    api.get_ok(&format!("/api/v1/runs/{run}"))["status"].clone()
                })
                .collect();
            panic!(
                "{} of {TOTAL} acknowledged deliveries never arrived, e.g. {sample:?} (runs: {runs:?}); outbox: {}",
                missing.len(),
                api.amqp_outbox()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until("the outbox is empty", TIMEOUT, || api.pending() == 0);

    let mut counts: HashMap<String, usize> = HashMap::new();
    for got in inbox.messages() {
        *counts.entry(got.message_id()).or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let mut histogram: BTreeMap<usize, usize> = BTreeMap::new();
    for n in counts.values() {
        *histogram.entry(*n).or_default() += 1;
    }
    let unacknowledged = counts.keys().filter(|id| !expected.contains(*id)).count();
    eprintln!(
        "kill loop: {TOTAL} webhooks acknowledged ({} requests lost to kills and sent again) in {sent_at:?}; \
         {} messages, {} distinct, {duplicates} duplicate(s) (copies per id → ids: {histogram:?}); \
         {unacknowledged} delivery(ies) of runs whose 202 was lost; total {:?}",
        load.failed.load(Ordering::SeqCst),
        inbox.len(),
        counts.len(),
        started.elapsed()
    );
}
