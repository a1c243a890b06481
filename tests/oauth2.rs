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
//! caller's `redirect_uri` is checked; a revoked token fails the run and
//! the connection's test.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use weir_testkit::{Api, Daemon, Weir, in_ci, wait_until, write_flow};

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
    let child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
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
    let mut args = vec!["token"];
    args.extend_from_slice(who);
    let done =
        Weir::spawn_with(dir, "token", &args, &[("WEIR_WORKSPACE_SECRET", SECRET)]).finish(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    done.stdout.trim().to_owned()
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
    let a = Api::with_token(&daemon, &token(dir.path(), &["--tenant", "a"]));
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

    // Revoked at the provider: the app refuses the token (this provider
    // answers 400 `access_denied`, not 401), the run fails with its words,
    // and a test of the connection shows it in error.
    let revoked = browser()
        .post(format!("{}/users/alice/revoke-tokens", provider.base))
        .send()
        .unwrap();
    assert!(revoked.status().is_success(), "{}", revoked.status());
    let failed = run(&a);
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(failed.to_string().contains("access_denied"), "{failed:#}");
    let tested = a.post(&format!("/api/v1/connections/{id}/test"), &json!({}));
    assert_eq!(tested.body["state"], "error", "{tested}");
    assert!(
        tested.body["error"].as_str().unwrap().contains("400"),
        "{tested}"
    );

    // The client secret is in no log line and no stored file.
    assert!(!daemon.weir.stderr().contains(CLIENT_SECRET));
    weir_testkit::assert_not_in_files(&weir_testkit::files_under(&daemon.data), CLIENT_SECRET);
}
