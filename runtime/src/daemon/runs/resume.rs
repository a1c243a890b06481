//! Resuming at start, and parking: runs whose only work left is timers
//! leave memory and are driven again from disk when the time comes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{error, info};
use weir_storage::{RunRecord, RunStatus};

use super::queue::Queued;
use super::{MAX_DRIVEN, Runs, lock};
use crate::engine::EngineError;

impl Runs {
    /// Runs parked, waiting for their timers.
    pub fn parked(&self) -> usize {
        lock(&self.parked).len()
    }

    pub(super) fn park(&self, run: &RunRecord, at: DateTime<Utc>) {
        lock(&self.parked).insert((at, run.id.clone()), ());
        self.parked_changed.notify_one();
    }

    /// Takes a run out of the parked set; true if it was there.
    pub(super) fn unpark(&self, id: &str) -> bool {
        let mut parked = lock(&self.parked);
        let key = parked.keys().find(|(_, r)| r == id).cloned();
        key.is_some_and(|k| parked.remove(&k).is_some())
    }

    /// When a parked run's timer is due, if it is parked.
    pub fn parked_at(&self, id: &str) -> Option<DateTime<Utc>> {
        lock(&self.parked)
            .keys()
            .find(|(_, r)| r == id)
            .map(|(at, _)| *at)
    }

    /// Takes a parked run out of the parked set (it is handed off): when
    /// it was due, or `None` if it was not parked (it woke meanwhile).
    pub fn take_parked(&self, id: &str) -> Option<DateTime<Utc>> {
        let mut parked = lock(&self.parked);
        let key = parked.keys().find(|(_, r)| r == id).cloned()?;
        parked.remove(&key);
        Some(key.0)
    }

    /// Parks a run again (its hand-off failed).
    pub fn park_again(&self, id: &str, at: DateTime<Utc>) {
        lock(&self.parked).insert((at, id.to_owned()), ());
        self.parked_changed.notify_one();
    }

    /// Drives a run whose records were just written here (a hand-off from
    /// another worker).
    pub fn drive_imported(self: &Arc<Self>, id: &str) {
        self.drive_stored(id, "a handed-off run");
    }

    /// Drives parked runs again when their timers are due. Lives as long
    /// as the process (the daemon's `Runs` does too).
    pub(super) async fn wake_parked(runs: Arc<Self>) {
        loop {
            let next = lock(&runs.parked).keys().next().map(|(at, _)| *at);
            let wait = match next {
                Some(at) => runs.engine.clock().until(at),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = runs.parked_changed.notified() => continue,
            }
            let now = runs.engine.clock().now();
            let due: Vec<String> = {
                let mut parked = lock(&runs.parked);
                let later = parked.split_off(&(now, String::from("\u{10FFFF}")));
                let due = std::mem::replace(&mut *parked, later);
                due.into_keys().map(|(_, id)| id).collect()
            };
            for id in due {
                runs.drive_stored(&id, "a parked run");
            }
        }
    }

    /// Resumes every unfinished run found on disk: queued ones wait for
    /// their key again, in arrival order; the others are driven. Only the
    /// index of unfinished runs is read here; the runs themselves are read
    /// and driven in the background, a bounded number at a time, so the
    /// daemon serves at once and its memory stays bounded.
    pub fn resume_all(self: &Arc<Self>) -> Result<usize, EngineError> {
        let (mut runs, unreadable) = self.engine.store().active_runs()?;
        for u in unreadable {
            self.mark_stuck(&u.id, u.error);
        }
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        let count = runs.len();
        let mut to_drive = VecDeque::new();
        let mut to_start = Vec::new();
        {
            let mut slots = lock(&self.slots);
            for run in runs {
                match run.concurrency_key {
                    None => to_drive.push_back(run.id),
                    Some(key) => {
                        let slot = slots.entry((run.tenant, run.flow, key)).or_default();
                        if run.status == RunStatus::Queued {
                            slot.queue.push_back(Queued::OnDisk(run.id));
                        } else {
                            slot.running += 1;
                            to_drive.push_back(run.id);
                        }
                    }
                }
            }
            for ((_, flow, _), slot) in slots.iter_mut() {
                let limit = self
                    .registry
                    .get(flow)
                    .and_then(|f| f.concurrency.as_ref().map(|c| c.limit))
                    .unwrap_or(1);
                while slot.running < limit {
                    let Some(queued) = slot.queue.pop_front() else {
                        break;
                    };
                    slot.running += 1;
                    to_start.push(queued);
                }
            }
        }
        for queued in to_start {
            self.start_queued(queued);
        }
        if count > 0 {
            info!(runs = count, "resuming unfinished runs");
            self.work.spawn(self.clone().feed(to_drive));
        }
        Ok(count)
    }

    /// Drives resumed runs, keeping at most [`MAX_DRIVEN`] in memory.
    pub(super) async fn feed(self: Arc<Self>, mut ids: VecDeque<String>) {
        while let Some(id) = ids.pop_front() {
            while lock(&self.live).len() >= MAX_DRIVEN {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.drive_stored(&id, "an unfinished run");
        }
    }

    /// Drives a run from its records on disk, if it is not finished.
    fn drive_stored(self: &Arc<Self>, id: &str, what: &str) {
        match self.engine.store().run_by_id(id) {
            Ok(Some(run)) if !run.status.is_finished() => {
                let permit = self.backlog.reserve();
                self.launch(run, false, permit);
            }
            Ok(_) => {}
            Err(weir_storage::Error::Unreadable(u)) => self.mark_stuck(id, u.error),
            Err(e) => {
                error!(run_id = %id, what, error = %e, "cannot read a run to drive it; it resumes at the next start")
            }
        }
    }
}
