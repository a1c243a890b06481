//! `weir serve` over HTTP, end to end (docs/flow-format.md, docs/ARCHITECTURE.md, docs/api.md): webhook
//! signatures, bodies and errors, dedupe, acknowledgement before `kill -9`,
//! the runs API and `weir runs`, hot reload, graceful shutdown, overload,
//! concurrency keys, health and metrics. Every test starts its own daemon
//! on port 0 in its own temp folder; the daemon is killed when the test
//! ends, passed or not.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use weir_testkit::api::ids_of;
use weir_testkit::{Answer, Api, Daemon, FakeServer, run_weir, wait_until, write_flow};

/// How long a run may take to reach a state the test waits for (runs here
/// take a few seconds at most; the margin is for a loaded machine).
const RUN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the daemon may take to exit after SIGTERM when it must not wait.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Reloads happen within 2 s; a little margin for the test's own polling.
const RELOAD_TIMEOUT: Duration = Duration::from_millis(2500);
/// How often a test looks again.
const POLL: Duration = Duration::from_millis(20);

// ---- talking to the daemon --------------------------------------------------

/// The `run_id` of a 202 webhook/API answer (which also has an `event_id`
/// for webhooks).
fn accepted(a: &Answer) -> String {
    assert_eq!(a.status, 202, "expected 202: {a}");
    a.body["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run_id: {a}"))
        .to_owned()
}

/// A webhook's 202: `{run_id, event_id}`, nothing else.
fn hook_accepted(a: &Answer) -> String {
    let run = accepted(a);
    let event = a.body["event_id"].as_str().unwrap_or("");
    assert!(!event.is_empty(), "no event_id: {a}");
    assert_eq!(a.body.as_object().unwrap().len(), 2, "{a}");
    run
}

/// `{"error": {"code": CODE, "message": "..."}}` with `status`, and nothing
/// else in the body.
fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{a}");
    let body = a
        .body
        .as_object()
        .unwrap_or_else(|| panic!("not JSON: {a}"));
    assert_eq!(body.keys().collect::<Vec<_>>(), ["error"], "{a}");
    let error = body["error"].as_object().unwrap();
    assert_eq!(
        error.keys().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"code".to_owned(), &"message".to_owned()]),
        "{a}"
    );
    assert_eq!(error["code"], code, "{a}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{a}"
    );
}

/// The record of node `id` in a run object.
fn node<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"] == id))
        .unwrap_or_else(|| panic!("no node '{id}' in {run:#}"))
}

fn time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("`{text}` is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

fn flows_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    flows
}

// ---- signatures, from each scheme's published algorithm ----------------------

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Stripe: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">`, keyed
/// with the whole endpoint secret (`whsec_…` included).
fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    let mac = hmac_sha256(secret.as_bytes(), format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac))
}

/// Standard Webhooks: `v1,<base64 HMAC-SHA256 of "{id}.{t}.{body}">`,
/// keyed with the base64-decoded part of `whsec_<base64>`.
fn standard_signature(secret: &str, id: &str, t: i64, body: &str) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mac = hmac_sha256(&key, format!("{id}.{t}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac))
}

fn standard_headers(secret: &str, id: &str, t: i64, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", t.to_string()),
        ("webhook-signature", standard_signature(secret, id, t, body)),
    ]
}

const HMAC_SECRET: &str = "hmac-test-secret";
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const STRIPE_SECRET: &str = "whsec_stripe_endpoint_secret_for_tests";
/// `whsec_` + base64 of a 32-byte key.
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[test]
fn signature_helpers_match_the_published_examples() {
    // GitHub's documentation ("Validating webhook deliveries").
    assert_eq!(
        hex::encode(hmac_sha256(GITHUB_SECRET.as_bytes(), b"Hello, World!")),
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    // The Standard Webhooks specification's example.
    assert_eq!(
        standard_signature(
            STANDARD_SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

// ---- 1. signatures -------------------------------------------------------------

const SIGNED_FLOW: &str = r#"
id: signed
triggers:
  - id: custom
    type: webhook
    verify: {scheme: hmac-sha256, header: X-Signature, secret_env: TEST_HMAC_SECRET}
  - id: github
    type: webhook
    verify: {scheme: github, secret_env: TEST_GITHUB_SECRET}
  - id: stripe
    type: webhook
    verify: {scheme: stripe, secret_env: TEST_STRIPE_SECRET}
  - id: standard
    type: webhook
    verify: {scheme: standard-webhooks, secret_env: TEST_STANDARD_SECRET}
nodes:
  - id: seen
    type: map
    mapping: {body: event.body, trigger: event.trigger}
"#;

#[test]
fn each_signature_scheme_accepts_a_good_signature_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(&flows_dir(&dir), "signed.yaml", SIGNED_FLOW);
    let daemon = Daemon::start(
        dir.path(),
        "daemon",
        &[],
        &[
            ("TEST_HMAC_SECRET", HMAC_SECRET),
            ("TEST_GITHUB_SECRET", GITHUB_SECRET),
            ("TEST_STRIPE_SECRET", STRIPE_SECRET),
            ("TEST_STANDARD_SECRET", STANDARD_SECRET),
        ],
    );
    let api = Api::new(&daemon);
    let body = r#"{"order": 42, "note": "signed"}"#;
    let post = |trigger: &str, headers: &[(&str, String)]| {
        api.post_raw(
            &format!("/hooks/default/signed/{trigger}"),
            "application/json",
            body,
            headers,
        )
    };
    let refused = |a: Answer, what: &str| {
        assert_eq!(a.status, 401, "{what}: {a}");
        assert_error(&a, 401, "bad_signature");
    };
    let mut runs = Vec::new();

    // hmac-sha256: hex, and `sha256=` hex, in the configured header (its
    // name in any case).
    // The same signed body sent again (here in the other form) verifies
    // and is a duplicate of the first, whatever its unsigned headers.
    let duplicate_of = |a: Answer, first: &str| {
        assert_eq!(a.status, 200, "{a}");
        assert_eq!(a.body["duplicate"], true, "{a}");
        assert_eq!(a.body["run_id"], first, "{a}");
    };
    let hex_mac = hex::encode(hmac_sha256(HMAC_SECRET.as_bytes(), body.as_bytes()));
    runs.push(hook_accepted(&post(
        "custom",
        &[("x-signature", hex_mac.clone())],
    )));
    duplicate_of(
        post("custom", &[("X-Signature", format!("sha256={hex_mac}"))]),
        &runs[0],
    );
    let other = hex::encode(hmac_sha256(HMAC_SECRET.as_bytes(), b"another body"));
    refused(
        post("custom", &[("x-signature", other)]),
        "hmac: wrong body",
    );
    refused(post("custom", &[]), "hmac: no header");
    let wrong_key = hex::encode(hmac_sha256(b"not the secret", body.as_bytes()));
    refused(
        post("custom", &[("x-signature", wrong_key)]),
        "hmac: wrong key",
    );

    // github: `X-Hub-Signature-256: sha256=<hex>`.
    let gh = hex::encode(hmac_sha256(GITHUB_SECRET.as_bytes(), body.as_bytes()));
    runs.push(hook_accepted(&post(
        "github",
        &[("X-Hub-Signature-256", format!("sha256={gh}"))],
    )));
    let gh_wrong = hex::encode(hmac_sha256(b"not the secret", body.as_bytes()));
    refused(
        post(
            "github",
            &[("X-Hub-Signature-256", format!("sha256={gh_wrong}"))],
        ),
        "github: wrong key",
    );

    // stripe: a current timestamp; any matching v1 of several; a wrong key;
    // a timestamp older than the 5 minute tolerance, correctly signed.
    let now = Utc::now().timestamp();
    runs.push(hook_accepted(&post(
        "stripe",
        &[(
            "Stripe-Signature",
            stripe_signature(STRIPE_SECRET, now, body),
        )],
    )));
    let good = stripe_signature(STRIPE_SECRET, now - 1, body);
    let v1 = good.split(",v1=").nth(1).unwrap();
    let bad = hex::encode(hmac_sha256(b"old secret", b"x"));
    let several = format!("t={},v1={bad},v1={v1}", now - 1);
    runs.push(hook_accepted(&post(
        "stripe",
        &[("Stripe-Signature", several.clone())],
    )));
    duplicate_of(
        post(
            "stripe",
            &[("Stripe-Signature", format!("{several},v1={bad}"))],
        ),
        runs.last().unwrap(),
    );
    refused(
        post(
            "stripe",
            &[(
                "Stripe-Signature",
                stripe_signature("whsec_not_the_secret", now, body),
            )],
        ),
        "stripe: wrong key",
    );
    refused(
        post(
            "stripe",
            &[(
                "Stripe-Signature",
                stripe_signature(STRIPE_SECRET, now - 600, body),
            )],
        ),
        "stripe: stale timestamp",
    );

    // standard-webhooks: one signature; a space-separated list with a wrong
    // one first; a wrong key; stale and future timestamps.
    runs.push(hook_accepted(&post(
        "standard",
        &standard_headers(STANDARD_SECRET, "msg_1", now, body),
    )));
    let mut several = standard_headers(STANDARD_SECRET, "msg_2", now, body);
    let wrong = standard_signature("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "msg_2", now, body);
    several[2].1 = format!("{wrong} {}", several[2].1);
    runs.push(hook_accepted(&post("standard", &several)));
    refused(
        post(
            "standard",
            &standard_headers("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "msg_3", now, body),
        ),
        "standard: wrong key",
    );
    refused(
        post(
            "standard",
            &standard_headers(STANDARD_SECRET, "msg_4", now - 600, body),
        ),
        "standard: stale timestamp",
    );
    refused(
        post(
            "standard",
            &standard_headers(STANDARD_SECRET, "msg_5", now + 600, body),
        ),
        "standard: future timestamp",
    );
    // Signed for another body.
    let tampered = standard_headers(STANDARD_SECRET, "msg_6", now, r#"{"order": 1}"#);
    refused(post("standard", &tampered), "standard: other body");

    // A refused request leaves no run; each accepted one has exactly one.
    let mut listed = api.ids("flow=signed");
    listed.sort();
    runs.sort();
    assert_eq!(listed, runs);
    for id in &runs {
        let run = api.wait_for(id, "succeeded");
        assert_eq!(
            node(&run, "seen")["output"]["body"],
            json!({"order": 42, "note": "signed"}),
            "{run:#}"
        );
    }
}

// ---- 2. bodies and errors --------------------------------------------------

const BODIES_FLOW: &str = r#"
id: bodies
triggers:
  - {id: hook, type: webhook, max_body: 100}
  - {id: call, type: api}
nodes:
  - id: seen
    type: map
    mapping: {body: event.body}
"#;

#[test]
fn webhook_bodies_are_parsed_by_content_type_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(&flows_dir(&dir), "bodies.yaml", BODIES_FLOW);
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    let hook = "/hooks/default/bodies/hook";
    let event_of = |a: &Answer| api.run(&hook_accepted(a))["event"].clone();
    let mut accepted_runs = 0;

    // JSON (with a charset), its headers (lower-cased), query and method.
    let event = event_of(&api.post_raw(
        &format!("{hook}?page=2&q=a+b"),
        "application/json; charset=utf-8",
        r#"{"ok": true, "n": [1, 2.5]}"#,
        &[("X-Custom-Header", "Yes".into())],
    ));
    accepted_runs += 1;
    assert_eq!(event["type"], "webhook", "{event:#}");
    assert_eq!(event["trigger"], "hook", "{event:#}");
    assert_eq!(event["method"], "POST", "{event:#}");
    assert_eq!(
        event["body"],
        json!({"ok": true, "n": [1, 2.5]}),
        "{event:#}"
    );
    assert_eq!(event["headers"]["x-custom-header"], "Yes", "{event:#}");
    assert_eq!(
        event["query"],
        json!({"page": "2", "q": "a b"}),
        "{event:#}"
    );

    // Form-encoded: a map of strings.
    let event = event_of(&api.post_raw(
        hook,
        "application/x-www-form-urlencoded",
        "a=1&b=hello+world&c=%C3%A9t%C3%A9",
        &[],
    ));
    accepted_runs += 1;
    assert_eq!(
        event["body"],
        json!({"a": "1", "b": "hello world", "c": "été"}),
        "{event:#}"
    );

    // Other text: JSON if it parses, else the text.
    let event = event_of(&api.post_raw(hook, "text/plain", "hello there", &[]));
    accepted_runs += 1;
    assert_eq!(event["body"], "hello there", "{event:#}");
    let event = event_of(&api.post_raw(hook, "text/plain", r#"{"x": [1, 2]}"#, &[]));
    accepted_runs += 1;
    assert_eq!(event["body"], json!({"x": [1, 2]}), "{event:#}");

    // The run finished with what it saw.
    let id = hook_accepted(&api.post_raw(hook, "text/plain", "plain", &[]));
    accepted_runs += 1;
    let run = api.wait_for(&id, "succeeded");
    assert_eq!(node(&run, "seen")["output"], json!({"body": "plain"}));

    // Bad JSON with a JSON content type: 400.
    assert_error(
        &api.post_raw(hook, "application/json", r#"{"a": "#, &[]),
        400,
        "bad_request",
    );
    assert_error(
        &api.post_raw(hook, "application/json; charset=utf-8", "not json", &[]),
        400,
        "bad_request",
    );

    // `max_body: 100`: 100 bytes pass, 101 are too large.
    let exactly = format!(r#"{{"pad":"{}"}}"#, "x".repeat(90));
    assert_eq!(exactly.len(), 100);
    hook_accepted(&api.post_raw(hook, "application/json", &exactly, &[]));
    accepted_runs += 1;
    let over = format!(r#"{{"pad":"{}"}}"#, "x".repeat(91));
    assert_error(
        &api.post_raw(hook, "application/json", &over, &[]),
        413,
        "too_large",
    );
    assert_error(
        &api.post_raw(hook, "text/plain", &"y".repeat(5000), &[]),
        413,
        "too_large",
    );

    // Unknown tenant, flow, trigger (and an api trigger is no webhook).
    let body = json!({"a": 1});
    for path in [
        "/hooks/acme/bodies/hook",
        "/hooks/default/nope/hook",
        "/hooks/default/bodies/nope",
        "/hooks/default/bodies/call",
    ] {
        let a = api.hook(path, &body, &[]);
        assert_error(&a, 404, "not_found");
    }
    // An unknown API path answers the same shape.
    assert_error(&api.get("/api/v1/nothing-here"), 404, "not_found");

    // Refused requests left no run.
    assert_eq!(api.ids("flow=bodies").len(), accepted_runs);
}

// ---- 3. dedupe ------------------------------------------------------------------

const DEDUPE_FLOW: &str = r#"
id: deduped
tenants: [default, acme]
triggers:
  - id: hook
    type: webhook
    dedupe: event.headers["x-request-id"]
  - id: standard
    type: webhook
    verify: {scheme: standard-webhooks, secret_env: TEST_STANDARD_SECRET}
nodes:
  - id: seen
    type: map
    mapping: {body: event.body}
"#;

#[test]
fn a_repeated_dedupe_key_starts_no_run_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(&flows_dir(&dir), "deduped.yaml", DEDUPE_FLOW);
    let env = [("TEST_STANDARD_SECRET", STANDARD_SECRET)];
    let mut first = Daemon::start(dir.path(), "first", &[], &env);
    let api = Api::new(&first);
    let hook = "/hooks/default/deduped/hook";
    let rid = |id: &str| vec![("x-request-id", id.to_owned())];
    let duplicate_of = |a: &Answer, run: &str| {
        assert_eq!(a.status, 200, "expected a duplicate: {a}");
        assert_eq!(a.body["run_id"], run, "{a}");
        assert_eq!(a.body["duplicate"], true, "{a}");
    };

    let a = hook_accepted(&api.hook(hook, &json!({"n": 1}), &rid("r-1")));
    duplicate_of(&api.hook(hook, &json!({"n": 2}), &rid("r-1")), &a);
    let b = hook_accepted(&api.hook(hook, &json!({"n": 3}), &rid("r-2")));
    assert_ne!(a, b);
    // No header: the expression yields nothing, so no dedupe.
    let c = hook_accepted(&api.hook(hook, &json!({"n": 4}), &[]));
    let d = hook_accepted(&api.hook(hook, &json!({"n": 4}), &[]));
    assert_ne!(c, d);
    // The same key for another tenant is another key.
    let e = hook_accepted(&api.hook("/hooks/acme/deduped/hook", &json!({"n": 5}), &rid("r-1")));

    // standard-webhooks: the `webhook-id` (signed again, later, another body).
    let standard = "/hooks/default/deduped/standard";
    let now = Utc::now().timestamp();
    let send = |id: &str, t: i64, body: &str| {
        api.post_raw(
            standard,
            "application/json",
            body,
            &standard_headers(STANDARD_SECRET, id, t, body),
        )
    };
    let f = hook_accepted(&send("msg_1", now, r#"{"m": 1}"#));
    duplicate_of(&send("msg_1", now + 1, r#"{"m": 2}"#), &f);
    let g = hook_accepted(&send("msg_2", now, r#"{"m": 1}"#));
    // A refused request records no key: a good one with its id is new.
    let mut forged = standard_headers(STANDARD_SECRET, "msg_3", now, r#"{"m": 0}"#);
    forged[2].1 = standard_signature("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "msg_3", now, "x");
    let refused = api.post_raw(standard, "application/json", r#"{"m": 0}"#, &forged);
    assert_error(&refused, 401, "bad_signature");
    let h = hook_accepted(&send("msg_3", now, r#"{"m": 1}"#));

    // The same new key sent by several clients at once: one run.
    let shared = &api;
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..6)
            .map(|n| s.spawn(move || shared.hook(hook, &json!({"n": 10 + n}), &rid("r-race"))))
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let firsts: Vec<&Answer> = answers.iter().filter(|a| a.status == 202).collect();
    assert_eq!(
        firsts.len(),
        1,
        "{:#?}",
        answers.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    let raced = hook_accepted(firsts[0]);
    for answer in answers.iter().filter(|a| a.status != 202) {
        duplicate_of(answer, &raced);
    }

    let mut expected = vec![a.clone(), b, c, d, e, f.clone(), g, h, raced];
    expected.sort();
    let mut listed = api.ids("flow=deduped");
    listed.sort();
    assert_eq!(listed, expected, "one run per distinct key");
    assert_eq!(api.run(&a)["event"]["body"], json!({"n": 1}), "the first");

    // The keys are on disk: after kill -9 and a restart they still hold.
    first.weir.kill();
    let second = Daemon::start(dir.path(), "second", &[], &env);
    let api = Api::new(&second);
    duplicate_of(&api.hook(hook, &json!({"n": 6}), &rid("r-1")), &a);
    let now = Utc::now().timestamp();
    let body = r#"{"m": 3}"#;
    duplicate_of(
        &api.post_raw(
            standard,
            "application/json",
            body,
            &standard_headers(STANDARD_SECRET, "msg_1", now, body),
        ),
        &f,
    );
    let later = hook_accepted(&api.hook(hook, &json!({"n": 7}), &rid("r-3")));
    expected.push(later);
    expected.sort();
    let mut listed = api.ids("flow=deduped");
    listed.sort();
    assert_eq!(listed, expected);
}

#[test]
fn dedupe_keys_expire_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(&flows_dir(&dir), "deduped.yaml", DEDUPE_FLOW);
    let env = [("TEST_STANDARD_SECRET", STANDARD_SECRET)];
    let daemon = Daemon::start(dir.path(), "daemon", &["--dedupe-retention", "1s"], &env);
    let api = Api::new(&daemon);
    let hook = "/hooks/default/deduped/hook";
    let headers = [("x-request-id", "r-1".to_owned())];
    let sent = Instant::now();
    let first = hook_accepted(&api.hook(hook, &json!({}), &headers));
    // Duplicates until the key is 1 s old, then a new run.
    let deadline = sent + Duration::from_secs(5);
    let later = loop {
        let a = api.hook(hook, &json!({}), &headers);
        if a.status == 202 {
            assert!(
                sent.elapsed() >= Duration::from_secs(1),
                "the key expired after {:?}",
                sent.elapsed()
            );
            break hook_accepted(&a);
        }
        assert_eq!(a.status, 200, "{a}");
        assert_eq!(a.body["run_id"], first.as_str(), "{a}");
        assert!(Instant::now() < deadline, "the key never expired");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_ne!(later, first);
}

// ---- 4. kill -9 after the acknowledgement -------------------------------------

const DURABLE_FLOW: &str = r#"
id: durable
triggers:
  - {id: hook, type: webhook}
nodes:
  - id: pause
    type: delay
    for: 1s
    next: summary
  - id: summary
    type: map
    mapping:
      order: event.body.order
      total: event.body.qty * event.body.price
      via: event.trigger
"#;

#[test]
fn an_acknowledged_webhook_survives_kill_9_and_its_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(&flows_dir(&dir), "durable.yaml", DURABLE_FLOW);
    let mut first = Daemon::start(dir.path(), "first", &[], &[]);
    let api = Api::new(&first);
    let sent = Instant::now();
    let id = hook_accepted(&api.hook(
        "/hooks/default/durable/hook",
        &json!({"order": "o-1", "qty": 3, "price": 7}),
        &[],
    ));
    first.weir.kill();
    let kill_took = sent.elapsed();
    let killed_at = Utc::now();

    let second = Daemon::start(dir.path(), "second", &[], &[]);
    let api = Api::new(&second);
    let run = api.wait_for(&id, "succeeded");
    assert_eq!(
        node(&run, "summary")["output"],
        json!({"order": "o-1", "total": 21, "via": "hook"}),
        "{run:#}"
    );
    assert_eq!(node(&run, "pause")["status"], "succeeded", "{run:#}");
    // The run cannot have finished before the kill if the kill came within
    // the delay of the request being sent (the run starts after that).
    if kill_took < Duration::from_secs(1) {
        assert!(
            time(&run["finished_at"]) > killed_at,
            "the run finished before the kill; the test proves nothing: {run:#}"
        );
    } else {
        eprintln!("the kill took {kill_took:?}; not checking that the run was interrupted");
    }
    assert_eq!(api.ids("flow=durable"), [id], "exactly one run");
}

#[test]
fn a_run_resumed_after_a_restart_finishes_on_the_flow_version_it_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let flows = flows_dir(&dir);
    let flow = |word: &str| {
        format!(
            "id: versioned\ntriggers: [{{id: hook, type: webhook}}]\nnodes:\n\
             - {{id: pause, type: delay, for: 1s, next: m}}\n\
             - {{id: m, type: map, mapping: {{v: '\"{word}\"'}}}}\n"
        )
    };
    let file = write_flow(&flows, "versioned.yaml", &flow("one"));
    let mut first = Daemon::start(dir.path(), "first", &[], &[]);
    let api = Api::new(&first);
    let v1 = version_of(&api.flows(), "versioned").unwrap();
    let hook = "/hooks/default/versioned/hook";
    let old = hook_accepted(&api.hook(hook, &json!({}), &[]));
    first.weir.kill();
    std::fs::write(&file, flow("two")).unwrap();

    let second = Daemon::start(dir.path(), "second", &[], &[]);
    let api = Api::new(&second);
    let v2 = version_of(&api.flows(), "versioned").unwrap();
    assert_ne!(v1, v2);
    let new = hook_accepted(&api.hook(hook, &json!({}), &[]));
    let run = api.wait_for(&old, "succeeded");
    assert_eq!(run["flow_version"], v1.as_str(), "{run:#}");
    assert_eq!(node(&run, "m")["output"], json!({"v": "one"}), "{run:#}");
    let run = api.wait_for(&new, "succeeded");
    assert_eq!(run["flow_version"], v2.as_str(), "{run:#}");
    assert_eq!(node(&run, "m")["output"], json!({"v": "two"}), "{run:#}");
}

// ---- 5. the runs API and `weir runs` ----------------------------------------

const ORDERS_FLOW: &str = r#"
id: orders
tenants: [default, acme]
triggers:
  - {id: call, type: api}
nodes:
  - id: total
    type: map
    mapping: {total: event.body.qty * event.body.price, tenant: tenant}
"#;

const SLEEPY_FLOW: &str = r#"
id: sleepy
triggers:
  - {id: call, type: api}
nodes:
  - {id: nap, type: delay, for: 60s}
"#;

fn charge_flow(url: &str) -> String {
    format!(
        r#"
id: charge
triggers:
  - {{id: call, type: api}}
nodes:
  - id: prepare
    type: map
    mapping: {{amount: event.body.amount}}
    next: pay
  - id: pay
    type: http
    method: POST
    url: {url}
    body: nodes.prepare
    next: receipt
  - id: receipt
    type: map
    mapping: {{paid: nodes.pay.body.echo.amount, status: nodes.pay.status}}
"#
    )
}

/// `weir runs ARGS... --server URL` (stdout, stderr, exit code).
fn weir_runs(
    dir: &std::path::Path,
    label: &str,
    daemon: &Daemon,
    args: &[&str],
) -> weir_testkit::Finished {
    let mut all = vec!["runs"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", &daemon.base]);
    let done = run_weir(dir, label, &all, Duration::from_secs(20));
    done.assert_no_panic();
    done
}

#[test]
fn the_runs_api_and_cli_start_list_show_cancel_and_retry_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start();
    let flows = flows_dir(&dir);
    write_flow(&flows, "orders.yaml", ORDERS_FLOW);
    write_flow(&flows, "sleepy.yaml", SLEEPY_FLOW);
    write_flow(&flows, "charge.yaml", &charge_flow(&server.url("/pay")));
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    let start = "/api/v1/flows/orders/runs";

    // Without ?wait: 202 {run_id}.
    let a = api.post(start, &json!({"input": {"qty": 2, "price": 5}}));
    let first = accepted(&a);
    assert_eq!(a.body.as_object().unwrap().len(), 1, "{a}");
    let run = api.wait_for(&first, "succeeded");
    assert_eq!(run["flow"], "orders");
    assert_eq!(run["tenant"], "default");
    assert_eq!(run["trigger"], "call");
    assert_eq!(run["event"]["type"], "api");
    assert_eq!(run["event"]["body"], json!({"qty": 2, "price": 5}));
    assert_eq!(
        node(&run, "total")["output"],
        json!({"total": 10, "tenant": "default"})
    );

    // With ?wait=5: 200 and the finished run object.
    let a = api.post(
        &format!("{start}?wait=5&tenant=acme"),
        &json!({"input": {"qty": 3, "price": 4}}),
    );
    assert_eq!(a.status, 200, "{a}");
    let acme = a.body["id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["status"], "succeeded", "{a}");
    assert_eq!(a.body["tenant"], "acme", "{a}");
    for key in ["flow_version", "created_at", "started_at", "finished_at"] {
        assert!(a.body[key].is_string(), "{key}: {a}");
    }
    assert_eq!(
        node(&a.body, "total")["output"],
        json!({"total": 12, "tenant": "acme"}),
        "{a}"
    );
    assert_eq!(node(&a.body, "total")["attempts"], 1, "{a}");

    // Starting errors.
    assert_error(
        &api.post("/api/v1/flows/nope/runs", &json!({"input": {}})),
        404,
        "not_found",
    );
    assert_error(
        &api.post(&format!("{start}?tenant=other"), &json!({"input": {}})),
        404,
        "not_found",
    );
    // The tenant is named by the request, not in the body.
    assert_error(
        &api.post(start, &json!({"tenant": "acme", "input": {}})),
        400,
        "bad_request",
    );
    assert_error(
        &api.post_raw(start, "application/json", "{not json", &[]),
        400,
        "bad_request",
    );

    let mut orders = vec![first.clone(), acme.clone()];
    for n in 0..3 {
        let id = accepted(&api.post(start, &json!({"input": {"qty": n, "price": 1}})));
        api.wait_for(&id, "succeeded");
        orders.push(id);
    }

    // Two charges fail: the payment answers 500 and the node has no retries.
    server.set_status(500);
    let charge = "/api/v1/flows/charge/runs";
    let charge_api = accepted(&api.post(charge, &json!({"input": {"amount": 10}})));
    let charge_cli = accepted(&api.post(charge, &json!({"input": {"amount": 20}})));
    for id in [&charge_api, &charge_cli] {
        let run = api.wait_for(id, "failed");
        assert!(!run["error"].is_null(), "{run:#}");
        assert_eq!(node(&run, "prepare")["status"], "succeeded", "{run:#}");
        assert_eq!(node(&run, "prepare")["attempts"], 1, "{run:#}");
        assert_eq!(node(&run, "pay")["status"], "failed", "{run:#}");
        let receipt = run["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "receipt");
        assert!(
            receipt.is_none_or(|n| n["status"] != "succeeded"),
            "{run:#}"
        );
    }
    assert_eq!(server.count("/pay"), 2);

    // Cancel a run sleeping in a 60 s delay; a finished run cannot be.
    // ?wait that runs out: 202, and the run is not finished.
    let a = api.post("/api/v1/flows/sleepy/runs?wait=1", &json!({"input": null}));
    assert_eq!(a.status, 202, "{a}");
    let sleepy = a.body["id"]
        .as_str()
        .or(a.body["run_id"].as_str())
        .unwrap_or_else(|| panic!("no run id: {a}"))
        .to_owned();
    if a.body.get("status").is_some() {
        assert!(
            ["queued", "running", "waiting"]
                .iter()
                .any(|s| a.body["status"] == *s),
            "{a}"
        );
    }
    api.wait_for(&sleepy, "waiting");
    let a = api.post(&format!("/api/v1/runs/{sleepy}/cancel"), &json!({}));
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(a.body["status"], "cancelled", "{a}");
    let run = api.run(&sleepy);
    assert_eq!(run["status"], "cancelled", "{run:#}");
    assert!(run["finished_at"].is_string(), "{run:#}");
    assert_error(
        &api.post(&format!("/api/v1/runs/{sleepy}/cancel"), &json!({})),
        409,
        "conflict",
    );
    assert_error(
        &api.post(&format!("/api/v1/runs/{first}/cancel"), &json!({})),
        409,
        "conflict",
    );
    assert_error(
        &api.post("/api/v1/runs/no-such-run/cancel", &json!({})),
        404,
        "not_found",
    );
    assert_error(&api.get("/api/v1/runs/no-such-run"), 404, "not_found");

    // Lists: newest first, filtered, paginated.
    orders.reverse();
    assert_eq!(api.ids("flow=orders"), orders, "newest first");
    assert_eq!(api.ids("flow=orders&tenant=acme"), [acme.as_str()]);
    assert_eq!(api.ids("tenant=acme"), [acme.as_str()]);
    assert_eq!(api.ids("flow=orders&status=succeeded"), orders);
    let mut failed = vec![charge_cli.clone(), charge_api.clone()];
    failed.sort();
    failed.reverse();
    assert_eq!(api.ids("status=failed"), failed);
    assert_eq!(api.ids("status=cancelled"), [sleepy.as_str()]);
    assert!(api.ids("flow=orders&status=failed").is_empty());
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let query = match &after {
            Some(a) => format!("flow=orders&limit=2&after={a}"),
            None => "flow=orders&limit=2".to_owned(),
        };
        let page = api.list(&query);
        let ids = ids_of(&page);
        assert!(ids.len() <= 2, "{page:#}");
        pages.extend(ids.clone());
        match page["next_after"].as_str() {
            Some(next) => {
                assert_eq!(Some(next), ids.last().map(String::as_str), "{page:#}");
                after = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages.len() <= orders.len(), "pagination does not end");
    }
    assert_eq!(pages, orders, "the pages, in order, are the whole list");
    let list = api.list("flow=orders&limit=2");
    assert!(list["items"][0].get("nodes").is_none(), "{list:#}");
    assert_error(&api.get("/api/v1/runs?status=bogus"), 400, "bad_request");

    // Retry: only a failed run; then from its failed node only.
    assert_error(
        &api.post(&format!("/api/v1/runs/{first}/retry"), &json!({})),
        409,
        "conflict",
    );
    server.set_status(200);
    let a = api.post(&format!("/api/v1/runs/{charge_api}/retry"), &json!({}));
    assert_eq!(a.status, 202, "{a}");
    assert_eq!(a.body["id"], charge_api.as_str(), "{a}");
    let run = api.wait_for(&charge_api, "succeeded");
    assert_eq!(node(&run, "prepare")["attempts"], 1, "not re-run: {run:#}");
    assert_eq!(node(&run, "pay")["status"], "succeeded", "{run:#}");
    assert_eq!(
        node(&run, "receipt")["output"],
        json!({"paid": 10, "status": 200}),
        "{run:#}"
    );
    assert!(run["error"].is_null(), "{run:#}");
    assert_eq!(server.count("/pay"), 3);

    // The same from a terminal.
    let done = weir_runs(dir.path(), "retry", &daemon, &["retry", &charge_cli]);
    assert_eq!(done.code, Some(0), "{done}");
    assert!(done.stdout.contains(&charge_cli), "{done}");
    let run = api.wait_for(&charge_cli, "succeeded");
    assert_eq!(node(&run, "prepare")["attempts"], 1, "not re-run: {run:#}");
    assert_eq!(
        node(&run, "receipt")["output"],
        json!({"paid": 20, "status": 200}),
        "{run:#}"
    );
    assert_eq!(server.count("/pay"), 4);

    let done = weir_runs(dir.path(), "show", &daemon, &["show", &charge_cli]);
    assert_eq!(done.code, Some(0), "{done}");
    let out = &done.stdout;
    assert!(out.contains(&format!("run      {charge_cli}")), "{done}");
    assert!(out.contains("flow     charge"), "{done}");
    assert!(out.contains("status   succeeded"), "{done}");
    for name in ["prepare", "pay", "receipt"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(name) && l.contains("succeeded")),
            "no row for {name}: {done}"
        );
    }
    let done = weir_runs(
        dir.path(),
        "show-json",
        &daemon,
        &["show", &charge_cli, "--json"],
    );
    assert_eq!(done.code, Some(0), "{done}");
    let shown: Value = serde_json::from_str(done.stdout.trim()).unwrap();
    assert_eq!(shown, api.run(&charge_cli));

    let done = weir_runs(dir.path(), "list", &daemon, &["list", "--flow", "orders"]);
    assert_eq!(done.code, Some(0), "{done}");
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{done}"
    );
    for (line, id) in lines[1..].iter().zip(&orders) {
        assert!(
            line.starts_with(id.as_str()) && line.contains("succeeded"),
            "{done}"
        );
    }
    assert_eq!(lines.len(), 1 + orders.len(), "{done}");
    let done = weir_runs(
        dir.path(),
        "list-json",
        &daemon,
        &["list", "--flow", "orders", "--limit", "2", "--json"],
    );
    assert_eq!(done.code, Some(0), "{done}");
    let listed: Value = serde_json::from_str(done.stdout.trim()).unwrap();
    assert_eq!(ids_of(&listed), orders[..2]);
    assert_eq!(listed["next_after"], orders[1].as_str());

    let done = weir_runs(dir.path(), "cancel", &daemon, &["cancel", &first]);
    assert_ne!(done.code, Some(0), "{done}");
    assert!(done.stderr.contains("409"), "{done}");
}

#[test]
fn api_wait_answers_a_run_that_sleeps_on_a_long_timer() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(
        &flows_dir(&dir),
        "napper.yaml",
        "id: napper\ntriggers: [{id: call, type: api}]\nnodes:\n\
         - {id: nap, type: delay, for: 2500ms, next: m}\n\
         - {id: m, type: map, mapping: {x: event.body.x}}\n",
    );
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    let a = api.post(
        "/api/v1/flows/napper/runs?wait=10",
        &json!({"input": {"x": 5}}),
    );
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(a.body["status"], "succeeded", "{a}");
    assert_eq!(node(&a.body, "m")["output"], json!({"x": 5}), "{a}");
}

// ---- 6. hot reload ------------------------------------------------------------

fn reload_flow(literal: &str) -> String {
    format!(
        r#"
id: reload
triggers:
  - {{id: hook, type: webhook}}
nodes:
  - id: pause
    type: delay
    until: event.body.until
    next: m
  - id: m
    type: map
    mapping: {{v: '{literal}'}}
"#
    )
}

/// An RFC 3339 time `ms` milliseconds from now.
fn in_ms(ms: i64) -> String {
    (Utc::now() + chrono::Duration::milliseconds(ms)).to_rfc3339()
}

/// The version of flow `id` in `GET /api/v1/flows`, if it is loaded.
fn version_of(flows: &Value, id: &str) -> Option<String> {
    flows["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .map(|f| f["version"].as_str().unwrap().to_owned())
}

/// The load errors of the file named `name` in `GET /api/v1/flows`.
fn errors_of(flows: &Value, name: &str) -> Option<Value> {
    flows["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"].as_str().is_some_and(|f| f.ends_with(name)))
        .cloned()
}

#[test]
fn flow_files_reload_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let flows = flows_dir(&dir);
    let file = write_flow(&flows, "reload.yaml", &reload_flow(r#""one""#));
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    let hook = "/hooks/default/reload/hook";
    let run_once = || {
        let id = hook_accepted(&api.hook(hook, &json!({"until": in_ms(0)}), &[]));
        api.wait_for(&id, "succeeded")
    };

    let v1 = version_of(&api.flows(), "reload").expect("the flow is loaded");
    let run = run_once();
    assert_eq!(run["flow_version"], v1.as_str());
    assert_eq!(node(&run, "m")["output"], json!({"v": "one"}));
    // This one sleeps through the change.
    let on_v1 = hook_accepted(&api.hook(hook, &json!({"until": in_ms(2500)}), &[]));

    // A change: new runs use the new version.
    std::fs::write(&file, reload_flow(r#""two""#)).unwrap();
    let mut v2 = None;
    wait_until("the changed flow is loaded", RELOAD_TIMEOUT, || {
        v2 = version_of(&api.flows(), "reload").filter(|v| *v != v1);
        v2.is_some()
    });
    let v2 = v2.unwrap();
    let run = run_once();
    assert_eq!(run["flow_version"], v2.as_str(), "{run:#}");
    assert_eq!(node(&run, "m")["output"], json!({"v": "two"}), "{run:#}");
    // A run finishes on the version it started with.
    let run = api.wait_for(&on_v1, "succeeded");
    assert_eq!(run["flow_version"], v1.as_str(), "{run:#}");
    assert_eq!(node(&run, "m")["output"], json!({"v": "one"}), "{run:#}");

    // An invalid version: reported, and the last valid one keeps serving.
    std::fs::write(&file, reload_flow(r#""three" +"#)).unwrap();
    let mut error = None;
    wait_until("the invalid flow is reported", RELOAD_TIMEOUT, || {
        error = errors_of(&api.flows(), "reload.yaml");
        error.is_some()
    });
    let error = error.unwrap();
    assert!(
        error["errors"].as_array().is_some_and(|e| !e.is_empty()),
        "{error:#}"
    );
    assert_eq!(version_of(&api.flows(), "reload"), Some(v2.clone()));
    let run = run_once();
    assert_eq!(run["flow_version"], v2.as_str(), "{run:#}");
    assert_eq!(node(&run, "m")["output"], json!({"v": "two"}), "{run:#}");

    // A new file serves.
    write_flow(
        &flows,
        "added.yaml",
        "id: added\ntriggers: [{id: hook, type: webhook}]\nnodes: [{id: m, type: map, mapping: {ok: true}}]\n",
    );
    wait_until("the new flow is loaded", RELOAD_TIMEOUT, || {
        version_of(&api.flows(), "added").is_some()
    });
    let id = hook_accepted(&api.hook("/hooks/default/added/hook", &json!({}), &[]));
    let run = api.wait_for(&id, "succeeded");
    assert_eq!(node(&run, "m")["output"], json!({"ok": true}));

    // A deleted file: its flow is gone, and so is its error.
    std::fs::remove_file(&file).unwrap();
    wait_until("the deleted flow is unloaded", RELOAD_TIMEOUT, || {
        version_of(&api.flows(), "reload").is_none()
    });
    assert_error(
        &api.hook(hook, &json!({"until": in_ms(0)}), &[]),
        404,
        "not_found",
    );
    wait_until("the deleted file's error is gone", RELOAD_TIMEOUT, || {
        errors_of(&api.flows(), "reload.yaml").is_none()
    });
    assert!(version_of(&api.flows(), "added").is_some());
}

// ---- 7. graceful shutdown ----------------------------------------------------

fn slow_call_flow(url: &str) -> String {
    format!(
        r#"
id: slowcall
triggers:
  - {{id: hook, type: webhook}}
nodes:
  - id: call
    type: http
    method: POST
    url: {url}
    body: event.body
    next: after
  - id: after
    type: map
    mapping: {{got: nodes.call.body.echo, id: nodes.call.body.id}}
"#
    )
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_and_the_run_resumes_without_resending_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start();
    server.set_delay(Duration::from_secs(1));
    write_flow(
        &flows_dir(&dir),
        "slowcall.yaml",
        &slow_call_flow(&server.url("/slow")),
    );
    let daemon = Daemon::start(dir.path(), "first", &["--grace", "10s"], &[]);
    let api = Api::new(&daemon);
    let id = hook_accepted(&api.hook("/hooks/default/slowcall/hook", &json!({"n": 1}), &[]));
    wait_until("the request reaches the server", RUN_TIMEOUT, || {
        server.count("/slow") == 1
    });
    drop(api);
    let terminated = Instant::now();
    daemon.weir.terminate();
    let done = daemon.weir.finish(EXIT_TIMEOUT);
    let exited = Instant::now();
    done.assert_no_panic();
    assert_eq!(done.code, Some(0), "{done}");
    let answered = server.answered_at("/slow");
    assert_eq!(answered.len(), 1, "the server answered: {done}");
    assert!(
        answered[0] <= exited,
        "the daemon exited before the response arrived: {done}"
    );
    assert!(
        exited - terminated < Duration::from_secs(10),
        "the daemon took longer than --grace: {done}"
    );

    let daemon = Daemon::start(dir.path(), "second", &[], &[]);
    let api = Api::new(&daemon);
    let run = api.wait_for(&id, "succeeded");
    let call = node(&run, "call");
    assert_eq!(call["attempts"], 1, "{run:#}");
    assert_eq!(call["output"]["status"], 200, "{run:#}");
    assert_eq!(
        node(&run, "after")["output"],
        json!({"got": {"n": 1}, "id": "srv-1"}),
        "{run:#}"
    );
    assert_eq!(server.count("/slow"), 1, "the request was sent again");
}

const SLEEPER_FLOW: &str = r#"
id: sleeper
triggers:
  - {id: hook, type: webhook}
nodes:
  - {id: nap, type: delay, for: 4s, next: done}
  - {id: done, type: map, mapping: {ok: true}}
"#;

#[test]
fn sigterm_does_not_wait_for_timers_and_the_delay_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(&flows_dir(&dir), "sleeper.yaml", SLEEPER_FLOW);
    let daemon = Daemon::start(dir.path(), "first", &["--grace", "20s"], &[]);
    let api = Api::new(&daemon);
    let id = hook_accepted(&api.hook("/hooks/default/sleeper/hook", &json!({}), &[]));
    api.wait_for(&id, "waiting");
    drop(api);
    let terminated = Instant::now();
    daemon.weir.terminate();
    let done = daemon.weir.finish(EXIT_TIMEOUT);
    let took = terminated.elapsed();
    done.assert_no_panic();
    assert_eq!(done.code, Some(0), "{done}");
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM took {took:?} with only a timer pending (grace 20s): {done}"
    );

    let daemon = Daemon::start(dir.path(), "second", &[], &[]);
    let api = Api::new(&daemon);
    let run = api.wait_for(&id, "succeeded");
    let nap = node(&run, "nap");
    assert_eq!(nap["attempts"], 1, "the delay started again: {run:#}");
    let until = time(&nap["output"]["until"]);
    let planned = time(&nap["started_at"]) + chrono::Duration::seconds(4);
    assert!(
        (until - planned).num_milliseconds().abs() <= 1,
        "the delay's wake time moved: {run:#}"
    );
    assert!(time(&node(&run, "done")["started_at"]) >= until, "{run:#}");
}

#[test]
fn sigterm_does_not_wait_for_a_retry_backoff_and_the_retry_happens_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start();
    server.set_status(503);
    write_flow(
        &flows_dir(&dir),
        "backoff.yaml",
        &format!(
            r#"
id: backoff
triggers:
  - {{id: hook, type: webhook}}
nodes:
  - id: call
    type: http
    method: POST
    url: {url}
    body: event.body
    retry: {{max_attempts: 2, backoff: {{initial: 3s, max: 3s}}}}
"#,
            url = server.url("/flaky")
        ),
    );
    let daemon = Daemon::start(dir.path(), "first", &["--grace", "20s"], &[]);
    let api = Api::new(&daemon);
    let id = hook_accepted(&api.hook("/hooks/default/backoff/hook", &json!({"n": 1}), &[]));
    wait_until("the first attempt fails", RUN_TIMEOUT, || {
        server.count("/flaky") == 1
    });
    api.wait_for(&id, "waiting");
    drop(api);
    let terminated = Instant::now();
    daemon.weir.terminate();
    let done = daemon.weir.finish(EXIT_TIMEOUT);
    let took = terminated.elapsed();
    done.assert_no_panic();
    assert_eq!(done.code, Some(0), "{done}");
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM took {took:?} with only a retry timer pending (grace 20s): {done}"
    );

    server.set_status(200);
    let daemon = Daemon::start(dir.path(), "second", &[], &[]);
    let api = Api::new(&daemon);
    let run = api.wait_for(&id, "succeeded");
    let call = node(&run, "call");
    assert_eq!(call["attempts"], 2, "{run:#}");
    assert_eq!(call["output"]["status"], 200, "{run:#}");
    assert_eq!(server.count("/flaky"), 2);
    let keys: Vec<_> = server
        .requests_to("/flaky")
        .into_iter()
        .map(|r| r.idempotency_key())
        .collect();
    assert_eq!(
        keys[0],
        Some(format!("{id}:call")),
        "the idempotency key is the run id and the node id"
    );
    assert_eq!(keys[0], keys[1], "the retry's idempotency key changed");
}

// ---- 8. overload --------------------------------------------------------------

/// Sends webhooks to `hook` until the backlog is full (3 accepted), then
/// one more, which must be refused with 429 and `Retry-After` and leave no
/// run. Returns the accepted run ids.
fn fill_the_backlog(api: &Api, hook: &str, flow: &str) -> Vec<String> {
    let runs: Vec<String> = (0..3)
        .map(|n| hook_accepted(&api.hook(hook, &json!({"n": n}), &[])))
        .collect();
    let a = api.hook(hook, &json!({"n": 3}), &[]);
    assert_error(&a, 429, "overloaded");
    let retry_after = a
        .retry_after
        .as_deref()
        .unwrap_or_else(|| panic!("no Retry-After: {a}"));
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After: {retry_after}"
    );
    assert_eq!(
        api.ids(&format!("flow={flow}")).len(),
        3,
        "the refused event left a run"
    );
    runs
}

#[test]
fn past_max_backlog_webhooks_get_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start();
    server.set_delay(Duration::from_millis(1500));
    write_flow(
        &flows_dir(&dir),
        "busy.yaml",
        &format!(
            "id: busy\ntriggers: [{{id: hook, type: webhook}}]\nnodes: [{{id: call, type: http, url: \"{}\"}}]\n",
            server.url("/busy")
        ),
    );
    let daemon = Daemon::start(dir.path(), "daemon", &["--max-backlog", "3"], &[]);
    let api = Api::new(&daemon);
    let hook = "/hooks/default/busy/hook";
    let runs = fill_the_backlog(&api, hook, "busy");

    // Room again once the runs end (the backlog shrinks just after a run's
    // final state is stored, so the first try may still be refused).
    for id in &runs {
        api.wait_for(id, "succeeded");
    }
    accepted_soon(&api, hook);
}

/// Sends a webhook until it is accepted (refused ones leave no run).
fn accepted_soon(api: &Api, hook: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = api.hook(hook, &json!({"n": 4}), &[]);
        if a.status != 429 {
            return hook_accepted(&a);
        }
        assert!(Instant::now() < deadline, "still overloaded: {a}");
        std::thread::sleep(POLL);
    }
}

/// docs/ARCHITECTURE.md and `--max-backlog`'s help ("Unfinished runs past which
/// webhooks are refused with 429"): a run sleeping in a delay is unfinished.
/// The backlog bounds memory: runs that only wait on a long timer are
/// parked (their state is on disk alone) and do not count toward it.
#[test]
fn runs_parked_on_long_timers_do_not_fill_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(
        &flows_dir(&dir),
        "backlog.yaml",
        "id: backlog\ntriggers: [{id: hook, type: webhook}]\nnodes: [{id: nap, type: delay, for: 60s}]\n",
    );
    let daemon = Daemon::start(dir.path(), "daemon", &["--max-backlog", "3"], &[]);
    let api = Api::new(&daemon);
    let hook = "/hooks/default/backlog/hook";
    let runs: Vec<String> = (0..3)
        .map(|n| hook_accepted(&api.hook(hook, &json!({"n": n}), &[])))
        .collect();
    wait_until("the three runs park", Duration::from_secs(10), || {
        let ready = api.get("/readyz");
        ready.body["parked"] == json!(3) && ready.body["backlog"] == json!(0)
    });
    // A fourth and fifth webhook are accepted: nothing works in memory.
    hook_accepted(&api.hook(hook, &json!({"n": 3}), &[]));
    hook_accepted(&api.hook(hook, &json!({"n": 4}), &[]));
    for id in &runs {
        let run = api.get(&format!("/api/v1/runs/{id}"));
        assert_eq!(run.body["status"], "waiting", "{run}");
    }
}

// ---- 9. concurrency keys -------------------------------------------------------

const SERIAL_FLOW: &str = r#"
id: serial
concurrency: {key: event.body.k, limit: 1}
triggers:
  - {id: hook, type: webhook}
nodes:
  - {id: work, type: delay, for: 300ms, next: done}
  - {id: done, type: map, mapping: {k: event.body.k, n: event.body.n}}
"#;

#[test]
fn runs_with_the_same_concurrency_key_run_one_at_a_time_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(&flows_dir(&dir), "serial.yaml", SERIAL_FLOW);
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    let hook = "/hooks/default/serial/hook";
    let sent: Vec<(&str, String)> = [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2), ("a", 4)]
        .into_iter()
        .map(|(k, n)| {
            (
                k,
                hook_accepted(&api.hook(hook, &json!({"k": k, "n": n}), &[])),
            )
        })
        .collect();
    let of = |key: &str| -> Vec<String> {
        sent.iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, id)| id.clone())
            .collect()
    };
    let (a, b) = (of("a"), of("b"));
    let mut sorted = sent.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>();
    sorted.sort();
    assert_eq!(
        sorted,
        sent.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>(),
        "run ids follow arrival order"
    );

    // While the first `a` works, the later ones wait as `queued`.
    let mut saw_queued = false;
    let deadline = Instant::now() + RUN_TIMEOUT * 2;
    let runs = loop {
        let runs: Vec<Value> = sent.iter().map(|(_, id)| api.run(id)).collect();
        saw_queued |= runs
            .iter()
            .zip(&sent)
            .any(|(r, (k, id))| *k == "a" && *id != a[0] && r["status"] == "queued");
        if runs.iter().all(|r| r["status"] == "succeeded") {
            break runs;
        }
        assert!(
            runs.iter()
                .all(|r| r["status"] != "failed" && r["status"] != "cancelled"),
            "{runs:#?}"
        );
        assert!(Instant::now() < deadline, "runs did not finish: {runs:#?}");
        std::thread::sleep(POLL);
    };
    assert!(saw_queued, "no later `a` run was ever `queued`");
    let run = |id: &String| runs[sent.iter().position(|(_, s)| s == id).unwrap()].clone();
    let span = |r: &Value| (time(&r["started_at"]), time(&r["finished_at"]));

    for (k, ids) in [("a", &a), ("b", &b)] {
        for pair in ids.windows(2) {
            let (before, after) = (run(&pair[0]), run(&pair[1]));
            assert!(
                span(&after).0 >= span(&before).1,
                "`{k}` runs overlap: {before:#} then {after:#}"
            );
        }
        for id in ids {
            let r = run(id);
            assert_eq!(node(&r, "done")["output"]["k"], k, "{r:#}");
        }
    }
    // `b` does not wait for `a`.
    let (b_start, b_end) = span(&run(&b[0]));
    assert!(
        a.iter().any(|id| {
            let (s, e) = span(&run(id));
            s < b_end && b_start < e
        }),
        "the first `b` run overlapped no `a` run: {runs:#?}"
    );
}

/// Asserts that each run of `ids` (finished) started no earlier than the
/// one before it finished.
fn assert_one_at_a_time(api: &Api, ids: &[String]) {
    let runs: Vec<Value> = ids.iter().map(|id| api.run(id)).collect();
    for pair in runs.windows(2) {
        assert!(
            time(&pair[1]["started_at"]) >= time(&pair[0]["finished_at"]),
            "runs of one key overlap: {:#} then {:#}",
            pair[0],
            pair[1]
        );
    }
}

fn serial_flow(id: &str, delay: &str) -> String {
    format!(
        "id: {id}\nconcurrency: {{key: event.body.k, limit: 1}}\ntriggers: [{{id: hook, type: webhook}}]\n\
         nodes: [{{id: work, type: delay, for: {delay}}}]\n"
    )
}

#[test]
fn a_run_sleeping_on_a_long_timer_keeps_its_concurrency_slot_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(
        &flows_dir(&dir),
        "sleepy-serial.yaml",
        &serial_flow("sleepy-serial", "2500ms"),
    );
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    let hook = "/hooks/default/sleepy-serial/hook";
    let ids: Vec<String> = (0..4)
        .map(|n| hook_accepted(&api.hook(hook, &json!({"k": "x", "n": n}), &[])))
        .collect();
    let cancel = |id: &str| {
        let a = api.post(&format!("/api/v1/runs/{id}/cancel"), &json!({}));
        assert_eq!(a.status, 200, "{a}");
        assert_eq!(a.body["status"], "cancelled", "{a}");
    };
    // A queued run can be cancelled; it never starts.
    cancel(&ids[2]);

    // The first sleeps (long enough to be parked) and keeps its slot.
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        // The second read first: if it has started, the first must have
        // ended before (the first may end between the two reads).
        let second = api.run(&ids[1]);
        let first = api.run(&ids[0]);
        if first["status"] == "succeeded" {
            break;
        }
        assert_eq!(
            second["status"], "queued",
            "the second run of key x started while the first sleeps: {first:#} {second:#}"
        );
        assert!(Instant::now() < deadline, "{first:#}");
        std::thread::sleep(POLL);
    }
    // The second sleeps in turn; cancelling it frees the slot at once.
    api.wait_for(&ids[1], "waiting");
    assert_eq!(api.run(&ids[3])["status"], "queued");
    cancel(&ids[1]);
    let cancelled_at = Instant::now();
    wait_until(
        "the last run starts after the one before is cancelled",
        Duration::from_secs(10),
        || api.run(&ids[3])["status"] != "queued",
    );
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(1),
        "the slot was freed only {:?} after the cancel",
        cancelled_at.elapsed()
    );
    api.wait_for(&ids[3], "succeeded");
    assert_eq!(api.run(&ids[2])["started_at"], Value::Null);
    assert_one_at_a_time(&api, &[ids[0].clone(), ids[1].clone(), ids[3].clone()]);
}

#[test]
fn queued_runs_keep_their_key_order_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(
        &flows_dir(&dir),
        "serial.yaml",
        &serial_flow("serial", "1s"),
    );
    let mut first = Daemon::start(dir.path(), "first", &[], &[]);
    let api = Api::new(&first);
    let hook = "/hooks/default/serial/hook";
    let ids: Vec<String> = (0..3)
        .map(|n| hook_accepted(&api.hook(hook, &json!({"k": "x", "n": n}), &[])))
        .collect();
    first.weir.kill();

    let second = Daemon::start(dir.path(), "second", &[], &[]);
    let api = Api::new(&second);
    for id in &ids {
        api.wait_for(id, "succeeded");
    }
    assert_one_at_a_time(&api, &ids);
    let mut listed = api.ids("flow=serial");
    listed.reverse();
    assert_eq!(listed, ids);
}

// ---- 10. health and metrics ---------------------------------------------------

/// The value of the first sample of `name` whose labels include `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn health_readiness_and_metrics_answer() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(
        &flows_dir(&dir),
        "metered.yaml",
        "id: metered\ntriggers: [{id: hook, type: webhook}]\nnodes: [{id: m, type: map, mapping: {x: event.body.x}}]\n",
    );
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    let a = api.get("/healthz");
    assert_eq!(a.status, 200, "{a}");
    let a = api.get("/readyz");
    assert_eq!(a.status, 200, "{a}");

    let id = hook_accepted(&api.hook("/hooks/default/metered/hook", &json!({"x": 1}), &[]));
    api.wait_for(&id, "succeeded");
    assert_error(
        &api.hook("/hooks/default/missing/hook", &json!({}), &[]),
        404,
        "not_found",
    );

    // A run's metrics are recorded just after its final state is stored,
    // so they may trail the API by a moment.
    let expected: [(&str, &[&str]); 6] = [
        (
            "weir_events_received_total",
            &[r#"flow="metered""#, r#"trigger="hook""#],
        ),
        ("weir_events_rejected_total", &[r#"reason="not_found""#]),
        (
            "weir_runs_total",
            &[r#"flow="metered""#, r#"status="succeeded""#],
        ),
        (
            "weir_node_executions_total",
            &[r#"type="map""#, r#"status="succeeded""#],
        ),
        ("weir_webhook_ack_seconds_count", &[]),
        ("weir_run_duration_seconds_count", &[]),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = api.get("/metrics");
        assert_eq!(a.status, 200, "{a}");
        let missing: Vec<_> = expected
            .iter()
            .filter(|(name, labels)| metric(&a.text, name, labels).is_none_or(|v| v < 1.0))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing {missing:?} in\n{}",
            a.text
        );
        std::thread::sleep(POLL);
    }
}

// ---- run retention ----------------------------------------------------------

const RETAINED_FLOW: &str = "\
id: retained
triggers: [{id: hook, type: webhook}]
nodes:
  - {id: route, type: if, condition: event.body.slow, then: nap, else: done}
  - {id: nap, type: delay, for: 60s}
  - {id: done, type: map, mapping: {n: event.body.n}}
";

/// `--run-retention`: finished runs are forgotten once it has passed since
/// they finished (never earlier), unfinished ones never; forgotten stays
/// forgotten across a restart.
#[test]
fn finished_runs_are_forgotten_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(&flows_dir(&dir), "retained.yaml", RETAINED_FLOW);
    let retention = chrono::Duration::seconds(2);
    let daemon = Daemon::start(dir.path(), "first", &["--run-retention", "2s"], &[]);
    let api = Api::new(&daemon);
    let quick = hook_accepted(&api.hook(
        "/hooks/default/retained/hook",
        &json!({"n": 1, "slow": false}),
        &[],
    ));
    let slow = hook_accepted(&api.hook(
        "/hooks/default/retained/hook",
        &json!({"n": 2, "slow": true}),
        &[],
    ));
    let finished = api.wait_for(&quick, "succeeded");
    let finished_at: DateTime<Utc> = finished["finished_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no finished_at: {finished:#}"));
    api.wait_for(&slow, "waiting");

    wait_until("the finished run is forgotten", RUN_TIMEOUT, || {
        api.get(&format!("/api/v1/runs/{quick}")).status == 404
    });
    let gone_at = Utc::now();
    assert!(
        gone_at - finished_at >= retention,
        "forgotten {} ms after it finished, before its retention of 2 s",
        (gone_at - finished_at).num_milliseconds()
    );
    assert_eq!(api.run(&slow)["status"], "waiting");
    assert_eq!(api.ids("flow=retained"), [slow.as_str()]);
    // Counted once the removal is on disk, a moment after it shows.
    wait_until("weir_runs_forgotten_total counts it", RUN_TIMEOUT, || {
        api.get("/metrics")
            .text
            .lines()
            .any(|l| l.starts_with("weir_runs_forgotten_total ") && !l.ends_with(" 0"))
    });

    daemon.weir.terminate();
    let done = daemon.weir.finish(EXIT_TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    let daemon = Daemon::start(dir.path(), "second", &["--run-retention", "2s"], &[]);
    let api = Api::new(&daemon);
    assert_error(&api.get(&format!("/api/v1/runs/{quick}")), 404, "not_found");
    let run = api.run(&slow);
    assert_eq!(run["status"], "waiting", "{run:#}");
    assert_eq!(run["event"]["body"]["n"], 2, "the event is kept: {run:#}");
}

#[test]
fn a_run_retention_of_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let done = run_weir(
        dir.path(),
        "serve",
        &["serve", "--flows", ".", "--run-retention", "0s"],
        EXIT_TIMEOUT,
    );
    assert_eq!(done.code, Some(2), "{done}");
    assert!(done.stderr.contains("--run-retention"), "{done}");
    assert!(done.stderr.contains("`off`"), "{done}");
}

/// Every metric has `# HELP` and `# TYPE`, so that Prometheus's own lint
/// (`promtool check metrics`) accepts the page; the series whose labels
/// are known start at 0, before the first event; `weir_runs_total` counts
/// final statuses only (admissions are `weir_runs_admitted_total`), so its
/// sum is the number of finished runs.
#[test]
fn metrics_are_described_and_known_series_start_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    write_flow(
        &flows_dir(&dir),
        "metered.yaml",
        "id: metered\ntriggers: [{id: hook, type: webhook}, {id: call, type: api}]\nnodes: [{id: m, type: map, mapping: {x: event.body.x}}]\n",
    );
    let daemon = Daemon::start(dir.path(), "daemon", &["--max-backlog", "1"], &[]);
    let api = Api::new(&daemon);
    let text = api.metrics();
    for (name, labels) in [
        ("weir_events_rejected_total", vec![r#"reason="overloaded""#]),
        (
            "weir_events_received_total",
            vec![r#"flow="metered""#, r#"trigger="call""#],
        ),
        (
            "weir_runs_total",
            vec![r#"flow="metered""#, r#"status="failed""#],
        ),
        ("weir_runs_admitted_total", vec![r#"flow="metered""#]),
        (
            "weir_node_executions_total",
            vec![r#"type="http""#, r#"status="failed""#],
        ),
        ("weir_outbox_pending", vec![r#"target="http""#]),
    ] {
        assert_eq!(
            metric(&text, name, &labels),
            Some(0.0),
            "{name} {labels:?}:\n{text}"
        );
    }
    // Every family is described.
    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
        })
        .collect();
    for family in &families {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no TYPE for {family}:\n{text}"
        );
    }

    let id = hook_accepted(&api.hook("/hooks/default/metered/hook", &json!({"x": 1}), &[]));
    api.wait_for(&id, "succeeded");
    // The backlog holds one run at most: a burst of API calls meets a 429,
    // which is counted.
    let mut refused = 0;
    for _ in 0..50 {
        if api
            .post("/api/v1/flows/metered/runs", &json!({"input": {"x": 2}}))
            .status
            == 429
        {
            refused += 1;
        }
    }
    wait_until("the counts settle", RUN_TIMEOUT, || {
        let text = api.metrics();
        let admitted = metric(&text, "weir_runs_admitted_total", &[r#"flow="metered""#]);
        let finished = metric(&text, "weir_runs_total", &[r#"status="succeeded""#]);
        admitted.is_some() && admitted == finished
    });
    let text = api.metrics();
    assert!(!text.contains(r#"status="admitted""#), "{text}");
    let rejected = metric(
        &text,
        "weir_events_rejected_total",
        &[r#"reason="overloaded""#],
    )
    .unwrap();
    assert_eq!(rejected, f64::from(refused), "{text}");
    if refused == 0 {
        eprintln!("NOTICE: no API call met the full backlog; the 429 count was not exercised");
    }

    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut promtool) => {
            use std::io::Write;
            promtool
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = promtool.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => {
            assert!(
                !weir_testkit::in_ci(),
                "promtool (Debian's prometheus) is needed under CI"
            );
            eprintln!("NOTICE: promtool is not installed; the Prometheus lint is skipped");
        }
    }
}
