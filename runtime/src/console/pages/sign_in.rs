//! `/console/sign-in` (a form: the token is posted, never put in a URL)
//! and `/console/sign-out`.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{Page, Section, respond};
use crate::console::session;
use crate::daemon::http::AppState;

#[derive(Deserialize)]
pub struct Shown {
    reason: Option<String>,
    then: Option<String>,
}

pub async fn form(State(app): State<Arc<AppState>>, Query(q): Query<Shown>) -> Response {
    if app.auth.is_open() {
        return Redirect::to("/console/runs").into_response();
    }
    let note = q.reason.as_deref().and_then(session::reason_text);
    page(StatusCode::OK, note, None, q.then.as_deref())
}

fn page(
    status: StatusCode,
    note: Option<&str>,
    error: Option<&str>,
    then: Option<&str>,
) -> Response {
    let shell = Page {
        title: "Sign in".into(),
        section: Section::None,
        viewer: None,
        live: false,
    };
    respond(
        status,
        shell.render(html! {
            section.sign-in {
                h1 { "Sign in to weir" }
                @if let Some(note) = note { p.note role="status" { (note) } }
                @if let Some(error) = error { p.error role="alert" { (error) } }
                form method="post" action="/console/sign-in" {
                    label for="token" { "Token" }
                    textarea #token name="token" rows="4" required autofocus autocomplete="off" spellcheck="false"
                        placeholder="eyJhbGciOi…" {}
                    p.hint {
                        "An admin token shows every tenant; a tenant's token shows that tenant only. "
                        code { "weir token --admin" } " or " code { "weir token --tenant KEY" } " makes one."
                    }
                    @if let Some(then) = then.filter(|t| safe_then(t)) {
                        input type="hidden" name="then" value=(then);
                    }
                    button.primary type="submit" { "Sign in" }
                }
            }
        }),
    )
}

/// Only a console page is a place to go after sign-in.
fn safe_then(then: &str) -> bool {
    then.starts_with("/console/") && !then.starts_with("/console/sign-") && !then.contains("//")
}

#[derive(Deserialize)]
pub struct Submitted {
    token: String,
    then: Option<String>,
}

pub async fn submit(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<Submitted>,
) -> Response {
    let token = f.token.trim();
    match session::check(&app, token) {
        Ok(_) => {
            let Some(cookie) = session::cookie(token, &headers) else {
                return page(
                    StatusCode::BAD_REQUEST,
                    None,
                    Some("That is not a token."),
                    None,
                );
            };
            let to = f
                .then
                .as_deref()
                .filter(|t| safe_then(t))
                .unwrap_or("/console/runs");
            let mut r = Redirect::to(to).into_response();
            r.headers_mut().insert(header::SET_COOKIE, cookie);
            r
        }
        Err(why) => page(
            StatusCode::UNAUTHORIZED,
            None,
            Some(&why),
            f.then.as_deref(),
        ),
    }
}

pub async fn sign_out(_: super::Posted) -> Response {
    let mut r = Redirect::to("/console/sign-in?reason=signed-out").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie());
    r
}
