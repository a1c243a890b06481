//! `/api/v1/actions`: the actions a tenant can run, and running one. An
//! action run is a run of a one-node flow (`action-KEY`): durable, listed
//! with the tenant's runs, resumed after a crash with the same
//! idempotency key.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use weir_nodes::functions::action::ActionCall;
use weir_storage::{IdempotencyRecord, RunStatus, TriggerKey, Write};

use super::{ApiError, AppState, ErrorBody, ErrorMore, Params, TenantChoice, TenantRequired};
use crate::act::run::{ActError, Entry};
use crate::auth::Scope;
use crate::engine::Engine;

/// How long a call waits for its action run before answering `202`.
const WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only actions this integration implements.
    integration: Option<String>,
    /// Only actions that can run through this connection of the tenant.
    connection: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActionList {
    pub items: Vec<Entry>,
}

/// `GET /api/v1/actions`: every action defined (universal, and each
/// integration's), with its schemas, the integrations that implement it
/// and the tenant's connections through which it can run.
#[utoipa::path(get, operation_id = "list_actions", path = "/api/v1/actions", tag = "actions",
    params(ListQuery, TenantChoice),
    responses((status = 200, description = "The actions, by key", body = ActionList)))]
pub async fn list(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Params(q): Params<ListQuery>,
) -> Result<Json<ActionList>, ApiError> {
    let connections = match scope.tenant() {
        Some(t) => app
            .runs
            .engine()
            .store()
            .connections(t)
            .map_err(ApiError::internal)?,
        None => Vec::new(),
    };
    let items = app
        .actions
        .catalog()
        .into_iter()
        .filter(|a| {
            q.integration
                .as_ref()
                .is_none_or(|i| a.integrations.contains(i))
        })
        .map(|mut a| {
            a.connections = connections
                .iter()
                .filter(|c| a.integrations.contains(&c.integration))
                .filter(|c| q.connection.as_ref().is_none_or(|id| *id == c.id))
                .map(|c| c.id.clone())
                .collect();
            a
        })
        .filter(|a| q.connection.is_none() || !a.connections.is_empty())
        .collect();
    Ok(Json(ActionList { items }))
}

/// The body of `POST /api/v1/actions/{key}/run`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// The action's input (its `input_schema` says what it takes).
    #[serde(default)]
    input: Value,
    /// The connection to run through (needed when the tenant has several
    /// that could).
    connection: Option<String>,
    /// The integration to run through (when several implement it).
    integration: Option<String>,
}

/// A finished action call.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionDone {
    /// As the action's `output_schema` says.
    pub output: Value,
    pub run_id: String,
}

/// An action call still running after the wait.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionRunning {
    pub run_id: String,
    /// Always `running`: `GET /api/v1/runs/{run_id}` follows it.
    #[schema(value_type = String, pattern = "^running$")]
    pub status: &'static str,
}

const RUN_SHAPE: &str = r#"{"input": {...}, "connection"?: ID, "integration"?: KEY}"#;

impl From<ActError> for ApiError {
    fn from(e: ActError) -> Self {
        let message = e.to_string();
        match e {
            ActError::Unknown(_) | ActError::NotFound(_) => ApiError::not_found(message),
            ActError::NoConnection(_) => {
                ApiError::new(StatusCode::CONFLICT, "no_connection", message)
            }
            ActError::Ambiguous { connections, .. } => ApiError {
                more: Box::new(ErrorMore {
                    connections: Some(connections),
                    ..ErrorMore::default()
                }),
                ..ApiError::new(StatusCode::CONFLICT, "ambiguous_connection", message)
            },
            ActError::Invalid(errors) => ApiError::invalid_input(message, errors),
            ActError::Broken(_) => ApiError::new(StatusCode::BAD_GATEWAY, "action_failed", message),
        }
    }
}

/// `POST /api/v1/actions/{key}/run`: resolves the action for the tenant,
/// checks the input (422 with every problem, before anything runs), runs
/// it as a durable run and answers its output (`200 {output, run_id}`),
/// or `502 action_failed` with the run's error.
///
/// With an `Idempotency-Key` header (per tenant, 24 hours, durable): a
/// second call with the same key runs nothing and answers the first call's
/// result (waiting for it if it is still running); the same key with
/// another action or body is `422`.
#[utoipa::path(post, operation_id = "run_action", path = "/api/v1/actions/{key}/run", tag = "actions",
    params(("key" = String, Path, description = "The action's key"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Runs the call once per key (per tenant, 24 hours): a repeat answers the first call's result"),
        TenantRequired),
    request_body = RunBody,
    responses(
        (status = 200, description = "The action ran", body = ActionDone),
        (status = 202, description = "Still running after 300 s", body = ActionRunning),
        (status = 404, description = "No such action", body = ErrorBody),
        (status = 409, description = "No connection can run it (`no_connection`), or several can (`ambiguous_connection`)", body = ErrorBody),
        (status = 422, description = "The input does not match the action's schema (`invalid_input`), or the idempotency key was used for another call", body = ErrorBody),
        (status = 429, description = "Too many runs are waiting (`overloaded`)", body = ErrorBody),
        (status = 502, description = "The app refused or failed (`action_failed`, with its status and body)", body = ErrorBody),
        (status = 503, description = "weir cannot store the run now", body = ErrorBody)))]
pub async fn run(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = scope.tenant().ok_or_else(|| {
        ApiError::bad_request(
            "an admin token acts for every tenant: name the tenant with ?tenant=KEY or X-Weir-Tenant",
        )
    })?;
    let idempotency = idempotency_key(&headers)?;
    let body: RunBody = super::json_body(&body, RUN_SHAPE)?;
    let call = ActionCall {
        action: key,
        input: body.input,
        integration: body.integration,
        connection_id: body.connection,
    };
    match call_action(&app, tenant, call, idempotency, WAIT).await? {
        Called::Done { output, run_id } => Ok(Json(ActionDone { output, run_id }).into_response()),
        Called::Running { run_id } => Ok((
            StatusCode::ACCEPTED,
            Json(ActionRunning {
                run_id,
                status: "running",
            }),
        )
            .into_response()),
    }
}

/// How an action call ended within the time it waited.
pub enum Called {
    Done {
        output: Value,
        run_id: String,
    },
    /// Still running after the wait.
    Running {
        run_id: String,
    },
}

/// An action call for `tenant`, as the API and MCP make it: resolved, its
/// input checked before anything runs, run as a durable run and waited for
/// up to `wait`. A caller's `idempotency` key answers the first call's
/// result for a second one.
pub async fn call_action(
    app: &Arc<AppState>,
    tenant: &str,
    call: ActionCall,
    idempotency: Option<String>,
    wait: Duration,
) -> Result<Called, ApiError> {
    let key = call.action.clone();
    let request_hash = {
        use sha2::{Digest, Sha256};
        let asked = json!({"action": key, "input": call.input, "connection": call.connection_id, "integration": call.integration});
        hex::encode(Sha256::digest(asked.to_string().as_bytes()))
    };
    // One call per (tenant, key) at a time between looking the key up and
    // admitting the run that remembers it.
    let lock_key = idempotency
        .as_ref()
        .map(|k| (TriggerKey::new(tenant, "action-idempotency", ""), k.clone()));
    let guard = match &lock_key {
        Some(k) => Some(app.dedupe_locks.lock_all(std::slice::from_ref(k)).await),
        None => None,
    };
    let store = app.runs.engine().store().clone();
    let now = app.runs.engine().clock().now();
    if let Some(k) = &idempotency
        && let Some(first) = store.idempotency(tenant, k).map_err(ApiError::internal)?
        && now - first.at < IDEMPOTENCY_TTL
    {
        if first.request_hash != request_hash {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!(
                    "the Idempotency-Key `{k}` was used for another call (another action or body) within 24 hours; use a new key for a new call"
                ),
            ));
        }
        drop(guard);
        return answer(app, &first.run_id, wait).await;
    }
    let resolved = app.actions.resolve(tenant, None, &call)?;
    crate::act::run::Actions::prepare(&resolved, &call.input)?;
    let flow = app.actions.flow_of(&key).map_err(ApiError::internal)?;
    let mut event = weir_nodes::triggers::event_base("api", &Engine::new_run_id(), "run", now);
    event.insert(
        "body".into(),
        json!({"input": call.input, "connection": resolved.connection.id}),
    );
    let remember = |run_id: &str| match &idempotency {
        Some(k) => vec![Write::Idempotency(IdempotencyRecord {
            tenant: tenant.to_owned(),
            key: k.clone(),
            request_hash: request_hash.clone(),
            run_id: run_id.to_owned(),
            at: now,
        })],
        None => Vec::new(),
    };
    let run = app
        .runs
        .admit(&flow, tenant, "run", Value::Object(event), remember)
        .await?;
    drop(guard);
    answer(app, &run.id, wait).await
}

/// How long a caller's idempotency key is remembered.
pub const IDEMPOTENCY_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// The caller's `Idempotency-Key`, if any: 1 to 255 visible characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if valid_idempotency_key(k) => Ok(Some(k.to_owned())),
        _ => Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID, say)",
        )),
    }
}

/// An idempotency key (the header's, or an MCP call's): 1 to 255 visible
/// ASCII characters.
pub fn valid_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The answer of an action run: its output once it has finished, its
/// error (`502 action_failed`), or still running after `wait`.
async fn answer(app: &AppState, run_id: &str, wait: Duration) -> Result<Called, ApiError> {
    let Some(done) = app.runs.wait(run_id, wait).await else {
        return Ok(Called::Running {
            run_id: run_id.to_owned(),
        });
    };
    let nodes = app
        .runs
        .engine()
        .store()
        .nodes(&done.tenant, &done.id)
        .map_err(ApiError::internal)?;
    let node = nodes.iter().find(|n| n.node == "action");
    match done.status {
        RunStatus::Succeeded => {
            let output = node.and_then(|n| n.output.clone()).unwrap_or(Value::Null);
            Ok(Called::Done {
                output,
                run_id: done.id,
            })
        }
        _ => Err(ApiError {
            // The app's status and body, when it answered with an error.
            more: {
                let answer = node.and_then(|n| n.output.as_ref());
                Box::new(ErrorMore {
                    run_id: Some(done.id.clone()),
                    status: answer
                        .and_then(|a| a.get("status")?.as_u64())
                        .and_then(|s| u16::try_from(s).ok()),
                    body: answer.and_then(|a| a.get("body").cloned()),
                    ..ErrorMore::default()
                })
            },
            ..ApiError::new(
                StatusCode::BAD_GATEWAY,
                "action_failed",
                node.and_then(|n| n.error.clone())
                    .or(done.error)
                    .unwrap_or_else(|| format!("the action run ended {}", done.status.as_str())),
            )
        }),
    }
}
