//! `/api/v1/connections`: a tenant's connections to integrations. A
//! tenant token reaches its own only; an admin names the tenant
//! (`?tenant=`) to create one, and sees every tenant's otherwise.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_storage::{ActionOverride, ConnectionRecord, ConnectionState};

use super::{ApiError, AppState, ErrorBody, Params, TenantChoice, TenantRequired};
use crate::act::overrides::{self, OverrideBody, OverrideView};
use crate::auth::Scope;
use crate::connect::connections::{
    self, ConnectError, ConnectionView, CreateBody, Filter, PatchBody,
};
use crate::connect::integration::AuthKind;
use crate::connect::requests::{self, Finish, RequestBody, RequestView};

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

/// `POST /api/v1/connections`: the credentials are checked against the
/// app (the integration's test request) and stored encrypted.
#[utoipa::path(post, operation_id = "create_connection", path = "/api/v1/connections", tag = "connections",
    params(TenantRequired),
    request_body = CreateBody,
    responses(
        (status = 201, description = "The connection (its state says whether the app accepted the credentials)", body = ConnectionView),
        (status = 409, description = "weir has no encryption keys, or the integration cannot be used", body = ErrorBody),
        (status = 422, description = "Unknown integration, parameters or credentials wrong (`invalid`, each problem with its pointer)", body = ErrorBody)))]
pub async fn create(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    body: Bytes,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    let tenant = tenant_of(&scope)?;
    let body: CreateBody = super::json_body(&body, CREATE_SHAPE)?;
    let record = app.connections.create(tenant, body).await?;
    Ok((StatusCode::CREATED, Json(connections::view(&record))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only connections to this integration.
    pub integration: Option<String>,
    /// Only connections in this state.
    #[param(value_type = Option<ConnectionState>)]
    pub state: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    pub items: Vec<ConnectionView>,
}

#[utoipa::path(get, operation_id = "list_connections", path = "/api/v1/connections", tag = "connections",
    params(ListQuery, TenantChoice),
    responses((status = 200, description = "The caller's connections", body = ConnectionList)))]
pub async fn list(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Params(q): Params<ListQuery>,
) -> Result<Json<ConnectionList>, ApiError> {
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
    let items = items.iter().map(connections::view).collect();
    Ok(Json(ConnectionList { items }))
}

#[utoipa::path(get, operation_id = "show_connection", path = "/api/v1/connections/{id}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id"), TenantChoice),
    responses(
        (status = 200, description = "The connection (never its credentials)", body = ConnectionView),
        (status = 404, description = "No such connection for the caller", body = ErrorBody)))]
pub async fn show(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    Ok(Json(connections::view(&find(&app, &scope, &id)?)))
}

/// `PATCH /api/v1/connections/{id}`: new name, parameters or
/// credentials (tested against the app).
#[utoipa::path(patch, operation_id = "update_connection", path = "/api/v1/connections/{id}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id"), TenantChoice),
    request_body = PatchBody,
    responses(
        (status = 200, description = "The connection", body = ConnectionView),
        (status = 404, description = "No such connection for the caller", body = ErrorBody),
        (status = 409, description = "The connection's integration is not loaded, or weir has no encryption keys", body = ErrorBody),
        (status = 422, description = "Parameters or credentials wrong (`invalid`)", body = ErrorBody)))]
pub async fn update(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ConnectionView>, ApiError> {
    let found = find(&app, &scope, &id)?;
    let body: PatchBody = super::json_body(&body, PATCH_SHAPE)?;
    let record = app.connections.update(&found.tenant, &id, body).await?;
    Ok(Json(connections::view(&record)))
}

/// `POST /api/v1/connections/{id}/test`: the integration's test request
/// now; the connection's state says how it went.
#[utoipa::path(post, operation_id = "test_connection", path = "/api/v1/connections/{id}/test", tag = "connections",
    params(("id" = String, Path, description = "The connection's id"), TenantChoice),
    responses(
        (status = 200, description = "The connection, tested", body = ConnectionView),
        (status = 404, description = "No such connection for the caller", body = ErrorBody),
        (status = 409, description = "The connection's integration is not loaded, or its credentials cannot be opened", body = ErrorBody)))]
pub async fn test(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let found = find(&app, &scope, &id)?;
    let record = app.connections.test(&found.tenant, &id).await?;
    Ok(Json(connections::view(&record)))
}

/// `POST /api/v1/connections/{id}/refresh`: an OAuth2 connection's token
/// refreshed now.
#[utoipa::path(post, operation_id = "refresh_connection", path = "/api/v1/connections/{id}/refresh", tag = "connections",
    params(("id" = String, Path, description = "The connection's id"), TenantChoice),
    responses(
        (status = 200, description = "The connection; `refresh_error` says why a refresh failed", body = ConnectionView),
        (status = 404, description = "No such connection for the caller", body = ErrorBody),
        (status = 409, description = "Not an OAuth2 connection, or its integration is not loaded", body = ErrorBody)))]
pub async fn refresh(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
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
            v.refresh_error = Some(e.to_string());
            Ok(Json(v))
        }
    }
}

/// `DELETE /api/v1/connections/{id}`: the connection and its
/// credentials are erased; its flows' triggers stop.
#[utoipa::path(delete, operation_id = "delete_connection", path = "/api/v1/connections/{id}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id"), TenantChoice),
    responses(
        (status = 200, description = "The connection as it was", body = ConnectionView),
        (status = 404, description = "No such connection for the caller", body = ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
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
#[utoipa::path(get, operation_id = "show_override", path = "/api/v1/connections/{id}/actions/{key}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id"), ("key" = String, Path, description = "The action's key"), TenantChoice),
    responses(
        (status = 200, description = "The override", body = OverrideView),
        (status = 404, description = "No such connection, or it does not override the action", body = ErrorBody)))]
pub async fn show_override(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path((id, key)): Path<(String, String)>,
) -> Result<Json<OverrideView>, ApiError> {
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
#[utoipa::path(put, operation_id = "put_override", path = "/api/v1/connections/{id}/actions/{key}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id"), ("key" = String, Path, description = "The action's key"), TenantChoice),
    request_body = OverrideBody,
    responses(
        (status = 200, description = "The override, stored", body = OverrideView),
        (status = 404, description = "No such connection, or its integration has no such action", body = ErrorBody),
        (status = 409, description = "The connection's integration is not loaded", body = ErrorBody),
        (status = 422, description = "An expression does not compile, or an entry cannot be overridden (`invalid`)", body = ErrorBody)))]
pub async fn put_override(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path((id, key)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<OverrideView>, ApiError> {
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
#[utoipa::path(delete, operation_id = "delete_override", path = "/api/v1/connections/{id}/actions/{key}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id"), ("key" = String, Path, description = "The action's key"), TenantChoice),
    responses(
        (status = 204, description = "The override is gone"),
        (status = 404, description = "No such connection, or it does not override the action", body = ErrorBody)))]
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
#[utoipa::path(post, operation_id = "create_connection_request", path = "/api/v1/connection-requests", tag = "connections",
    params(TenantRequired),
    request_body = RequestBody,
    responses(
        (status = 201, description = "The request, with the `url` to send the person to", body = RequestView),
        (status = 400, description = "The provider's metadata could not be read, or another OAuth2 problem", body = ErrorBody),
        (status = 404, description = "No such connection to reconnect", body = ErrorBody),
        (status = 409, description = "weir has no encryption keys, or the integration cannot be used", body = ErrorBody),
        (status = 422, description = "Unknown or non-OAuth2 integration, wrong parameters, a redirect_uri not allowed (`invalid`)", body = ErrorBody)))]
pub async fn create_request(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    body: Bytes,
) -> Result<(StatusCode, Json<RequestView>), ApiError> {
    let tenant = tenant_of(&scope)?;
    let body: RequestBody = super::json_body(&body, REQUEST_SHAPE)?;
    let (record, url) = app.connections.start_request(tenant, body).await?;
    let mut v = requests::view(&record);
    v.url = Some(url);
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(get, operation_id = "show_connection_request", path = "/api/v1/connection-requests/{id}", tag = "connections",
    params(("id" = String, Path, description = "The request's id"), TenantChoice),
    responses(
        (status = 200, description = "The request", body = RequestView),
        (status = 404, description = "No such request for the caller", body = ErrorBody)))]
pub async fn show_request(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
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
#[utoipa::path(get, operation_id = "oauth2_callback", path = "/oauth2/callback", tag = "connections",
    params(
        ("state" = String, Query, description = "The request's state, as weir sent it to the provider"),
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("error" = Option<String>, Query, description = "The provider's error"),
        ("error_description" = Option<String>, Query, description = "The provider's words on it")),
    responses(
        (status = 302, description = "To the request's redirect_uri, with `connection_id` or `error`"),
        (status = 200, description = "A page saying the connection is made", content_type = "text/html"),
        (status = 400, description = "A page saying what went wrong", content_type = "text/html")),
    security(()))]
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
