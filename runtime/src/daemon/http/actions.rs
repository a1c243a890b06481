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
use serde::Deserialize;
use serde_json::{Value, json};
use weir_nodes::functions::action::ActionCall;
use weir_storage::{IdempotencyRecord, RunStatus, TriggerKey, Write};

use super::{ApiError, AppState, Params};
use crate::act::run::ActError;
use crate::auth::Scope;
use crate::engine::Engine;

/// How long a call waits for its action run before answering `202`.
const WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    integration: Option<String>,
    connection: Option<String>,
}

/// `GET /api/v1/actions`: every action defined (universal, and each
/// integration's), with its schemas, the integrations that implement it
/// and the tenant's connections through which it can run.
pub async fn list(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
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
        .map(|a| {
            let through: Vec<&str> = connections
                .iter()
                .filter(|c| a.integrations.contains(&c.integration))
                .filter(|c| q.connection.as_ref().is_none_or(|id| *id == c.id))
                .map(|c| c.id.as_str())
                .collect();
            let mut v = a.view;
            v["integrations"] = json!(a.integrations);
            v["connections"] = json!(through);
            v
        })
        .filter(|v| {
            q.connection.is_none() || v["connections"].as_array().is_some_and(|c| !c.is_empty())
        })
        .collect::<Vec<_>>();
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    input: Value,
    connection: Option<String>,
    integration: Option<String>,
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
                extra: vec![("connections", json!(connections))],
                ..ApiError::new(StatusCode::CONFLICT, "ambiguous_connection", message)
            },
            ActError::Invalid(errors) => ApiError {
                extra: vec![("details", json!(errors))],
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
            },
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
        Called::Done { output, run_id } => {
            Ok(Json(json!({"output": output, "run_id": run_id})).into_response())
        }
        Called::Running { run_id } => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"run_id": run_id, "status": "running"})),
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
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID, say)",
        )),
    }
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
            extra: std::iter::once(("run_id", json!(done.id)))
                .chain(["status", "body"].into_iter().filter_map(|k| {
                    let v = node.and_then(|n| n.output.as_ref())?.get(k)?;
                    Some((k, v.clone()))
                }))
                .collect(),
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
