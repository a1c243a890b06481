//! Forgetting finished runs once their retention ends, so the data folder
//! does not grow forever. Unfinished runs are never forgotten, however old;
//! deliveries live in the outbox and are not touched.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};
use weir_storage::{Commit, Write};

use super::Runs;
use crate::metrics;

/// Run ids looked at per read of the store.
const SCAN: usize = 10_000;
/// Runs forgotten per commit.
const BATCH: usize = 1_000;

/// How often the sweep runs for a retention: a tenth of it, between 1 s
/// and 10 minutes.
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// Every `every`, forgets the runs that finished more than `retention` ago.
pub async fn forget_finished(runs: Arc<Runs>, retention: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let started = std::time::Instant::now();
        match sweep(&runs, retention).await {
            Ok(0) => {}
            Ok(n) => info!(
                runs = n,
                ?retention,
                took_ms = started.elapsed().as_millis() as u64,
                "finished runs past their retention forgotten"
            ),
            Err(e) => {
                warn!(error = %e, "cannot forget finished runs past their retention; trying again later")
            }
        }
    }
}

/// One pass over the runs; answers how many were forgotten.
pub async fn sweep(runs: &Runs, retention: Duration) -> Result<usize, weir_storage::Error> {
    let engine = runs.engine();
    let store = engine.store();
    let before = engine.clock().now() - chrono::Duration::from_std(retention).unwrap_or_default();
    let mut after: Option<String> = None;
    let mut forgotten = 0;
    loop {
        let expired = store.finished_before(before, after.as_deref(), SCAN)?;
        for chunk in expired.runs.chunks(BATCH) {
            let mut commit = Commit::new();
            for (tenant, run) in chunk {
                commit.push(Write::ForgetRun {
                    tenant: tenant.clone(),
                    run: run.clone(),
                });
            }
            store.commit(commit).await?;
            forgotten += chunk.len();
            metrics::runs_forgotten(chunk.len());
        }
        match expired.next {
            Some(next) => after = Some(next),
            None => return Ok(forgotten),
        }
    }
}
