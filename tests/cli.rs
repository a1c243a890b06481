//! The `weir` commands from a terminal's point of view: `weir run --trigger`
//! builds the event of each trigger type, `--json` prints the run object,
//! `weir graph` prints DOT and Mermaid, `weir validate` checks a folder.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::{arg, run_weir, write_flow};

const TIMEOUT: Duration = Duration::from_secs(20);

const FLOW: &str = r#"
id: triggers
triggers:
  - {id: hook, type: webhook}
  - {id: call, type: api}
  - {id: tick, type: cron, schedule: "*/5 * * * *"}
  - id: changes
    type: poll
    every: 30s
    request: {url: "http://127.0.0.1:1/items"}
    items: response.body
    key: item.id
    ignore_fields: [seen]
nodes:
  - id: echo
    type: map
    mapping: {event: event}
"#;

fn event_of(dir: &std::path::Path, flow: &std::path::Path, trigger: &str, input: &str) -> Value {
    let done = run_weir(
        dir,
        trigger,
        &[
            "run",
            arg(flow),
            "--trigger",
            trigger,
            "--input",
            input,
            "--json",
        ],
        TIMEOUT,
    );
    done.assert_no_panic();
    assert_eq!(done.code, Some(0), "{done}");
    let run: Value =
        serde_json::from_str(done.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {done}"));
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["trigger"], trigger);
    let event = run["event"].clone();
    assert_eq!(
        run["nodes"][0]["output"]["event"], event,
        "the node saw the event"
    );
    assert_eq!(event["trigger"], trigger);
    assert!(event["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(event["received_at"].as_str().is_some());
    event
}

#[test]
fn run_builds_the_event_of_each_trigger_type() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write_flow(dir.path(), "triggers.yaml", FLOW);

    let e = event_of(dir.path(), &flow, "hook", r#"{"a": 1}"#);
    assert_eq!(
        (e["type"].clone(), e["body"].clone(), e["method"].clone()),
        (json!("webhook"), json!({"a": 1}), json!("POST"))
    );
    assert_eq!(
        (e["headers"].clone(), e["query"].clone()),
        (json!({}), json!({}))
    );

    let e = event_of(dir.path(), &flow, "call", r#"[1, 2]"#);
    assert_eq!(
        (e["type"].clone(), e["body"].clone()),
        (json!("api"), json!([1, 2]))
    );

    let e = event_of(dir.path(), &flow, "tick", "null");
    assert_eq!(e["type"], "schedule");
    assert!(chrono::DateTime::parse_from_rfc3339(e["scheduled_at"].as_str().unwrap()).is_ok());

    let e = event_of(
        dir.path(),
        &flow,
        "changes",
        r#"{"id": 7, "name": "x", "seen": 1}"#,
    );
    assert_eq!(
        (e["type"].clone(), e["key"].clone()),
        (json!("created"), json!(7))
    );
    assert_eq!(e["item"], json!({"id": 7, "name": "x", "seen": 1}));
    // The default version ignores `ignore_fields`.
    let again = event_of(
        dir.path(),
        &flow,
        "changes",
        r#"{"id": 7, "name": "x", "seen": 2}"#,
    );
    assert_eq!(e["version"], again["version"]);
    let changed = event_of(
        dir.path(),
        &flow,
        "changes",
        r#"{"id": 7, "name": "y", "seen": 1}"#,
    );
    assert_ne!(e["version"], changed["version"]);
}

#[test]
fn run_refuses_an_unknown_trigger_or_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write_flow(dir.path(), "triggers.yaml", FLOW);
    let done = run_weir(
        dir.path(),
        "nope",
        &["run", arg(&flow), "--trigger", "nope"],
        TIMEOUT,
    );
    assert_eq!(done.code, Some(2), "{done}");
    assert!(
        done.stderr
            .contains("has no trigger 'nope'; its triggers: hook, call, tick, changes"),
        "{done}"
    );
    let done = run_weir(
        dir.path(),
        "tenant",
        &["run", arg(&flow), "--tenant", "acme"],
        TIMEOUT,
    );
    assert_eq!(done.code, Some(2), "{done}");
    assert!(
        done.stderr.contains("does not serve tenant 'acme'"),
        "{done}"
    );
}

#[test]
fn a_failed_run_exits_1_and_records_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write_flow(
        dir.path(),
        "f.yaml",
        "id: f\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: stop, type: fail, message: '\"no: \" + event.body.why'}\n",
    );
    let done = run_weir(
        dir.path(),
        "fail",
        &["run", arg(&flow), "--input", r#"{"why": "bad"}"#, "--json"],
        TIMEOUT,
    );
    assert_eq!(done.code, Some(1), "{done}");
    let run: Value = serde_json::from_str(done.stdout.trim()).unwrap();
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"], "node 'stop' failed: no: bad");
    assert_eq!(run["nodes"][0]["status"], "failed");
}

#[test]
fn graph_prints_dot_and_mermaid() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write_flow(
        dir.path(),
        "g.yaml",
        "id: g\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: check, type: if, condition: 'true', then: yes-branch, else: no-branch}\n  - {id: yes-branch, type: map, mapping: {v: 1}}\n  - {id: no-branch, type: map, mapping: {v: 2}, on_error: handler}\n  - {id: handler, type: log, message: '\"x\"'}\n",
    );
    let dot = run_weir(dir.path(), "dot", &["graph", arg(&flow)], TIMEOUT);
    assert_eq!(dot.code, Some(0), "{dot}");
    assert!(dot.stdout.starts_with("digraph \"g\" {"), "{dot}");
    assert!(
        dot.stdout
            .contains("\"check\" -> \"yes-branch\" [label=\"then\"];"),
        "{dot}"
    );
    assert!(
        dot.stdout
            .contains("\"check\" -> \"no-branch\" [label=\"else\"];"),
        "{dot}"
    );
    assert!(
        dot.stdout
            .contains("\"no-branch\" -> \"handler\" [label=\"on_error\""),
        "{dot}"
    );
    let mermaid = run_weir(
        dir.path(),
        "mermaid",
        &["graph", arg(&flow), "--format", "mermaid"],
        TIMEOUT,
    );
    assert_eq!(mermaid.code, Some(0), "{mermaid}");
    assert!(mermaid.stdout.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(
        mermaid.stdout.contains("n_check -- then --> n_yes_branch"),
        "{mermaid}"
    );
}

#[test]
fn validate_checks_a_folder_and_the_default_flows_folder() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    write_flow(
        &flows,
        "ok.yaml",
        "id: ok\ntriggers: [{id: t, type: api}]\nnodes: [{id: a, type: log, message: '\"x\"'}]\n",
    );
    let done = run_weir(dir.path(), "valid", &["validate"], TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    assert!(done.stderr.contains("1 valid flow"), "{done}");
    write_flow(
        &flows,
        "bad.yml",
        "id: ok\ntriggers: [{id: t, type: api}]\nnodes: [{id: a, type: log, message: '\"x\"'}]\n",
    );
    let done = run_weir(dir.path(), "dup", &["validate", "flows"], TIMEOUT);
    assert_eq!(done.code, Some(1), "{done}");
    assert_eq!(done.stdout.lines().count(), 1, "{done}");
    assert!(done.stdout.contains("duplicate flow id `ok`"), "{done}");
    let done = run_weir(dir.path(), "missing", &["validate", "nowhere"], TIMEOUT);
    assert_eq!(done.code, Some(2), "{done}");
}

#[test]
fn the_example_flows_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let count = |folder: &str| {
        std::fs::read_dir(root.join(folder))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "yaml")
            })
            .count()
    };
    let (flows, integrations, actions) = (count("flows"), count("integrations"), count("actions"));
    // flows/ loads with nothing exported (the README's first command).
    let done = weir_testkit::Weir::spawn_with(
        dir.path(),
        "examples",
        &["validate", root.join("flows").to_str().unwrap()],
        &[],
    )
    .finish(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    assert!(
        done.stderr.contains(&format!("{flows} valid flows")),
        "{done}"
    );
    // So does integrations/, with the flows.
    let done = weir_testkit::Weir::spawn_with(
        dir.path(),
        "integrations",
        &[
            "validate",
            root.join("flows").to_str().unwrap(),
            root.join("integrations").to_str().unwrap(),
            root.join("actions").to_str().unwrap(),
        ],
        &[],
    )
    .finish(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    assert!(
        done.stderr.contains(&format!(
            "{flows} valid flows, {integrations} valid integrations, {actions} valid actions"
        )),
        "{done}"
    );
    // An integration action that changes the universal action's input
    // schema: a problem of the integration's file, at the schema.
    let layers = dir.path().join("layers");
    std::fs::create_dir_all(&layers).unwrap();
    std::fs::copy(
        root.join("actions/create-contact.yaml"),
        layers.join("create-contact.yaml"),
    )
    .unwrap();
    std::fs::write(
        layers.join("crm.yaml"),
        "key: crm\nbase_url: https://crm.example\nauth: {type: bearer}\nactions:\n  - key: create-contact\n    input_schema: {type: object}\n    request: {method: POST, path: /contacts}\n  - {key: sync, flow: nowhere}\n  - {key: report, flow: hourly}\n",
    )
    .unwrap();
    // Flow actions: a flow that is not there, and one no api call starts.
    std::fs::write(
        layers.join("hourly.yaml"),
        "id: hourly\ntriggers: [{id: t, type: cron, schedule: '0 * * * *'}]\nnodes: [{id: m, type: map, mapping: {a: '1'}}]\n",
    )
    .unwrap();
    let done = run_weir(dir.path(), "layers", &["validate", arg(&layers)], TIMEOUT);
    assert_eq!(done.code, Some(1), "{done}");
    for expected in [
        "crm.yaml:6:19: error: action 'create-contact' implements the universal action",
        "crm.yaml:8:11: error: action 'sync' runs flow `nowhere`, which is not among the flows given",
        "crm.yaml:9:11: error: action 'report' runs flow `hourly`",
    ] {
        assert!(done.stdout.contains(expected), "{expected}\n{done}");
    }
    assert!(done.stdout.contains("which has no api trigger"), "{done}");
    // examples/flows needs the secret GitHub signs with.
    let done = weir_testkit::Weir::spawn_with(
        dir.path(),
        "signed-examples",
        &["validate", root.join("examples/flows").to_str().unwrap()],
        &[("GITHUB_WEBHOOK_SECRET", "a-secret-for-the-example")],
    )
    .finish(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
}

#[test]
fn run_with_deliver_sends_the_deliveries_and_waits_for_them() {
    let server = weir_testkit::FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    let flow = write_flow(
        dir.path(),
        "d.yaml",
        &format!(
            "id: d\ntriggers: [{{id: t, type: api}}]\nnodes:\n  - {{id: out, type: deliver, target: http, url: '{}', secret_env: D_SECRET, payload: event.body}}\n",
            server.url("/in")
        ),
    );
    let done = weir_testkit::Weir::spawn_with(
        dir.path(),
        "deliver",
        &["run", arg(&flow), "--input", r#"{"n": 1}"#, "--deliver"],
        &[
            ("D_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("WEIR_LOG", "warn"),
        ],
    )
    .finish(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    assert!(done.stdout.contains("delivered"), "{done}");
    assert_eq!(server.count("/in"), 1);

    // Without a broker, AMQP deliveries cannot leave: exit 1 at once.
    let flow = write_flow(
        dir.path(),
        "a.yaml",
        "id: a\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: out, type: deliver, target: amqp, exchange: x, routing_key: k, payload: event.body}\n",
    );
    let done = run_weir(
        dir.path(),
        "no-broker",
        &["run", arg(&flow), "--input", "1", "--deliver"],
        TIMEOUT,
    );
    assert_eq!(done.code, Some(1), "{done}");
    assert!(
        done.stderr.contains("no AMQP broker is configured"),
        "{done}"
    );
}

/// Mistakes of use exit 2 with a message that says what to do: a flow id
/// where a file is expected, a `--server` that is not a URL, a data folder
/// whose files are damaged (not blamed on permissions).
#[test]
fn usage_mistakes_exit_2_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(
        &flows,
        "contact-sync.yaml",
        "id: contact-sync\ntriggers: [{id: t, type: api}]\nnodes: [{id: a, type: log, message: '\"x\"'}]\n",
    );
    let done = run_weir(dir.path(), "run-id", &["run", "contact-sync"], TIMEOUT);
    assert_eq!(done.code, Some(2), "{done}");
    assert!(
        done.stderr.contains("takes a flow's file")
            && done.stderr.contains("flows/contact-sync.yaml"),
        "{done}"
    );
    for command in [["runs", "list"], ["outbox", "list"]] {
        let done = run_weir(
            dir.path(),
            "server",
            &[command[0], command[1], "--server", "127.0.0.1:8080"],
            TIMEOUT,
        );
        assert_eq!(done.code, Some(2), "{done}");
        assert!(
            done.stderr.contains("--server must be a URL like http://"),
            "{done}"
        );
    }
    for (flag, value) in [
        ("--header-timeout", "0s"),
        ("--body-timeout", "5ms"),
        ("--max-connections", "0"),
    ] {
        let done = run_weir(dir.path(), "flags", &["serve", flag, value], TIMEOUT);
        assert_eq!(done.code, Some(2), "{flag} {value}: {done}");
    }
    let data = dir.path().join("damaged");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("db"), vec![7u8; 5000]).unwrap();
    std::fs::write(data.join("conf"), "segment_size: 524288\n").unwrap();
    let done = run_weir(
        dir.path(),
        "damaged",
        &[
            "serve",
            "--flows",
            arg(&flows),
            "--data",
            arg(&data),
            "--listen",
            "127.0.0.1:0",
        ],
        TIMEOUT,
    );
    assert_eq!(done.code, Some(1), "{done}");
    assert!(done.stderr.contains("its files are corrupt"), "{done}");
    assert!(!done.stderr.contains("writable"), "{done}");
}

/// Output into a pipe that is closed (`weir ... | head -1`) ends the
/// command quietly: no panic, exit 0.
#[test]
fn printing_into_a_closed_pipe_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write_flow(dir.path(), "f.yaml", FLOW);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = std::process::Command::new(weir_testkit::process::weir_binary())
        .args(["graph", arg(&flow)])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

/// `weir runs show ID` sends the id as one path segment (escaped), and
/// shows every node of the run's flow, those not reached yet as pending.
#[test]
fn runs_show_escapes_ids_and_lists_nodes_not_reached_yet() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(
        &flows,
        "later.yaml",
        "id: later\ntriggers: [{id: hook, type: webhook}]\nnodes:\n  - {id: first, type: map, mapping: {n: 1}, next: pause}\n  - {id: pause, type: delay, for: 1h, next: after}\n  - {id: after, type: map, mapping: {n: 2}}\n",
    );
    let daemon = weir_testkit::Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = weir_testkit::Api::new(&daemon);
    let (run, _) =
        weir_testkit::api::run_and_event(&api.hook("/hooks/default/later/hook", &json!({}), &[]));
    api.wait_for(&run, "waiting");
    let server = ["--server", daemon.base.as_str()];
    let show = |id: &str, label: &str| {
        let mut args = vec!["runs", "show", id];
        args.extend(server);
        run_weir(dir.path(), label, &args, TIMEOUT)
    };
    let done = show(&run, "show");
    assert_eq!(done.code, Some(0), "{done}");
    let after = done
        .stdout
        .lines()
        .find(|l| l.starts_with("after"))
        .unwrap_or_else(|| panic!("{done}"));
    assert!(after.contains("pending"), "{done}");
    let done = show("../flows/later", "escaped");
    assert_eq!(done.code, Some(2), "{done}");
    assert!(done.stderr.contains("no run ../flows/later"), "{done}");
    assert!(!done.stdout.contains("definition"), "{done}");
}

/// The example flows do what their comments say: a contact is published as
/// `contact.created`; one without an e-mail address takes the `reject`
/// branch (its run fails there, saying why); an order is priced and its
/// follow-up published.
#[test]
fn the_example_flows_do_what_they_say() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let run = |flow: &str, input: &str| {
        let file = root.join("flows").join(flow);
        let done = run_weir(
            dir.path(),
            flow,
            &["run", arg(&file), "--input", input, "--json"],
            TIMEOUT,
        );
        let run: Value =
            serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("{e}: {done}"));
        (done, run)
    };
    let contact = root.join("examples/payloads/contact.json");
    let (done, run_object) = run("contact-sync.yaml", &format!("@{}", contact.display()));
    assert_eq!(done.code, Some(0), "{done}");
    assert_eq!(run_object["status"], "succeeded");
    let printed = run_weir(
        dir.path(),
        "contact-text",
        &[
            "run",
            arg(&root.join("flows/contact-sync.yaml")),
            "--input",
            &format!("@{}", contact.display()),
        ],
        TIMEOUT,
    );
    assert!(
        printed.stdout.contains("routing_key=contact.created"),
        "{printed}"
    );

    let (done, run_object) = run("contact-sync.yaml", r#"{"first_name": "Ada"}"#);
    assert_eq!(done.code, Some(1), "{done}");
    let nodes = run_object["nodes"].as_array().unwrap();
    let status = |id: &str| nodes.iter().find(|n| n["id"] == id).unwrap()["status"].clone();
    assert_eq!(status("normalize"), "succeeded", "{run_object:#}");
    assert_eq!(status("reject"), "failed", "{run_object:#}");
    assert_eq!(status("publish"), "skipped", "{run_object:#}");

    let order = root.join("examples/payloads/order.json");
    let (done, run_object) = run("order-followup.yaml", &format!("@{}", order.display()));
    assert_eq!(done.code, Some(0), "{done}");
    let sum = run_object["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "sum")
        .unwrap()["output"]
        .clone();
    assert_eq!(sum["gross"], 1188.0, "{run_object:#}");
}

#[test]
fn validate_checks_integration_files_too() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("integrations");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("crm.yaml"),
        "key: crm\nbase_url: https://crm.example\nauth: {type: api_kee, name: X-Key}\n",
    )
    .unwrap();
    let done = run_weir(
        dir.path(),
        "validate",
        &["validate", folder.to_str().unwrap()],
        TIMEOUT,
    );
    assert_eq!(done.code, Some(1), "{done}");
    assert!(
        done.stdout.contains("crm.yaml:3:14: error:")
            && done.stdout.contains("did you mean `api_key`"),
        "{done}"
    );
    assert!(done.stderr.contains("1 problem in 1 file"), "{done}");
}
