//! `GET /openapi.json`: a valid OpenAPI 3.1 document (checked by
//! `openapi-spec-validator`) of every endpoint weir serves but `/mcp`,
//! and what a live daemon answers matches it: schemathesis (all of its
//! checks) runs against a daemon holding flows, runs, an integration, a
//! connection and an action, with an admin token. Both tools come from
//! PyPI into the venv `bash .ci/run` makes at `target/openapi-venv`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::{Api, Daemon, FakeServer, in_ci};

const SECRET: &str = "openapi-test-workspace-secret-0123456789abcdef";
const GOOD_KEY: &str = "sk_openapi_5c1e9a0d7b3f2468";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The venv's `bin` with both tools, or a loud skip (a failure under CI).
fn tools(test: &str) -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/openapi-venv/bin");
    let works = |tool: &str| {
        std::process::Command::new(bin.join(tool))
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !works("schemathesis") || !works("openapi-spec-validator") {
        let notice = format!(
            "SKIPPED {test}: schemathesis and openapi-spec-validator are not installed (bash .ci/run installs them in target/openapi-venv)"
        );
        assert!(!in_ci(), "{notice}");
        eprintln!("\n*** {notice} ***\n");
        return None;
    }
    Some(bin)
}

/// A daemon with something behind every endpoint: flows (api, webhook),
/// runs (one failed), an api-key integration whose app is a stand-in, an
/// action, and a tenant's connection.
struct World {
    daemon: Daemon,
    admin: String,
    _app: FakeServer,
    dir: tempfile::TempDir,
    runs: Vec<String>,
    connection: String,
}

fn world() -> World {
    let app = FakeServer::crm(GOOD_KEY);
    let dir = tempfile::tempdir().unwrap();
    let integrations = dir.path().join("integrations");
    let actions = dir.path().join("actions");
    std::fs::create_dir_all(&integrations).unwrap();
    std::fs::create_dir_all(&actions).unwrap();
    std::fs::write(
        integrations.join("crm.yaml"),
        format!(
            "key: crm\nbase_url: '{}'\nparameters: {{type: object, properties: {{region: {{type: string}}}}}}\nauth: {{type: api_key, in: header, name: X-API-Key}}\ntest: {{request: {{path: /me}}}}\nactions:\n  - key: create-contact\n    request: {{method: POST, path: /contacts, body: {{email: input.email}}}}\n    output: {{id: response.body.id}}\n",
            app.base()
        ),
    )
    .unwrap();
    std::fs::write(
        actions.join("create-contact.yaml"),
        "key: create-contact\ndescription: Creates a contact.\ninput_schema:\n  type: object\n  required: [email]\n  properties: {email: {type: string}}\noutput_schema:\n  type: object\n  properties: {id: {type: integer}}\n",
    )
    .unwrap();
    let daemon = Daemon::with_integrations(dir.path(), &integrations, &actions, SECRET);
    weir_testkit::write_flow(
        &daemon.flows,
        "greet.yaml",
        "id: greet\ntenants: [a]\ntriggers:\n  - {id: call, type: api, input_schema: {type: object, properties: {name: {type: string}}}}\n  - {id: hook, type: webhook}\nnodes:\n  - {id: hello, type: map, mapping: {hello: event.body.name}}\n",
    );
    weir_testkit::write_flow(
        &daemon.flows,
        "broken.yaml",
        "id: broken\ntenants: [a]\ntriggers: [{id: call, type: api}]\nnodes:\n  - {id: fails, type: map, mapping: {x: 'event.body.missing.field'}}\n",
    );
    let admin = weir_testkit::weir_token(
        dir.path(),
        &[("WEIR_WORKSPACE_SECRET", SECRET)],
        &["--admin"],
    );
    let api = Api::with_token(&daemon, &admin);
    weir_testkit::wait_until("the flows load", TIMEOUT, || {
        api.flows()["items"].as_array().unwrap().len() == 2
    });
    let mut runs = Vec::new();
    for flow in ["greet", "broken"] {
        let started = api.post(
            &format!("/api/v1/flows/{flow}/runs?tenant=a&wait=10"),
            &json!({"input": {"name": "Ada"}}),
        );
        assert!(started.status < 300, "{started}");
        runs.push(started.body["id"].as_str().unwrap().to_owned());
    }
    let made = api.post(
        "/api/v1/connections?tenant=a",
        &json!({"integration": "crm", "credentials": {"api_key": GOOD_KEY}}),
    );
    assert_eq!(made.body["state"], "ready", "{made}");
    World {
        daemon,
        admin,
        _app: app,
        dir,
        runs,
        connection: made.body["id"].as_str().unwrap().to_owned(),
    }
}

#[test]
fn the_document_describes_every_endpoint_and_validates() {
    let Some(bin) = tools("openapi document") else {
        return;
    };
    let w = world();
    // Public: no token.
    let answer = reqwest::blocking::get(w.daemon.url("/openapi.json")).unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/json");
    let doc: Value = answer.json().unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    let paths: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "/api/v1/flows",
        "/api/v1/flows/{flow}",
        "/api/v1/flows/{flow}/runs",
        "/api/v1/runs",
        "/api/v1/runs/{run}",
        "/api/v1/runs/{run}/cancel",
        "/api/v1/runs/{run}/retry",
        "/api/v1/outbox",
        "/api/v1/outbox/{id}/retry",
        "/api/v1/connections",
        "/api/v1/connections/{id}",
        "/api/v1/connections/{id}/test",
        "/api/v1/connections/{id}/refresh",
        "/api/v1/connections/{id}/actions/{key}",
        "/api/v1/connection-requests",
        "/api/v1/connection-requests/{id}",
        "/api/v1/actions",
        "/api/v1/actions/{key}/run",
        "/api/v1/integrations",
        "/api/v1/integrations/{key}",
        "/api/v1/tenants",
        "/api/v1/tenants/{tenant}",
        "/api/v1/cluster",
        "/hooks/{tenant}/{flow}/{trigger}",
        "/oauth2/callback",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ]
    .into_iter()
    .collect();
    assert_eq!(paths, expected);

    // The bearer scheme, required by default; public endpoints opt out.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    for public in [
        "/hooks/{tenant}/{flow}/{trigger}",
        "/healthz",
        "/oauth2/callback",
        "/openapi.json",
    ] {
        let op = doc["paths"][public]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap();
        assert!(
            op["security"].as_array().unwrap().contains(&json!({})),
            "{public}: {op:#}"
        );
    }
    // Every API operation says what its refusals look like.
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            if path.starts_with("/api/v1/") {
                assert!(
                    op.get("security").is_none(),
                    "{method} {path} is not behind the token"
                );
                for status in ["400", "401", "403", "413"] {
                    assert_eq!(
                        op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
            assert!(
                op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|s| s.starts_with('2') || s.starts_with('3')),
                "{method} {path}"
            );
        }
    }
    assert_eq!(operations, 36);
    // Types, not free-form objects: a run's fields and statuses.
    let run = &doc["components"]["schemas"]["RunView"];
    assert!(
        run["required"]
            .as_array()
            .unwrap()
            .contains(&json!("status")),
        "{run:#}"
    );
    let status = &doc["components"]["schemas"]["RunStatus"];
    assert_eq!(
        status["enum"],
        json!([
            "queued",
            "running",
            "waiting",
            "succeeded",
            "failed",
            "cancelled"
        ])
    );

    let file = w.dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    weir_testkit::peer_output(
        std::process::Command::new(bin.join("openapi-spec-validator")).arg(&file),
        "openapi-spec-validator (it refused the document)",
    );
}

#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let Some(bin) = tools("schemathesis") else {
        return;
    };
    let mut w = world();
    let report = w.dir.path().join("schemathesis");
    // The committed settings, and the world's records as dictionaries.
    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/openapi/schemathesis.toml");
    let mut config = std::fs::read_to_string(settings).unwrap();
    let list = |values: &[&str]| serde_json::to_string(values).unwrap();
    let runs: Vec<&str> = w.runs.iter().map(String::as_str).collect();
    config.push_str(&format!(
        "\n[dictionaries.flows]\nvalues = {}\n[dictionaries.runs]\nvalues = {}\n[dictionaries.ids]\nvalues = {}\n[dictionaries.keys]\nvalues = {}\n[dictionaries.tenants]\nvalues = {}\n\n[parameters]\n\"path.flow\" = {{dictionary = \"flows\", probability = 0.5}}\n\"path.run\" = {{dictionary = \"runs\", probability = 0.5}}\n\"path.id\" = {{dictionary = \"ids\", probability = 0.5}}\n\"path.key\" = {{dictionary = \"keys\", probability = 0.5}}\n\"path.tenant\" = {{dictionary = \"tenants\", probability = 0.5}}\n\"header.X-Weir-Tenant\" = {{dictionary = \"tenants\", probability = 0.5}}\n",
        list(&["greet", "broken"]),
        list(&runs),
        list(&[&w.connection]),
        list(&["create-contact", "crm"]),
        list(&["a"]),
    ));
    let config_file = w.dir.path().join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    let out = std::process::Command::new(bin.join("schemathesis"))
        .current_dir(w.dir.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .args([
            "--config-file",
            config_file.to_str().unwrap(),
            "run",
            &w.daemon.url("/openapi.json"),
            "--checks",
            "all",
            "--header",
            &format!("Authorization: Bearer {}", w.admin),
            "--max-examples",
            "40",
            "--max-time",
            "75",
            // One worker: the run stays within its time and Python 3.11's
            // parser is not shared between threads.
            "--workers",
            "1",
            "--seed",
            "1",
            "--no-color",
            "--report-dir",
            report.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It tested every operation (all but /openapi.json itself, which
    // schemathesis leaves out).
    assert!(stdout.contains("Tested: 35"), "{stdout}");
    // Nothing it sent made weir panic or stop.
    w.daemon.weir.assert_running();
    assert!(!w.daemon.weir.stderr().contains("panicked"));
}
