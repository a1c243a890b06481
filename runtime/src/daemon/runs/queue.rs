//! Concurrency keys: runs with the same key of a flow run `limit` at a
//! time, the others wait in arrival order.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;
use tracing::error;
use weir_nodes::script::to_dynamic;
use weir_storage::{RunRecord, RunStatus};

use super::{AdmitError, BacklogPermit, Runs, lock};
use crate::flow::Flow;

/// A run waiting for its concurrency key: in memory (admitted while this
/// daemon ran), holding its place in the backlog; or on disk (found at
/// start), taking a place when its turn comes.
pub(super) enum Queued {
    Run(Box<RunRecord>, BacklogPermit),
    OnDisk(String),
}

impl Queued {
    pub(super) fn id(&self) -> &str {
        match self {
            Self::Run(run, _) => &run.id,
            Self::OnDisk(id) => id,
        }
    }
}

/// Runs of one (tenant, flow, concurrency key).
#[derive(Default)]
pub(super) struct Slot {
    pub(super) running: u32,
    pub(super) queue: VecDeque<Queued>,
}

pub(super) type SlotKey = (String, String, String);

impl Runs {
    /// The concurrency key of an event, if the flow has a `concurrency`.
    pub(super) fn concurrency_key(
        flow: &Flow,
        tenant: &str,
        event: &Value,
    ) -> Result<Option<String>, AdmitError> {
        let Some(c) = &flow.concurrency else {
            return Ok(None);
        };
        let Some(expr) = &c.key else {
            // A limit without a key holds for all runs of the flow.
            return Ok(Some(String::new()));
        };
        let mut scope = flow
            .scope(tenant, None)
            .with("event", to_dynamic(event))
            .build();
        let value = expr
            .eval(&mut scope, None)
            .map_err(|e| AdmitError::Key(e.to_string()))?;
        let json = weir_nodes::script::to_json(&value).map_err(AdmitError::Key)?;
        Ok(Some(match json {
            Value::String(s) => s,
            other => other.to_string(),
        }))
    }

    pub(super) fn limit_of(&self, flow_id: &str) -> u32 {
        self.registry
            .get(flow_id)
            .and_then(|f| f.concurrency.as_ref().map(|c| c.limit))
            .unwrap_or(1)
    }

    /// Frees a run's concurrency slot and starts the next queued run of it.
    pub(super) fn release_slot(self: &Arc<Self>, run: &RunRecord) {
        let Some(key) = &run.concurrency_key else {
            return;
        };
        let slot_key = (run.tenant.clone(), run.flow.clone(), key.clone());
        let limit = self.limit_of(&run.flow);
        let mut next = Vec::new();
        {
            let mut slots = lock(&self.slots);
            if let Some(slot) = slots.get_mut(&slot_key) {
                slot.running = slot.running.saturating_sub(1);
                while slot.running < limit {
                    let Some(queued) = slot.queue.pop_front() else {
                        break;
                    };
                    slot.running += 1;
                    next.push(queued);
                }
                if slot.running == 0 && slot.queue.is_empty() {
                    slots.remove(&slot_key);
                }
            }
        }
        for queued in next {
            self.start_queued(queued);
        }
    }

    pub(super) fn start_queued(self: &Arc<Self>, queued: Queued) {
        let this = self.clone();
        self.work.spawn(async move {
            let (queued, permit) = match queued {
                Queued::Run(run, permit) => (*run, permit),
                Queued::OnDisk(id) => match this.engine.store().run_by_id(&id) {
                    Ok(Some(run)) if run.status == RunStatus::Queued => {
                        (run, this.backlog.reserve())
                    }
                    Ok(_) => {
                        // Cancelled meanwhile: the next one may go.
                        if let Ok(Some(run)) = this.engine.store().run_by_id(&id) {
                            this.release_slot(&run);
                        }
                        return;
                    }
                    Err(weir_storage::Error::Unreadable(u)) => {
                        this.mark_stuck(&id, u.error);
                        return;
                    }
                    Err(e) => {
                        error!(run_id = %id, error = %e, "cannot read a queued run; it starts at the next start");
                        return;
                    }
                },
            };
            match this.engine.promote(queued.clone()).await {
                // A retried run may wait in a queue too: it has records.
                Ok(run) => {
                    let fresh = run.attempt == 1;
                    this.launch(run, fresh, permit)
                }
                Err(e) => {
                    error!(run_id = %queued.id, error = %e, "cannot start a queued run");
                }
            }
        });
    }

    /// Takes a queued run out of its queue, if it is there.
    pub(super) fn unqueue(&self, id: &str) -> Option<Queued> {
        let mut slots = lock(&self.slots);
        for slot in slots.values_mut() {
            if let Some(i) = slot.queue.iter().position(|q| q.id() == id) {
                return slot.queue.remove(i);
            }
        }
        None
    }
}
