//! `/api/v1`: flows, runs, and the `api` trigger.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use weir_nodes::TriggerKind;
use weir_storage::{RunRecord, RunStatus};

use super::{ApiError, AppState};
use crate::engine::Engine;
use crate::flow::{Flow, Graph};
use crate::metrics;
use crate::view;

/// The most runs one list answers.
const MAX_LIMIT: usize = 500;
/// How many runs one list looks at, filters included.
const MAX_SCAN: usize = 20_000;
/// The longest `?wait=`.
const MAX_WAIT: u64 = 300;

fn trigger_json(app: &AppState, flow: &Flow) -> Vec<Value> {
    flow.triggers
        .iter()
        .map(|t| {
            let mut v = json!({"id": t.id, "type": t.kind.type_name()});
            if let TriggerKind::Cron(c) = &t.kind {
                v["schedule"] = json!(c.schedule_text);
                v["timezone"] = json!(c.timezone.name());
                v["next_fire_at"] = json!(app.schedules.next_fire_at(&flow.id, &t.id));
            }
            v
        })
        .collect()
}

fn flow_summary(app: &AppState, flow: &Flow) -> Value {
    json!({
        "id": flow.id,
        "name": flow.name,
        "version": flow.version,
        "file": flow.file,
        "tenants": flow.tenants,
        "triggers": trigger_json(app, flow),
    })
}

pub async fn list_flows(State(app): State<Arc<AppState>>) -> Json<Value> {
    let items: Vec<Value> = app
        .registry
        .all()
        .iter()
        .map(|f| flow_summary(&app, f))
        .collect();
    let errors: Vec<Value> = app
        .registry
        .errors()
        .iter()
        .map(|e| json!({"file": e.file, "errors": e.to_string().lines().collect::<Vec<_>>()}))
        .collect();
    Json(json!({"items": items, "errors": errors}))
}

fn graph_json(graph: &Graph) -> Value {
    let nodes: Vec<Value> = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut v = json!({"id": n.id, "type": n.kind.type_name()});
            if let Some(body) = &graph.bodies[i] {
                v["body"] = graph_json(body);
            }
            v
        })
        .collect();
    let edges: Vec<Value> = graph
        .edges
        .iter()
        .map(|e| json!({"from": graph.nodes[e.from].id, "to": graph.nodes[e.to].id, "route": e.route.label()}))
        .collect();
    json!({"nodes": nodes, "edges": edges})
}

pub async fn show_flow(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let flow = app
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no flow '{id}'")))?;
    let mut v = flow_summary(&app, &flow);
    v["vars"] = flow.vars.clone();
    v["definition"] = json!(flow.source);
    v["graph"] = graph_json(&flow.graph);
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
pub struct StartBody {
    tenant: Option<String>,
    #[serde(default)]
    input: Value,
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    wait: Option<u64>,
}

/// `POST /api/v1/flows/{flow}/runs`: the flow's `api` trigger.
pub async fn start_run(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
    body: Result<Json<StartBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"tenant\"?, \"input\"}}: {}",
            e.body_text()
        ))
    })?;
    let flow = app
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no flow '{id}'")))?;
    let tenant = body.tenant.unwrap_or_else(|| "default".into());
    if !flow.tenants.contains(&tenant) {
        return Err(ApiError::not_found(format!(
            "flow '{id}' does not serve tenant '{tenant}'"
        )));
    }
    let Some(trigger) = flow
        .triggers
        .iter()
        .find(|t| matches!(t.kind, TriggerKind::Api(_)))
    else {
        return Err(ApiError::not_found(format!(
            "flow '{id}' has no api trigger"
        )));
    };
    let TriggerKind::Api(api) = &trigger.kind else {
        return Err(ApiError::not_found(format!(
            "flow '{id}' has no api trigger"
        )));
    };
    metrics::event_received(&flow.id, &trigger.id);
    let now = app.runs.engine().clock().now();
    let event = api.event(&Engine::new_run_id(), &trigger.id, now, body.input);
    let run = app
        .runs
        .admit(&flow, &tenant, &trigger.id, event, |_| Vec::new())
        .await?;
    match q.wait {
        Some(seconds) => {
            let waited = app
                .runs
                .wait(&run.id, Duration::from_secs(seconds.min(MAX_WAIT)))
                .await;
            match waited {
                Some(done) => {
                    Ok((StatusCode::OK, Json(run_with_nodes(&app, &done)?)).into_response())
                }
                None => {
                    let current = app
                        .runs
                        .engine()
                        .store()
                        .run_by_id(&run.id)
                        .map_err(ApiError::internal)?
                        .unwrap_or(run);
                    Ok(
                        (StatusCode::ACCEPTED, Json(run_with_nodes(&app, &current)?))
                            .into_response(),
                    )
                }
            }
        }
        None => Ok((StatusCode::ACCEPTED, Json(json!({"run_id": run.id}))).into_response()),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    flow: Option<String>,
    tenant: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// The run object without its nodes.
fn run_summary(run: &RunRecord) -> Value {
    let mut v = view::run_json(run, &[]);
    if let Some(map) = v.as_object_mut() {
        map.remove("nodes");
    }
    v
}

fn run_with_nodes(app: &AppState, run: &RunRecord) -> Result<Value, ApiError> {
    let engine = app.runs.engine();
    let records = engine
        .store()
        .nodes(&run.tenant, &run.id)
        .map_err(ApiError::internal)?;
    let records = match engine.flow_of(run) {
        Ok(flow) => view::in_flow_order(&flow, records),
        Err(_) => records,
    };
    Ok(view::run_json(run, &records))
}

pub async fn list_runs(
    State(app): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(parse_status(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown status `{s}`; use queued, running, waiting, succeeded, failed or cancelled"
            ))
        })?),
    };
    let keep = |r: &RunRecord| {
        q.flow.as_ref().is_none_or(|f| &r.flow == f) && status.is_none_or(|s| r.status == s)
    };
    let store = app.runs.engine().store();
    let runs = match &q.tenant {
        Some(tenant) => store
            .list_runs(tenant, q.after.as_deref(), MAX_SCAN)
            .map_err(ApiError::internal)?
            .into_iter()
            .filter(|r| keep(r))
            .take(limit)
            .collect(),
        None => store
            .list_all_runs(q.after.as_deref(), limit, MAX_SCAN, &keep)
            .map_err(ApiError::internal)?,
    };
    let next_after = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id.clone()))
        .flatten();
    let items: Vec<Value> = runs.iter().map(run_summary).collect();
    Ok(Json(json!({"items": items, "next_after": next_after})))
}

fn parse_status(s: &str) -> Option<RunStatus> {
    Some(match s {
        "queued" => RunStatus::Queued,
        "running" => RunStatus::Running,
        "waiting" => RunStatus::Waiting,
        "succeeded" => RunStatus::Succeeded,
        "failed" => RunStatus::Failed,
        "cancelled" => RunStatus::Cancelled,
        _ => return None,
    })
}

pub async fn show_run(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = app
        .runs
        .engine()
        .store()
        .run_by_id(&id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    Ok(Json(run_with_nodes(&app, &run)?))
}

pub async fn cancel_run(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = app.runs.cancel(&id).await?;
    Ok(Json(run_with_nodes(&app, &run)?))
}

pub async fn retry_run(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = app.runs.retry(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(run_with_nodes(&app, &run)?)).into_response())
}

/// `GET /api/v1/outbox`: per target, the connection, pending and dead
/// counts, the oldest pending age and the last error; and the dead
/// deliveries.
pub async fn outbox(State(app): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(app.outbox.view().map_err(ApiError::internal)?))
}

/// `POST /api/v1/outbox/{id}/retry`: a dead delivery goes out again.
pub async fn retry_delivery(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let d = app.outbox.retry(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(&d).unwrap_or(Value::Null)),
    )
        .into_response())
}
