//! `/mcp`: the Model Context Protocol over streamable HTTP, for AI agents.
//! A tenant's tools are its runnable actions (those with a ready
//! connection) and the flows with an api trigger that serve it; a call
//! runs exactly as the HTTP API runs it (validation, durable run,
//! idempotency rules) and answers `structuredContent` with a text copy.
//!
//! Authentication is the API's bearer token with one more rule: its `aud`
//! must name weir. A refused request is `401` with
//! `WWW-Authenticate: Bearer resource_metadata="…"` (RFC 9728), whose
//! document is served at `/.well-known/oauth-protected-resource`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};
use weir_nodes::functions::action::ActionCall;
use weir_nodes::reader::valid_id;
use weir_storage::{ConnectionState, RunStatus};

use super::actions::{Called, call_action};
use super::{API_BODY_LIMIT, AppState, TENANT_HEADER, now_seconds};
use crate::auth::{Caller, Refusal};
use crate::engine::Engine;

/// How long a tool call waits for its run.
const CALL_WAIT: Duration = Duration::from_secs(120);

/// The tenant an MCP request acts for, set by [`authenticate`].
#[derive(Debug, Clone)]
pub struct McpTenant(pub String);

/// The `/mcp` service, to nest in the router.
pub fn service(app: Arc<AppState>) -> StreamableHttpService<WeirMcp, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(app.mcp_allowed_hosts.clone())
        .with_allowed_origins(app.mcp_allowed_origins.clone())
        .enforce_origin_validation()
        .with_max_request_body_bytes(API_BODY_LIMIT);
    StreamableHttpService::new(
        move || Ok(WeirMcp { app: app.clone() }),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// The URL clients reach weir at, from the request (`Host`, and
/// `X-Forwarded-Proto` when a proxy terminates TLS).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// `GET /.well-known/oauth-protected-resource` (RFC 9728): what protects
/// `/mcp` — bearer tokens in the `Authorization` header, made by the
/// workspace (`weir token`, or the product's own signer).
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource", tag = "mcp",
    responses((status = 200, description = "The protected resource metadata (RFC 9728) of `/mcp`", body = ProtectedResource)),
    security(()))]
pub async fn protected_resource(headers: HeaderMap) -> Json<ProtectedResource> {
    let base = base_url(&headers);
    Json(ProtectedResource {
        resource: format!("{base}/mcp"),
        resource_name: "weir",
        bearer_methods_supported: vec!["header"],
        authorization_servers: Vec::new(),
    })
}

/// The same document, at the path RFC 9728 derives from `/mcp`.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource/mcp", tag = "mcp",
    responses((status = 200, description = "The protected resource metadata (RFC 9728) of `/mcp`", body = ProtectedResource)),
    security(()))]
pub async fn protected_resource_mcp(headers: HeaderMap) -> Json<ProtectedResource> {
    protected_resource(headers).await
}

/// RFC 9728 protected resource metadata.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ProtectedResource {
    /// The MCP endpoint's URL.
    pub resource: String,
    pub resource_name: &'static str,
    pub bearer_methods_supported: Vec<&'static str>,
    /// Empty: tokens are made by the workspace (`weir token`), not by an
    /// authorization server.
    pub authorization_servers: Vec<String>,
}

/// Every `/mcp` request: a token whose `aud` names weir, for one tenant
/// (a tenant token; an admin names it with `X-Weir-Tenant`). Without a
/// workspace secret (open, loopback only) no token is asked for and the
/// tenant is `X-Weir-Tenant` or `default`.
pub async fn authenticate(
    State(app): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let refused = |status: StatusCode, message: String, challenge: Option<String>| {
        let base = base_url(request.headers());
        let mut response = (
            status,
            Json(json!({"error": {"code": if status == StatusCode::UNAUTHORIZED { "unauthorized" } else { "bad_request" }, "message": message}})),
        )
            .into_response();
        if let Some(extra) = challenge {
            let value = format!(
                r#"Bearer resource_metadata="{base}/.well-known/oauth-protected-resource"{extra}"#
            );
            if let Ok(value) = HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    };
    let caller = match app.auth.audience_caller(request.headers(), now_seconds()) {
        Ok(caller) => caller,
        Err(refusal) => {
            let extra = match &refusal {
                Refusal::Missing => String::new(),
                _ => format!(
                    r#", error="invalid_token", error_description="{}""#,
                    refusal.message().replace(['"', '\\'], "'")
                ),
            };
            return refused(StatusCode::UNAUTHORIZED, refusal.message(), Some(extra));
        }
    };
    let named = request
        .headers()
        .get(TENANT_HEADER)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let tenant = match (caller, named) {
        (Caller::Tenant(t), None) => t,
        (Caller::Tenant(t), Some(n)) if n == t => t,
        (Caller::Tenant(t), Some(n)) => {
            return refused(
                StatusCode::FORBIDDEN,
                format!("this token acts for tenant `{t}`; it cannot act for `{n}`"),
                None,
            );
        }
        (Caller::Admin, Some(n)) if valid_id(&n) => n,
        // No workspace secret (loopback only): the default tenant.
        (Caller::Admin, None) if app.auth.is_open() => "default".to_owned(),
        (Caller::Admin, _) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!(
                    "an MCP client acts for one tenant: use a tenant's token (weir token --tenant KEY), or name the tenant with {TENANT_HEADER}"
                ),
                None,
            );
        }
    };
    request.extensions_mut().insert(McpTenant(tenant));
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    // The body read here (bounded, with the API's timeout) so that what
    // is not one JSON-RPC message gets JSON-RPC's own error.
    let (parts, body) = request.into_parts();
    let bytes = match super::read_body(
        &parts.headers,
        body,
        API_BODY_LIMIT,
        app.limits.body_timeout,
        || format!("an MCP request may be at most {API_BODY_LIMIT} bytes"),
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(e) if e.status == StatusCode::PAYLOAD_TOO_LARGE => {
            return rpc_error(StatusCode::PAYLOAD_TOO_LARGE, -32600, &e.message);
        }
        Err(e) => return e.into_response(),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                -32700,
                &format!("Parse error: the body is not JSON ({e})"),
            );
        }
        Ok(Value::Array(_)) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                "Invalid Request: batches are not supported; send one JSON-RPC message per request",
            );
        }
        Ok(Value::Object(m)) if m.get("jsonrpc") == Some(&json!("2.0")) => {}
        Ok(_) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                -32600,
                "Invalid Request: a JSON-RPC 2.0 message is an object with \"jsonrpc\": \"2.0\"",
            );
        }
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// A JSON-RPC error answer with no request id (the request could not be
/// read as one).
fn rpc_error(status: StatusCode, code: i32, message: &str) -> Response {
    (
        status,
        Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// One tenant's MCP server (made per session, or per request when
/// stateless; it holds only the daemon's shared state).
#[derive(Clone)]
pub struct WeirMcp {
    app: Arc<AppState>,
}

/// What a tool runs.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Action {
        key: String,
        integration: Option<String>,
    },
    Flow(String),
}

fn tenant_of(ctx: &RequestContext<RoleServer>) -> Result<String, McpError> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<McpTenant>())
        .map(|t| t.0.clone())
        .ok_or_else(|| McpError::internal_error("the request reached MCP unauthenticated", None))
}

fn object_schema(schema: &Value) -> Option<Arc<JsonObject>> {
    match schema {
        Value::Object(map) if map.get("type").is_none_or(|t| t == "object") => {
            Some(Arc::new(map.clone()))
        }
        _ => None,
    }
}

fn any_object() -> Arc<JsonObject> {
    Arc::new(rmcp::model::object(json!({"type": "object"})))
}

impl WeirMcp {
    /// The tenant's tools, by name, in name order.
    fn tools(&self, tenant: &str) -> Result<Vec<(Tool, Target)>, McpError> {
        let ready: Vec<String> = self
            .app
            .runs
            .engine()
            .store()
            .connections(tenant)
            .map_err(|e| McpError::internal_error(e.to_string(), None))?
            .into_iter()
            .filter(|c| c.state == ConnectionState::Ready)
            .map(|c| c.integration)
            .collect();
        let mut out = Vec::new();
        for entry in self.app.actions.catalog() {
            let mut through: Vec<&String> = entry
                .integrations
                .iter()
                .filter(|i| ready.contains(i))
                .collect();
            through.sort();
            through.dedup();
            let key = entry.key.clone();
            let described = |integration: Option<&str>| {
                let what = entry
                    .description
                    .as_deref()
                    .or(entry.name.as_deref())
                    .unwrap_or(&key)
                    .to_owned();
                match integration {
                    Some(i) => format!("{what} (through the tenant's `{i}` connection)"),
                    None => what,
                }
            };
            let tool = |name: String, description: String| {
                let mut tool = Tool::new(
                    name,
                    description,
                    entry
                        .input_schema
                        .as_ref()
                        .and_then(object_schema)
                        .unwrap_or_else(any_object),
                );
                if let Some(output) = entry.output_schema.as_ref().and_then(object_schema) {
                    tool = tool.with_raw_output_schema(output);
                }
                tool
            };
            match through.as_slice() {
                [] => {}
                [_] => out.push((
                    tool(key.clone(), described(None)),
                    Target::Action {
                        key: key.clone(),
                        integration: None,
                    },
                )),
                several => {
                    for i in several {
                        out.push((
                            tool(format!("{i}.{key}"), described(Some(i))),
                            Target::Action {
                                key: key.clone(),
                                integration: Some((*i).clone()),
                            },
                        ))
                    }
                }
            }
        }
        for flow in self.app.registry.all() {
            let api = flow.api_trigger().map(|(_, api)| api);
            let Some(api) = api.filter(|_| flow.tenants.serves(tenant)) else {
                continue;
            };
            let input = api
                .input_schema
                .as_ref()
                .and_then(|s| object_schema(&s.schema))
                .unwrap_or_else(any_object);
            let description = match &flow.name {
                Some(name) => format!("{name} (runs flow `{}`)", flow.id),
                None => format!("Runs flow `{}`", flow.id),
            };
            out.push((
                Tool::new(format!("flow.{}", flow.id), description, input),
                Target::Flow(flow.id.clone()),
            ));
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(out)
    }

    async fn call_action(
        &self,
        tenant: &str,
        key: String,
        integration: Option<String>,
        input: Value,
        idempotency: Option<String>,
    ) -> CallToolResult {
        let call = ActionCall {
            action: key,
            input,
            integration,
            connection_id: None,
        };
        match call_action(&self.app, tenant, call, idempotency, CALL_WAIT).await {
            Ok(Called::Done { output, run_id }) => done(output, &run_id),
            Ok(Called::Running { run_id }) => failed(format!(
                "the action is still running after {} s; its run is {run_id} (GET /api/v1/runs/{run_id})",
                CALL_WAIT.as_secs()
            )),
            Err(e) => failed(e.describe()),
        }
    }

    async fn call_flow(&self, tenant: &str, id: &str, input: Value) -> CallToolResult {
        let Some(flow) = self.app.registry.get(id) else {
            return failed(format!("flow `{id}` is no longer loaded"));
        };
        let Some((trigger, api)) = flow.api_trigger() else {
            return failed(format!("flow `{id}` has no api trigger"));
        };
        if let Some(schema) = &api.input_schema {
            let errors = schema.check(&input, "");
            if !errors.is_empty() {
                let mut text =
                    format!("the input does not match flow `{id}`'s input_schema; nothing ran:");
                for e in errors {
                    text.push_str(&format!("\n- {}: {}", e.pointer, e.message));
                }
                return failed(text);
            }
        }
        let now = self.app.runs.engine().clock().now();
        let event = api.event(&Engine::new_run_id(), &trigger.id, now, input);
        let run = match self
            .app
            .runs
            .admit(&flow, tenant, &trigger.id, event, |_| Vec::new())
            .await
        {
            Ok(run) => run,
            Err(e) => return failed(format!("flow `{id}` could not start: {e}")),
        };
        let Some(done) = self.app.runs.wait(&run.id, CALL_WAIT).await else {
            return failed(format!(
                "flow `{id}` is still running after {} s; its run is {} (GET /api/v1/runs/{})",
                CALL_WAIT.as_secs(),
                run.id,
                run.id
            ));
        };
        let nodes = self
            .app
            .runs
            .engine()
            .store()
            .nodes(tenant, &done.id)
            .unwrap_or_default();
        let output = flow.last_output(&nodes);
        let result = json!({"run_id": done.id, "status": done.status.as_str(), "output": output});
        match done.status {
            RunStatus::Succeeded => {
                let mut r = CallToolResult::structured(result.clone());
                r.content = vec![ContentBlock::text(result.to_string())];
                r
            }
            _ => {
                let mut r = CallToolResult::structured_error(result);
                r.content = vec![ContentBlock::text(format!(
                    "flow `{id}` (run {}) {}: {}",
                    done.id,
                    done.status.as_str(),
                    done.error.as_deref().unwrap_or("no error recorded")
                ))];
                r
            }
        }
    }
}

/// A successful action call: its output as `structuredContent` (an object,
/// as MCP wants) and as text.
fn done(output: Value, run_id: &str) -> CallToolResult {
    let text = output.to_string();
    let mut r = match &output {
        Value::Object(_) => CallToolResult::structured(output),
        _ => CallToolResult::success(Vec::new()),
    };
    r.content = vec![ContentBlock::text(text)];
    let mut meta = rmcp::model::MetaObject::default();
    meta.0.insert(RUN_ID_META.to_owned(), Value::from(run_id));
    r.meta = Some(meta);
    r
}

/// The `_meta` key of a call that makes it run once per key (per tenant,
/// 24 hours), as the HTTP API's `Idempotency-Key` header does.
pub const IDEMPOTENCY_META: &str = "weir/idempotency-key";
/// The `_meta` key of an action call's answer naming its run.
pub const RUN_ID_META: &str = "weir/run-id";

/// A call's idempotency key (rmcp hands the request's `_meta` over in
/// its context), checked as the header is.
fn idempotency_of(
    request: &CallToolRequestParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<Option<String>, String> {
    let value = request
        .meta
        .as_ref()
        .and_then(|m| m.0.0.get(IDEMPOTENCY_META))
        .or_else(|| ctx.meta.0.0.get(IDEMPOTENCY_META));
    let Some(value) = value else {
        return Ok(None);
    };
    match value.as_str() {
        Some(k) if super::actions::valid_idempotency_key(k) => Ok(Some(k.to_owned())),
        _ => Err(format!(
            "`_meta.{IDEMPOTENCY_META}` must be 1 to 255 visible ASCII characters (a UUID, say); nothing ran"
        )),
    }
}

/// A failed call: a tool error with the message a person needs.
fn failed(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

impl ServerHandler for WeirMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("weir", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "The tools act on the apps this tenant connected (actions) and start its flows (flow.*). Each call is a durable run in weir.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tenant = tenant_of(&ctx)?;
        let tools = self.tools(&tenant)?.into_iter().map(|(t, _)| t).collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let tenant = tenant_of(&ctx)?;
        let unknown = || {
            McpError::invalid_params(
                format!(
                    "no tool `{}` for this tenant; tools/list names them",
                    request.name
                ),
                None,
            )
        };
        // The name says what it runs (action keys, integration keys and
        // flow ids have no `.`); whether the tenant may run it is the
        // same check the API makes, without building the whole list.
        let target = match request.name.split_once('.') {
            Some(("flow", id)) => Target::Flow(id.to_owned()),
            Some((integration, key)) => Target::Action {
                key: key.to_owned(),
                integration: Some(integration.to_owned()),
            },
            None => Target::Action {
                key: request.name.to_string(),
                integration: None,
            },
        };
        let idempotency = idempotency_of(&request, &ctx);
        let input = Value::Object(request.arguments.unwrap_or_default());
        let result = match target {
            Target::Action { key, integration } => {
                if !self.app.actions.defines(&key) {
                    return Err(unknown());
                }
                match idempotency {
                    Ok(idempotency) => {
                        self.call_action(&tenant, key, integration, input, idempotency)
                            .await
                    }
                    Err(message) => failed(message),
                }
            }
            Target::Flow(id) => {
                let serves = self
                    .app
                    .registry
                    .get(&id)
                    .is_some_and(|f| f.tenants.serves(&tenant) && f.api_trigger().is_some());
                if !serves {
                    return Err(unknown());
                }
                match idempotency {
                    Ok(None) => self.call_flow(&tenant, &id, input).await,
                    Ok(Some(_)) => failed(format!(
                        "`_meta.{IDEMPOTENCY_META}` is for action tools; each call of a flow.* tool starts a new run, so nothing ran"
                    )),
                    Err(message) => failed(message),
                }
            }
        };
        Ok(result.into())
    }
}
