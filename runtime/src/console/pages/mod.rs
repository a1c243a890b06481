//! The page shell (header, navigation, tenant picker) and what pages
//! share: status badges, times, JSON blocks, error pages. Each page has a
//! module; each reads through the API's handlers.

pub mod connections;
pub mod flows;
pub mod outbox;
pub mod run;
pub mod runs;
pub mod sign_in;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

use super::json;
use super::session::Viewer;
use crate::auth::Caller;
use crate::daemon::http::ApiError;

/// The section a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Flows,
    Runs,
    Connections,
    Outbox,
    None,
}

/// A page: the shell around `content`. `live` makes the script re-fetch
/// the page every few seconds and swap its `<main>`.
pub struct Page<'a> {
    pub title: String,
    pub section: Section,
    pub viewer: Option<&'a Viewer>,
    pub live: bool,
}

impl Page<'_> {
    pub fn render(self, content: Markup) -> Markup {
        let v = super::asset_version();
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="color-scheme" content="light dark";
                    link rel="icon" href="data:,";
                    title { (self.title) " · weir" }
                    link rel="stylesheet" href={ "/console/assets/console.css?v=" (v) };
                    script src={ "/console/assets/console.js?v=" (v) } defer {}
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        a.brand href="/console/runs" { "weir" }
                        @if let Some(viewer) = self.viewer {
                            nav aria-label="Sections" {
                                (nav_link(viewer, "/console/flows", "Flows", self.section == Section::Flows))
                                (nav_link(viewer, "/console/runs", "Runs", self.section == Section::Runs))
                                (nav_link(viewer, "/console/connections", "Connections", self.section == Section::Connections))
                                (nav_link(viewer, "/console/outbox", "Outbox", self.section == Section::Outbox))
                            }
                            div.who {
                                @match &viewer.caller {
                                    Caller::Admin => {
                                        form.tenant-picker method="get" {
                                            label for="tenant-pick" { "Tenant" }
                                            input #tenant-pick type="text" name="tenant" placeholder="all tenants"
                                                value=(viewer.picked().unwrap_or("")) pattern="[a-z0-9_-]{1,64}" size="12";
                                            button type="submit" { "Show" }
                                        }
                                        span.role { @if viewer.open { "open (no sign-in)" } @else { "admin" } }
                                    }
                                    Caller::Tenant(t) => { span.role { "tenant " strong { (t) } } }
                                }
                                @if !viewer.open {
                                    form method="post" action="/console/sign-out" {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        button.link type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                    main #main data-live=[self.live.then_some("3")] { (content) }
                }
            }
        }
    }
}

fn nav_link(viewer: &Viewer, path: &str, text: &str, current: bool) -> Markup {
    html! {
        a href=(with_tenant(viewer, path)) aria-current=[current.then_some("page")] { (text) }
    }
}

/// `path` keeping the tenant an admin picked.
pub fn with_tenant(viewer: &Viewer, path: &str) -> String {
    match viewer.picked() {
        Some(t) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}tenant={}", encode(t))
        }
        None => path.to_owned(),
    }
}

/// A URL query or path component.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An HTML answer.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A page that says what went wrong (404 for what is not there).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Not found".to_owned(),
        StatusCode::FORBIDDEN => "Not yours to see".to_owned(),
        s => s.canonical_reason().unwrap_or("Error").to_owned(),
    };
    let page = Page {
        title: title.clone(),
        section: Section::None,
        viewer: None,
        live: false,
    };
    respond(
        status,
        page.render(html! {
            section.empty {
                h1 { (title) }
                p { (message) }
                p { a href="/console/runs" { "Back to the runs" } }
            }
        }),
    )
}

/// An API refusal, as a page (internal faults say no more than the API).
pub fn api_error(e: ApiError) -> Response {
    error_page(e.status, &e.message)
}

pub fn badge(status: &str) -> Markup {
    html! { span class={ "badge status-" (status) } { (status) } }
}

/// A time, relative to now, with the exact time as its title.
pub fn when(t: DateTime<Utc>) -> Markup {
    let exact = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let ago = (Utc::now() - t).num_seconds();
    let text = match ago {
        i64::MIN..0 => format!("in {}", span_text(-ago)),
        0..5 => "just now".to_owned(),
        5..86_400 => format!("{} ago", span_text(ago)),
        _ => t.format("%Y-%m-%d %H:%M").to_string(),
    };
    html! { time datetime=(exact) title=(exact) { (text) } }
}

fn span_text(seconds: i64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        _ => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
    }
}

/// A duration between two times, as people read it.
pub fn duration(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    let ms = (to - from).num_milliseconds().max(0);
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// A JSON value, pretty-printed and cut at the page limit; `all` is the
/// link to the whole value.
pub fn json_block(value: &Value, all: &str) -> Markup {
    let (text, cut) = json::pretty(value, json::PAGE_LIMIT);
    html! {
        pre.json { code { (text) } }
        @if cut {
            p.cut {
                "Cut at " (json::PAGE_LIMIT / 1024) " KB. "
                a href=(all) { "See all" }
            }
        }
    }
}

/// An empty state: what the page would show, and how to get some.
pub fn empty(title: &str, hint: Markup) -> Markup {
    html! {
        section.empty {
            h2 { (title) }
            p { (hint) }
        }
    }
}

/// Pre-rendered SVG (its texts already escaped by [`super::graph`]).
pub fn svg(svg: String) -> Markup {
    PreEscaped(svg)
}

/// A form whose CSRF token does not match the session's.
pub const STALE_FORM: &str = "This form is out of date (weir restarted, or you signed in again): reload the page and try again.";

/// A state-changing form from a signed-in viewer: the viewer, once the
/// form's CSRF token is found to be the session's (otherwise the answer
/// is a 403 page saying the form is out of date).
pub struct Posted(pub Viewer);

#[derive(serde::Deserialize)]
struct CsrfField {
    csrf: String,
}

impl axum::extract::FromRequest<std::sync::Arc<crate::daemon::http::AppState>> for Posted {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        app: &std::sync::Arc<crate::daemon::http::AppState>,
    ) -> Result<Self, Response> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, app).await?;
        let request = axum::extract::Request::from_parts(parts, body);
        let axum::Form(field) = axum::Form::<CsrfField>::from_request(request, app)
            .await
            .map_err(IntoResponse::into_response)?;
        if !super::session::csrf_matches(&viewer, &field.csrf) {
            return Err(error_page(StatusCode::FORBIDDEN, STALE_FORM));
        }
        Ok(Posted(viewer))
    }
}

/// After a form: back to `path` (keeping the tenant picked), or the
/// refusal as a page.
pub fn back_to(viewer: &Viewer, done: Result<(), ApiError>, path: &str) -> Response {
    match done {
        Ok(()) => axum::response::Redirect::to(&with_tenant(viewer, path)).into_response(),
        Err(e) => api_error(e),
    }
}

/// A button that posts to `action` with the session's CSRF token.
pub fn post_button(
    viewer: &Viewer,
    action: &str,
    text: &str,
    class: &str,
    confirm: Option<&str>,
) -> Markup {
    html! {
        form.inline method="post" action=(with_tenant(viewer, action)) data-confirm=[confirm] {
            input type="hidden" name="csrf" value=(viewer.csrf);
            button class=(class) type="submit" { (text) }
        }
    }
}
