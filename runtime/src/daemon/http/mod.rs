//! The HTTP edge: webhooks, the API, health and metrics. One error type,
//! [`ApiError`], answers `{"error": {"code", "message"}}` — for every
//! refusal, the edge's own (unknown path or method, URI or headers too
//! large, a body too large or too slow, a bad query) included.
//!
//! - `server`: the accept loop, connection limit and timeouts
//! - `hooks`: webhooks; `api`: `/api/v1`; `ops`: health and metrics;
//!   `tenants`: the admin's view of tenants
//!
//! Every `/api/v1` route is behind [`authenticate`]: a request without a
//! valid token never reaches a handler, and handlers reach data through
//! the [`Scope`] extractor.

pub mod actions;
mod cluster;
#[macro_use]
pub mod openapi;
pub(crate) mod api;
pub(crate) mod connections;
mod hooks;
mod integrations;
pub mod mcp;
mod ops;
pub mod server;
mod tenants;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{Instrument, error, info_span};
use utoipa::ToSchema;
use weir_nodes::schema::SchemaError;

use super::registry::Registry;
use super::runs::Runs;
use super::triggers::DedupeLocks;
use crate::auth::{Auth, Caller, Refusal, Scope, ScopeError};

/// What handlers share.
pub struct AppState {
    /// `--role ingest` or `worker`: the deployment this process is part of.
    pub cluster: Option<Arc<super::cluster::Cluster>>,
    pub registry: Arc<Registry>,
    pub runs: Arc<Runs>,
    pub metrics: PrometheusHandle,
    /// How long a webhook's dedupe key is remembered.
    pub dedupe_retention: Duration,
    pub dedupe_locks: DedupeLocks,
    /// `next_fire_at` of cron triggers, for the flows API.
    pub schedules: Arc<super::triggers::Schedules>,
    pub outbox: Arc<super::outbox::Outbox>,
    /// Connection limits and timeouts.
    pub limits: server::Limits,
    /// How callers of the API are authenticated.
    pub auth: Arc<Auth>,
    /// `/metrics` without a token (`--metrics-open`).
    pub metrics_open: bool,
    pub connections: Arc<crate::connect::connections::Connections>,
    pub actions: Arc<crate::act::run::Actions>,
    /// The Host names `/mcp` answers.
    pub mcp_allowed_hosts: Vec<String>,
    /// The browser origins `/mcp` answers.
    pub mcp_allowed_origins: Vec<String>,
}

/// The largest API request body (webhooks have their own `max_body`).
pub const API_BODY_LIMIT: usize = 1 << 20;
/// The longest request target (path and query) weir reads; longer is 414.
pub const MAX_URI_BYTES: usize = 8 << 10;
/// The most header bytes (names and values) a request may carry; more is
/// 431. Webhook events keep their headers, so this bounds them too.
pub const MAX_HEADER_BYTES: usize = 32 << 10;

pub fn router(state: Arc<AppState>) -> Router {
    let (router, described) = routes(state.clone());
    let document = Arc::new(openapi::Lazy::new(described));
    router
        .route(
            "/openapi.json",
            get(move || openapi::serve(document.clone())),
        )
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::from_fn(request_limits))
        .layer(middleware::from_fn(span_per_request))
        .with_state(state)
}

/// Every route but `/openapi.json`, and how to describe each. Routes are
/// only added through [`endpoint!`], which pairs a handler with its
/// description, so none can be served undescribed; the description itself
/// is built when `/openapi.json` is first asked for, not at start.
pub fn routes(state: Arc<AppState>) -> (Router<Arc<AppState>>, Vec<openapi::Describe>) {
    use openapi::Routes;
    let authenticated = Routes::new()
        .serve(endpoint!(api::list_flows))
        .serve(endpoint!(api::show_flow))
        .serve(endpoint!(api::start_run))
        .serve(endpoint!(api::list_runs))
        .serve(endpoint!(api::show_run))
        .serve(endpoint!(api::cancel_run))
        .serve(endpoint!(api::retry_run))
        .serve(endpoint!(api::outbox))
        .serve(endpoint!(api::retry_delivery))
        .serve(endpoint!(connections::list))
        .serve(endpoint!(connections::create))
        .serve(endpoint!(connections::show))
        .serve(endpoint!(connections::update))
        .serve(endpoint!(connections::delete))
        .serve(endpoint!(connections::test))
        .serve(endpoint!(connections::refresh))
        .serve(endpoint!(connections::create_request))
        .serve(endpoint!(connections::show_request))
        .serve(endpoint!(connections::show_override))
        .serve(endpoint!(connections::put_override))
        .serve(endpoint!(connections::delete_override))
        .serve(endpoint!(actions::list))
        .serve(endpoint!(actions::run))
        .serve(endpoint!(integrations::list))
        .serve(endpoint!(integrations::show))
        .serve(endpoint!(tenants::list))
        .serve(endpoint!(tenants::erase))
        .serve(endpoint!(cluster::cluster))
        .map(|router| {
            router
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    buffer_api_body,
                ))
                .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        });
    // `/mcp` describes itself (`tools/list`), not in this document.
    let model_context = Router::new()
        .nest_service("/mcp", mcp::service(state.clone()))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            mcp::authenticate,
        ));
    Routes::new()
        // Each webhook trigger enforces its own `max_body`.
        .serve(endpoint!(hooks::webhook).map(|route| route.layer(DefaultBodyLimit::disable())))
        .merge(authenticated)
        .map(|router| router.merge(model_context))
        // The console describes itself to people, not in this document.
        .map(|router| router.merge(crate::console::router()))
        .serve(endpoint!(mcp::protected_resource))
        .serve(endpoint!(mcp::protected_resource_mcp))
        .serve(endpoint!(connections::callback))
        .serve(endpoint!(ops::healthz))
        .serve(endpoint!(ops::readyz))
        .serve(endpoint!(ops::metrics))
        .finish()
}

async fn span_per_request(request: Request, next: Next) -> Response {
    let span = info_span!("request", method = %request.method(), path = %request.uri().path());
    next.run(request).instrument(span).await
}

/// 414 for a request target over [`MAX_URI_BYTES`], 431 for headers over
/// [`MAX_HEADER_BYTES`].
async fn request_limits(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        )
        .into_response();
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request's headers take {headers} bytes; weir accepts at most {MAX_HEADER_BYTES}"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// The caller of an API request, from its bearer token, for the handlers
/// (as [`Caller`] and [`Scope`]); 401 without a valid token.
async fn authenticate(
    State(app): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    match app.auth.caller(request.headers(), now_seconds()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refusal) => ApiError::unauthorized(&refusal).into_response(),
    }
}

/// Seconds since the epoch, for token times.
pub fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::internal("a route outside `authenticate` asked for its caller")
        })
    }
}

/// The header an admin names the tenant it acts for with (or `?tenant=`).
pub const TENANT_HEADER: &str = "x-weir-tenant";

/// The tenant a request acts for, as [`Scope`] reads it, for the API's
/// document: the `X-Weir-Tenant` header. (`?tenant=` says the same, for
/// links; the document names the header only, since the two must agree.)
pub struct TenantChoice;

impl utoipa::IntoParams for TenantChoice {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, Required, Type};
        let key = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(weir_nodes::reader::ID_PATTERN))
            .build();
        vec![
            ParameterBuilder::new()
                .name(TENANT_HEADER_NAME)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "The tenant to act for: an admin's choice (without it, an admin sees every \
                     tenant's, and a call that acts for one tenant is refused); a tenant token \
                     may only name its own. `?tenant=KEY` says the same; if both are given they \
                     must agree.",
                ))
                .schema(Some(key))
                .build(),
        ]
    }
}

/// [`TenantChoice`] for a call that acts for one tenant: an admin must
/// name it (a tenant token may leave it out, or name its own).
pub struct TenantRequired;

impl utoipa::IntoParams for TenantRequired {
    fn into_params(
        provider: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        let mut params = TenantChoice::into_params(provider);
        for p in &mut params {
            p.required = utoipa::openapi::Required::True;
            p.description = Some(
                "The tenant this call acts for: an admin token must name it; a tenant token \
                 may leave it out or name its own. `?tenant=KEY` says the same."
                    .to_owned(),
            );
        }
        params
    }
}

/// [`TENANT_HEADER`] as the document spells it.
const TENANT_HEADER_NAME: &str = "X-Weir-Tenant";

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;

    /// The caller's scope, for the tenant named by `X-Weir-Tenant` or
    /// `?tenant=` (an admin's choice; a tenant may only name itself).
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        let header = match parts.headers.get(TENANT_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ApiError::bad_request("the X-Weir-Tenant header is not text"))?
                    .to_owned(),
            ),
        };
        let query = parts.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "tenant")
                .map(|(_, v)| v.into_owned())
        });
        let asked = match (header, query) {
            (Some(h), Some(q)) if h != q => {
                return Err(ApiError::bad_request(format!(
                    "X-Weir-Tenant says `{h}` and ?tenant= says `{q}`; name one tenant"
                )));
            }
            (h, q) => h.or(q),
        };
        Ok(caller.scope(asked.as_deref())?)
    }
}

/// An admin caller: 403 for a tenant token.
pub struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(Admin),
            Caller::Tenant(_) => Err(ScopeError::AdminOnly.into()),
        }
    }
}

impl From<ScopeError> for ApiError {
    fn from(e: ScopeError) -> Self {
        match e {
            ScopeError::BadTenant(_) => Self::bad_request(e.to_string()),
            ScopeError::OtherTenant { .. } | ScopeError::AdminOnly => {
                Self::forbidden(e.to_string())
            }
        }
    }
}

/// Reads an API request's body (at most [`API_BODY_LIMIT`], within the
/// body timeout) before the handler runs.
async fn buffer_api_body(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let limit = API_BODY_LIMIT;
    let bytes = read_body(&parts.headers, body, limit, app.limits.body_timeout, || {
        format!("the body is larger than the API's limit ({limit} bytes)")
    })
    .await;
    match bytes {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) => e.into_response(),
    }
}

/// How much of a body over its limit is still read (and dropped) before
/// the 413, so that the client, still sending, reads the answer instead
/// of a reset connection. A body declared larger is refused at once.
const DRAIN_LIMIT: u64 = 8 << 20;

/// Reads a request body of at most `limit` bytes within `timeout`: 413 at
/// once if the declared length is far over the limit; 413 after reading
/// the rest (up to [`DRAIN_LIMIT`]) if it is over it; 408 if the body is
/// not complete in time.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
    too_large: impl Fn() -> String,
) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64 && n > DRAIN_LIMIT) {
        return Err(ApiError::too_large(too_large()));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = body.into_data_stream();
    let mut bytes: Vec<u8> = Vec::new();
    let (mut seen, mut over) = (0u64, false);
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!("the request body did not arrive within {timeout:?}"),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!(
                    "the request body could not be read: {e}"
                )));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        seen += chunk.len() as u64;
        if over {
            if seen > DRAIN_LIMIT {
                break;
            }
            continue;
        }
        if bytes.len() + chunk.len() > limit {
            over = true;
            bytes = Vec::new();
            continue;
        }
        bytes.extend_from_slice(&chunk);
    }
    if over {
        return Err(ApiError::too_large(too_large()));
    }
    Ok(Bytes::from(bytes))
}

/// A JSON API body of the shape `shape` (named in messages): 400 if it is
/// not JSON, too deep, or not of that shape.
pub fn json_body<T: DeserializeOwned>(bytes: &[u8], shape: &str) -> Result<T, ApiError> {
    let value = weir_nodes::json::parse(bytes).map_err(|e| match e {
        weir_nodes::json::ParseError::TooDeep => ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_deep",
            weir_nodes::json::too_deep("the body"),
        ),
        e => ApiError::bad_request(format!("the body is {e}; send {shape}")),
    })?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("the body must be {shape}: {e}")))
}

/// Query parameters; a query that does not parse is a JSON 400 naming the
/// parameter.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|e| {
                let text = e.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text)
                    .to_owned();
                ApiError::bad_request(format!("bad query string: {text}"))
            })
    }
}

/// An error answered to a client: `{"error": {code, message, ...}}`
/// ([`ErrorBody`]).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 429: seconds until it is worth trying again.
    pub retry_after: Option<u64>,
    /// For 401: the `WWW-Authenticate` challenge.
    pub challenge: Option<String>,
    /// The error object's other fields.
    pub more: Box<ErrorMore>,
}

/// The body of every refusal.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    /// What went wrong, for programs: `bad_request`, `unauthorized`,
    /// `forbidden`, `not_found`, `conflict`, `invalid`, `invalid_input`,
    /// `too_large`, `overloaded`, `action_failed`, ...
    pub code: String,
    /// What went wrong and how to fix it, for people.
    pub message: String,
    #[serde(flatten)]
    pub more: ErrorMore,
}

/// Fields some errors add.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ErrorMore {
    /// `invalid` (422): each problem of the body, with its JSON pointer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<SchemaError>>,
    /// `invalid_input` (422): each problem of the input, with its JSON
    /// pointer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<SchemaError>>,
    /// `ambiguous_connection` (409): the connections to choose from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<String>>,
    /// `action_failed` (502): the run that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// `action_failed` (502): the app's HTTP status, when it answered one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `action_failed` (502): the app's answer, when it answered one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            challenge: None,
            more: Box::default(),
        }
    }

    /// 422: the body parses but its values are wrong; each problem with
    /// its JSON pointer.
    pub fn invalid(message: impl Into<String>, errors: Vec<SchemaError>) -> Self {
        Self {
            more: Box::new(ErrorMore {
                errors: Some(errors),
                ..ErrorMore::default()
            }),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
        }
    }

    /// 422 `invalid_input`: an input that its schema refuses.
    pub fn invalid_input(message: impl Into<String>, details: Vec<SchemaError>) -> Self {
        Self {
            more: Box::new(ErrorMore {
                details: Some(details),
                ..ErrorMore::default()
            }),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
        }
    }

    /// 401, with the RFC 6750 challenge.
    pub fn unauthorized(refusal: &Refusal) -> Self {
        Self {
            challenge: Some(refusal.challenge()),
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", refusal.message())
        }
    }

    /// 403: the caller is known and may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
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

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 503: weir cannot take this now (its storage failed).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
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

impl ApiError {
    /// The message with each problem it lists (`pointer: message`) and the
    /// app's status, for a reader that sees text only (an MCP tool error).
    pub fn describe(&self) -> String {
        let mut text = self.message.clone();
        let problems = self.more.details.iter().chain(&self.more.errors).flatten();
        for p in problems {
            text.push_str(&format!("\n- {}: {}", p.pointer, p.message));
        }
        if let Some(status) = self.more.status {
            text.push_str(&format!(" (the app answered {status})"));
        }
        if let Some(id) = &self.more.run_id {
            text.push_str(&format!(" [run {id}]"));
        }
        text
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorObject {
                code: self.code.to_owned(),
                message: self.message,
                more: *self.more,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = self.challenge
            && let Ok(value) = HeaderValue::from_str(&challenge)
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl From<crate::daemon::runs::AdmitError> for ApiError {
    fn from(e: crate::daemon::runs::AdmitError) -> Self {
        use crate::daemon::runs::AdmitError;
        match e {
            AdmitError::Overloaded(_) => Self::overloaded(e.to_string()),
            AdmitError::Unavailable(_) => Self::unavailable(e.to_string()),
            AdmitError::Broker(_) => {
                tracing::warn!(error = %e, "an event was refused: the event broker cannot take it");
                Self {
                    retry_after: Some(2),
                    ..Self::unavailable(e.to_string())
                }
            }
            AdmitError::QueueFull(_) => Self::overloaded(e.to_string()),
            AdmitError::Key(message) => {
                Self::bad_request(format!("the flow's concurrency key: {message}"))
            }
            // The event could not be made durable: not acknowledged, and
            // worth sending again (weir stops to recover; see `serve`).
            AdmitError::Engine(crate::engine::EngineError::Storage(e)) => {
                error!(error = %e, "an event could not be stored");
                Self::unavailable(format!("weir cannot store the event now: {e}"))
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
            ControlError::Engine(crate::engine::EngineError::Storage(
                weir_storage::Error::Unreadable(u),
            )) => Self::conflict(format!(
                "run {} cannot be read ({}); it cannot be cancelled or retried",
                u.id, u.error
            )),
            ControlError::Engine(e) => Self::internal(e),
        }
    }
}

impl From<crate::connect::connections::ConnectError> for ApiError {
    fn from(e: crate::connect::connections::ConnectError) -> Self {
        use crate::connect::connections::ConnectError;
        match e {
            ConnectError::NotFound(_) => Self::not_found(e.to_string()),
            ConnectError::Invalid(ref errors) => Self::invalid(e.to_string(), errors.clone()),
            ConnectError::NoKeys => Self::conflict(e.to_string()),
            ConnectError::OAuth2(_) => Self::bad_request(e.to_string()),
            ConnectError::Vault(_) | ConnectError::Configuration(_) => {
                Self::conflict(e.to_string())
            }
            ConnectError::Storage(e) => Self::internal(e),
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
