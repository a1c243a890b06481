//! Connections end to end, against a fake app: created with credentials
//! (API key, basic), tested on create, scoped to their tenant, 422 with a
//! pointer per problem, 409 without a key ring; credentials sealed at rest
//! (the raw files hold none), never in an answer or a log line; a restart
//! with the key works, with another key or none weir refuses to start, and
//! `weir secrets rotate` moves them to a new key.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use weir_testkit::{Api, Daemon, FakeServer, Weir, run_weir};

const SECRET: &str = "connections-test-workspace-secret-0123456789";
const GOOD_KEY: &str = "sk_live_4f1c9a7e2b8d6031aa";
const BAD_KEY: &str = "sk_live_revoked_77aa0c31e9";
const PASSWORD: &str = "hunter2-but-longer-9c1e";
const TIMEOUT: Duration = Duration::from_secs(30);

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

/// The fake app: `/eu/me` answers 200 for the good API key, 401 for any
/// other; `/ping` answers 200 for basic `agent:PASSWORD`.
fn app() -> FakeServer {
    let app = FakeServer::start();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("agent:{PASSWORD}"))
    );
    app.set_rule(move |r, _| match r.path.as_str() {
        "/eu/me" if r.header("x-api-key") == Some(GOOD_KEY) => 200,
        "/eu/me" => 401,
        "/ping" if r.header("authorization") == Some(basic.as_str()) => 200,
        "/ping" => 403,
        _ => 404,
    });
    app
}

fn integrations(dir: &Path, app: &FakeServer) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("crm.yaml"),
        format!(
            r#"key: crm
name: Example CRM
base_url: '{}/${{connection.parameters.region}}'
parameters:
  type: object
  required: [region]
  properties: {{region: {{enum: [eu, us]}}}}
auth: {{type: api_key, in: header, name: X-API-Key}}
test:
  request: {{method: GET, path: /me}}
"#,
            app.base()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("helpdesk.yaml"),
        format!(
            "key: helpdesk\nbase_url: '{}'\nauth: {{type: basic}}\ntest:\n  request: {{path: /ping}}\n",
            app.base()
        ),
    )
    .unwrap();
}

fn start(dir: &Path, label: &str, keys: Option<&str>) -> Daemon {
    let integrations = dir.join("integrations");
    let mut env = vec![("WEIR_WORKSPACE_SECRET", SECRET)];
    if let Some(keys) = keys {
        env.push(("WEIR_SECRET_KEYS", keys));
    }
    Daemon::start(
        dir,
        label,
        &["--integrations", integrations.to_str().unwrap()],
        &env,
    )
}

fn token(dir: &Path, who: &[&str]) -> String {
    weir_testkit::weir_token(dir, &[("WEIR_WORKSPACE_SECRET", SECRET)], who)
}

fn create(api: &Api, body: Value) -> weir_testkit::Answer {
    api.post("/api/v1/connections", &body)
}

/// Every answer's text, for the secrets search.
struct Seen(Vec<String>);

impl Seen {
    fn keep(&mut self, a: &weir_testkit::Answer) {
        self.0.push(a.text.clone());
    }
}

#[test]
fn connections_are_tested_scoped_sealed_and_never_shown() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    integrations(&dir.path().join("integrations"), &app);
    let keys = format!("k1:{}", key(1));
    let daemon = start(dir.path(), "daemon", Some(&keys));
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    let b = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "b"]));
    let mut seen = Seen(Vec::new());

    // Created and tested: the app got the key in its header.
    let good = create(
        &a,
        json!({"integration": "crm", "name": "EU CRM", "parameters": {"region": "eu"}, "credentials": {"api_key": GOOD_KEY}}),
    );
    seen.keep(&good);
    assert_eq!(good.status, 201, "{good}");
    assert_eq!(good.body["state"], "ready", "{good}");
    assert_eq!(good.body["tenant"], "a");
    assert!(good.body.get("credentials").is_none(), "{good}");
    assert_eq!(app.count("/eu/me"), 1);
    let id = good.body["id"].as_str().unwrap().to_owned();

    // A key the app refuses: created, disconnected, saying what to do.
    let bad = create(
        &a,
        json!({"integration": "crm", "parameters": {"region": "eu"}, "credentials": {"api_key": BAD_KEY}}),
    );
    seen.keep(&bad);
    assert_eq!(bad.status, 201, "{bad}");
    assert_eq!(bad.body["state"], "disconnected", "{bad}");
    let error = bad.body["error"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("reconnect"),
        "{error}"
    );
    let bad_id = bad.body["id"].as_str().unwrap().to_owned();

    // Basic auth.
    let desk = create(
        &a,
        json!({"integration": "helpdesk", "credentials": {"username": "agent", "password": PASSWORD}}),
    );
    seen.keep(&desk);
    assert_eq!(desk.status, 201, "{desk}");
    assert_eq!(desk.body["state"], "ready", "{desk}");

    // Every problem of a body at once, each at its pointer.
    let wrong = create(
        &a,
        json!({"integration": "crm", "parameters": {"region": "mars"}, "credentials": {"apikey": GOOD_KEY}}),
    );
    seen.keep(&wrong);
    wrong.assert_error(422, "invalid");
    let pointers: Vec<&str> = wrong.body["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        [
            "/parameters/region",
            "/credentials/api_key",
            "/credentials/apikey"
        ],
        "{wrong}"
    );
    let unknown = create(&a, json!({"integration": "erp", "credentials": {}}));
    assert_eq!(
        unknown.body["error"]["errors"][0]["pointer"], "/integration",
        "{unknown}"
    );
    create(&a, json!({"integration": "crm", "colour": 1})).assert_error(400, "bad_request");

    // Another tenant cannot see or touch them.
    {
        let path = format!("/api/v1/connections/{id}");
        b.get(&path).assert_error(404, "not_found");
        b.send(b.http.delete(b.url(&path)))
            .assert_error(404, "not_found");
        b.send(
            b.http
                .patch(b.url(&path))
                .header("content-type", "application/json")
                .body("{}"),
        )
        .assert_error(404, "not_found");
        b.post(&format!("{path}/test"), &json!({}))
            .assert_error(404, "not_found");
    }
    assert_eq!(b.get_ok("/api/v1/connections")["items"], json!([]));
    assert_eq!(
        a.get_ok("/api/v1/connections")["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        a.get_ok("/api/v1/connections?state=disconnected")["items"][0]["id"],
        bad_id.as_str()
    );

    // New credentials reconnect it: same id, ready.
    let patched = a.send(
        a.http
            .patch(a.url(&format!("/api/v1/connections/{bad_id}")))
            .header("content-type", "application/json")
            .body(json!({"credentials": {"api_key": GOOD_KEY}}).to_string()),
    );
    seen.keep(&patched);
    assert_eq!(patched.status, 200, "{patched}");
    assert_eq!(patched.body["id"], bad_id.as_str());
    assert_eq!(patched.body["state"], "ready", "{patched}");
    assert!(patched.body["error"].is_null(), "{patched}");
    let tested = a.post(&format!("/api/v1/connections/{id}/test"), &json!({}));
    seen.keep(&tested);
    assert_eq!(tested.body["state"], "ready", "{tested}");
    let refresh = a.post(&format!("/api/v1/connections/{id}/refresh"), &json!({}));
    refresh.assert_error(409, "conflict");
    for answer in [
        a.get("/api/v1/connections"),
        a.get(&format!("/api/v1/connections/{id}")),
    ] {
        seen.keep(&answer);
    }

    // The credentials are nowhere in clear: answers, the log, the files.
    let secrets = [GOOD_KEY, BAD_KEY, PASSWORD];
    let log = daemon.weir.stderr();
    let files = weir_testkit::files_under(&daemon.data);
    for secret in secrets {
        for text in &seen.0 {
            assert!(!text.contains(secret), "an answer holds {secret}: {text}");
        }
        assert!(!log.contains(secret), "the log holds {secret}");
        weir_testkit::assert_not_in_files(&files, secret);
    }

    // Deleted: gone.
    let deleted = a.send(a.http.delete(a.url(&format!(
        "/api/v1/connections/{}",
        desk.body["id"].as_str().unwrap()
    ))));
    assert_eq!(deleted.status, 200, "{deleted}");
    a.get(&format!(
        "/api/v1/connections/{}",
        desk.body["id"].as_str().unwrap()
    ))
    .assert_error(404, "not_found");

    // An admin sees every tenant's, and creates one for a tenant it names.
    let admin = Api::with_token(&daemon, &token(dir.path(), &["--admin"]));
    assert_eq!(
        admin.get_ok("/api/v1/connections")["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    create(&admin, json!({"integration": "helpdesk"})).assert_error(400, "bad_request");
    let for_b = admin.post(
        "/api/v1/connections?tenant=b",
        &json!({"integration": "helpdesk", "credentials": {"username": "agent", "password": PASSWORD}}),
    );
    assert_eq!(for_b.status, 201, "{for_b}");
    assert_eq!(b.get_ok("/api/v1/connections")["items"][0]["tenant"], "b");
    let tenants = admin.get_ok("/api/v1/tenants");
    assert_eq!(tenants["items"][0]["connections"], 2, "{tenants:#}");

    // Erasing a tenant takes its connections with it.
    let erased = admin.send(admin.http.delete(admin.url("/api/v1/tenants/b")));
    assert_eq!(erased.body["removed"]["connections"], 1, "{erased}");
    assert_eq!(b.get_ok("/api/v1/connections")["items"], json!([]));
}

#[test]
fn the_key_ring_is_checked_at_start_and_rotation_moves_to_a_new_key() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    integrations(&dir.path().join("integrations"), &app);
    let old = format!("k1:{}", key(1));
    let daemon = start(dir.path(), "daemon", Some(&old));
    let a_token = token(dir.path(), &["--tenant", "a"]);
    let a = Api::with_token(&daemon, &a_token);
    let made = create(
        &a,
        json!({"integration": "crm", "parameters": {"region": "eu"}, "credentials": {"api_key": GOOD_KEY}}),
    );
    assert_eq!(made.status, 201, "{made}");
    let id = made.body["id"].as_str().unwrap().to_owned();
    let data = daemon.data.clone();
    stop(daemon);

    // The same key: it opens them (the test request carries the key).
    let daemon = start(dir.path(), "same key", Some(&old));
    let a = Api::with_token(&daemon, &a_token);
    assert_eq!(
        a.post(&format!("/api/v1/connections/{id}/test"), &json!({}))
            .body["state"],
        "ready"
    );
    stop(daemon);

    // Another key under the same id, or no key: weir refuses to start,
    // naming the key it needs; the credentials stay as they were.
    for (keys, says) in [
        (
            Some(format!("k1:{}", key(9))),
            "cannot open the stored credentials",
        ),
        (Some(format!("k2:{}", key(2))), "key id `k1`"),
        (None, "`k1`"),
    ] {
        let done = serve_to_the_end(dir.path(), &data, keys.as_deref());
        assert_eq!(done.code, Some(1), "{done}");
        assert!(done.stderr.contains(says), "{says}: {done}");
        assert!(!done.stderr.contains("weir is serving"), "{done}");
    }

    // Rotation: the new key first, the old one still there to open.
    let both = format!("k2:{},k1:{}", key(2), key(1));
    let rotated = Weir::spawn_with(
        dir.path(),
        "rotate",
        &["secrets", "rotate", "--data", data.to_str().unwrap()],
        &[("WEIR_SECRET_KEYS", both.as_str())],
    )
    .finish(TIMEOUT);
    assert_eq!(rotated.code, Some(0), "{rotated}");
    assert!(
        rotated.stdout.contains("1 credential(s)") && rotated.stdout.contains("`k2`"),
        "{rotated}"
    );
    let only_new = format!("k2:{}", key(2));
    let daemon = start(dir.path(), "new key", Some(&only_new));
    let a = Api::with_token(&daemon, &a_token);
    let tested = a.post(&format!("/api/v1/connections/{id}/test"), &json!({}));
    assert_eq!(tested.body["state"], "ready", "{tested}");
    assert_eq!(app.count("/eu/me"), 3);
    stop(daemon);
}

#[test]
fn without_a_key_ring_no_credential_is_stored() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    integrations(&dir.path().join("integrations"), &app);
    let daemon = start(dir.path(), "no keys", None);
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    let answer = create(
        &a,
        json!({"integration": "crm", "parameters": {"region": "eu"}, "credentials": {"api_key": GOOD_KEY}}),
    );
    let message = answer.assert_error(409, "conflict");
    assert!(message.contains("WEIR_SECRET_KEYS"), "{message}");
    assert!(!answer.text.contains(GOOD_KEY));
    assert_eq!(
        app.count("/eu/me"),
        0,
        "nothing is tested before it can be stored"
    );
    assert_eq!(a.get_ok("/api/v1/connections")["items"], json!([]));
}

fn stop(daemon: Daemon) {
    daemon.weir.terminate();
    let done = daemon.weir.finish(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
}

fn serve_to_the_end(dir: &Path, data: &Path, keys: Option<&str>) -> weir_testkit::Finished {
    let flows = dir.join("flows");
    let integrations = dir.join("integrations");
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--flows",
        flows.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--integrations",
        integrations.to_str().unwrap(),
    ];
    match keys {
        Some(keys) => {
            Weir::spawn_with(dir, "serve", &args, &[("WEIR_SECRET_KEYS", keys)]).finish(TIMEOUT)
        }
        None => run_weir(dir, "serve", &args, TIMEOUT),
    }
}

#[test]
fn http_nodes_go_through_the_tenants_connection() {
    let app = FakeServer::start();
    let revoked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("agent:{PASSWORD}"))
    );
    let gone = revoked.clone();
    app.set_rule(move |r, _| match r.path.as_str() {
        _ if gone.load(std::sync::atomic::Ordering::SeqCst) => 401,
        "/ping" | "/tickets/7" if r.header("authorization") == Some(basic.as_str()) => 200,
        "/eu/me" if r.header("x-api-key") == Some(GOOD_KEY) => 200,
        _ => 401,
    });
    let dir = tempfile::tempdir().unwrap();
    integrations(&dir.path().join("integrations"), &app);
    let keys = format!("k1:{}", key(1));
    let daemon = start(dir.path(), "daemon", Some(&keys));
    weir_testkit::write_flow(
        &daemon.flows,
        "tickets.yaml",
        "id: tickets\ntenants: [a, b]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: get, type: http, connection: helpdesk, url: '/tickets/${event.body.n}', query: {full: 'true'}}\n",
    );
    weir_testkit::write_flow(
        &daemon.flows,
        "me.yaml",
        "id: me\ntenants: [a]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: who, type: http, connection: crm, connection_id: event.body.connection, url: /me, next: any}\n  - {id: any, type: http, connection: crm, url: /me}\n",
    );
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    let b = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "b"]));
    weir_testkit::wait_until("the flows load", TIMEOUT, || {
        a.flows()["items"].as_array().unwrap().len() == 2
    });
    let run = |api: &Api, flow: &str, input: Value| -> Value {
        let started = api.post(
            &format!("/api/v1/flows/{flow}/runs"),
            &json!({"input": input}),
        );
        assert_eq!(started.status, 202, "{started}");
        api.wait_finished(started.body["run_id"].as_str().unwrap())
    };
    let desk = create(
        &a,
        json!({"integration": "helpdesk", "credentials": {"username": "agent", "password": PASSWORD}}),
    );
    let desk_id = desk.body["id"].as_str().unwrap().to_owned();
    let mut crm = Vec::new();
    for _ in 0..2 {
        let c = create(
            &a,
            json!({"integration": "crm", "parameters": {"region": "eu"}, "credentials": {"api_key": GOOD_KEY}}),
        );
        crm.push(c.body["id"].as_str().unwrap().to_owned());
    }

    // Through the tenant's one helpdesk connection: the app got the
    // credentials, the path under base_url and the query.
    let done = run(&a, "tickets", json!({"n": 7}));
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let got = app.requests_to("/tickets/7");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].query.as_deref(), Some("full=true"));
    assert!(!done.to_string().contains(PASSWORD), "{done:#}");
    let used = a.get_ok(&format!("/api/v1/connections/{desk_id}"));
    assert!(used["last_used_at"].is_string(), "{used:#}");

    // b has no helpdesk connection: the node fails saying so.
    let failed = run(&b, "tickets", json!({"n": 7}));
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(
        failed
            .to_string()
            .contains("has no connection to `helpdesk`"),
        "{failed:#}"
    );

    // Two crm connections: `connection_id` picks one; without it the node
    // fails naming both.
    let two = run(&a, "me", json!({"connection": crm[1]}));
    assert_eq!(two["status"], "failed", "{two:#}");
    let nodes = two["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["status"], "succeeded", "{two:#}");
    let error = nodes[1]["error"].as_str().unwrap();
    assert!(
        error.contains(&crm[0]) && error.contains(&crm[1]) && error.contains("connection_id"),
        "{error}"
    );

    // The app stops accepting the credentials: the run fails, the
    // connection is disconnected, and the next run is told to reconnect.
    revoked.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = run(&a, "tickets", json!({"n": 7}));
    assert_eq!(refused["status"], "failed", "{refused:#}");
    assert!(
        refused.to_string().contains("now disconnected"),
        "{refused:#}"
    );
    let conn = a.get_ok(&format!("/api/v1/connections/{desk_id}"));
    assert_eq!(conn["state"], "disconnected", "{conn:#}");
    let calls = app.count("/tickets/7");
    let next = run(&a, "tickets", json!({"n": 7}));
    assert!(next.to_string().contains("is disconnected"), "{next:#}");
    assert!(next.to_string().contains("reconnect"), "{next:#}");
    assert_eq!(
        app.count("/tickets/7"),
        calls,
        "a disconnected connection is not used"
    );

    for secret in [PASSWORD, GOOD_KEY] {
        assert!(!daemon.weir.stderr().contains(secret));
        weir_testkit::assert_not_in_files(&weir_testkit::files_under(&daemon.data), secret);
    }
}

#[test]
fn the_cli_manages_connections() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    integrations(&dir.path().join("integrations"), &app);
    let keys = format!("k1:{}", key(1));
    let daemon = start(dir.path(), "daemon", Some(&keys));
    let a_token = token(dir.path(), &["--tenant", "a"]);
    let credentials = dir.path().join("credentials.json");
    std::fs::write(&credentials, json!({"api_key": GOOD_KEY}).to_string()).unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["connections"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--server",
            daemon.base.as_str(),
            "--token",
            a_token.as_str(),
        ]);
        Weir::spawn_with(dir.path(), "cli", &all, &[]).finish(TIMEOUT)
    };
    let at_file = format!("@{}", credentials.display());
    let made = cli(&[
        "create",
        "crm",
        "--parameters",
        r#"{"region": "eu"}"#,
        "--credentials",
        &at_file,
        "--json",
    ]);
    assert_eq!(made.code, Some(0), "{made}");
    let made: Value = serde_json::from_str(made.stdout.trim()).unwrap();
    assert_eq!(made["state"], "ready");
    let id = made["id"].as_str().unwrap();
    let list = cli(&["list"]);
    assert!(
        list.stdout.contains(id) && list.stdout.contains("ready"),
        "{list}"
    );
    let tested = cli(&["test", id]);
    assert_eq!(tested.code, Some(0), "{tested}");
    // A problem of the body is a usage error, with its pointer.
    let bad = cli(&[
        "create",
        "crm",
        "--parameters",
        r#"{"region": "mars"}"#,
        "--credentials",
        &at_file,
    ]);
    assert_eq!(bad.code, Some(2), "{bad}");
    assert!(bad.stderr.contains("/parameters/region"), "{bad}");
    let not_json = cli(&["create", "crm", "--credentials", "{not json"]);
    assert_eq!(not_json.code, Some(2), "{not_json}");
    let deleted = cli(&["delete", id]);
    assert!(deleted.stdout.contains("deleted"), "{deleted}");
    assert_eq!(cli(&["show", id]).code, Some(2));

    // `ensure`: no ready connection, so it makes one; then it answers that
    // one and makes no other.
    let region = r#"{"region": "eu"}"#;
    let ensure = |extra: &[&str]| {
        let mut args = vec!["ensure", "crm", "--parameters", region, "--json"];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let first = ensure(&["--credentials", &at_file]);
    assert_eq!(first.code, Some(0), "{first}");
    let first_body: Value = serde_json::from_str(first.stdout.trim()).unwrap();
    assert_eq!(first_body["state"], "ready", "{first}");
    let again = ensure(&[]);
    assert_eq!(again.code, Some(0), "{again}");
    let again_body: Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert_eq!(again_body["id"], first_body["id"]);
    let listed: Value = serde_json::from_str(cli(&["list", "--json"]).stdout.trim()).unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed:#}");
    // Nothing to ask on (stdin is not a terminal, and empty), an unknown
    // integration, credentials the app refuses: each says so.
    cli(&["delete", first_body["id"].as_str().unwrap()]);
    let nothing = ensure(&[]);
    assert_eq!(nothing.code, Some(2), "{nothing}");
    assert!(nothing.stderr.contains("no api_key given"), "{nothing}");
    let unknown = cli(&["ensure", "nope"]);
    assert_eq!(unknown.code, Some(2), "{unknown}");
    assert!(
        unknown.stderr.contains("no integration `nope`"),
        "{unknown}"
    );
    let refused = ensure(&["--credentials", &format!(r#"{{"api_key": "{BAD_KEY}"}}"#)]);
    assert_eq!(refused.code, Some(1), "{refused}");
    assert!(refused.stderr.contains("disconnected"), "{refused}");
    for done in [&first, &again, &refused] {
        assert!(!done.stdout.contains(GOOD_KEY) && !done.stderr.contains(GOOD_KEY));
        assert!(!done.stdout.contains(BAD_KEY) && !done.stderr.contains(BAD_KEY));
    }
    for done in [&list, &tested, &bad, &deleted] {
        assert!(!done.stdout.contains(GOOD_KEY) && !done.stderr.contains(GOOD_KEY));
    }
}

#[test]
fn notifications_tell_the_product_what_happened_to_connections_and_runs() {
    let app = app();
    let backend = FakeServer::start();
    let dir = tempfile::tempdir().unwrap();
    integrations(&dir.path().join("integrations"), &app);
    let keys = format!("k1:{}", key(1));
    let integrations = dir.path().join("integrations");
    let notify_url = backend.url("/weir-events");
    let daemon = Daemon::start(
        dir.path(),
        "daemon",
        &[
            "--integrations",
            integrations.to_str().unwrap(),
            "--notify-url",
            notify_url.as_str(),
        ],
        &[
            ("WEIR_WORKSPACE_SECRET", SECRET),
            ("WEIR_SECRET_KEYS", keys.as_str()),
            (
                "WEIR_NOTIFY_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
        ],
    );
    weir_testkit::write_flow(
        &daemon.flows,
        "broken.yaml",
        "id: broken\ntenants: [a]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: stop, type: fail, message: '\"out of stock\"'}\n",
    );
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    let made = create(
        &a,
        json!({"integration": "crm", "parameters": {"region": "eu"}, "credentials": {"api_key": BAD_KEY}}),
    );
    let id = made.body["id"].as_str().unwrap().to_owned();
    let patch = |api: &Api, key: &str| {
        api.send(
            api.http
                .patch(api.url(&format!("/api/v1/connections/{id}")))
                .header("content-type", "application/json")
                .body(json!({"credentials": {"api_key": key}}).to_string()),
        )
    };
    assert_eq!(patch(&a, GOOD_KEY).body["state"], "ready");
    assert_eq!(patch(&a, BAD_KEY).body["state"], "disconnected");
    a.send(a.http.delete(a.url(&format!("/api/v1/connections/{id}"))));
    weir_testkit::wait_until("the flow loads", TIMEOUT, || {
        a.flows()["items"].as_array().unwrap().len() == 1
    });
    let started = a.post("/api/v1/flows/broken/runs", &json!({}));
    let run = started.body["run_id"].as_str().unwrap().to_owned();

    let mut events = Vec::new();
    weir_testkit::wait_until("five notifications arrive", TIMEOUT, || {
        events = backend.requests_to("/weir-events");
        events.len() >= 5
    });
    let mut bodies: Vec<Value> = events.iter().map(|e| e.json()).collect();
    bodies.sort_by_key(|b| b["time"].as_str().unwrap().to_owned());
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "connection.created",
            "connection.reconnected",
            "connection.disconnected",
            "connection.deleted",
            "run.failed"
        ],
        "{bodies:#?}"
    );
    for b in &bodies {
        assert_eq!(b["tenant"], "a");
    }
    assert_eq!(bodies[0]["data"]["connection"]["id"], id.as_str());
    assert_eq!(bodies[0]["data"]["connection"]["state"], "disconnected");
    assert!(
        bodies[2]["data"]["connection"]["error"]
            .as_str()
            .unwrap()
            .contains("401")
    );
    assert_eq!(bodies[4]["data"]["run"]["id"], run.as_str());
    assert_eq!(bodies[4]["data"]["run"]["flow"], "broken");
    assert!(
        bodies[4]["data"]["run"]["error"]
            .as_str()
            .unwrap()
            .contains("out of stock")
    );
    // Signed as Standard Webhooks, and holding no credential.
    for e in &events {
        assert!(
            e.header("webhook-signature")
                .is_some_and(|s| s.starts_with("v1,"))
        );
        let text = String::from_utf8_lossy(&e.body);
        assert!(
            !text.contains(GOOD_KEY) && !text.contains(BAD_KEY),
            "{text}"
        );
    }

    // A notify URL without its secret is refused at start.
    let done = run_weir(
        dir.path(),
        "no secret",
        &[
            "serve",
            "--notify-url",
            notify_url.as_str(),
            "--listen",
            "127.0.0.1:0",
        ],
        TIMEOUT,
    );
    assert_eq!(done.code, Some(2), "{done}");
    assert!(done.stderr.contains("WEIR_NOTIFY_SECRET"), "{done}");
}

/// A flow with `integration:` runs per connection: its poll and cron fire
/// once for each ready connection (of every tenant), polls go through the
/// connection with its state kept per connection, `connection` is in scope
/// and `http` nodes use the run's own connection. A disconnected
/// connection is skipped (its state kept for when it is reconnected); a
/// deleted one takes its state with it.
#[test]
fn flows_with_an_integration_run_per_connection() {
    const KEYS: [&str; 3] = [
        "sk_a_eu_5b1f07c2d9",
        "sk_a_us_e3a09c61f4",
        "sk_b_eu_91d2ab7c03",
    ];
    const NEW_KEY: &str = "sk_a_us_rotated_0c4de9";
    let app = FakeServer::start();
    let refused = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let no = refused.clone();
    app.set_rule(move |r, _| {
        let key = r.header("x-api-key").unwrap_or_default().to_owned();
        let known = KEYS.contains(&key.as_str()) || key == NEW_KEY;
        match r.path.as_str() {
            _ if !known || no.lock().unwrap().contains(&key) => 401,
            "/eu/me" | "/us/me" | "/eu/contacts" | "/us/contacts" => 200,
            _ => 404,
        }
    });
    app.set_body(json!([{"id": 1, "v": 1}, {"id": 2, "v": 1}]));
    let dir = tempfile::tempdir().unwrap();
    integrations(&dir.path().join("integrations"), &app);
    let keys = format!("k1:{}", key(1));
    let daemon = start(dir.path(), "daemon", Some(&keys));
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    let b = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "b"]));
    let admin = Api::with_token(&daemon, &token(dir.path(), &["--admin"]));
    let connect = |api: &Api, region: &str, key: &str| -> String {
        let c = create(
            api,
            json!({"integration": "crm", "parameters": {"region": region}, "credentials": {"api_key": key}}),
        );
        assert_eq!(c.body["state"], "ready", "{c}");
        c.body["id"].as_str().unwrap().to_owned()
    };
    let ids = [
        connect(&a, "eu", KEYS[0]),
        connect(&a, "us", KEYS[1]),
        connect(&b, "eu", KEYS[2]),
    ];
    weir_testkit::write_flow(
        &daemon.flows,
        "sync.yaml",
        r#"id: sync
integration: crm
triggers:
  - id: changes
    type: poll
    every: 200ms
    baseline: false
    request: {url: /contacts}
    items: response.body
    key: item.id
    version: item.v
  - {id: call, type: api}
nodes:
  - {id: who, type: map, mapping: {connection: connection.id, region: connection.parameters.region}, next: me}
  - {id: me, type: http, connection: crm, url: /me}
"#,
    );
    weir_testkit::write_flow(
        &daemon.flows,
        "tick.yaml",
        "id: tick\nintegration: crm\ntriggers:\n  - {id: every-second, type: cron, schedule: \"* * * * * *\"}\nnodes:\n  - {id: m, type: map, mapping: {c: connection.id}}\n",
    );
    // The runs of `flow` for each connection, and how many succeeded.
    let runs_of = |api: &Api, flow: &str| -> Vec<Value> {
        api.list(&format!("flow={flow}&limit=500"))["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| api.run(r["id"].as_str().unwrap()))
            .collect()
    };
    let per_connection = |runs: &[Value], id: &str| -> usize {
        runs.iter().filter(|r| r["connection"]["id"] == id).count()
    };
    let settled = |api: &Api, flow: &str, n: usize| {
        weir_testkit::wait_until(&format!("{n} finished runs of {flow}"), TIMEOUT, || {
            let runs = runs_of(api, flow);
            runs.len() >= n && runs.iter().all(|r| r["status"] != "running")
        });
        runs_of(api, flow)
    };

    // Each connection's poll saw both records as new: its state is its own.
    let runs_a = settled(&a, "sync", 4);
    let runs_b = settled(&b, "sync", 2);
    for (runs, owned) in [(&runs_a, &ids[..2]), (&runs_b, &ids[2..])] {
        for id in owned {
            assert_eq!(per_connection(runs, id), 2, "{runs:#?}");
        }
        for run in runs.iter() {
            assert_eq!(run["status"], "succeeded", "{run:#}");
            let who = &weir_testkit::api::node(run, "who")["output"];
            assert_eq!(who["connection"], run["connection"]["id"], "{run:#}");
            assert_eq!(who["region"], run["connection"]["parameters"]["region"]);
            assert!(!run.to_string().contains("sk_"), "{run:#}");
        }
    }
    // Each poll went through its own connection: its region, its key.
    let keys_to = |path: &str| -> std::collections::BTreeSet<String> {
        app.requests_to(path)
            .iter()
            .map(|r| r.header("x-api-key").unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        keys_to("/eu/contacts"),
        [KEYS[0], KEYS[2]].map(String::from).into()
    );
    assert_eq!(keys_to("/us/contacts"), [KEYS[1]].map(String::from).into());
    // The cron fires for every connection.
    weir_testkit::wait_until("a tick per connection", TIMEOUT, || {
        let (ta, tb) = (runs_of(&a, "tick"), runs_of(&b, "tick"));
        ids[..2].iter().all(|id| per_connection(&ta, id) > 0) && per_connection(&tb, &ids[2]) > 0
    });

    // An api run of the flow: a tenant with one connection runs with it.
    let started = b.post("/api/v1/flows/sync/runs", &json!({"input": {}}));
    assert_eq!(started.status, 202, "{started}");
    let run = b.wait_finished(started.body["run_id"].as_str().unwrap());
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["connection"]["id"], ids[2].as_str(), "{run:#}");

    // The app refuses a's us key: that connection is disconnected by its
    // own poll, and skipped while the others go on.
    refused.lock().unwrap().push(KEYS[1].to_owned());
    weir_testkit::wait_until("the us connection is disconnected", TIMEOUT, || {
        a.get_ok(&format!("/api/v1/connections/{}", ids[1]))["state"] == "disconnected"
    });
    let us_polls = app.count("/us/contacts");
    let ticks_us = per_connection(&runs_of(&a, "tick"), &ids[1]);
    let eu_polls = app.count("/eu/contacts");
    let ticks_eu = per_connection(&runs_of(&a, "tick"), &ids[0]);
    weir_testkit::wait_until("the other connections go on", TIMEOUT, || {
        app.count("/eu/contacts") >= eu_polls + 6
            && per_connection(&runs_of(&a, "tick"), &ids[0]) >= ticks_eu + 2
    });
    assert_eq!(
        app.count("/us/contacts"),
        us_polls,
        "a disconnected connection is not polled"
    );
    assert_eq!(per_connection(&runs_of(&a, "tick"), &ids[1]), ticks_us);

    // Reconnected with a new key (same id): polled again, and what it saw
    // before is kept, so nothing is emitted twice.
    let patched = a.send(
        reqwest::blocking::Client::new()
            .patch(a.url(&format!("/api/v1/connections/{}", ids[1])))
            .bearer_auth(token(dir.path(), &["--tenant", "a"]))
            .json(&json!({"credentials": {"api_key": NEW_KEY}})),
    );
    assert_eq!(patched.body["state"], "ready", "{patched}");
    weir_testkit::wait_until(
        "the us connection is polled with its new key",
        TIMEOUT,
        || {
            app.requests_to("/us/contacts")
                .iter()
                .filter(|r| r.header("x-api-key") == Some(NEW_KEY))
                .count()
                >= 2
        },
    );
    assert_eq!(per_connection(&runs_of(&a, "sync"), &ids[1]), 2);

    // Deleting b's connection stops its triggers and forgets their state.
    let states = |tenant: &str| -> u64 {
        let all = admin.get_ok("/api/v1/tenants");
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == tenant)
            .map_or(0, |t| t["trigger_states"].as_u64().unwrap())
    };
    assert!(states("b") > 0);
    let deleted = b.send(
        reqwest::blocking::Client::new()
            .delete(b.url(&format!("/api/v1/connections/{}", ids[2])))
            .bearer_auth(token(dir.path(), &["--tenant", "b"])),
    );
    assert_eq!(deleted.status, 200, "{deleted}");
    weir_testkit::wait_until("b's trigger state is forgotten", TIMEOUT, || {
        states("b") == 0
    });
    assert!(states("a") > 0);

    for secret in KEYS.iter().chain([&NEW_KEY]) {
        assert!(
            !daemon.weir.stderr().contains(secret),
            "{secret} in the log"
        );
        weir_testkit::assert_not_in_files(&weir_testkit::files_under(&daemon.data), secret);
    }
}

/// `action` nodes: the action resolved through the tenant's connection
/// (integration → universal), its input checked before anything is sent,
/// the integration's mapping sent with the credentials and weir's
/// idempotency key, the output mapped and checked.
#[test]
fn action_nodes_run_the_integrations_mapping() {
    let app = contacts_app();
    app.set_body(json!({"id": 7}));
    let dir = tempfile::tempdir().unwrap();
    let integrations = dir.path().join("integrations");
    integrations_with_actions(&integrations, &app);
    let actions = dir.path().join("actions");
    std::fs::create_dir_all(&actions).unwrap();
    std::fs::write(
        actions.join("create-contact.yaml"),
        "key: create-contact\ninput_schema:\n  type: object\n  required: [email]\n  properties: {email: {type: string}, name: {type: string}}\noutput_schema:\n  type: object\n  required: [id]\n  properties: {id: {type: integer}}\n",
    )
    .unwrap();
    let daemon = Daemon::with_integrations(dir.path(), &integrations, &actions, SECRET);
    weir_testkit::write_flow(
        &daemon.flows,
        "add.yaml",
        "id: add\ntenants: [a]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: add, type: action, action: create-contact, input: {email: event.body.email, name: '\"Ada\"'}}\n",
    );
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    weir_testkit::wait_until("the flow loads", TIMEOUT, || {
        a.flows()["items"].as_array().unwrap().len() == 1
    });
    let c = create(
        &a,
        json!({"integration": "crm", "parameters": {"region": "eu"}, "credentials": {"api_key": GOOD_KEY}}),
    );
    assert_eq!(c.body["state"], "ready", "{c}");
    let run = |input: Value| -> Value {
        let started = a.post("/api/v1/flows/add/runs", &json!({"input": input}));
        assert_eq!(started.status, 202, "{started}");
        a.wait_finished(started.body["run_id"].as_str().unwrap())
    };

    let done = run(json!({"email": "ada@example.com"}));
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["nodes"][0]["output"], json!({"id": 7}), "{done:#}");
    let sent = app.requests_to("/eu/contacts");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].json(),
        json!({"email": "ada@example.com", "full_name": "Ada"})
    );
    assert_eq!(
        sent[0].idempotency_key().as_deref(),
        Some(format!("{}:add", done["id"].as_str().unwrap()).as_str())
    );

    // An input that does not match: the node fails with the pointer, and
    // nothing reaches the app.
    let bad = run(json!({"mail": "ada@example.com"}));
    assert_eq!(bad["status"], "failed", "{bad:#}");
    assert!(
        bad["nodes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("/email"),
        "{bad:#}"
    );
    assert_eq!(app.count("/eu/contacts"), 1);

    // The app answers what the output schema refuses: the action fails
    // naming the pointer.
    app.set_body(json!({"id": "seven"}));
    let odd = run(json!({"email": "ada@example.com"}));
    assert_eq!(odd["status"], "failed", "{odd:#}");
    let error = odd["nodes"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("output_schema") && error.contains("/id"),
        "{error}"
    );

    // Through the API: the same resolution, input checked before a run
    // exists, the run durable and listed, the output answered.
    app.set_body(json!({"id": 8}));
    let call = |api: &Api, body: Value| api.post("/api/v1/actions/create-contact/run", &body);
    let ok = call(&a, json!({"input": {"email": "bob@example.com"}}));
    assert_eq!(ok.status, 200, "{ok}\n{}", daemon.weir.stderr());
    assert_eq!(ok.body["output"], json!({"id": 8}), "{ok}");
    let run_id = ok.body["run_id"].as_str().unwrap();
    let listed = a.run(run_id);
    assert_eq!(listed["flow"], "action-create-contact", "{listed:#}");
    assert_eq!(listed["status"], "succeeded", "{listed:#}");
    let before = app.count("/eu/contacts");
    let invalid = call(&a, json!({"input": {"name": 5}}));
    assert_eq!(invalid.status, 422, "{invalid}");
    assert_eq!(invalid.body["error"]["code"], "invalid_input", "{invalid}");
    let pointers: Vec<&str> = invalid.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/email") && pointers.contains(&"/name"),
        "{invalid}"
    );
    assert_eq!(
        app.count("/eu/contacts"),
        before,
        "no request for an invalid input"
    );
    call(&a, json!({"input": {}, "nope": 1})).assert_error(400, "bad_request");
    a.post(
        "/api/v1/actions/delete-everything/run",
        &json!({"input": {}}),
    )
    .assert_error(404, "not_found");
    let b = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "b"]));
    call(
        &b,
        json!({"input": {"email": "x@example.com"}, "connection": c.body["id"]}),
    )
    .assert_error(404, "not_found");
    call(&b, json!({"input": {"email": "x@example.com"}})).assert_error(409, "no_connection");
    let catalog = a.get_ok("/api/v1/actions");
    let entry = catalog["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == "create-contact")
        .unwrap()
        .clone();
    assert_eq!(entry["integrations"], json!(["crm"]), "{catalog:#}");
    assert_eq!(entry["connections"], json!([c.body["id"]]), "{catalog:#}");
    assert_eq!(
        entry["input_schema"]["required"],
        json!(["email"]),
        "{catalog:#}"
    );
    // A caller's Idempotency-Key: a second call (also while the first is
    // still running) answers the first result and sends nothing; the same
    // key with another body is 422.
    let keyed = |k: &str, body: Value| {
        a.send(
            reqwest::blocking::Client::new()
                .post(a.url("/api/v1/actions/create-contact/run"))
                .bearer_auth(token(dir.path(), &["--tenant", "a"]))
                .header("idempotency-key", k)
                .json(&body),
        )
    };
    let sent = app.count("/eu/contacts");
    let first = keyed("k-1", json!({"input": {"email": "dee@example.com"}}));
    assert_eq!(first.status, 200, "{first}");
    let second = keyed("k-1", json!({"input": {"email": "dee@example.com"}}));
    assert_eq!(second.status, 200, "{second}");
    assert_eq!(second.body, first.body);
    assert_eq!(app.count("/eu/contacts"), sent + 1);
    keyed("k-1", json!({"input": {"email": "eve@example.com"}}))
        .assert_error(422, "idempotency_key_reused");
    app.set_delay(Duration::from_millis(500));
    let together: Vec<_> = (0..2)
        .map(|_| {
            let url = a.url("/api/v1/actions/create-contact/run");
            let bearer = token(dir.path(), &["--tenant", "a"]);
            std::thread::spawn(move || {
                let r = reqwest::blocking::Client::new()
                    .post(url)
                    .bearer_auth(bearer)
                    .header("idempotency-key", "k-2")
                    .json(&json!({"input": {"email": "fay@example.com"}}))
                    .send()
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().unwrap())
            })
        })
        .map(|t| t.join().unwrap())
        .collect();
    app.set_delay(Duration::ZERO);
    assert_eq!(together[0], together[1], "{together:?}");
    assert_eq!(together[0].0, 200, "{together:?}");
    assert_eq!(
        app.count("/eu/contacts"),
        sent + 2,
        "one request for two calls"
    );

    // The same from the command line: 0 with the output, 2 for an input
    // the schema refuses, 1 for an action that failed.
    let a_token = token(dir.path(), &["--tenant", "a"]);
    let cli = |args: &[&str]| {
        let mut all = vec!["actions"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--server",
            daemon.base.as_str(),
            "--token",
            a_token.as_str(),
        ]);
        Weir::spawn_with(dir.path(), "cli", &all, &[]).finish(TIMEOUT)
    };
    let listed = cli(&["list"]);
    assert!(
        listed.stdout.contains("create-contact") && listed.stdout.contains("crm"),
        "{listed}"
    );
    let ran = cli(&[
        "run",
        "create-contact",
        "--input",
        r#"{"email": "cy@example.com"}"#,
        "--json",
    ]);
    assert_eq!(ran.code, Some(0), "{ran}");
    let ran: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
    assert_eq!(ran["output"], json!({"id": 8}));
    let refused = cli(&["run", "create-contact", "--input", "{}"]);
    assert_eq!(refused.code, Some(2), "{refused}");
    assert!(refused.stderr.contains("/email"), "{refused}");

    app.set_body(json!({"id": "eight"}));
    let failed_cli = cli(&[
        "run",
        "create-contact",
        "--input",
        r#"{"email": "cy@example.com"}"#,
    ]);
    assert_eq!(failed_cli.code, Some(1), "{failed_cli}");
    let failed = call(&a, json!({"input": {"email": "bob@example.com"}}));
    assert_eq!(failed.status, 502, "{failed}");
    assert_eq!(failed.body["error"]["code"], "action_failed", "{failed}");
    assert!(failed.body["error"]["run_id"].is_string(), "{failed}");
    assert!(failed.text.contains("/id"), "{failed}");

    // Two connections implement it: the node fails naming both, and the
    // API answers 409 with them.
    let second = create(
        &a,
        json!({"integration": "crm", "parameters": {"region": "eu"}, "credentials": {"api_key": GOOD_KEY}}),
    );
    let two = run(json!({"email": "ada@example.com"}));
    let error = two["nodes"][0]["error"].as_str().unwrap();
    assert!(
        error.contains(c.body["id"].as_str().unwrap())
            && error.contains(second.body["id"].as_str().unwrap()),
        "{error}"
    );
    let ambiguous = call(&a, json!({"input": {"email": "ada@example.com"}}));
    assert_eq!(ambiguous.status, 409, "{ambiguous}");
    assert_eq!(ambiguous.body["error"]["code"], "ambiguous_connection");
    assert_eq!(
        ambiguous.body["error"]["connections"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{ambiguous}"
    );
    let picked = call(
        &a,
        json!({"input": {"email": "ada@example.com"}, "connection": second.body["id"]}),
    );
    assert_eq!(picked.status, 502, "{picked}");

    // The app answers 429 with `Retry-After: 2`: weir waits that long,
    // then the same request (same key) succeeds.
    app.set_rule(|r, seen| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/eu/contacts") if !seen.iter().any(|s| s.status == Some(429)) => 429,
        ("POST", "/eu/contacts") => 201,
        _ => 200,
    });
    app.set_header("retry-after", "2");
    app.set_body(json!({"id": 11}));
    let before = app.count("/eu/contacts");
    let waited = call(
        &a,
        json!({"input": {"email": "gus@example.com"}, "connection": second.body["id"]}),
    );
    assert_eq!(waited.status, 200, "{waited}");
    assert_eq!(waited.body["output"], json!({"id": 11}));
    let tries = &app.requests_to("/eu/contacts")[before..];
    assert_eq!(tries.len(), 2);
    assert!(
        tries[1].at.duration_since(tries[0].at) >= Duration::from_secs(2),
        "the retry came {:?} after the 429",
        tries[1].at.duration_since(tries[0].at)
    );
    assert_eq!(tries[0].idempotency_key(), tries[1].idempotency_key());

    // A 4xx is passed on, with the credential the app echoed taken out:
    // neither the answer nor the run record holds the key.
    app.set_rule(|r, _| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/eu/contacts") => 422,
        _ => 200,
    });
    app.set_body(json!({"error": format!("key {GOOD_KEY} may not create contacts")}));
    let echoed = call(
        &a,
        json!({"input": {"email": "hal@example.com"}, "connection": second.body["id"]}),
    );
    assert_eq!(echoed.status, 502, "{echoed}");
    assert!(echoed.text.contains("422"), "{echoed}");
    assert!(echoed.text.contains("[credential]"), "{echoed}");
    assert!(!echoed.text.contains(GOOD_KEY), "{echoed}");
    let record = a.run(echoed.body["error"]["run_id"].as_str().unwrap());
    assert_eq!(record["status"], "failed", "{record:#}");
    assert!(!record.to_string().contains(GOOD_KEY), "{record:#}");
    assert_eq!(echoed.body["error"]["status"], 422, "{echoed}");
    assert_eq!(
        echoed.body["error"]["body"]["error"], "key [credential] may not create contacts",
        "{echoed}"
    );

    // An HTML page of megabytes: a bounded, readable error.
    app.set_body(Value::String(format!(
        "<html><body>{}</body></html>",
        "Service unavailable. ".repeat(150_000)
    )));
    let html = call(
        &a,
        json!({"input": {"email": "ivy@example.com"}, "connection": second.body["id"]}),
    );
    assert_eq!(
        html.status,
        502,
        "{}",
        &html.text[..200.min(html.text.len())]
    );
    assert!(html.text.len() < 40_000, "{} bytes", html.text.len());
    assert!(html.text.contains("422"), "{}", &html.text[..500]);

    // An output mapping that fails when it runs: its message and where.
    let broken = a.post(
        "/api/v1/actions/whoami/run",
        &json!({"input": {}, "connection": second.body["id"]}),
    );
    assert_eq!(broken.status, 502, "{broken}");
    let message = broken.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`output` mapping failed") && message.contains("(at line 17, column"),
        "{message}"
    );
    assert!(!daemon.weir.stderr().contains(GOOD_KEY));
}

/// The app the `crm` integration's actions go to: `/eu/me` and `POST
/// /eu/contacts` for the good key (401 for any other).
fn contacts_app() -> FakeServer {
    let app = FakeServer::start();
    app.set_rule(|r, _| match (r.method.as_str(), r.path.as_str()) {
        _ if r.header("x-api-key") != Some(GOOD_KEY) => 401,
        ("GET", "/eu/me") => 200,
        ("POST", "/eu/contacts") => 201,
        _ => 404,
    });
    app
}

/// The `crm` integration with a `create-contact` mapping.
fn integrations_with_actions(dir: &Path, app: &FakeServer) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("crm.yaml"),
        format!(
            r#"key: crm
base_url: '{}/${{connection.parameters.region}}'
parameters: {{type: object, required: [region], properties: {{region: {{enum: [eu, us]}}}}}}
auth: {{type: api_key, in: header, name: X-API-Key}}
test: {{request: {{path: /me}}}}
actions:
  - key: create-contact
    request:
      method: POST
      path: /contacts
      body: {{email: input.email, full_name: 'input.name ?? ""'}}
    output: {{id: response.body.id}}
  - key: sync-contact
    flow: crm-sync
  - key: whoami
    request: {{path: /me}}
    output: {{name: 'response.body.account.to_upper()'}}
"#,
            app.base()
        ),
    )
    .unwrap();
}

/// An action run is a durable run: killed with `kill -9` while the app
/// holds its request, it resumes at the next start and sends the request
/// again with the same `Idempotency-Key`.
#[test]
fn an_action_run_killed_mid_request_resumes_with_the_same_key() {
    let app = contacts_app();
    app.set_body(json!({"id": 9}));
    let dir = tempfile::tempdir().unwrap();
    let integrations = dir.path().join("integrations");
    integrations_with_actions(&integrations, &app);
    let keys = format!("k1:{}", key(1));
    let args = ["--integrations", integrations.to_str().unwrap()];
    let env = [
        ("WEIR_WORKSPACE_SECRET", SECRET),
        ("WEIR_SECRET_KEYS", keys.as_str()),
    ];
    let mut first = Daemon::start(dir.path(), "first", &args, &env);
    let a = Api::with_token(&first, &token(dir.path(), &["--tenant", "a"]));
    let c = create(
        &a,
        json!({"integration": "crm", "parameters": {"region": "eu"}, "credentials": {"api_key": GOOD_KEY}}),
    );
    assert_eq!(c.body["state"], "ready", "{c}");
    // The app is slow: the request is in flight when weir dies.
    app.set_delay(Duration::from_secs(120));
    let caller = {
        let url = a.url("/api/v1/actions/create-contact/run");
        let bearer = token(dir.path(), &["--tenant", "a"]);
        std::thread::spawn(move || {
            reqwest::blocking::Client::new()
                .post(url)
                .bearer_auth(bearer)
                .header("idempotency-key", "order-1042")
                .json(&json!({"input": {"email": "ada@example.com"}}))
                .send()
        })
    };
    weir_testkit::wait_until("the app holds the request", TIMEOUT, || {
        app.count("/eu/contacts") == 1
    });
    first.weir.kill();
    app.set_delay(Duration::ZERO);
    // The caller loses its answer with the process; the run is on disk.
    let answer = caller
        .join()
        .unwrap()
        .map(|r| (r.status(), r.text().unwrap_or_default()));
    assert!(answer.is_err(), "{answer:?}");

    let second = Daemon::start(dir.path(), "second", &args, &env);
    let a = Api::with_token(&second, &token(dir.path(), &["--tenant", "a"]));
    let runs = a.list("flow=action-create-contact");
    let id = runs["items"][0]["id"].as_str().unwrap().to_owned();
    let done = a.wait_finished(&id);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["nodes"][0]["output"], json!({"id": 9}), "{done:#}");
    let keys = app.idempotency_keys("/eu/contacts");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1]);
    assert_eq!(keys[0].as_deref(), Some(format!("{id}:action").as_str()));

    // The caller tries again with its key: the first call's result, from
    // the run that survived the crash; the app sees nothing more.
    let again = a.send(
        reqwest::blocking::Client::new()
            .post(a.url("/api/v1/actions/create-contact/run"))
            .bearer_auth(token(dir.path(), &["--tenant", "a"]))
            .header("idempotency-key", "order-1042")
            .json(&json!({"input": {"email": "ada@example.com"}})),
    );
    assert_eq!(again.status, 200, "{again}");
    assert_eq!(again.body["run_id"], id.as_str(), "{again}");
    assert_eq!(again.body["output"], json!({"id": 9}), "{again}");
    assert_eq!(app.count("/eu/contacts"), 2);
}

/// The third layer: an override customises an action for one connection
/// (input defaults, body and output entries), is checked when written and
/// kept across a restart; other connections and tenants do not see it. And
/// an action implemented by a flow: its run's last node is the output.
#[test]
fn overrides_change_one_connection_and_flow_actions_run_their_flow() {
    let app = contacts_app();
    app.set_body(json!({"id": 7}));
    let dir = tempfile::tempdir().unwrap();
    let integrations = dir.path().join("integrations");
    integrations_with_actions(&integrations, &app);
    let keys = format!("k1:{}", key(1));
    let args = ["--integrations", integrations.to_str().unwrap()];
    let env = [
        ("WEIR_WORKSPACE_SECRET", SECRET),
        ("WEIR_SECRET_KEYS", keys.as_str()),
    ];
    let first = Daemon::start(dir.path(), "first", &args, &env);
    let a = Api::with_token(&first, &token(dir.path(), &["--tenant", "a"]));
    let b = Api::with_token(&first, &token(dir.path(), &["--tenant", "b"]));
    let connection = json!({"integration": "crm", "parameters": {"region": "eu"}, "credentials": {"api_key": GOOD_KEY}});
    let one = create(&a, connection.clone()).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let two = create(&a, connection.clone()).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = create(&b, connection).body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let put = |api: &Api, id: &str, key: &str, body: Value| {
        api.send(
            api.http
                .put(api.url(&format!("/api/v1/connections/{id}/actions/{key}")))
                .json(&body),
        )
    };
    let delete = |api: &Api, id: &str, key: &str| {
        api.send(
            api.http
                .delete(api.url(&format!("/api/v1/connections/{id}/actions/{key}"))),
        )
    };
    let call = |api: &Api, id: &str, input: Value| {
        api.post(
            "/api/v1/actions/create-contact/run",
            &json!({"input": input, "connection": id}),
        )
    };

    // Written: every expression compiled, each problem with its pointer
    // and its place in the expression; nothing stored.
    let bad = put(
        &a,
        &one,
        "create-contact",
        json!({"body": {"source": "input.email +", "ok": "\"x\""}, "output": {"n": "nodes.x"}}),
    );
    assert_eq!(bad.status, 422, "{bad}");
    let errors = bad.body["error"]["errors"].as_array().unwrap();
    let at = |p: &str| {
        errors
            .iter()
            .find(|e| e["pointer"] == p)
            .unwrap_or_else(|| panic!("no error at {p}: {bad}"))["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(at("/body/source").contains("line 1, column"), "{bad}");
    assert!(
        at("/output/n").contains("unknown variable `nodes`"),
        "{bad}"
    );
    put(&a, &one, "create-contact", json!({})).assert_error(422, "invalid");
    put(&a, &one, "delete-everything", json!({"body": {}})).assert_error(404, "not_found");
    put(&a, &one, "create-contact", json!({"bodyy": {}})).assert_error(400, "bad_request");
    a.get(&format!("/api/v1/connections/{one}/actions/create-contact"))
        .assert_error(404, "not_found");

    let written = json!({
        "input_defaults": {"name": "\"Sales team\""},
        "body": {"email": "input.email.to_lower()", "source": "\"weir:\" + connection.id"},
        "output": {"created_via": "\"override\"", "status": "response.status"}
    });
    let ok = put(&a, &one, "create-contact", written.clone());
    assert_eq!(ok.status, 200, "{ok}");
    // Another tenant cannot see, change or remove it.
    for answer in [
        b.get(&format!("/api/v1/connections/{one}/actions/create-contact")),
        put(&b, &one, "create-contact", written.clone()),
        delete(&b, &one, "create-contact"),
    ] {
        answer.assert_error(404, "not_found");
    }

    let through_one = call(&a, &one, json!({"email": "ADA@Example.com"}));
    assert_eq!(through_one.status, 200, "{through_one}");
    assert_eq!(
        through_one.body["output"],
        json!({"id": 7, "created_via": "override", "status": 201})
    );
    let sent = app.requests_to("/eu/contacts");
    assert_eq!(
        sent.last().unwrap().json(),
        json!({"email": "ada@example.com", "full_name": "Sales team", "source": format!("weir:{one}")})
    );
    // The other connection, and the other tenant's, as the integration says.
    for (api, id) in [(&a, &two), (&b, &theirs)] {
        let plain = call(api, id, json!({"email": "ADA@Example.com"}));
        assert_eq!(plain.status, 200, "{plain}");
        assert_eq!(plain.body["output"], json!({"id": 7}));
        assert_eq!(
            app.requests_to("/eu/contacts").last().unwrap().json(),
            json!({"email": "ADA@Example.com", "full_name": ""})
        );
    }

    // A flow action: its flow's run (with the connection in scope), once,
    // and its last node's output.
    let flows = first.flows.clone();
    weir_testkit::write_flow(
        &flows,
        "crm-sync.yaml",
        "id: crm-sync\nintegration: crm\ntriggers: [{id: call, type: api}]\nnodes:\n  - {id: create, type: http, connection: crm, method: POST, url: /contacts, body: '#{email: event.body.email}', next: done}\n  - {id: done, type: map, mapping: {id: nodes.create.body.id, via: connection.id}}\n",
    );
    weir_testkit::wait_until("the flow loads", TIMEOUT, || {
        a.flows()["items"].as_array().unwrap().len() == 1
    });
    let before = app.count("/eu/contacts");
    let synced = a.post(
        "/api/v1/actions/sync-contact/run",
        &json!({"input": {"email": "bo@example.com"}, "connection": two}),
    );
    assert_eq!(synced.status, 200, "{synced}\n{}", first.weir.stderr());
    assert_eq!(synced.body["output"], json!({"id": 7, "via": two}));
    assert_eq!(app.count("/eu/contacts"), before + 1);
    let child = a.list("flow=crm-sync");
    assert_eq!(child["items"].as_array().unwrap().len(), 1, "{child:#}");
    assert_eq!(child["items"][0]["status"], "succeeded");
    stop(first);

    // After a restart the override still applies, to that connection only;
    // removed, the integration's mapping is back.
    let second = Daemon::start(dir.path(), "second", &args, &env);
    let a = Api::with_token(&second, &token(dir.path(), &["--tenant", "a"]));
    let shown = a.get_ok(&format!("/api/v1/connections/{one}/actions/create-contact"));
    assert_eq!(shown["body"], written["body"], "{shown:#}");
    let again = call(&a, &one, json!({"email": "CY@Example.com"}));
    assert_eq!(again.body["output"]["created_via"], "override", "{again}");
    assert_eq!(delete(&a, &one, "create-contact").status, 204);
    delete(&a, &one, "create-contact").assert_error(404, "not_found");
    let plain = call(&a, &one, json!({"email": "CY@Example.com"}));
    assert_eq!(plain.body["output"], json!({"id": 7}), "{plain}");
    assert_eq!(
        app.requests_to("/eu/contacts").last().unwrap().json(),
        json!({"email": "CY@Example.com", "full_name": ""})
    );
}

/// The example files a newcomer reads — `actions/`, the `example-crm`
/// integration's mappings, its flow action and the override example — do
/// what docs/actions.md says, against a stand-in for the example CRM.
#[test]
fn the_example_actions_run_as_documented() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let app = FakeServer::start();
    app.set_rule(|r, _| match (r.method.as_str(), r.path.as_str()) {
        _ if r.header("x-api-key") != Some(GOOD_KEY) => 401,
        ("GET", "/eu/me" | "/eu/contacts") => 200,
        ("POST", "/eu/contacts") => 201,
        _ => 404,
    });
    // One answer for every request: `id` for a create, `items` for a list.
    app.set_body(json!({
        "id": 101,
        "items": [{"id": 1, "email": "old@example.com", "name": "Old Friend", "updated_at": 0}]
    }));
    let dir = tempfile::tempdir().unwrap();
    let integrations = dir.path().join("integrations");
    std::fs::create_dir_all(&integrations).unwrap();
    for name in ["example-crm.yaml", "example-calendar.yaml"] {
        let text = std::fs::read_to_string(repo.join("integrations").join(name)).unwrap();
        std::fs::write(
            integrations.join(name),
            text.replace("http://127.0.0.1:8090", &app.base()),
        )
        .unwrap();
    }
    let actions = repo.join("actions");
    let daemon = Daemon::with_integrations(dir.path(), &integrations, &actions, SECRET);
    std::fs::copy(
        repo.join("flows/crm-upsert-contact.yaml"),
        daemon.flows.join("crm-upsert-contact.yaml"),
    )
    .unwrap();
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    weir_testkit::wait_until("the flow loads", TIMEOUT, || {
        a.flows()["items"].as_array().unwrap().len() == 1
    });
    let c = create(
        &a,
        json!({"integration": "example-crm", "name": "Acme CRM", "parameters": {"region": "eu"}, "credentials": {"api_key": GOOD_KEY}}),
    );
    assert_eq!(c.body["state"], "ready", "{c}");
    let id = c.body["id"].as_str().unwrap().to_owned();
    let call = |key: &str, input: Value| {
        let answer = a.post(
            &format!("/api/v1/actions/{key}/run"),
            &json!({"input": input}),
        );
        assert_eq!(answer.status, 200, "{key}: {answer}");
        answer.body["output"].clone()
    };

    // The catalog: both integrations implement the two universal actions.
    let catalog = a.get_ok("/api/v1/actions");
    let entry = |key: &str| {
        catalog["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {catalog:#}"))
            .clone()
    };
    for key in ["create-contact", "list-contacts"] {
        assert_eq!(
            entry(key)["integrations"],
            json!(["example-calendar", "example-crm"])
        );
    }
    assert_eq!(
        entry("upsert-contact")["integrations"],
        json!(["example-crm"])
    );

    let created = call(
        "create-contact",
        json!({"email": "ada@example.com", "name": "Ada"}),
    );
    assert_eq!(created, json!({"id": 101}));
    let sent = app.requests_to("/eu/contacts");
    assert_eq!(
        sent.last().unwrap().json(),
        json!({"email": "ada@example.com", "full_name": "Ada"})
    );

    let listed = call("list-contacts", json!({"limit": 2}));
    assert_eq!(
        listed["contacts"][0]["email"], "old@example.com",
        "{listed:#}"
    );
    let last = app.requests_to("/eu/contacts").pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.query.as_deref()),
        ("GET", Some("limit=2"))
    );
    let refused = a.post(
        "/api/v1/actions/list-contacts/run",
        &json!({"input": {"limit": 500}}),
    );
    assert_eq!(refused.status, 422, "{refused}");
    assert_eq!(refused.body["error"]["details"][0]["pointer"], "/limit");

    // The flow action: an existing email is found, a new one created.
    let posts = || {
        app.requests_to("/eu/contacts")
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    };
    let before = posts();
    let found = call("upsert-contact", json!({"email": "old@example.com"}));
    assert_eq!(found, json!({"id": 1, "created": false}));
    assert_eq!(posts(), before, "found: nothing created");
    let made = call("upsert-contact", json!({"email": "new@example.com"}));
    assert_eq!(made, json!({"id": 101, "created": true}));
    assert_eq!(posts(), before + 1);

    // The override example, as docs/actions.md shows it.
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("examples/overrides/create-contact.json")).unwrap(),
    )
    .unwrap();
    let put = a.send(
        a.http
            .put(a.url(&format!("/api/v1/connections/{id}/actions/create-contact")))
            .json(&example),
    );
    assert_eq!(put.status, 200, "{put}");
    let overridden = call("create-contact", json!({"email": "Bo@Example.com"}));
    assert_eq!(overridden, json!({"id": 101, "created": true}));
    assert_eq!(
        app.requests_to("/eu/contacts").last().unwrap().json(),
        json!({"email": "bo@example.com", "full_name": "New customer", "source": "weir/Acme CRM"})
    );
    assert!(!daemon.weir.stderr().contains(GOOD_KEY));
}
