//! Health, readiness and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, ErrorBody};
use crate::metrics;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    #[schema(value_type = String, pattern = "^ok$")]
    pub status: &'static str,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "weir is up", body = Health)),
    security(()))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Whether weir takes work.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`; `failing` once its storage failed; `waiting` while the
    /// event broker is not connected (`--role ingest` or `worker`).
    pub status: &'static str,
    /// `ok`, or the storage's failure.
    pub storage: String,
    /// Flows loaded.
    pub flows: usize,
    /// Flow files that do not load.
    pub flow_errors: usize,
    /// Runs waiting for a slot.
    pub backlog: usize,
    /// Runs waiting on a concurrency key.
    pub parked: usize,
    /// Unfinished runs that cannot be driven (their records cannot be
    /// read back).
    pub stuck: usize,
    /// `--role ingest` or `worker`: `connected` or `disconnected` (not
    /// ready then: events cannot be queued or taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<&'static str>,
}

/// Ready: the daemon only listens once its storage is open and its flows
/// are loaded; it is not ready once its storage failed (503; it stops).
/// `stuck` counts unfinished runs that cannot be driven because their
/// records cannot be read back.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "weir takes work", body = Readiness),
        (status = 503, description = "Its storage failed; it stops", body = Readiness)),
    security(()))]
pub async fn readyz(State(app): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    let failure = app.runs.engine().store().failure();
    let broker = app.cluster.as_ref().map(|c| c.broker.is_connected());
    let body = Readiness {
        status: if failure.is_some() {
            "failing"
        } else if broker == Some(false) {
            "waiting"
        } else {
            "ready"
        },
        broker: broker.map(|up| if up { "connected" } else { "disconnected" }),
        storage: failure.clone().unwrap_or_else(|| "ok".to_owned()),
        flows: app.registry.all().len(),
        flow_errors: app.registry.errors().len(),
        backlog: app.runs.backlog(),
        parked: app.runs.parked(),
        stuck: app.runs.stuck().len(),
    };
    let status = match (failure, broker) {
        (Some(_), _) | (None, Some(false)) => StatusCode::SERVICE_UNAVAILABLE,
        (None, _) => StatusCode::OK,
    };
    (status, Json(body))
}

/// `/metrics`: an admin token is needed, unless `--metrics-open`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "No valid token (unless weir runs with `--metrics-open`)", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody)),
    security(("bearer" = []), ()))]
pub async fn metrics(
    State(app): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if !app.metrics_open {
        match app.auth.caller(&headers, super::now_seconds()) {
            Ok(crate::auth::Caller::Admin) => {}
            Ok(crate::auth::Caller::Tenant(_)) => {
                return Err(ApiError::forbidden(
                    "/metrics needs an admin token (or start weir with --metrics-open)",
                ));
            }
            Err(refusal) => return Err(ApiError::unauthorized(&refusal)),
        }
    }
    metrics::backlog(app.runs.backlog());
    metrics::unreadable(
        app.runs.stuck().len(),
        app.runs.engine().store().unreadable_records(),
    );
    app.outbox.publish_gauges();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    ))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; weir's HTTP API is described in docs/api.md")
}

pub async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed here; weir's HTTP API is described in docs/api.md"),
    )
}
