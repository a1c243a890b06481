//! `/api/v1`: flows, runs, the `api` trigger and the outbox, each within
//! the caller's [`Scope`].

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use weir_nodes::TriggerKind;
use weir_storage::{DeliveryRecord, Listed, RunRecord, RunStatus};

use super::{ApiError, AppState, ErrorBody, Params, TenantChoice};
use crate::auth::{Caller, Scope};
use crate::daemon::outbox::OutboxView;
use crate::engine::Engine;
use crate::flow::{Flow, Graph};
use crate::metrics;
use crate::view;
use crate::view::{AnyRun, RunView};

/// The most runs one list answers.
const MAX_LIMIT: usize = 500;
/// How many runs one list looks at, filters included.
const MAX_SCAN: usize = 20_000;
/// The longest `?wait=`.
const MAX_WAIT: u64 = 300;

/// A trigger of a flow.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerView {
    pub id: String,
    /// `webhook`, `cron`, `poll`, `api`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A cron trigger's schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// A cron trigger's time zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// When a cron trigger fires next (`null` while it is not scheduled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_fire_at: Option<Option<DateTime<Utc>>>,
    /// A poll trigger's interval, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every_s: Option<f64>,
}

/// A flow, as lists show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowSummary {
    pub id: String,
    pub name: Option<String>,
    /// The hash of its definition.
    pub version: String,
    /// The file it was loaded from.
    pub file: String,
    pub tenants: TenantsView,
    pub triggers: Vec<TriggerView>,
}

/// The tenants a flow serves: their keys, or `"*"` for every tenant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TenantsView {
    Listed(Vec<String>),
    /// `"*"`
    #[schema(value_type = String)]
    Any(&'static str),
}

/// A file of the flows folder that does not load.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowFileError {
    pub file: String,
    /// Each problem, with its line and column.
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlowList {
    pub items: Vec<FlowSummary>,
    /// The files that do not load (admins only; empty for a tenant).
    pub errors: Vec<FlowFileError>,
}

/// A flow with its definition and graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowDetail {
    #[serde(flatten)]
    pub summary: FlowSummary,
    /// The flow's `vars`.
    pub vars: Value,
    /// The YAML it was loaded from.
    pub definition: String,
    pub graph: GraphView,
}

/// Nodes and edges; a `for_each` node holds its body's graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphView {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GraphNode {
    pub id: String,
    /// The node's type (`http`, `map`, `branch`, `deliver`, ...).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A `for_each` node's body.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub body: Option<Box<GraphView>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    /// How it is taken: `next`, `then`, `else`, `case N`, `default`,
    /// `on_error`.
    pub route: String,
}

fn trigger_views(app: &AppState, flow: &Flow) -> Vec<TriggerView> {
    flow.triggers
        .iter()
        .map(|t| {
            let mut v = TriggerView {
                id: t.id.clone(),
                kind: t.kind.type_name(),
                schedule: None,
                timezone: None,
                next_fire_at: None,
                every_s: None,
            };
            if let TriggerKind::Cron(c) = &t.kind {
                v.schedule = Some(c.schedule_text.clone());
                v.timezone = Some(c.timezone.name().to_owned());
                v.next_fire_at = Some(app.schedules.next_fire_at(&flow.id, &t.id));
            }
            if let TriggerKind::Poll(p) = &t.kind {
                v.every_s = Some(p.every.as_secs_f64());
            }
            v
        })
        .collect()
}

fn flow_summary(app: &AppState, flow: &Flow) -> FlowSummary {
    FlowSummary {
        id: flow.id.clone(),
        name: flow.name.clone(),
        version: flow.version.clone(),
        file: flow.file.clone(),
        tenants: match &flow.tenants {
            crate::flow::Tenants::Listed(keys) => TenantsView::Listed(keys.clone()),
            crate::flow::Tenants::Any => TenantsView::Any("*"),
        },
        triggers: trigger_views(app, flow),
    }
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
#[utoipa::path(get, path = "/api/v1/flows", tag = "flows",
    params(TenantChoice),
    responses((status = 200, description = "The flows the caller may see", body = FlowList)))]
pub async fn list_flows(
    State(app): State<Arc<AppState>>,
    caller: Caller,
    scope: Scope,
) -> Json<FlowList> {
    let items = app
        .registry
        .all()
        .iter()
        .filter(|f| visible(&scope, f))
        .map(|f| flow_summary(&app, f))
        .collect();
    let errors = match caller {
        Caller::Admin => app
            .registry
            .errors()
            .iter()
            .map(|e| FlowFileError {
                file: e.file.clone(),
                errors: e.to_string().lines().map(str::to_owned).collect(),
            })
            .collect(),
        Caller::Tenant(_) => Vec::new(),
    };
    Json(FlowList { items, errors })
}

pub(crate) fn graph_view(graph: &Graph) -> GraphView {
    let nodes = graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| GraphNode {
            id: n.id.clone(),
            kind: n.kind.type_name(),
            body: graph.bodies[i].as_ref().map(|b| Box::new(graph_view(b))),
        })
        .collect();
    let edges = graph
        .edges
        .iter()
        .map(|e| GraphEdge {
            from: graph.nodes[e.from].id.clone(),
            to: graph.nodes[e.to].id.clone(),
            route: e.route.label(),
        })
        .collect();
    GraphView { nodes, edges }
}

#[utoipa::path(get, path = "/api/v1/flows/{flow}", tag = "flows",
    params(("flow" = String, Path, description = "The flow's id"), TenantChoice),
    responses(
        (status = 200, description = "The flow", body = FlowDetail),
        (status = 404, description = "No such flow for the caller", body = ErrorBody)))]
pub async fn show_flow(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<FlowDetail>, ApiError> {
    let flow = flow_in(&app, &scope, &id)?;
    Ok(Json(FlowDetail {
        summary: flow_summary(&app, &flow),
        vars: flow.vars.clone(),
        definition: flow.source.clone(),
        graph: graph_view(&flow.graph),
    }))
}

/// The body of `POST /api/v1/flows/{flow}/runs` (it may be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The event's body: what the flow reads as `event.body`.
    #[serde(default)]
    input: Value,
}

/// The expected shape, for messages.
const START_SHAPE: &str = r#"{"input"?: <the event's body>}"#;

impl StartBody {
    /// An empty body starts a run with no input.
    fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        let text = bytes.trim_ascii();
        if text.is_empty() || text == b"null" {
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait for the run to finish (at most 300).
    #[param(minimum = 0)]
    wait: Option<u64>,
}

/// A run accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunStarted {
    pub run_id: String,
}

/// What starting a run answers: its id, or with `?wait=` the run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum StartAnswer {
    Started(RunStarted),
    Run(Box<RunView>),
}

/// `POST /api/v1/flows/{flow}/runs`: the flow's `api` trigger, for the
/// token's tenant; an admin names the tenant with `X-Weir-Tenant` or
/// `?tenant=` (default: the flow's first tenant).
#[utoipa::path(post, path = "/api/v1/flows/{flow}/runs", tag = "flows",
    params(("flow" = String, Path, description = "The flow's id"), WaitQuery, TenantChoice),
    request_body(content = StartBody, description = "The run's input; an empty body (or `null`) starts a run without one"),
    responses(
        (status = 200, description = "With `?wait=`: the run, finished", body = RunView),
        (status = 202, description = "The run is accepted (durable); with `?wait=`, the run, not finished yet", body = StartAnswer),
        (status = 404, description = "No such flow for the tenant, or it has no api trigger", body = ErrorBody),
        (status = 422, description = "The input does not match the trigger's `input_schema` (`invalid_input`)", body = ErrorBody),
        (status = 429, description = "Too many runs are waiting (`overloaded`); try again after `Retry-After`", body = ErrorBody),
        (status = 503, description = "weir cannot store the event now", body = ErrorBody)))]
pub async fn start_run(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
    Params(q): Params<WaitQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body = StartBody::parse(&body)?;
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
            let message = format!(
                "the input does not match trigger '{}''s input_schema: {}",
                trigger.id,
                weir_nodes::schema::describe(&errors)
            );
            return Err(ApiError::invalid_input(message, errors));
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
                Some(done) => Ok(Json(run_with_nodes(&app, &done)?).into_response()),
                None => {
                    let current = app
                        .runs
                        .engine()
                        .store()
                        .run_by_id(&run.id)
                        .map_err(ApiError::internal)?
                        .unwrap_or(run);
                    let run = StartAnswer::Run(Box::new(run_with_nodes(&app, &current)?));
                    Ok((StatusCode::ACCEPTED, Json(run)).into_response())
                }
            }
        }
        None => {
            let started = StartAnswer::Started(RunStarted { run_id: run.id });
            Ok((StatusCode::ACCEPTED, Json(started)).into_response())
        }
    }
}

/// `tenant` is read by the [`Scope`] extractor.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this flow's runs.
    pub flow: Option<String>,
    /// Only runs started by this trigger (its id).
    pub trigger: Option<String>,
    /// Only runs in this status (`corrupt`: runs whose record cannot be
    /// read).
    #[param(pattern = "^(queued|running|waiting|succeeded|failed|cancelled|corrupt)$")]
    pub status: Option<String>,
    /// Runs per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The `next_after` of the previous page.
    #[param(format = "uuid")]
    pub after: Option<String>,
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    /// The runs, without their nodes.
    pub items: Vec<AnyRun>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<String>,
}

/// The run object without its nodes.
fn run_summary(run: &Listed) -> AnyRun {
    match run {
        Listed::Run(run) => AnyRun::Run(view::run_view(run, None)),
        Listed::Unreadable(u) => AnyRun::Corrupt(view::corrupt_view(u)),
    }
}

pub(crate) fn run_with_nodes(app: &AppState, run: &RunRecord) -> Result<RunView, ApiError> {
    let engine = app.runs.engine();
    let records = engine
        .store()
        .nodes(&run.tenant, &run.id)
        .map_err(ApiError::internal)?;
    let records = match engine.flow_of(run) {
        Ok(flow) => view::all_nodes(&flow, records),
        Err(_) => records,
    };
    Ok(view::run_view(run, Some(&records)))
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

#[utoipa::path(get, path = "/api/v1/runs", tag = "runs",
    params(ListQuery, TenantChoice),
    responses((status = 200, description = "The caller's runs, newest first", body = RunPage)))]
pub async fn list_runs(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Params(q): Params<ListQuery>,
) -> Result<Json<RunPage>, ApiError> {
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
                && q.trigger.as_ref().is_none_or(|t| &r.trigger == t)
                && status.is_none_or(|s| s == StatusFilter::Run(r.status))
        }
        // Its flow and status are unknown: shown unless a filter excludes it.
        Listed::Unreadable(_) => {
            q.flow.is_none()
                && q.trigger.is_none()
                && status.is_none_or(|s| s == StatusFilter::Corrupt)
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
    let items = runs.iter().map(run_summary).collect();
    Ok(Json(RunPage { items, next_after }))
}

#[utoipa::path(get, path = "/api/v1/runs/{run}", tag = "runs",
    params(("run" = String, Path, description = "The run's id"), TenantChoice),
    responses(
        (status = 200, description = "The run with every node", body = AnyRun),
        (status = 404, description = "No such run for the caller", body = ErrorBody)))]
pub async fn show_run(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<AnyRun>, ApiError> {
    match scope.run(app.runs.engine().store().as_ref(), &id) {
        Ok(Some(run)) => Ok(Json(AnyRun::Run(run_with_nodes(&app, &run)?))),
        Ok(None) => Err(ApiError::not_found(format!("no run {id}"))),
        Err(weir_storage::Error::Unreadable(u)) => {
            Ok(Json(AnyRun::Corrupt(view::corrupt_view(&u))))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// `POST /api/v1/runs/{run}/cancel`: an unfinished run stops; its
/// running nodes' results are dropped.
#[utoipa::path(post, path = "/api/v1/runs/{run}/cancel", tag = "runs",
    params(("run" = String, Path, description = "The run's id"), TenantChoice),
    responses(
        (status = 200, description = "The run, cancelled", body = RunView),
        (status = 404, description = "No such run for the caller", body = ErrorBody),
        (status = 409, description = "The run is finished, or cannot be read", body = ErrorBody)))]
pub async fn cancel_run(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let run = app.runs.cancel(&scope, &id).await?;
    Ok(Json(run_with_nodes(&app, &run)?))
}

/// `POST /api/v1/runs/{run}/retry`: a failed or cancelled run runs again
/// from its failed nodes.
#[utoipa::path(post, path = "/api/v1/runs/{run}/retry", tag = "runs",
    params(("run" = String, Path, description = "The run's id"), TenantChoice),
    responses(
        (status = 202, description = "The run, running again", body = RunView),
        (status = 404, description = "No such run for the caller", body = ErrorBody),
        (status = 409, description = "The run is not failed or cancelled, or cannot be read", body = ErrorBody),
        (status = 429, description = "Too many runs are waiting (`overloaded`)", body = ErrorBody)))]
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
#[utoipa::path(get, path = "/api/v1/outbox", tag = "outbox",
    params(TenantChoice),
    responses((status = 200, description = "The outbox, per target", body = OutboxView)))]
pub async fn outbox(
    State(app): State<Arc<AppState>>,
    scope: Scope,
) -> Result<Json<OutboxView>, ApiError> {
    Ok(Json(app.outbox.view(&scope).map_err(ApiError::internal)?))
}

/// `POST /api/v1/outbox/{id}/retry`: a dead delivery goes out again.
#[utoipa::path(post, path = "/api/v1/outbox/{id}/retry", tag = "outbox",
    params(("id" = String, Path, description = "The delivery's id"), TenantChoice),
    responses(
        (status = 202, description = "The delivery, pending again", body = DeliveryRecord),
        (status = 404, description = "No such delivery for the caller", body = ErrorBody),
        (status = 409, description = "The delivery is not dead", body = ErrorBody)))]
pub async fn retry_delivery(
    State(app): State<Arc<AppState>>,
    scope: Scope,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<DeliveryRecord>), ApiError> {
    let d = app.outbox.retry(&scope, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}
