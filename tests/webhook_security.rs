//! Webhooks as an attacker would try them: credentials a sender put in
//! headers never reach a stored event (nor the data folder, nor the log);
//! a signed request sent again is a duplicate whatever its unsigned
//! headers say, across the tenants that share the secret; each tenant can
//! have a secret of its own; and a secret that is not set is a load error,
//! not a stream of 401s.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use weir_testkit::api::run_and_event;
use weir_testkit::{Api, Daemon, write_flow};

const TIMEOUT: Duration = Duration::from_secs(20);

fn hmac_hex(key: &str, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// Panics if any of `secrets` appears in the data folder's files, the log
/// or `answers`.
fn assert_nowhere(secrets: &[&str], data: &Path, log: &str, answers: &[&Value]) {
    for secret in secrets {
        assert!(!log.contains(secret), "`{secret}` is in the log:\n{log}");
        for answer in answers {
            assert!(
                !answer.to_string().contains(secret),
                "`{secret}` is in an API answer: {answer:#}"
            );
        }
        for (file, bytes) in files_under(data) {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "`{secret}` is in the data folder, in {file}");
        }
    }
}

const HEADERS_FLOW: &str = r#"
id: headers
triggers:
  - id: plain
    type: webhook
  - id: signed
    type: webhook
    verify: {scheme: hmac-sha256, header: x-signature, secret_env: HEADERS_SECRET}
    drop_headers: [x-internal-token]
    keep_headers: [x-api-key]
nodes:
  - {id: seen, type: map, mapping: {headers: event.headers}}
"#;

#[test]
fn credential_and_signature_headers_never_reach_a_stored_event() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "headers.yaml", HEADERS_FLOW);
    let secret = "hmac-secret-for-the-header-test";
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[("HEADERS_SECRET", secret)]);
    let api = Api::new(&daemon);
    let credentials = [
        ("authorization", "Bearer tok-AUTH-4f1c"),
        ("proxy-authorization", "Basic cHJveHktUFJPWFktOWU="),
        ("cookie", "session=COOKIE-77a2"),
        ("x-api-key", "KEY-API-5d0e"),
        ("x-internal-token", "INTERNAL-c3b9"),
    ];
    let headers = |extra: Vec<(&'static str, String)>| {
        let mut all: Vec<(&str, String)> = credentials
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        all.push(("x-request-id", "req-1".into()));
        all.extend(extra);
        all
    };

    let (plain, _) = run_and_event(&api.hook(
        "/hooks/default/headers/plain",
        &json!({"n": 1}),
        &headers(vec![]),
    ));
    let body = json!({"n": 2}).to_string();
    let signature = hmac_hex(secret, &body);
    let (signed, _) = run_and_event(&api.post_raw(
        "/hooks/default/headers/signed",
        "application/json",
        &body,
        &headers(vec![("x-signature", signature.clone())]),
    ));
    let plain = api.wait_for(&plain, "succeeded");
    let signed = api.wait_for(&signed, "succeeded");

    let stored = &plain["event"]["headers"];
    for (name, _) in &credentials[..4] {
        assert!(stored.get(*name).is_none(), "{name} was stored: {stored:#}");
    }
    // Not a credential by default: kept unless the trigger drops it.
    assert_eq!(stored["x-internal-token"], "INTERNAL-c3b9");
    assert_eq!(stored["x-request-id"], "req-1");
    let stored = &signed["event"]["headers"];
    for name in [
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-signature",
        "x-internal-token",
    ] {
        assert!(stored.get(name).is_none(), "{name} was stored: {stored:#}");
    }
    assert_eq!(stored["x-api-key"], "KEY-API-5d0e", "keep_headers keeps it");

    // Nowhere else either: not in the data folder (its records are JSON
    // in sled's files), the log or the runs API — but for the header the
    // flow keeps on purpose.
    let list = api.list("limit=50");
    let data = daemon.data.clone();
    daemon.weir.terminate();
    let done = daemon.weir.finish(TIMEOUT);
    assert_eq!(done.code, Some(0), "{done}");
    let everywhere = [
        "tok-AUTH-4f1c",
        "cHJveHktUFJPWFktOWU=",
        "COOKIE-77a2",
        signature.as_str(),
        secret,
    ];
    assert_nowhere(&everywhere, &data, &done.stderr, &[&plain, &list]);
}

const GITHUB_FLOW: &str = r#"
id: gh
tenants: [default, acme]
triggers:
  - id: github
    type: webhook
    verify: {scheme: github, secret_env: GH_SECRET}
    dedupe: event.headers["x-github-delivery"]
nodes:
  - {id: seen, type: map, mapping: {body: event.body}}
"#;

/// GitHub's delivery id is not signed: replaying a signed body without it,
/// or with another one, is still a duplicate; and so is the same signed
/// request sent to another tenant that shares the secret.
#[test]
fn a_signed_request_sent_again_is_a_duplicate_whatever_its_unsigned_headers() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "gh.yaml", GITHUB_FLOW);
    let secret = "github-secret-for-replays";
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[("GH_SECRET", secret)]);
    let api = Api::new(&daemon);
    let body = json!({"action": "opened", "issue": {"number": 7}}).to_string();
    let signature = format!("sha256={}", hmac_hex(secret, &body));
    let send = |tenant: &str, delivery: Option<&str>| {
        let mut headers = vec![("x-hub-signature-256", signature.clone())];
        if let Some(d) = delivery {
            headers.push(("x-github-delivery", d.to_owned()));
        }
        api.post_raw(
            &format!("/hooks/{tenant}/gh/github"),
            "application/json",
            &body,
            &headers,
        )
    };
    let (first, _) = run_and_event(&send("default", Some("d-1")));
    for (tenant, delivery) in [
        ("default", Some("d-1")),
        ("default", None),
        ("default", Some("d-2-forged")),
    ] {
        let a = send(tenant, delivery);
        assert_eq!(a.status, 200, "{tenant} {delivery:?}: {a}");
        assert_eq!(a.body["duplicate"], true, "{a}");
        assert_eq!(a.body["run_id"], first.as_str(), "{a}");
    }
    // acme shares the secret: the replay is a duplicate there too, and
    // the other tenant's run is not named.
    let a = send("acme", Some("d-3"));
    assert_eq!(a.status, 200, "{a}");
    assert_eq!(a.body["duplicate"], true, "{a}");
    assert_eq!(a.body["run_id"], Value::Null, "{a}");
    assert_eq!(api.ids("flow=gh"), vec![first.clone()]);
    // Another body, signed, is a new run.
    let other = json!({"action": "opened", "issue": {"number": 8}}).to_string();
    let a = api.post_raw(
        "/hooks/default/gh/github",
        "application/json",
        &other,
        &[(
            "x-hub-signature-256",
            format!("sha256={}", hmac_hex(secret, &other)),
        )],
    );
    assert_eq!(a.status, 202, "{a}");
}

const PER_TENANT_FLOW: &str = r#"
id: crm
tenants: [default, acme-eu]
triggers:
  - id: hook
    type: webhook
    verify: {scheme: hmac-sha256, header: x-signature, secret_env: "CRM_SECRET_{TENANT}"}
nodes:
  - {id: seen, type: map, mapping: {tenant: tenant}}
"#;

#[test]
fn each_tenant_can_have_its_own_signing_secret() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "crm.yaml", PER_TENANT_FLOW);
    let daemon = Daemon::start(
        dir.path(),
        "daemon",
        &[],
        &[
            ("CRM_SECRET_DEFAULT", "secret-of-default"),
            ("CRM_SECRET_ACME_EU", "secret-of-acme-eu"),
        ],
    );
    let api = Api::new(&daemon);
    let body = r#"{"contact": 1}"#;
    let send = |tenant: &str, key: &str| {
        api.post_raw(
            &format!("/hooks/{tenant}/crm/hook"),
            "application/json",
            body,
            &[("x-signature", hmac_hex(key, body))],
        )
    };
    // Signed for default, sent for acme-eu: refused.
    send("acme-eu", "secret-of-default").assert_error(401, "bad_signature");
    let (acme, _) = run_and_event(&send("acme-eu", "secret-of-acme-eu"));
    let (default, _) = run_and_event(&send("default", "secret-of-default"));
    assert_eq!(api.wait_for(&acme, "succeeded")["tenant"], "acme-eu");
    assert_eq!(api.wait_for(&default, "succeeded")["tenant"], "default");
}

/// A secret that is not set, or unusable, is a load error naming the
/// variable (and the tenant), at its line and column; never an empty
/// secret that makes every request a 401.
#[test]
fn an_unset_or_unusable_secret_is_a_load_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "crm.yaml", PER_TENANT_FLOW);
    write_flow(
        &flows,
        "sw.yaml",
        "id: sw\ntriggers:\n  - id: hook\n    type: webhook\n    verify: {scheme: standard-webhooks, secret_env: SW_SHORT}\nnodes:\n  - {id: a, type: log, message: '\"x\"'}\n",
    );
    let env = [
        ("CRM_SECRET_DEFAULT", "secret-of-default"),
        // 16 bytes: the specification asks for 24 to 64.
        ("SW_SHORT", "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="),
    ];
    let done = weir_testkit::Weir::spawn_with(
        dir.path(),
        "validate",
        &["validate", flows.to_str().unwrap()],
        &env,
    )
    .finish(TIMEOUT);
    assert_eq!(done.code, Some(1), "{done}");
    assert!(
        done.stdout.contains("crm.yaml:7:")
            && done
                .stdout
                .contains("`CRM_SECRET_ACME_EU` (tenant acme-eu's) is not set"),
        "{done}"
    );
    assert!(
        done.stdout.contains("sw.yaml:5:")
            && done.stdout.contains("`SW_SHORT` holds a 16-byte key")
            && !done.stdout.contains("MDEyMzQ1Njc4OWFiY2RlZg"),
        "{done}"
    );
    // The daemon reports them too, and serves neither.
    let daemon = Daemon::start(dir.path(), "daemon", &[], &env);
    let api = Api::new(&daemon);
    let flows = api.flows();
    assert_eq!(flows["items"], json!([]), "{flows:#}");
    let errors = flows["errors"].to_string();
    assert!(errors.contains("CRM_SECRET_ACME_EU"), "{errors}");
    api.post("/hooks/default/crm/hook", &json!({}))
        .assert_error(404, "not_found");
}

/// `flow` is `{id, version}` in a trigger's `dedupe` and the flow's
/// concurrency key, as in every other expression.
#[test]
fn dedupe_and_concurrency_keys_read_flow_id() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(
        &flows,
        "keyed.yaml",
        "id: keyed\nconcurrency: {key: 'flow.id + \":\" + event.body.customer'}\ntriggers:\n  - {id: hook, type: webhook, dedupe: 'flow.id + \":\" + flow.version + \":\" + event.body.id'}\nnodes:\n  - {id: seen, type: map, mapping: {flow: flow.id}}\n",
    );
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    let body = json!({"id": "evt-1", "customer": "c-1"});
    let (run, _) = run_and_event(&api.hook("/hooks/default/keyed/hook", &body, &[]));
    let run = api.wait_for(&run, "succeeded");
    assert_eq!(
        weir_testkit::api::node(&run, "seen")["output"]["flow"],
        "keyed"
    );
    let again = api.hook("/hooks/default/keyed/hook", &body, &[]);
    assert_eq!(again.status, 200, "{again}");
    assert_eq!(again.body["duplicate"], true, "{again}");
}
