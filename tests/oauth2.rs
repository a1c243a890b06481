//! OAuth2 connections against a real authorization server that weir's
//! authors did not write: `oidc-provider-mock` (PyPI), installed by
//! `.ci/run` in `target/oidc-venv` (or found on PATH, or at
//! `WEIR_TEST_OIDC_MOCK`). Without it the tests print a notice and pass,
//! unless `CI=true`, where they fail.
//!
//! The authorization code flow with PKCE end to end: a connection request,
//! consent (the mock takes a POST of `sub=alice` to its authorize URL), the
//! callback, the code exchange, the connection's test, an `http` node
//! through it; a replayed, forged or denied `state` connects nothing; a
//! caller's `redirect_uri` is checked; short-lived tokens are refreshed
//! through the provider, and once it revokes them the connection is
//! disconnected. A second test plays the token endpoint itself for what the
//! mock cannot do: one refresh for 100 concurrent runs, a kept or rotated
//! refresh token, a refresh and one repeat on a 401, `invalid_grant`, and
//! an endpoint that is down (no second call within 30 s).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use weir_testkit::{Api, Daemon, in_ci, wait_until, write_flow};

const SECRET: &str = "oauth2-test-workspace-secret-0123456789abcdef";
const CLIENT_SECRET: &str = "idp-client-secret-7c1e0a9b";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The mock provider, stopped when dropped.
struct Provider {
    child: Child,
    base: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mock_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("WEIR_TEST_OIDC_MOCK") {
        return Some(PathBuf::from(path));
    }
    let venv =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/oidc-venv/bin/oidc-provider-mock");
    if venv.exists() {
        return Some(venv);
    }
    let on_path = Command::new("oidc-provider-mock")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then(|| PathBuf::from("oidc-provider-mock"))
}

/// Starts the provider, or skips (loudly; under CI it fails).
fn provider(test: &str) -> Option<Provider> {
    let Some(binary) = mock_binary() else {
        let notice = format!(
            "SKIPPED {test}: oidc-provider-mock is not installed (bash .ci/run installs it in target/oidc-venv)"
        );
        assert!(!in_ci(), "{notice}");
        eprintln!("\n*** {notice} ***\n");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Tokens live 5 s: shorter than the refresh margin (60 s), so every
    // use refreshes them through the provider.
    let child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-e", "5"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start oidc-provider-mock");
    let provider = Provider {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::blocking::Client::new();
    let discovery = format!("{}/.well-known/openid-configuration", provider.base);
    wait_until("the OAuth2 provider answers", TIMEOUT, || {
        http.get(&discovery)
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    Some(provider)
}

fn integration(dir: &Path, provider: &Provider) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("idp.yaml"),
        format!(
            r#"key: idp
name: Identity provider
base_url: '{base}'
auth:
  type: oauth2
  authorize_url: '{base}/oauth2/authorize'
  token_url: '{base}/oauth2/token'
  scopes: [openid, profile]
  client_id_env: IDP_CLIENT_ID
  client_secret_env: IDP_CLIENT_SECRET
test:
  request: {{method: GET, path: /userinfo}}
"#,
            base = provider.base
        ),
    )
    .unwrap();
}

fn token(dir: &Path, who: &[&str]) -> String {
    weir_testkit::weir_token(dir, &[("WEIR_WORKSPACE_SECRET", SECRET)], who)
}

/// A browser that does not follow redirects.
fn browser() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// Consents as `alice` at the provider's URL: where it sends the browser.
fn consent(url: &str) -> String {
    let answer = browser()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("sub=alice")
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 302, "consent at {url}");
    answer.headers()["location"].to_str().unwrap().to_owned()
}

/// Follows the provider's redirect back to weir: (status, location, body).
fn back(url: &str) -> (u16, Option<String>, String) {
    let answer = browser().get(url).send().unwrap();
    let status = answer.status().as_u16();
    let location = answer
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, location, answer.text().unwrap())
}

fn state_of(url: &str) -> String {
    let url = reqwest::Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

#[test]
fn an_oauth2_connection_is_made_through_consent_and_its_state_is_used_once() {
    let Some(provider) = provider("oauth2") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    integration(&dir.path().join("integrations"), &provider);
    let keys = format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    let integrations = dir.path().join("integrations");
    let daemon = Daemon::start(
        dir.path(),
        "daemon",
        &["--integrations", integrations.to_str().unwrap()],
        &[
            ("WEIR_WORKSPACE_SECRET", SECRET),
            ("WEIR_SECRET_KEYS", keys.as_str()),
            ("IDP_CLIENT_ID", "weir-test"),
            ("IDP_CLIENT_SECRET", CLIENT_SECRET),
        ],
    );
    write_flow(
        &daemon.flows,
        "me.yaml",
        "id: me\ntenants: [a]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: who, type: http, connection: idp, url: /userinfo}\n",
    );
    let a_token = token(dir.path(), &["--tenant", "a"]);
    let a = Api::with_token(&daemon, &a_token);
    let b = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "b"]));

    // A request: the provider's URL, with state and PKCE.
    let made = a.post(
        "/api/v1/connection-requests",
        &json!({"integration": "idp"}),
    );
    assert_eq!(made.status, 201, "{made}");
    assert_eq!(made.body["status"], "pending");
    let request = made.body["id"].as_str().unwrap().to_owned();
    let url = made.body["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{}/oauth2/authorize?", provider.base)),
        "{url}"
    );
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    b.get(&format!("/api/v1/connection-requests/{request}"))
        .assert_error(404, "not_found");

    // Consent, then back to weir: connected, tested with the token.
    let callback = consent(&url);
    assert!(
        callback.starts_with(&format!("{}/oauth2/callback?", daemon.base)),
        "{callback}"
    );
    let (status, _, page) = back(&callback);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Connected"), "{page}");
    let done = a.get_ok(&format!("/api/v1/connection-requests/{request}"));
    assert_eq!(done["status"], "success", "{done:#}");
    let id = done["connection_id"].as_str().unwrap().to_owned();
    let connection = a.get_ok(&format!("/api/v1/connections/{id}"));
    assert_eq!(connection["state"], "ready", "{connection:#}");
    assert!(
        connection["credentials_expire_at"].is_string(),
        "{connection:#}"
    );

    // The same link again, or a forged state: refused, nothing connected.
    let (status, _, page) = back(&callback);
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("used already"), "{page}");
    let forged = format!(
        "{}/oauth2/callback?code=x&state={request}.forged",
        daemon.base
    );
    assert_eq!(back(&forged).0, 400);
    assert_eq!(
        back(&format!("{}/oauth2/callback?code=x", daemon.base)).0,
        400
    );
    assert_eq!(
        a.get_ok("/api/v1/connections")["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The provider's token reaches the app through the connection.
    wait_until("the flow loads", TIMEOUT, || {
        a.flows()["items"].as_array().unwrap().len() == 1
    });
    let run = |api: &Api| -> Value {
        let started = api.post("/api/v1/flows/me/runs", &json!({}));
        assert_eq!(started.status, 202, "{started}");
        api.wait_finished(started.body["run_id"].as_str().unwrap())
    };
    let ok = run(&a);
    assert_eq!(ok["status"], "succeeded", "{ok:#}");
    assert_eq!(ok["nodes"][0]["output"]["body"]["sub"], "alice", "{ok:#}");

    // The console: Refresh asks the provider for a new token; Reconnect
    // leads to its consent page, and consent there keeps the connection.
    use weir_testkit::console;
    let html = console::page(&daemon, "/console/connections", &a_token)
        .text()
        .unwrap();
    assert!(
        html.contains(&format!("/console/connections/{id}/refresh")),
        "{html}"
    );
    let expiry = connection["credentials_expire_at"].clone();
    // Expiries are in whole seconds: the refresh comes a second later.
    let clock = chrono::Utc::now();
    wait_until("the clock moves a second", TIMEOUT, || {
        chrono::Utc::now() - clock >= chrono::Duration::seconds(1)
    });
    let r = console::post(
        &daemon,
        &format!("/console/connections/{id}/refresh"),
        &a_token,
        &console::csrf_in(&html),
    );
    assert_eq!(r.status(), 303);
    let refreshed = a.get_ok(&format!("/api/v1/connections/{id}"));
    assert_eq!(refreshed["state"], "ready", "{refreshed:#}");
    assert_ne!(
        refreshed["credentials_expire_at"], expiry,
        "a new token: {refreshed:#}"
    );
    let r = console::post(
        &daemon,
        &format!("/console/connections/{id}/reconnect"),
        &a_token,
        &console::csrf_in(&html),
    );
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    let link = page
        .split(r#"href=""#)
        .map(|l| l.split('"').next().unwrap().replace("&amp;", "&"))
        .find(|l| l.starts_with(&format!("{}/oauth2/authorize?", provider.base)))
        .unwrap_or_else(|| panic!("no link to the provider: {page}"));
    let (status, _, done) = back(&consent(&link));
    assert_eq!(status, 200, "{done}");
    let all = a.get_ok("/api/v1/connections");
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        1,
        "the same connection: {all:#}"
    );
    assert_eq!(all["items"][0]["id"], id.as_str());

    // Consent denied: the request ends in error, with the provider's words.
    let denied = a.post(
        "/api/v1/connection-requests",
        &json!({"integration": "idp"}),
    );
    let denied_id = denied.body["id"].as_str().unwrap().to_owned();
    let state = state_of(denied.body["url"].as_str().unwrap());
    let (status, _, page) = back(&format!(
        "{}/oauth2/callback?error=access_denied&error_description=not+today&state={state}",
        daemon.base
    ));
    assert_eq!(status, 400, "{page}");
    let ended = a.get_ok(&format!("/api/v1/connection-requests/{denied_id}"));
    assert_eq!(ended["status"], "error");
    assert!(
        ended["error"]
            .as_str()
            .unwrap()
            .contains("access_denied: not today"),
        "{ended}"
    );

    // A redirect_uri: loopback is allowed, and gets the connection's id;
    // another site is not.
    let evil = a.post(
        "/api/v1/connection-requests",
        &json!({"integration": "idp", "redirect_uri": "https://evil.example/cb"}),
    );
    evil.assert_error(422, "invalid");
    assert_eq!(evil.body["error"]["errors"][0]["pointer"], "/redirect_uri");
    let again = a.post(
        "/api/v1/connection-requests",
        &json!({"integration": "idp", "redirect_uri": "http://127.0.0.1:9/done", "connection_id": id}),
    );
    assert_eq!(again.status, 201, "{again}");
    let (status, location, _) = back(&consent(again.body["url"].as_str().unwrap()));
    assert_eq!(status, 302);
    assert_eq!(
        location.as_deref(),
        Some(format!("http://127.0.0.1:9/done?connection_id={id}").as_str()),
        "a reconnect keeps the id"
    );

    // `weir connections ensure` for a tenant without one: it prints the
    // provider's URL and waits; consent given, it answers the connection.
    let c_token = token(dir.path(), &["--tenant", "c"]);
    let ensure = weir_testkit::Weir::spawn_with(
        dir.path(),
        "ensure",
        &[
            "connections",
            "ensure",
            "idp",
            "--json",
            "--server",
            &daemon.base,
            "--token",
            &c_token,
        ],
        &[],
    );
    let mut printed = None;
    wait_until("ensure prints the URL to open", TIMEOUT, || {
        printed = ensure
            .stderr()
            .split_whitespace()
            .find(|w| w.starts_with(&provider.base))
            .map(str::to_owned);
        printed.is_some()
    });
    let (status, _, page) = back(&consent(&printed.unwrap()));
    assert_eq!(status, 200, "{page}");
    let ensured = ensure.finish(TIMEOUT);
    assert_eq!(ensured.code, Some(0), "{ensured}");
    let made: Value = serde_json::from_str(ensured.stdout.trim()).unwrap();
    assert_eq!(made["state"], "ready", "{ensured}");
    assert_eq!(made["tenant"], "c", "{ensured}");
    let again = weir_testkit::run_weir(
        dir.path(),
        "ensure-again",
        &[
            "connections",
            "ensure",
            "idp",
            "--json",
            "--server",
            &daemon.base,
            "--token",
            &c_token,
        ],
        TIMEOUT,
    );
    let same: Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert_eq!(same["id"], made["id"], "{again}");

    // Revoked at the provider: the next refresh is refused with
    // `invalid_grant`, the connection is disconnected with the provider's
    // words, and the run is told to reconnect it.
    let revoked = browser()
        .post(format!("{}/users/alice/revoke-tokens", provider.base))
        .send()
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    let failed = run(&a);
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(failed.to_string().contains("invalid_grant"), "{failed:#}");
    assert!(failed.to_string().contains("reconnect"), "{failed:#}");
    let connection = a.get_ok(&format!("/api/v1/connections/{id}"));
    assert_eq!(connection["state"], "disconnected", "{connection:#}");

    // The client secret is in no log line and no stored file.
    assert!(!daemon.weir.stderr().contains(CLIENT_SECRET));
    weir_testkit::assert_not_in_files(&weir_testkit::files_under(&daemon.data), CLIENT_SECRET);
}

/// The token endpoint the mock provider cannot play: one that counts its
/// grants, rotates refresh tokens, refuses with `invalid_grant`, or is
/// down. `weir` is started with it as the integration's provider.
#[test]
fn tokens_are_refreshed_once_per_expiry_and_a_refused_refresh_disconnects() {
    use std::sync::{Arc, Mutex};
    let idp = weir_testkit::FakeServer::start();
    let app = weir_testkit::FakeServer::start();
    let accepted = Arc::new(Mutex::new(String::from("Bearer at-1")));
    let accepts = accepted.clone();
    app.set_rule(move |r, _| {
        if r.header("authorization") == Some(accepts.lock().unwrap().as_str()) {
            200
        } else {
            401
        }
    });
    let tokens = |access: &str, refresh: Option<&str>, expires_in: u64| {
        let mut body = json!({"access_token": access, "expires_in": expires_in.to_string()});
        if let Some(r) = refresh {
            body["refresh_token"] = json!(r);
        }
        idp.set_body(body);
    };
    let dir = tempfile::tempdir().unwrap();
    let integrations = dir.path().join("integrations");
    std::fs::create_dir_all(&integrations).unwrap();
    std::fs::write(
        integrations.join("app.yaml"),
        format!(
            "key: app\nbase_url: '{}'\nauth:\n  type: oauth2\n  authorize_url: '{}'\n  token_url: '{}'\n  client_id_env: APP_ID\n  client_secret_env: APP_SECRET\n  client_auth: body\ntest:\n  request: {{path: /me}}\n",
            app.base(),
            idp.url("/authorize"),
            idp.url("/token")
        ),
    )
    .unwrap();
    let keys = format!(
        "k1:{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 32])
    );
    let daemon = Daemon::start(
        dir.path(),
        "daemon",
        &["--integrations", integrations.to_str().unwrap()],
        &[
            ("WEIR_WORKSPACE_SECRET", SECRET),
            ("WEIR_SECRET_KEYS", keys.as_str()),
            ("APP_ID", "weir"),
            ("APP_SECRET", CLIENT_SECRET),
        ],
    );
    write_flow(
        &daemon.flows,
        "me.yaml",
        "id: me\ntenants: [a]\ntriggers: [{id: t, type: api}]\nnodes:\n  - {id: who, type: http, connection: app, url: /me}\n",
    );
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
    // Connects with a token that is due at once (1 s left).
    let connect = |expires_in: u64| -> String {
        tokens("at-1", Some("rt-1"), expires_in);
        let made = a.post(
            "/api/v1/connection-requests",
            &json!({"integration": "app"}),
        );
        let state = state_of(made.body["url"].as_str().unwrap());
        let (status, _, page) = back(&format!(
            "{}/oauth2/callback?code=c1&state={state}",
            daemon.base
        ));
        assert_eq!(status, 200, "{page}");
        let done = a.get_ok(&format!(
            "/api/v1/connection-requests/{}",
            made.body["id"].as_str().unwrap()
        ));
        done["connection_id"].as_str().unwrap().to_owned()
    };
    let id = connect(1);
    assert_eq!(idp.count("/token"), 1, "the code exchange");
    let exchange = form_of(&idp.requests_to("/token")[0]);
    assert_eq!(exchange["grant_type"], "authorization_code");
    assert_eq!(exchange["client_secret"], CLIENT_SECRET);
    assert!(exchange["code_verifier"].len() >= 43);
    wait_until("the flow loads", TIMEOUT, || {
        a.flows()["items"].as_array().unwrap().len() == 1
    });

    // 100 runs at once find the token due: one refresh grant serves them
    // all. The answer holds no refresh token: the old one is kept.
    tokens("at-2", None, 3600);
    *accepted.lock().unwrap() = "Bearer at-2".into();
    let ids: Vec<String> = (0..100)
        .map(|_| {
            let s = a.post("/api/v1/flows/me/runs", &json!({}));
            assert_eq!(s.status, 202, "{s}");
            s.body["run_id"].as_str().unwrap().to_owned()
        })
        .collect();
    for run in &ids {
        let done = a.wait_finished(run);
        assert_eq!(done["status"], "succeeded", "{done:#}");
    }
    assert_eq!(idp.count("/token"), 2, "exactly one refresh for 100 runs");
    let refresh = form_of(&idp.requests_to("/token")[1]);
    assert_eq!(refresh["grant_type"], "refresh_token");
    assert_eq!(refresh["refresh_token"], "rt-1");

    // The app says 401 before the expiry: refreshed once, the request
    // repeated once. This answer rotates the refresh token.
    tokens("at-3-0c7e1f2a9b", Some("rt-2-5d8a3c6e1f"), 3600);
    *accepted.lock().unwrap() = "Bearer at-3-0c7e1f2a9b".into();
    let s = a.post("/api/v1/flows/me/runs", &json!({}));
    let done = a.wait_finished(s.body["run_id"].as_str().unwrap());
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(idp.count("/token"), 3);
    assert_eq!(
        form_of(&idp.requests_to("/token")[2])["refresh_token"],
        "rt-1"
    );
    // The rotated one is what the next refresh sends.
    let forced = a.post(&format!("/api/v1/connections/{id}/refresh"), &json!({}));
    assert_eq!(forced.status, 200, "{forced}");
    assert_eq!(
        form_of(&idp.requests_to("/token")[3])["refresh_token"],
        "rt-2-5d8a3c6e1f"
    );

    // The provider refuses the refresh: disconnected, with its words, and
    // runs are told to reconnect.
    idp.set_status(400);
    idp.set_body(json!({"error": "invalid_grant", "error_description": "refresh token revoked"}));
    let refused = a.post(&format!("/api/v1/connections/{id}/refresh"), &json!({}));
    assert_eq!(refused.body["state"], "disconnected", "{refused}");
    let error = refused.body["error"].as_str().unwrap();
    assert!(
        error.contains("invalid_grant") && error.contains("refresh token revoked"),
        "{error}"
    );
    let s = a.post("/api/v1/flows/me/runs", &json!({}));
    let failed = a.wait_finished(s.body["run_id"].as_str().unwrap());
    assert!(failed.to_string().contains("reconnect"), "{failed:#}");

    // The token endpoint is down: the connection stays as it is, and a
    // second refresh within 30 s does not call it again.
    idp.set_status(200);
    *accepted.lock().unwrap() = "Bearer at-1".into();
    let other = connect(3600);
    idp.set_status(503);
    let before = idp.count("/token");
    let down = a.post(&format!("/api/v1/connections/{other}/refresh"), &json!({}));
    assert_eq!(down.body["state"], "ready", "{down}");
    assert!(
        down.body["refresh_error"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{down}"
    );
    assert_eq!(idp.count("/token"), before + 1);
    let again = a.post(&format!("/api/v1/connections/{other}/refresh"), &json!({}));
    assert!(
        again.body["refresh_error"]
            .as_str()
            .unwrap()
            .contains("30s"),
        "{again}"
    );
    assert_eq!(
        idp.count("/token"),
        before + 1,
        "no second call within 30 s"
    );

    let metrics = Api::with_token(&daemon, &token(dir.path(), &["--admin"])).metrics();
    assert!(metrics.contains("weir_oauth2_refresh_total 5"), "{metrics}");
    assert!(!daemon.weir.stderr().contains(CLIENT_SECRET));
    let files = weir_testkit::files_under(&daemon.data);
    for secret in [CLIENT_SECRET, "at-3-0c7e1f2a9b", "rt-2-5d8a3c6e1f"] {
        weir_testkit::assert_not_in_files(&files, secret);
    }
}

fn form_of(r: &weir_testkit::Received) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(&r.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
