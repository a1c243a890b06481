//! Prometheus metrics (through the `metrics` crate): what is counted, and the
//! recorder `GET /metrics` renders.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
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
            describe();
            register_known();
            handle
        })
        .clone()
}

/// `# HELP` for every metric.
fn describe() {
    describe_counter!(
        "weir_cluster_events_published_total",
        "--role ingest: events published to the event queues and confirmed by the broker."
    );
    describe_counter!(
        "weir_cluster_events_acked_total",
        "--role worker: events acked (their run finished and its deliveries settled)."
    );
    describe_counter!(
        "weir_cluster_events_dead_lettered_total",
        "--role worker: events sent to the dead-letter queue, by reason: corrupt, unknown_flow, flow_version, tenant, concurrency_key."
    );
    describe_counter!(
        "weir_cluster_runs_handed_off_total",
        "--role worker: runs waiting on a timer further than --hand-off-after, handed off through the broker's delay queues (their event acked)."
    );
    describe_gauge!(
        "weir_cluster_broker_connected",
        "--role ingest or worker: 1 while the event broker connection is up."
    );
    describe_counter!(
        "weir_events_received_total",
        "Events accepted, by flow and trigger: webhooks, API calls, cron instants, poll changes."
    );
    describe_counter!(
        "weir_events_rejected_total",
        "Events refused, by reason: not_found, bad_signature, bad_body, too_large, timeout, overloaded, unavailable, duplicate, error."
    );
    describe_counter!(
        "weir_runs_admitted_total",
        "Runs admitted (on disk, started or queued), by flow."
    );
    describe_counter!(
        "weir_runs_total",
        "Runs finished, by flow and final status (succeeded, failed, cancelled)."
    );
    describe_counter!(
        "weir_node_executions_total",
        "Node attempts that ended, by node type and status (succeeded, failed)."
    );
    describe_histogram!(
        "weir_webhook_ack_seconds",
        metrics::Unit::Seconds,
        "From a webhook's arrival to its acknowledgement (the run on disk)."
    );
    describe_histogram!(
        "weir_run_duration_seconds",
        metrics::Unit::Seconds,
        "From a run's start to its end, by flow."
    );
    describe_gauge!(
        "weir_runs_unfinished",
        "Unfinished runs held in memory (running, waiting to be driven, queued); parked runs are not counted."
    );
    describe_gauge!(
        "weir_runs_stuck",
        "Unfinished runs that cannot be driven because their stored records cannot be read back."
    );
    describe_gauge!(
        "weir_records_unreadable",
        "Stored records found that cannot be read back (each counted once)."
    );
    describe_counter!(
        "weir_runs_forgotten_total",
        "Finished runs removed at the end of their retention."
    );
    describe_gauge!(
        "weir_outbox_pending",
        "Deliveries waiting in the outbox, by target."
    );
    describe_gauge!(
        "weir_outbox_oldest_pending_seconds",
        "Age of the oldest pending delivery, by target."
    );
    describe_counter!(
        "weir_outbox_published_total",
        "Delivery attempts sent, by target."
    );
    describe_counter!(
        "weir_outbox_confirmed_total",
        "Deliveries confirmed (and removed from the outbox), by target."
    );
    describe_histogram!(
        "weir_outbox_confirm_seconds",
        metrics::Unit::Seconds,
        "From publishing an AMQP message to its publisher confirm."
    );
    describe_gauge!(
        "weir_amqp_connected",
        "1 while weir is connected to the AMQP broker."
    );
    describe_counter!(
        "weir_poll_records_skipped_total",
        "Polled records skipped because their key cannot be had, by flow and trigger."
    );
    describe_counter!(
        "weir_connections_refused_total",
        "Connections answered 503 because the connection limit was reached."
    );
    describe_counter!(
        "weir_oauth2_refresh_total",
        "OAuth2 refresh grants sent to token endpoints."
    );
}

/// The reasons `weir_events_rejected_total` counts.
pub const REJECTED: &[&str] = &[
    "not_found",
    "bad_signature",
    "bad_body",
    "too_large",
    "timeout",
    "overloaded",
    "unavailable",
    "duplicate",
    "error",
];

/// Series whose labels are known in advance start at 0, so that a rate
/// or an alert works before the first event.
fn register_known() {
    for reason in REJECTED {
        counter!("weir_events_rejected_total", "reason" => *reason).absolute(0);
    }
    for node_type in weir_nodes::node::NODE_TYPES {
        for status in ["succeeded", "failed"] {
            counter!("weir_node_executions_total", "type" => *node_type, "status" => status)
                .absolute(0);
        }
    }
    for target in weir_storage::TargetKind::ALL {
        let target = target.as_str();
        outbox(target, 0, 0.0);
        counter!("weir_outbox_published_total", "target" => target).absolute(0);
        counter!("weir_outbox_confirmed_total", "target" => target).absolute(0);
    }
    counter!("weir_runs_forgotten_total").absolute(0);
    counter!("weir_connections_refused_total").absolute(0);
    counter!("weir_oauth2_refresh_total").absolute(0);
    backlog(0);
}

/// A flow's series, at 0, when it starts serving.
pub fn register_flow(flow: &crate::flow::Flow) {
    for trigger in &flow.triggers {
        counter!("weir_events_received_total", "flow" => flow.id.clone(), "trigger" => trigger.id.clone())
            .increment(0);
    }
    counter!("weir_runs_admitted_total", "flow" => flow.id.clone()).increment(0);
    for status in ["succeeded", "failed", "cancelled"] {
        counter!("weir_runs_total", "flow" => flow.id.clone(), "status" => status).increment(0);
    }
}

pub fn event_received(flow: &str, trigger: &str) {
    counter!("weir_events_received_total", "flow" => flow.to_owned(), "trigger" => trigger.to_owned()).increment(1);
}

/// `reason`: one of [`REJECTED`].
pub fn event_rejected(reason: &'static str) {
    counter!("weir_events_rejected_total", "reason" => reason).increment(1);
}

pub fn webhook_ack(seconds: f64) {
    histogram!("weir_webhook_ack_seconds").record(seconds);
}

pub fn run_admitted(run: &RunRecord) {
    counter!("weir_runs_admitted_total", "flow" => run.flow.clone()).increment(1);
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

/// Unfinished runs that cannot be driven, and stored records that cannot
/// be read (set at each scrape).
pub fn unreadable(stuck: usize, records: u64) {
    gauge!("weir_runs_stuck").set(stuck as f64);
    gauge!("weir_records_unreadable").set(records as f64);
}

/// A connection refused at the connection limit.
pub fn token_refresh() {
    counter!("weir_oauth2_refresh_total").increment(1);
}

pub fn connection_refused() {
    counter!("weir_connections_refused_total").increment(1);
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

/// A polled record skipped because its key cannot be had.
pub fn poll_record_skipped(flow: &str, trigger: &str) {
    counter!("weir_poll_records_skipped_total", "flow" => flow.to_owned(), "trigger" => trigger.to_owned()).increment(1);
}

/// `--role ingest`: an event is on its queue (confirmed).
pub fn event_forwarded() {
    counter!("weir_cluster_events_published_total").increment(1);
}

/// `--role worker`: an event's run finished, its deliveries settled, and
/// the event is acked.
pub fn event_acked() {
    counter!("weir_cluster_events_acked_total").increment(1);
}

/// `--role worker`: an event went to the dead-letter queue.
pub fn event_dead_lettered(reason: &str) {
    counter!("weir_cluster_events_dead_lettered_total", "reason" => reason.to_owned()).increment(1);
}

/// `--role ingest` or `worker`: the event broker link is up.
pub fn cluster_broker_connected(connected: bool) {
    gauge!("weir_cluster_broker_connected").set(if connected { 1.0 } else { 0.0 });
}

/// `--role worker`: a run waiting on a long timer handed off through the
/// broker.
pub fn run_handed_off() {
    counter!("weir_cluster_runs_handed_off_total").increment(1);
}
