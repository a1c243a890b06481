//! `secrets:` end to end: an `http` node sends a secret from the
//! environment (in its URL's query, a header and its body), and the secret
//! appears nowhere weir records, logs or shows — not in node outputs (the
//! API echoes it back), errors (a URL shows no query values), run records,
//! the log, the flows API, or the data folder's files. Mistakes are load
//! errors: an unset variable, a misspelt name, a secret read where it
//! cannot be.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use weir_testkit::api::{node, run_and_event};
use weir_testkit::{Api, Daemon, FakeServer, write_flow};

const TIMEOUT: Duration = Duration::from_secs(30);

const TOKEN: &str = "tok-SECRET-8c1f0a9e";

const FLOW: &str = r#"
id: crm
secrets:
  token: {env: CRM_TOKEN}
triggers: [{id: hook, type: webhook}]
nodes:
  - id: lookup
    type: http
    method: POST
    url: ${event.body.base}/contacts?api_key=${secrets.token}&page=1
    headers:
      authorization: Bearer ${secrets.token}
    body: '#{email: event.body.email, key: secrets.token}'
    retry: {max_attempts: 2, backoff: {initial: 100ms}}
    next: keep
  - {id: keep, type: map, mapping: {echo: nodes.lookup.body.echo}}
"#;

fn files_contain(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_contain(&path, needle));
        } else if std::fs::read(&path)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn a_secret_reaches_the_api_it_is_for_and_nothing_weir_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "crm.yaml", FLOW);
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[("CRM_TOKEN", TOKEN)]);
    let api = Api::new(&daemon);
    let server = FakeServer::start();

    let (ok, _) = run_and_event(&api.hook(
        "/hooks/default/crm/hook",
        &json!({"base": server.base(), "email": "a@b.c"}),
        &[],
    ));
    let ok = api.wait_for(&ok, "succeeded");
    let sent = &server.requests_to("/contacts")[0];
    assert_eq!(
        sent.query.as_deref(),
        Some(format!("api_key={TOKEN}&page=1").as_str())
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(sent.json()["key"], TOKEN);
    // The answer echoed it: what weir keeps shows its name instead.
    let output = &node(&ok, "lookup")["output"];
    assert_eq!(output["body"]["echo"]["key"], "[secrets.token]", "{ok:#}");
    assert_eq!(
        node(&ok, "keep")["output"]["echo"]["key"],
        "[secrets.token]"
    );

    // A failing API: the error names the URL without its query's values.
    server.set_status(500);
    let (failed, _) = run_and_event(&api.hook(
        "/hooks/default/crm/hook",
        &json!({"base": server.base(), "email": "b@b.c"}),
        &[],
    ));
    let failed = api.wait_finished(&failed);
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let error = node(&failed, "lookup")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("/contacts?api_key=…&page=…"), "{error}");
    assert!(error.contains("answered 500"), "{error}");

    let flow = api.get_ok("/api/v1/flows/crm");
    let list = api.list("limit=50");
    let data = daemon.data.clone();
    daemon.weir.terminate();
    let done = daemon.weir.finish(TIMEOUT);
    assert!(
        done.stderr.contains("will retry"),
        "the retry was logged: {done}"
    );
    for (what, text) in [
        ("a run", ok.to_string()),
        ("the failed run", failed.to_string()),
        ("the runs list", list.to_string()),
        ("the flows API", flow.to_string()),
        ("the log", done.stderr.clone()),
    ] {
        assert!(!text.contains(TOKEN), "the secret is in {what}: {text}");
    }
    let found = files_contain(&data, TOKEN.as_bytes());
    assert!(
        found.is_empty(),
        "the secret is in the data folder: {found:?}"
    );
}

#[test]
fn secret_mistakes_are_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(
        &flows,
        "unset.yaml",
        &FLOW
            .replace("id: crm", "id: unset")
            .replace("CRM_TOKEN", "NEVER_SET_TOKEN_VAR"),
    );
    write_flow(
        &flows,
        "typo.yaml",
        &FLOW
            .replace("id: crm", "id: typo")
            .replace("Bearer ${secrets.token}", "Bearer ${secrets.tokn}"),
    );
    write_flow(
        &flows,
        "leak.yaml",
        &FLOW.replace("id: crm", "id: leak").replace(
            "mapping: {echo: nodes.lookup.body.echo}",
            "mapping: {copy: secrets.token}",
        ),
    );
    let done = weir_testkit::Weir::spawn_with(
        dir.path(),
        "validate",
        &["validate", flows.to_str().unwrap()],
        &[("CRM_TOKEN", TOKEN)],
    )
    .finish(TIMEOUT);
    assert_eq!(done.code, Some(1), "{done}");
    assert!(
        done.stdout.contains("unset.yaml:4:")
            && done
                .stdout
                .contains("the environment variable `NEVER_SET_TOKEN_VAR` is not set"),
        "{done}"
    );
    assert!(
        done.stdout.contains("typo.yaml:")
            && done.stdout.contains(
                "`secrets.tokn`: the flow declares no secret 'tokn'; did you mean `secrets.token`?"
            ),
        "{done}"
    );
    assert!(
        done.stdout.contains("leak.yaml:") && done.stdout.contains("unknown variable `secrets`"),
        "only requests may read secrets: {done}"
    );
}
