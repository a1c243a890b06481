//! The HTTP edge: webhooks, the API, health and metrics. One error type,
//! [`ApiError`], answers `{"error": {"code", "message"}}`.

mod api;
mod hooks;
mod ops;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tracing::{Instrument, error, info_span};

use super::registry::Registry;
use super::runs::Runs;
use super::triggers::DedupeLocks;

/// What handlers share.
pub struct AppState {
    pub registry: Arc<Registry>,
    pub runs: Arc<Runs>,
    pub metrics: PrometheusHandle,
    /// How long a webhook's dedupe key is remembered.
    pub dedupe_retention: Duration,
    pub dedupe_locks: DedupeLocks,
    /// `next_fire_at` of cron triggers, for the flows API.
    pub schedules: Arc<super::triggers::Schedules>,
    pub outbox: Arc<super::outbox::Outbox>,
}

/// The largest API request body (webhooks have their own `max_body`).
const API_BODY_LIMIT: usize = 1 << 20;

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/v1/flows", get(api::list_flows))
        .route("/api/v1/flows/{flow}", get(api::show_flow))
        .route("/api/v1/flows/{flow}/runs", post(api::start_run))
        .route("/api/v1/runs", get(api::list_runs))
        .route("/api/v1/runs/{run}", get(api::show_run))
        .route("/api/v1/runs/{run}/cancel", post(api::cancel_run))
        .route("/api/v1/runs/{run}/retry", post(api::retry_run))
        .route("/api/v1/outbox", get(api::outbox))
        .route("/api/v1/outbox/{id}/retry", post(api::retry_delivery))
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT));
    Router::new()
        // Each webhook trigger enforces its own `max_body`.
        .route(
            "/hooks/{tenant}/{flow}/{trigger}",
            post(hooks::webhook).layer(DefaultBodyLimit::disable()),
        )
        .merge(api)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .layer(middleware::from_fn(span_per_request))
        .with_state(state)
}

async fn span_per_request(request: Request, next: Next) -> Response {
    let span = info_span!("request", method = %request.method(), path = %request.uri().path());
    next.run(request).instrument(span).await
}

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 429: seconds until it is worth trying again.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
        }
    }

    /// An internal fault: logged here once, answered without details.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        error!(error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the daemon's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<crate::daemon::runs::AdmitError> for ApiError {
    fn from(e: crate::daemon::runs::AdmitError) -> Self {
        use crate::daemon::runs::AdmitError;
        match e {
            AdmitError::Overloaded(_) => Self::overloaded(e.to_string()),
            AdmitError::Key(message) => {
                Self::bad_request(format!("the flow's concurrency key: {message}"))
            }
            AdmitError::Engine(e) => Self::internal(e),
        }
    }
}

impl From<crate::daemon::runs::ControlError> for ApiError {
    fn from(e: crate::daemon::runs::ControlError) -> Self {
        use crate::daemon::runs::ControlError;
        match e {
            ControlError::NotFound(_) => Self::not_found(e.to_string()),
            ControlError::Conflict { .. } => Self::conflict(e.to_string()),
            ControlError::Engine(e) => Self::internal(e),
        }
    }
}

impl From<crate::daemon::outbox::OutboxError> for ApiError {
    fn from(e: crate::daemon::outbox::OutboxError) -> Self {
        use crate::daemon::outbox::OutboxError;
        match e {
            OutboxError::NotFound(_) => Self::not_found(e.to_string()),
            OutboxError::NotDead(_) => Self::conflict(e.to_string()),
            OutboxError::Storage(e) => Self::internal(e),
        }
    }
}
