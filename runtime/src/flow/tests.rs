//! One test per diagnostic case of docs/flow-format.md, each checking file, line,
//! column and message; and loading of every node and trigger type.

use super::*;

/// The rendered diagnostics of `source`, loaded as `f.yaml`.
fn problems(source: &str) -> Vec<String> {
    match load_source(source, "f.yaml") {
        Ok(_) => Vec::new(),
        Err(e) => e.diagnostics.iter().map(|d| d.render(&e.file)).collect(),
    }
}

/// Asserts exactly one problem, at `at` (`LINE:COL`), containing `needle`.
fn one(source: &str, at: &str, needle: &str) {
    let found = problems(source);
    assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
    let prefix = format!("f.yaml:{at}: error: ");
    assert!(
        found[0].starts_with(&prefix),
        "expected it at {at}: {}",
        found[0]
    );
    assert!(
        found[0].contains(needle),
        "expected `{needle}` in: {}",
        found[0]
    );
}

const HEAD: &str = "id: f\ntriggers:\n  - id: hook\n    type: webhook\nnodes:\n";

#[test]
fn yaml_syntax() {
    one(
        "id: f\ntriggers: [\n",
        "2:11",
        "invalid YAML: unclosed bracket",
    );
    one("id: f\n  bad: indent\n", "2:6", "invalid YAML");
}

#[test]
fn unknown_node_type() {
    one(
        &format!("{HEAD}  - id: a\n    type: mapp\n    mapping: {{x: 1}}\n"),
        "7:11",
        "unknown node type `mapp`; did you mean `map`?",
    );
}

#[test]
fn unknown_trigger_type() {
    one(
        "id: f\ntriggers:\n  - id: t\n    type: cronn\nnodes:\n  - id: a\n    type: log\n    message: '\"x\"'\n",
        "4:11",
        "unknown trigger type `cronn`",
    );
}

#[test]
fn unknown_option_names_the_key_and_suggests() {
    one(
        &format!("{HEAD}  - id: a\n    type: map\n    maping: {{x: 1}}\n    mapping: {{x: 1}}\n"),
        "8:5",
        "node 'a': unknown option `maping`; did you mean `mapping`?",
    );
    one(
        "id: f\nnodez: []\ntriggers:\n  - id: hook\n    type: webhook\nnodes:\n  - id: a\n    type: log\n    message: '\"x\"'\n",
        "2:1",
        "unknown option `nodez`; did you mean `nodes`?",
    );
}

#[test]
fn missing_option() {
    one(
        &format!("{HEAD}  - id: a\n    type: map\n"),
        "6:5",
        "node 'a': missing option `mapping`",
    );
    one(
        "id: f\nnodes:\n  - id: a\n    type: log\n    message: '\"x\"'\n",
        "1:1",
        "missing option `triggers`",
    );
    one(
        &format!("{HEAD}  - type: map\n    mapping: {{x: 1}}\n"),
        "6:5",
        "missing option `id`",
    );
}

#[test]
fn duplicate_node_id() {
    one(
        &format!(
            "{HEAD}  - id: a\n    type: log\n    message: '\"x\"'\n  - id: a\n    type: log\n    message: '\"y\"'\n"
        ),
        "9:9",
        "duplicate node id `a` (first defined at line 6)",
    );
}

#[test]
fn duplicate_trigger_id() {
    one(
        "id: f\ntriggers:\n  - id: t\n    type: api\n  - id: t\n    type: webhook\nnodes:\n  - id: a\n    type: log\n    message: '\"x\"'\n",
        "5:5",
        "duplicate trigger id `t`",
    );
}

#[test]
fn links_to_missing_nodes() {
    one(
        &format!(
            "{HEAD}  - id: a\n    type: log\n    message: '\"x\"'\n    next: publsh\n  - id: publish\n    type: log\n    message: '\"x\"'\n"
        ),
        "9:11",
        "node 'a': `next` names `publsh`, which is not a node of this flow; did you mean `publish`?",
    );
    let src = format!(
        "{HEAD}  - id: a\n    type: if\n    condition: 'true'\n    then: good\n    else: [bad]\n"
    );
    let found = problems(&src);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("f.yaml:9:11: error: node 'a': `then` names `good`"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("f.yaml:10:12: error: node 'a': `else` names `bad`"),
        "{}",
        found[1]
    );
}

#[test]
fn node_references_in_expressions_are_checked_with_a_hint() {
    // A misspelt node, in a mapping and in a template.
    one(
        &format!(
            "{HEAD}  - {{id: normalize, type: map, mapping: {{email: event.body.email}}, next: check}}\n  - {{id: check, type: map, mapping: {{e: nodes.normalise.email}}}}\n"
        ),
        "7:47",
        "node 'check': `nodes.normalise`: there is no node 'normalise'; did you mean `nodes.normalize`?",
    );
    one(
        &format!(
            "{HEAD}  - {{id: normalize, type: map, mapping: {{n: 1}}, next: call}}\n  - {{id: call, type: http, url: 'http://x/${{nodes.normalize.n}}/${{nodes[\"normalzie\"]}}'}}\n"
        ),
        "7:72",
        "did you mean `nodes.normalize`?",
    );
    // A loop body's node, outside its loop.
    one(
        &format!(
            "{HEAD}  - id: lines\n    type: for_each\n    items: event.body.lines\n    do:\n      - {{id: price, type: map, mapping: {{t: item.qty}}}}\n    next: sum\n  - {{id: sum, type: map, mapping: {{t: nodes.price.t}}}}\n"
        ),
        "12:45",
        "node 'price' is inside the body of for_each 'lines', so it is not visible here; outside the body, `nodes.lines` holds the list of its iterations' outputs",
    );
    // Inside the body, the flow's nodes and the body's are visible; a
    // node not upstream reads as () and is not an error.
    assert_eq!(
        problems(&format!(
            "{HEAD}  - {{id: first, type: map, mapping: {{n: 1}}, next: lines}}\n  - id: lines\n    type: for_each\n    items: event.body.lines\n    do:\n      - {{id: price, type: map, mapping: {{t: item.qty, f: nodes.first.n, later: nodes.after}}, next: tax}}\n      - {{id: tax, type: map, mapping: {{t: nodes.price.t}}}}\n    next: after\n  - {{id: after, type: map, mapping: {{n: nodes.lines}}}}\n"
        )),
        Vec::<String>::new()
    );
}

#[test]
fn dedupe_and_concurrency_keys_see_flow_as_id_and_version() {
    assert_eq!(
        problems(
            "id: f\nconcurrency: {key: flow.id + event.body.k}\ntriggers:\n  - {id: hook, type: webhook, dedupe: 'flow.id + \":\" + flow.version + \":\" + event.body.id'}\nnodes:\n  - {id: a, type: map, mapping: {f: flow.id}}\n"
        ),
        Vec::<String>::new()
    );
}

#[test]
fn cycles_name_their_nodes() {
    let src = format!(
        "{HEAD}  - id: a\n    type: log\n    message: '\"x\"'\n    next: b\n  - id: b\n    type: log\n    message: '\"x\"'\n    next: c\n  - id: c\n    type: log\n    message: '\"x\"'\n    next: a\n"
    );
    one(&src, "6:5", "the nodes a → b → c → a form a cycle");
    one(
        &format!("{HEAD}  - id: a\n    type: log\n    message: '\"x\"'\n    next: a\n"),
        "6:5",
        "the nodes a → a form a cycle",
    );
}

#[test]
fn rhai_syntax_errors_point_into_the_expression() {
    // `+*`: the expression starts at column 10; its `*` is 12 characters in.
    one(
        &format!("{HEAD}  - id: a\n    type: map\n    mapping:\n      x: event.body +* 2\n"),
        "9:22",
        "node 'a': invalid expression `event.body +* 2`",
    );
    // Quoted: the expression starts after the quote.
    one(
        &format!(
            "{HEAD}  - id: a\n    type: if\n    condition: \"nodes.x ==\"\n    then: a2\n  - id: a2\n    type: log\n    message: '\"x\"'\n"
        ),
        "8:27",
        "invalid expression",
    );
    // A block script: positions count from the block's first line.
    one(
        &format!(
            "{HEAD}  - id: a\n    type: script\n    script: |\n      let x = 1;\n      let y = x +* 2;\n      y\n"
        ),
        "10:18",
        "invalid expression",
    );
}

#[test]
fn unknown_variables_are_load_errors() {
    one(
        &format!("{HEAD}  - id: a\n    type: map\n    mapping:\n      kind: contact\n"),
        "9:13",
        "unknown variable `contact`",
    );
}

#[test]
fn invalid_cron_schedule_and_time_zone() {
    one(
        "id: f\ntriggers:\n  - id: t\n    type: cron\n    schedule: \"0 3 * *\"\nnodes:\n  - id: a\n    type: log\n    message: '\"x\"'\n",
        "5:15",
        "invalid cron schedule `0 3 * *`",
    );
    one(
        "id: f\ntriggers:\n  - id: t\n    type: cron\n    schedule: \"61 3 * * *\"\nnodes:\n  - id: a\n    type: log\n    message: '\"x\"'\n",
        "5:15",
        "invalid cron schedule",
    );
    one(
        "id: f\ntriggers:\n  - id: t\n    type: cron\n    schedule: \"0 3 * * *\"\n    timezone: Europe/Atlantis\nnodes:\n  - id: a\n    type: log\n    message: '\"x\"'\n",
        "6:15",
        "unknown time zone `Europe/Atlantis`",
    );
}

#[test]
fn duplicate_flow_ids_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let flow = "id: same\ntriggers:\n  - id: t\n    type: api\nnodes:\n  - id: a\n    type: log\n    message: '\"x\"'\n";
    std::fs::write(dir.path().join("a.yaml"), flow).unwrap();
    std::fs::write(dir.path().join("b.yml"), flow).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a flow").unwrap();
    let (flows, errors) = load_paths(&[dir.path().to_path_buf()], Default::default());
    assert_eq!(flows.len(), 1);
    assert_eq!(errors.len(), 1);
    let line = errors[0].to_string();
    assert!(
        line.ends_with(
            "b.yml:1:5: error: duplicate flow id `same`: "
                .to_owned()
                .as_str()
        ) || line.contains("b.yml:1:5: error: duplicate flow id `same`"),
        "{line}"
    );
    assert!(line.contains("a.yaml has it too"), "{line}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let src = "id: f\ntriggers:\n  - id: t\n    type: cron\n    schedule: bad\nnodes:\n  - id: a\n    type: map\n    mapping: {x: event.}\n    next: nope\n  - id: b\n    type: wat\n";
    let found = problems(src);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(
        found
            .iter()
            .all(|l| l.starts_with("f.yaml:") && l.contains(": error: "))
    );
}

#[test]
fn wrong_value_types_are_reported() {
    one(
        &format!("{HEAD}  - id: a\n    type: delay\n    for: 10\n"),
        "8:10",
        "`for` must be a duration like 30s",
    );
    one(
        &format!("{HEAD}  - id: a\n    type: delay\n    for: 10y\n"),
        "8:10",
        "not a duration unit",
    );
    one(
        &format!("{HEAD}  - id: a\n    type: http\n    url: ftp://x\n"),
        "8:10",
        "the scheme `ftp` is not supported",
    );
    one(
        &format!("{HEAD}  - id: a\n    type: deliver\n    target: kafka\n    payload: event\n"),
        "8:13",
        "`target` must be `amqp` or `http`",
    );
    one(
        &format!(
            "{HEAD}  - id: a\n    type: deliver\n    target: amqp\n    exchange: x\n    routing_key: k\n    url: http://x\n    payload: event\n"
        ),
        "11:5",
        "unknown option `url`",
    );
    one(
        &format!(
            "{HEAD}  - id: a\n    type: log\n    message: '\"x\"'\n    retry: {{max_attempts: 0}}\n"
        ),
        "9:12",
        "`max_attempts` must be between 1 and 1000",
    );
}

#[test]
fn for_each_bodies_are_checked() {
    let src = format!(
        "{HEAD}  - id: loop\n    type: for_each\n    items: event.body\n    do:\n      - id: a\n        type: map\n        mapping: {{v: item}}\n      - id: b\n        type: map\n        mapping: {{v: index}}\n"
    );
    one(&src, "13:9", "the body must end in one node");
    // Loop names are not in scope outside a body.
    one(
        &format!("{HEAD}  - id: a\n    type: map\n    mapping: {{v: item}}\n"),
        "8:18",
        "unknown variable `item`",
    );
    // A body links only to its own nodes.
    let src = format!(
        "{HEAD}  - id: loop\n    type: for_each\n    items: event.body\n    do:\n      - id: a\n        type: map\n        mapping: {{v: item}}\n        next: out\n  - id: out\n    type: log\n    message: '\"x\"'\n"
    );
    one(&src, "13:15", "which is not in the body of for_each 'loop'");
}

#[test]
fn every_node_and_trigger_type_loads() {
    let src = r#"
id: all-types
vars: {base: "http://127.0.0.1:1"}
tenants: [default, acme]
concurrency: {key: event.body.id, limit: 2}
triggers:
  - id: hook
    type: webhook
    verify: {scheme: hmac-sha256, header: X-Sig, secret_env: HOOK_SECRET}
    dedupe: event.headers["x-request-id"]
    max_body: 512KiB
  - {id: gh, type: webhook, verify: {scheme: github, secret_env: S}}
  - {id: st, type: webhook, verify: {scheme: stripe, secret_env: S}}
  - {id: sw, type: webhook, verify: {scheme: standard-webhooks, secret_env: S}}
  - id: nightly
    type: cron
    schedule: "0 3 * * 1-5"
    timezone: Europe/Berlin
    catch_up: latest
  - id: changes
    type: poll
    every: 30s
    request: {url: "${vars.base}/items?since=${cursor}", headers: {accept: application/json}}
    items: response.body.items
    key: item.id
    version: item.updated_at
    cursor: response.body.next
    emit: [created, updated]
  - {id: call, type: api}
nodes:
  - id: m
    type: map
    mapping: {a: event.body, list: [1, '"x"', {n: null}], s: '"text"'}
    next: [s, h]
  - id: s
    type: script
    script: |
      let total = 0;
      for x in [1, 2, 3] { total += x; }
      total
    next: check
  - id: h
    type: http
    method: post
    url: ${vars.base}/things
    headers: {x-api-key: "${vars.base}"}
    query: {page: "1"}
    body: nodes.m
    expect: [200, "2xx"]
    timeout: 5s
    retry: {max_attempts: 3, backoff: {initial: 100ms, max: 1s}}
    on_error: continue
    next: act
  - id: act
    type: action
    action: create-contact
    input: {email: event.body.email}
    connection: crm
    connection_id: event.body.connection
    next: check
  - id: check
    type: if
    condition: nodes.s > 2
    then: route
    else: stop
  - id: route
    type: switch
    cases:
      - {when: 'event.body.kind == "a"', next: pass}
    default: pass
  - id: pass
    type: filter
    condition: 'true'
    next: each
  - id: each
    type: for_each
    items: '[1, 2, 3]'
    concurrency: 2
    do:
      - {id: double, type: map, mapping: {v: item * 2, i: index}}
    next: wait
  - id: wait
    type: delay
    for: 10ms
    next: out
  - id: out
    type: deliver
    target: amqp
    exchange: events
    routing_key: thing.${event.type}
    format: cloudevents
    payload: nodes.each
    next: hooked
  - id: hooked
    type: deliver
    target: http
    url: ${vars.base}/hook
    secret_env: OUT_SECRET
    payload: nodes.each
    next: note
  - {id: note, type: log, message: '"done"', value: nodes.each, level: debug}
  - id: stop
    type: fail
    message: '"stopped"'
"#;
    // Read as a stored version is (the secrets' variables are not set in
    // this process; the checks of the environment are tested end to end).
    let flow = load_snapshot(src, "all.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(flow.triggers.len(), 7);
    assert_eq!(flow.graph.nodes.len(), 13);
    assert_eq!(flow.tenants.listed(), ["default", "acme"]);
    let types: Vec<&str> = flow
        .graph
        .nodes
        .iter()
        .map(|n| n.kind.type_name())
        .collect();
    for t in weir_nodes::node::NODE_TYPES {
        assert!(types.contains(t), "{t} missing");
    }
    // Topological order puts `check` after both of its predecessors.
    let pos = |id: &str| {
        flow.graph
            .order
            .iter()
            .position(|&i| flow.graph.nodes[i].id == id)
            .unwrap()
    };
    assert!(pos("check") > pos("s") && pos("check") > pos("h"));
}

mod never_panics {
    use proptest::prelude::*;

    use super::super::load_source;

    const VALID: &str = "id: f\nvars: {a: 1}\ntriggers:\n  - id: hook\n    type: webhook\n    dedupe: event.body.id\n  - {id: c, type: cron, schedule: \"0 3 * * 1-5\", timezone: UTC}\nnodes:\n  - id: a\n    type: map\n    mapping: {x: event.body.x, y: '\"lit\"'}\n    next: [b, l]\n  - {id: b, type: if, condition: nodes.a.x > 1, then: d, else: f}\n  - id: l\n    type: for_each\n    items: event.body.list\n    do:\n      - {id: i, type: script, script: 'item * 2'}\n  - {id: d, type: deliver, target: amqp, exchange: x, routing_key: 'k.${event.type}', payload: nodes.a}\n  - {id: f, type: fail, message: '\"no\"'}\n";

    /// Text built from what flow files are made of.
    fn yamlish() -> impl Strategy<Value = String> {
        let pieces = prop_oneof![
            Just("id: ".to_owned()),
            Just("type: ".to_owned()),
            Just("nodes:\n".to_owned()),
            Just("triggers:\n".to_owned()),
            Just("  - ".to_owned()),
            Just("next: ".to_owned()),
            Just("mapping: {".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("${".to_owned()),
            Just("'\"".to_owned()),
            Just("\n".to_owned()),
            Just("    ".to_owned()),
            Just("map".to_owned()),
            Just("for_each".to_owned()),
            Just("do:".to_owned()),
            Just("event.body".to_owned()),
            Just("&a *a <<: ".to_owned()),
            "[a-z_:. #{}\\[\\]()\"'|>-]{0,12}",
        ];
        prop::collection::vec(pieces, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn on_arbitrary_text(text in ".{0,400}") {
            let _ = load_source(&text, "fuzz.yaml");
        }

        #[test]
        fn on_yaml_like_text(text in yamlish()) {
            let _ = load_source(&text, "fuzz.yaml");
        }

        #[test]
        fn on_a_mutated_valid_flow(cuts in prop::collection::vec((0usize..VALID.len(), 0usize..8, "[a-z:\\-{}\\[\\]\n '\"$]{0,4}"), 1..6)) {
            let mut text = VALID.to_owned();
            for (at, len, insert) in cuts {
                let at = at.min(text.len());
                let end = (at + len).min(text.len());
                if text.is_char_boundary(at) && text.is_char_boundary(end) {
                    text.replace_range(at..end, &insert);
                }
            }
            let _ = load_source(&text, "fuzz.yaml");
        }
    }

    #[test]
    fn the_valid_flow_is_valid() {
        load_source(VALID, "valid.yaml").unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn tenants_star_serves_any_tenant_and_cannot_drive_cron_or_poll() {
    let flow = load_source(
        "id: f\ntenants: \"*\"\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: m, type: map, mapping: {a: 1}}\n",
        "f.yaml",
    )
    .expect("loads");
    assert_eq!(flow.tenants, Tenants::Any);
    assert!(flow.tenants.serves("anyone") && !flow.tenants.serves("Not Valid"));
    assert_eq!(flow.tenants.first(), "default");
    one(
        "id: f\ntenants: [\"*\", acme]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: m, type: map, mapping: {a: 1}}\n",
        "2:1",
        "list no other key beside it",
    );
    one(
        "id: f\ntenants: \"*\"\ntriggers:\n  - {id: nightly, type: cron, schedule: \"0 3 * * *\"}\nnodes:\n  - {id: m, type: map, mapping: {a: 1}}\n",
        "4:5",
        "trigger 'nightly': a cron trigger fires for each tenant listed",
    );
}

#[test]
fn http_through_a_connection_takes_a_path() {
    let flow = load_source(
        "id: f\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: get, type: http, connection: crm, connection_id: event.body.c, url: '/contacts/${event.body.id}'}\n",
        "f.yaml",
    )
    .expect("loads");
    let weir_nodes::NodeKind::Http(http) = &flow.graph.nodes[0].kind else {
        panic!("an http node")
    };
    let c = http.connection.as_ref().expect("through a connection");
    assert_eq!(c.integration, "crm");
    assert!(c.id.is_some());
    one(
        "id: f\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: get, type: http, connection: crm, url: 'https://x/contacts'}\n",
        "4:49",
        "a path under the integration's base_url",
    );
    one(
        "id: f\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: get, type: http, connection_id: '\"x\"', url: 'https://x/contacts'}\n",
        "4:27",
        "set `connection:` too",
    );
}

#[test]
fn a_flow_runs_per_connection_with_integration() {
    let flow = load_source(
        "id: f\nintegration: crm\ntriggers:\n  - {id: nightly, type: cron, schedule: \"0 3 * * *\"}\n  - id: changes\n    type: poll\n    every: 1m\n    request: {url: '/contacts', query: {region: '${connection.parameters.region}'}}\n    items: response.body\n    key: item.id\nnodes:\n  - {id: m, type: map, mapping: {c: connection.id, n: connection.name}}\n",
        "f.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(flow.integration.as_deref(), Some("crm"));
    // Every tenant with a connection, unless `tenants` narrows it.
    assert_eq!(flow.tenants, Tenants::Any);
    let weir_nodes::TriggerKind::Poll(poll) = &flow.trigger("changes").expect("the poll").kind
    else {
        panic!("a poll trigger")
    };
    let via = poll
        .request
        .connection
        .as_ref()
        .expect("polls through connections");
    assert_eq!(via.integration, "crm");

    // `connection` anywhere in a flow that does not run per connection.
    one(
        &format!("{HEAD}  - {{id: m, type: map, mapping: {{c: connection.id}}}}\n"),
        "6:37",
        "`connection` is in scope only in a flow that runs per connection",
    );
    // A poll with a path needs connections; one through connections takes
    // a path.
    one(
        "id: f\ntriggers:\n  - {id: p, type: poll, every: 1m, request: {url: /contacts}, items: response.body, key: item.id}\nnodes:\n  - {id: m, type: map, mapping: {a: 1}}\n",
        "3:51",
        "needs `integration: KEY` at the top of the flow",
    );
    one(
        "id: f\nintegration: crm\ntriggers:\n  - {id: p, type: poll, every: 1m, request: {url: 'https://crm.example/contacts'}, items: response.body, key: item.id}\nnodes:\n  - {id: m, type: map, mapping: {a: 1}}\n",
        "4:51",
        "`url` is a path under the integration's base_url",
    );
    one(
        "id: f\nintegration: Not A Key\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: m, type: map, mapping: {a: 1}}\n",
        "2:14",
        "`integration` must be an integration key",
    );
}

#[test]
fn an_api_triggers_input_schema_is_a_json_schema() {
    let flow = load_source(
        "id: f\ntriggers:\n  - id: call\n    type: api\n    input_schema: {type: object, required: [name]}\nnodes:\n  - {id: a, type: map, mapping: {n: event.body.name}}\n",
        "f.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let weir_nodes::TriggerKind::Api(api) = &flow.triggers[0].kind else {
        panic!("an api trigger")
    };
    let schema = api.input_schema.as_ref().unwrap();
    assert_eq!(schema.check(&serde_json::json!({}), "")[0].pointer, "/name");
    one(
        "id: f\ntriggers:\n  - id: call\n    type: api\n    input_schema: {type: objekt}\nnodes:\n  - {id: a, type: map, mapping: {n: '1'}}\n",
        "5:19",
        "`input_schema` is not a valid JSON Schema",
    );
}
