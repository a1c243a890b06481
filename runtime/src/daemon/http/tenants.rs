//! `/api/v1/tenants` (admin tokens only): the tenants weir holds data for,
//! and erasing one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use weir_nodes::reader::valid_id;

use super::{Admin, ApiError, AppState};

/// `GET /api/v1/tenants`: each tenant with data, with counts.
pub async fn list(State(app): State<Arc<AppState>>, _: Admin) -> Result<Json<Value>, ApiError> {
    let tenants = app
        .runs
        .engine()
        .store()
        .tenants()
        .map_err(ApiError::internal)?;
    let items: Vec<Value> = tenants
        .into_iter()
        .map(|(key, counts)| {
            let mut v = json!(counts);
            v["key"] = json!(key);
            v
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

/// `DELETE /api/v1/tenants/{tenant}`: erases every record of the tenant in
/// one durable step; answers what was removed.
pub async fn erase(
    State(app): State<Arc<AppState>>,
    _: Admin,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !valid_id(&tenant) {
        return Err(ApiError::bad_request(format!(
            "tenant `{tenant}` must match [a-z0-9_-]{{1,64}}"
        )));
    }
    let removed = app
        .runs
        .erase_tenant(&tenant, &app.outbox)
        .await
        .map_err(ApiError::internal)?;
    // Its connections are gone: their flows' triggers stop.
    app.connections.note_added_or_removed();
    tracing::info!(tenant = %tenant, runs = removed.runs, deliveries = removed.deliveries, "tenant erased");
    Ok(Json(json!({"tenant": tenant, "removed": removed})))
}
