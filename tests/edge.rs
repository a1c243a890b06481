//! The daemon's HTTP edge under slow, half-open, idle, oversized and
//! malformed requests: every connection is bounded in time, the number of
//! connections is bounded (and the daemon keeps accepting past a flood),
//! and every refusal is the JSON error shape with the right status. JSON
//! deeper than weir accepts is refused where it enters; scripts that burn
//! CPU do not hold the edge.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_testkit::api::{node, run_and_event};
use weir_testkit::{Api, Daemon, FakeServer, wait_until, write_flow};

const TIMEOUT: Duration = Duration::from_secs(20);

const ECHO_FLOW: &str = r#"
id: echo
triggers:
  - {id: hook, type: webhook, max_body: 64KiB}
  - {id: call, type: api}
nodes:
  - {id: seen, type: map, mapping: {body: event.body}}
"#;

fn start(extra: &[&str]) -> (tempfile::TempDir, Daemon, Api) {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "echo.yaml", ECHO_FLOW);
    let daemon = Daemon::start(dir.path(), "daemon", extra, &[]);
    let api = Api::new(&daemon);
    (dir, daemon, api)
}

fn connect(daemon: &Daemon) -> TcpStream {
    let addr = daemon.base.trim_start_matches("http://");
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection (or 10 s pass): what it
/// sent, and how long that took.
fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the connection was still open after {:?} ({e}); got so far: {}",
                started.elapsed(),
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// The status and JSON body of a raw HTTP/1.1 answer.
fn parse_answer(raw: &str) -> (u16, Value) {
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn slow_half_sent_and_idle_connections_are_closed_in_time() {
    let (_dir, daemon, api) = start(&["--header-timeout", "1s", "--body-timeout", "1s"]);

    // Half-sent headers: closed (with a 408 or nothing) within the header
    // timeout, not left open.
    let mut half_head = connect(&daemon);
    half_head
        .write_all(b"POST /hooks/default/echo/hook HTTP/1.1\r\nHost: weir\r\nX-Slow: ")
        .unwrap();
    let (_, took) = read_until_closed(&mut half_head);
    assert!(took < Duration::from_secs(5), "headers: open for {took:?}");

    // A half-sent body: 408 in the JSON shape within the body timeout.
    let mut half_body = connect(&daemon);
    half_body
        .write_all(
            b"POST /hooks/default/echo/hook HTTP/1.1\r\nHost: weir\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":",
        )
        .unwrap();
    let (raw, took) = read_until_closed(&mut half_body);
    assert!(took < Duration::from_secs(5), "body: open for {took:?}");
    let (status, body) = parse_answer(&raw);
    assert_eq!(status, 408, "{raw}");
    assert_eq!(body["error"]["code"], "timeout", "{raw}");

    // An idle keep-alive connection is closed after its request.
    let mut idle = connect(&daemon);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: weir\r\n\r\n")
        .unwrap();
    let (raw, took) = read_until_closed(&mut idle);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(took < Duration::from_secs(5), "idle: open for {took:?}");

    // A declared length over max_body is answered 413 at once, without
    // waiting for a body that will never come.
    let mut huge = connect(&daemon);
    huge.write_all(
        b"POST /hooks/default/echo/hook HTTP/1.1\r\nHost: weir\r\ncontent-type: application/json\r\ncontent-length: 10000000000\r\n\r\n{}",
    )
    .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let n = huge.read(&mut buf).unwrap();
    let raw = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let (status, body) = parse_answer(&raw);
    assert_eq!(status, 413, "{raw}");
    assert_eq!(body["error"]["code"], "too_large", "{raw}");

    // Still serving.
    let a = api.hook("/hooks/default/echo/hook", &json!({"ok": 1}), &[]);
    assert_eq!(a.status, 202, "{a}");
}

#[test]
fn past_the_connection_limit_new_connections_get_503_and_serving_resumes() {
    let (_dir, daemon, api) = start(&["--max-connections", "4", "--header-timeout", "1s"]);
    let held: Vec<TcpStream> = (0..4).map(|_| connect(&daemon)).collect();
    // The four are accepted before the fifth (the accept loop takes them in
    // order); the fifth is answered 503 and closed.
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = connect(&daemon);
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: weir\r\n\r\n")
        .unwrap();
    let (raw, _) = read_until_closed(&mut fifth);
    let (status, body) = parse_answer(&raw);
    assert_eq!(status, 503, "{raw}");
    assert_eq!(body["error"]["code"], "overloaded", "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
    // Once the idle ones time out, requests go through again.
    wait_until("the idle connections are closed", TIMEOUT, || {
        api.try_send(api.http.get(api.url("/healthz")))
            .is_ok_and(|a| a.status == 200)
    });
    drop(held);
    let metrics = api.metrics();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("weir_connections_refused_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refused count:\n{metrics}"));
    assert!(refused >= 1, "{metrics}");
}

/// With few file descriptors, a flood of half-open connections neither
/// exhausts them (the daemon keeps some for its storage) nor stops it
/// from accepting once they are cut.
#[test]
fn a_flood_of_half_open_connections_does_not_stop_the_daemon() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !weir_testkit::in_ci(),
            "prlimit (util-linux) is needed under CI"
        );
        eprintln!("NOTICE: prlimit is not installed; the descriptor-limit test is skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "echo.yaml", ECHO_FLOW);
    let daemon = Daemon::start_under(
        dir.path(),
        "daemon",
        &["prlimit", "--nofile=300:300", "--"],
        &["--header-timeout", "1s"],
        &[],
    );
    let api = Api::new(&daemon);
    let flood: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut s = connect(&daemon);
            let _ = s.write_all(b"POST /hooks/default/echo/hook HTTP/1.1\r\nHost: w");
            s
        })
        .collect();
    // Past the flood's timeout, the daemon serves again.
    wait_until("the daemon answers again", TIMEOUT, || {
        api.try_send(
            api.http
                .post(api.url("/hooks/default/echo/hook"))
                .header("content-type", "application/json")
                .body("{\"after\": \"flood\"}"),
        )
        .is_ok_and(|a| a.status == 202)
    });
    drop(flood);
    let log = daemon.weir.stderr();
    assert!(
        !log.contains("Too many open files") && !log.contains("cannot accept"),
        "{log}"
    );
    assert!(
        log.contains("max_connections=44"),
        "300 descriptors less 256 kept: {log}"
    );
}

#[test]
fn every_refusal_of_the_edge_is_a_json_error() {
    let (_dir, _daemon, api) = start(&[]);
    api.get("/nowhere").assert_error(404, "not_found");
    api.get("/hooks/default/echo/hook")
        .assert_error(405, "method_not_allowed");
    api.send(api.http.delete(api.url("/api/v1/runs")))
        .assert_error(405, "method_not_allowed");
    api.get(&format!("/api/v1/runs?flow={}", "x".repeat(9000)))
        .assert_error(414, "uri_too_long");
    api.send(
        api.http
            .get(api.url("/healthz"))
            .header("x-big", "y".repeat(40_000)),
    )
    .assert_error(431, "headers_too_large");
    for query in [
        "limit=abc",
        "limit=-1",
        "limit=0",
        "limit=501",
        "after=",
        "after=zzzz",
        "status=sleeping",
    ] {
        let message = api
            .get(&format!("/api/v1/runs?{query}"))
            .assert_error(400, "bad_request");
        let name = query.split('=').next().unwrap();
        assert!(message.contains(name), "{query}: {message}");
    }
    api.post("/api/v1/flows/echo/runs?wait=-1", &json!({}))
        .assert_error(400, "bad_request");
    // The API's body limit is 1 MiB: 413, not 400.
    let big = json!({"input": "x".repeat(1_100_000)});
    api.post("/api/v1/flows/echo/runs", &big)
        .assert_error(413, "too_large");
    // The api trigger's body: `input` is optional; anything but `tenant`
    // and `input` is refused with the shape expected.
    let a = api.post_raw("/api/v1/flows/echo/runs", "application/json", "", &[]);
    assert_eq!(a.status, 202, "{a}");
    let message = api
        .post("/api/v1/flows/echo/runs", &json!({"email": "a@b.c"}))
        .assert_error(400, "bad_request");
    assert!(message.contains(r#""input"?"#), "{message}");
    assert!(message.contains("email"), "{message}");
}

fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

const DEEP_FLOW: &str = r#"
id: deep
triggers: [{id: call, type: api}]
nodes:
  - id: fetch
    type: http
    url: ${event.body.url}
    next: keep
  - {id: keep, type: map, mapping: {status: nodes.fetch.status}}
"#;

const SCRIPT_FLOW: &str = r#"
id: builds
triggers: [{id: call, type: api}]
nodes:
  - id: build
    type: script
    script: |
      let x = 1;
      for i in 0..event.body.levels { x = [x]; }
      x
"#;

/// JSON deeper than weir accepts is refused where it enters — a webhook or
/// API body (400), an external API's answer or a script's output (the
/// node fails, saying so) — so nothing weir stores is too deep to read
/// back, and every list keeps working.
#[test]
fn json_nested_deeper_than_weir_accepts_is_refused_where_it_enters() {
    let (dir, daemon, api) = start(&[]);
    write_flow(&daemon.flows, "deep.yaml", DEEP_FLOW);
    write_flow(&daemon.flows, "builds.yaml", SCRIPT_FLOW);
    wait_until("the flows load", TIMEOUT, || {
        api.flows()["items"].as_array().unwrap().len() == 3
    });

    let deep = |levels: usize| {
        api.post_raw(
            "/hooks/default/echo/hook",
            "application/json",
            &nested(levels),
            &[],
        )
    };
    deep(127).assert_error(400, "too_deep");
    deep(65).assert_error(400, "too_deep");
    // 64 levels are accepted; this flow's output wraps the body in one
    // more, which its node refuses to store.
    let (at_limit, _) = run_and_event(&deep(64));
    assert_eq!(api.wait_finished(&at_limit)["status"], "failed");
    let (within, _) = run_and_event(&deep(63));
    api.wait_for(&within, "succeeded");
    let input = format!(r#"{{"input": {}}}"#, nested(70));
    api.post_raw("/api/v1/flows/echo/runs", "application/json", &input, &[])
        .assert_error(400, "too_deep");

    // An external API answering 126 levels deep: the node fails.
    let server = FakeServer::start();
    let mut answer = json!(1);
    for _ in 0..126 {
        answer = json!([answer]);
    }
    server.set_body(answer);
    let a = api.post(
        "/api/v1/flows/deep/runs?wait=20",
        &json!({"input": {"url": server.url("/deep")}}),
    );
    assert_eq!(a.body["status"], "failed", "{a}");
    let error = node(&a.body, "fetch")["error"].as_str().unwrap().to_owned();
    assert!(error.contains("nested more than 64 levels"), "{error}");

    // A script's output: too deep fails the node; far too deep too, and
    // the daemon lives on.
    for levels in [65, 5000] {
        let a = api.post(
            "/api/v1/flows/builds/runs?wait=20",
            &json!({"input": {"levels": levels}}),
        );
        assert_eq!(a.body["status"], "failed", "{levels}: {a}");
        let error = node(&a.body, "build")["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains("nested more than 64 levels"),
            "{levels}: {error}"
        );
    }
    let a = api.get("/api/v1/runs?limit=50");
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(a.body["items"].as_array().unwrap().len(), 5, "{a}");
    drop(dir);
}

const BURN_FLOW: &str = r#"
id: burn
triggers: [{id: hook, type: webhook}]
nodes:
  - id: spin
    type: script
    timeout: 4s
    script: |
      let s = "x";
      s.pad(40000, "y");
      loop { let h = sha256(s); }
"#;

/// Scripts that burn CPU run on the runtime runs are driven on: health
/// checks and webhook acknowledgements stay prompt meanwhile (the bound
/// is generous; docs/BENCHMARKS.md has the measured figures).
#[test]
fn cpu_heavy_scripts_do_not_hold_the_http_edge() {
    let (_dir, daemon, api) = start(&[]);
    write_flow(&daemon.flows, "burn.yaml", BURN_FLOW);
    wait_until("the flow loads", TIMEOUT, || {
        api.post("/hooks/default/burn/hook", &json!({})).status == 202
    });
    for _ in 0..5 {
        let a = api.post("/hooks/default/burn/hook", &json!({}));
        assert_eq!(a.status, 202, "{a}");
    }
    // Every worker of the runs' runtime is busy for seconds now.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(api.get("/healthz").status, 200);
        let health = started.elapsed();
        let started = Instant::now();
        let a = api.post("/hooks/default/echo/hook", &json!({"n": 1}));
        let ack = started.elapsed();
        assert_eq!(a.status, 202, "{a}");
        assert!(
            health < Duration::from_millis(1500) && ack < Duration::from_millis(1500),
            "while scripts burn: /healthz {health:?}, a webhook's ack {ack:?}"
        );
    }
}
