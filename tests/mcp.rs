//! `/mcp` with the official MCP Python SDK (`mcp==2.3.0`, in the venv
//! `bash .ci/run` makes at `target/mcp-venv`) as the client, in both
//! protocol modes: a tenant's tools, calls through the same path as the
//! HTTP API, tool errors a person can act on, and the token rules.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::{Api, Daemon, FakeServer, in_ci};

const SECRET: &str = "mcp-test-workspace-secret-0123456789abcdef";
const GOOD_KEY: &str = "sk_mcp_2b7d41c9e0aa5f13";
const TIMEOUT: Duration = Duration::from_secs(30);

/// The venv's Python with the SDK, or a loud skip (a failure under CI).
fn python(test: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/mcp-venv/bin/python");
    let works = std::process::Command::new(&python)
        .args(["-c", "import mcp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        let notice = format!(
            "SKIPPED {test}: the MCP Python SDK is not installed (bash .ci/run installs mcp==2.3.0 in target/mcp-venv)"
        );
        assert!(!in_ci(), "{notice}");
        eprintln!("\n*** {notice} ***\n");
        return None;
    }
    Some(python)
}

/// Runs tests/mcp/client.py: the SDK lists the tools and makes the calls.
fn sdk(python: &Path, url: &str, token: &str, mode: &str, calls: Value) -> Value {
    drive(
        python,
        json!({"url": url, "token": token, "mode": mode, "calls": calls}),
    )
}

fn drive(python: &Path, spec: Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/mcp/client.py");
    let out = weir_testkit::peer_output(
        std::process::Command::new(python)
            .arg(script)
            .arg(spec.to_string()),
        "the MCP client",
    );
    serde_json::from_slice(&out).unwrap()
}

fn token(dir: &Path, who: &[&str]) -> String {
    weir_testkit::weir_token(dir, &[("WEIR_WORKSPACE_SECRET", SECRET)], who)
}

/// An HS256 token signed with the workspace secret, with these claims
/// (weir's own tokens always carry `aud`).
fn signed(claims: Value) -> String {
    weir_testkit::signed_token(SECRET, &claims)
}

#[test]
fn agents_get_the_tenants_tools_over_mcp() {
    let Some(python) = python("mcp") else {
        return;
    };
    let app = FakeServer::crm(GOOD_KEY);
    let dir = tempfile::tempdir().unwrap();
    let integrations = dir.path().join("integrations");
    let actions = dir.path().join("actions");
    std::fs::create_dir_all(&integrations).unwrap();
    std::fs::create_dir_all(&actions).unwrap();
    std::fs::write(
        integrations.join("crm.yaml"),
        format!(
            "key: crm\nbase_url: '{}'\nauth: {{type: api_key, in: header, name: X-API-Key}}\ntest: {{request: {{path: /me}}}}\nactions:\n  - key: create-contact\n    request: {{method: POST, path: /contacts, body: {{email: input.email}}}}\n    output: {{id: response.body.id}}\n",
            app.base()
        ),
    )
    .unwrap();
    std::fs::write(
        actions.join("create-contact.yaml"),
        "key: create-contact\ndescription: Creates a contact in the customer's CRM.\ninput_schema:\n  type: object\n  required: [email]\n  properties: {email: {type: string}}\noutput_schema:\n  type: object\n  required: [id]\n  properties: {id: {type: integer}}\n",
    )
    .unwrap();
    let mut daemon = Daemon::with_integrations(dir.path(), &integrations, &actions, SECRET);
    weir_testkit::write_flow(
        &daemon.flows,
        "greet.yaml",
        "id: greet\nname: Greet someone\ntenants: [a]\ntriggers: [{id: call, type: api, input_schema: {type: object, required: [name], properties: {name: {type: string}}}}]\nnodes:\n  - {id: hello, type: map, mapping: {hello: event.body.name}}\n",
    );
    let a_token = token(dir.path(), &["--tenant", "a"]);
    let a = Api::with_token(&daemon, &a_token);
    weir_testkit::wait_until("the flow loads", TIMEOUT, || {
        a.flows()["items"].as_array().unwrap().len() == 1
    });
    let made = a.post(
        "/api/v1/connections",
        &json!({"integration": "crm", "credentials": {"api_key": GOOD_KEY}}),
    );
    assert_eq!(made.body["state"], "ready", "{made}");
    let url = format!("{}/mcp", daemon.base);
    let calls = json!([
        ["create-contact", {"email": "ada@example.com"}],
        ["create-contact", {"name": 5}],
        ["flow.greet", {"name": "Ada"}],
        ["delete-everything", {}],
        ["flow.greet", {"name": 5}]
    ]);

    // Both protocol modes: sessions (2025-11-25) and stateless (2026-07-28).
    for mode in ["legacy", "2026-07-28"] {
        let before = app.count("/contacts");
        // Two calls with one idempotency key (per mode): one request.
        let once = json!({"weir/idempotency-key": format!("once-{mode}")});
        let mut calls = calls.clone();
        for _ in 0..2 {
            calls
                .as_array_mut()
                .unwrap()
                .push(json!(["create-contact", {"email": "bo@example.com"}, once]));
        }
        calls.as_array_mut().unwrap().extend([
            json!(["create-contact", {"email": "x@example.com"}, {"weir/idempotency-key": ""}]),
            json!(["flow.greet", {"name": "Ada"}, once]),
        ]);
        let out = sdk(&python, &url, &a_token, mode, calls);
        let expected = if mode == "legacy" { "2025-11-25" } else { mode };
        assert_eq!(out["protocol"], expected, "{out:#}");
        let names: Vec<&str> = out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["create-contact", "flow.greet"], "{out:#}");
        let tool = &out["tools"][0];
        assert_eq!(tool["inputSchema"]["required"], json!(["email"]), "{out:#}");
        assert_eq!(tool["outputSchema"]["required"], json!(["id"]), "{out:#}");
        assert!(
            tool["description"]
                .as_str()
                .unwrap()
                .contains("Creates a contact")
        );

        let created = &out["calls"][0];
        assert_ne!(created["isError"], true, "{created:#}");
        assert_eq!(
            created["structuredContent"],
            json!({"id": 7}),
            "{created:#}"
        );
        assert_eq!(created["content"][0]["text"], r#"{"id":7}"#, "{created:#}");

        let invalid = &out["calls"][1];
        assert_eq!(invalid["isError"], true, "{invalid:#}");
        let text = invalid["content"][0]["text"].as_str().unwrap();
        assert!(
            text.contains("/email") && text.contains("input_schema"),
            "{text}"
        );

        let greeted = &out["calls"][2];
        assert_eq!(
            greeted["structuredContent"]["status"], "succeeded",
            "{greeted:#}"
        );
        assert_eq!(
            greeted["structuredContent"]["output"],
            json!({"hello": "Ada"}),
            "{greeted:#}"
        );
        let run = a.run(greeted["structuredContent"]["run_id"].as_str().unwrap());
        assert_eq!(run["flow"], "greet");

        // The flow's tool takes its api trigger's input_schema, checked
        // before a run starts.
        assert_eq!(out["tools"][1]["inputSchema"]["required"], json!(["name"]));
        let refused = &out["calls"][4];
        assert_eq!(refused["isError"], true, "{refused:#}");
        assert!(
            refused["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("/name"),
            "{refused:#}"
        );
        let unknown = out["calls"][3]["exception"].as_str().unwrap_or_default();
        assert!(unknown.contains("no tool `delete-everything`"), "{out:#}");
        // The repeated key: the first call's run and answer, no second
        // request; a bad key, and a key on a flow tool, run nothing.
        let (first, again) = (&out["calls"][5], &out["calls"][6]);
        assert_eq!(first["structuredContent"], json!({"id": 7}), "{first:#}");
        assert_eq!(again["structuredContent"], json!({"id": 7}), "{again:#}");
        let run_id = first["_meta"]["weir/run-id"].as_str().unwrap();
        assert_eq!(again["_meta"]["weir/run-id"], run_id, "{out:#}");
        assert_eq!(a.run(run_id)["status"], "succeeded");
        assert_ne!(
            out["calls"][0]["_meta"]["weir/run-id"], run_id,
            "a call without a key is a run of its own"
        );
        for refused in [&out["calls"][7], &out["calls"][8]] {
            assert_eq!(refused["isError"], true, "{refused:#}");
            let text = refused["content"][0]["text"].as_str().unwrap();
            assert!(
                text.contains("weir/idempotency-key") && text.contains("nothing ran"),
                "{text}"
            );
        }
        // One request for the valid call, one for the two with a key, none
        // for the refused ones.
        assert_eq!(app.count("/contacts"), before + 2, "{mode}");
    }

    // The API checks the same schema: 422 with the pointer, no run.
    let runs = a.list("flow=greet")["items"].as_array().unwrap().len();
    let bad = a.post("/api/v1/flows/greet/runs", &json!({"input": {"name": 5}}));
    assert_eq!(bad.status, 422, "{bad}");
    assert_eq!(bad.body["error"]["details"][0]["pointer"], "/name", "{bad}");
    assert_eq!(
        a.list("flow=greet")["items"].as_array().unwrap().len(),
        runs
    );

    // Over stdio, through `weir mcp --stdio`: the same tools and calls.
    let weir = weir_testkit::process::weir_binary();
    let before = app.count("/contacts");
    let out = drive(
        &python,
        json!({
            "command": [weir, "mcp", "--stdio", "--token", a_token, "--server", daemon.base],
            "mode": "legacy",
            "calls": [["create-contact", {"email": "cy@example.com"}], ["create-contact", {}]],
        }),
    );
    let names: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["create-contact", "flow.greet"], "{out:#}");
    assert_eq!(
        out["calls"][0]["structuredContent"],
        json!({"id": 7}),
        "{out:#}"
    );
    assert_eq!(out["calls"][1]["isError"], true, "{out:#}");
    assert_eq!(app.count("/contacts"), before + 1);

    // Another tenant sees none of them, and cannot call them.
    let b_token = token(dir.path(), &["--tenant", "b"]);
    let out = sdk(
        &python,
        &url,
        &b_token,
        "legacy",
        json!([["create-contact", {"email": "x@example.com"}]]),
    );
    assert_eq!(out["tools"], json!([]), "{out:#}");
    let call = &out["calls"][0];
    assert_eq!(call["isError"], true, "{out:#}");
    assert!(
        call["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("tenant `b` has no connection"),
        "{out:#}"
    );

    // No token: 401 naming the protected-resource metadata (RFC 9728).
    let http = reqwest::blocking::Client::new();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let post = |bearer: Option<&str>| {
        let mut r = http
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        r.send().unwrap()
    };
    let refused = post(None);
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let metadata = format!("{}/.well-known/oauth-protected-resource", daemon.base);
    assert!(
        challenge.contains(&format!(r#"resource_metadata="{metadata}""#)),
        "{challenge}"
    );
    let document: Value = http.get(&metadata).send().unwrap().json().unwrap();
    assert_eq!(document["resource"], url.as_str(), "{document:#}");
    // A token without `aud` (valid for the API) is refused here.
    let now = chrono::Utc::now().timestamp();
    let no_audience = signed(json!({"iss": "default", "exp": now + 300, "tenant": "a"}));
    assert_eq!(a_get_with(&daemon, &no_audience), 200, "the API takes it");
    let refused = post(Some(&no_audience));
    assert_eq!(refused.status(), 401);
    assert!(refused.text().unwrap().contains("aud"));

    // Bad input gets the protocol's own errors, never a 500 or a hang.
    let raw = |body: Vec<u8>, headers: &[(&str, &str)]| {
        let mut r = http
            .post(&url)
            .bearer_auth(&a_token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .timeout(TIMEOUT)
            .body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let answer = r.send().unwrap();
        let status = answer.status().as_u16();
        (status, answer.text().unwrap())
    };
    let code = |text: &str| -> i64 {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|_| {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .find_map(|d| serde_json::from_str(d.trim()).ok())
                .unwrap_or_else(|| panic!("not JSON-RPC: {text}"))
        });
        v["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no error in {v}"))
    };
    let (status, text) = raw(b"{\"jsonrpc\": \"2.0\", \"id\": 1,".to_vec(), &[]);
    assert_eq!((status, code(&text)), (400, -32700), "{text}");
    let (status, text) = raw(
        br#"[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]"#.to_vec(),
        &[],
    );
    assert_eq!((status, code(&text)), (400, -32600), "{text}");
    let (status, text) = raw(br#"{"id": 1, "method": "tools/list"}"#.to_vec(), &[]);
    assert_eq!((status, code(&text)), (400, -32600), "{text}");
    let (status, text) = raw(vec![b' '; 2 << 20], &[]);
    assert_eq!((status, code(&text)), (413, -32600), "{text}");
    // An unknown method, in a stateless (2026-07-28) request.
    let unknown = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/destroy", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}}});
    let (status, text) = raw(
        unknown.to_string().into_bytes(),
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/destroy"),
        ],
    );
    assert!(status < 500, "{status} {text}");
    assert_eq!(code(&text), -32601, "{text}");
    // DNS rebinding: another Host, or a browser page of another origin,
    // is refused; a local page is not.
    let initialize = initialize.to_string().into_bytes();
    let (status, _) = raw(initialize.clone(), &[("host", "evil.example")]);
    assert_eq!(status, 403);
    let (status, _) = raw(initialize.clone(), &[("origin", "https://evil.example")]);
    assert_eq!(status, 403);
    let (status, text) = raw(initialize, &[("origin", "http://localhost:3000")]);
    assert_eq!(status, 200, "{text}");
    daemon.weir.assert_running();
    assert!(!daemon.weir.stderr().contains("panicked"));
    assert!(!daemon.weir.stderr().contains(GOOD_KEY));
}

/// The status of `GET /api/v1/runs` with `token`.
fn a_get_with(daemon: &Daemon, token: &str) -> u16 {
    Api::with_token(daemon, token).get("/api/v1/runs").status
}

/// Without a workspace secret (loopback only) `/mcp` asks for no token and
/// acts for the `default` tenant; so does `weir mcp --stdio` without one.
#[test]
fn an_open_daemon_serves_the_default_tenants_tools() {
    let Some(python) = python("mcp open") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    weir_testkit::write_flow(
        &daemon.flows,
        "hello.yaml",
        "id: hello\ntriggers: [{id: call, type: api}]\nnodes:\n  - {id: hi, type: map, mapping: {hi: event.body.who}}\n",
    );
    let api = Api::new(&daemon);
    weir_testkit::wait_until("the flow loads", TIMEOUT, || {
        api.flows()["items"].as_array().unwrap().len() == 1
    });
    let weir = weir_testkit::process::weir_binary();
    let out = drive(
        &python,
        json!({
            "command": [weir, "mcp", "--stdio", "--server", daemon.base],
            "mode": "legacy",
            "calls": [["flow.hello", {"who": "you"}]],
        }),
    );
    assert_eq!(out["tools"][0]["name"], "flow.hello", "{out:#}");
    assert_eq!(
        out["calls"][0]["structuredContent"]["output"],
        json!({"hi": "you"}),
        "{out:#}"
    );
}
