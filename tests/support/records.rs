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
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("hand the listener to Tokio");
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
