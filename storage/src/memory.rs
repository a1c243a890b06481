//! The [`Store`] in memory: the model the sled store is checked against, and a
//! backend for tests of the engine that need no disk.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::records::{DeliveryRecord, FlowSnapshot, NodeRecord, RunRecord};
use crate::store::{Commit, Store, Ticket, Write};
use crate::{Error, Result};

#[derive(Default)]
struct State {
    runs: BTreeMap<(String, String), RunRecord>,
    nodes: BTreeMap<(String, String, String), NodeRecord>,
    snapshots: BTreeMap<(String, String), FlowSnapshot>,
    outbox: BTreeMap<String, DeliveryRecord>,
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
        let mut state = match self.state() {
            Ok(state) => state,
            Err(e) => return Ticket::ready(Err(e)),
        };
        for write in commit.writes {
            match write {
                Write::Run(run) => {
                    state.runs.insert((run.tenant.clone(), run.id.clone()), run);
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
            }
        }
        Ticket::ready(Ok(()))
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

    fn list_runs(&self, tenant: &str, after: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        Ok(self
            .state()?
            .runs
            .values()
            .rev()
            .filter(|r| r.tenant == tenant && after.is_none_or(|a| r.id.as_str() < a))
            .take(limit)
            .cloned()
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
}
