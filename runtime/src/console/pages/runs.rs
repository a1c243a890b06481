//! `/console/runs`: the viewer's runs, newest first, filtered by flow,
//! status and trigger (and tenant, for an admin), a page at a time; the
//! first page refreshes itself while it is open.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Page, Section, api_error, badge, duration, empty, encode, respond, when, with_tenant};
use crate::console::session::{App, Viewer};
use crate::daemon::http::Params;
use crate::daemon::http::api::{self, ListQuery};
use crate::view::AnyRun;

/// Runs per page.
const PER_PAGE: usize = 50;

const STATUSES: &[&str] = &[
    "queued",
    "running",
    "waiting",
    "succeeded",
    "failed",
    "cancelled",
    "corrupt",
];

#[derive(Deserialize, Default)]
pub struct Filters {
    flow: Option<String>,
    status: Option<String>,
    trigger: Option<String>,
    after: Option<String>,
}

impl Filters {
    /// Empty fields of the form mean "any".
    fn tidy(mut self) -> Self {
        for f in [
            &mut self.flow,
            &mut self.status,
            &mut self.trigger,
            &mut self.after,
        ] {
            if f.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *f = None;
            }
        }
        self
    }

    /// This page's URL with `after` set (or left out).
    fn url(&self, viewer: &Viewer, after: Option<&str>) -> String {
        let mut q = Vec::new();
        for (k, v) in [
            ("flow", &self.flow),
            ("status", &self.status),
            ("trigger", &self.trigger),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        if let Some(a) = after {
            q.push(format!("after={}", encode(a)));
        }
        let path = if q.is_empty() {
            "/console/runs".to_owned()
        } else {
            format!("/console/runs?{}", q.join("&"))
        };
        with_tenant(viewer, &path)
    }
}

pub async fn list(app: App, viewer: Viewer, Query(f): Query<Filters>) -> Response {
    let f = f.tidy();
    let query = ListQuery {
        flow: f.flow.clone(),
        trigger: f.trigger.clone(),
        status: f.status.clone(),
        limit: Some(PER_PAGE),
        after: f.after.clone(),
    };
    let page = match api::list_runs(app.clone(), viewer.scope.clone(), Params(query)).await {
        Ok(p) => p.0,
        Err(e) => return api_error(e),
    };
    let flows = api::list_flows(app, viewer.caller.clone(), viewer.scope.clone())
        .await
        .0;
    let filtered = f.flow.is_some() || f.status.is_some() || f.trigger.is_some();
    let content = html! {
        h1 { "Runs" }
        form.filters method="get" action="/console/runs" {
            @if let Some(t) = viewer.picked() { input type="hidden" name="tenant" value=(t); }
            label { "Flow "
                select name="flow" {
                    option value="" { "any" }
                    @for fl in &flows.items {
                        option value=(fl.id) selected[f.flow.as_deref() == Some(fl.id.as_str())] { (fl.id) }
                    }
                }
            }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in STATUSES {
                        option value=(s) selected[f.status.as_deref() == Some(*s)] { (s) }
                    }
                }
            }
            label { "Trigger "
                input type="text" name="trigger" value=(f.trigger.as_deref().unwrap_or("")) size="10" placeholder="any";
            }
            button type="submit" { "Filter" }
            @if filtered { a.clear href=(with_tenant(&viewer, "/console/runs")) { "Clear" } }
        }
        @if page.items.is_empty() {
            @if filtered || f.after.is_some() {
                (empty("No runs match", html! { "No run matches these filters. " a href=(with_tenant(&viewer, "/console/runs")) { "Show every run" } }))
            } @else {
                (empty("No runs yet", html! {
                    "A run starts when a trigger fires: a webhook arrives, a schedule comes round, a poll sees a change, or "
                    code { "POST /api/v1/flows/FLOW/runs" } " is called. " a href=(with_tenant(&viewer, "/console/flows")) { "See the flows" }
                }))
            }
        } @else {
            div.table-scroll {
                table.runs {
                    thead { tr { th { "Status" } th { "Run" } th { "Flow" } th { "Tenant" } th { "Trigger" } th { "Attempt" } th { "Started" } th { "Took" } } }
                    tbody { @for r in &page.items { (row(&viewer, r)) } }
                }
            }
        }
        nav.pages aria-label="Pages" {
            @if f.after.is_some() { a href=(f.url(&viewer, None)) { "← Newest" } }
            @if let Some(next) = &page.next_after { a href=(f.url(&viewer, Some(next))) { "Older →" } }
        }
    };
    let shell = Page {
        title: "Runs".into(),
        section: Section::Runs,
        viewer: Some(&viewer),
        live: f.after.is_none(),
    };
    respond(StatusCode::OK, shell.render(content))
}

fn row(viewer: &Viewer, run: &AnyRun) -> Markup {
    match run {
        AnyRun::Run(r) => {
            let status = r.status.as_str();
            let href = with_tenant(viewer, &format!("/console/runs/{}", r.id));
            html! {
                tr class={ "run status-" (status) } data-run=(r.id) {
                    td { (badge(status)) }
                    td { a href=(href) { code { (r.id.get(..13).unwrap_or(&r.id)) "…" } } }
                    td { (r.flow) }
                    td { (r.tenant) }
                    td { (r.trigger) }
                    td.num { (r.attempt) }
                    td { (when(r.started_at.unwrap_or(r.created_at))) }
                    td.num {
                        @if let (Some(s), Some(e)) = (r.started_at, r.finished_at) { (duration(s, e)) }
                    }
                }
            }
        }
        AnyRun::Corrupt(c) => html! {
            tr.run.status-corrupt data-run=(c.id) {
                td { (badge("corrupt")) }
                td { code { (c.id) } }
                td colspan="6" { (c.error) }
            }
        },
    }
}
