//! `kill -9` a `weir run` while a run sleeps (in a `delay`, in a retry
//! backoff) or waits for a response, then `weir run --resume`: the run
//! finishes, a finished side effect is not repeated, an interrupted one is
//! repeated with the same idempotency key, the recorded timers are kept
//! (docs/ARCHITECTURE.md, promises 2, 3 and 5).
//! Also: bad input and bad flow files end with an exit code and a message,
//! never a panic (docs/flow-format.md, the README's commands).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use weir_testkit::{FakeServer, Weir, arg, run_weir, wait_until, write_flow};

/// Long enough for a debug build on a loaded machine; runs here take
/// seconds.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a run may take to reach a point the test waits for.
const REACH_TIMEOUT: Duration = Duration::from_secs(10);

/// After the server saw the request that precedes a timer, how long the
/// test waits before `kill -9` for the timer's record to reach the disk.
/// The process holds sled's lock, so the test cannot look; the time is
/// checked afterwards (the timer's record must predate the kill).
const SETTLE: Duration = Duration::from_millis(500);

/// The one run `weir run --resume --json` printed.
fn resumed_run(done: &weir_testkit::Finished) -> Value {
    let lines: Vec<&str> = done
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "expected one resumed run\n{done}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e})\n{done}"))
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

#[test]
fn kill_during_a_delay_resumes_without_repeating_the_request() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    let server = FakeServer::start();
    let flow = write_flow(
        dir.path(),
        "delayed.yaml",
        &format!(
            r#"
id: delayed-contact
triggers:
  - id: manual
    type: api
nodes:
  - id: create
    type: http
    method: POST
    url: {url}
    body: '#{{email: event.body.email.to_lower(), name: event.body.name}}'
    next: pause
  - id: pause
    type: delay
    for: 3s
    next: summary
  - id: summary
    type: map
    mapping:
      contact_id: nodes.create.body.id
      stored_email: nodes.create.body.echo.email
      name: event.body.name
      status: nodes.create.status
"#,
            url = server.url("/contacts")
        ),
    );
    let input = r#"{"email": "Ada@Example.COM", "name": "Ada"}"#;

    let mut first = Weir::spawn(
        dir.path(),
        "first",
        &[
            "run",
            arg(&flow),
            "--data",
            arg(&data),
            "--input",
            input,
            "--json",
        ],
    );
    wait_until("the test server saw the request", REACH_TIMEOUT, || {
        first.assert_running();
        server.count("/contacts") >= 1
    });
    // The http result, then the delay's `waiting` record, are committed
    // and flushed right after the response; no observable event marks it.
    std::thread::sleep(SETTLE);
    first.assert_running();
    first.kill();
    let killed_at = Utc::now();
    assert_eq!(server.count("/contacts"), 1, "{:?}", server.received());

    let done = run_weir(
        dir.path(),
        "resume",
        &[
            "run",
            arg(&flow),
            "--data",
            arg(&data),
            "--resume",
            "--json",
        ],
        EXIT_TIMEOUT,
    );
    done.assert_no_panic();
    assert_eq!(done.code, Some(0), "{done}");
    let run = resumed_run(&done);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["flow"], "delayed-contact");

    let create = node(&run, "create");
    assert_eq!(create["status"], "succeeded", "{create:#}");
    assert_eq!(create["attempts"], 1, "{create:#}");
    assert_eq!(create["output"]["status"], 200, "{create:#}");
    assert_eq!(create["output"]["body"]["id"], "srv-1", "{create:#}");

    // The delay resumed from its record: the same attempt, started before
    // the kill, waking when that first process said it would.
    let pause = node(&run, "pause");
    assert_eq!(pause["status"], "succeeded", "{pause:#}");
    assert_eq!(
        pause["attempts"], 1,
        "the delay was started again: {pause:#}"
    );
    let started = time(&pause["started_at"]);
    assert!(
        started < killed_at,
        "the delay's record is from after the kill ({killed_at}), so it was not on disk \
         {SETTLE:?} after the request: {pause:#}"
    );
    let until = time(&pause["output"]["until"]);
    let planned = started + chrono::Duration::seconds(3);
    assert!(
        (until - planned).num_milliseconds().abs() <= 1,
        "the delay woke at {until}, not 3s after it started ({planned}): {pause:#}"
    );

    let summary = node(&run, "summary");
    assert_eq!(summary["status"], "succeeded", "{summary:#}");
    assert!(
        time(&summary["started_at"]) >= until,
        "`summary` ran before the delay's wake time {until}: {summary:#}"
    );
    // Late only by the time weir was down, which was next to nothing.
    let late = time(&run["finished_at"]) - until;
    assert!(
        late < chrono::Duration::seconds(2),
        "the run finished {late} after the delay's wake time: {run:#}"
    );
    assert_eq!(
        summary["output"],
        json!({
            "contact_id": "srv-1",
            "stored_email": "ada@example.com",
            "name": "Ada",
            "status": 200,
        }),
        "{summary:#}"
    );

    assert_eq!(server.count("/contacts"), 1, "{:?}", server.received());
    let sent = &server.requests_to("/contacts")[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(
        sent.body_value(),
        json!({"email": "ada@example.com", "name": "Ada"})
    );
    let id = run["id"].as_str().expect("the run's id");
    assert_eq!(
        sent.idempotency_key().as_deref(),
        Some(format!("{id}:create").as_str())
    );
}

#[test]
fn kill_during_a_retry_backoff_retries_once_with_the_same_key() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    let server = FakeServer::start();
    server.answer_next(&[503]);
    let flow = write_flow(
        dir.path(),
        "retried.yaml",
        &format!(
            r#"
id: retried-order
triggers:
  - id: manual
    type: api
nodes:
  - id: push
    type: http
    method: POST
    url: {url}
    body: '#{{order: event.body.order}}'
    retry:
      max_attempts: 3
      backoff:
        initial: 3s
        max: 3s
    next: result
  - id: result
    type: map
    mapping:
      order: nodes.push.body.echo.order
      status: nodes.push.status
"#,
            url = server.url("/orders")
        ),
    );

    let mut first = Weir::spawn(
        dir.path(),
        "first",
        &[
            "run",
            arg(&flow),
            "--data",
            arg(&data),
            "--input",
            r#"{"order": 42}"#,
            "--json",
        ],
    );
    // weir logs the failure just before it commits the `waiting` record.
    wait_until(
        "weir logged that it will retry the 503",
        REACH_TIMEOUT,
        || {
            first.assert_running();
            server.count("/orders") >= 1 && first.stderr().contains("will retry")
        },
    );
    std::thread::sleep(SETTLE);
    first.assert_running();
    first.kill();
    // The backoff is at least 1.5s (3s with jitter down to half), so the
    // kill came while the node was waiting.
    assert_eq!(server.count("/orders"), 1, "{:?}", server.received());

    let done = run_weir(
        dir.path(),
        "resume",
        &[
            "run",
            arg(&flow),
            "--data",
            arg(&data),
            "--resume",
            "--json",
        ],
        EXIT_TIMEOUT,
    );
    done.assert_no_panic();
    assert_eq!(done.code, Some(0), "{done}");
    let run = resumed_run(&done);
    assert_eq!(run["status"], "succeeded", "{run:#}");

    let push = node(&run, "push");
    assert_eq!(push["status"], "succeeded", "{push:#}");
    assert_eq!(push["attempts"], 2, "{push:#}");
    assert_eq!(push["output"]["status"], 200, "{push:#}");
    let result = node(&run, "result");
    assert_eq!(result["status"], "succeeded", "{result:#}");
    assert_eq!(
        result["output"],
        json!({"order": 42, "status": 200}),
        "{result:#}"
    );

    let seen = server.requests_to("/orders");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].status, seen[1].status),
        (Some(503), Some(200)),
        "{seen:?}"
    );
    let id = run["id"].as_str().expect("the run's id");
    let key = format!("{id}:push");
    for request in &seen {
        assert_eq!(request.idempotency_key().as_deref(), Some(key.as_str()));
        assert_eq!(request.body_value(), json!({"order": 42}));
    }
    // The resumed process kept the recorded wake time instead of retrying
    // at once (the kill came about half a second after the 503).
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_millis(1400),
        "the retry came {gap:?} after the 503, before the backoff (>= 1.5s) ended"
    );
}

#[test]
fn kill_during_a_request_sends_it_again_with_the_same_key() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    // The first request is never answered: weir is killed while it waits.
    let server = FakeServer::start();
    server.hold_next(1);
    let flow = write_flow(
        dir.path(),
        "in-flight.yaml",
        &format!(
            r#"
id: in-flight
triggers:
  - id: manual
    type: api
nodes:
  - id: send
    type: http
    method: PUT
    url: {url}
    body: event.body
    next: result
  - id: result
    type: map
    mapping:
      id: nodes.send.body.id
      sent: nodes.send.body.echo
"#,
            url = server.url("/items/7")
        ),
    );

    let mut first = Weir::spawn(
        dir.path(),
        "first",
        &[
            "run",
            arg(&flow),
            "--data",
            arg(&data),
            "--input",
            r#"{"sku": "A-7"}"#,
            "--json",
        ],
    );
    wait_until("the test server saw the request", REACH_TIMEOUT, || {
        first.assert_running();
        server.count("/items/7") >= 1
    });
    first.kill();

    // A side effect that was running when weir died runs again
    // (at-least-once), with the same key, so the receiver can dedupe.
    let done = run_weir(
        dir.path(),
        "resume",
        &[
            "run",
            arg(&flow),
            "--data",
            arg(&data),
            "--resume",
            "--json",
        ],
        EXIT_TIMEOUT,
    );
    done.assert_no_panic();
    assert_eq!(done.code, Some(0), "{done}");
    let run = resumed_run(&done);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let send = node(&run, "send");
    assert_eq!(send["status"], "succeeded", "{send:#}");
    assert_eq!(
        node(&run, "result")["output"],
        json!({"id": "srv-2", "sent": {"sku": "A-7"}}),
        "{run:#}"
    );

    let seen = server.requests_to("/items/7");
    assert_eq!(seen.len(), 2, "{seen:?}");
    let key = format!("{}:send", run["id"].as_str().expect("the run's id"));
    for request in &seen {
        assert_eq!(request.method, "PUT");
        assert_eq!(request.idempotency_key().as_deref(), Some(key.as_str()));
        assert_eq!(request.body_value(), json!({"sku": "A-7"}));
    }
}

#[test]
fn bad_input_and_bad_flows_exit_with_a_message_not_a_panic() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let good = write_flow(
        dir.path(),
        "good.yaml",
        "id: good\ntriggers:\n  - id: manual\n    type: api\nnodes:\n  - id: echo\n    type: map\n    mapping:\n      value: event.body\n",
    );

    for (label, input) in [
        ("not-json", "{not json"),
        ("missing-file", "@no-such-input.json"),
    ] {
        let done = run_weir(
            dir.path(),
            label,
            &["run", arg(&good), "--input", input],
            EXIT_TIMEOUT,
        );
        done.assert_no_panic();
        assert_eq!(done.code, Some(2), "--input {input}\n{done}");
        assert!(done.stderr.contains("--input"), "--input {input}\n{done}");
    }

    let bad = write_flow(
        dir.path(),
        "bad.yaml",
        r#"id: broken
triggers:
  - id: manual
    type: api
nodes:
  - id: first
    type: mapp
    mapping:
      a: 1
    next: nowhere
  - id: second
    type: map
    mapping:
      b: event.body.(
"#,
    );
    let yaml = write_flow(dir.path(), "yaml.yaml", "id: x\n nodes: [\n");
    for (file, expected) in [
        (&bad, &["7:11", "10:11", "14:21"][..]),
        (&yaml, &["2:7"][..]),
    ] {
        for command in [
            &["run", arg(file), "--input", "{}"][..],
            &["validate", arg(file)][..],
        ] {
            let done = run_weir(dir.path(), command[0], command, EXIT_TIMEOUT);
            done.assert_no_panic();
            assert_eq!(done.code, Some(1), "weir {command:?}\n{done}");
            let output = format!("{}{}", done.stdout, done.stderr);
            let errors: Vec<&str> = output.lines().filter(|l| l.contains(": error: ")).collect();
            assert_eq!(
                errors.len(),
                expected.len(),
                "weir {command:?}: one line per problem\n{done}"
            );
            for position in expected {
                let prefix = format!("{}:{position}: error: ", file.display());
                assert!(
                    errors.iter().any(|l| l.starts_with(&prefix)),
                    "weir {command:?}: no line starting `{prefix}`\n{done}"
                );
            }
        }
    }
}
