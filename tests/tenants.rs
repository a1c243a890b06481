//! Tokens and tenants end to end: every API route refuses a request without
//! a valid token (401 with the RFC 6750 challenge), a tenant's token sees
//! and changes its own data only (another tenant's answers 404, as one that
//! does not exist), an admin sees all and acts as one with `?tenant=`,
//! erasing a tenant holds across a restart, and without a workspace secret
//! weir serves an open API on loopback only.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::api::ids_of;
use weir_testkit::{Api, Daemon, FakeServer, Weir, run_weir, wait_until, write_flow};

const SECRET: &str = "tenants-test-workspace-secret-0123456789abcdef";
const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TIMEOUT: Duration = Duration::from_secs(30);

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("WEIR_WORKSPACE_SECRET", SECRET),
        ("WEIR_WORKSPACE_KEY", "acme"),
        ("OUT_SECRET", HOOK_SECRET),
    ]
}

/// `weir token ARGS` with the test's workspace.
fn token(dir: &Path, who: &[&str]) -> String {
    weir_testkit::weir_token(dir, &env(), who)
}

/// Flows for tenants `a` and `b` (and one for `a` alone): runs that
/// succeed, fail, wait an hour, and deliver to a backend that refuses
/// (a dead delivery).
fn flows(dir: &Path, backend: &str) {
    write_flow(
        dir,
        "ping.yaml",
        "id: ping\ntenants: [a, b]\ntriggers: [{id: t, type: api}, {id: hook, type: webhook, dedupe: event.body.id}]\nnodes:\n  - {id: m, type: map, mapping: {n: event.body.n}}\n",
    );
    write_flow(
        dir,
        "broken.yaml",
        "id: broken\ntenants: [a, b]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: stop, type: fail, message: '\"no\"'}\n",
    );
    write_flow(
        dir,
        "slow.yaml",
        "id: slow\ntenants: [a, b]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: wait, type: delay, for: 1h}\n",
    );
    write_flow(
        dir,
        "notify.yaml",
        &format!(
            "id: notify\ntenants: [a, b]\ntriggers: [{{id: t, type: api}}]\nnodes:\n  - {{id: out, type: deliver, target: http, url: '{backend}', secret_env: OUT_SECRET, payload: event.body}}\n"
        ),
    );
    write_flow(
        dir,
        "only-a.yaml",
        "id: only-a\ntenants: [a]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: m, type: map, mapping: {ok: true}}\n",
    );
    write_flow(
        dir,
        "anyone.yaml",
        "id: anyone\ntenants: \"*\"\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: m, type: map, mapping: {tenant: tenant}}\n",
    );
}

fn start(dir: &Path, label: &str) -> Daemon {
    Daemon::start(dir, label, &[], &env())
}

/// Starts a run of `flow` for the token's tenant; its id.
fn start_run(api: &Api, flow: &str, input: Value) -> String {
    let a = api.post(
        &format!("/api/v1/flows/{flow}/runs"),
        &json!({ "input": input }),
    );
    assert_eq!(a.status, 202, "start {flow}: {a}");
    a.body["run_id"].as_str().unwrap().to_owned()
}

/// One tenant's data of every kind: a succeeded, a failed and a waiting
/// run, and a dead delivery.
struct Data {
    done: String,
    failed: String,
    waiting: String,
    dead: String,
}

fn make_data(api: &Api) -> Data {
    let done = start_run(api, "ping", json!({"n": 1}));
    let failed = start_run(api, "broken", json!({}));
    let waiting = start_run(api, "slow", json!({}));
    let notify = start_run(api, "notify", json!({"n": 2}));
    api.wait_finished(&done);
    api.wait_finished(&failed);
    api.wait_for(&waiting, "waiting");
    api.wait_finished(&notify);
    let mut dead = None;
    wait_until("the delivery is dead", TIMEOUT, || {
        dead = api.outbox()["dead"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["run"] == notify.as_str())
            .map(|d| d["id"].as_str().unwrap().to_owned());
        dead.is_some()
    });
    Data {
        done,
        failed,
        waiting,
        dead: dead.unwrap(),
    }
}

/// Every route of `/api/v1`, with a path that names real objects.
fn routes(d: &Data) -> Vec<(&'static str, String)> {
    vec![
        ("GET", "/api/v1/flows".into()),
        ("GET", "/api/v1/flows/ping".into()),
        ("POST", "/api/v1/flows/ping/runs".into()),
        ("GET", "/api/v1/runs".into()),
        ("GET", format!("/api/v1/runs/{}", d.done)),
        ("POST", format!("/api/v1/runs/{}/cancel", d.waiting)),
        ("POST", format!("/api/v1/runs/{}/retry", d.failed)),
        ("GET", "/api/v1/outbox".into()),
        ("POST", format!("/api/v1/outbox/{}/retry", d.dead)),
        ("GET", "/api/v1/tenants".into()),
        ("DELETE", "/api/v1/tenants/a".into()),
    ]
}

fn call(api: &Api, method: &str, path: &str) -> weir_testkit::Answer {
    let url = api.url(path);
    let request = match method {
        "GET" => api.http.get(url),
        "POST" => api
            .http
            .post(url)
            .header("content-type", "application/json")
            .body("{}"),
        "DELETE" => api.http.delete(url),
        other => panic!("no method {other}"),
    };
    api.send(request)
}

#[test]
fn every_route_needs_a_token_and_answers_within_the_token_tenant() {
    let backend = FakeServer::start();
    backend.set_status(400);
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), "daemon");
    flows(&daemon.flows, &backend.url("/in"));
    let admin = Api::with_token(&daemon, &token(dir.path(), &["--admin", "--name", "ops"]));
    wait_until("the flows load", TIMEOUT, || {
        admin.flows()["items"].as_array().unwrap().len() == 6
    });
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    let b = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "b"]));
    let anonymous = Api::new(&daemon);
    let of_a = make_data(&a);
    let of_b = make_data(&b);

    // No token, a malformed one, a forged one, one for another workspace:
    // 401 on every route, with the challenge and the reason.
    let forged = {
        let t = token(dir.path(), &["--tenant", "a"]);
        let (head, _) = t.rsplit_once('.').unwrap();
        format!("{head}.c2lnbmF0dXJl")
    };
    let other_workspace = {
        let mut env = env();
        env[1] = ("WEIR_WORKSPACE_KEY", "globex");
        let done = Weir::spawn_with(dir.path(), "token", &["token", "--tenant", "a"], &env)
            .finish(TIMEOUT);
        done.stdout.trim().to_owned()
    };
    // (The connection routes' tenant scope is tested in connections.rs
    // and oauth2.rs; here, that they need a token.)
    let connection_routes = [
        ("GET", "/api/v1/connections".to_owned()),
        ("POST", "/api/v1/connections".to_owned()),
        ("GET", "/api/v1/connections/c1".to_owned()),
        ("DELETE", "/api/v1/connections/c1".to_owned()),
        ("POST", "/api/v1/connections/c1/test".to_owned()),
        ("POST", "/api/v1/connections/c1/refresh".to_owned()),
        ("POST", "/api/v1/connection-requests".to_owned()),
        ("GET", "/api/v1/connection-requests/r1".to_owned()),
    ];
    for (method, path) in routes(&of_a).into_iter().chain(connection_routes) {
        let answer = call(&anonymous, method, &path);
        let message = answer.assert_error(401, "unauthorized");
        assert!(message.contains("no token"), "{method} {path}: {message}");
        assert_eq!(
            answer.www_authenticate.as_deref(),
            Some(r#"Bearer realm="weir""#),
            "{method} {path}"
        );
        for (bad, reason) in [
            ("not-a-jwt", "not a JWT"),
            (forged.as_str(), "signature"),
            (other_workspace.as_str(), "workspace `globex`"),
        ] {
            let api = Api::with_token(&daemon, bad);
            let answer = call(&api, method, &path);
            let message = answer.assert_error(401, "unauthorized");
            assert!(message.contains(reason), "{method} {path}: {message}");
            let challenge = answer.www_authenticate.unwrap();
            assert!(
                challenge.starts_with(
                    r#"Bearer realm="weir", error="invalid_token", error_description=""#
                ),
                "{challenge}"
            );
        }
    }

    // Tenant b, on a's objects: 404 as if they did not exist; on the
    // admin routes: 403.
    let b_on_a = routes(&of_a);
    let objects = [4, 5, 6, 8].map(|i| b_on_a[i].clone());
    for (method, path) in &objects {
        let answer = call(&b, method, path);
        answer.assert_error(404, "not_found");
        assert!(!answer.text.contains("tenant"), "{method} {path}: {answer}");
    }
    for (method, path) in &b_on_a[9..] {
        call(&b, method, path).assert_error(403, "forbidden");
    }
    let metrics = b.get("/metrics");
    metrics.assert_error(403, "forbidden");
    anonymous.get("/metrics").assert_error(401, "unauthorized");
    assert!(admin.metrics().contains("weir_runs_total"));

    // Lists hold the caller's own data only.
    let mine = |api: &Api, d: &Data| {
        let ids = ids_of(&api.list("limit=500"));
        for id in [&d.done, &d.failed, &d.waiting] {
            assert!(ids.contains(id), "{id} in {ids:?}");
        }
        ids
    };
    let ids_a = mine(&a, &of_a);
    let ids_b = mine(&b, &of_b);
    assert!(
        ids_a.iter().all(|id| !ids_b.contains(id)),
        "{ids_a:?} / {ids_b:?}"
    );
    let dead_of = |api: &Api| -> Vec<String> {
        api.outbox()["dead"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(dead_of(&a), vec![of_a.dead.clone()]);
    assert_eq!(dead_of(&b), vec![of_b.dead.clone()]);
    let dead_count = |api: &Api| api.outbox_target("http")["dead"].clone();
    assert_eq!(dead_count(&a), 1);
    assert_eq!(dead_count(&admin), 2);

    // Flows: a tenant sees those that serve it.
    let flow_ids = |api: &Api| -> Vec<String> {
        api.flows()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(flow_ids(&a).contains(&"only-a".to_owned()));
    assert!(!flow_ids(&b).contains(&"only-a".to_owned()));
    assert_eq!(flow_ids(&admin).len(), 6);
    b.get("/api/v1/flows/only-a").assert_error(404, "not_found");
    b.post("/api/v1/flows/only-a/runs", &json!({}))
        .assert_error(404, "not_found");

    // A tenant acts for itself only: naming another tenant is 403.
    let message = b
        .post("/api/v1/flows/ping/runs?tenant=a", &json!({}))
        .assert_error(403, "forbidden");
    assert!(message.contains("acts for tenant `b`"), "{message}");
    b.get("/api/v1/runs?tenant=a")
        .assert_error(403, "forbidden");
    let as_a = b.send(
        b.http
            .get(b.url("/api/v1/runs"))
            .header("x-weir-tenant", "a"),
    );
    as_a.assert_error(403, "forbidden");
    // Naming itself is fine; a run started by b is b's.
    let own = b.post(
        "/api/v1/flows/ping/runs?tenant=b",
        &json!({"input": {"n": 3}}),
    );
    assert_eq!(own.status, 202, "{own}");
    let run = b.wait_finished(own.body["run_id"].as_str().unwrap());
    assert_eq!(run["tenant"], "b");

    // The admin sees all, and acts as one tenant with ?tenant= or the header.
    let all = ids_of(&admin.list("limit=500"));
    assert!(ids_a.iter().chain(&ids_b).all(|id| all.contains(id)));
    assert_eq!(ids_of(&admin.list("tenant=a&limit=500")), ids_a);
    let through_header = admin.send(
        admin
            .http
            .get(admin.url(&format!("/api/v1/runs/{}", of_b.done)))
            .header("x-weir-tenant", "a"),
    );
    through_header.assert_error(404, "not_found");
    assert_eq!(admin.run(&of_b.done)["tenant"], "b");
    let for_a = admin.post(
        "/api/v1/flows/ping/runs?tenant=a",
        &json!({"input": {"n": 4}}),
    );
    assert_eq!(for_a.status, 202, "{for_a}");
    assert_eq!(
        a.wait_finished(for_a.body["run_id"].as_str().unwrap())["tenant"],
        "a"
    );

    // Within its tenant, each route works: cancel, retry, retry a delivery.
    let cancelled = a.post(&format!("/api/v1/runs/{}/cancel", of_a.waiting), &json!({}));
    assert_eq!(cancelled.status, 200, "{cancelled}");
    assert_eq!(cancelled.body["status"], "cancelled");
    let retried = a.post(&format!("/api/v1/runs/{}/retry", of_a.failed), &json!({}));
    assert_eq!(retried.status, 202, "{retried}");
    assert_eq!(a.retry_delivery(&of_a.dead).status, 202);
    // b's waiting run was not touched by any of it.
    assert_eq!(b.run(&of_b.waiting)["status"], "waiting");

    // `tenants: "*"`: a tenant no flow lists exists once its token is used.
    let newcomer = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "newcomer"]));
    let id = start_run(&newcomer, "anyone", json!({}));
    let run = newcomer.wait_finished(&id);
    assert_eq!(run["nodes"][0]["output"]["tenant"], "newcomer", "{run:#}");
    let flows = ids_of_items(&newcomer.flows());
    assert_eq!(flows, vec!["anyone"]);
    let tenants = admin.get_ok("/api/v1/tenants");
    let keys = ids_of_keys(&tenants);
    assert_eq!(keys, vec!["a", "b", "newcomer"], "{tenants:#}");

    // Neither the workspace secret nor a token is in a log line or in the
    // data folder's files.
    let tokens = [
        token(dir.path(), &["--tenant", "a"]),
        forged.clone(),
        other_workspace.clone(),
    ];
    let log = daemon.weir.stderr();
    let files = weir_testkit::files_under(&daemon.data);
    for secret in [SECRET.to_owned(), SECRET.replace('-', "")]
        .into_iter()
        .chain(
            tokens
                .iter()
                .map(|t| t.split('.').nth(2).unwrap().to_owned()),
        )
    {
        assert!(!log.contains(&secret), "the log holds {secret}");
        weir_testkit::assert_not_in_files(&files, &secret);
    }
}

fn ids_of_items(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect()
}

fn ids_of_keys(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn erasing_a_tenant_removes_all_its_records_in_one_step_and_holds_after_a_restart() {
    let backend = FakeServer::start();
    backend.set_status(400);
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), "daemon");
    flows(&daemon.flows, &backend.url("/in"));
    let admin = Api::with_token(&daemon, &token(dir.path(), &["--admin"]));
    wait_until("the flows load", TIMEOUT, || {
        admin.flows()["items"].as_array().unwrap().len() == 6
    });
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    let b = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "b"]));
    let of_a = make_data(&a);
    let of_b = make_data(&b);
    // A webhook with a dedupe key for each (webhooks need no token).
    for tenant in ["a", "b"] {
        let hook = admin.hook(
            &format!("/hooks/{tenant}/ping/hook"),
            &json!({"n": 5, "id": format!("msg-{tenant}")}),
            &[],
        );
        assert_eq!(hook.status, 202, "{hook}");
        // Finished before counting: only the hour-long delay stays unfinished.
        admin.wait_finished(hook.body["run_id"].as_str().unwrap());
    }
    let before = admin.get_ok("/api/v1/tenants");
    let counts = |list: &Value, key: &str| -> Value {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let a_before = counts(&before, "a");
    assert!(a_before["runs"].as_u64().unwrap() >= 5, "{before:#}");
    assert_eq!(a_before["unfinished"], 1, "{before:#}");
    assert_eq!(a_before["deliveries"], 1, "{before:#}");

    let erased = admin.send(admin.http.delete(admin.url("/api/v1/tenants/a")));
    assert_eq!(erased.status, 200, "{erased}");
    assert_eq!(erased.body["tenant"], "a");
    assert_eq!(erased.body["removed"]["runs"], a_before["runs"], "{erased}");
    assert_eq!(erased.body["removed"]["deliveries"], 1, "{erased}");
    assert!(
        erased.body["removed"]["dedupe_keys"].as_u64().unwrap() >= 1,
        "{erased}"
    );

    let check = |admin: &Api, a: &Api| {
        let tenants = admin.get_ok("/api/v1/tenants");
        assert_eq!(ids_of_keys(&tenants), vec!["b"], "{tenants:#}");
        for id in [&of_a.done, &of_a.failed, &of_a.waiting] {
            admin
                .get(&format!("/api/v1/runs/{id}"))
                .assert_error(404, "not_found");
        }
        assert!(ids_of(&a.list("limit=500")).is_empty());
        assert!(a.outbox()["dead"].as_array().unwrap().is_empty());
        for id in [&of_b.done, &of_b.failed] {
            assert_eq!(admin.run(id)["tenant"], "b");
        }
        assert_eq!(admin.run(&of_b.waiting)["status"], "waiting");
        assert_eq!(b_dead(admin), vec![of_b.dead.clone()]);
    };
    check(&admin, &a);
    // The erased tenant's dedupe key is gone: the same message is new.
    let again = admin.hook("/hooks/a/ping/hook", &json!({"n": 5, "id": "msg-a"}), &[]);
    assert_eq!(again.status, 202, "{again}");
    assert!(again.body["duplicate"].is_null(), "{again}");
    let b_again = admin.hook("/hooks/b/ping/hook", &json!({"n": 5, "id": "msg-b"}), &[]);
    assert_eq!(b_again.body["duplicate"], true, "{b_again}");
    a.wait_finished(again.body["run_id"].as_str().unwrap());
    let second = admin.send(admin.http.delete(admin.url("/api/v1/tenants/a")));
    assert_eq!(second.body["removed"]["runs"], 1, "{second}");

    // After a restart, nothing of a comes back.
    daemon.weir.terminate();
    let stopped = daemon.weir.finish(TIMEOUT);
    assert_eq!(stopped.code, Some(0), "{stopped}");
    let daemon = start(dir.path(), "restarted");
    let admin = Api::with_token(&daemon, &token(dir.path(), &["--admin"]));
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    check(&admin, &a);
}

fn b_dead(admin: &Api) -> Vec<String> {
    admin.outbox()["dead"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn without_a_secret_the_api_is_open_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    // Loopback: open, with a warning that says so.
    let daemon = Daemon::start(dir.path(), "open", &[], &[]);
    let api = Api::new(&daemon);
    assert_eq!(api.get("/api/v1/runs").status, 200);
    assert_eq!(api.get("/api/v1/tenants").status, 200);
    assert!(api.metrics().contains("weir_"));
    let log = daemon.weir.stderr();
    assert!(
        log.contains("no workspace secret: the API is open"),
        "{log}"
    );

    // Any other address: refused at start, saying how to set a secret.
    let data = dir.path().join("data2");
    let flows = dir.path().join("flows");
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let done = run_weir(
            dir.path(),
            "refused",
            &[
                "serve",
                "--listen",
                listen,
                "--flows",
                flows.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ],
            TIMEOUT,
        );
        assert_eq!(done.code, Some(1), "{done}");
        assert!(done.stderr.contains("WEIR_WORKSPACE_SECRET"), "{done}");
        assert!(!done.stderr.contains("weir is serving"), "{done}");
    }

    // A secret too short to sign with is a usage error.
    let done = Weir::spawn_with(
        dir.path(),
        "short",
        &[
            "serve",
            "--flows",
            flows.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
        &[("WEIR_WORKSPACE_SECRET", "short")],
    )
    .finish(TIMEOUT);
    assert_eq!(done.code, Some(2), "{done}");
    assert!(done.stderr.contains("at least 32"), "{done}");
}

#[test]
fn client_commands_send_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), "daemon");
    write_flow(
        &daemon.flows,
        "ping.yaml",
        "id: ping\ntenants: [a, b]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: m, type: map, mapping: {n: 1}}\n",
    );
    let a_token = token(dir.path(), &["--tenant", "a"]);
    let a = Api::with_token(&daemon, &a_token);
    wait_until("the flow loads", TIMEOUT, || {
        a.flows()["items"].as_array().unwrap().len() == 1
    });
    let run = start_run(&a, "ping", json!({}));
    a.wait_finished(&run);

    let list = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["runs", "list", "--server", daemon.base.as_str(), "--json"];
        args.extend_from_slice(extra);
        Weir::spawn_with(dir.path(), "runs", &args, env).finish(TIMEOUT)
    };
    let done = list(&["--token", &a_token], &[]);
    assert_eq!(done.code, Some(0), "{done}");
    assert!(done.stdout.contains(&run), "{done}");
    let done = list(&[], &[("WEIR_TOKEN", &a_token)]);
    assert_eq!(done.code, Some(0), "{done}");
    assert!(done.stdout.contains(&run), "{done}");
    let b_token = token(dir.path(), &["--tenant", "b"]);
    let done = list(&["--token", &b_token], &[]);
    assert_eq!(done.code, Some(0), "{done}");
    assert!(!done.stdout.contains(&run), "{done}");
    let done = list(&[], &[]);
    assert_eq!(done.code, Some(2), "{done}");
    assert!(done.stderr.contains("no token"), "{done}");
    // The token is never echoed.
    assert!(!done.stderr.contains(&a_token));

    // `weir token` without a secret, or with a lifetime the daemon refuses.
    let done = Weir::spawn_with(dir.path(), "token", &["token", "--admin"], &[]).finish(TIMEOUT);
    assert_eq!(done.code, Some(2), "{done}");
    assert!(done.stderr.contains("WEIR_WORKSPACE_SECRET"), "{done}");
    let done = Weir::spawn_with(
        dir.path(),
        "token",
        &["token", "--admin", "--ttl", "2d"],
        &env(),
    )
    .finish(TIMEOUT);
    assert_eq!(done.code, Some(2), "{done}");
    let done = Weir::spawn_with(dir.path(), "token", &["token"], &env()).finish(TIMEOUT);
    assert_eq!(done.code, Some(2), "{done}");
}
