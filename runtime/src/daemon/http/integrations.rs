//! `/api/v1/integrations`: the apps a tenant can connect to — what each
//! needs from a connection (its auth type, the credential fields, the
//! parameters' schema). The same for every caller: integrations belong to
//! the workspace, connections to tenants.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::connect::integration::Integration;

/// `{key, name, auth: {type, credentials: [fields]}, parameters}`: never
/// a client secret or the name of its variable.
pub fn view(i: &Integration) -> Value {
    json!({
        "key": i.key,
        "name": i.name,
        "version": i.version,
        "auth": {
            "type": i.auth.type_name(),
            "credentials": i.auth.credential_fields(),
        },
        "parameters": i.parameters.as_ref().map(|p| &p.schema),
    })
}

pub async fn list(State(app): State<Arc<AppState>>, _: Caller) -> Json<Value> {
    // Sorted by key.
    let all = app.connections.integrations().all();
    Json(json!({"items": all.iter().map(|i| view(i)).collect::<Vec<_>>()}))
}

pub async fn show(
    State(app): State<Arc<AppState>>,
    _: Caller,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.connections
        .integrations()
        .get(&key)
        .map(|i| Json(view(&i)))
        .ok_or_else(|| ApiError::not_found(format!("no integration `{key}` is loaded")))
}
