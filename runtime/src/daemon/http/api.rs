//! `/api/v1`: flows, runs, the `api` trigger and the outbox, each within
//! the caller's [`Scope`].

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use weir_nodes::TriggerKind;
use weir_storage::{Listed, RunRecord, RunStatus};

use super::{ApiError, AppState, Params};
use crate::auth::{Caller, Scope, ScopeError};
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
        "tenants": flow.tenants.to_json(),
        "triggers": trigger_json(app, flow),
    })
}

/// Whether `scope` may see `flow`: a tenant sees the flows that serve it.
fn visible(scope: &Scope, flow: &Flow) -> bool {
    scope.tenant().is_none_or(|t| flow.tenants.serves(t))
}

/// A flow the scope may see; 404 otherwise.
fn flow_in(app: &AppState, scope: &Scope, id: &str) -> Result<Arc<Flow>, ApiError> {
    app.registry
        .get(id)
        .filter(|f| visible(scope, f))
        .ok_or_else(|| ApiError::not_found(format!("no flow '{id}'")))
}

/// Flows; the files that do not load are listed for admins only (they
/// name files and other tenants' flows).
pub async fn list_flows(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    scope: Scope,
) -> Json<Value> {
    let items: Vec<Value> = app
        .registry
        .all()
        .iter()
        .filter(|f| visible(&scope, f))
        .map(|f| flow_summary(&app, f))
        .collect();
    let errors: Vec<Value> = match caller {
        Caller::Admin => app
            .registry
            .errors()
            .iter()
            .map(|e| json!({"file": e.file, "errors": e.to_string().lines().collect::<Vec<_>>()}))
            .collect(),
        Caller::Tenant(_) => Vec::new(),
    };
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
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let flow = flow_in(&app, &scope, &id)?;
    let mut v = flow_summary(&app, &flow);
    v["vars"] = flow.vars.clone();
    v["definition"] = json!(flow.source);
    v["graph"] = graph_json(&flow.graph);
    Ok(Json(v))
}

/// The body of `POST /api/v1/flows/{flow}/runs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    tenant: Option<String>,
    #[serde(default)]
    input: Value,
}

/// The expected shape, for messages.
const START_SHAPE: &str = r#"{"tenant"?: "...", "input"?: <the event's body>}"#;

impl StartBody {
    /// An empty body starts a run with no input.
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        super::json_body(bytes, START_SHAPE).map_err(|mut e| {
            if e.message.starts_with("the body must be") {
                e.message.push_str(" (the input goes under `input`)");
            }
            e
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    wait: Option<u64>,
}

/// `POST /api/v1/flows/{flow}/runs`: the flow's `api` trigger.
/// `POST /api/v1/flows/{flow}/runs`: the flow's `api` trigger, for the
/// token's tenant (a body's `tenant` must be that one); an admin names the
/// tenant in the body, `?tenant=` or `X-Weir-Tenant` (default: the flow's
/// first tenant).
pub async fn start_run(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    scope: Scope,
    Path(id): Path<String>,
    Params(q): Params<WaitQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body = StartBody::parse(&body)?;
    let scope = match (&scope, body.tenant.as_deref()) {
        (_, None) => scope,
        (Scope::All, Some(b)) => caller.scope(Some(b))?,
        (Scope::Tenant(t), Some(b)) if t == b => scope,
        // A tenant naming another (403), or an admin naming two.
        (Scope::Tenant(t), Some(b)) => {
            return Err(match caller {
                Caller::Tenant(own) => ScopeError::OtherTenant {
                    own,
                    asked: b.to_owned(),
                }
                .into(),
                Caller::Admin => ApiError::bad_request(format!(
                    "the body's tenant `{b}` is not the tenant `{t}` the request names"
                )),
            });
        }
    };
    let flow = flow_in(&app, &scope, &id)?;
    let tenant = match scope.tenant() {
        Some(t) => t.to_owned(),
        None => flow.tenants.first().to_owned(),
    };
    if !flow.tenants.serves(&tenant) {
        return Err(ApiError::not_found(format!("no flow '{id}'")));
    }
    let Some((trigger, api)) = flow.api_trigger() else {
        return Err(ApiError::not_found(format!(
            "flow '{id}' has no api trigger"
        )));
    };
    if let Some(schema) = &api.input_schema {
        let errors = schema.check(&body.input, "");
        if !errors.is_empty() {
            return Err(ApiError {
                extra: vec![("details", json!(errors))],
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_input",
                    format!(
                        "the input does not match trigger '{}''s input_schema: {}",
                        trigger.id,
                        weir_nodes::schema::describe(&errors)
                    ),
                )
            });
        }
    }
    metrics::event_received(&flow.id, &trigger.id);
    let now = app.runs.engine().clock().now();
    let event = api.event(&Engine::new_run_id(), &trigger.id, now, body.input);
    let run = app
        .runs
        .admit(&flow, &tenant, &trigger.id, event, |_| Vec::new())
        .await
        .inspect_err(|e| {
            if let crate::daemon::runs::AdmitError::Overloaded(_) = e {
                metrics::event_rejected("overloaded");
            }
        })?;
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

/// `tenant` is read by the [`Scope`] extractor.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    flow: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// The run object without its nodes.
fn run_summary(run: &Listed) -> Value {
    match run {
        Listed::Run(run) => {
            let mut v = view::run_json(run, &[]);
            if let Some(map) = v.as_object_mut() {
                map.remove("nodes");
            }
            v
        }
        Listed::Unreadable(u) => view::unreadable_json(u),
    }
}

fn run_with_nodes(app: &AppState, run: &RunRecord) -> Result<Value, ApiError> {
    let engine = app.runs.engine();
    let records = engine
        .store()
        .nodes(&run.tenant, &run.id)
        .map_err(ApiError::internal)?;
    let records = match engine.flow_of(run) {
        Ok(flow) => view::all_nodes(&flow, records),
        Err(_) => records,
    };
    Ok(view::run_json(run, &records))
}

/// A `status` filter: a run status, or `corrupt` (runs whose record cannot
/// be read).
#[derive(Clone, Copy, PartialEq)]
enum StatusFilter {
    Run(RunStatus),
    Corrupt,
}

/// A run id as `after` takes it (run ids are UUIDs).
fn parse_after(after: Option<&str>) -> Result<Option<&str>, ApiError> {
    match after {
        None => Ok(None),
        Some("") => Err(ApiError::bad_request(
            "`after` is empty; pass the `next_after` of the previous page, or leave it out",
        )),
        Some(id) if uuid::Uuid::parse_str(id).is_ok() => Ok(Some(id)),
        Some(id) => Err(ApiError::bad_request(format!(
            "`after` must be a run id (the `next_after` of the previous page), not `{id}`"
        ))),
    }
}

pub async fn list_runs(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match q.limit {
        None => 50,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "`limit` must be between 1 and {MAX_LIMIT}, not {n}"
            )));
        }
    };
    let after = parse_after(q.after.as_deref())?;
    let status = match q.status.as_deref() {
        None => None,
        Some("corrupt") => Some(StatusFilter::Corrupt),
        Some(s) => Some(StatusFilter::Run(s.parse().map_err(|e: String| {
            ApiError::bad_request(format!("{e}, or corrupt"))
        })?)),
    };
    let keep = |r: &Listed| match r {
        Listed::Run(r) => {
            q.flow.as_ref().is_none_or(|f| &r.flow == f)
                && status.is_none_or(|s| s == StatusFilter::Run(r.status))
        }
        // Its flow and status are unknown: shown unless a filter excludes it.
        Listed::Unreadable(_) => {
            q.flow.is_none() && status.is_none_or(|s| s == StatusFilter::Corrupt)
        }
    };
    let runs = scope
        .runs(
            app.runs.engine().store().as_ref(),
            after,
            limit,
            MAX_SCAN,
            &keep,
        )
        .map_err(ApiError::internal)?;
    let next_after = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id().to_owned()))
        .flatten();
    let items: Vec<Value> = runs.iter().map(run_summary).collect();
    Ok(Json(json!({"items": items, "next_after": next_after})))
}

pub async fn show_run(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match scope.run(app.runs.engine().store().as_ref(), &id) {
        Ok(Some(run)) => Ok(Json(run_with_nodes(&app, &run)?)),
        Ok(None) => Err(ApiError::not_found(format!("no run {id}"))),
        Err(weir_storage::Error::Unreadable(u)) => Ok(Json(view::unreadable_json(&u))),
        Err(e) => Err(ApiError::internal(e)),
    }
}

pub async fn cancel_run(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = app.runs.cancel(&scope, &id).await?;
    Ok(Json(run_with_nodes(&app, &run)?))
}

pub async fn retry_run(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = app.runs.retry(&scope, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(run_with_nodes(&app, &run)?)).into_response())
}

/// `GET /api/v1/outbox`: per target, the connection, pending and dead
/// counts, the oldest pending age and the last error; and the dead
/// deliveries.
pub async fn outbox(
    State(app): State<Arc<AppState>>,
    scope: Scope,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app.outbox.view(&scope).map_err(ApiError::internal)?))
}

/// `POST /api/v1/outbox/{id}/retry`: a dead delivery goes out again.
pub async fn retry_delivery(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let d = app.outbox.retry(&scope, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(&d).unwrap_or(Value::Null)),
    )
        .into_response())
}
