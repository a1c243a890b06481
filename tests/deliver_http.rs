//! HTTP deliveries end to end (docs/ARCHITECTURE.md, docs/api.md `/api/v1/outbox`, docs/consuming.md):
//! Standard Webhooks signatures checked with the published algorithm, the
//! `weir-*` headers, retries on 5xx/429/408 and refused connections, dead
//! deliveries (4xx, `retry.max_attempts`) and their retry through the API
//! and `weir outbox`, a missing signing secret, deliveries waiting on disk
//! across `kill -9`, and the order of a run's deliveries. Every test starts
//! its own daemon on port 0 in its own temp folder, and its own backend.
//! Also: a redirect is not a confirmation.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use weir_testkit::{Answer, Api, Daemon, run_weir, wait_until, write_flow};
use weir_testkit::{FakeServer, Received};

/// How long a run or a delivery may take to reach the state a test waits
/// for (the longest here wait for a few backoff steps; the margin is for a
/// loaded machine).
const TIMEOUT: Duration = Duration::from_secs(20);
/// How long a `weir outbox` command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(20);

/// `whsec_` + base64 of the signing key.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The environment variable the flows name in `secret_env`.
const SECRET_ENV: &str = "TEST_DELIVERY_SECRET";

// ---- talking to the daemon --------------------------------------------------

/// The `http` entry of an outbox view.
fn http_target(outbox: &Value) -> &Value {
    outbox["targets"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["target"] == "http"))
        .unwrap_or_else(|| panic!("no http target in {outbox:#}"))
}

/// The dead deliveries of an outbox view.
fn dead_list(outbox: &Value) -> Vec<Value> {
    outbox["dead"]
        .as_array()
        .unwrap_or_else(|| panic!("no dead list in {outbox:#}"))
        .clone()
}

/// Waits until the outbox holds nothing for `http`: none pending, none
/// dead, an empty dead list.
fn wait_outbox_empty(api: &Api) {
    let mut last = Value::Null;
    wait_until("the outbox empties", TIMEOUT, || {
        last = api.outbox();
        let http = http_target(&last);
        http["pending"] == 0 && http["dead"] == 0 && dead_list(&last).is_empty()
    });
}

/// Waits until one delivery is dead and the http target counts it (dead 1,
/// pending 0); answers that outbox view. The view is not one snapshot: its
/// counts and its dead list may disagree for a moment while a delivery
/// settles, so both are awaited.
fn wait_dead(api: &Api) -> Value {
    let mut last = Value::Null;
    wait_until("a delivery is dead", TIMEOUT, || {
        last = api.outbox();
        !dead_list(&last).is_empty()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let http = http_target(&last);
        if http["dead"] == 1 && http["pending"] == 0 {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a dead delivery is listed, but the http target does not count it as \
             dead 1, pending 0: {last:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
        last = api.outbox();
    }
}

/// Waits until a delivered delivery's record is gone from the store. The
/// outbox counts it out as soon as the backend confirms it, but removes its
/// record in a commit it does not wait for; until that lands, a retry
/// answers 409 (not dead) rather than 404.
fn wait_gone(api: &Api, id: &str) {
    wait_until(&format!("delivery {id} leaves the store"), TIMEOUT, || {
        api.retry_delivery(id).status != 409
    });
}

/// `{"error": {"code", "message"}}` with `status`.
fn assert_error(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{a}");
    assert!(
        a.body["error"]["code"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
            && a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
        "not an API error: {a}"
    );
}

/// Panics if the daemon panicked or printed the signing secret.
fn assert_clean_log(daemon: &Daemon) {
    let log = daemon.weir.stderr() + &daemon.weir.stdout();
    assert!(!log.contains("panicked"), "weir panicked:\n{log}");
    let key = SECRET.strip_prefix("whsec_").unwrap();
    assert!(
        !log.contains(key),
        "the signing secret reached the log:\n{log}"
    );
}

// ---- Standard Webhooks, from the specification ---------------------------------

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
/// base64-decoded part of `whsec_<base64>`.
fn standard_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Checks a request as a Standard Webhooks consumer would: the headers are
/// there, the timestamp is within 5 s of now, and one of the
/// space-separated signatures matches.
fn assert_signed(r: &Received) {
    let id = r.header("webhook-id").expect("a webhook-id header");
    let timestamp = r
        .header("webhook-timestamp")
        .expect("a webhook-timestamp header");
    let signatures = r
        .header("webhook-signature")
        .expect("a webhook-signature header");
    let sent: i64 = timestamp
        .parse()
        .unwrap_or_else(|_| panic!("webhook-timestamp `{timestamp}` is not unix seconds"));
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now - sent).abs() <= 5,
        "webhook-timestamp {sent} is not within 5 s of now ({now})"
    );
    let expected = standard_signature(SECRET, id, timestamp, &r.body);
    assert!(
        signatures.split(' ').any(|s| s == expected),
        "webhook-signature `{signatures}` does not verify (expected `{expected}`) for \
         id `{id}`, timestamp `{timestamp}`, body {}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn the_signature_helper_matches_the_specification_example() {
    assert_eq!(
        standard_signature(
            SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

// ---- flows ---------------------------------------------------------------------

/// webhook → map → deliver(http) to `BACKEND/orders/{order}`.
const ORDER_FLOW: &str = r#"
id: orders
triggers:
  - id: hook
    type: webhook
nodes:
  - id: shape
    type: map
    mapping:
      order: event.body.order
      total: event.body.qty * event.body.price
      customer: event.body.customer.to_upper()
      kind: '"order"'
      tags: event.body.tags
    next: notify
  - id: notify
    type: deliver
    target: http
    url: 'BACKEND/orders/${event.body.order}'
    secret_env: SECRET_ENV
    payload: nodes.shape
"#;

/// webhook → deliver(http) to `{event.body.base}/in`, with the node options
/// `OPTIONS` (a YAML flow map, or `{}`) and the secret in `SECRET_ENV`.
const SIMPLE_FLOW: &str = r#"
id: simple
triggers:
  - id: hook
    type: webhook
nodes:
  - id: notify
    type: deliver
    target: http
    url: '${event.body.base}/in'
    secret_env: SECRET_ENV
    payload: '#{n: event.body.n, base: event.body.base}'
    OPTIONS
"#;

/// [`SIMPLE_FLOW`] with `secret_env` and extra node options (`retry: ...`).
fn simple_flow(secret_env: &str, options: &str) -> String {
    SIMPLE_FLOW
        .replace("SECRET_ENV", secret_env)
        .replace("OPTIONS", options)
}

/// Writes `yaml` as the only flow of a new temp folder and starts a daemon
/// with the signing secret in its environment.
fn start(yaml: &str) -> (tempfile::TempDir, Daemon, Api) {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "flow.yaml", yaml);
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[(SECRET_ENV, SECRET)]);
    let api = Api::new(&daemon);
    (dir, daemon, api)
}

// ---- 1. a signed delivery --------------------------------------------------------

#[test]
fn a_delivery_is_posted_signed_per_standard_webhooks_with_the_weir_headers() {
    let backend = FakeServer::start();
    let yaml = ORDER_FLOW
        .replace("BACKEND", &backend.base())
        .replace("SECRET_ENV", SECRET_ENV);
    let (_dir, daemon, api) = start(&yaml);

    let input = json!({"order": 42, "qty": 3, "price": 2.5, "customer": "zoë", "tags": ["a", "b"]});
    let (run, event) = api.accepted("orders", &input);
    let finished = api.wait_for(&run, "succeeded");
    wait_until("the backend receives the delivery", TIMEOUT, || {
        !backend.received().is_empty()
    });
    wait_outbox_empty(&api);

    let received = backend.received();
    assert_eq!(received.len(), 1, "one request: {received:#?}");
    let r = &received[0];
    let id = format!("{run}:notify");
    assert_eq!(r.path, "/orders/42", "the url template was rendered");
    assert_eq!(
        r.json(),
        json!({"order": 42, "total": 7.5, "customer": "ZOË", "kind": "order", "tags": ["a", "b"]}),
        "the body is the payload"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("webhook-id"), Some(id.as_str()));
    assert_signed(r);
    for (name, value) in [
        ("weir-tenant", "default"),
        ("weir-flow", "orders"),
        ("weir-run", run.as_str()),
        ("weir-node", "notify"),
        ("weir-event", event.as_str()),
    ] {
        assert_eq!(r.header(name), Some(value), "header {name}");
    }
    // The deliver node's output names the delivery.
    let node = finished["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["id"] == "notify"))
        .unwrap_or_else(|| panic!("no node notify in {finished:#}"));
    assert_eq!(node["output"]["delivery_id"], id.as_str(), "{finished:#}");
    // A signature made with another key does not verify (the check can fail).
    let forged = standard_signature(
        "whsec_c29tZSBvdGhlciBrZXkgb2YgMjQgYnl0ZXM=",
        &id,
        r.header("webhook-timestamp").unwrap(),
        &r.body,
    );
    assert_ne!(Some(forged.as_str()), r.header("webhook-signature"));
    assert_clean_log(&daemon);
}

// ---- 2. retries ------------------------------------------------------------------

#[test]
fn a_delivery_is_retried_on_5xx_429_408_and_a_refused_connection() {
    let backend = FakeServer::start();
    let (_dir, daemon, api) = start(&simple_flow(SECRET_ENV, ""));

    // 503, 429, 408, then 200.
    backend.answer_next(&[503, 429, 408]);
    let (run, _) = api.accepted("simple", &json!({"n": 1, "base": backend.base()}));
    api.wait_for(&run, "succeeded");
    let id = format!("{run}:notify");
    let mut errors_seen = BTreeSet::new();
    let mut age_seen = false;
    wait_until("the delivery goes through", TIMEOUT, || {
        let outbox = api.outbox();
        let http = http_target(&outbox);
        if http["pending"] == 1 {
            if let Some(e) = http["last_error"].as_str() {
                errors_seen.insert(e.to_owned());
            }
            age_seen |= http["oldest_pending_age_s"].as_f64().unwrap_or(0.0) > 0.0;
        }
        backend.confirmed().len() == 1
    });
    wait_outbox_empty(&api);
    let attempts = backend.with_id(&id);
    let statuses: Vec<u16> = attempts.iter().filter_map(|r| r.status).collect();
    assert_eq!(statuses, [503, 429, 408, 200], "{attempts:#?}");
    assert_eq!(backend.received().len(), 4, "only this delivery was sent");
    for r in &attempts {
        assert_signed(r);
        assert_eq!(
            r.body, attempts[0].body,
            "every attempt sends the same body"
        );
    }
    // Exponential backoff from 500 ms, with jitter of at most half.
    for (i, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let least = Duration::from_millis(250 << i);
        assert!(
            gap >= least,
            "attempt {} came {gap:?} after the previous one; backoff is at least {least:?}",
            i + 2
        );
    }
    // While it waited, the API showed it pending with the failure.
    for status in ["503", "429", "408"] {
        assert!(
            errors_seen.iter().any(|e| e.contains(status)),
            "last_error never named {status} while pending: {errors_seen:?}"
        );
    }
    assert!(age_seen, "oldest_pending_age_s stayed 0 while pending");

    // Connection refused: nothing listens at the address until a backend
    // starts there.
    let address = FakeServer::unused_address();
    let (run, _) = api.accepted(
        "simple",
        &json!({"n": 2, "base": format!("http://{address}")}),
    );
    api.wait_for(&run, "succeeded");
    let mut refused_error = String::new();
    wait_until("the outbox reports the refused connection", TIMEOUT, || {
        let outbox = api.outbox();
        let http = http_target(&outbox);
        refused_error = http["last_error"].as_str().unwrap_or("").to_owned();
        http["pending"] == 1 && refused_error.contains(&address.to_string())
    });
    assert!(
        refused_error.to_lowercase().contains("connect"),
        "the error should say the connection failed: {refused_error}"
    );
    let late = FakeServer::start_on(address);
    wait_until("the delivery reaches the late backend", TIMEOUT, || {
        late.confirmed().len() == 1
    });
    let r = &late.confirmed()[0];
    assert_eq!(r.webhook_id(), format!("{run}:notify"));
    assert_eq!(
        r.json(),
        json!({"n": 2, "base": format!("http://{address}")})
    );
    assert_signed(r);
    wait_outbox_empty(&api);
    assert_clean_log(&daemon);
}

// ---- 3. dead on 4xx, and retried through the API -----------------------------------

#[test]
fn a_4xx_makes_the_delivery_dead_and_the_api_retries_it() {
    let backend = FakeServer::start();
    backend.set_status(422);
    let (_dir, daemon, api) = start(&simple_flow(SECRET_ENV, ""));
    let (run, _) = api.accepted("simple", &json!({"n": 7, "base": backend.base()}));
    api.wait_for(&run, "succeeded");
    let id = format!("{run}:notify");

    let outbox = wait_dead(&api);
    let dead = dead_list(&outbox);
    assert_eq!(dead.len(), 1, "{outbox:#}");
    let d = &dead[0];
    assert_eq!(d["id"], id.as_str(), "{d:#}");
    assert_eq!(d["status"], "dead", "{d:#}");
    assert_eq!(d["attempts"], 1, "a 4xx is not retried: {d:#}");
    assert!(
        d["last_error"].as_str().is_some_and(|e| e.contains("422")),
        "last_error should name the status: {d:#}"
    );
    let http = http_target(&outbox);
    assert_eq!(http["dead"], 1, "{outbox:#}");
    assert_eq!(http["pending"], 0, "{outbox:#}");
    assert_eq!(backend.received().len(), 1);

    // The backend accepts now, slowly, so the retried delivery is pending
    // for a while.
    backend.set_status(200);
    backend.set_delay(Duration::from_millis(800));
    let a = api.retry_delivery(&id);
    assert_eq!(a.status, 202, "retry a dead delivery: {a}");
    let again = api.retry_delivery(&id);
    assert_error(&again, 409);
    wait_until("the retried delivery goes through", TIMEOUT, || {
        backend.confirmed().len() == 1
    });
    let attempts = backend.with_id(&id);
    assert_eq!(
        attempts.iter().filter_map(|r| r.status).collect::<Vec<_>>(),
        [422, 200],
        "{attempts:#?}"
    );
    assert_signed(&attempts[1]);
    assert_eq!(attempts[1].body, attempts[0].body);
    wait_outbox_empty(&api);

    // Delivered: it is gone.
    wait_gone(&api, &id);
    assert_error(&api.retry_delivery(&id), 404);
    assert_error(&api.retry_delivery("no-such-run:notify"), 404);
    assert_clean_log(&daemon);
}

// ---- 4. retry.max_attempts -----------------------------------------------------------

#[test]
fn a_delivery_is_dead_after_its_nodes_max_attempts() {
    let backend = FakeServer::start();
    backend.set_status(500);
    let (_dir, daemon, api) = start(&simple_flow(SECRET_ENV, "retry: {max_attempts: 2}"));
    let (run, _) = api.accepted("simple", &json!({"n": 1, "base": backend.base()}));
    api.wait_for(&run, "succeeded");

    let outbox = wait_dead(&api);
    let d = &dead_list(&outbox)[0];
    assert_eq!(d["id"], format!("{run}:notify"), "{d:#}");
    assert_eq!(d["attempts"], 2, "{d:#}");
    assert!(
        d["last_error"].as_str().is_some_and(|e| e.contains("500")),
        "{d:#}"
    );
    assert_eq!(http_target(&outbox)["pending"], 0, "{outbox:#}");
    // No third attempt: the next one would have come within 1 s.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        backend
            .received()
            .iter()
            .filter_map(|r| r.status)
            .collect::<Vec<_>>(),
        [500, 500]
    );
    assert_clean_log(&daemon);
}

// ---- 5. a missing signing secret ------------------------------------------------------

/// A delivery's signing secret must be set when its flow loads (an unset
/// one is a load error naming it). A delivery already in the outbox whose
/// secret went away (weir restarted without it) waits with a clear error;
/// it is never sent unsigned, and other deliveries go on.
#[test]
fn a_missing_signing_secret_is_a_load_error_and_a_waiting_delivery_is_never_sent_unsigned() {
    const GONE: &str = "WEIR_TEST_DELIVERY_SECRET_GONE";
    assert!(std::env::var_os(GONE).is_none());
    let backend = FakeServer::start();
    backend.set_status(503);
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "unsigned.yaml", &simple_flow(GONE, ""));
    write_flow(
        &flows,
        "signed.yaml",
        &simple_flow(SECRET_ENV, "").replace("id: simple", "id: signed"),
    );
    let mut first = Daemon::start(
        dir.path(),
        "first",
        &[],
        &[(SECRET_ENV, SECRET), (GONE, SECRET)],
    );
    let api = Api::new(&first);
    let (run, _) = api.accepted("simple", &json!({"n": 1, "base": backend.base()}));
    api.wait_for(&run, "succeeded");
    wait_until("the backend refused the first attempt", TIMEOUT, || {
        !backend.received().is_empty()
    });
    first.weir.kill();
    backend.set_status(200);

    let daemon = Daemon::start(dir.path(), "daemon", &[], &[(SECRET_ENV, SECRET)]);
    let api = Api::new(&daemon);
    let errors = api.flows()["errors"].to_string();
    assert!(
        errors.contains(GONE) && errors.contains("is not set"),
        "the flow without its secret does not load: {errors}"
    );
    let mut outbox = Value::Null;
    wait_until("the outbox reports the missing secret", TIMEOUT, || {
        outbox = api.outbox();
        http_target(&outbox)["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(GONE))
    });
    let http = http_target(&outbox);
    assert_eq!(
        http["pending"], 1,
        "it waits, it is not dropped: {outbox:#}"
    );
    assert_eq!(http["dead"], 0, "{outbox:#}");

    // The daemon still serves and delivers.
    let (other, _) = api.accepted("signed", &json!({"n": 2, "base": backend.base()}));
    api.wait_for(&other, "succeeded");
    wait_until("the signed flow's delivery arrives", TIMEOUT, || {
        backend.confirmed().len() == 1
    });
    let r = &backend.confirmed()[0];
    assert_eq!(r.webhook_id(), format!("{other}:notify"));
    assert_signed(r);
    let mut outbox = Value::Null;
    wait_until("only the unsigned delivery is pending", TIMEOUT, || {
        outbox = api.outbox();
        http_target(&outbox)["pending"] == 1
    });
    assert!(
        backend
            .with_id(&format!("{run}:notify"))
            .iter()
            .all(|r| r.status == Some(503)),
        "the delivery without its secret was sent again"
    );
}

#[test]
fn deliveries_waiting_in_the_outbox_survive_kill_9() {
    const N: usize = 20;
    let backend = FakeServer::start();
    backend.set_status(503);
    let (dir, daemon, api) = start(&simple_flow(SECRET_ENV, ""));

    let runs: Vec<String> = (0..N)
        .map(|n| {
            api.accepted("simple", &json!({"n": n, "base": backend.base()}))
                .0
        })
        .collect();
    for run in &runs {
        api.wait_for(run, "succeeded");
    }
    // Every delivery is in the outbox, and the backend has refused some.
    wait_until("all deliveries wait in the outbox", TIMEOUT, || {
        http_target(&api.outbox())["pending"] == N
    });
    wait_until("the backend refuses some", TIMEOUT, || {
        !backend.received().is_empty()
    });
    let mut daemon = daemon;
    daemon.weir.kill();
    assert!(
        backend.confirmed().is_empty(),
        "nothing was confirmed before the kill"
    );

    backend.set_status(200);
    let restarted = Daemon::start(dir.path(), "restarted", &[], &[(SECRET_ENV, SECRET)]);
    let api = Api::new(&restarted);
    let expected: BTreeSet<String> = runs.iter().map(|r| format!("{r}:notify")).collect();
    wait_until("all deliveries arrive after the restart", TIMEOUT, || {
        let ids: BTreeSet<String> = backend
            .confirmed()
            .iter()
            .map(|r| r.webhook_id().to_owned())
            .collect();
        ids.len() >= N
    });
    let confirmed = backend.confirmed();
    let ids: BTreeSet<String> = confirmed
        .iter()
        .map(|r| r.webhook_id().to_owned())
        .collect();
    assert_eq!(ids, expected, "each run's delivery, and no other");
    // Each with its own run's payload.
    let by_id: BTreeMap<&str, &Received> = confirmed.iter().map(|r| (r.webhook_id(), r)).collect();
    for (n, run) in runs.iter().enumerate() {
        let r = by_id[format!("{run}:notify").as_str()];
        assert_eq!(r.json()["n"], n, "the payload of run {run}");
        assert_eq!(r.header("weir-run"), Some(run.as_str()));
        assert_signed(r);
    }
    wait_outbox_empty(&api);
    assert_clean_log(&restarted);
}

// ---- 7. order within a run -------------------------------------------------------------

#[test]
fn a_runs_second_delivery_waits_until_its_first_is_confirmed() {
    const RUNS: usize = 10;
    let backend = FakeServer::start();
    // Each run's first delivery is refused once, so it is confirmed only
    // after a backoff; every answer takes a while.
    backend.set_rule(|r, earlier| {
        let first_try = !earlier.iter().any(|e| e.webhook_id() == r.webhook_id());
        if r.header("weir-node") == Some("a") && first_try {
            503
        } else {
            200
        }
    });
    backend.set_delay(Duration::from_millis(100));
    let yaml = format!(
        r#"
id: pair
triggers:
  - id: hook
    type: webhook
nodes:
  - id: a
    type: deliver
    target: http
    url: '{url}'
    secret_env: {SECRET_ENV}
    payload: '#{{step: "a", n: event.body.n}}'
    next: b
  - id: b
    type: deliver
    target: http
    url: '{url}'
    secret_env: {SECRET_ENV}
    payload: '#{{step: "b", n: event.body.n}}'
"#,
        url = backend.url("/steps")
    );
    let (_dir, daemon, api) = start(&yaml);

    let runs: Vec<String> = (0..RUNS)
        .map(|n| api.accepted("pair", &json!({"n": n})).0)
        .collect();
    wait_until("every run's deliveries are confirmed", TIMEOUT, || {
        backend
            .confirmed()
            .iter()
            .filter(|r| r.answered.is_some())
            .count()
            == 2 * RUNS
    });
    for (n, run) in runs.iter().enumerate() {
        let a = backend.with_id(&format!("{run}:a"));
        let b = backend.with_id(&format!("{run}:b"));
        assert_eq!(
            a.iter().filter_map(|r| r.status).collect::<Vec<_>>(),
            [503, 200],
            "run {run}: {a:#?}"
        );
        assert_eq!(b.len(), 1, "run {run}: {b:#?}");
        let a_confirmed = a[1].answered.unwrap();
        assert!(
            b[0].at >= a_confirmed,
            "run {run}: b arrived {:?} before a was confirmed",
            a_confirmed - b[0].at
        );
        assert_eq!(a[1].json(), json!({"step": "a", "n": n}));
        assert_eq!(b[0].json(), json!({"step": "b", "n": n}));
    }
    wait_outbox_empty(&api);
    assert_clean_log(&daemon);
}

// ---- 8. weir outbox ---------------------------------------------------------------------

#[test]
fn weir_outbox_lists_and_retries_deliveries() {
    let backend = FakeServer::start();
    backend.set_status(410);
    let (dir, daemon, api) = start(&simple_flow(SECRET_ENV, ""));
    let (run, _) = api.accepted("simple", &json!({"n": 1, "base": backend.base()}));
    api.wait_for(&run, "succeeded");
    let id = format!("{run}:notify");
    wait_dead(&api);
    let server = daemon.base.as_str();
    let weir = |label: &str, args: &[&str]| {
        let mut all = vec!["outbox"];
        all.extend_from_slice(args);
        let out = run_weir(dir.path(), label, &all, CLI_TIMEOUT);
        out.assert_no_panic();
        out
    };

    // The table: a row per target, then the dead deliveries.
    let out = weir("list", &["list", "--server", server]);
    assert_eq!(out.code, Some(0), "{out}");
    let http_row: Vec<&str> = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("http"))
        .unwrap_or_else(|| panic!("no http row:\n{out}"))
        .split_whitespace()
        .collect();
    // TARGET CONNECTED PENDING DEAD OLDEST LAST-ERROR...
    assert_eq!(&http_row[2..4], ["0", "1"], "pending 0, dead 1:\n{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(&id) && l.contains("410")),
        "the dead delivery with its error:\n{out}"
    );

    // --json prints the API's answer.
    let out = weir("list-json", &["list", "--json", "--server", server]);
    assert_eq!(out.code, Some(0), "{out}");
    let printed: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{out}"));
    assert_eq!(printed, api.outbox());

    // Retry: exit 0, then it is delivered.
    backend.set_status(200);
    let out = weir("retry", &["retry", &id, "--server", server]);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains(&id), "{out}");
    wait_until("the retried delivery arrives", TIMEOUT, || {
        backend.confirmed().len() == 1
    });
    assert_eq!(backend.confirmed()[0].webhook_id(), id);
    wait_outbox_empty(&api);
    wait_gone(&api, &id);

    // An unknown id (this one, now delivered, too) is a usage error: exit 2.
    for (label, unknown) in [
        ("retry-unknown", "no-such-run:notify"),
        ("retry-gone", id.as_str()),
    ] {
        let out = weir(label, &["retry", unknown, "--server", server]);
        assert_eq!(out.code, Some(2), "{out}");
        assert!(out.stderr.contains(unknown), "{out}");
    }
    // No daemon there: exit 1.
    let nowhere = format!("http://{}", FakeServer::unused_address());
    let out = weir("unreachable", &["list", "--server", &nowhere]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_clean_log(&daemon);
}

// ---- redirects ------------------------------------------------------------------

/// A redirect is not a confirmation (a delivery leaves the
/// outbox only after the backend confirmed it with a 2xx). Following a 302
/// would send a GET without the body, whose 200 would wrongly remove the
/// delivery from the outbox.
#[test]
fn a_redirect_does_not_confirm_a_delivery() {
    let backend = FakeServer::start();
    backend.set_rule(|r, _| if r.path == "/in" { 302 } else { 200 });
    backend.set_header("location", "/landed");
    let (_dir, daemon, api) = start(&simple_flow(SECRET_ENV, ""));
    let (run, _) = api.accepted("simple", &json!({"n": 1, "base": backend.base()}));
    api.wait_for(&run, "succeeded");
    wait_until("the backend answers the redirect", TIMEOUT, || {
        backend.received().iter().any(|r| r.status == Some(302))
    });
    // Time for the redirect to be followed, if it is.
    std::thread::sleep(Duration::from_millis(500));
    let landed: Vec<String> = backend
        .received()
        .iter()
        .filter(|r| r.path != "/in")
        .map(|r| format!("{} with {} body bytes", r.path, r.body.len()))
        .collect();
    assert!(landed.is_empty(), "the redirect was followed: {landed:?}");
    let outbox = api.outbox();
    let http = http_target(&outbox);
    assert_eq!(
        http["pending"].as_u64().unwrap() + http["dead"].as_u64().unwrap(),
        1,
        "the delivery left the outbox unconfirmed: {outbox:#}"
    );
    assert_clean_log(&daemon);
}

/// A backend that answers 429 (or 503) with `Retry-After` gets the next
/// attempt no sooner than it asked.
#[test]
fn a_backends_retry_after_is_honoured() {
    let backend = FakeServer::start();
    backend.answer_next(&[429]);
    backend.set_header("retry-after", "2");
    let (_dir, _daemon, api) = start(&simple_flow(SECRET_ENV, ""));
    let (run, _) = api.accepted("simple", &json!({"n": 1, "base": backend.base()}));
    api.wait_for(&run, "succeeded");
    wait_until("the retry is confirmed", TIMEOUT, || {
        backend.confirmed().len() == 1
    });
    let attempts = backend.with_id(&format!("{run}:notify"));
    assert_eq!(
        attempts.iter().filter_map(|r| r.status).collect::<Vec<_>>(),
        [429, 200]
    );
    let gap = attempts[1].at - attempts[0].at;
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
}

/// Each delivery keeps its own error: another delivery's success does not
/// hide that one is failing.
#[test]
fn a_failing_delivery_keeps_its_error_while_others_succeed() {
    let down = FakeServer::start();
    down.set_status(503);
    let up = FakeServer::start();
    let (_dir, _daemon, api) = start(&simple_flow(SECRET_ENV, ""));
    let (failing, _) = api.accepted("simple", &json!({"n": 1, "base": down.base()}));
    api.wait_for(&failing, "succeeded");
    wait_until("the failure shows", TIMEOUT, || {
        !http_target(&api.outbox())["last_error"].is_null()
    });
    let (fine, _) = api.accepted("simple", &json!({"n": 2, "base": up.base()}));
    api.wait_for(&fine, "succeeded");
    wait_until("the other delivery is confirmed", TIMEOUT, || {
        up.confirmed().len() == 1
    });
    let outbox = api.outbox();
    let http = http_target(&outbox);
    let error = http["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{outbox:#}"));
    assert!(error.contains("answered 503"), "{outbox:#}");
    assert_eq!(http["failing"], 1, "{outbox:#}");
    assert_eq!(
        outbox["failing"][0]["id"],
        format!("{failing}:notify"),
        "{outbox:#}"
    );
    assert!(
        outbox["failing"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{outbox:#}"
    );
}
