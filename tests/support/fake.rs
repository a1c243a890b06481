//! [`FakeServer`]: the one fake HTTP server of the tests — the external API
//! an `http` node calls, the backend of HTTP deliveries. It records every
//! request byte for byte and answers what the test scripts.
//!
//! What a request gets, in this order of precedence: the [`FakeServer::set_rule`]
//! rule's status; no answer at all, for the next [`FakeServer::hold_next`]
//! requests; the next status queued by [`FakeServer::answer_next`]; the
//! [`FakeServer::set_status`] status (200 at first). After the
//! [`FakeServer::set_delay`] delay, with the [`FakeServer::set_header`]
//! headers, and a body: the [`FakeServer::set_body`] body, else
//! `{"id": "srv-<n>", "path": ..., "echo": <the request body>, "received": n}`
//! (`n` counts requests from 1).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request the [`FakeServer`] received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// Every header as (lower-case name, value), in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body, byte for byte.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
    /// What the server answered; `None` for a request it holds unanswered.
    pub status: Option<u16>,
    /// When the answer was sent (after the delay); `None` until then.
    pub answered: Option<Instant>,
}

impl Received {
    /// The value of header `name` (lower case); panics if it appears more
    /// than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self
            .headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        assert!(
            values.next().is_none(),
            "header `{name}` sent more than once: {:?}",
            self.headers
        );
        first
    }

    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as JSON, as text if it is not JSON, null if empty.
    pub fn body_value(&self) -> Value {
        body_value(&self.body)
    }

    /// The `Idempotency-Key` header.
    pub fn idempotency_key(&self) -> Option<String> {
        self.header("idempotency-key").map(str::to_owned)
    }

    /// The `webhook-id` header (empty if absent).
    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id").unwrap_or_default()
    }
}

fn body_value(body: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(json) => json,
        Err(_) if body.is_empty() => Value::Null,
        Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
    }
}

/// Decides a request's status from it and the requests before it.
pub type Rule = Arc<dyn Fn(&Received, &[Received]) -> u16 + Send + Sync>;

struct Inner {
    status: u16,
    next: VecDeque<u16>,
    hold: usize,
    rule: Option<Rule>,
    delay: Duration,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    seen: Vec<Received>,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An HTTP server on its own Tokio runtime, on 127.0.0.1; see the module.
pub struct FakeServer {
    addr: SocketAddr,
    shared: Shared,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeServer {
    /// A stand-in CRM: `GET /me` (200) and `POST /contacts` (201, `{"id":
    /// 7}`) for requests carrying `X-API-Key: key`; 401 without it, 404
    /// for anything else.
    pub fn crm(key: &'static str) -> Self {
        let app = Self::start();
        app.set_rule(move |r, _| match (r.method.as_str(), r.path.as_str()) {
            _ if r.header("x-api-key") != Some(key) => 401,
            ("GET", "/me") => 200,
            ("POST", "/contacts") => 201,
            _ => 404,
        });
        app.set_body(serde_json::json!({"id": 7}));
        app
    }

    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// A server on a given address (see [`FakeServer::unused_address`]).
    pub fn start_on(addr: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("bind {addr} for the fake server: {e}"));
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("the listener's address");
        let shared = Shared(Arc::new(Mutex::new(Inner {
            status: 200,
            next: VecDeque::new(),
            hold: 0,
            rule: None,
            delay: Duration::ZERO,
            headers: Vec::new(),
            body: None,
            seen: Vec::new(),
        })));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-server")
            .enable_all()
            .build()
            .expect("start the fake server's runtime");
        let app = Router::new().fallback(answer).with_state(shared.clone());
        runtime.spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("hand the listener to Tokio");
            axum::serve(listener, app).await
        });
        Self {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// An address on 127.0.0.1 where nothing listens (for now): a request
    /// to it is refused until a server starts there.
    pub fn unused_address() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().expect("the listener's address")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The status later requests get (when no rule or queued status
    /// applies).
    pub fn set_status(&self, status: u16) {
        self.shared.lock().status = status;
    }

    /// The next requests get these statuses, one each, in order.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.shared.lock().next.extend(statuses);
    }

    /// The next `n` requests are never answered (until the server stops).
    pub fn hold_next(&self, n: usize) {
        self.shared.lock().hold += n;
    }

    /// Later requests get the status `rule` gives them.
    pub fn set_rule(&self, rule: impl Fn(&Received, &[Received]) -> u16 + Send + Sync + 'static) {
        self.shared.lock().rule = Some(Arc::new(rule));
    }

    /// How long later requests wait for their answer.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }

    /// Later answers carry this header (`location`, `retry-after`, ...).
    pub fn set_header(&self, name: &str, value: &str) {
        self.shared.lock().headers.push((name.into(), value.into()));
    }

    /// Later answers have this JSON body.
    pub fn set_body(&self, body: Value) {
        self.shared.lock().body = Some(body);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().seen.clone()
    }

    /// The requests so far to `path`, in arrival order.
    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// How many requests `path` received.
    pub fn count(&self, path: &str) -> usize {
        self.requests_to(path).len()
    }

    /// The `Idempotency-Key` headers `path` received, in arrival order.
    pub fn idempotency_keys(&self, path: &str) -> Vec<Option<String>> {
        self.requests_to(path)
            .iter()
            .map(Received::idempotency_key)
            .collect()
    }

    /// When the answers to `path` were sent (after their delay), in order.
    pub fn answered_at(&self, path: &str) -> Vec<Instant> {
        self.requests_to(path)
            .iter()
            .filter_map(|r| r.answered)
            .collect()
    }

    /// The requests answered 2xx so far, in arrival order.
    pub fn confirmed(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }

    /// The requests so far with this `webhook-id`, in arrival order.
    pub fn with_id(&self, id: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.webhook_id() == id)
            .collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn answer(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = Received {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
        status: None,
        answered: None,
    };
    let (index, delay, extra, custom) = {
        let mut inner = shared.lock();
        let status = match inner.rule.clone() {
            Some(rule) => Some(rule(&request, &inner.seen)),
            None if inner.hold > 0 => {
                inner.hold -= 1;
                None
            }
            None => Some(inner.next.pop_front().unwrap_or(inner.status)),
        };
        request.status = status;
        inner.seen.push(request);
        (
            inner.seen.len() - 1,
            inner.delay,
            inner.headers.clone(),
            inner.body.clone(),
        )
    };
    let Some(status) = shared.lock().seen[index].status else {
        // Held: until the server shuts down.
        return std::future::pending::<Response>().await;
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    shared.lock().seen[index].answered = Some(Instant::now());
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let n = index + 1;
    let body = custom.unwrap_or_else(|| {
        json!({"id": format!("srv-{n}"), "path": uri.path(), "echo": body_value(&body), "received": n})
    });
    let mut response = (status, axum::Json(body)).into_response();
    for (name, value) in extra {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
