//! `/api/v1/integrations`: the apps a tenant can connect to — what each
//! needs from a connection (its auth type, the credential fields, the
//! parameters' schema). The same for every caller: integrations belong to
//! the workspace, connections to tenants.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{ApiError, AppState, ErrorBody};
use crate::auth::Caller;
use crate::connect::integration::Integration;

/// An integration: never a client secret or the name of its variable.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationView {
    pub key: String,
    pub name: Option<String>,
    /// The hash of its definition.
    pub version: String,
    pub auth: AuthView,
    /// The JSON Schema a connection's parameters must match.
    pub parameters: Option<Value>,
}

/// How a connection authenticates.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuthView {
    /// `none`, `api_key`, `basic`, `bearer`, `oauth2`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The credential fields a connection gives (none for OAuth2: the
    /// provider's consent gives them).
    pub credentials: Vec<&'static str>,
}

pub fn view(i: &Integration) -> IntegrationView {
    IntegrationView {
        key: i.key.clone(),
        name: i.name.clone(),
        version: i.version.clone(),
        auth: AuthView {
            kind: i.auth.type_name(),
            credentials: i.auth.credential_fields().to_vec(),
        },
        parameters: i.parameters.as_ref().map(|p| p.schema.clone()),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationList {
    pub items: Vec<IntegrationView>,
}

#[utoipa::path(get, operation_id = "list_integrations", path = "/api/v1/integrations", tag = "integrations",
    responses((status = 200, description = "Every integration loaded, by key", body = IntegrationList)))]
pub async fn list(State(app): State<Arc<AppState>>, _: Caller) -> Json<IntegrationList> {
    // Sorted by key.
    let all = app.connections.integrations().all();
    Json(IntegrationList {
        items: all.iter().map(|i| view(i)).collect(),
    })
}

#[utoipa::path(get, operation_id = "show_integration", path = "/api/v1/integrations/{key}", tag = "integrations",
    params(("key" = String, Path, description = "The integration's key")),
    responses(
        (status = 200, description = "The integration", body = IntegrationView),
        (status = 404, description = "No such integration is loaded", body = ErrorBody)))]
pub async fn show(
    State(app): State<Arc<AppState>>,
    _: Caller,
    Path(key): Path<String>,
) -> Result<Json<IntegrationView>, ApiError> {
    app.connections
        .integrations()
        .get(&key)
        .map(|i| Json(view(&i)))
        .ok_or_else(|| ApiError::not_found(format!("no integration `{key}` is loaded")))
}
