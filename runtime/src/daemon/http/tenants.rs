//! `/api/v1/tenants` (admin tokens only): the tenants weir holds data for,
//! and erasing one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;
use weir_nodes::reader::valid_id;
use weir_storage::TenantCounts;

use super::{Admin, ApiError, AppState, ErrorBody};

/// A tenant weir holds data for.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub key: String,
    #[serde(flatten)]
    pub counts: TenantCounts,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<TenantView>,
}

/// What erasing a tenant removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erased {
    pub tenant: String,
    pub removed: TenantCounts,
}

/// `GET /api/v1/tenants`: each tenant with data, with counts.
#[utoipa::path(get, operation_id = "list_tenants", path = "/api/v1/tenants", tag = "tenants",
    responses(
        (status = 200, description = "Every tenant with data", body = TenantList),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn list(
    State(app): State<Arc<AppState>>,
    _: Admin,
) -> Result<Json<TenantList>, ApiError> {
    let tenants = app
        .runs
        .engine()
        .store()
        .tenants()
        .map_err(ApiError::internal)?;
    let items = tenants
        .into_iter()
        .map(|(key, counts)| TenantView { key, counts })
        .collect();
    Ok(Json(TenantList { items }))
}

/// `DELETE /api/v1/tenants/{tenant}`: erases every record of the tenant in
/// one durable step; answers what was removed.
#[utoipa::path(delete, operation_id = "erase_tenant", path = "/api/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path, description = "The tenant's key", pattern = "^[a-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "The tenant's records are erased (none is not an error)", body = Erased),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn erase(
    State(app): State<Arc<AppState>>,
    _: Admin,
    Path(tenant): Path<String>,
) -> Result<Json<Erased>, ApiError> {
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
    Ok(Json(Erased { tenant, removed }))
}
