//! A blocking client for one daemon's HTTP API: raw calls that answer an
//! [`Answer`], and the calls tests make again and again (a webhook that
//! must be accepted, waiting for a run, the outbox, metrics).

use std::time::Duration;

use serde_json::{Value, json};

use crate::process::{Daemon, wait_until};

/// How long [`Api::wait_for`] waits for a run (a debug build on a loaded
/// machine).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP answer: status, `Retry-After`, body as JSON (null if not JSON)
/// and as text.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    /// `WWW-Authenticate`, if any.
    pub www_authenticate: Option<String>,
    /// `content-type`, if any.
    pub content_type: Option<String>,
    pub body: Value,
    pub text: String,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.text)
    }
}

impl Answer {
    /// Asserts the JSON error shape `{"error": {"code", "message"}}` with
    /// this status and code; answers the message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{self}");
        assert!(
            self.content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "not JSON: {:?} {self}",
            self.content_type
        );
        assert_eq!(self.body["error"]["code"], code, "{self}");
        let message = self.body["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {self}"));
        assert!(!message.is_empty(), "{self}");
        message.to_owned()
    }
}

/// A client for one daemon's HTTP API.
pub struct Api {
    pub http: reqwest::blocking::Client,
    pub base: String,
}

impl Api {
    pub fn new(daemon: &Daemon) -> Self {
        Self::at(&daemon.base)
    }

    /// A client for the daemon at `base` (`http://127.0.0.1:PORT`).
    pub fn at(base: &str) -> Self {
        Self::build(base, None)
    }

    /// A client that sends `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(daemon: &Daemon, token: &str) -> Self {
        Self::build(&daemon.base, Some(token))
    }

    fn build(base: &str, token: Option<&str>) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            http,
            base: base.to_owned(),
        }
    }

    /// Sends a request; the daemon must answer (any status).
    pub fn send(&self, request: reqwest::blocking::RequestBuilder) -> Answer {
        self.try_send(request).expect("the daemon answers")
    }

    /// Sends a request; an error if the daemon cannot be reached.
    pub fn try_send(&self, request: reqwest::blocking::RequestBuilder) -> reqwest::Result<Answer> {
        let response = request.send()?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (retry_after, content_type) = (header("retry-after"), header("content-type"));
        let www_authenticate = header("www-authenticate");
        let text = response.text()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            retry_after,
            www_authenticate,
            content_type,
            body,
            text,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(self.url(path)))
    }

    /// `GET path`, which must answer 2xx: its JSON (or its text as a JSON
    /// string).
    pub fn get_ok(&self, path: &str) -> Value {
        let a = self.get(path);
        assert!((200..300).contains(&a.status), "GET {path}: {a}");
        if a.body.is_null() {
            Value::String(a.text)
        } else {
            a.body
        }
    }

    /// POST with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.json_post(path, body))
    }

    fn json_post(&self, path: &str, body: &Value) -> reqwest::blocking::RequestBuilder {
        self.http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// POST `body` as is, with `content_type` (none if empty) and headers.
    pub fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
        headers: &[(&str, String)],
    ) -> Answer {
        let mut request = self.http.post(self.url(path)).body(body.to_owned());
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        self.send(request)
    }

    /// A webhook with a JSON body and headers, to a `/hooks/...` path.
    pub fn hook(&self, path: &str, body: &Value, headers: &[(&str, String)]) -> Answer {
        self.post_raw(path, "application/json", &body.to_string(), headers)
    }

    /// A webhook to `/hooks/default/{flow}/hook`; an error if the daemon
    /// cannot be reached.
    pub fn try_hook(&self, flow: &str, body: &Value) -> reqwest::Result<Answer> {
        self.try_send(self.json_post(&format!("/hooks/default/{flow}/hook"), body))
    }

    /// A webhook to `/hooks/default/{flow}/hook` that must be accepted:
    /// its `(run_id, event_id)`.
    pub fn accepted(&self, flow: &str, body: &Value) -> (String, String) {
        let a = self.post(&format!("/hooks/default/{flow}/hook"), body);
        run_and_event(&a)
    }

    /// `GET /api/v1/runs/{id}`, which must answer 200.
    pub fn run(&self, id: &str) -> Value {
        let a = self.get(&format!("/api/v1/runs/{id}"));
        assert_eq!(a.status, 200, "GET run {id}: {a}");
        a.body
    }

    /// Polls a run until its status is `status`; panics if it finishes
    /// otherwise or takes longer than [`RUN_TIMEOUT`].
    pub fn wait_for(&self, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        wait_until(&format!("run {id} is {status}"), RUN_TIMEOUT, || {
            last = self.run(id);
            let finished = ["succeeded", "failed", "cancelled"]
                .iter()
                .any(|s| last["status"] == *s);
            assert!(
                last["status"] == status || !finished,
                "run {id} ended other than {status}: {last:#}"
            );
            last["status"] == status
        });
        last
    }

    /// Polls a run until it finished, however.
    pub fn wait_finished(&self, id: &str) -> Value {
        let mut last = Value::Null;
        wait_until(&format!("run {id} finishes"), RUN_TIMEOUT, || {
            last = self.run(id);
            ["succeeded", "failed", "cancelled"]
                .iter()
                .any(|s| last["status"] == *s)
        });
        last
    }

    /// `GET /api/v1/runs?{query}`, which must answer 200.
    pub fn list(&self, query: &str) -> Value {
        let a = self.get(&format!("/api/v1/runs?{query}"));
        assert_eq!(a.status, 200, "list runs ?{query}: {a}");
        a.body
    }

    /// The ids of `GET /api/v1/runs?{query}` (one page, up to 500).
    pub fn ids(&self, query: &str) -> Vec<String> {
        ids_of(&self.list(&format!("{query}&limit=500")))
    }

    /// `GET /api/v1/flows`, which must answer 200.
    pub fn flows(&self) -> Value {
        let a = self.get("/api/v1/flows");
        assert_eq!(a.status, 200, "GET flows: {a}");
        a.body
    }

    /// `GET /api/v1/outbox`, which must answer 200.
    pub fn outbox(&self) -> Value {
        let a = self.get("/api/v1/outbox");
        assert_eq!(a.status, 200, "GET /api/v1/outbox: {a}");
        a.body
    }

    /// The entry of `target` (`amqp`, `http`) in `GET /api/v1/outbox`.
    pub fn outbox_target(&self, target: &str) -> Value {
        let outbox = self.outbox();
        outbox["targets"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["target"] == target))
            .cloned()
            .unwrap_or_else(|| panic!("no {target} target in the outbox: {outbox:#}"))
    }

    /// `POST /api/v1/outbox/{id}/retry`.
    pub fn retry_delivery(&self, id: &str) -> Answer {
        self.post(&format!("/api/v1/outbox/{id}/retry"), &json!({}))
    }

    /// `GET /metrics` as text.
    pub fn metrics(&self) -> String {
        let a = self.get("/metrics");
        assert_eq!(a.status, 200, "GET /metrics: {a}");
        a.text
    }
}

/// The ids of a runs list.
pub fn ids_of(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {list:#}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The `(run_id, event_id)` of a webhook's 202.
pub fn run_and_event(a: &Answer) -> (String, String) {
    assert_eq!(a.status, 202, "expected 202: {a}");
    let field = |name: &str| {
        a.body[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("no {name}: {a}"))
            .to_owned()
    };
    (field("run_id"), field("event_id"))
}

/// A node of a run object, by id.
pub fn node<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"] == id))
        .unwrap_or_else(|| panic!("no node {id} in {run:#}"))
}
