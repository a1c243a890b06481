//! Poll triggers: each (key, version) emitted once, across `kill -9`;
//! full scans and cursors; `baseline`, `emit`, tenants, API errors.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use crate::{TIMEOUT, assert_event_base, flow, runs, start, time};
use weir_testkit::RecordServer;
use weir_testkit::{Daemon, wait_until};

/// How often the poll triggers of these tests poll.
const EVERY: &str = "200ms";

/// One poll run's event.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    trigger: String,
    kind: String,
    key: Value,
    version: Value,
    item: Value,
}

/// A poll flow `items-sync` with one trigger `changes` on `url`; `extra`
/// holds further trigger options, indented by 4 spaces.
fn poll_flow(url: &str, extra: &str) -> String {
    format!(
        r#"
id: items-sync
triggers:
  - id: changes
    type: poll
    every: {EVERY}
    request: {{url: "{url}"}}
    items: response.body
    key: item.id
    version: item.v
{extra}
nodes:
  - id: note
    type: map
    mapping:
      kind: event.type
      key: event.key
"#
    )
}

/// The poll runs of flow `items-sync`, oldest first.
fn changes(daemon: &Daemon) -> Vec<Change> {
    tenant_changes(daemon, None)
}

/// The poll runs of flow `items-sync` (of `tenant` if given), oldest first.
fn tenant_changes(daemon: &Daemon, tenant: Option<&str>) -> Vec<Change> {
    runs(daemon, "items-sync", tenant)
        .iter()
        .map(|run| {
            let e = &run["event"];
            assert_event_base(run);
            assert_eq!(e["trigger"], run["trigger"], "a poll run: {run:#}");
            Change {
                trigger: run["trigger"].as_str().unwrap().to_owned(),
                kind: e["type"].as_str().unwrap().to_owned(),
                key: e["key"].clone(),
                version: e["version"].clone(),
                item: e["item"].clone(),
            }
        })
        .collect()
}

fn change(kind: &str, item: Value) -> Change {
    Change {
        trigger: "changes".into(),
        kind: kind.into(),
        key: item["id"].clone(),
        version: item["v"].clone(),
        item,
    }
}

/// Panics unless `got` holds each of `expected` exactly once and nothing
/// else (in any order).
fn assert_same_changes(got: &[Change], expected: &[Change], what: &str) {
    let id = |c: &Change| format!("{} {} {} {}", c.trigger, c.kind, c.key, c.version);
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for c in got {
        *count.entry(id(c)).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: changes emitted more than once: {twice:?}\nall: {got:#?}"
    );
    for e in expected {
        let found = got.iter().find(|c| id(c) == id(e));
        assert_eq!(found, Some(e), "{what}: expected {e:?}\nall: {got:#?}");
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{what}: unexpected changes\nall: {got:#?}"
    );
}

/// Waits until the daemon shows at least `n` poll runs; returns them.
fn wait_changes(daemon: &mut Daemon, n: usize) -> Vec<Change> {
    let mut got = Vec::new();
    wait_until(&format!("{n} poll runs"), TIMEOUT, || {
        daemon.weir.assert_running();
        got = changes(daemon);
        got.len() >= n
    });
    got
}

/// Waits until `path` got `n` more successful polls: after the second, the
/// poll that saw the server's state of now has been processed (polls of
/// one trigger never overlap).
fn wait_polls(server: &RecordServer, daemon: &mut Daemon, path: &str, n: usize) {
    let target = server.ok_count(path) + n;
    wait_until(&format!("{n} more polls of {path}"), TIMEOUT, || {
        daemon.weir.assert_running();
        server.ok_count(path) >= target
    });
}

fn record(id: &str, v: i64, name: &str) -> Value {
    json!({"id": id, "v": v, "name": name})
}

#[test]
fn poll_full_scan_emits_each_change_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (a1, b1) = (record("a", 1, "Ada"), record("b", 1, "Bob"));
    let server = RecordServer::start(vec![a1, b1.clone()]);
    flow(
        dir.path(),
        "items.yaml",
        &poll_flow(&server.url("/items"), ""),
    );
    let mut first = start(dir.path(), "first");

    // The baseline: the first poll records what exists and emits nothing.
    wait_polls(&server, &mut first, "/items", 2);
    assert_eq!(changes(&first), vec![], "the baseline poll emitted runs");

    let (a2, c1) = (record("a", 2, "Ada Lovelace"), record("c", 1, "Cy"));
    server.change(vec![c1.clone(), a2.clone()], &["b"]);
    wait_changes(&mut first, 3);
    wait_polls(&server, &mut first, "/items", 2);
    let mut expected = vec![
        change("created", c1),
        change("updated", a2),
        change("deleted", b1),
    ];
    assert_same_changes(&changes(&first), &expected, "after the first changes");

    // Many changes at once, and kill -9 while the poll that sees them
    // starts their runs.
    let c2 = record("c", 2, "Cyrus");
    let mut puts = vec![c2.clone()];
    expected.push(change("updated", c2));
    for i in 0..100 {
        let d = record(&format!("d{i:03}"), 1, "new");
        puts.push(d.clone());
        expected.push(change("created", d));
    }
    let polls = server.ok_count("/items");
    server.change(puts, &[]);
    // Closer than `wait_until` looks: the runs are admitted within ms.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while server.ok_count("/items") == polls || runs(&first, "items-sync", None).len() < 13 {
        assert!(
            std::time::Instant::now() < deadline,
            "no runs for the changes"
        );
        first.weir.assert_running();
    }
    first.weir.kill();
    let killed = Utc::now();

    let mut second = start(dir.path(), "second");
    wait_changes(&mut second, expected.len());
    wait_polls(&server, &mut second, "/items", 3);
    let got = changes(&second);
    assert_same_changes(&got, &expected, "after kill -9 and restart");
    let before_kill = runs(&second, "items-sync", None)
        .iter()
        .filter(|r| time(&r["created_at"]) < killed)
        .count();
    eprintln!(
        "{before_kill} of {} runs were started before the kill",
        expected.len()
    );
    wait_until("every run finished", TIMEOUT, || {
        runs(&second, "items-sync", None)
            .iter()
            .all(|r| r["status"] == "succeeded")
    });
}

/// A poll's changes are submitted together; when the backlog refuses some
/// (`--max-backlog`), those are emitted by later polls, each once.
#[test]
fn poll_changes_refused_by_a_full_backlog_come_with_later_polls_once() {
    let dir = tempfile::tempdir().unwrap();
    let existing: Vec<Value> = (0..30)
        .map(|n| record(&format!("r{n:02}"), 1, "x"))
        .collect();
    let server = RecordServer::start(existing.clone());
    // One run at a time (a constant concurrency key), 100 ms each: the
    // others wait in the backlog, which holds 4.
    let yaml = poll_flow(&server.url("/items"), "    baseline: false").replace(
        "nodes:\n",
        "concurrency: {key: '\"all\"', limit: 1}\nnodes:\n  - {id: nap, type: delay, for: 100ms, next: note}\n",
    );
    flow(dir.path(), "items.yaml", &yaml);
    let mut daemon = Daemon::start(dir.path(), "daemon", &["--max-backlog", "4"], &[]);
    wait_changes(&mut daemon, 30);
    wait_polls(&server, &mut daemon, "/items", 2);
    let expected: Vec<Change> = existing.into_iter().map(|r| change("created", r)).collect();
    assert_same_changes(&changes(&daemon), &expected, "through a full backlog");
    let log = daemon.weir.stderr();
    assert!(
        log.contains("changes wait for the next poll"),
        "the backlog never refused a change, so this test tests nothing:\n{log}"
    );
    assert!(
        !log.contains("poll failed"),
        "a full backlog is not an API failure to back off from:\n{log}"
    );
}

/// A record on which the flow's concurrency key fails does not hold up the
/// others; it is emitted once it (or the flow) is fixed.
#[test]
fn poll_record_whose_concurrency_key_fails_does_not_block_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let good_a = json!({"id": "a", "v": 1, "group": "x"});
    let bad_b = json!({"id": "b", "v": 1});
    let good_c = json!({"id": "c", "v": 1, "group": "y"});
    let server = RecordServer::start(vec![good_a.clone(), bad_b, good_c.clone()]);
    let yaml = poll_flow(&server.url("/items"), "    baseline: false").replace(
        "nodes:\n",
        "concurrency: {key: event.item.group.to_upper(), limit: 1}\nnodes:\n",
    );
    flow(dir.path(), "items.yaml", &yaml);
    let mut daemon = start(dir.path(), "daemon");
    wait_changes(&mut daemon, 2);
    wait_polls(&server, &mut daemon, "/items", 2);
    assert_same_changes(
        &changes(&daemon),
        &[
            change("created", good_a.clone()),
            change("created", good_c.clone()),
        ],
        "the bad record held back",
    );
    let log = daemon.weir.stderr();
    assert!(
        log.contains("concurrency key failed") && log.contains("key=b"),
        "no warning naming the record:\n{log}"
    );
    let fixed_b = json!({"id": "b", "v": 1, "group": "z"});
    server.put(fixed_b.clone());
    wait_changes(&mut daemon, 3);
    wait_polls(&server, &mut daemon, "/items", 2);
    assert_same_changes(
        &changes(&daemon),
        &[
            change("created", good_a),
            change("created", good_c),
            change("created", fixed_b),
        ],
        "once fixed",
    );
}

/// A record whose key cannot be had (it has no `ref`, the flow's key) is
/// reported, by its place in the answer, and skipped: the others are
/// emitted, and later records come with later polls (no backing off).
#[test]
fn poll_record_without_a_key_is_reported_and_skipped_while_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let a = json!({"id": "a", "ref": "r-a", "v": 1});
    let b = json!({"id": "b", "v": 1});
    let c = json!({"id": "c", "ref": "r-c", "v": 1});
    let server = RecordServer::start(vec![a.clone(), b, c.clone()]);
    let yaml = poll_flow(&server.url("/items"), "    baseline: false")
        .replace("key: item.id", "key: item.ref");
    flow(dir.path(), "items.yaml", &yaml);
    let mut daemon = start(dir.path(), "daemon");
    let by_ref = |item: &Value| Change {
        key: item["ref"].clone(),
        ..change("created", item.clone())
    };
    wait_changes(&mut daemon, 2);
    wait_polls(&server, &mut daemon, "/items", 2);
    assert_same_changes(&changes(&daemon), &[by_ref(&a), by_ref(&c)], "without b");
    let log = daemon.weir.stderr();
    assert!(
        log.contains("its key cannot be had")
            && log.contains("index=1")
            && log.contains(r#"\"id\":\"b\""#),
        "no warning naming the record:\n{log}"
    );
    let d = json!({"id": "d", "ref": "r-d", "v": 1});
    server.put(d.clone());
    wait_changes(&mut daemon, 3);
    wait_polls(&server, &mut daemon, "/items", 2);
    assert_same_changes(
        &changes(&daemon),
        &[by_ref(&a), by_ref(&c), by_ref(&d)],
        "then d",
    );
    assert!(
        !daemon.weir.stderr().contains("poll failed"),
        "{}",
        daemon.weir.stderr()
    );
}

#[test]
fn poll_without_baseline_emits_existing_records_as_created() {
    let dir = tempfile::tempdir().unwrap();
    let existing = vec![
        record("a", 1, "Ada"),
        record("b", 3, "Bob"),
        record("c", 7, "Cy"),
    ];
    let server = RecordServer::start(existing.clone());
    flow(
        dir.path(),
        "items.yaml",
        &poll_flow(&server.url("/items"), "    baseline: false"),
    );
    let mut daemon = start(dir.path(), "daemon");
    wait_changes(&mut daemon, 3);
    wait_polls(&server, &mut daemon, "/items", 3);
    let expected: Vec<Change> = existing.into_iter().map(|r| change("created", r)).collect();
    assert_same_changes(&changes(&daemon), &expected, "baseline: false");
}

#[test]
fn poll_fires_once_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let existing = vec![record("a", 1, "Ada"), record("b", 1, "Bob")];
    let server = RecordServer::start(existing.clone());
    flow(
        dir.path(),
        "items.yaml",
        &poll_flow(&server.url("/items/${tenant}"), "    baseline: false")
            .replace("id: items-sync", "id: items-sync\ntenants: [default, acme]"),
    );
    let mut daemon = start(dir.path(), "daemon");
    wait_changes(&mut daemon, 4);
    for tenant in ["default", "acme"] {
        wait_polls(&server, &mut daemon, &format!("/items/{tenant}"), 2);
    }
    let expected: Vec<Change> = existing.into_iter().map(|r| change("created", r)).collect();
    for tenant in ["default", "acme"] {
        assert_same_changes(
            &tenant_changes(&daemon, Some(tenant)),
            &expected,
            &format!("tenant {tenant}"),
        );
    }
    assert_eq!(changes(&daemon).len(), 4, "runs of both tenants");
}

#[test]
fn poll_emits_a_record_listed_twice_in_one_answer_once() {
    // Feeds with overlapping pages list a record twice; it is one change.
    let dir = tempfile::tempdir().unwrap();
    let (a1, b1) = (record("a", 1, "Ada"), record("b", 1, "Bob"));
    let server = RecordServer::start(vec![a1.clone(), b1.clone()]);
    flow(
        dir.path(),
        "items.yaml",
        &poll_flow(&server.url("/twice"), "    baseline: false"),
    );
    let mut daemon = start(dir.path(), "daemon");
    wait_changes(&mut daemon, 2);
    wait_polls(&server, &mut daemon, "/twice", 2);
    let mut expected = vec![change("created", a1), change("created", b1)];
    assert_same_changes(&changes(&daemon), &expected, "the first poll");

    let a2 = record("a", 2, "Ada Lovelace");
    server.put(a2.clone());
    expected.push(change("updated", a2));
    wait_changes(&mut daemon, 3);
    wait_polls(&server, &mut daemon, "/twice", 2);
    assert_same_changes(&changes(&daemon), &expected, "an update");
}

#[test]
fn poll_with_a_cursor_asks_for_what_changed_and_infers_no_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let server = RecordServer::start(vec![record("a", 1, "Ada"), record("b", 1, "Bob")]);
    flow(
        dir.path(),
        "items.yaml",
        &poll_flow(
            &server.url("/changes?since=${cursor}"),
            "    cursor: response.body.next",
        )
        .replace("items: response.body", "items: response.body.items"),
    );
    let mut first = start(dir.path(), "first");
    wait_polls(&server, &mut first, "/changes", 2);
    assert_eq!(changes(&first), vec![], "the baseline poll emitted runs");

    let (a2, c1) = (record("a", 2, "Ada Lovelace"), record("c", 1, "Cy"));
    server.change(vec![c1.clone(), a2.clone()], &["b"]);
    wait_changes(&mut first, 2);
    wait_polls(&server, &mut first, "/changes", 3);
    let mut expected = vec![change("created", c1), change("updated", a2)];
    assert_same_changes(&changes(&first), &expected, "cursor mode");

    // Each request carries the cursor the previous answer gave.
    let polled = server.polled_at("/changes");
    assert_eq!(
        polled[0].since.as_deref(),
        Some(""),
        "the first poll has no cursor yet: {polled:#?}"
    );
    for pair in polled.windows(2) {
        assert_eq!(
            pair[1].since,
            pair[0].next.map(|n| n.to_string()),
            "a poll's cursor is not the previous answer's `next`: {polled:#?}"
        );
    }

    // The cursor is durable: after kill -9 the next poll continues from it.
    let last_next = polled.last().unwrap().next;
    first.weir.kill();
    let polls = polled.len();
    let mut second = start(dir.path(), "second");
    wait_polls(&server, &mut second, "/changes", 1);
    let after = &server.polled_at("/changes")[polls];
    assert_eq!(
        after.since,
        last_next.map(|n| n.to_string()),
        "the first poll after the restart: {after:?}"
    );
    let d1 = record("d", 1, "Di");
    server.put(d1.clone());
    expected.push(change("created", d1));
    wait_changes(&mut second, 3);
    wait_polls(&server, &mut second, "/changes", 2);
    assert_same_changes(&changes(&second), &expected, "after the restart");
}

#[test]
fn poll_emit_filters_runs_but_records_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let server = RecordServer::start(vec![record("a", 1, "Ada")]);
    // Two triggers on the same records, with their own seen versions.
    flow(
        dir.path(),
        "items.yaml",
        &format!(
            r#"
id: items-sync
triggers:
  - id: new
    type: poll
    every: {EVERY}
    request: {{url: "{new}"}}
    items: response.body
    key: item.id
    version: item.v
    emit: [created]
  - id: changed
    type: poll
    every: {EVERY}
    request: {{url: "{changed}"}}
    items: response.body
    key: item.id
    version: item.v
    emit: [updated]
nodes:
  - {{id: note, type: map, mapping: {{kind: event.type}}}}
"#,
            new = server.url("/new"),
            changed = server.url("/changed"),
        ),
    );
    let mut daemon = start(dir.path(), "daemon");
    let settle = |daemon: &mut Daemon| {
        for path in ["/new", "/changed"] {
            wait_polls(&server, daemon, path, 2);
        }
    };
    settle(&mut daemon);
    let on = |trigger: &str, kind: &str, item: Value| Change {
        trigger: trigger.into(),
        ..change(kind, item)
    };
    let mut expected = Vec::new();
    let mut step = |what: &str,
                    daemon: &mut Daemon,
                    puts: Vec<Value>,
                    deletes: &[&str],
                    emits: Vec<Change>| {
        server.change(puts, deletes);
        expected.extend(emits);
        wait_changes(daemon, expected.len());
        settle(daemon);
        assert_same_changes(&changes(daemon), &expected, what);
    };

    let (b1, b2, b3) = (
        record("b", 1, "Bob"),
        record("b", 2, "Bobby"),
        record("b", 3, "Robert"),
    );
    let a2 = record("a", 2, "Ada Lovelace");
    step(
        "b created",
        &mut daemon,
        vec![b1.clone()],
        &[],
        vec![on("new", "created", b1)],
    );
    // `changed` recorded b's creation without a run, so this is an update.
    step(
        "b updated",
        &mut daemon,
        vec![b2.clone()],
        &[],
        vec![on("changed", "updated", b2)],
    );
    step("b deleted", &mut daemon, vec![], &["b"], vec![]);
    // Both recorded the deletion without a run, so this is a creation.
    step(
        "b created again",
        &mut daemon,
        vec![b3.clone()],
        &[],
        vec![on("new", "created", b3)],
    );
    step(
        "a updated",
        &mut daemon,
        vec![a2.clone()],
        &[],
        vec![on("changed", "updated", a2)],
    );
}

#[test]
fn poll_backs_off_on_api_errors_and_emits_once_the_api_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let server = RecordServer::start(vec![record("a", 1, "Ada")]);
    flow(
        dir.path(),
        "items.yaml",
        &poll_flow(&server.url("/items"), ""),
    );
    let mut daemon = start(dir.path(), "daemon");
    wait_polls(&server, &mut daemon, "/items", 2);

    server.set_failing(true);
    let (a2, b1) = (record("a", 2, "Ada Lovelace"), record("b", 1, "Bob"));
    server.change(vec![a2.clone(), b1.clone()], &[]);
    let failed = |server: &RecordServer| {
        server
            .polled_at("/items")
            .into_iter()
            .filter(|p| p.status == 500)
            .collect::<Vec<_>>()
    };
    wait_until("three failed polls", TIMEOUT, || {
        daemon.weir.assert_running();
        failed(&server).len() >= 3
    });
    assert_eq!(changes(&daemon), vec![], "runs while the API fails");
    let health = weir_testkit::Api::new(&daemon).get("/healthz");
    assert_eq!(health.status, 200, "/healthz: {health}");
    let log = daemon.weir.stderr();
    assert!(log.contains("poll failed"), "no warning in the log:\n{log}");
    let at: Vec<_> = failed(&server).iter().map(|p| p.at).collect();
    let (first_gap, second_gap) = (at[1] - at[0], at[2] - at[1]);
    assert!(
        first_gap >= Duration::from_millis(300) && second_gap > first_gap,
        "no back-off between failed polls: {first_gap:?}, then {second_gap:?}"
    );

    server.set_failing(false);
    wait_changes(&mut daemon, 2);
    wait_polls(&server, &mut daemon, "/items", 2);
    assert_same_changes(
        &changes(&daemon),
        &[change("updated", a2), change("created", b1)],
        "after the API recovered",
    );
}
