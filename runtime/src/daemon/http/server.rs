//! The accept loop: hyper connections with a connection limit and the
//! timeouts that keep slow, half-open and idle clients from holding the
//! daemon's connections (and file descriptors) forever.
//!
//! - A connection that sends no complete request head within
//!   `header_timeout` is closed: this bounds a slow request head and an
//!   idle keep-alive connection alike (hyper's header-read timer also runs
//!   while a connection waits for its next request).
//! - A body must arrive within `body_timeout` (enforced where bodies are
//!   read: [`super::read_body`]).
//! - Past `max_connections` open connections, a new one is answered `503`
//!   with `Retry-After` and closed, so that the daemon keeps descriptors for
//!   its storage and keeps accepting once connections end.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{error, warn};

/// What bounds each connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Until a request head is complete (and between requests on a
    /// keep-alive connection).
    pub header_timeout: Duration,
    /// Until a request body is complete.
    pub body_timeout: Duration,
}

/// hyper's buffer for a request head: large enough that weir's own limit
/// on header size ([`super::MAX_HEADER_BYTES`]) answers first, with a JSON
/// error.
const HEAD_BUFFER: usize = 256 << 10;

/// How long a refused connection may take to take its `503`.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting and lets open requests finish, at most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    // HTTP/1.1 only: detecting HTTP/2 (h2c) waits for a connection's first
    // bytes without a timeout, which is what a slow client exploits.
    // Webhook senders and API clients speak HTTP/1.1; TLS (and HTTP/2 with
    // it) ends at a proxy in front of weir.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HEAD_BUFFER);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to free.
                if last_accept_error.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    error!(error = %e, "cannot accept connections; trying again (raise the file descriptor limit, or lower --max-connections)");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = router
            .clone()
            .map_request(|request: hyper::Request<Incoming>| request.map(Body::new));
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are the client's (a reset, a timeout): nothing to do.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still open at the end of the grace period are cut off");
    }
}

/// Errors of one connection that `accept` reports; the next accept works.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Answers a connection past the limit `503` and closes it.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str =
        r#"{"error":{"code":"overloaded","message":"too many open connections; try again later"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
    crate::metrics::connection_refused();
}

/// The file descriptors this process may open, raised to the hard limit
/// first (as Go's runtime does): each connection needs one.
pub fn descriptor_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(max)) = (limit.current, limit.maximum)
        && current < max
    {
        limit.current = Some(max);
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit.current = Some(current);
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// Descriptors kept for everything but connections: storage, flow files,
/// outgoing requests, the broker.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// The connection limit when none is given: the descriptors left after
/// [`RESERVED_DESCRIPTORS`], at most 10,000, at least 16.
pub fn default_max_connections(descriptors: u64) -> usize {
    descriptors
        .saturating_sub(RESERVED_DESCRIPTORS)
        .clamp(16, 10_000) as usize
}
