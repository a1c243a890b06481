//! The console end to end: over plain HTTP (sign-in and its cookie, CSRF,
//! security headers, 404 pages, escaping, a 10 MB output cut on the page)
//! and in headless Chromium driven by Playwright (tests/console/drive.mjs):
//! sign in, a flow's graph with one shape per node, a failed run's error
//! and another node's output, Retry and the new attempt, a running run
//! updating itself, tenant isolation, sign-out, an expired session.
//! Screenshots land in target/console-screenshots.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::console::{client as browser_client, csrf_in, form, page, post as post_page};
use weir_testkit::{Api, Daemon, FakeServer, in_ci, signed_token, write_flow};

const SECRET: &str = "console-test-workspace-secret-0123456789abcdef";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![("WEIR_WORKSPACE_SECRET", SECRET)]
}

fn token(dir: &Path, who: &[&str]) -> String {
    weir_testkit::weir_token(dir, &env(), who)
}

/// A token of this workspace that expired two minutes ago (past the
/// 60 s leeway).
fn expired_token() -> String {
    let now = chrono::Utc::now().timestamp();
    signed_token(
        SECRET,
        &json!({"iss": "default", "tenant": "a", "iat": now - 600, "exp": now - 120}),
    )
}

/// `checkout`: shape → check (if) → boom (a script error) or fine;
/// `slow`: a short delay, then done; `big`: an http node whose answer is
/// 10 MB.
fn flows(dir: &Path, big_url: &str) {
    let dir = &dir.join("flows");
    std::fs::create_dir_all(dir).unwrap();
    write_flow(
        dir,
        "checkout.yaml",
        r#"id: checkout
tenants: [a, b]
triggers: [{id: order, type: api}]
nodes:
  - id: shape
    type: map
    mapping: {note: event.body.note, total: event.body.total}
    next: check
  - id: check
    type: if
    condition: nodes.shape.total > 100
    then: boom
    else: fine
  - id: boom
    type: script
    script: |
      let limit = 100;
      limit.no_such_function()
  - id: fine
    type: map
    mapping: {ok: true}
"#,
    );
    write_flow(
        dir,
        "slow.yaml",
        "id: slow\ntenants: [a, b]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: nap, type: delay, for: 3s, next: done}\n  - {id: done, type: map, mapping: {ok: true}}\n",
    );
    write_flow(
        dir,
        "big.yaml",
        &format!(
            "id: big\ntenants: [a]\ntriggers: [{{id: t, type: api}}]\nnodes:\n  - {{id: fetch, type: http, url: '{big_url}'}}\n"
        ),
    );
}

fn start_run(api: &Api, flow: &str, input: Value) -> String {
    let a = api.post(
        &format!("/api/v1/flows/{flow}/runs"),
        &json!({ "input": input }),
    );
    assert_eq!(a.status, 202, "{}", a.text);
    a.body["run_id"].as_str().unwrap().to_owned()
}

#[test]
fn the_console_over_http() {
    let big = FakeServer::start();
    let text = "<b>".to_owned() + &"x".repeat(10 << 20) + "</b>";
    big.set_body(json!({"blob": text}));
    let dir = tempfile::tempdir().unwrap();
    flows(dir.path(), &big.url("/big"));
    let daemon = Daemon::start(dir.path(), "console-http", &[], &env());
    let a = token(dir.path(), &["--tenant", "a"]);
    let api_a = Api::with_token(&daemon, &a);
    let client = browser_client();

    // Without a session: sign-in, and `?token=` is not a way in.
    let r = client.get(daemon.url("/console/runs")).send().unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/console/sign-in")
    );
    let r = client
        .get(daemon.url(&format!("/console/runs?token={a}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303, "a token in the URL is ignored");

    // Signing in sets an HttpOnly, SameSite=Strict cookie.
    let r = client
        .post(daemon.url("/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", a.as_str())]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with(&format!("weir_console={a};")),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    // Another site cannot post the form (nor any console button).
    let r = client
        .post(daemon.url("/console/sign-in"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", a.as_str())]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    // A bad token: the form again, with why.
    let r = client
        .post(daemon.url("/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", "not-a-token")]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().unwrap().contains("not a JWT"));

    // Security headers on pages, long caching on assets.
    let r = page(&daemon, "/console/runs", &a);
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body = r.text().unwrap();
    assert!(body.contains("No runs yet"), "the empty state: {body}");
    for asset in ["/console/assets/console.css", "/console/assets/console.js"] {
        let r = client.get(daemon.url(asset)).send().unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
    }

    // A run whose output holds markup: shown as text.
    let id = start_run(
        &api_a,
        "checkout",
        json!({"note": "<script>alert(1)</script>", "total": 5}),
    );
    api_a.wait_finished(&id);
    let html = page(&daemon, &format!("/console/runs/{id}"), &a)
        .text()
        .unwrap();
    assert!(
        !html.contains("<script>alert(1)</script>"),
        "markup escaped"
    );
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(
        html.contains(r#"class="node type-map status-succeeded" data-node="shape""#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-node="boom""#) && html.contains("status-skipped"),
        "{html}"
    );

    // Unknown run, flow or page: a 404 page.
    for path in [
        "/console/runs/0190f000-0000-7000-8000-000000000000",
        "/console/flows/nope",
        "/console/nothing-here",
    ] {
        let r = page(&daemon, path, &a);
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.text().unwrap().contains("Not found"), "{path}");
    }

    // State-changing forms need the CSRF token.
    let failed = start_run(&api_a, "checkout", json!({"note": "n", "total": 500}));
    assert_eq!(api_a.wait_finished(&failed)["status"], "failed");
    let r = client
        .post(daemon.url(&format!("/console/runs/{failed}/retry")))
        .header("cookie", format!("weir_console={a}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", "forged")]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(api_a.run(&failed)["attempt"], 1, "not retried");

    // A 10 MB output: the page holds a cut of it, and a link to all of it.
    let big_run = start_run(&api_a, "big", json!({}));
    assert_eq!(api_a.wait_finished(&big_run)["status"], "succeeded");
    let r = page(&daemon, &format!("/console/runs/{big_run}"), &a);
    assert_eq!(r.status(), 200);
    let html = r.text().unwrap();
    assert!(html.len() < 200_000, "the page is {} bytes", html.len());
    assert!(html.contains("See all"), "{}", &html[..2000]);
    assert!(html.contains("&lt;b&gt;xxx"));
    let all = page(
        &daemon,
        &format!("/console/runs/{big_run}/json?node=fetch&part=output"),
        &a,
    );
    assert_eq!(all.status(), 200);
    let all: Value = all.json().unwrap();
    assert_eq!(all["body"]["blob"].as_str().unwrap().len(), text.len());

    // A token of another workspace: back to sign-in, saying why.
    let foreign = signed_token(
        "another-workspace-secret-0123456789abcdef0123",
        &json!({"iss": "default", "tenant": "a", "exp": chrono::Utc::now().timestamp() + 600}),
    );
    let r = page(&daemon, "/console/runs", &foreign);
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/console/sign-in?reason=invalid&then=%2Fconsole%2Fruns"
    );
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // A tenant cannot look at another's pages by naming it.
    assert_eq!(page(&daemon, "/console/runs?tenant=b", &a).status(), 403);

    // Cancel from the run page: the run stops.
    let slow = start_run(&api_a, "slow", json!({}));
    let html = page(&daemon, &format!("/console/runs/{slow}"), &a)
        .text()
        .unwrap();
    assert!(
        html.contains("data-live"),
        "an unfinished run's page refreshes itself"
    );
    let r = post_page(
        &daemon,
        &format!("/console/runs/{slow}/cancel"),
        &a,
        &csrf_in(&html),
    );
    assert_eq!(r.status(), 303);
    assert_eq!(api_a.run(&slow)["status"], "cancelled");
    let html = page(&daemon, &format!("/console/runs/{slow}"), &a)
        .text()
        .unwrap();
    assert!(
        !html.contains("data-live") && html.contains(">Retry<"),
        "{html}"
    );

    // Pages of 50, newest first, and the next page after the last.
    let mut ids = Vec::new();
    for n in 0..55 {
        ids.push(start_run(
            &api_a,
            "checkout",
            json!({"note": n, "total": 1}),
        ));
    }
    for id in &ids {
        api_a.wait_finished(id);
    }
    let rows = |html: &str| -> Vec<String> {
        html.split(r#"data-run=""#)
            .skip(1)
            .map(|r| r.split('"').next().unwrap().to_owned())
            .collect()
    };
    let first = page(&daemon, "/console/runs?flow=checkout&status=succeeded", &a)
        .text()
        .unwrap();
    let listed = rows(&first);
    assert_eq!(listed.len(), 50);
    assert_eq!(listed[0], ids[54], "newest first");
    let older = first
        .split(r#"href="/console/runs?"#)
        .find(|l| l.contains("after="))
        .unwrap();
    let older = format!(
        "/console/runs?{}",
        older.split('"').next().unwrap().replace("&amp;", "&")
    );
    let second = rows(&page(&daemon, &older, &a).text().unwrap());
    assert!(
        second.len() >= 5 && !second.iter().any(|id| listed.contains(id)),
        "{second:?}"
    );
    assert!(second.contains(&ids[0]));

    // An admin sees the files that do not load, each problem at its line.
    write_flow(
        &daemon.flows,
        "broken.yaml",
        "id: broken\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: m, type: mapp}\n",
    );
    let admin = token(dir.path(), &["--admin"]);
    weir_testkit::wait_until(
        "the broken file is reported",
        Duration::from_secs(20),
        || {
            page(&daemon, "/console/flows", &admin)
                .text()
                .unwrap()
                .contains("broken.yaml:4:")
        },
    );
    let tenant_view = page(&daemon, "/console/flows", &a).text().unwrap();
    assert!(
        !tenant_view.contains("broken.yaml"),
        "a tenant does not see the flows folder"
    );

    // Secrets stay out: the session token appears in no page.
    let html = page(&daemon, "/console/flows", &a).text().unwrap();
    assert!(!html.contains(&a) && !html.contains(SECRET));
    let log = daemon.weir.stderr();
    assert!(
        !log.contains(&a) && !log.contains(SECRET),
        "a token in the log"
    );
}

#[test]
fn console_buttons_test_a_connection_and_retry_a_dead_delivery() {
    const KEY: &str = "sk_console_5e1f0c9a";
    let app = FakeServer::crm(KEY);
    let backend = FakeServer::start();
    backend.set_status(400);
    let dir = tempfile::tempdir().unwrap();
    let integrations = dir.path().join("integrations");
    std::fs::create_dir_all(&integrations).unwrap();
    std::fs::write(
        integrations.join("crm.yaml"),
        format!(
            "key: crm\nbase_url: '{}'\nauth: {{type: api_key, in: header, name: X-API-Key}}\ntest: {{request: {{path: /me}}}}\n",
            app.base()
        ),
    )
    .unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(
        &flows,
        "notify.yaml",
        &format!(
            "id: notify\ntenants: [a]\ntriggers: [{{id: t, type: api}}]\nnodes:\n  - {{id: out, type: deliver, target: http, url: '{}', secret_env: OUT_SECRET, payload: event.body}}\n",
            backend.url("/in")
        ),
    );
    let env = [
        ("WEIR_WORKSPACE_SECRET", SECRET),
        ("WEIR_SECRET_KEYS", weir_testkit::process::TEST_KEY_RING),
        ("OUT_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ];
    let daemon = Daemon::start(
        dir.path(),
        "console-buttons",
        &["--integrations", weir_testkit::arg(&integrations)],
        &env,
    );
    let a = token(dir.path(), &["--tenant", "a"]);
    let api_a = Api::with_token(&daemon, &a);

    // A connection: Test from the console asks the app again.
    let made = api_a.post(
        "/api/v1/connections",
        &json!({"integration": "crm", "credentials": {"api_key": KEY}}),
    );
    assert_eq!(made.status, 201, "{made}");
    let connection = made.body["id"].as_str().unwrap().to_owned();
    let html = page(&daemon, "/console/connections", &a).text().unwrap();
    assert!(
        html.contains(&connection) && html.contains("status-ready"),
        "{html}"
    );
    assert!(!html.contains(KEY), "the credentials are never shown");
    let tests_before = app.count("/me");
    let r = post_page(
        &daemon,
        &format!("/console/connections/{connection}/test"),
        &a,
        &csrf_in(&html),
    );
    assert_eq!(r.status(), 303);
    assert_eq!(app.count("/me"), tests_before + 1);

    // A dead delivery: the outbox page lists it; Retry sends it again.
    let run = start_run(&api_a, "notify", json!({"n": 1}));
    api_a.wait_finished(&run);
    let mut dead = None;
    weir_testkit::wait_until("the delivery is dead", Duration::from_secs(30), || {
        dead = api_a.outbox()["dead"]
            .as_array()
            .and_then(|d| d.first())
            .map(|d| d["id"].as_str().unwrap().to_owned());
        dead.is_some()
    });
    let dead = dead.unwrap();
    let html = page(&daemon, "/console/outbox", &a).text().unwrap();
    assert!(
        html.contains(&format!(r#"data-delivery="{dead}""#)),
        "{html}"
    );
    assert!(html.contains("400"), "its last error: {html}");
    let sent = backend.count("/in");
    let r = post_page(
        &daemon,
        &format!("/console/outbox/{dead}/retry"),
        &a,
        &csrf_in(&html),
    );
    assert_eq!(r.status(), 303);
    weir_testkit::wait_until(
        "the delivery is sent again",
        Duration::from_secs(30),
        || backend.count("/in") > sent,
    );
    let log = daemon.weir.stderr();
    assert!(
        !log.contains(KEY) && !log.contains(&a),
        "a secret in the log"
    );
}

/// node, Chromium and playwright-core, or a loud skip (a failure under CI).
fn browser(test: &str) -> Option<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/console/drive.mjs");
    let chromium = PathBuf::from("/usr/bin/chromium");
    let playwright = root.join("tests/console/node_modules/playwright-core");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(node && chromium.exists() && playwright.exists()) {
        let notice = format!(
            "SKIPPED {test}: needs node, /usr/bin/chromium and playwright-core (bash .ci/run installs Debian's chromium and runs npm ci in tests/console)"
        );
        assert!(!in_ci(), "{notice}");
        eprintln!("\n*** {notice} ***\n");
        return None;
    }
    Some((script, chromium))
}

#[test]
fn the_console_in_a_browser() {
    let Some((script, chromium)) = browser("the_console_in_a_browser") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    flows(dir.path(), "http://127.0.0.1:9/unused");
    let daemon = Daemon::start(dir.path(), "console-browser", &[], &env());
    let (a, b, admin) = (
        token(dir.path(), &["--tenant", "a"]),
        token(dir.path(), &["--tenant", "b"]),
        token(dir.path(), &["--admin"]),
    );
    let (api_a, api_b) = (Api::with_token(&daemon, &a), Api::with_token(&daemon, &b));
    let failed = start_run(
        &api_a,
        "checkout",
        json!({"note": "<img src=x>", "total": 500}),
    );
    assert_eq!(api_a.wait_finished(&failed)["status"], "failed");
    let ok_a = start_run(&api_a, "checkout", json!({"note": "fine", "total": 1}));
    let ok_b = start_run(&api_b, "checkout", json!({"note": "b's", "total": 2}));
    api_a.wait_finished(&ok_a);
    api_b.wait_finished(&ok_b);

    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let config = json!({
        "base": daemon.url(""), "chromium": chromium, "screenshots": screenshots,
        "tenant_a": a, "tenant_b": b, "admin": admin, "expired": expired_token(),
        "flow": "checkout", "failed_run": failed, "failing_node": "boom", "other_node": "shape",
    });
    let out = weir_testkit::peer_output(
        Command::new("node")
            .arg(&script)
            .arg(config.to_string())
            .current_dir(script.parent().unwrap()),
        "the browser script",
    );
    let seen: Value = serde_json::from_slice(&out).unwrap();

    // Without a token, no page shows anything but sign-in.
    for visit in seen["without_token"].as_array().unwrap() {
        assert!(
            visit["url"].as_str().unwrap().contains("/console/sign-in"),
            "{visit}"
        );
        assert!(
            !visit["text"].as_str().unwrap().contains(&failed),
            "{visit}"
        );
    }
    assert_eq!(
        seen["after_sign_in"], "/console/outbox",
        "back to the page asked for"
    );
    // Tenant a sees its runs, not b's.
    let a_runs = seen["a_runs"].as_array().unwrap();
    assert!(a_runs.contains(&json!(failed)) && a_runs.contains(&json!(ok_a)));
    assert!(!a_runs.contains(&json!(ok_b)));

    // The flow's graph: one shape per node (and its trigger), by type.
    let nodes = seen["flow_nodes"].as_array().unwrap();
    let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["shape", "check", "boom", "fine", "order"],
        "{nodes:?}"
    );
    assert!(nodes.iter().all(|n| n["shapes"] == 1), "{nodes:?}");
    assert!(nodes[1]["class"].as_str().unwrap().contains("type-if"));
    let labels = seen["flow_labels"].as_array().unwrap();
    assert!(
        labels.contains(&json!("then")) && labels.contains(&json!("else")),
        "{labels:?}"
    );

    // The failed run: the script error with its position, another node's
    // output, the graph coloured by status; markup stayed text.
    assert_eq!(seen["run_status"], "failed");
    let error = seen["failed_error"].as_str().unwrap();
    assert!(
        error.contains("no_such_function") && error.contains("line 18, column 13"),
        "{error}"
    );
    let output = seen["other_output"].as_str().unwrap();
    assert!(
        output.contains("\"note\": \"<img src=x>\"") && output.contains("\"total\": 500"),
        "{output}"
    );
    let classes = &seen["graph_classes"];
    assert!(
        classes["boom"].as_str().unwrap().contains("status-failed"),
        "{classes}"
    );
    assert!(
        classes["shape"]
            .as_str()
            .unwrap()
            .contains("status-succeeded"),
        "{classes}"
    );
    let fine = classes["fine"].as_str().unwrap();
    assert!(
        fine.contains("status-pending") || fine.contains("status-skipped"),
        "{classes}"
    );
    assert_eq!(seen["injected_elements"], 0);
    assert_eq!(
        seen["enter_opens"], true,
        "Enter on a graph node opens its details"
    );

    // Retry: attempt 2, seen on the page (which refreshed itself).
    assert_eq!(seen["attempt_before"], "1");
    assert_eq!(seen["attempt_after"], "2");
    assert_eq!(api_a.run(&failed)["attempt"], 2);
    assert!(
        seen["failing_attempts"]
            .as_str()
            .unwrap()
            .contains("failed")
    );
    // A running run turned succeeded without a reload.
    assert_eq!(
        api_a.run(seen["slow_run"].as_str().unwrap())["status"],
        "succeeded"
    );
    assert_ne!(seen["slow_before"], "succeeded");
    assert_eq!(seen["slow_after"], "succeeded");
    assert_eq!(seen["slow_same_document"], true);

    assert_eq!(seen["first_tab"], "Skip to content");
    assert!(
        seen["narrow_overflow"].as_i64().unwrap() <= 0,
        "the page scrolls sideways at 420 px: {}",
        seen["narrow_overflow"]
    );
    assert_ne!(seen["dark_background"], "rgb(247, 247, 248)", "dark mode");

    // Sign-out; tenant b sees its run only, and a's run is a 404 for it.
    assert!(
        seen["signed_out_text"]
            .as_str()
            .unwrap()
            .contains("You are signed out")
    );
    assert_eq!(seen["b_runs"], json!([ok_b]));
    assert_eq!(seen["b_foreign_status"], 404);
    assert!(!seen["b_foreign_text"].as_str().unwrap().contains("<img"));
    // An expired session goes back to sign-in, saying why.
    assert!(
        seen["expired_url"]
            .as_str()
            .unwrap()
            .contains("/console/sign-in?reason=expired")
    );
    assert!(
        seen["expired_text"]
            .as_str()
            .unwrap()
            .contains("Your token expired")
    );
    // The admin sees both tenants' runs.
    let admin_runs = seen["admin_runs"].as_array().unwrap();
    assert!(admin_runs.contains(&json!(ok_a)) && admin_runs.contains(&json!(ok_b)));
    // No script error, no CSP violation in any page.
    assert_eq!(
        seen["script_errors"],
        json!([]),
        "{}",
        seen["script_errors"]
    );
    let log = daemon.weir.stderr();
    for t in [&a, &b, &admin] {
        assert!(!log.contains(t.as_str()), "a token in the log");
    }
}
