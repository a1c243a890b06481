//! Health, readiness and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::metrics;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: the daemon only listens once its storage is open and its flows
/// are loaded, so answering at all means ready.
pub async fn readyz(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "status": "ready",
        "flows": app.registry.all().len(),
        "flow_errors": app.registry.errors().len(),
        "backlog": app.runs.backlog(),
        "parked": app.runs.parked(),
    }))
}

pub async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    metrics::backlog(app.runs.backlog());
    app.outbox.publish_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
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
