//! `/console/outbox`: per kind of target, what waits and what is dead;
//! deliveries that are failing or dead with their last error; Retry on a
//! dead one.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use weir_storage::{DeliveryRecord, DeliveryStatus};

use super::{
    Page, Posted, Section, api_error, back_to, badge, empty, post_button, respond, when,
    with_tenant,
};
use crate::console::session::{App, Viewer};
use crate::daemon::http::api;

pub async fn list(app: App, viewer: Viewer) -> Response {
    let outbox = match api::outbox(app, viewer.scope.clone()).await {
        Ok(o) => o.0,
        Err(e) => return api_error(e),
    };
    let content = html! {
        h1 { "Outbox" }
        div.table-scroll {
            table.targets {
                thead { tr { th { "Target" } th { "Connected" } th.num { "Pending" } th.num { "Failing" } th.num { "Dead" } th { "Oldest pending" } th { "Last error" } } }
                tbody {
                    @for t in &outbox.targets {
                        tr data-target=(t.target) {
                            td { (t.target) }
                            td { @if t.connected { "yes" } @else { span.error-text { "no" } } }
                            td.num { (t.pending) }
                            td.num { (t.failing) }
                            td.num { (t.dead) }
                            td { @if t.pending > 0 { (format!("{:.1} s", t.oldest_pending_age_s)) } @else { span.dim { "—" } } }
                            td { @if let Some(e) = &t.last_error { span.error-text { (e) } } }
                        }
                    }
                }
            }
        }
        h2 { "Dead deliveries" }
        @if outbox.dead.is_empty() {
            (empty("Nothing is dead", html! { "A delivery is dead when it ran out of attempts; it waits here to be retried." }))
        } @else {
            (deliveries(&viewer, &outbox.dead, true))
        }
        h2 { "Failing" }
        @if outbox.failing.is_empty() {
            p.dim { "No pending delivery has failed its last attempt." }
        } @else {
            (deliveries(&viewer, &outbox.failing, false))
        }
    };
    let page = Page {
        title: "Outbox".into(),
        section: Section::Outbox,
        viewer: Some(&viewer),
        live: true,
    };
    respond(StatusCode::OK, page.render(content))
}

fn deliveries(viewer: &Viewer, list: &[DeliveryRecord], retry: bool) -> Markup {
    html! {
        div.table-scroll {
            table.deliveries {
                thead { tr { th { "Status" } th { "Delivery" } th { "Run" } th { "Tenant" } th.num { "Attempts" } th { "Created" } th { "Last error" } @if retry { th {} } } }
                tbody {
                    @for d in list {
                        tr data-delivery=(d.id) {
                            td { (badge(match d.status { DeliveryStatus::Pending => "pending", DeliveryStatus::Dead => "dead" })) }
                            td { code { (d.id.get(..13).unwrap_or(&d.id)) } " " span.dim { (d.node) } }
                            td { a href=(with_tenant(viewer, &format!("/console/runs/{}", d.run))) { code { (d.run.get(..13).unwrap_or(&d.run)) "…" } } }
                            td { (d.tenant) }
                            td.num { (d.attempts) }
                            td { (when(d.created_at)) }
                            td { @if let Some(e) = &d.last_error { span.error-text { (e) } } }
                            @if retry { td { (post_button(viewer, &format!("/console/outbox/{}/retry", d.id), "Retry", "", None)) } }
                        }
                    }
                }
            }
        }
    }
}

pub async fn retry(app: App, Path(id): Path<String>, Posted(viewer): Posted) -> Response {
    let done = api::retry_delivery(app, viewer.scope.clone(), Path(id)).await;
    back_to(&viewer, done.map(drop), "/console/outbox")
}
