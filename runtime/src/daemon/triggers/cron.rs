//! A cron trigger for one tenant (or one connection): fires each instant of
//! its schedule. The
//! instant it fired is written in the same commit as the run it started, so
//! no instant fires twice, across crashes too; instants missed while the
//! daemon was down are handled by `catch_up`.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, warn};
use weir_nodes::TriggerKind;
use weir_nodes::triggers::cron::{CatchUp, MAX_CATCH_UP};
use weir_storage::{Commit, TriggerKey, Write};

use super::{Schedules, Target, sleep_or_stop};
use crate::daemon::runs::{AdmitError, Runs};
use crate::engine::Engine;
use crate::flow::Flow;

pub(super) async fn run(
    runs: Arc<Runs>,
    schedules: Arc<Schedules>,
    flow: Arc<Flow>,
    index: usize,
    target: Target,
    mut stop: watch::Receiver<bool>,
    standby_since: Option<DateTime<Utc>>,
) {
    let trigger = &flow.triggers[index];
    let TriggerKind::Cron(cron) = &trigger.kind else {
        return;
    };
    let key = target.key(&flow.id, &trigger.id);
    let tenant = target.tenant.as_str();
    let engine = runs.engine().clone();
    let last = match engine.store().cron_fired(&key) {
        Ok(last) => last,
        Err(e) => {
            warn!(flow = %flow.id, trigger = %trigger.id, tenant, error = %e, "cannot read when the cron trigger last fired; it does not run");
            return;
        }
    };
    let now = engine.clock().now();
    if let Some(last) = last {
        let missed = cron.fires_between(last, now, MAX_CATCH_UP);
        // Taking over from another process (`--role ingest`): the instants
        // since this one stood by were missed by a leader that died, not
        // while no process was up; they all fire.
        let (down, taken_over): (Vec<_>, Vec<_>) = missed
            .into_iter()
            .partition(|at| standby_since.is_none_or(|since| *at < since));
        let mut catch_up: Vec<DateTime<Utc>> = match cron.catch_up {
            CatchUp::Skip => Vec::new(),
            CatchUp::Latest => down.last().copied().into_iter().collect(),
            CatchUp::All => down,
        };
        catch_up.extend(taken_over);
        for at in catch_up {
            if !fire(&runs, &flow, &trigger.id, &target, &key, at, &mut stop).await {
                return;
            }
        }
    }
    let mut from = now.max(last.unwrap_or(now));
    loop {
        let Some(at) = cron.next_after(from) else {
            schedules.set(&flow.id, &trigger.id, None);
            return;
        };
        schedules.set(&flow.id, &trigger.id, Some(at));
        if sleep_or_stop(&runs, at, &mut stop).await {
            return;
        }
        if !fire(&runs, &flow, &trigger.id, &target, &key, at, &mut stop).await {
            return;
        }
        from = at;
    }
}

/// The event of a cron instant.
pub(crate) fn event(id: &str, trigger: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> Value {
    let mut event = weir_nodes::triggers::event_base("schedule", id, trigger, now);
    event.insert(
        "scheduled_at".into(),
        json!(at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    );
    Value::Object(event)
}

/// Starts the run of instant `at`, retrying while the daemon is overloaded
/// or the disk fails; false if told to stop first (or the target's
/// connection is gone). For a connection that is not ready, the instant is
/// recorded as fired and no run starts.
async fn fire(
    runs: &Arc<Runs>,
    flow: &Arc<Flow>,
    trigger: &str,
    target: &Target,
    key: &TriggerKey,
    at: DateTime<Utc>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let tenant = target.tenant.as_str();
    loop {
        let now = runs.engine().clock().now();
        let fired = Write::CronFired {
            trigger: key.clone(),
            at,
        };
        // Forwarded to workers, an instant has one id in every process (a
        // new leader that fires it again starts the same run).
        let id = match runs.forwards() {
            true => crate::daemon::cluster::instant_id(key, at),
            false => Engine::new_run_id(),
        };
        let admitted = match target.ready_connection(runs) {
            Err(()) => return false,
            Ok(None) if target.connection.is_some() => {
                debug!(flow = %flow.id, trigger, tenant, connection = ?target.connection, scheduled_at = %at, "cron instant skipped: the connection is not ready");
                record_fired(runs, fired).await;
                return true;
            }
            Ok(Some(connection)) => {
                let event = event(&id, trigger, at, now);
                runs.admit_for(flow, &connection, trigger, event, |_| vec![fired])
                    .await
            }
            Ok(None) => {
                runs.admit(flow, tenant, trigger, event(&id, trigger, at, now), |_| {
                    vec![fired]
                })
                .await
            }
        };
        match admitted {
            Ok(run) => {
                crate::metrics::event_received(&flow.id, trigger);
                debug!(flow = %flow.id, trigger, tenant, run_id = %run.id, scheduled_at = %at, "cron fired");
                return true;
            }
            Err(AdmitError::Key(e)) => {
                // Deterministic: trying again would fail the same way.
                warn!(flow = %flow.id, trigger, tenant, scheduled_at = %at, error = %e, "cron instant skipped: the flow's concurrency key does not evaluate");
                let fired = Write::CronFired {
                    trigger: key.clone(),
                    at,
                };
                record_fired(runs, fired).await;
                return true;
            }
            Err(e) => {
                warn!(flow = %flow.id, trigger, tenant, scheduled_at = %at, error = %e, "cron instant not started yet; trying again in 1s");
                let retry_at = now + chrono::Duration::seconds(1);
                if sleep_or_stop(runs, retry_at, stop).await {
                    return false;
                }
            }
        }
    }
}

/// Records an instant that fired without a run (so it is not caught up).
async fn record_fired(runs: &Runs, fired: Write) {
    if let Err(e) = runs
        .engine()
        .store()
        .commit(Commit::new().with(fired))
        .await
    {
        warn!(error = %e, "cannot record a skipped cron instant; it may be caught up after a restart");
    }
}
