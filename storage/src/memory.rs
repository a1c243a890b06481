//! The [`Store`] in memory: the model the sled store is checked against, and a
//! backend for tests of the engine that need no disk.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::records::{
    ActiveRun, ConnectionRecord, ConnectionRequestRecord, DedupeRecord, DeliveryRecord,
    FlowSnapshot, IdempotencyRecord, Listed, NodeRecord, RunRecord, SeenRecord, TriggerKey,
    Unreadable,
};
use crate::store::{Commit, Expired, Store, TenantCounts, Ticket, Write, counts_of};
use crate::{Error, Result};

#[derive(Default)]
struct State {
    runs: BTreeMap<(String, String), RunRecord>,
    /// Run ids written by `NewRun`, with their tenant.
    by_id: BTreeMap<String, String>,
    nodes: BTreeMap<(String, String, String), NodeRecord>,
    snapshots: BTreeMap<(String, String), FlowSnapshot>,
    outbox: BTreeMap<String, DeliveryRecord>,
    dedupe: BTreeMap<(TriggerKey, String), DedupeRecord>,
    cron: BTreeMap<TriggerKey, DateTime<Utc>>,
    seen: BTreeMap<(TriggerKey, String), SeenRecord>,
    cursors: BTreeMap<TriggerKey, Value>,
    connections: BTreeMap<(String, String), ConnectionRecord>,
    requests: BTreeMap<String, ConnectionRequestRecord>,
    idempotency: BTreeMap<(String, String), IdempotencyRecord>,
}

/// Everything in `BTreeMap`s behind one lock; commits apply at once.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| Error::Closed)
    }
}

impl Store for MemoryStore {
    fn commit(&self, commit: Commit) -> Ticket {
        if let Err(e) = commit.check() {
            return Ticket::ready(Err(e));
        }
        let mut state = match self.state() {
            Ok(state) => state,
            Err(e) => return Ticket::ready(Err(e)),
        };
        for write in commit.writes {
            match write {
                Write::NewRun(run) => {
                    state.by_id.insert(run.id.clone(), run.tenant.clone());
                    state.runs.insert((run.tenant.clone(), run.id.clone()), run);
                }
                Write::Run(mut run) => {
                    // The event stays as `NewRun` wrote it.
                    let key = (run.tenant.clone(), run.id.clone());
                    run.event = state
                        .runs
                        .get(&key)
                        .map(|r| r.event.clone())
                        .unwrap_or_default();
                    state.runs.insert(key, run);
                }
                Write::HandOffRun { tenant, run } => {
                    let key = (tenant, run);
                    state.runs.remove(&key);
                    state.by_id.remove(&key.1);
                    state
                        .nodes
                        .retain(|(t, r, _), _| !(*t == key.0 && *r == key.1));
                }
                Write::ForgetRun { tenant, run } => {
                    let key = (tenant, run);
                    if state.runs.get(&key).is_some_and(|r| r.status.is_finished()) {
                        state.runs.remove(&key);
                        state.by_id.remove(&key.1);
                        state
                            .nodes
                            .retain(|(t, r, _), _| !(*t == key.0 && *r == key.1));
                    }
                }
                Write::Node {
                    tenant,
                    run,
                    record,
                } => {
                    state
                        .nodes
                        .insert((tenant, run, record.key.clone()), record);
                }
                Write::Snapshot(s) => {
                    state
                        .snapshots
                        .insert((s.flow.clone(), s.version.clone()), s);
                }
                Write::Delivery(d) => {
                    state.outbox.insert(d.id.clone(), d);
                }
                Write::RemoveDelivery(id) => {
                    state.outbox.remove(&id);
                }
                Write::Dedupe {
                    trigger,
                    key,
                    record,
                } => {
                    state.dedupe.insert((trigger, key), record);
                }
                Write::RemoveDedupe { trigger, key } => {
                    state.dedupe.remove(&(trigger, key));
                }
                Write::CronFired { trigger, at } => {
                    state.cron.insert(trigger, at);
                }
                Write::Seen {
                    trigger,
                    key,
                    record: Some(record),
                } => {
                    state.seen.insert((trigger, key), record);
                }
                Write::Seen {
                    trigger,
                    key,
                    record: None,
                } => {
                    state.seen.remove(&(trigger, key));
                }
                Write::Cursor { trigger, cursor } => {
                    state.cursors.insert(trigger, cursor);
                }
                Write::EraseTenant(tenant) => {
                    state.runs.retain(|(t, _), _| *t != tenant);
                    state.by_id.retain(|_, t| *t != tenant);
                    state.nodes.retain(|(t, _, _), _| *t != tenant);
                    state.outbox.retain(|_, d| d.tenant != tenant);
                    // A key shared by tenants (tenant "") goes with the
                    // tenant it was remembered for.
                    state.dedupe.retain(|(k, _), r| {
                        k.tenant != tenant
                            && !(k.tenant.is_empty()
                                && r.tenant.as_deref() == Some(tenant.as_str()))
                    });
                    state.cron.retain(|k, _| k.tenant != tenant);
                    state.seen.retain(|(k, _), _| k.tenant != tenant);
                    state.cursors.retain(|k, _| k.tenant != tenant);
                    state.connections.retain(|(t, _), _| *t != tenant);
                    state.requests.retain(|_, r| r.tenant != tenant);
                    state.idempotency.retain(|(t, _), _| *t != tenant);
                }
                Write::Idempotency(r) => {
                    state
                        .idempotency
                        .insert((r.tenant.clone(), r.key.clone()), r);
                }
                Write::RemoveIdempotency { tenant, key } => {
                    state.idempotency.remove(&(tenant, key));
                }
                Write::ConnectionRequest(r) => {
                    state.requests.insert(r.id.clone(), r);
                }
                Write::Connection(c) => {
                    state
                        .connections
                        .insert((c.tenant.clone(), c.id.clone()), c);
                }
                Write::RemoveConnection { tenant, id } => {
                    let of_it = |k: &TriggerKey| {
                        k.tenant == tenant && k.connection.as_deref() == Some(id.as_str())
                    };
                    state.cron.retain(|k, _| !of_it(k));
                    state.seen.retain(|(k, _), _| !of_it(k));
                    state.cursors.retain(|k, _| !of_it(k));
                    state.connections.remove(&(tenant, id));
                }
            }
        }
        Ticket::ready(Ok(()))
    }

    fn tenants(&self) -> Result<BTreeMap<String, TenantCounts>> {
        let state = self.state()?;
        let mut out: BTreeMap<String, TenantCounts> = BTreeMap::new();
        for ((tenant, _), run) in &state.runs {
            let c = counts_of(&mut out, tenant);
            c.runs += 1;
            c.unfinished += u64::from(!run.status.is_finished());
        }
        for d in state.outbox.values() {
            counts_of(&mut out, &d.tenant).deliveries += 1;
        }
        for ((k, _), r) in &state.dedupe {
            counts_of(
                &mut out,
                r.tenant
                    .as_deref()
                    .filter(|_| k.tenant.is_empty())
                    .unwrap_or(&k.tenant),
            )
            .dedupe_keys += 1;
        }
        for k in state
            .cron
            .keys()
            .chain(state.cursors.keys())
            .chain(state.seen.keys().map(|(k, _)| k))
        {
            counts_of(&mut out, &k.tenant).trigger_states += 1;
        }
        for (tenant, _) in state.connections.keys() {
            counts_of(&mut out, tenant).connections += 1;
        }
        out.remove("");
        Ok(out)
    }

    fn connection(&self, tenant: &str, id: &str) -> Result<Option<ConnectionRecord>> {
        Ok(self
            .state()?
            .connections
            .get(&(tenant.to_owned(), id.to_owned()))
            .cloned())
    }

    fn connections(&self, tenant: &str) -> Result<Vec<ConnectionRecord>> {
        Ok(self
            .state()?
            .connections
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, c)| c.clone())
            .collect())
    }

    fn all_connections(&self) -> Result<Vec<ConnectionRecord>> {
        Ok(self.state()?.connections.values().cloned().collect())
    }

    fn connection_request(&self, id: &str) -> Result<Option<ConnectionRequestRecord>> {
        Ok(self.state()?.requests.get(id).cloned())
    }

    fn idempotency(&self, tenant: &str, key: &str) -> Result<Option<IdempotencyRecord>> {
        Ok(self
            .state()?
            .idempotency
            .get(&(tenant.to_owned(), key.to_owned()))
            .cloned())
    }

    fn idempotency_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        Ok(self
            .state()?
            .idempotency
            .values()
            .filter(|r| r.at < before)
            .take(limit)
            .map(|r| (r.tenant.clone(), r.key.clone()))
            .collect())
    }

    fn run(&self, tenant: &str, run: &str) -> Result<Option<RunRecord>> {
        Ok(self
            .state()?
            .runs
            .get(&(tenant.to_owned(), run.to_owned()))
            .cloned())
    }

    fn nodes(&self, tenant: &str, run: &str) -> Result<Vec<NodeRecord>> {
        Ok(self
            .state()?
            .nodes
            .iter()
            .filter(|((t, r, _), _)| t == tenant && r == run)
            .map(|(_, n)| n.clone())
            .collect())
    }

    fn unfinished_runs(&self) -> Result<Vec<RunRecord>> {
        Ok(self
            .state()?
            .runs
            .values()
            .filter(|r| !r.status.is_finished())
            .cloned()
            .collect())
    }

    fn active_runs(&self) -> Result<(Vec<ActiveRun>, Vec<Unreadable>)> {
        let runs = self.unfinished_runs()?;
        Ok((runs.iter().map(ActiveRun::from).collect(), Vec::new()))
    }

    fn list_runs(&self, tenant: &str, after: Option<&str>, limit: usize) -> Result<Vec<Listed>> {
        Ok(self
            .state()?
            .runs
            .values()
            .rev()
            .filter(|r| r.tenant == tenant && after.is_none_or(|a| r.id.as_str() < a))
            .take(limit)
            .cloned()
            .map(Listed::Run)
            .collect())
    }

    fn snapshot(&self, flow: &str, version: &str) -> Result<Option<FlowSnapshot>> {
        Ok(self
            .state()?
            .snapshots
            .get(&(flow.to_owned(), version.to_owned()))
            .cloned())
    }

    fn deliveries(&self) -> Result<Vec<DeliveryRecord>> {
        Ok(self.state()?.outbox.values().cloned().collect())
    }

    fn run_by_id(&self, run: &str) -> Result<Option<RunRecord>> {
        let state = self.state()?;
        Ok(state
            .by_id
            .get(run)
            .and_then(|tenant| state.runs.get(&(tenant.clone(), run.to_owned())))
            .cloned())
    }

    fn list_all_runs(
        &self,
        after: Option<&str>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&Listed) -> bool,
    ) -> Result<Vec<Listed>> {
        let state = self.state()?;
        let mut all: Vec<&RunRecord> = state
            .by_id
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| id.as_str() < a))
            .filter_map(|(id, tenant)| state.runs.get(&(tenant.clone(), id.clone())))
            .collect();
        all.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(all
            .into_iter()
            .take(scan)
            .map(|r| Listed::Run(r.clone()))
            .filter(|r| keep(r))
            .take(limit)
            .collect())
    }

    fn finished_before(
        &self,
        before: DateTime<Utc>,
        after: Option<&str>,
        scan: usize,
    ) -> Result<Expired> {
        let state = self.state()?;
        let mut expired = Expired::default();
        let ids = state
            .by_id
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| id.as_str() > a));
        for (looked, (id, tenant)) in ids.enumerate() {
            if looked >= scan {
                break;
            }
            if looked + 1 == scan {
                expired.next = Some(id.clone());
            }
            let Some(run) = state.runs.get(&(tenant.clone(), id.clone())) else {
                continue;
            };
            if run.created_at >= before {
                expired.next = None;
                return Ok(expired);
            }
            if run.status.is_finished() && run.finished_at.is_some_and(|at| at < before) {
                expired.runs.push((tenant.clone(), id.clone()));
            }
        }
        Ok(expired)
    }

    fn dedupe(&self, trigger: &TriggerKey, key: &str) -> Result<Option<DedupeRecord>> {
        Ok(self
            .state()?
            .dedupe
            .get(&(trigger.clone(), key.to_owned()))
            .cloned())
    }

    fn dedupes_before(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(TriggerKey, String)>> {
        Ok(self
            .state()?
            .dedupe
            .iter()
            .filter(|(_, r)| r.at < before)
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn cron_fired(&self, trigger: &TriggerKey) -> Result<Option<DateTime<Utc>>> {
        Ok(self.state()?.cron.get(trigger).copied())
    }

    fn seen(&self, trigger: &TriggerKey) -> Result<Vec<(String, SeenRecord)>> {
        Ok(self
            .state()?
            .seen
            .iter()
            .filter(|((t, _), _)| t == trigger)
            .map(|((_, k), r)| (k.clone(), r.clone()))
            .collect())
    }

    fn cursor(&self, trigger: &TriggerKey) -> Result<Option<Value>> {
        Ok(self.state()?.cursors.get(trigger).cloned())
    }
}
