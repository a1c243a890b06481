//! A poll trigger for one tenant: calls an HTTP API every `every`, compares
//! the records with the versions it saw before, and starts a run for each
//! change. Each run is committed together with the seen-version update of
//! its record, so each (key, version) is emitted exactly once, across
//! crashes too. Polls of one trigger never overlap: one task, one loop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rhai::Scope;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, warn};
use weir_nodes::TriggerKind;
use weir_nodes::functions::http::HttpError;
use weir_nodes::script::{to_dynamic, to_json};
use weir_nodes::triggers::poll::Poll;
use weir_storage::{Commit, SeenRecord, TriggerKey, Write};

use super::sleep_or_stop;
use crate::daemon::runs::{AdmitError, Runs, Submitted};
use crate::engine::Engine;
use crate::flow::Flow;

/// The longest wait after failed polls.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

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

pub(super) async fn run(
    runs: Arc<Runs>,
    flow: Arc<Flow>,
    index: usize,
    tenant: String,
    mut stop: watch::Receiver<bool>,
) {
    let trigger = &flow.triggers[index];
    let TriggerKind::Poll(poll) = &trigger.kind else {
        return;
    };
    let key = TriggerKey::new(&tenant, &flow.id, &trigger.id);
    let store = runs.engine().store().clone();
    let (mut seen, mut cursor, mut first) = match (store.seen(&key), store.cursor(&key)) {
        (Ok(seen), Ok(cursor)) => (
            seen.into_iter().collect::<HashMap<_, _>>(),
            cursor.clone().unwrap_or(Value::Null),
            cursor.is_none(),
        ),
        (Err(e), _) | (_, Err(e)) => {
            warn!(flow = %flow.id, trigger = %trigger.id, tenant, error = %e, "cannot read what the poll trigger saw; it does not run");
            return;
        }
    };
    let mut failures = 0u32;
    let mut deferring = false;
    loop {
        match poll_once(
            &runs,
            &flow,
            poll,
            &trigger.id,
            &tenant,
            &key,
            &mut seen,
            &mut cursor,
            first,
        )
        .await
        {
            Ok(0) => {
                failures = 0;
                first = false;
                deferring = false;
            }
            // Not a failure of the API: the next poll, at the usual time,
            // brings them again (the cursor did not move).
            Ok(deferred) => {
                failures = 0;
                if !deferring {
                    warn!(flow = %flow.id, trigger = %trigger.id, tenant, deferred, "too many unfinished runs (--max-backlog): changes wait for the next poll");
                }
                deferring = true;
            }
            Err(e) => {
                failures += 1;
                warn!(flow = %flow.id, trigger = %trigger.id, tenant, failures, error = %e, "poll failed; backing off");
            }
        }
        let wait = if failures == 0 {
            poll.every
        } else {
            (poll.every * 2u32.saturating_pow(failures.min(16))).min(MAX_BACKOFF.max(poll.every))
        };
        let at = runs.engine().clock().now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if sleep_or_stop(&runs, at, &mut stop).await {
            return;
        }
    }
}

fn base_scope(flow: &Flow, tenant: &str, cursor: &Value) -> Scope<'static> {
    flow.scope(tenant)
        .with("cursor", to_dynamic(cursor))
        .build()
}

fn text_key(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A change's commit, submitted.
enum Pending {
    Run(Box<Submitted>),
    Seen(weir_storage::Ticket),
}

#[allow(clippy::too_many_arguments)]
async fn poll_once(
    runs: &Arc<Runs>,
    flow: &Arc<Flow>,
    poll: &Poll,
    trigger: &str,
    tenant: &str,
    key: &TriggerKey,
    seen: &mut HashMap<String, SeenRecord>,
    cursor: &mut Value,
    first: bool,
) -> Result<usize, String> {
    let mut scope = base_scope(flow, tenant, cursor);
    let request = poll
        .request
        .prepare(&mut scope, None)
        .map_err(|e| e.to_string())?;
    let idempotency = format!("poll:{}:{}:{}", key.tenant, key.flow, key.trigger);
    let response = request
        .send(&idempotency, None)
        .await
        .map_err(|e: HttpError| e.to_string())?;
    scope.push_constant_dynamic("response", to_dynamic(&response));
    let items = poll
        .items
        .eval(&mut scope, None)
        .map_err(|e| format!("`items`: {e}"))?;
    let items = match to_json(&items).map_err(|e| format!("`items`: {e}"))? {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => return Err(format!("`items` must give a list, not {other}")),
    };
    let next_cursor = match &poll.cursor {
        Some(expr) => to_json(
            &expr
                .eval(&mut scope, None)
                .map_err(|e| format!("`cursor`: {e}"))?,
        )
        .map_err(|e| format!("`cursor`: {e}"))?,
        None => Value::Null,
    };

    // A record listed more than once in one answer (overlapping pages, a
    // change feed) counts once, as its last listing says.
    let mut listed: Vec<(String, Value, Value, Value)> = Vec::new();
    let mut position: HashMap<String, usize> = HashMap::new();
    for item in items {
        let mut item_scope = Poll::item_scope(&item, flow.scope(tenant));
        let (key_value, version) = poll
            .identify(&item, &mut item_scope)
            .map_err(|e| e.to_string())?;
        let k = text_key(&key_value);
        match position.get(&k) {
            Some(&i) => listed[i] = (k, key_value, version, item),
            None => {
                position.insert(k.clone(), listed.len());
                listed.push((k, key_value, version, item));
            }
        }
    }
    let mut changes = Vec::new();
    let mut present = HashSet::new();
    for (k, key_value, version, item) in listed {
        present.insert(k.clone());
        let kind = match seen.get(&k) {
            None => "created",
            Some(old) if old.version != version => "updated",
            Some(_) => continue,
        };
        changes.push(Change {
            kind,
            key: k,
            record: Some(SeenRecord {
                version: version.clone(),
                item: item.clone(),
            }),
            key_value,
            version,
            item,
        });
    }
    // Without a cursor each poll is a full scan: what is gone was deleted.
    if poll.cursor.is_none() {
        let mut gone: Vec<&String> = seen.keys().filter(|k| !present.contains(*k)).collect();
        gone.sort();
        for k in gone {
            let old = &seen[k];
            // The key as the record gave it (a number stays a number).
            let mut item_scope = Poll::item_scope(&old.item, flow.scope(tenant));
            let key_value = poll
                .identify(&old.item, &mut item_scope)
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

    // Every change's commit is submitted in order without waiting, so they
    // share disk flushes; then each is waited for. The seen-set in memory
    // learns only what reached the disk.
    let store = runs.engine().store().clone();
    let baseline = first && poll.baseline;
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
            trigger: key.clone(),
            key: change.key.clone(),
            record: change.record.clone(),
        };
        let pending = if emit {
            let now = runs.engine().clock().now();
            let mut event =
                weir_nodes::triggers::event_base(change.kind, &Engine::new_run_id(), trigger, now);
            event.insert("key".into(), change.key_value);
            event.insert("version".into(), change.version);
            event.insert("item".into(), change.item);
            match runs.submit(flow, tenant, trigger, Value::Object(event), |_| vec![write]) {
                Ok(admission) => Pending::Run(Box::new(admission)),
                // The rest is found again by the next poll.
                Err(AdmitError::Overloaded(_)) => {
                    deferred = total - n;
                    break;
                }
                // This record cannot start a run until the flow is fixed;
                // the others go on. It stays unseen, and the cursor stays,
                // so nothing is lost.
                Err(AdmitError::Key(e)) => {
                    warn!(flow = %flow.id, trigger, tenant, key = %change.key, error = %e, "a change cannot start its run: the flow's concurrency key failed on it; it is tried again at the next poll");
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
            Pending::Run(admission) => match runs.admitted(*admission).await {
                Ok(run) => {
                    crate::metrics::event_received(&flow.id, trigger);
                    debug!(flow = %flow.id, trigger, tenant, run_id = %run.id, change = kind, key = %k, "poll change");
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
            Pending::Seen(ticket) => ticket.await.map_err(|e| e.to_string()),
        };
        match (outcome, record) {
            (Ok(()), Some(record)) => {
                seen.insert(k, record);
            }
            (Ok(()), None) => {
                seen.remove(&k);
            }
            (Err(e), _) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if deferred > 0 || held > 0 {
        return Ok(deferred);
    }
    // The cursor's record also marks that the first poll happened.
    store
        .commit(Commit::new().with(Write::Cursor {
            trigger: key.clone(),
            cursor: next_cursor.clone(),
        }))
        .await
        .map_err(|e| e.to_string())?;
    *cursor = next_cursor;
    Ok(0)
}
