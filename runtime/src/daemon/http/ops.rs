//! Health, readiness and metrics.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::metrics;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: the daemon only listens once its storage is open and its flows
/// are loaded; it is not ready once its storage failed (503; it stops).
/// `stuck` counts unfinished runs that cannot be driven because their
/// records cannot be read back.
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let failure = app.runs.engine().store().failure();
    let body = json!({
        "status": if failure.is_some() { "failing" } else { "ready" },
        "storage": failure.as_deref().unwrap_or("ok"),
        "flows": app.registry.all().len(),
        "flow_errors": app.registry.errors().len(),
        "backlog": app.runs.backlog(),
        "parked": app.runs.parked(),
        "stuck": app.runs.stuck().len(),
    });
    let status = match failure {
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::OK,
    };
    (status, Json(body)).into_response()
}

/// `/metrics`: an admin token is needed, unless `--metrics-open`.
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
