//! Prometheus metrics (through the `metrics` crate): what is counted, and the
//! recorder `GET /metrics` renders.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use weir_storage::RunRecord;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once per process; later calls reuse it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("weir_webhook_ack_seconds".into()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("weir_run_duration_seconds".into()),
                        &[
                            0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0,
                        ],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("weir_outbox_confirm_seconds".into()),
                        &[
                            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0,
                        ],
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                // Buckets are constants above; an error here is a bug.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            // Another recorder may be installed already (tests): then the
            // handle renders this one's (empty) metrics, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub fn event_received(flow: &str, trigger: &str) {
    counter!("weir_events_received_total", "flow" => flow.to_owned(), "trigger" => trigger.to_owned()).increment(1);
}

/// `reason`: `not_found`, `bad_signature`, `bad_body`, `too_large`,
/// `overloaded`, `duplicate`, `error`.
pub fn event_rejected(reason: &'static str) {
    counter!("weir_events_rejected_total", "reason" => reason).increment(1);
}

pub fn webhook_ack(seconds: f64) {
    histogram!("weir_webhook_ack_seconds").record(seconds);
}

pub fn run_admitted(run: &RunRecord) {
    counter!("weir_runs_total", "flow" => run.flow.clone(), "status" => "admitted").increment(1);
}

pub fn run_finished(run: &RunRecord) {
    counter!("weir_runs_total", "flow" => run.flow.clone(), "status" => run.status.as_str())
        .increment(1);
    if let (Some(start), Some(end)) = (run.started_at, run.finished_at) {
        let seconds = (end - start).num_microseconds().unwrap_or(0) as f64 / 1e6;
        histogram!("weir_run_duration_seconds", "flow" => run.flow.clone()).record(seconds);
    }
}

/// Finished runs removed from storage at the end of their retention.
pub fn runs_forgotten(n: usize) {
    counter!("weir_runs_forgotten_total").increment(n as u64);
}

pub fn node_executed(node_type: &'static str, status: &'static str) {
    counter!("weir_node_executions_total", "type" => node_type, "status" => status).increment(1);
}

pub fn backlog(runs: usize) {
    gauge!("weir_runs_unfinished").set(runs as f64);
}

pub fn outbox_pending(target: &'static str, pending: usize) {
    gauge!("weir_outbox_pending", "target" => target).set(pending as f64);
}

/// Pending deliveries and the age of the oldest, per target (`amqp`, `http`).
pub fn outbox(target: &'static str, pending: usize, oldest_seconds: f64) {
    gauge!("weir_outbox_pending", "target" => target).set(pending as f64);
    gauge!("weir_outbox_oldest_pending_seconds", "target" => target).set(oldest_seconds);
}

pub fn delivery_published(target: &'static str) {
    counter!("weir_outbox_published_total", "target" => target).increment(1);
}

pub fn delivery_confirmed(target: &'static str) {
    counter!("weir_outbox_confirmed_total", "target" => target).increment(1);
}

/// From publishing an AMQP message to its publisher confirm.
pub fn confirm_latency(seconds: f64) {
    histogram!("weir_outbox_confirm_seconds").record(seconds);
}

pub fn broker_connected(connected: bool) {
    gauge!("weir_amqp_connected").set(if connected { 1.0 } else { 0.0 });
}
