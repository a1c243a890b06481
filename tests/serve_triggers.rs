//! The triggers `weir serve` runs itself, end to end (docs/flow-format.md "Cron
//! semantics" and "Poll semantics"): cron instants fire once each,
//! across `kill -9` too, with `catch_up` deciding what happens to instants
//! missed while the daemon was down; `next_fire_at` in the flows API; cron
//! and poll triggers per tenant; poll triggers emit each (key, version)
//! once, across `kill -9`, in full-scan and cursor mode, with `baseline`,
//! `emit` and back-off on API errors.
//!
//! Layout: this file holds what both halves use (the runs API); the tests
//! are in `serve_triggers/cron.rs` and `serve_triggers/poll.rs`.
//!
//! Each test starts its own daemon on port 0 with a temp data folder, and
//! waits on the runs API against deadlines rather than fixed sleeps; the
//! only fixed sleeps are the down times of a killed daemon, which are what
//! the test measures.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

#[path = "serve_triggers/cron.rs"]
mod cron;
#[path = "serve_triggers/poll.rs"]
mod poll;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use weir_testkit::{Api, Daemon, write_flow};

/// Long enough for a debug build on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(20);

// ---- the runs API -----------------------------------------------------------

fn get(daemon: &Daemon, path: &str) -> Value {
    Api::new(daemon).get_ok(path)
}

/// Every run of `flow` (of `tenant` if given), oldest first.
fn runs(daemon: &Daemon, flow: &str, tenant: Option<&str>) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/runs?flow={flow}&limit=500");
        if let Some(tenant) = tenant {
            path.push_str(&format!("&tenant={tenant}"));
        }
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let page = get(daemon, &path);
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    all.reverse();
    all
}

fn time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("`{text}` is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// Panics unless a run's event has what every event has (docs/flow-format.md): an
/// `id` and a `received_at`.
fn assert_event_base(run: &Value) {
    let event = &run["event"];
    assert!(
        event["id"].as_str().is_some_and(|id| !id.is_empty()),
        "an event without an id: {run:#}"
    );
    time(&event["received_at"]);
}

/// Starts a daemon on the flows already written to `dir/flows`.
fn start(dir: &Path, label: &str) -> Daemon {
    Daemon::start(dir, label, &[], &[])
}

/// Writes a flow into `dir/flows`.
fn flow(dir: &Path, name: &str, yaml: &str) {
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, name, yaml);
}
