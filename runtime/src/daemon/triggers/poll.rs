//! A poll trigger for one tenant (or one connection, through which it
//! calls): calls an HTTP API every `every`, compares
//! the records with the versions it saw before, and starts a run for each
//! change. Each run is committed together with the seen-version update of
//! its record, so each (key, version) is emitted exactly once, across
//! crashes too. Polls of one trigger never overlap: one task, one loop.
//!
//! One poll, step by step ([`PollTask::poll`]): fetch the answer, read its
//! records and the next cursor, identify each record (its key and
//! version; a record whose key cannot be had is reported and skipped),
//! diff against what was seen, admit a run per change, and move the cursor
//! once every change is on disk.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rhai::Scope;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, warn};
use weir_nodes::TriggerKind;
use weir_nodes::backoff::Backoff;
use weir_nodes::script::{to_dynamic, to_json};
use weir_nodes::triggers::poll::Poll;
use weir_storage::{Commit, ConnectionRecord, SeenRecord, TriggerKey, Write};

use super::{Target, sleep_or_stop};
use crate::connect::connections::scope_value;
use crate::daemon::runs::{AdmitError, Runs, Submitted};
use crate::engine::Engine;
use crate::flow::Flow;

/// The longest wait after failed polls.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Why a poll failed (it is tried again with backoff).
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("{0}")]
    Request(String),
    #[error("`items`: {0}")]
    Items(String),
    #[error("`cursor`: {0}")]
    Cursor(String),
    #[error("a change cannot start its run: {0}")]
    Admit(String),
    #[error(transparent)]
    Storage(#[from] weir_storage::Error),
}

/// How a poll that did not fail ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Every change started its run (or was recorded); the cursor moved.
    Done,
    /// The backlog was full: this many changes wait for the next poll, at
    /// the usual interval (the cursor did not move).
    Deferred(usize),
    /// Some changes could not start their runs (the flow's concurrency key
    /// fails on them): they are tried again at the next poll; the cursor
    /// did not move.
    Held,
}

/// A record as one answer lists it.
struct Listed {
    key: String,
    key_value: Value,
    version: Value,
    item: Value,
}

/// What one poll found.
struct Change {
    kind: &'static str,
    key: String,
    record: Option<SeenRecord>,
    /// The event's `key`, `version` and `item`.
    key_value: Value,
    version: Value,
    item: Value,
}

/// A change's commit, submitted.
enum Pending {
    Run(Box<Submitted>),
    Seen(weir_storage::Ticket),
}

/// One poll trigger of one flow for one tenant (or one connection), and
/// what it saw.
struct PollTask {
    runs: Arc<Runs>,
    flow: Arc<Flow>,
    index: usize,
    tenant: String,
    /// For a connection: its record as this poll read it (ready), and
    /// `connection` as expressions see it.
    connection: Option<ConnectionRecord>,
    connection_value: Option<Value>,
    key: TriggerKey,
    /// Every record seen, by key, as on disk.
    seen: HashMap<String, SeenRecord>,
    cursor: Value,
    /// No poll has completed yet (with `baseline`, the first only records).
    first: bool,
}

pub(super) async fn run(
    runs: Arc<Runs>,
    flow: Arc<Flow>,
    index: usize,
    target: Target,
    mut stop: watch::Receiver<bool>,
) {
    let tenant = target.tenant.clone();
    let trigger = &flow.triggers[index];
    let TriggerKind::Poll(poll) = &trigger.kind else {
        return;
    };
    let every = poll.every;
    let backoff = Backoff::new(every, MAX_BACKOFF.max(every));
    let key = target.key(&flow.id, &trigger.id);
    let store = runs.engine().store().clone();
    let (seen, cursor) = match (store.seen(&key), store.cursor(&key)) {
        (Ok(seen), Ok(cursor)) => (seen, cursor),
        (Err(e), _) | (_, Err(e)) => {
            warn!(flow = %flow.id, trigger = %trigger.id, tenant, error = %e, "cannot read what the poll trigger saw; it does not run");
            return;
        }
    };
    let mut task = PollTask {
        runs: runs.clone(),
        flow: flow.clone(),
        index,
        tenant: tenant.clone(),
        connection: None,
        connection_value: None,
        key,
        seen: seen.into_iter().collect(),
        first: cursor.is_none(),
        cursor: cursor.unwrap_or(Value::Null),
    };
    let mut failures = 0u32;
    let mut deferring = false;
    loop {
        // A connection's poll skips while it is not ready (what it saw is
        // kept), and ends when it is gone.
        let ready = match target.ready_connection(&runs) {
            Err(()) => return,
            Ok(Some(c)) => {
                task.connection_value = Some(scope_value(&c));
                task.connection = Some(c);
                true
            }
            Ok(None) => target.connection.is_none(),
        };
        let polled = match ready {
            true => task.poll().await,
            false => Ok(Outcome::Done),
        };
        match polled {
            Ok(outcome) => {
                failures = 0;
                match outcome {
                    Outcome::Done => deferring = false,
                    Outcome::Deferred(deferred) => {
                        if !deferring {
                            warn!(flow = %flow.id, trigger = %trigger.id, tenant, deferred, "too many unfinished runs (--max-backlog): changes wait for the next poll");
                        }
                        deferring = true;
                    }
                    Outcome::Held => {}
                }
            }
            Err(e) => {
                failures += 1;
                let error = flow.secrets.redact(&e.to_string()).into_owned();
                warn!(flow = %flow.id, trigger = %trigger.id, tenant, failures, error, "poll failed; backing off");
            }
        }
        // Not a failure of the API (a full backlog, a held record): the
        // next poll, at the usual time, brings them again.
        let wait = match failures {
            0 => every,
            n => backoff.delay(n + 1, 1.0),
        };
        let at = runs.engine().clock().now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if sleep_or_stop(&runs, at, &mut stop).await {
            return;
        }
    }
}

fn text_key(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The start of a record, for messages.
fn excerpt(item: &Value) -> String {
    let text = item.to_string();
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

impl PollTask {
    fn poll_def(&self) -> &Poll {
        match &self.flow.triggers[self.index].kind {
            TriggerKind::Poll(poll) => poll,
            // `run` starts a task only for a poll trigger.
            _ => unreachable!("a poll task for a trigger that is not a poll"),
        }
    }

    fn trigger_id(&self) -> &str {
        &self.flow.triggers[self.index].id
    }

    /// `vars`, `tenant`, `flow` and `connection`.
    fn context(&self) -> weir_nodes::script::ScopeBuilder {
        self.flow
            .scope(&self.tenant, self.connection_value.as_ref())
    }

    fn base_scope(&self) -> Scope<'static> {
        let scope = self
            .flow
            .scope(&self.tenant, self.connection_value.as_ref())
            .with("cursor", to_dynamic(&self.cursor));
        match self.flow.secrets.is_empty() {
            true => scope.build(),
            false => scope
                .with("secrets", self.flow.secrets.scope_value())
                .build(),
        }
    }

    async fn poll(&mut self) -> Result<Outcome, PollError> {
        let mut scope = self.base_scope();
        let response = self.fetch(&mut scope).await?;
        scope.push_constant_dynamic("response", to_dynamic(&response));
        let (items, next_cursor) = self.read(&mut scope)?;
        let listed = self.identify(items);
        let changes = self.diff(listed);
        let outcome = self.admit(changes).await?;
        if outcome == Outcome::Done {
            self.commit_cursor(next_cursor).await?;
        }
        Ok(outcome)
    }

    /// The API's answer, `{status, headers, body}` (secrets it echoes
    /// redacted: its records become events). A flow that runs per
    /// connection polls through the task's connection.
    async fn fetch(&self, scope: &mut Scope<'static>) -> Result<Value, PollError> {
        let poll = self.poll_def();
        let mut request = poll
            .request
            .prepare(scope, None)
            .map_err(|e| PollError::Request(e.to_string()))?;
        if let (Some(via), Some(c)) = (&mut request.via, &self.connection) {
            via.id = Some(c.id.clone());
        }
        let key = &self.key;
        let idempotency = match &key.connection {
            None => format!("poll:{}:{}:{}", key.tenant, key.flow, key.trigger),
            Some(c) => format!("poll:{}:{}:{}:{c}", key.tenant, key.flow, key.trigger),
        };
        let connector = self.runs.engine().connector();
        let mut response =
            crate::engine::send(&request, &idempotency, None, connector, &self.tenant)
                .await
                .map_err(|e| PollError::Request(e.to_string()))?;
        self.flow.secrets.redact_value(&mut response);
        Ok(response)
    }

    /// The records (`items`) and the next cursor (`cursor`) of an answer.
    fn read(&self, scope: &mut Scope<'static>) -> Result<(Vec<Value>, Value), PollError> {
        let poll = self.poll_def();
        let items = poll
            .items
            .eval(scope, None)
            .map_err(|e| PollError::Items(e.to_string()))?;
        let items = match to_json(&items).map_err(PollError::Items)? {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => {
                return Err(PollError::Items(format!(
                    "must give a list, not {}",
                    excerpt(&other)
                )));
            }
        };
        let cursor = match &poll.cursor {
            Some(expr) => to_json(
                &expr
                    .eval(scope, None)
                    .map_err(|e| PollError::Cursor(e.to_string()))?,
            )
            .map_err(PollError::Cursor)?,
            None => Value::Null,
        };
        Ok((items, cursor))
    }

    /// Each record's key and version. A record listed more than once
    /// (overlapping pages, a change feed) counts once, as its last listing
    /// says. A record whose key cannot be had (null, or the expression
    /// fails on it) is reported, by its place in the answer and its start,
    /// and skipped: the others go on.
    fn identify(&self, items: Vec<Value>) -> Vec<Listed> {
        let poll = self.poll_def();
        let mut listed: Vec<Listed> = Vec::new();
        let mut position: HashMap<String, usize> = HashMap::new();
        for (n, item) in items.into_iter().enumerate() {
            let mut scope = Poll::item_scope(&item, self.context());
            let (key_value, version) = match poll.identify(&item, &mut scope) {
                Ok(identified) => identified,
                Err(e) => {
                    crate::metrics::poll_record_skipped(&self.flow.id, self.trigger_id());
                    let record = self.flow.secrets.redact(&excerpt(&item)).into_owned();
                    warn!(flow = %self.flow.id, trigger = self.trigger_id(), tenant = %self.tenant, index = n, record, error = %e, "a polled record is skipped: its key cannot be had");
                    continue;
                }
            };
            let key = text_key(&key_value);
            let record = Listed {
                key: key.clone(),
                key_value,
                version,
                item,
            };
            match position.get(&key) {
                Some(&i) => listed[i] = record,
                None => {
                    position.insert(key, listed.len());
                    listed.push(record);
                }
            }
        }
        listed
    }

    /// What changed since the last poll: created and updated records; and
    /// without a cursor (each poll a full scan), deleted ones.
    fn diff(&self, listed: Vec<Listed>) -> Vec<Change> {
        let poll = self.poll_def();
        let mut changes = Vec::new();
        let mut present = HashSet::new();
        for record in listed {
            present.insert(record.key.clone());
            let kind = match self.seen.get(&record.key) {
                None => "created",
                Some(old) if old.version != record.version => "updated",
                Some(_) => continue,
            };
            changes.push(Change {
                kind,
                record: Some(SeenRecord {
                    version: record.version.clone(),
                    item: record.item.clone(),
                }),
                key: record.key,
                key_value: record.key_value,
                version: record.version,
                item: record.item,
            });
        }
        if poll.cursor.is_none() {
            let mut gone: Vec<&String> =
                self.seen.keys().filter(|k| !present.contains(*k)).collect();
            gone.sort();
            for k in gone {
                let old = &self.seen[k];
                // The key as the record gave it (a number stays a number).
                let mut scope = Poll::item_scope(&old.item, self.context());
                let key_value = poll
                    .identify(&old.item, &mut scope)
                    .map(|(k, _)| k)
                    .unwrap_or_else(|_| json!(k));
                changes.push(Change {
                    kind: "deleted",
                    key: k.clone(),
                    record: None,
                    key_value,
                    version: old.version.clone(),
                    item: old.item.clone(),
                });
            }
        }
        changes
    }

    /// Starts a run per change (or only records it: the first poll with
    /// `baseline`, or a kind `emit` leaves out). Every commit is submitted
    /// in order without waiting, so they share disk flushes; then each is
    /// waited for. What was seen learns only what reached the disk.
    async fn admit(&mut self, changes: Vec<Change>) -> Result<Outcome, PollError> {
        let poll = self.poll_def();
        let store = self.runs.engine().store().clone();
        let baseline = self.first && poll.baseline;
        let trigger = self.trigger_id().to_owned();
        let mut submitted = Vec::new();
        let mut failed = None;
        let mut deferred = 0;
        let mut held = 0;
        let total = changes.len();
        for (n, change) in changes.into_iter().enumerate() {
            let emit = !baseline
                && match change.kind {
                    "created" => poll.emit.created,
                    "updated" => poll.emit.updated,
                    _ => poll.emit.deleted,
                };
            let write = Write::Seen {
                trigger: self.key.clone(),
                key: change.key.clone(),
                record: change.record.clone(),
            };
            let pending = if emit {
                let now = self.runs.engine().clock().now();
                let mut event = weir_nodes::triggers::event_base(
                    change.kind,
                    &Engine::new_run_id(),
                    &trigger,
                    now,
                );
                event.insert("key".into(), change.key_value);
                event.insert("version".into(), change.version);
                event.insert("item".into(), change.item);
                let event = Value::Object(event);
                match self.runs.submit(
                    &self.flow,
                    &self.tenant,
                    self.connection.as_ref(),
                    &trigger,
                    event,
                    |_| vec![write],
                ) {
                    Ok(admission) => Pending::Run(Box::new(admission)),
                    // The rest is found again by the next poll.
                    Err(AdmitError::Overloaded(_)) => {
                        deferred = total - n;
                        break;
                    }
                    // This record cannot start a run until the flow is
                    // fixed; the others go on. It stays unseen, and the
                    // cursor stays, so nothing is lost.
                    Err(AdmitError::Key(e)) => {
                        warn!(flow = %self.flow.id, trigger, tenant = %self.tenant, key = %change.key, error = %e, "a change cannot start its run: the flow's concurrency key failed on it; it is tried again at the next poll");
                        held += 1;
                        continue;
                    }
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            } else {
                Pending::Seen(store.commit(Commit::new().with(write)))
            };
            submitted.push((change.key, change.kind, change.record, pending));
        }
        for (k, kind, record, pending) in submitted {
            let outcome = match pending {
                Pending::Run(admission) => match self.runs.admitted(*admission).await {
                    Ok(run) => {
                        crate::metrics::event_received(&self.flow.id, &trigger);
                        debug!(flow = %self.flow.id, trigger, tenant = %self.tenant, run_id = %run.id, change = kind, key = %k, "poll change");
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                },
                Pending::Seen(ticket) => ticket.await.map_err(|e| e.to_string()),
            };
            match (outcome, record) {
                (Ok(()), Some(record)) => {
                    self.seen.insert(k, record);
                }
                (Ok(()), None) => {
                    self.seen.remove(&k);
                }
                (Err(e), _) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(PollError::Admit(e));
        }
        Ok(if deferred > 0 {
            Outcome::Deferred(deferred)
        } else if held > 0 {
            Outcome::Held
        } else {
            Outcome::Done
        })
    }

    /// Moves the cursor (its record also marks that the first poll
    /// happened).
    async fn commit_cursor(&mut self, next: Value) -> Result<(), PollError> {
        self.runs
            .engine()
            .store()
            .commit(Commit::new().with(Write::Cursor {
                trigger: self.key.clone(),
                cursor: next.clone(),
            }))
            .await?;
        self.cursor = next;
        self.first = false;
        Ok(())
    }
}
