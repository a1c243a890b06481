//! Helpers for the end-to-end tests that start the real `weir` binary.
//!
//! - [`TestServer`]: an HTTP server on 127.0.0.1:0 that records every
//!   request (path, `Idempotency-Key`, body, arrival time) and can answer 503
//!   to the first N requests, or never answer them
//! - [`write_flow`]: a flow YAML file in a temp folder
//! - [`Weir`]: a `weir` child process whose output goes to files; killed
//!   (SIGKILL) when dropped, so a failing assertion leaves no process behind
//! - [`wait_until`]: polls a condition every 20 ms up to a deadline
//! - [`Api`]: a blocking client for a daemon's HTTP API, answering [`Answer`]s

#![allow(clippy::unwrap_used)]
// tests: a failed unwrap is a failed test

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// How often [`wait_until`] and [`Weir::finish`] look again.
const POLL: Duration = Duration::from_millis(20);

// ---- the test server --------------------------------------------------------

/// One request the [`TestServer`] received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The `Idempotency-Key` header, if the request had one.
    pub idempotency_key: Option<String>,
    /// The body as JSON, as text if it is not JSON, null if empty.
    pub body: Value,
    /// When the request arrived.
    pub at: Instant,
    /// What the server answered; `None` for a request it never answers.
    pub status: Option<u16>,
}

#[derive(Default)]
struct Shared {
    /// Requests still to be answered with 503.
    fail_first: AtomicUsize,
    /// Requests still to be left unanswered.
    hold_first: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// An HTTP server on its own Tokio runtime. Any path answers
/// `200 {"id": "srv-<n>", "path": ..., "echo": <the request body>}`, where
/// `n` counts requests from 1, except the first N requests, which get
/// `503 try again later` ([`TestServer::failing_first`]) or no answer at all
/// ([`TestServer::holding_first`]).
pub struct TestServer {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    pub fn start() -> Self {
        Self::failing_first(0)
    }

    /// A server that answers 503 to its first `n` requests.
    pub fn failing_first(n: usize) -> Self {
        Self::new(n, 0)
    }

    /// A server that never answers its first `n` requests.
    pub fn holding_first(n: usize) -> Self {
        Self::new(0, n)
    }

    fn new(fail_first: usize, hold_first: usize) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("the listener's address");
        let shared = Arc::new(Shared {
            fail_first: AtomicUsize::new(fail_first),
            hold_first: AtomicUsize::new(hold_first),
            seen: Mutex::new(Vec::new()),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-server")
            .enable_all()
            .build()
            .expect("start the test server's runtime");
        let app = Router::new().fallback(handle).with_state(shared.clone());
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

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests so far to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.requests()
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
            .into_iter()
            .map(|r| r.idempotency_key)
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(json) => json,
        Err(_) if body.is_empty() => Value::Null,
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    let take = |counter: &AtomicUsize| {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    let hold = take(&shared.hold_first);
    let fail = !hold && take(&shared.fail_first);
    let status = if fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let n = {
        let mut seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.push(Seen {
            method: method.to_string(),
            path: uri.path().to_owned(),
            idempotency_key: headers
                .get("idempotency-key")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            body: body.clone(),
            at: Instant::now(),
            status: (!hold).then_some(status.as_u16()),
        });
        seen.len()
    };
    if hold {
        // Until the server shuts down.
        std::future::pending::<()>().await;
    }
    if fail {
        return (status, "try again later").into_response();
    }
    let answer = json!({"id": format!("srv-{n}"), "path": uri.path(), "echo": body});
    (status, axum::Json(answer)).into_response()
}

// ---- flows and processes ----------------------------------------------------

/// Writes `yaml` to `dir/name` and returns the file's path.
pub fn write_flow(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write the flow file");
    path
}

/// A path as a command-line argument (temp folders have UTF-8 names).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A running `weir` process. Its stdout and stderr go to files next to each
/// other in a folder of the test, so they can be read while it runs. Dropping
/// it kills the process (SIGKILL) if it still runs.
pub struct Weir {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How a `weir` process ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code; `None` if a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Panics if the output shows a Rust panic.
    pub fn assert_no_panic(&self) {
        assert!(
            !self.stdout.contains("panicked") && !self.stderr.contains("panicked"),
            "weir panicked:\n{self}"
        );
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Weir {
    /// Starts `weir ARGS...` in `dir`; `label` names its output files
    /// (`dir/label.stdout`, `dir/label.stderr`).
    pub fn spawn(dir: &Path, label: &str, args: &[&str]) -> Self {
        Self::spawn_with(dir, label, args, &[("WEIR_LOG", "warn")])
    }

    /// [`Weir::spawn`] with environment variables.
    pub fn spawn_with(dir: &Path, label: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let stdout = dir.join(format!("{label}.stdout"));
        let stderr = dir.join(format!("{label}.stderr"));
        let file = |p: &Path| std::fs::File::create(p).expect("create an output file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .args(args)
            .current_dir(dir)
            .env_remove("WEIR_FLOWS")
            .env_remove("WEIR_DATA")
            .env_remove("WEIR_LISTEN")
            // Requests to the test server must not go through a proxy.
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .stdin(Stdio::null())
            .stdout(file(&stdout))
            .stderr(file(&stderr))
            .spawn()
            .expect("start the weir binary");
        Self {
            child,
            label: label.to_owned(),
            stdout,
            stderr,
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Panics, with the process's output, if it has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("check the weir process") {
            panic!(
                "`weir` ({}) exited early with {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.label,
                self.stdout(),
                self.stderr()
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (a graceful stop).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed");
    }

    /// `kill -9` and reap the process.
    pub fn kill(&mut self) {
        // `kill` fails only if the process was already reaped.
        let _ = self.child.kill();
        self.child.wait().expect("reap the killed weir process");
    }

    /// Waits (up to `timeout`) for the process to exit; on timeout kills
    /// it and panics with its output.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("check the weir process") {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "`weir` ({}) did not exit within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.label,
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(POLL);
        };
        Finished {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Runs `weir ARGS...` in `dir` to its end (at most `timeout`).
pub fn run_weir(dir: &Path, label: &str, args: &[&str], timeout: Duration) -> Finished {
    Weir::spawn(dir, label, args).finish(timeout)
}

/// Calls `condition` every 20 ms until it holds; panics after `timeout`,
/// naming `what` was awaited.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A `weir serve` on 127.0.0.1:0, with its flows in `DIR/flows` and its
/// data in `DIR/data`.
pub struct Daemon {
    pub weir: Weir,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub flows: PathBuf,
    pub data: PathBuf,
}

impl Daemon {
    /// Starts the daemon and waits until it logs the address it serves on.
    pub fn start(dir: &Path, label: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let flows = dir.join("flows");
        let data = dir.join("data");
        std::fs::create_dir_all(&flows).expect("create the flows folder");
        let mut args = vec![
            "serve",
            "--flows",
            flows.to_str().expect("utf-8 path"),
            "--data",
            data.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut all_env = vec![("WEIR_LOG", "info")];
        all_env.extend_from_slice(env);
        let mut weir = Weir::spawn_with(dir, label, &args, &all_env);
        let mut address = None;
        wait_until(
            "the daemon logs its address",
            Duration::from_secs(20),
            || {
                weir.assert_running();
                let log = weir.stderr();
                address = log
                    .lines()
                    .find(|l| l.contains("weir is serving"))
                    .and_then(|l| l.split("address=").nth(1))
                    .and_then(|rest| rest.split_whitespace().next())
                    .map(str::to_owned);
                address.is_some()
            },
        );
        Self {
            weir,
            base: format!("http://{}", address.expect("an address")),
            flows,
            data,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

// ==== a client for the daemon's HTTP API ====================================

/// An HTTP answer: status, `Retry-After`, body as JSON (null if not JSON).
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
    pub text: String,
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.text)
    }
}

/// A client for one daemon's HTTP API; each test file adds the calls it
/// needs in its own `impl Api`.
pub struct Api {
    pub http: reqwest::blocking::Client,
    pub base: String,
}

impl Api {
    pub fn new(daemon: &Daemon) -> Self {
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            http,
            base: daemon.base.clone(),
        }
    }

    pub fn send(&self, request: reqwest::blocking::RequestBuilder) -> Answer {
        let response = request.send().expect("the daemon answers");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().expect("the answer's body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            retry_after,
            body,
            text,
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    /// POST with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
    }

    /// POST `body` as is, with `content_type` (none if empty) and headers.
    pub fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
        headers: &[(&str, String)],
    ) -> Answer {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body.to_owned());
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        self.send(request)
    }
}

// ==== for tests/serve_http.rs ================================================
// A server whose answers a test changes while it runs. Kept apart from
// `TestServer`, whose behaviour other tests rely on.

/// What a [`ScriptedServer`] does now.
struct Script {
    /// The status every request gets.
    status: std::sync::atomic::AtomicU16,
    /// How long each answer takes, in milliseconds.
    delay_ms: std::sync::atomic::AtomicU64,
    seen: Mutex<Vec<Seen>>,
    /// When each answer was sent, by path, in order.
    answered: Mutex<Vec<(String, Instant)>>,
}

/// An HTTP server on its own Tokio runtime. Any path answers, after the
/// current delay (none at first), the current status (200 at first) with
/// `{"id": "srv-<n>", "path": ..., "echo": <the request body>}`, where `n`
/// counts requests from 1. [`ScriptedServer::set_status`] and
/// [`ScriptedServer::set_delay`] change what later requests get.
pub struct ScriptedServer {
    addr: std::net::SocketAddr,
    script: Arc<Script>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ScriptedServer {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let addr = listener.local_addr().expect("the listener's address");
        let script = Arc::new(Script {
            status: std::sync::atomic::AtomicU16::new(200),
            delay_ms: std::sync::atomic::AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            answered: Mutex::new(Vec::new()),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("scripted-server")
            .enable_all()
            .build()
            .expect("start the scripted server's runtime");
        let app = Router::new()
            .fallback(answer_scripted)
            .with_state(script.clone());
        runtime.spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("hand the listener to Tokio");
            axum::serve(listener, app).await
        });
        Self {
            addr,
            script,
            runtime: Some(runtime),
        }
    }

    /// The status later requests get.
    pub fn set_status(&self, status: u16) {
        self.script.status.store(status, Ordering::SeqCst);
    }

    /// How long later requests wait for their answer.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.script.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests so far to `path`, in arrival order.
    pub fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.script
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests `path` received.
    pub fn count(&self, path: &str) -> usize {
        self.requests_to(path).len()
    }

    /// When the answers to `path` were sent (after their delay), in order.
    pub fn answered_at(&self, path: &str) -> Vec<Instant> {
        self.script
            .answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, at)| *at)
            .collect()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn answer_scripted(
    State(script): State<Arc<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(json) => json,
        Err(_) if body.is_empty() => Value::Null,
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    let status = StatusCode::from_u16(script.status.load(Ordering::SeqCst))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let delay = Duration::from_millis(script.delay_ms.load(Ordering::SeqCst));
    let path = uri.path().to_owned();
    let n = {
        let mut seen = script.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            idempotency_key: headers
                .get("idempotency-key")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            body: body.clone(),
            at: Instant::now(),
            status: Some(status.as_u16()),
        });
        seen.len()
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    script
        .answered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path.clone(), Instant::now()));
    let answer = json!({"id": format!("srv-{n}"), "path": path, "echo": body});
    (status, axum::Json(answer)).into_response()
}

// ==== end of the tests/serve_http.rs block ===================================

// ==== for tests/serve_triggers.rs ============================================
// A record API for poll triggers, in a module of its own so that its names
// and imports cannot clash with other blocks of this file.

pub mod records {
    //! [`RecordServer`]: an HTTP API whose records the test creates, changes
    //! and deletes while a poll trigger watches it.

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Instant;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};

    /// One request the [`RecordServer`] answered.
    #[derive(Clone, Debug)]
    pub struct Polled {
        pub path: String,
        /// The `since` query parameter as sent (`None` if absent).
        pub since: Option<String>,
        pub status: u16,
        /// What the answer's `next` was (cursor answers only).
        pub next: Option<u64>,
        pub at: Instant,
    }

    #[derive(Default)]
    struct Data {
        /// By id: the change number that last wrote the record, and it.
        records: BTreeMap<String, (u64, Value)>,
        /// The last change number handed out.
        changes: u64,
        polled: Vec<Polled>,
    }

    #[derive(Default)]
    struct Shared {
        data: Mutex<Data>,
        /// Answer every request with 500.
        failing: AtomicBool,
    }

    impl Shared {
        fn data(&self) -> MutexGuard<'_, Data> {
            self.data.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// A record's id as text: a string as it is, anything else as JSON.
    fn id_of(record: &Value) -> String {
        match &record["id"] {
            Value::String(s) => s.clone(),
            Value::Null => panic!("a record needs an `id`: {record}"),
            other => other.to_string(),
        }
    }

    /// An HTTP server on its own Tokio runtime holding records with an `id`.
    /// `GET /changes?since=N` answers `{"items": [records written by
    /// changes after N, oldest first], "next": <the last change number>}`
    /// (a missing or empty `since` is 0; deletions are not reported).
    /// `GET /twice` answers the JSON list of all records with each record
    /// listed twice (like overlapping pages of a feed). Any other path
    /// answers the JSON list of all records. While
    /// [`RecordServer::set_failing`] is on, everything answers 500.
    pub struct RecordServer {
        addr: std::net::SocketAddr,
        shared: Arc<Shared>,
        runtime: Option<tokio::runtime::Runtime>,
    }

    impl RecordServer {
        pub fn start(records: Vec<Value>) -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            listener
                .set_nonblocking(true)
                .expect("make the listener non-blocking");
            let addr = listener.local_addr().expect("the listener's address");
            let shared = Arc::new(Shared::default());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("record-server")
                .enable_all()
                .build()
                .expect("start the record server's runtime");
            let app = Router::new()
                .fallback(answer_records)
                .with_state(shared.clone());
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .expect("hand the listener to Tokio");
                axum::serve(listener, app).await
            });
            let server = Self {
                addr,
                shared,
                runtime: Some(runtime),
            };
            server.change(records, &[]);
            server
        }

        /// `http://127.0.0.1:PORT{path}`.
        pub fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        /// Creates or replaces each record of `puts` (by `id`) and deletes
        /// the records `deletes` names, all at once: no request sees only
        /// part of it.
        pub fn change(&self, puts: Vec<Value>, deletes: &[&str]) {
            let mut data = self.shared.data();
            for record in puts {
                data.changes += 1;
                let n = data.changes;
                data.records.insert(id_of(&record), (n, record));
            }
            for id in deletes {
                assert!(
                    data.records.remove(*id).is_some(),
                    "the test deletes a record `{id}` the server does not hold"
                );
            }
        }

        /// Creates or replaces one record.
        pub fn put(&self, record: Value) {
            self.change(vec![record], &[]);
        }

        /// Deletes one record.
        pub fn delete(&self, id: &str) {
            self.change(Vec::new(), &[id]);
        }

        /// While on, every request gets `500`.
        pub fn set_failing(&self, failing: bool) {
            self.shared.failing.store(failing, Ordering::SeqCst);
        }

        /// Every request so far, in arrival order.
        pub fn polled(&self) -> Vec<Polled> {
            self.shared.data().polled.clone()
        }

        /// The requests so far to `path`.
        pub fn polled_at(&self, path: &str) -> Vec<Polled> {
            self.polled()
                .into_iter()
                .filter(|p| p.path == path)
                .collect()
        }

        /// How many requests to `path` were answered 200.
        pub fn ok_count(&self, path: &str) -> usize {
            self.polled_at(path)
                .iter()
                .filter(|p| p.status == 200)
                .count()
        }
    }

    impl Drop for RecordServer {
        fn drop(&mut self) {
            if let Some(runtime) = self.runtime.take() {
                runtime.shutdown_background();
            }
        }
    }

    async fn answer_records(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
        let since = uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == "since")
                .map(|(_, v)| v.to_owned())
        });
        let mut data = shared.data();
        let mut polled = Polled {
            path: uri.path().to_owned(),
            since: since.clone(),
            status: 200,
            next: None,
            at: Instant::now(),
        };
        let answer = if shared.failing.load(Ordering::SeqCst) {
            polled.status = 500;
            (StatusCode::INTERNAL_SERVER_ERROR, "the record API is down").into_response()
        } else if uri.path() == "/changes" {
            let since: u64 = since.and_then(|s| s.parse().ok()).unwrap_or(0);
            let mut changed: Vec<&(u64, Value)> =
                data.records.values().filter(|(n, _)| *n > since).collect();
            changed.sort_by_key(|(n, _)| *n);
            let items: Vec<Value> = changed.into_iter().map(|(_, r)| r.clone()).collect();
            polled.next = Some(data.changes);
            axum::Json(json!({"items": items, "next": data.changes})).into_response()
        } else {
            let copies = if uri.path() == "/twice" { 2 } else { 1 };
            let items: Vec<Value> = data
                .records
                .values()
                .flat_map(|(_, r)| std::iter::repeat_n(r.clone(), copies))
                .collect();
            axum::Json(Value::Array(items)).into_response()
        };
        data.polled.push(polled);
        answer
    }
}

// ==== end of the tests/serve_triggers.rs block ===============================

// ==== for tests/deliver_http.rs ==============================================
// A webhook backend that keeps every request's headers and raw body, in a
// module of its own so that its names and imports cannot clash with other
// blocks of this file.

pub mod backend {
    //! [`Backend`]: an HTTP server standing in for the backend of HTTP
    //! deliveries. It records each request byte for byte (to check
    //! signatures) and answers what the test scripts: a default status, a
    //! queue of statuses for the next requests, or a rule; with a delay.

    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};

    /// One request the [`Backend`] received.
    #[derive(Clone, Debug)]
    pub struct Received {
        pub path: String,
        /// Every header as (lower-case name, value), in the order sent.
        pub headers: Vec<(String, String)>,
        /// The body, byte for byte.
        pub body: Vec<u8>,
        /// When it arrived.
        pub at: Instant,
        /// What the backend answered.
        pub status: u16,
        /// When the answer was sent (after the delay); `None` until then.
        pub answered: Option<Instant>,
    }

    impl Received {
        /// The value of header `name` (lower case); panics if it appears
        /// more than once.
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

        /// The `webhook-id` header (empty if absent).
        pub fn webhook_id(&self) -> &str {
            self.header("webhook-id").unwrap_or_default()
        }
    }

    /// Decides a request's status from it and the requests before it.
    pub type Rule = Arc<dyn Fn(&Received, &[Received]) -> u16 + Send + Sync>;

    struct Inner {
        status: u16,
        next: VecDeque<u16>,
        rule: Option<Rule>,
        delay: Duration,
        location: Option<String>,
        seen: Vec<Received>,
    }

    #[derive(Clone)]
    struct Shared(Arc<Mutex<Inner>>);

    impl Shared {
        fn lock(&self) -> MutexGuard<'_, Inner> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    /// An HTTP server on its own Tokio runtime. Any path answers
    /// `{"received": n}` (n counts requests from 1; with the
    /// [`Backend::set_location`] header, if set) with, in this order of
    /// precedence: the [`Backend::set_rule`] rule's status, the next status
    /// queued by [`Backend::answer_next`], or the [`Backend::set_status`]
    /// status (200 at first); after the [`Backend::set_delay`] delay.
    pub struct Backend {
        addr: SocketAddr,
        shared: Shared,
        runtime: Option<tokio::runtime::Runtime>,
    }

    impl Backend {
        pub fn start() -> Self {
            Self::start_on("127.0.0.1:0".parse().unwrap())
        }

        /// A backend on a given address (see [`Backend::unused_address`]).
        pub fn start_on(addr: SocketAddr) -> Self {
            let listener = std::net::TcpListener::bind(addr)
                .unwrap_or_else(|e| panic!("bind {addr} for the backend: {e}"));
            listener
                .set_nonblocking(true)
                .expect("make the listener non-blocking");
            let addr = listener.local_addr().expect("the listener's address");
            let shared = Shared(Arc::new(Mutex::new(Inner {
                status: 200,
                next: VecDeque::new(),
                rule: None,
                delay: Duration::ZERO,
                location: None,
                seen: Vec::new(),
            })));
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("backend")
                .enable_all()
                .build()
                .expect("start the backend's runtime");
            let app = Router::new().fallback(answer).with_state(shared.clone());
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .expect("hand the listener to Tokio");
                axum::serve(listener, app).await
            });
            Self {
                addr,
                shared,
                runtime: Some(runtime),
            }
        }

        /// An address on 127.0.0.1 where nothing listens (for now): a
        /// request to it is refused until a backend starts there.
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

        /// Later requests get the status `rule` gives them.
        pub fn set_rule(
            &self,
            rule: impl Fn(&Received, &[Received]) -> u16 + Send + Sync + 'static,
        ) {
            self.shared.lock().rule = Some(Arc::new(rule));
        }

        /// How long later requests wait for their answer.
        pub fn set_delay(&self, delay: Duration) {
            self.shared.lock().delay = delay;
        }

        /// Later answers carry `Location: {location}` (for redirects).
        pub fn set_location(&self, location: &str) {
            self.shared.lock().location = Some(location.to_owned());
        }

        /// Every request so far, in arrival order.
        pub fn received(&self) -> Vec<Received> {
            self.shared.lock().seen.clone()
        }

        /// The requests answered 2xx so far, in arrival order.
        pub fn confirmed(&self) -> Vec<Received> {
            self.received()
                .into_iter()
                .filter(|r| (200..300).contains(&r.status))
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

    impl Drop for Backend {
        fn drop(&mut self) {
            if let Some(runtime) = self.runtime.take() {
                runtime.shutdown_background();
            }
        }
    }

    async fn answer(
        State(shared): State<Shared>,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let mut request = Received {
            path: uri.path().to_owned(),
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
            status: 0,
            answered: None,
        };
        let (index, delay, location) = {
            let mut inner = shared.lock();
            let status = match inner.rule.clone() {
                Some(rule) => rule(&request, &inner.seen),
                None => match inner.next.pop_front() {
                    Some(status) => status,
                    None => inner.status,
                },
            };
            request.status = status;
            inner.seen.push(request);
            (inner.seen.len() - 1, inner.delay, inner.location.clone())
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let status = {
            let mut inner = shared.lock();
            let request = &mut inner.seen[index];
            request.answered = Some(Instant::now());
            request.status
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::Json(json!({"received": index + 1}));
        match location {
            Some(location) => (status, [("location", location)], body).into_response(),
            None => (status, body).into_response(),
        }
    }
}

// ==== end of the tests/deliver_http.rs block =================================
