//! The engine on the in-memory store and on sled: every node type, the DAG
//! rules of docs/flow-format.md, retries, errors, and resuming from records.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use serde_json::{Value, json};
use weir_storage::{MemoryStore, NodeRecord, NodeStatus, RunRecord, RunStatus, Store};

use super::*;
use crate::flow::load_source;

/// A local HTTP server: `/ok/{name}` echoes, `/flaky/{n}` answers 503 to
/// its first `n` requests, `/status/{code}` answers `code`, `/slow` takes
/// two seconds, `/barrier/{n}` answers only once `n` requests are waiting.
#[derive(Default)]
struct Server {
    hits: Mutex<HashMap<String, usize>>,
    keys: Mutex<Vec<String>>,
    waiting: AtomicUsize,
    barrier: tokio::sync::Notify,
}

async fn handle(
    State(s): State<Arc<Server>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let n = {
        let mut hits = s.hits.lock().unwrap();
        let n = hits.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    if let Some(key) = headers.get("idempotency-key") {
        s.keys
            .lock()
            .unwrap()
            .push(key.to_str().unwrap().to_owned());
    }
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["flaky", fails] if n <= fails.parse().unwrap() => {
            (StatusCode::SERVICE_UNAVAILABLE, "busy".into())
        }
        ["status", code] => (
            StatusCode::from_u16(code.parse().unwrap()).unwrap(),
            "no".into(),
        ),
        ["slow"] => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            (StatusCode::OK, "{}".into())
        }
        ["barrier", want] => {
            let want: usize = want.parse().unwrap();
            if s.waiting.fetch_add(1, Ordering::SeqCst) + 1 >= want {
                s.barrier.notify_waiters();
            } else {
                s.barrier.notified().await;
            }
            (StatusCode::OK, json!({"n": n}).to_string())
        }
        _ => (
            StatusCode::OK,
            json!({"path": path, "n": n, "body": body}).to_string(),
        ),
    }
}

async fn server() -> (String, Arc<Server>) {
    let state = Arc::new(Server::default());
    let app = Router::new()
        .route("/{*path}", any(handle))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), state)
}

fn flow(nodes: &str) -> Arc<Flow> {
    flow_with("", nodes)
}

fn flow_with(vars: &str, nodes: &str) -> Arc<Flow> {
    let src = format!("id: t\n{vars}triggers:\n  - id: hook\n    type: webhook\nnodes:\n{nodes}");
    Arc::new(load_source(&src, "t.yaml").unwrap_or_else(|e| panic!("{e}")))
}

fn engine_on(store: Arc<dyn Store>) -> Arc<Engine> {
    Engine::new(store, Clock::new(), EngineOptions::default())
}

async fn run_flow(flow: &Arc<Flow>, body: Value) -> (RunRecord, HashMap<String, NodeRecord>) {
    let engine = engine_on(Arc::new(MemoryStore::new()));
    run_on(&engine, flow, body).await
}

async fn run_on(
    engine: &Engine,
    flow: &Arc<Flow>,
    body: Value,
) -> (RunRecord, HashMap<String, NodeRecord>) {
    let event = json!({"type": "webhook", "id": "ev1", "trigger": "hook", "body": body});
    let run = engine.start(flow, "default", "hook", event).await.unwrap();
    let run = tokio::time::timeout(Duration::from_secs(20), engine.drive(run))
        .await
        .expect("the run finishes")
        .unwrap();
    let nodes = engine.store().nodes(&run.tenant, &run.id).unwrap();
    (run, nodes.into_iter().map(|n| (n.key.clone(), n)).collect())
}

fn output(nodes: &HashMap<String, NodeRecord>, key: &str) -> Value {
    nodes[key].output.clone().unwrap_or(Value::Null)
}

fn status(nodes: &HashMap<String, NodeRecord>, key: &str) -> NodeStatus {
    nodes[key].status
}

#[tokio::test]
async fn map_script_and_log_nodes() {
    let f = flow(
        r#"  - id: m
    type: map
    mapping:
      email: event.body.email.to_lower()
      n: 1
      f: 1.5
      nested: {list: [event.body.n, null, true]}
    next: s
  - id: s
    type: script
    script: |
      let total = 0;
      for x in nodes.m.nested.list { if type_of(x) == "i64" { total += x; } }
      #{ total: total, email: nodes.m.email }
    next: l
  - id: l
    type: log
    message: '"saw " + nodes.s.email'
    value: nodes.s
"#,
    );
    let (run, nodes) = run_flow(&f, json!({"email": "A@B.C", "n": 41})).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(
        output(&nodes, "m"),
        json!({"email": "a@b.c", "n": 1, "f": 1.5, "nested": {"list": [41, null, true]}})
    );
    assert_eq!(output(&nodes, "s"), json!({"total": 41, "email": "a@b.c"}));
    assert_eq!(status(&nodes, "l"), NodeStatus::Succeeded);
}

#[tokio::test]
async fn if_takes_one_branch_and_skips_the_other() {
    let f = flow(
        r#"  - {id: check, type: if, condition: event.body.ok, then: yes_branch, else: no_branch}
  - {id: yes_branch, type: map, mapping: {v: '"yes"'}, next: after_yes}
  - {id: after_yes, type: map, mapping: {v: nodes.yes_branch.v}}
  - {id: no_branch, type: map, mapping: {v: '"no"'}}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({"ok": true})).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(output(&nodes, "check"), json!({"value": true}));
    assert_eq!(output(&nodes, "after_yes"), json!({"v": "yes"}));
    assert_eq!(status(&nodes, "no_branch"), NodeStatus::Skipped);

    let (_, nodes) = run_flow(&f, json!({"ok": false})).await;
    assert_eq!(status(&nodes, "yes_branch"), NodeStatus::Skipped);
    // A node all of whose predecessors were skipped is skipped too.
    assert_eq!(status(&nodes, "after_yes"), NodeStatus::Skipped);
    assert_eq!(output(&nodes, "no_branch"), json!({"v": "no"}));
}

#[tokio::test]
async fn a_join_waits_for_all_and_runs_if_any_branch_was_taken() {
    let f = flow(
        r#"  - {id: start, type: if, condition: 'true', then: a, else: b}
  - {id: a, type: map, mapping: {v: 1}, next: join}
  - {id: b, type: map, mapping: {v: 2}, next: join}
  - {id: c, type: map, mapping: {v: 3}, next: join}
  - {id: join, type: map, mapping: {a: nodes.a, b: nodes.b, c: nodes.c}}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({})).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(status(&nodes, "b"), NodeStatus::Skipped);
    assert_eq!(
        output(&nodes, "join"),
        json!({"a": {"v": 1}, "b": null, "c": {"v": 3}})
    );
}

#[tokio::test]
async fn switch_takes_the_first_matching_case_or_the_default() {
    let f = flow(
        r#"  - id: route
    type: switch
    cases:
      - {when: 'event.body.kind == "a"', next: on_a}
      - {when: 'event.body.kind.len() > 0', next: on_any}
    default: on_default
  - {id: on_a, type: map, mapping: {v: '"a"'}}
  - {id: on_any, type: map, mapping: {v: '"any"'}}
  - {id: on_default, type: map, mapping: {v: '"default"'}}
"#,
    );
    let (_, nodes) = run_flow(&f, json!({"kind": "a"})).await;
    assert_eq!(output(&nodes, "route"), json!({"case": 0}));
    assert_eq!(status(&nodes, "on_a"), NodeStatus::Succeeded);
    assert_eq!(status(&nodes, "on_any"), NodeStatus::Skipped);
    let (_, nodes) = run_flow(&f, json!({"kind": "b"})).await;
    assert_eq!(output(&nodes, "route"), json!({"case": 1}));
    assert_eq!(status(&nodes, "on_any"), NodeStatus::Succeeded);
    let (_, nodes) = run_flow(&f, json!({"kind": ""})).await;
    assert_eq!(output(&nodes, "route"), json!({"case": "default"}));
    assert_eq!(status(&nodes, "on_default"), NodeStatus::Succeeded);
    assert_eq!(status(&nodes, "on_a"), NodeStatus::Skipped);
}

#[tokio::test]
async fn filter_skips_the_rest_of_its_branch() {
    let f = flow(
        r#"  - {id: keep, type: filter, condition: event.body.n > 10, next: after}
  - {id: after, type: map, mapping: {v: event.body.n}, next: last}
  - {id: last, type: map, mapping: {v: 1}}
  - {id: other, type: map, mapping: {v: 2}}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({"n": 5})).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(output(&nodes, "keep"), json!({"passed": false}));
    assert_eq!(status(&nodes, "after"), NodeStatus::Skipped);
    assert_eq!(status(&nodes, "last"), NodeStatus::Skipped);
    assert_eq!(status(&nodes, "other"), NodeStatus::Succeeded);
    let (_, nodes) = run_flow(&f, json!({"n": 50})).await;
    assert_eq!(output(&nodes, "after"), json!({"v": 50}));
}

#[tokio::test]
async fn for_each_runs_its_body_per_item_with_outputs_in_item_order() {
    let (base, server) = server().await;
    let f = flow_with(
        &format!("vars: {{base: \"{base}\"}}\n"),
        r#"  - id: each
    type: for_each
    items: event.body.items
    concurrency: 3
    do:
      - {id: fetch, type: http, method: POST, url: '${vars.base}/ok/${item}', body: item, next: shape}
      - {id: shape, type: map, mapping: {item: item, index: index, path: nodes.fetch.body.path, prefix: nodes.first.p}}
    next: after
  - {id: first, type: map, mapping: {p: '"pre"'}, next: each}
  - {id: after, type: map, mapping: {count: nodes.each.len()}}
"#,
    );
    let items: Vec<Value> = (0..7).map(|i| json!(format!("i{i}"))).collect();
    let (run, nodes) = run_flow(&f, json!({"items": items})).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let out = output(&nodes, "each");
    let out = out.as_array().unwrap();
    assert_eq!(out.len(), 7);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(
            o,
            &json!({"item": format!("i{i}"), "index": i, "path": format!("ok/i{i}"), "prefix": "pre"})
        );
    }
    assert_eq!(output(&nodes, "after"), json!({"count": 7}));
    assert_eq!(status(&nodes, "each[6].fetch"), NodeStatus::Succeeded);
    // Each iteration's side effect has its own idempotency key.
    let mut keys = server.keys.lock().unwrap().clone();
    keys.sort();
    let mut want: Vec<String> = (0..7).map(|i| format!("{}:fetch:{i}", run.id)).collect();
    want.sort();
    assert_eq!(keys, want);
}

#[tokio::test]
async fn for_each_concurrency_runs_iterations_together() {
    let (base, _server) = server().await;
    // Each request waits until three are waiting: only concurrent
    // iterations can finish.
    let f = flow_with(
        &format!("vars: {{base: \"{base}\"}}\n"),
        r#"  - id: loop
    type: for_each
    items: '[1, 2, 3]'
    concurrency: 3
    do:
      - {id: fetch, type: http, url: '${vars.base}/barrier/3', timeout: 10s}
"#,
    );
    let (run, _) = run_flow(&f, json!({})).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
}

#[tokio::test]
async fn independent_branches_run_concurrently() {
    let (base, _server) = server().await;
    let f = flow_with(
        &format!("vars: {{base: \"{base}\"}}\n"),
        r#"  - {id: a, type: http, url: '${vars.base}/barrier/2', timeout: 10s, next: join}
  - {id: b, type: http, url: '${vars.base}/barrier/2', timeout: 10s, next: join}
  - {id: join, type: map, mapping: {a: nodes.a.status, b: nodes.b.status}}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({})).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(output(&nodes, "join"), json!({"a": 200, "b": 200}));
}

#[tokio::test]
async fn http_sends_the_request_and_an_idempotency_key() {
    let (base, server) = server().await;
    let f = flow_with(
        &format!("vars: {{base: \"{base}\"}}\n"),
        r#"  - id: call
    type: http
    method: PUT
    url: '${vars.base}/ok/x'
    query: {q: event.body.q}
    headers: {x-test: '${event.body.q}'}
    body: event.body
"#,
    );
    let (run, nodes) = run_flow(&f, json!({"q": "hello world"})).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let out = output(&nodes, "call");
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"]["body"], json!({"q": "hello world"}).to_string());
    assert_eq!(out["headers"]["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        server.keys.lock().unwrap().clone(),
        vec![format!("{}:call", run.id)]
    );
}

#[tokio::test]
async fn retryable_errors_retry_with_backoff_and_the_same_key() {
    let (base, server) = server().await;
    let f = flow_with(
        &format!("vars: {{base: \"{base}\"}}\n"),
        r#"  - id: call
    type: http
    url: '${vars.base}/flaky/2'
    retry: {max_attempts: 3, backoff: {initial: 10ms, max: 20ms}}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({})).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(nodes["call"].attempts, 3);
    let keys = server.keys.lock().unwrap().clone();
    assert_eq!(keys, vec![format!("{}:call", run.id); 3]);
}

#[tokio::test]
async fn client_errors_do_not_retry() {
    let (base, server) = server().await;
    let f = flow_with(
        &format!("vars: {{base: \"{base}\"}}\n"),
        r#"  - id: call
    type: http
    url: '${vars.base}/status/404'
    retry: {max_attempts: 5, backoff: {initial: 10ms}}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({})).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(nodes["call"].attempts, 1);
    assert_eq!(server.hits.lock().unwrap()["status/404"], 1);
    let error = run.error.unwrap();
    assert!(error.starts_with("node 'call' failed: GET "), "{error}");
    assert!(error.contains("answered 404"), "{error}");
}

#[tokio::test]
async fn retries_run_out() {
    let (base, _server) = server().await;
    let f = flow_with(
        &format!("vars: {{base: \"{base}\"}}\n"),
        r#"  - id: call
    type: http
    url: '${vars.base}/flaky/10'
    retry: {max_attempts: 2, backoff: {initial: 10ms}}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({})).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(nodes["call"].attempts, 2);
    assert!(nodes["call"].error.as_deref().unwrap().contains("503"));
}

#[tokio::test]
async fn timeouts_are_errors_that_retry() {
    let (base, server) = server().await;
    let f = flow_with(
        &format!("vars: {{base: \"{base}\"}}\n"),
        r#"  - id: call
    type: http
    url: '${vars.base}/slow'
    timeout: 100ms
    retry: {max_attempts: 2, backoff: {initial: 10ms}}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({})).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(nodes["call"].attempts, 2);
    assert!(
        nodes["call"]
            .error
            .as_deref()
            .unwrap()
            .contains("timed out"),
        "{:?}",
        nodes["call"].error
    );
    assert_eq!(server.hits.lock().unwrap()["slow"], 2);
}

#[tokio::test]
async fn on_error_continue_hands_the_error_on() {
    let f = flow(
        r#"  - {id: bad, type: map, mapping: {v: 'event.body.n / 0'}, on_error: continue, next: after}
  - {id: after, type: map, mapping: {saw: nodes.bad.error}}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({"n": 1})).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(status(&nodes, "bad"), NodeStatus::Failed);
    let saw = output(&nodes, "after")["saw"].as_str().unwrap().to_owned();
    assert!(saw.contains("Division by zero"), "{saw}");
}

#[tokio::test]
async fn on_error_handler_runs_instead_of_next() {
    let f = flow(
        r#"  - {id: bad, type: map, mapping: {v: 'event.body.n / 0'}, on_error: handle, next: normal}
  - {id: normal, type: map, mapping: {v: 1}}
  - {id: handle, type: map, mapping: {handled: nodes.bad.error.contains("zero")}}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({"n": 1})).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(status(&nodes, "normal"), NodeStatus::Skipped);
    assert_eq!(output(&nodes, "handle"), json!({"handled": true}));

    // Without an error the handler is skipped.
    let (_, nodes) = run_flow(
        &flow(
            r#"  - {id: ok, type: map, mapping: {v: 1}, on_error: handle, next: normal}
  - {id: normal, type: map, mapping: {v: 1}}
  - {id: handle, type: map, mapping: {v: 2}}
"#,
        ),
        json!({}),
    )
    .await;
    assert_eq!(status(&nodes, "normal"), NodeStatus::Succeeded);
    assert_eq!(status(&nodes, "handle"), NodeStatus::Skipped);
}

#[tokio::test]
async fn fail_ends_the_run_with_its_message() {
    let f = flow(
        r#"  - {id: stop, type: fail, message: '"bad input: " + event.body.x'}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({"x": 7})).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(
        run.error.as_deref(),
        Some("node 'stop' failed: bad input: 7")
    );
    assert_eq!(status(&nodes, "stop"), NodeStatus::Failed);
}

#[tokio::test]
async fn script_errors_fail_the_node_with_message_and_position() {
    let f = flow(
        r#"  - id: s
    type: script
    script: |
      let x = event.body.n;
      x.no_such_method()
"#,
    );
    let (run, nodes) = run_flow(&f, json!({"n": 1})).await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = nodes["s"].error.clone().unwrap();
    assert!(error.contains("no_such_method"), "{error}");
    assert!(error.contains("(at line 10, column"), "{error}");
}

#[tokio::test]
async fn runaway_scripts_fail_their_node_in_bounded_time() {
    let f = flow(
        r#"  - {id: s, type: script, script: 'loop { }', timeout: 200ms}
"#,
    );
    let (run, nodes) = run_flow(&f, json!({})).await;
    assert_eq!(run.status, RunStatus::Failed);
    let error = nodes["s"].error.clone().unwrap();
    assert!(
        error.contains("Too many operations") || error.contains("time limit"),
        "{error}"
    );
}

#[tokio::test]
async fn deliver_writes_the_outbox_in_the_nodes_commit() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine_on(store.clone());
    let f = flow(
        r#"  - id: out
    type: deliver
    target: amqp
    exchange: crm.events
    routing_key: contact.${event.type}
    payload: '#{email: event.body.email}'
"#,
    );
    let (run, nodes) = run_on(&engine, &f, json!({"email": "a@b.c"})).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    let id = format!("{}:out", run.id);
    assert_eq!(output(&nodes, "out"), json!({"delivery_id": id}));
    let outbox = store.deliveries().unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].id, id);
    assert_eq!(outbox[0].event, "ev1");
    assert_eq!(outbox[0].payload, json!({"email": "a@b.c"}));
    assert_eq!(
        outbox[0].target,
        weir_storage::DeliveryTarget::Amqp {
            exchange: "crm.events".into(),
            routing_key: "contact.webhook".into(),
            format: weir_storage::DeliveryFormat::Payload
        }
    );
}

#[tokio::test(start_paused = true)]
async fn delay_waits_durably_and_the_run_shows_waiting() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine_on(store.clone());
    let f = flow(
        r#"  - {id: pause, type: delay, for: 10m, next: after}
  - {id: after, type: map, mapping: {until: nodes.pause.until}}
"#,
    );
    let event = json!({"type": "webhook", "id": "ev1", "trigger": "hook", "body": {}});
    let run = engine.start(&f, "default", "hook", event).await.unwrap();
    let id = run.id.clone();
    let task = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.drive(run).await })
    };
    // Let the run reach its timer.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = store.run("default", &id).unwrap().unwrap();
    assert_eq!(waiting.status, RunStatus::Waiting);
    let record = store
        .nodes("default", &id)
        .unwrap()
        .into_iter()
        .find(|n| n.key == "pause")
        .unwrap();
    assert_eq!(record.status, NodeStatus::Waiting);
    let wake_at = record.wake_at.unwrap();
    let done = task.await.unwrap().unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    let nodes: HashMap<_, _> = store
        .nodes("default", &id)
        .unwrap()
        .into_iter()
        .map(|n| (n.key.clone(), n))
        .collect();
    let until = output(&nodes, "after")["until"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&until).unwrap(),
        wake_at
    );
    assert!(nodes["after"].finished_at.unwrap() >= wake_at);
}

#[tokio::test]
async fn a_resumed_run_never_reruns_finished_nodes() {
    let (base, server) = server().await;
    let f = flow_with(
        &format!("vars: {{base: \"{base}\"}}\n"),
        r#"  - {id: fetch, type: http, url: '${vars.base}/ok/once', next: pause}
  - {id: pause, type: delay, for: 50ms, next: after}
  - {id: after, type: map, mapping: {n: nodes.fetch.body.n, again: nodes.again.body.n}}
  - {id: again, type: http, url: '${vars.base}/ok/twice', next: after}
"#,
    );
    let store = Arc::new(MemoryStore::new());
    let engine = engine_on(store.clone());
    let event = json!({"type": "webhook", "id": "ev1", "trigger": "hook", "body": {}});
    let run = engine.start(&f, "default", "hook", event).await.unwrap();
    // As if the process had died: `call` finished, `wait` was sleeping until
    // a time that has passed, `again` was in flight.
    let now = engine.clock().now();
    let mut call = NodeRecord::new("fetch", "fetch");
    call.status = NodeStatus::Succeeded;
    call.attempts = 1;
    call.output = Some(json!({"status": 200, "headers": {}, "body": {"n": 41}}));
    let mut wait = NodeRecord::new("pause", "pause");
    wait.status = NodeStatus::Waiting;
    wait.attempts = 1;
    wait.wake_at = Some(now - chrono::Duration::seconds(1));
    let mut again = NodeRecord::new("again", "again");
    again.status = NodeStatus::Running;
    again.attempts = 1;
    let mut commit = weir_storage::Commit::new();
    for r in [call, wait, again] {
        commit = commit.node("default", &run.id, r);
    }
    store.commit(commit).await.unwrap();

    // A fresh engine, as after a restart.
    let engine = engine_on(store.clone());
    let unfinished = engine.unfinished().unwrap();
    assert_eq!(unfinished.len(), 1);
    let done = engine
        .drive(unfinished.into_iter().next().unwrap())
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    let nodes: HashMap<_, _> = store
        .nodes("default", &done.id)
        .unwrap()
        .into_iter()
        .map(|n| (n.key.clone(), n))
        .collect();
    // `call` kept its recorded output and was not sent again; `again` was.
    assert_eq!(output(&nodes, "after"), json!({"n": 41, "again": 1}));
    assert!(!server.hits.lock().unwrap().contains_key("ok/once"));
    assert_eq!(nodes["again"].attempts, 2);
    assert_eq!(
        server.keys.lock().unwrap().clone(),
        vec![format!("{}:again", done.id)]
    );
    assert!(engine.unfinished().unwrap().is_empty());
}

/// Opens a store again once the one before has let go of the folder's lock
/// (sled's own threads end a moment after its last handle is dropped).
async fn reopen(dir: &std::path::Path) -> Arc<weir_storage::SledStore> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match weir_storage::SledStore::open(dir) {
            Ok(store) => return store,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for the store's lock: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot open the store again: {e}"),
        }
    }
}

#[tokio::test]
async fn runs_resume_on_the_flow_version_they_started_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = weir_storage::SledStore::open(dir.path()).unwrap();
    let engine = engine_on(store.clone());
    let v1 = flow("  - {id: m, type: map, mapping: {version: 1}}\n");
    let event = json!({"type": "webhook", "id": "ev1", "trigger": "hook", "body": {}});
    let run = engine.start(&v1, "default", "hook", event).await.unwrap();
    store.close().await;
    drop((engine, store));

    // The file changes; the run was left unfinished.
    let _v2 = flow("  - {id: m, type: map, mapping: {version: 2}}\n");
    let store = reopen(dir.path()).await;
    let engine = engine_on(store.clone());
    let unfinished = engine.unfinished().unwrap();
    assert_eq!(unfinished.len(), 1);
    assert_eq!(unfinished[0].id, run.id);
    let done = engine
        .drive(unfinished.into_iter().next().unwrap())
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    let nodes = store.nodes("default", &done.id).unwrap();
    assert_eq!(nodes[0].output, Some(json!({"version": 1})));
    store.close().await;
}

#[tokio::test]
async fn many_concurrent_runs_on_sled_all_finish_durably() {
    let dir = tempfile::tempdir().unwrap();
    let store = weir_storage::SledStore::open(dir.path()).unwrap();
    let engine = engine_on(store.clone());
    let f = flow(
        r#"  - {id: a, type: map, mapping: {n: event.body.n}, next: b}
  - {id: b, type: if, condition: nodes.a.n % 2 == 0, then: even, else: odd}
  - {id: even, type: map, mapping: {v: '"even"'}}
  - {id: odd, type: map, mapping: {v: '"odd"'}}
"#,
    );
    let mut tasks = Vec::new();
    for n in 0..200 {
        let (engine, f) = (engine.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            let event = json!({"type": "webhook", "id": format!("ev{n}"), "trigger": "hook", "body": {"n": n}});
            let run = engine.start(&f, "default", "hook", event).await.unwrap();
            engine.drive(run).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, RunStatus::Succeeded);
    }
    store.close().await;
    drop((engine, store));
    // Everything reported finished is on disk.
    let store = reopen(dir.path()).await;
    assert!(store.unfinished_runs().unwrap().is_empty());
    let runs = store.list_runs("default", None, 1000).unwrap();
    assert_eq!(runs.len(), 200);
    for run in runs {
        let weir_storage::Listed::Run(run) = run else {
            panic!("an unreadable run: {run:?}");
        };
        let nodes = store.nodes("default", &run.id).unwrap();
        assert_eq!(nodes.len(), 4);
        let n = run.event["body"]["n"].as_i64().unwrap();
        let taken = if n % 2 == 0 { "even" } else { "odd" };
        assert!(
            nodes
                .iter()
                .any(|r| r.key == taken && r.status == NodeStatus::Succeeded)
        );
    }
    store.close().await;
}

#[tokio::test]
async fn durable_each_step_gives_the_same_results() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let engine = Engine::new(
        store,
        Clock::new(),
        EngineOptions {
            durable_each_step: true,
            ..EngineOptions::default()
        },
    );
    let f = flow(
        "  - {id: a, type: map, mapping: {n: 1}, next: b}\n  - {id: b, type: map, mapping: {m: nodes.a.n + 1}}\n",
    );
    let (run, nodes) = run_on(&engine, &f, json!({})).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(output(&nodes, "b"), json!({"m": 2}));
}

/// The last work can end by a branch being skipped after another branch
/// went to sleep: the run is then `waiting` and parks all the same.
#[tokio::test(start_paused = true)]
async fn a_run_whose_last_work_is_a_skipped_branch_waits_and_parks() {
    let store = Arc::new(MemoryStore::new());
    let options = EngineOptions {
        park_after: Some(Duration::from_secs(2)),
        ..EngineOptions::default()
    };
    let engine = Engine::new(store.clone(), Clock::new(), options);
    let f = flow(
        r#"  - {id: route, type: if, condition: "true", then: pause, else: other}
  - {id: pause, type: delay, for: 10m}
  - {id: other, type: map, mapping: {n: 1}}
"#,
    );
    let event = json!({"type": "webhook", "id": "ev1", "trigger": "hook", "body": {}});
    let run = engine.start(&f, "default", "hook", event).await.unwrap();
    let control = Arc::new(RunControl::new());
    let parked = tokio::time::timeout(
        Duration::from_secs(60),
        engine.drive_with(run, control.clone()),
    )
    .await
    .expect("the run parks instead of staying in memory until its timer")
    .unwrap();
    assert_eq!(parked.status, RunStatus::Waiting);
    assert!(control.parked_until().is_some());
    let stored = store.run("default", &parked.id).unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Waiting);
    let records: HashMap<_, _> = store
        .nodes("default", &parked.id)
        .unwrap()
        .into_iter()
        .map(|n| (n.key.clone(), n))
        .collect();
    assert_eq!(records["other"].status, NodeStatus::Skipped);
    assert_eq!(records["pause"].status, NodeStatus::Waiting);
}

#[tokio::test(start_paused = true)]
async fn a_run_waiting_on_a_long_timer_parks_and_resumes_from_its_records() {
    let store = Arc::new(MemoryStore::new());
    let options = EngineOptions {
        park_after: Some(Duration::from_secs(2)),
        ..EngineOptions::default()
    };
    let engine = Engine::new(store.clone(), Clock::new(), options);
    let f = flow(
        r#"  - {id: first, type: map, mapping: {n: 1}, next: pause}
  - {id: pause, type: delay, for: 10m, next: after}
  - {id: after, type: map, mapping: {n: nodes.first.n + 1, until: nodes.pause.until}}
"#,
    );
    let event = json!({"type": "webhook", "id": "ev1", "trigger": "hook", "body": {}});
    let run = engine.start(&f, "default", "hook", event).await.unwrap();
    let control = Arc::new(RunControl::new());
    let parked = engine.drive_with(run, control.clone()).await.unwrap();
    // It left the engine with only its timer to wait for, on disk.
    assert_eq!(parked.status, RunStatus::Waiting);
    let records: HashMap<_, _> = store
        .nodes("default", &parked.id)
        .unwrap()
        .into_iter()
        .map(|n| (n.key.clone(), n))
        .collect();
    let wake_at = records["pause"].wake_at.unwrap();
    assert_eq!(control.parked_until(), Some(wake_at));
    assert_eq!(
        store.run("default", &parked.id).unwrap().unwrap().status,
        RunStatus::Waiting
    );

    // When the timer is due, driving it again finishes it from its records.
    tokio::time::sleep(engine.clock().until(wake_at)).await;
    let done = engine.drive(parked).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    let records: HashMap<_, _> = store
        .nodes("default", &done.id)
        .unwrap()
        .into_iter()
        .map(|n| (n.key.clone(), n))
        .collect();
    assert_eq!(records["first"].attempts, 1);
    assert_eq!(records["pause"].attempts, 1);
    assert_eq!(output(&records, "after")["n"], json!(2));
    assert_eq!(
        output(&records, "after")["until"]
            .as_str()
            .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap()),
        Some(wake_at.into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_with_a_short_timer_does_not_park() {
    let store = Arc::new(MemoryStore::new());
    let options = EngineOptions {
        park_after: Some(Duration::from_secs(2)),
        ..EngineOptions::default()
    };
    let engine = Engine::new(store.clone(), Clock::new(), options);
    let f = flow("  - {id: pause, type: delay, for: 1s}\n");
    let event = json!({"type": "webhook", "id": "ev1", "trigger": "hook", "body": {}});
    let run = engine.start(&f, "default", "hook", event).await.unwrap();
    let control = Arc::new(RunControl::new());
    let done = engine.drive_with(run, control.clone()).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(control.parked_until(), None);
}

#[tokio::test]
async fn a_cancelled_run_stops_at_its_next_step() {
    let store = Arc::new(MemoryStore::new());
    let engine = engine_on(store.clone());
    let f = flow(
        "  - {id: pause, type: delay, for: 10m, next: after}\n  - {id: after, type: map, mapping: {v: 1}}\n",
    );
    let event = json!({"type": "webhook", "id": "ev1", "trigger": "hook", "body": {}});
    let run = engine.start(&f, "default", "hook", event).await.unwrap();
    let control = Arc::new(RunControl::new());
    let task = {
        let (engine, control) = (engine.clone(), control.clone());
        tokio::spawn(async move { engine.drive_with(run, control).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    control.cancel();
    let done = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(done.status, RunStatus::Cancelled);
    let stored = store.run("default", &done.id).unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Cancelled);
    assert!(
        !store
            .nodes("default", &done.id)
            .unwrap()
            .iter()
            .any(|n| n.key == "after")
    );
}
