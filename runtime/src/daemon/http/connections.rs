//! `/api/v1/connections`: a tenant's connections to integrations. A
//! tenant token reaches its own only; an admin names the tenant
//! (`?tenant=`) to create one, and sees every tenant's otherwise.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use weir_storage::{ActionOverride, ConnectionRecord, ConnectionState};

use super::{ApiError, AppState, Params};
use crate::act::overrides::{self, OverrideBody};
use crate::auth::Scope;
use crate::connect::connections::{self, ConnectError, CreateBody, Filter, PatchBody};
use crate::connect::integration::AuthKind;
use crate::connect::requests::{self, Finish, RequestBody};

/// The tenant a call that creates or changes something acts for.
fn tenant_of(scope: &Scope) -> Result<&str, ApiError> {
    scope.tenant().ok_or_else(|| {
        ApiError::bad_request(
            "an admin token acts for every tenant: name the tenant with ?tenant=KEY or X-Weir-Tenant",
        )
    })
}

const CREATE_SHAPE: &str =
    r#"{"integration": KEY, "name"?: TEXT, "parameters"?: {...}, "credentials": {...}}"#;
const PATCH_SHAPE: &str = r#"{"name"?: TEXT, "parameters"?: {...}, "credentials"?: {...}}"#;

/// A connection of the scope: by the tenant's key, or (admin, no tenant
/// named) among all.
fn find(app: &AppState, scope: &Scope, id: &str) -> Result<ConnectionRecord, ApiError> {
    let found = match scope {
        Scope::Tenant(t) => app.connections.get(t, id).map(Some).or_else(|e| match e {
            ConnectError::NotFound(_) => Ok(None),
            e => Err(e),
        })?,
        Scope::All => all(app)?.into_iter().find(|c| c.id == id),
    };
    found.ok_or_else(|| ApiError::not_found(format!("no connection {id}")))
}

fn all(app: &AppState) -> Result<Vec<ConnectionRecord>, ApiError> {
    app.runs
        .engine()
        .store()
        .all_connections()
        .map_err(ApiError::internal)
}

pub async fn create(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&scope)?;
    let body: CreateBody = super::json_body(&body, CREATE_SHAPE)?;
    let record = app.connections.create(tenant, body).await?;
    Ok((StatusCode::CREATED, Json(connections::view(&record))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    integration: Option<String>,
    state: Option<String>,
}

pub async fn list(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = Filter {
        integration: q.integration,
        state: q
            .state
            .as_deref()
            .map(str::parse::<ConnectionState>)
            .transpose()
            .map_err(ApiError::bad_request)?,
    };
    let items = match &scope {
        Scope::Tenant(t) => app.connections.list(t, &filter)?,
        Scope::All => all(&app)?.into_iter().filter(|c| filter.keeps(c)).collect(),
    };
    let items: Vec<Value> = items.iter().map(connections::view).collect();
    Ok(Json(json!({"items": items})))
}

pub async fn show(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(connections::view(&find(&app, &scope, &id)?)))
}

pub async fn update(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let found = find(&app, &scope, &id)?;
    let body: PatchBody = super::json_body(&body, PATCH_SHAPE)?;
    let record = app.connections.update(&found.tenant, &id, body).await?;
    Ok(Json(connections::view(&record)))
}

pub async fn test(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = find(&app, &scope, &id)?;
    let record = app.connections.test(&found.tenant, &id).await?;
    Ok(Json(connections::view(&record)))
}

/// `POST /api/v1/connections/{id}/refresh`: an OAuth2 connection's token
/// refreshed now.
pub async fn refresh(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = find(&app, &scope, &id)?;
    let Some(integration) = app.connections.integrations().get(&found.integration) else {
        return Err(ApiError::conflict(format!(
            "the connection's integration `{}` is not loaded",
            found.integration
        )));
    };
    if !matches!(integration.auth, AuthKind::OAuth2(_)) {
        return Err(ApiError::conflict(format!(
            "connection {id} uses {} auth: it has no token to refresh (PATCH its credentials to change them)",
            integration.auth.type_name()
        )));
    }
    match app
        .connections
        .refresh_token(&integration, &found.tenant, &id, None)
        .await
    {
        Ok(record) => Ok(Json(connections::view(&record))),
        // The connection's state and error say what happened.
        Err(e) => {
            let record = find(&app, &scope, &id)?;
            let mut v = connections::view(&record);
            v["refresh_error"] = json!(e.to_string());
            Ok(Json(v))
        }
    }
}

pub async fn delete(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = find(&app, &scope, &id)?;
    let record = app.connections.delete(&found.tenant, &id).await?;
    Ok(Json(connections::view(&record)))
}

/// The action `key` of the connection's integration, for an override.
fn action_of(
    app: &AppState,
    found: &ConnectionRecord,
    key: &str,
) -> Result<(Arc<crate::connect::integration::Integration>, usize), ApiError> {
    let Some(integration) = app.connections.integrations().get(&found.integration) else {
        return Err(ApiError::conflict(format!(
            "the connection's integration `{}` is not loaded",
            found.integration
        )));
    };
    match integration.actions.iter().position(|a| a.key == key) {
        Some(n) => Ok((integration, n)),
        None => {
            let keys: Vec<&str> = integration.actions.iter().map(|a| a.key.as_str()).collect();
            Err(ApiError::not_found(format!(
                "integration `{}` has no action `{key}`; its actions: {}",
                integration.key,
                if keys.is_empty() {
                    "none".to_owned()
                } else {
                    keys.join(", ")
                }
            )))
        }
    }
}

/// `GET /api/v1/connections/{id}/actions/{key}`: the connection's
/// override of the action.
pub async fn show_override(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let found = find(&app, &scope, &id)?;
    match found.overrides.get(&key) {
        Some(o) => Ok(Json(overrides::view(o))),
        None => Err(ApiError::not_found(format!(
            "connection {id} does not override action `{key}`"
        ))),
    }
}

/// `PUT /api/v1/connections/{id}/actions/{key}`: customises the action
/// for this connection only. Every expression is compiled now: `422` with
/// each problem's pointer and its position inside the expression.
pub async fn put_override(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path((id, key)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let found = find(&app, &scope, &id)?;
    let (integration, n) = action_of(&app, &found, &key)?;
    let body: OverrideBody = super::json_body(&body, overrides::OVERRIDE_SHAPE)?;
    let o = ActionOverride {
        input_defaults: body.input_defaults,
        body: body.body,
        output: body.output,
        updated_at: chrono::Utc::now(),
    };
    let mut problems = overrides::check_against(&o, &integration.actions[n], &integration.key);
    if let Err(e) = overrides::compile(&o) {
        problems.extend(e);
    }
    if !problems.is_empty() {
        return Err(ConnectError::Invalid(problems).into());
    }
    app.connections
        .set_override(&found.tenant, &id, &key, Some(o.clone()))
        .await?;
    Ok(Json(overrides::view(&o)))
}

/// `DELETE /api/v1/connections/{id}/actions/{key}`: the connection uses
/// its integration's action as it is again.
pub async fn delete_override(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let found = find(&app, &scope, &id)?;
    match app
        .connections
        .set_override(&found.tenant, &id, &key, None)
        .await?
    {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::not_found(format!(
            "connection {id} does not override action `{key}`"
        ))),
    }
}

const REQUEST_SHAPE: &str =
    r#"{"integration": KEY, "parameters"?: {...}, "connection_id"?: ID, "redirect_uri"?: URL}"#;

/// `POST /api/v1/connection-requests`: an OAuth2 connection to start at
/// the provider's URL.
pub async fn create_request(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&scope)?;
    let body: RequestBody = super::json_body(&body, REQUEST_SHAPE)?;
    let (record, url) = app.connections.start_request(tenant, body).await?;
    let mut v = requests::view(&record);
    v["url"] = json!(url);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn show_request(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = match &scope {
        Scope::Tenant(t) => app.connections.request(t, &id)?,
        Scope::All => app
            .runs
            .engine()
            .store()
            .connection_request(&id)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found(format!("no connection request {id}")))?,
    };
    Ok(Json(requests::view(&record)))
}

/// `GET /oauth2/callback` (no token: the browser arrives from the
/// provider).
pub async fn callback(State(app): State<Arc<AppState>>, uri: axum::http::Uri) -> Response {
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    match app.connections.callback(&query).await {
        Finish::Redirect(to) => {
            (StatusCode::FOUND, [(axum::http::header::LOCATION, to)]).into_response()
        }
        Finish::Page { status, text } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let text = text
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            let page =
                format!("<!doctype html><meta charset=utf-8><title>weir</title><p>{text}</p>");
            (
                status,
                [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                page,
            )
                .into_response()
        }
    }
}
