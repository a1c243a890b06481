//! The engine: starts runs, drives them node by node with durable commits,
//! and resumes unfinished runs after a restart.
//!
//! - [`Engine`]: start a run, drive it, resume what is unfinished
//! - `runner`: one run's state machine over the flow's DAG
//! - `scope`: the Rhai scope a run's expressions see
//! - [`Clock`]: time, as an argument

mod clock;
mod runner;
mod scope;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use weir_storage::{Commit, FlowSnapshot, RunRecord, RunStatus, Store, Write};

pub use clock::Clock;

use crate::flow::{self, Flow};

/// What can stop the engine from driving a run. A run whose driving failed
/// stays unfinished on disk and resumes on the next start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Storage(#[from] weir_storage::Error),
    #[error("run {run}: the version {version} of flow '{flow}' is not on disk")]
    MissingSnapshot {
        run: String,
        flow: String,
        version: String,
    },
    #[error("run {run}: the stored version of flow '{flow}' no longer loads: {error}")]
    BadSnapshot {
        run: String,
        flow: String,
        error: String,
    },
    #[error("flow '{flow}' has no trigger '{trigger}'")]
    UnknownTrigger { flow: String, trigger: String },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// How the engine commits.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Wait for every node's commit to reach the disk before the next node
    /// starts. Off (the default), pure nodes run back to back while their
    /// commits are flushed in the background; the engine still waits for the
    /// disk before any side effect (an `http` request, a timer) and before a
    /// run is reported finished, which is all SPEC §3.2 asks.
    pub durable_each_step: bool,
}

/// Starts and drives runs over a [`Store`].
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Clock,
    options: EngineOptions,
    /// Loaded flows by (id, version): the ones runs started on, and the ones
    /// read back from snapshots for resumed runs.
    flows: Mutex<HashMap<(String, String), Arc<Flow>>>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, clock: Clock, options: EngineOptions) -> Arc<Self> {
        Arc::new(Self {
            store,
            clock,
            options,
            flows: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Creates a run of `flow` for `event` and writes it, with the flow's
    /// snapshot, to disk. Returns once both are durable; [`Engine::drive`]
    /// then runs it.
    pub async fn start(
        &self,
        flow: &Arc<Flow>,
        tenant: &str,
        trigger: &str,
        event: Value,
    ) -> Result<RunRecord> {
        if flow.trigger(trigger).is_none() {
            return Err(EngineError::UnknownTrigger {
                flow: flow.id.clone(),
                trigger: trigger.to_owned(),
            });
        }
        let now = self.clock.now();
        let run = RunRecord {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.to_owned(),
            flow: flow.id.clone(),
            flow_version: flow.version.clone(),
            trigger: trigger.to_owned(),
            attempt: 1,
            status: RunStatus::Running,
            event,
            error: None,
            created_at: now,
            started_at: Some(now),
            finished_at: None,
        };
        let mut commit = Commit::new();
        if self.remember(flow) {
            commit.push(Write::Snapshot(FlowSnapshot {
                flow: flow.id.clone(),
                version: flow.version.clone(),
                file: flow.file.clone(),
                source: flow.source.clone(),
            }));
        }
        commit.push(Write::Run(run.clone()));
        self.store.commit(commit).await?;
        Ok(run)
    }

    /// Keeps `flow` for the runs that start on it; true if it is new here
    /// (its snapshot must be written).
    fn remember(&self, flow: &Arc<Flow>) -> bool {
        let key = (flow.id.clone(), flow.version.clone());
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        if flows.contains_key(&key) {
            return false;
        }
        flows.insert(key, flow.clone());
        true
    }

    /// The flow version a run started on: in memory, or read back from its
    /// snapshot.
    fn flow_of(&self, run: &RunRecord) -> Result<Arc<Flow>> {
        let key = (run.flow.clone(), run.flow_version.clone());
        if let Some(flow) = self
            .flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(flow.clone());
        }
        let snapshot = self
            .store
            .snapshot(&run.flow, &run.flow_version)?
            .ok_or_else(|| EngineError::MissingSnapshot {
                run: run.id.clone(),
                flow: run.flow.clone(),
                version: run.flow_version.clone(),
            })?;
        let flow = flow::load_source(&snapshot.source, &snapshot.file).map_err(|e| {
            EngineError::BadSnapshot {
                run: run.id.clone(),
                flow: run.flow.clone(),
                error: e.to_string(),
            }
        })?;
        let flow = Arc::new(flow);
        self.flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, flow.clone());
        Ok(flow)
    }

    /// Drives a run until it finishes, resuming from its node records if it
    /// ran before. Returns the finished run, which is on disk.
    pub async fn drive(&self, run: RunRecord) -> Result<RunRecord> {
        let flow = self.flow_of(&run)?;
        let records = self.store.nodes(&run.tenant, &run.id)?;
        runner::Runner::new(self, flow, run, records).run().await
    }

    /// The runs that did not finish before the last stop, oldest first.
    pub fn unfinished(&self) -> Result<Vec<RunRecord>> {
        let mut runs = self.store.unfinished_runs()?;
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(runs)
    }
}

#[cfg(test)]
mod tests;
