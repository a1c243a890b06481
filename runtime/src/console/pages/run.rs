//! `/console/runs/{id}`: one run — its graph coloured by node status, a
//! timeline of its nodes, each node's error, input and output, the event
//! that started it, and Retry or Cancel where they apply. The page
//! refreshes itself until the run is finished.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Path, Query};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use weir_storage::{NodeStatus, RunStatus};

use super::{
    Page, Posted, Section, api_error, back_to, badge, duration, encode, error_page, json_block,
    post_button, respond, svg, when, with_tenant,
};
use crate::console::graph::{Drawing, escape};
use crate::console::session::{App, Viewer};
use crate::daemon::http::api::{self, GraphView};
use crate::view::{NodeView, RunView};

/// The run, and its flow's graph (of the version it follows).
async fn load(
    app: &App,
    viewer: &Viewer,
    id: &str,
) -> Result<(RunView, Option<GraphView>), Response> {
    let engine = app.runs.engine();
    // The run's record, read once, becomes the API's run object (the
    // handler `GET /api/v1/runs/{id}` builds it the same way).
    let record = match viewer.scope.run(engine.store().as_ref(), id) {
        Ok(Some(record)) => record,
        Ok(None) => return Err(error_page(StatusCode::NOT_FOUND, &format!("no run {id}"))),
        Err(weir_storage::Error::Unreadable(u)) => {
            return Err(error_page(
                StatusCode::CONFLICT,
                &format!("Run {} cannot be read back: {}", u.id, u.error),
            ));
        }
        Err(e) => return Err(api_error(crate::daemon::http::ApiError::internal(e))),
    };
    let run = api::run_with_nodes(app, &record).map_err(api_error)?;
    let graph = engine
        .flow_of(&record)
        .ok()
        .map(|flow| api::graph_view(&flow.graph));
    Ok((run, graph))
}

pub async fn show(app: App, viewer: Viewer, Path(id): Path<String>) -> Response {
    let (run, graph) = match load(&app, &viewer, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let nodes = run.nodes.as_deref().unwrap_or_default();
    let statuses = fold_statuses(nodes);
    let drawing = graph.as_ref().map(|g| {
        Drawing::of(g, &[(run.trigger.as_str(), "trigger")], &|id| {
            statuses.get(id).map(|s| s.as_str().to_owned())
        })
    });
    let preds = drawing.as_ref().map(predecessors).unwrap_or_default();
    let by_key: HashMap<&str, &NodeView> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let finished = run.status.is_finished();
    let base = format!("/console/runs/{}", run.id);
    let content = html! {
        header.run-head {
            h1 { "Run " code { (run.id) } }
            (badge(run.status.as_str()))
            div.actions {
                @if matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
                    (post_button(&viewer, &format!("{base}/retry"), "Retry", "primary", None))
                }
                @if !finished {
                    (post_button(&viewer, &format!("{base}/cancel"), "Cancel", "danger", Some("Cancel this run? Its running nodes' results are dropped.")))
                }
            }
        }
        dl.facts {
            dt { "Flow" } dd { a href=(with_tenant(&viewer, &format!("/console/flows/{}", encode(&run.flow)))) { (run.flow) } " " code.dim { (run.flow_version.get(..12).unwrap_or(&run.flow_version)) } }
            dt { "Tenant" } dd { (run.tenant) }
            dt { "Trigger" } dd { (run.trigger) }
            dt { "Attempt" } dd { (run.attempt) }
            dt { "Created" } dd { (when(run.created_at)) }
            @if let Some(s) = run.started_at { dt { "Started" } dd { (when(s)) } }
            @if let Some(f) = run.finished_at {
                dt { "Finished" } dd { (when(f)) @if let Some(s) = run.started_at { " · took " (duration(s, f)) } }
            }
        }
        @if let Some(error) = &run.error {
            section.run-error role="alert" { h2 { "Error" } pre.error { (error) } }
        }
        @if let Some(d) = &drawing {
            section { h2 { "Graph" } div.graph-scroll { (svg(d.svg())) } }
        } @else {
            p.note { "The flow version this run follows is no longer loaded; its graph cannot be drawn." }
        }
        section {
            h2 { "Timeline" }
            (timeline(&run, nodes))
        }
        section.nodes {
            h2 { "Nodes" }
            @for n in nodes {
                (node_block(n, &preds, &by_key, &base, &viewer))
            }
        }
        section {
            details #event {
                summary { h2 { "The event that started it" } }
                (json_block(&run.event, &with_tenant(&viewer, &format!("{base}/json?part=event"))))
            }
        }
    };
    let page = Page {
        title: format!("Run {}", run.id.get(..8).unwrap_or(&run.id)),
        section: Section::Runs,
        viewer: Some(&viewer),
        live: !finished,
    };
    respond(StatusCode::OK, page.render(content))
}

/// A node's status in the graph: a loop body's node folds its
/// iterations (failed over running over waiting over succeeded).
fn fold_statuses(nodes: &[NodeView]) -> HashMap<String, NodeStatus> {
    fn rank(s: NodeStatus) -> u8 {
        match s {
            NodeStatus::Failed => 6,
            NodeStatus::Running => 5,
            NodeStatus::Waiting => 4,
            NodeStatus::Succeeded => 3,
            NodeStatus::Skipped => 2,
            NodeStatus::Pending => 1,
        }
    }
    let mut out: HashMap<String, NodeStatus> = HashMap::new();
    for n in nodes {
        let id = n.id.rsplit('.').next().unwrap_or(&n.id).to_owned();
        let e = out.entry(id).or_insert(n.status);
        if rank(n.status) > rank(*e) {
            *e = n.status;
        }
    }
    out
}

/// Per node id, the nodes whose edges lead to it (in the same graph).
fn predecessors(d: &Drawing) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for e in &d.edges {
        if matches!(e.route.as_str(), "start" | "each") {
            continue;
        }
        out.entry(d.nodes[e.to].id.clone())
            .or_default()
            .push(d.nodes[e.from].id.clone());
    }
    out
}

/// A node's input: the outputs of the nodes before it (in the same loop
/// iteration), by their keys.
fn input_of(
    key: &str,
    preds: &HashMap<String, Vec<String>>,
    by_key: &HashMap<&str, &NodeView>,
) -> Value {
    let prefix = prefix_of(key);
    let id = key.rsplit('.').next().unwrap_or(key);
    Value::Object(
        preds
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let r = by_key.get(format!("{prefix}{p}").as_str())?;
                Some((r.id.clone(), r.output.clone()?))
            })
            .collect(),
    )
}

/// `loop[2].` of `loop[2].step`: the key's enclosing loops.
fn prefix_of(key: &str) -> &str {
    key.rfind('.').map_or("", |i| &key[..=i])
}

fn node_block(
    n: &NodeView,
    preds: &HashMap<String, Vec<String>>,
    by_key: &HashMap<&str, &NodeView>,
    base: &str,
    viewer: &Viewer,
) -> Markup {
    let status = n.status.as_str();
    let input = input_of(&n.id, preds, by_key);
    let open = n.status == NodeStatus::Failed;
    let link = |part: &str| {
        with_tenant(
            viewer,
            &format!("{base}/json?node={}&part={part}", encode(&n.id)),
        )
    };
    html! {
        details.node-detail id={ "node-" (n.id) } data-node=(n.id) open[open] {
            summary {
                (badge(status)) " " code { (n.id) }
                span.dim {
                    @if n.attempts > 1 { " · " (n.attempts) " attempts" }
                    @if let (Some(s), Some(f)) = (n.started_at, n.finished_at) { " · " (duration(s, f)) }
                    @if let Some(w) = n.wake_at { " · wakes " (when(w)) }
                }
            }
            @if let Some(error) = &n.error {
                h3 { "Error" }
                pre.error { (error) }
            }
            @if input.as_object().is_some_and(|i| !i.is_empty()) {
                h3 { "Input " span.dim { "(the outputs of the nodes before it, as " code { "nodes.ID.output" } ")" } }
                (json_block(&input, &link("input")))
            }
            @if let Some(output) = &n.output {
                h3 { "Output" }
                (json_block(output, &link("output")))
            } @else if n.status == NodeStatus::Pending {
                p.dim { "Not reached." }
            }
        }
    }
}

/// Each node that started, as a bar from its start to its end, on one
/// time axis from the run's start.
fn timeline(run: &RunView, nodes: &[NodeView]) -> Markup {
    let started: Vec<&NodeView> = nodes.iter().filter(|n| n.started_at.is_some()).collect();
    if started.is_empty() {
        return html! { p.dim { "No node has started yet." } };
    }
    let now = Utc::now();
    let t0 = run.started_at.unwrap_or(run.created_at);
    let end_of = |n: &NodeView| {
        n.finished_at.unwrap_or(if run.status.is_finished() {
            n.started_at.unwrap_or(t0)
        } else {
            now
        })
    };
    let t1 = started
        .iter()
        .map(|n| end_of(n))
        .chain(run.finished_at)
        .max()
        .unwrap_or(t0);
    let span = (t1 - t0).num_microseconds().unwrap_or(1).max(1) as f64;
    let at = |t: DateTime<Utc>| {
        ((t - t0).num_microseconds().unwrap_or(0).max(0) as f64 / span) * 520.0 + 200.0
    };
    let (row, height) = (22.0, started.len() as f64 * 22.0 + 24.0);
    let mut s = format!(
        r#"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 740 {height:.0}" width="740" height="{height:.0}" role="img" aria-label="Node timeline">"#
    );
    for (i, n) in started.iter().enumerate() {
        let y = i as f64 * row + 4.0;
        let (a, b) = (at(n.started_at.unwrap_or(t0)), at(end_of(n)));
        let took = n
            .finished_at
            .zip(n.started_at)
            .map(|(f, s)| duration(s, f))
            .unwrap_or_else(|| "…".into());
        let _ = write!(
            s,
            r#"<g class="bar status-{st}"><title>{id}: {took}{att}</title><text class="name" x="0" y="{ty:.1}">{id}</text><rect x="{a:.1}" y="{y:.1}" width="{w:.1}" height="14" rx="3"/><text class="took" x="{tx:.1}" y="{ty:.1}">{took}</text></g>"#,
            st = n.status.as_str(),
            id = escape(&n.id),
            att = if n.attempts > 1 {
                format!(", {} attempts", n.attempts)
            } else {
                String::new()
            },
            ty = y + 11.0,
            w = (b - a).max(2.0),
            tx = (b + 4.0).min(690.0),
        );
    }
    let _ = write!(
        s,
        r#"<text class="axis" x="200" y="{y:.0}">0</text><text class="axis end" x="720" y="{y:.0}">{total}</text></svg>"#,
        y = height - 4.0,
        total = duration(t0, t1)
    );
    svg(s)
}

#[derive(Deserialize)]
pub struct Part {
    node: Option<String>,
    part: String,
}

/// The whole of one value of a run (what a page cuts).
pub async fn json(
    app: App,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<Part>,
) -> Response {
    let (run, graph) = match load(&app, &viewer, &id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let nodes = run.nodes.as_deref().unwrap_or_default();
    let value = match (q.part.as_str(), q.node.as_deref()) {
        ("event", _) => Some(run.event.clone()),
        ("output", Some(key)) => nodes
            .iter()
            .find(|n| n.id == key)
            .and_then(|n| n.output.clone()),
        ("input", Some(key)) => graph.map(|g| {
            let preds = predecessors(&Drawing::of(&g, &[], &|_| None));
            let by_key: HashMap<&str, &NodeView> =
                nodes.iter().map(|n| (n.id.as_str(), n)).collect();
            input_of(key, &preds, &by_key)
        }),
        _ => None,
    };
    match value {
        Some(v) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string_pretty(&v).unwrap_or_default(),
        )
            .into_response(),
        None => error_page(StatusCode::NOT_FOUND, "This run has no such value."),
    }
}

/// Retry or Cancel, then back to the run.
pub async fn act(
    app: App,
    Path((id, action)): Path<(String, String)>,
    Posted(viewer): Posted,
) -> Response {
    let scope = viewer.scope.clone();
    let done = match action.as_str() {
        "retry" => api::retry_run(app, scope, Path(id.clone())).await.map(drop),
        "cancel" => api::cancel_run(app, scope, Path(id.clone()))
            .await
            .map(drop),
        _ => return error_page(StatusCode::NOT_FOUND, "There is no such action on a run."),
    };
    back_to(&viewer, done, &format!("/console/runs/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Caller, Scope};
    use serde_json::json;

    fn viewer() -> Viewer {
        Viewer {
            caller: Caller::Admin,
            scope: Scope::All,
            csrf: "c".into(),
            open: false,
        }
    }

    fn node(id: &str, status: NodeStatus, output: Option<Value>, error: Option<&str>) -> NodeView {
        NodeView {
            id: id.into(),
            status,
            attempts: 1,
            started_at: None,
            finished_at: None,
            wake_at: None,
            output,
            error: error.map(str::to_owned),
        }
    }

    fn run(nodes: Vec<NodeView>) -> RunView {
        RunView {
            id: "0190f000-0000-7000-8000-000000000001".into(),
            flow: "f".into(),
            flow_version: "v".into(),
            tenant: "a".into(),
            trigger: "t".into(),
            connection: None,
            attempt: 1,
            status: RunStatus::Failed,
            event: json!({"body": "<img src=x onerror=alert(1)>"}),
            error: Some("node 'b' failed: <script>".into()),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            nodes: Some(nodes),
        }
    }

    #[test]
    fn markup_in_outputs_errors_and_inputs_renders_as_text() {
        let a = node(
            "a",
            NodeStatus::Succeeded,
            Some(json!({"html": "<script>alert(1)</script>"})),
            None,
        );
        let b = node(
            "b",
            NodeStatus::Failed,
            None,
            Some("</pre><script>alert(2)</script>"),
        );
        let r = run(vec![a, b]);
        let nodes = r.nodes.as_deref().unwrap_or_default();
        let preds = HashMap::from([("b".to_owned(), vec!["a".to_owned()])]);
        let by_key: HashMap<&str, &NodeView> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        let html: String = nodes
            .iter()
            .map(|n| node_block(n, &preds, &by_key, "/console/runs/x", &viewer()).into_string())
            .collect();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;/pre&gt;&lt;script&gt;alert(2)"),
            "{html}"
        );
        // b's input is a's output, escaped too.
        assert_eq!(html.matches("alert(1)").count(), 2, "{html}");
    }

    #[test]
    fn loop_iterations_fold_into_their_body_node() {
        let nodes = vec![
            node("each", NodeStatus::Running, None, None),
            node("each[0].step", NodeStatus::Succeeded, None, None),
            node("each[1].step", NodeStatus::Failed, None, None),
            node("each[2].step", NodeStatus::Running, None, None),
        ];
        let s = fold_statuses(&nodes);
        assert_eq!(s["step"], NodeStatus::Failed);
        assert_eq!(s["each"], NodeStatus::Running);
        assert_eq!(prefix_of("each[1].step"), "each[1].");
        assert_eq!(prefix_of("step"), "");
    }
}
