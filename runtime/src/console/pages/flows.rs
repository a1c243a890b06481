//! `/console/flows`: every flow the viewer may see, drawn as its graph,
//! with its triggers; the files that do not load, with each problem's
//! line and column. `/console/flows/{id}`: one flow and its definition.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::{Page, Section, api_error, empty, encode, respond, svg, when, with_tenant};
use crate::console::graph::Drawing;
use crate::console::session::{App, Viewer};
use crate::daemon::http::api::{self, FlowDetail, TriggerView};

pub async fn list(app: App, viewer: Viewer) -> Response {
    let flows = api::list_flows(app.clone(), viewer.caller.clone(), viewer.scope.clone())
        .await
        .0;
    let mut details = Vec::new();
    for f in &flows.items {
        match api::show_flow(app.clone(), viewer.scope.clone(), Path(f.id.clone())).await {
            Ok(d) => details.push(d.0),
            Err(e) => return api_error(e),
        }
    }
    let content = html! {
        h1 { "Flows" }
        @if !flows.errors.is_empty() {
            section.load-errors role="alert" {
                h2 { "Files that do not load" }
                @for file in &flows.errors {
                    div.load-error {
                        h3 { code { (file.file) } }
                        ul { @for e in &file.errors { li { code { (e) } } } }
                    }
                }
            }
        }
        @if details.is_empty() {
            (empty("No flows yet", html! {
                "weir serves the flow files of its flows folder (" code { "--flows" } "). Add a "
                code { ".yaml" } " file there; it is loaded as soon as it is saved."
            }))
        }
        @for flow in &details {
            (flow_card(&viewer, flow, true))
        }
    };
    let page = Page {
        title: "Flows".into(),
        section: Section::Flows,
        viewer: Some(&viewer),
        live: false,
    };
    respond(StatusCode::OK, page.render(content))
}

pub async fn show(app: App, viewer: Viewer, Path(id): Path<String>) -> Response {
    let flow = match api::show_flow(app, viewer.scope.clone(), Path(id)).await {
        Ok(f) => f.0,
        Err(e) => return api_error(e),
    };
    let content = html! {
        (flow_card(&viewer, &flow, false))
        section {
            h2 { "Definition" }
            pre.yaml { code { (flow.definition) } }
        }
    };
    let title = flow
        .summary
        .name
        .clone()
        .unwrap_or_else(|| flow.summary.id.clone());
    let page = Page {
        title,
        section: Section::Flows,
        viewer: Some(&viewer),
        live: false,
    };
    respond(StatusCode::OK, page.render(content))
}

fn flow_card(viewer: &Viewer, flow: &FlowDetail, link: bool) -> Markup {
    let s = &flow.summary;
    let triggers: Vec<(&str, &str)> = s.triggers.iter().map(|t| (t.id.as_str(), t.kind)).collect();
    let drawing = Drawing::of(&flow.graph, &triggers, &|_| None);
    let runs = with_tenant(viewer, &format!("/console/runs?flow={}", encode(&s.id)));
    html! {
        article.flow id={ "flow-" (s.id) } {
            header {
                h2 {
                    @if link { a href=(with_tenant(viewer, &format!("/console/flows/{}", encode(&s.id)))) { (s.id) } }
                    @else { (s.id) }
                }
                @if let Some(name) = &s.name { p.subtitle { (name) } }
                p.meta {
                    code { (s.file) } " · version " code { (s.version.get(..12).unwrap_or(&s.version)) } " · tenants "
                    @match &s.tenants {
                        api::TenantsView::Any(_) => { "any" }
                        api::TenantsView::Listed(keys) => { (keys.join(", ")) }
                    }
                    " · " a href=(runs) { "its runs" }
                }
            }
            table.triggers {
                caption { "Triggers" }
                thead { tr { th { "Trigger" } th { "Type" } th { "When" } } }
                tbody {
                    @for t in &s.triggers { (trigger_row(t)) }
                }
            }
            div.graph-scroll { (svg(drawing.svg())) }
        }
    }
}

fn trigger_row(t: &TriggerView) -> Markup {
    html! {
        tr {
            td { code { (t.id) } }
            td { (t.kind) }
            td {
                @if let Some(schedule) = &t.schedule {
                    code { (schedule) } " (" (t.timezone.as_deref().unwrap_or("UTC")) ")"
                    @match &t.next_fire_at {
                        Some(Some(at)) => { " · next " (when(*at)) }
                        Some(None) => { " · not scheduled" }
                        None => {}
                    }
                } @else if let Some(every) = t.every_s {
                    "every " (every) " s"
                } @else if t.kind == "webhook" {
                    "on each request"
                } @else if t.kind == "api" {
                    "on each API call"
                }
            }
        }
    }
}
