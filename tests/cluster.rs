//! More than one process, against the real RabbitMQ broker
//! (docs/scaling.md): `weir serve --role ingest` publishes each accepted
//! event to a quorum queue before its `202`; `--role worker` processes run
//! them and ack once the run's deliveries are confirmed.
//!
//! - one ingest and two workers take 2,000 webhooks while one worker is
//!   `kill -9`ed: every acknowledged event is delivered (a repeat only
//!   under the same message id), and both workers did work;
//! - the events of one `concurrency.key` keep their order across workers,
//!   also when the worker that runs them is killed;
//! - a cron trigger served by two ingest processes fires each instant
//!   once, and goes on when its leader is killed;
//! - a poll trigger's next leader goes on from what the last one saw:
//!   changes made while leadership moved come once, nothing comes twice;
//! - a broker outage (a TCP proxy the test cuts) is a 503 with
//!   `Retry-After` at ingest, and nothing acknowledged is lost; a full
//!   event queue is a 429;
//! - what a worker cannot run goes to the dead-letter queue with why, and
//!   shows in the API and the metrics;
//! - the event queues are quorum queues.
//!
//! Each test uses a queue prefix of its own and deletes its queues at the
//! end. Without a broker the tests print a notice and pass, unless
//! `CI=true`, where they fail.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

// Shared with tests/deliver_amqp.rs; not every part is used here.
#[allow(dead_code)]
#[path = "deliver_amqp/broker.rs"]
mod broker;
#[path = "deliver_amqp/proxy.rs"]
mod proxy;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::ExchangeKind;
use lapin::types::{AMQPValue, FieldTable, LongString};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use weir_testkit::{Api, Daemon, RecordServer, wait_until, write_flow};

use broker::{Broker, Got, Inbox};

/// Partition queues in these tests (fewer than the default: quicker to
/// declare and delete).
const PARTITIONS: u16 = 4;
const TIMEOUT: Duration = Duration::from_secs(60);

/// The queues of one deployment, deleted when the test ends.
struct Deployment {
    broker: Broker,
    prefix: String,
    exchange: String,
    root: tempfile::TempDir,
}

impl Deployment {
    fn new(test: &str) -> Option<Self> {
        let broker = Broker::connect_or_skip(test)?;
        let prefix = broker.unique("cluster");
        for queue in [format!("{prefix}.events"), format!("{prefix}.dead")] {
            broker.delete_at_end(&queue);
        }
        for i in 0..PARTITIONS {
            broker.delete_at_end(&format!("{prefix}.keys.{i}"));
        }
        for level in 0..22 {
            broker.delete_at_end(&format!("{prefix}.wait.{level}"));
        }
        let exchange = broker.unique("out");
        broker
            .declare_exchange(&exchange, ExchangeKind::Topic)
            .unwrap();
        Some(Self {
            broker,
            prefix,
            exchange,
            root: tempfile::tempdir().unwrap(),
        })
    }

    /// Starts one process of the deployment in a folder of its own, with
    /// `flows` (name, YAML).
    fn start(&self, role: &str, label: &str, flows: &[(&str, String)], amqp: &str) -> Daemon {
        self.start_with(role, label, flows, amqp, &[])
    }

    fn start_with(
        &self,
        role: &str,
        label: &str,
        flows: &[(&str, String)],
        amqp: &str,
        extra: &[&str],
    ) -> Daemon {
        let dir = self.root.path().join(label);
        let flows_dir = dir.join("flows");
        std::fs::create_dir_all(&flows_dir).unwrap();
        for (name, yaml) in flows {
            write_flow(&flows_dir, &format!("{name}.yaml"), yaml);
        }
        let partitions = PARTITIONS.to_string();
        let mut args = vec![
            "--role",
            role,
            "--amqp",
            amqp,
            "--queue-prefix",
            &self.prefix,
            "--partitions",
            &partitions,
        ];
        args.extend_from_slice(extra);
        Daemon::start(&dir, label, &args, &[])
    }

    fn url(&self) -> String {
        self.broker.url.url()
    }

    /// The ready count and consumers of one of the deployment's queues, as
    /// a process's `GET /api/v1/cluster` shows them (`None` while it is
    /// not connected to the broker).
    fn queue(&self, api: &Api, suffix: &str) -> Option<(u64, u64)> {
        let view = api.get_ok("/api/v1/cluster");
        let name = format!("{}.{suffix}", self.prefix);
        let q = view["queues"]
            .as_array()?
            .iter()
            .find(|q| q["name"] == name.as_str())?
            .clone();
        Some((q["ready"].as_u64()?, q["consumers"].as_u64()?))
    }

    fn consumers(&self, api: &Api, suffix: &str) -> Option<u64> {
        self.queue(api, suffix).map(|q| q.1)
    }

    fn ready(&self, api: &Api, suffix: &str) -> Option<u64> {
        self.queue(api, suffix).map(|q| q.0)
    }
}

/// A webhook → deliver flow: the body goes to the deployment's exchange.
fn deliver_flow(id: &str, exchange: &str, extra: &str) -> String {
    format!(
        r#"id: {id}
{extra}triggers:
  - id: hook
    type: webhook
nodes:
  - id: publish
    type: deliver
    target: amqp
    exchange: {exchange}
    routing_key: {id}
    payload: event.body
"#
    )
}

/// A counter of a process's `/metrics`, summed over its labels.
fn counter(api: &Api, name: &str) -> f64 {
    api.metrics()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Senders that post webhooks until each is answered 202 (a 429 or 503,
/// or no answer, is sent again), keeping the run id of each.
struct Load {
    base: String,
    flow: String,
    total: usize,
    next: AtomicUsize,
    acked: Mutex<Vec<(usize, String)>>,
    refused: Mutex<BTreeMap<u16, usize>>,
    retry_after_missing: AtomicUsize,
    unexpected: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn new(base: &str, flow: &str, total: usize) -> Arc<Self> {
        Arc::new(Self {
            base: base.to_owned(),
            flow: flow.to_owned(),
            total,
            next: AtomicUsize::new(0),
            acked: Mutex::default(),
            refused: Mutex::default(),
            retry_after_missing: AtomicUsize::new(0),
            unexpected: Mutex::default(),
            stop: AtomicBool::new(false),
        })
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn start(self: &Arc<Self>, senders: usize) -> Vec<std::thread::JoinHandle<()>> {
        (0..senders)
            .map(|_| {
                let load = self.clone();
                std::thread::spawn(move || load.send())
            })
            .collect()
    }

    fn send(&self) {
        let http = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        loop {
            let n = self.next.fetch_add(1, Ordering::SeqCst);
            if n >= self.total {
                return;
            }
            while !self.stop.load(Ordering::SeqCst) {
                let answer = http
                    .post(format!("{}/hooks/default/{}/hook", self.base, self.flow))
                    .header("content-type", "application/json")
                    .body(json!({"n": n}).to_string())
                    .send();
                let Ok(answer) = answer else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                let status = answer.status().as_u16();
                let retry_after = answer.headers().contains_key("retry-after");
                let body: Value = answer.json().unwrap_or_default();
                match status {
                    202 => {
                        let run = body["run_id"].as_str().unwrap().to_owned();
                        assert_eq!(body["event_id"], run.as_str(), "the run id is the event id");
                        self.acked.lock().unwrap().push((n, run));
                        break;
                    }
                    429 | 503 => {
                        *self.refused.lock().unwrap().entry(status).or_default() += 1;
                        if !retry_after {
                            self.retry_after_missing.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    other => {
                        self.unexpected
                            .lock()
                            .unwrap()
                            .push(format!("webhook {n}: {other} {body}"));
                        break;
                    }
                }
            }
        }
    }
}

/// The message ids delivered so far (a repeat counts once).
fn message_ids(inbox: &Inbox) -> HashSet<String> {
    inbox.messages().iter().map(Got::message_id).collect()
}

/// Joins sender threads once they are done, waiting a bounded time: a
/// weir that stops answering fails the test instead of hanging it.
fn join_senders(what: &str, senders: Vec<std::thread::JoinHandle<()>>) {
    wait_until(what, TIMEOUT * 2, || {
        senders.iter().all(|s| s.is_finished())
    });
    for s in senders {
        s.join().unwrap();
    }
}

/// Stops the senders when the test ends, also by a panic.
struct StopOnDrop(Arc<Load>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

/// Every acknowledged run's delivery arrived (its message id is
/// `{run_id}:publish`); answers how many arrived more than once, and how
/// many messages are of events that were not acknowledged. With `strict`
/// there must be none of those (only a broker outage makes them: an event
/// queued whose confirm was lost, answered 503 and sent again).
fn assert_all_delivered(acked: &[(usize, String)], got: &[Got], strict: bool) -> (usize, usize) {
    let expected: HashSet<String> = acked.iter().map(|(_, r)| format!("{r}:publish")).collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut unacknowledged = 0;
    for m in got {
        let id = m.message_id();
        if !expected.contains(&id) {
            assert!(!strict, "a message of no acknowledged event: {id}");
            unacknowledged += 1;
            continue;
        }
        *seen.entry(id).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events were never delivered, like {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    (seen.values().filter(|n| **n > 1).count(), unacknowledged)
}

#[test]
fn two_workers_share_the_load_and_a_killed_one_loses_nothing() {
    let Some(d) = Deployment::new("cluster: kill a worker") else {
        return;
    };
    let inbox = d.broker.bind_and_consume(&d.exchange, "#");
    let flows = [("load", deliver_flow("load", &d.exchange, ""))];
    let url = d.url();
    let ingest = d.start("ingest", "ingest", &flows, &url);
    let api = Api::new(&ingest);
    wait_until("the ingest declares the queues", TIMEOUT, || {
        api.get_ok("/api/v1/cluster")["broker_connected"] == true
    });

    // The event queue is a quorum queue: declared again with its
    // arguments (docs/scaling.md lists them) it is found equal as a quorum
    // queue, and refused as a classic one, the broker naming the type.
    let events = format!("{}.events", d.prefix);
    let dead = format!("{}.dead", d.prefix);
    let args = |queue_type: &str| {
        let mut args = FieldTable::default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        args.insert("x-queue-type".into(), text(queue_type));
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(1_000_000));
        args.insert("x-overflow".into(), text("reject-publish"));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(20));
        args.insert("x-dead-letter-exchange".into(), text(""));
        args.insert("x-dead-letter-routing-key".into(), text(&dead));
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args
    };
    d.broker
        .declare_queue(&events, args("quorum"))
        .unwrap_or_else(|e| panic!("{events} is not the quorum queue weir declares: {e}"));
    let refused = d
        .broker
        .declare_queue(&events, args("classic"))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("x-queue-type") && refused.contains("quorum"),
        "{refused}"
    );

    let mut worker_a = d.start("worker", "worker-a", &flows, &url);
    let worker_b = d.start("worker", "worker-b", &flows, &url);
    let (api_a, api_b) = (Api::new(&worker_a), Api::new(&worker_b));
    wait_until("both workers consume the event queue", TIMEOUT, || {
        d.consumers(&api, "events") == Some(2)
    });

    const TOTAL: usize = 2000;
    let load = Load::new(&ingest.base, "load", TOTAL);
    let _stop = StopOnDrop(load.clone());
    let senders = load.start(8);
    wait_until("worker A ran events", TIMEOUT, || {
        load.acked() >= TOTAL / 3 && counter(&api_a, "weir_cluster_events_acked_total") >= 1.0
    });
    let a_acked = counter(&api_a, "weir_cluster_events_acked_total");
    worker_a.weir.kill();
    join_senders("every event is accepted after the kill", senders);
    let acked = load.acked.lock().unwrap().clone();
    let unexpected = load.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    assert_eq!(acked.len(), TOTAL);

    wait_until("every acknowledged event is delivered", TIMEOUT * 2, || {
        let ids = message_ids(&inbox);
        acked
            .iter()
            .all(|(_, r)| ids.contains(&format!("{r}:publish")))
    });
    let (repeated, _) = assert_all_delivered(&acked, &inbox.messages(), true);
    let b_acked = counter(&api_b, "weir_cluster_events_acked_total");
    println!(
        "{TOTAL} webhooks: worker A acked {a_acked} before its kill -9, worker B {b_acked}; {repeated} delivered twice (same message id)"
    );
    assert!(a_acked >= 1.0 && b_acked >= 1.0, "both workers did work");
    wait_until("the event queue is empty", TIMEOUT, || {
        d.ready(&api, "events") == Some(0)
    });
    // The worker's own API shows its runs, under the event ids.
    let (_, some_run) = &acked[acked.len() - 1];
    let run = api_b.run(some_run);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(
        counter(&api, "weir_cluster_events_published_total") >= TOTAL as f64,
        "the ingest counts what it published"
    );
}

#[test]
fn the_runs_of_one_key_keep_their_order_across_workers() {
    let Some(d) = Deployment::new("cluster: per-key order") else {
        return;
    };
    let inbox = d.broker.bind_and_consume(&d.exchange, "#");
    let flow = deliver_flow(
        "keyed",
        &d.exchange,
        "concurrency:\n  key: event.body.customer\n",
    );
    let flows = [("keyed", flow)];
    let url = d.url();
    let ingest = d.start("ingest", "ingest", &flows, &url);
    let api = Api::new(&ingest);
    wait_until("the ingest is connected", TIMEOUT, || {
        api.get_ok("/api/v1/cluster")["broker_connected"] == true
    });
    // A first: it is the active consumer of every partition; B stands by.
    let mut worker_a = d.start("worker", "worker-a", &flows, &url);
    wait_until("worker A consumes", TIMEOUT, || {
        d.consumers(&api, "events") == Some(1)
    });
    let worker_b = d.start("worker", "worker-b", &flows, &url);
    wait_until("worker B consumes", TIMEOUT, || {
        d.consumers(&api, "events") == Some(2)
    });

    const CUSTOMERS: usize = 6;
    const EACH: usize = 60;
    let killed = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..CUSTOMERS)
        .map(|c| {
            let (base, sent) = (ingest.base.clone(), sent.clone());
            std::thread::spawn(move || {
                let api = Api::at(&base);
                // One customer's events, one after the other.
                for seq in 0..EACH {
                    let body = json!({"customer": format!("c{c}"), "seq": seq});
                    api.accepted("keyed", &body);
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    wait_until("a third of the events is accepted", TIMEOUT, || {
        sent.load(Ordering::SeqCst) >= CUSTOMERS * EACH / 3
    });
    worker_a.weir.kill();
    killed.store(true, Ordering::SeqCst);
    join_senders("every keyed event is accepted after the kill", senders);
    let deadline = std::time::Instant::now() + TIMEOUT * 2;
    loop {
        let ids = message_ids(&inbox);
        if ids.len() >= CUSTOMERS * EACH {
            break;
        }
        if std::time::Instant::now() > deadline {
            // What a failure needs to be understood: where the events are.
            let tail = |log: String| log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            // The broker's own view, when its CLI is on this machine:
            // which channel holds which queue's unacked events.
            let rabbitmqctl = |args: &[&str]| {
                std::process::Command::new("rabbitmqctl")
                    .args(args)
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_else(|e| format!("(rabbitmqctl: {e})"))
            };
            eprintln!(
                "the broker's queues:\n{}\nthe broker's consumers:\n{}",
                rabbitmqctl(&[
                    "list_queues",
                    "name",
                    "messages_ready",
                    "messages_unacknowledged",
                    "consumers"
                ]),
                rabbitmqctl(&[
                    "list_consumers",
                    "queue_name",
                    "channel_pid",
                    "active",
                    "prefetch_count"
                ]),
            );
            // Which (customer, seq) never arrived: the run to look up.
            let arrived: HashSet<(String, u64)> = inbox
                .messages()
                .iter()
                .map(|m| {
                    let body = m.json();
                    (
                        body["customer"].as_str().unwrap_or("").to_owned(),
                        body["seq"].as_u64().unwrap_or(u64::MAX),
                    )
                })
                .collect();
            let missing: Vec<String> = (0..CUSTOMERS)
                .flat_map(|c| (0..EACH as u64).map(move |seq| (format!("c{c}"), seq)))
                .filter(|k| !arrived.contains(k))
                .map(|(c, seq)| format!("{c}#{seq}"))
                .collect();
            eprintln!("never delivered: {missing:?}");
            // Did worker A ack an event whose delivery it still held?
            // Started again on its folder, it sends what its outbox has.
            let again = d.start("worker", "worker-a", &flows, &url);
            eprintln!(
                "worker A's outbox, started again: {}",
                Api::new(&again).get_ok("/api/v1/outbox")
            );
            let late = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < late {
                let n = message_ids(&inbox).len();
                if n >= CUSTOMERS * EACH {
                    eprintln!("every event arrived once worker A started again");
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!(
                "timed out: {} of {} events delivered\nthe ingest's view: {}\nworker B's view: {}\nworker B's runs: {}\nworker A's last log lines (newest first):\n{}\nworker B's last log lines (newest first):\n{}",
                ids.len(),
                CUSTOMERS * EACH,
                api.get_ok("/api/v1/cluster"),
                Api::new(&worker_b).get_ok("/api/v1/cluster"),
                Api::new(&worker_b).get_ok("/api/v1/runs?limit=400")["items"]
                    .as_array()
                    .map(|runs| runs
                        .iter()
                        .filter(|r| r["status"] != "succeeded")
                        .cloned()
                        .collect::<Vec<_>>())
                    .map(Value::from)
                    .unwrap_or_default(),
                tail(worker_a.weir.stderr()),
                tail(worker_b.weir.stderr()),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Per customer, the first delivery of each run, in arrival order, is
    // in the order the events were accepted. (A run A finished but did
    // not ack runs again on B: a repeat, under the same message id.)
    let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut first_seen = HashSet::new();
    let mut repeats = 0;
    for m in inbox.messages() {
        if !first_seen.insert(m.message_id()) {
            repeats += 1;
            continue;
        }
        let body = m.json();
        order
            .entry(body["customer"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["seq"].as_u64().unwrap());
    }
    for (customer, seqs) in &order {
        let expected: Vec<u64> = (0..EACH as u64).collect();
        assert_eq!(seqs, &expected, "customer {customer}'s events out of order");
    }
    assert_eq!(order.len(), CUSTOMERS);
    let b_acked = counter(&Api::new(&worker_b), "weir_cluster_events_acked_total");
    println!("per-key order held across a kill -9; {repeats} repeats; worker B acked {b_acked}");
    assert!(b_acked >= 1.0, "worker B took over the partitions");
}

/// What a poll saw travels with its leadership: changes made while no
/// poll succeeded, across a change of leader, come from the new leader
/// once each, and what the old one emitted does not come again.
#[test]
fn a_poll_trigger_hands_what_it_saw_to_the_next_leader() {
    let Some(d) = Deployment::new("cluster: poll leadership") else {
        return;
    };
    d.broker
        .delete_at_end(&format!("{}.lead.default.items-sync.changes", d.prefix));
    let inbox = d.broker.bind_and_consume(&d.exchange, "#");
    let record = |id: &str, v: i64| json!({"id": id, "v": v});
    let server = RecordServer::start(vec![record("a", 1), record("b", 1)]);
    let flow = format!(
        r#"id: items-sync
triggers:
  - id: changes
    type: poll
    every: 200ms
    request: {{url: "{}"}}
    items: response.body
    key: item.id
    version: item.v
nodes:
  - id: publish
    type: deliver
    target: amqp
    exchange: {}
    routing_key: change
    payload: '#{{type: event.type, key: event.key, version: event.version}}'
"#,
        server.url("/items"),
        d.exchange
    );
    let flows = [("items-sync", flow)];
    let url = d.url();
    let worker = d.start("worker", "worker", &flows, &url);
    let first = d.start("ingest", "ingest-1", &flows, &url);
    let leads = |daemon: &Daemon| {
        daemon
            .weir
            .stderr()
            .contains("this process leads the trigger")
    };
    wait_until("ingest 1 leads the trigger", TIMEOUT, || leads(&first));
    let second = d.start("ingest", "ingest-2", &flows, &url);
    // The baseline (the first poll) emits nothing; then ingest 1 emits
    // the changes it sees.
    wait_until("ingest 1 polls twice", TIMEOUT, || {
        server.ok_count("/items") >= 2
    });
    server.change(vec![record("c", 1), record("a", 2)], &["b"]);
    wait_until("the first changes are delivered", TIMEOUT, || {
        inbox.len() >= 3
    });
    // The API fails from now on; what changes meanwhile no poll has seen
    // when ingest 1 stops and ingest 2 takes over.
    server.set_failing(true);
    let failed = || {
        server
            .polled_at("/items")
            .iter()
            .filter(|p| p.status == 500)
            .count()
    };
    wait_until("a poll fails", TIMEOUT, || failed() >= 1);
    server.change(vec![record("d", 1), record("a", 3)], &["c"]);
    first.weir.terminate();
    let stopped = first.weir.finish(TIMEOUT);
    assert_eq!(
        stopped.code,
        Some(0),
        "ingest 1 stops cleanly: {}",
        stopped.stderr
    );
    wait_until("ingest 2 takes over", TIMEOUT, || leads(&second));
    server.set_failing(false);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while inbox.len() < 6 {
        if std::time::Instant::now() > deadline {
            let got: Vec<Value> = inbox.messages().iter().map(Got::json).collect();
            let tail = |log: String| log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            panic!(
                "timed out waiting for the changes made meanwhile: delivered {got:?}\npolls: {:?}\ningest 1 (newest first):\n{}\ningest 2 (newest first):\n{}\nworker (newest first):\n{}",
                server
                    .polled_at("/items")
                    .iter()
                    .map(|p| p.status)
                    .take(12)
                    .collect::<Vec<_>>(),
                tail(stopped.stderr.clone()),
                tail(second.weir.stderr()),
                tail(worker.weir.stderr())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Two more polls: whatever the first ones of ingest 2 published is
    // on the queue; then every event published has run.
    let polls = server.ok_count("/items");
    wait_until("ingest 2 polls twice more", TIMEOUT, || {
        server.ok_count("/items") >= polls + 2
    });
    let worker_api = Api::new(&worker);
    let api = Api::new(&second);
    wait_until("every published event has run", TIMEOUT, || {
        let runs = worker_api.get_ok("/api/v1/runs?flow=items-sync&limit=100")["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        d.queue(&api, "events").is_some_and(|(ready, _)| ready == 0)
            && runs.iter().all(|r| r["status"] == "succeeded")
            && runs.len() == message_ids(&inbox).len()
    });
    let mut got: Vec<(String, String, i64)> = inbox
        .messages()
        .iter()
        .map(|m| {
            let body = m.json();
            (
                body["type"].as_str().unwrap_or("").to_owned(),
                body["key"].as_str().unwrap_or("").to_owned(),
                body["version"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    got.sort();
    let mut expected: Vec<(String, String, i64)> = [
        ("created", "c", 1),
        ("updated", "a", 2),
        ("deleted", "b", 1),
        ("created", "d", 1),
        ("updated", "a", 3),
        ("deleted", "c", 1),
    ]
    .iter()
    .map(|(t, k, v)| (t.to_string(), k.to_string(), *v))
    .collect();
    expected.sort();
    assert_eq!(
        got, expected,
        "each change once, across the change of leader"
    );
}

#[test]
fn a_cron_trigger_on_two_ingests_fires_each_instant_once() {
    let Some(d) = Deployment::new("cluster: cron leadership") else {
        return;
    };
    d.broker
        .delete_at_end(&format!("{}.lead.default.tick.every-second", d.prefix));
    let inbox = d.broker.bind_and_consume(&d.exchange, "#");
    let flow = format!(
        r#"id: tick
triggers:
  - id: every-second
    type: cron
    schedule: "* * * * * *"
nodes:
  - id: publish
    type: deliver
    target: amqp
    exchange: {}
    routing_key: tick
    payload: '#{{at: event.scheduled_at}}'
"#,
        d.exchange
    );
    let flows = [("tick", flow)];
    let url = d.url();
    let _worker = d.start("worker", "worker", &flows, &url);
    let mut first = d.start("ingest", "ingest-1", &flows, &url);
    wait_until("ingest 1 leads the trigger", TIMEOUT, || {
        first
            .weir
            .stderr()
            .contains("this process leads the trigger")
    });
    let second = d.start("ingest", "ingest-2", &flows, &url);
    wait_until("a few instants fire", TIMEOUT, || inbox.len() >= 4);
    assert!(
        !second
            .weir
            .stderr()
            .contains("this process leads the trigger"),
        "only one ingest leads"
    );
    first.weir.kill();
    wait_until("ingest 2 takes over", TIMEOUT, || {
        second
            .weir
            .stderr()
            .contains("this process leads the trigger")
    });
    let before = instants(&inbox.messages()).len();
    wait_until("instants fire after the takeover", TIMEOUT, || {
        instants(&inbox.messages()).len() >= before + 4
    });
    drop(second);
    let got = inbox.messages();
    let by_instant = instants(&got);
    // Each instant: one run (a repeat after the takeover is the same run,
    // same message id); no instant between the first and the last is
    // missing, the ones while ingest 1 was dying included.
    for (at, ids) in &by_instant {
        assert_eq!(
            ids.len(),
            1,
            "instant {at} fired as different runs: {ids:?}"
        );
    }
    let seconds: Vec<i64> = by_instant
        .keys()
        .map(|at| {
            chrono::DateTime::parse_from_rfc3339(at)
                .unwrap()
                .timestamp()
        })
        .collect();
    for pair in seconds.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1,
            "an instant is missing: {by_instant:?}"
        );
    }
    let repeats = got.len() - by_instant.len();
    println!(
        "{} instants over a leader's kill -9, {repeats} delivered twice",
        by_instant.len()
    );
}

/// The message ids of each instant's deliveries.
fn instants(got: &[Got]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in got {
        let at = m.json()["at"].as_str().unwrap().to_owned();
        out.entry(at).or_default().insert(m.message_id());
    }
    out
}

#[test]
fn a_run_waiting_on_a_timer_is_handed_off_and_survives_its_worker() {
    let Some(d) = Deployment::new("cluster: hand-off") else {
        return;
    };
    let inbox = d.broker.bind_and_consume(&d.exchange, "#");
    let flow = format!(
        r#"id: later
triggers:
  - id: hook
    type: webhook
nodes:
  - id: wait
    type: delay
    for: 6s
    next: publish
  - id: publish
    type: deliver
    target: amqp
    exchange: {}
    routing_key: later
    payload: event.body
"#,
        d.exchange
    );
    let flows = [("later", flow)];
    let url = d.url();
    let ingest = d.start("ingest", "ingest", &flows, &url);
    let api = Api::new(&ingest);
    let hand_off = ["--hand-off-after", "1s"];
    let mut worker_a = d.start_with("worker", "worker-a", &flows, &url, &hand_off);
    wait_until("worker A consumes", TIMEOUT, || {
        d.consumers(&api, "events") == Some(1)
    });
    let (run, _) = api.accepted("later", &json!({"n": 1}));
    let api_a = Api::new(&worker_a);
    wait_until("worker A hands the waiting run off", TIMEOUT, || {
        counter(&api_a, "weir_cluster_runs_handed_off_total") >= 1.0
    });
    // Its event is acked, and the run is no longer on A's disk.
    let gone = api_a.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(gone.status, 404, "{gone}");
    assert!(inbox.messages().is_empty(), "the run is still waiting");
    worker_a.weir.kill();
    // Another worker goes on with it when it is due.
    let worker_b = d.start_with("worker", "worker-b", &flows, &url, &hand_off);
    let got = inbox.wait_for(1, TIMEOUT);
    assert_eq!(got[0].message_id(), format!("{run}:publish"));
    assert_eq!(got[0].json(), json!({"n": 1}));
    let api_b = Api::new(&worker_b);
    let finished = api_b.wait_finished(&run);
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    let waited = weir_testkit::api::node(&finished, "wait");
    assert_eq!(waited["status"], "succeeded", "{finished:#}");
    wait_until("the continuation is acked", TIMEOUT, || {
        d.ready(&api_b, "events") == Some(0)
            && counter(&api_b, "weir_cluster_events_acked_total") >= 1.0
    });
    assert_eq!(inbox.len(), 1, "delivered once");
}

#[test]
fn a_broker_outage_is_503_at_ingest_and_nothing_acknowledged_is_lost() {
    let Some(d) = Deployment::new("cluster: broker outage") else {
        return;
    };
    let inbox = d.broker.bind_and_consume(&d.exchange, "#");
    let flows = [("load", deliver_flow("load", &d.exchange, ""))];
    let upstream = d.broker.url.socket_addr().unwrap();
    let proxy = proxy::Proxy::start(d.broker.runtime(), upstream);
    let via_proxy = d.broker.url.via(&proxy.addr.to_string());
    let ingest = d.start("ingest", "ingest", &flows, &via_proxy);
    let api = Api::new(&ingest);
    let _worker = d.start("worker", "worker", &flows, &d.url());
    wait_until("the ingest is connected", TIMEOUT, || {
        api.get("/readyz").body["broker"] == "connected"
    });

    const TOTAL: usize = 600;
    let load = Load::new(&ingest.base, "load", TOTAL);
    let _stop = StopOnDrop(load.clone());
    let senders = load.start(4);
    wait_until("a first third is accepted", TIMEOUT, || {
        load.acked() >= TOTAL / 3
    });
    proxy.cut();
    wait_until("the ingest refuses events with 503", TIMEOUT, || {
        load.refused.lock().unwrap().get(&503).copied().unwrap_or(0) >= 20
    });
    let ready = api.get("/readyz");
    assert_eq!(
        ready.status, 503,
        "not ready while the broker is away: {ready}"
    );
    assert_eq!(ready.body["broker"], "disconnected");
    // While the broker is away, 20 more requests are refused and none is
    // acknowledged.
    let acked_during = load.acked();
    let refused = |load: &Load| load.refused.lock().unwrap().get(&503).copied().unwrap_or(0);
    let refused_then = refused(&load);
    wait_until("20 more events are refused", TIMEOUT, || {
        refused(&load) >= refused_then + 20
    });
    assert_eq!(
        load.acked(),
        acked_during,
        "nothing is acknowledged while the broker is away"
    );
    proxy.restore();
    join_senders("every event is accepted once the broker is back", senders);
    assert_eq!(
        load.retry_after_missing.load(Ordering::SeqCst),
        0,
        "every 503 says Retry-After"
    );
    let acked = load.acked.lock().unwrap().clone();
    assert_eq!(acked.len(), TOTAL);
    wait_until("every acknowledged event is delivered", TIMEOUT * 2, || {
        let ids = message_ids(&inbox);
        acked
            .iter()
            .all(|(_, r)| ids.contains(&format!("{r}:publish")))
    });
    // The broker's password is in no log line and no API answer, also
    // while the link was down (its errors are shown).
    let password = via_proxy
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .and_then(|creds| creds.split(':').nth(1))
        .unwrap()
        .to_owned();
    let credentials = format!(":{password}@");
    let view = api.get_ok("/api/v1/cluster").to_string();
    for (what, text) in [
        ("the ingest's log", ingest.weir.stderr()),
        ("GET /api/v1/cluster", view),
    ] {
        assert!(
            !text.contains(&credentials),
            "{what} shows the broker's password"
        );
    }
    let (repeated, unacknowledged) = assert_all_delivered(&acked, &inbox.messages(), false);
    println!(
        "outage: refused {:?}; {repeated} delivered twice; {unacknowledged} events queued whose 202 was lost with the link (answered 503, sent again)",
        load.refused.lock().unwrap()
    );
}

#[test]
fn a_full_event_queue_is_429_with_retry_after() {
    let Some(d) = Deployment::new("cluster: full queue") else {
        return;
    };
    let flows = [("load", deliver_flow("load", &d.exchange, ""))];
    // No worker: the queue fills up to its bound.
    let ingest = d.start_with("ingest", "ingest", &flows, &d.url(), &["--max-queue", "5"]);
    let api = Api::new(&ingest);
    wait_until("the ingest is connected", TIMEOUT, || {
        api.get_ok("/api/v1/cluster")["broker_connected"] == true
    });
    // A quorum queue checks its bound after each enqueue: it may take one
    // more than the bound, never more.
    let mut accepted = 0;
    let full = loop {
        let answer = api.post("/hooks/default/load/hook", &json!({"n": accepted}));
        if answer.status != 202 {
            break answer;
        }
        accepted += 1;
        assert!(accepted <= 6, "the queue took more than its bound");
    };
    assert!(accepted >= 5, "refused before the bound: {accepted}");
    assert_eq!(full.status, 429, "{full}");
    assert!(full.retry_after.is_some(), "{full}");
    full.assert_error(429, "overloaded");
    assert_eq!(
        d.ready(&api, "events"),
        Some(accepted),
        "every accepted event is queued, the refused one is not"
    );
}

#[test]
fn what_a_worker_cannot_run_is_dead_lettered_with_why() {
    let Some(d) = Deployment::new("cluster: dead letters") else {
        return;
    };
    let inbox = d.broker.bind_and_consume(&d.exchange, "#");
    let flows = [("load", deliver_flow("load", &d.exchange, ""))];
    let worker = d.start("worker", "worker", &flows, &d.url());
    let api = Api::new(&worker);
    wait_until("the worker consumes", TIMEOUT, || {
        d.consumers(&api, "events") == Some(1)
    });
    let events = format!("{}.events", d.prefix);
    let props = || lapin::BasicProperties::default().with_delivery_mode(2);
    // Not a weir event at all.
    d.broker.publish_to_queue(&events, b"{not json", props());
    // An event of a flow this worker does not have.
    let unknown = json!({
        "v": 1, "event_id": "0190f0e2-0000-7000-8000-000000000001", "tenant": "default",
        "flow": "nope", "flow_version": "x", "trigger": "hook",
        "accepted_at": "2026-12-03T10:00:00Z", "event": {"body": {}}
    });
    d.broker
        .publish_to_queue(&events, unknown.to_string().as_bytes(), props());
    // An event accepted against another version of the flow.
    let mut stale = unknown.clone();
    stale["flow"] = json!("load");
    stale["event_id"] = json!("0190f0e2-0000-7000-8000-000000000002");
    d.broker
        .publish_to_queue(&events, stale.to_string().as_bytes(), props());
    let dead = format!("{}.dead", d.prefix);
    let mut letters = Vec::new();
    wait_until("three dead letters", TIMEOUT, || {
        while let Some(m) = d.broker.get_from_queue(&dead) {
            letters.push(m);
        }
        letters.len() >= 3
    });
    let reasons: BTreeSet<String> = letters
        .iter()
        .map(|m| m.header("x-weir-reason").unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["corrupt", "flow_version", "unknown_flow"]
            .map(String::from)
            .into()
    );
    for m in &letters {
        let why = m.header("x-weir-error").unwrap();
        assert!(!why.is_empty());
        assert_eq!(m.header("x-weir-queue").as_deref(), Some(events.as_str()));
    }
    assert_eq!(
        letters[0].body, b"{not json",
        "the message is kept as it came"
    );
    let view = api.get_ok("/api/v1/cluster");
    assert_eq!(
        view["dead_letters"].as_array().unwrap().len(),
        3,
        "{view:#}"
    );
    let versioned = view["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["reason"] == "flow_version")
        .unwrap()
        .clone();
    assert_eq!(versioned["flow"], "load");
    assert!(
        versioned["message"]
            .as_str()
            .unwrap()
            .contains("same flows folder"),
        "{versioned:#}"
    );
    assert_eq!(
        counter(&api, "weir_cluster_events_dead_lettered_total"),
        3.0
    );
    // The worker goes on: an event it can run is run. Nothing loops.
    let ingest_daemon = d.start("ingest", "ingest", &flows, &d.url());
    let ingest = Api::new(&ingest_daemon);
    wait_until("the ingest is ready", TIMEOUT, || {
        ingest.get("/readyz").status == 200
    });
    let (run, _) = ingest.accepted("load", &json!({"n": 1}));
    inbox.wait_for(1, TIMEOUT);
    assert_eq!(inbox.messages()[0].message_id(), format!("{run}:publish"));
    assert_eq!(d.ready(&api, "events"), Some(0));
    assert!(
        d.broker.get_from_queue(&dead).is_none(),
        "no dead letter again"
    );
}

#[test]
fn ingest_and_worker_need_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    for role in ["ingest", "worker"] {
        let out = weir_testkit::run_weir(
            dir.path(),
            role,
            &[
                "serve",
                "--role",
                role,
                "--flows",
                weir_testkit::arg(&dir.path().join("flows")),
            ],
            Duration::from_secs(20),
        );
        assert_eq!(out.code, Some(2), "{}", out.stderr);
        assert!(out.stderr.contains("--amqp"), "{}", out.stderr);
    }
}
