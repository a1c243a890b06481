//! `/console/connections`: the viewer's connections, their state and last
//! error; Test, Refresh (OAuth2) and Reconnect (OAuth2: a new consent at
//! the app, through a connect request).

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::{
    Page, Posted, Section, api_error, back_to, badge, empty, error_page, post_button, respond,
    when, with_tenant,
};
use crate::auth::Scope;
use crate::connect::integration::AuthKind;
use crate::console::session::{App, Viewer};
use crate::daemon::http::Params;
use crate::daemon::http::connections::{self, ListQuery};

pub async fn list(app: App, viewer: Viewer) -> Response {
    let query = ListQuery {
        integration: None,
        state: None,
    };
    let list = match connections::list(app.clone(), viewer.scope.clone(), Params(query)).await {
        Ok(l) => l.0,
        Err(e) => return api_error(e),
    };
    let integrations = app.connections.integrations();
    let content = html! {
        h1 { "Connections" }
        @if list.items.is_empty() {
            (empty("No connections yet", html! {
                "A connection is a tenant's account at an app, made with "
                code { "POST /api/v1/connections" } " (API keys) or a connect request "
                code { "POST /api/v1/connection-requests" } " (OAuth2)."
            }))
        } @else {
            div.table-scroll {
                table.connections {
                    thead { tr { th { "State" } th { "Connection" } th { "Integration" } th { "Tenant" } th { "Last used" } th { "Last error" } th { "" } } }
                    tbody {
                        @for c in &list.items {
                            @let oauth2 = integrations.get(&c.integration).is_some_and(|i| matches!(i.auth, AuthKind::OAuth2(_)));
                            @let base = format!("/console/connections/{}", c.id);
                            tr data-connection=(c.id) {
                                td { (badge(c.state.as_str())) }
                                td { strong { (c.name) } br; code.dim { (c.id) } }
                                td { (c.integration) }
                                td { (c.tenant) }
                                td { @if let Some(t) = c.last_used_at { (when(t)) } @else { span.dim { "never" } } }
                                td { @if let Some(e) = &c.error { span.error-text { (e) } } }
                                td.actions {
                                    (post_button(&viewer, &format!("{base}/test"), "Test", "", None))
                                    @if oauth2 {
                                        (post_button(&viewer, &format!("{base}/refresh"), "Refresh", "", None))
                                        (post_button(&viewer, &format!("{base}/reconnect"), "Reconnect", "", None))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let page = Page {
        title: "Connections".into(),
        section: Section::Connections,
        viewer: Some(&viewer),
        live: false,
    };
    respond(StatusCode::OK, page.render(content))
}

/// Test, refresh or reconnect one connection.
pub async fn act(
    app: App,
    Path((id, action)): Path<(String, String)>,
    Posted(viewer): Posted,
) -> Response {
    let done = match action.as_str() {
        "test" => connections::test(app, viewer.scope.clone(), Path(id))
            .await
            .map(drop),
        "refresh" => connections::refresh(app, viewer.scope.clone(), Path(id))
            .await
            .map(drop),
        "reconnect" => return reconnect(app, &viewer, id).await,
        _ => {
            return error_page(
                StatusCode::NOT_FOUND,
                "There is no such action on a connection.",
            );
        }
    };
    back_to(&viewer, done, "/console/connections")
}

/// A connect request for the connection's integration, reconnecting it;
/// the page links to the app's consent screen (a link, not a redirect:
/// the console's forms may only post back to the console).
async fn reconnect(app: App, viewer: &Viewer, id: String) -> Response {
    let query = ListQuery {
        integration: None,
        state: None,
    };
    let found = match connections::list(app.clone(), viewer.scope.clone(), Params(query)).await {
        Ok(l) => l.0.items.into_iter().find(|c| c.id == id),
        Err(e) => return api_error(e),
    };
    let Some(found) = found else {
        return error_page(StatusCode::NOT_FOUND, &format!("no connection {id}"));
    };
    let body = serde_json::json!({"integration": found.integration, "connection_id": found.id});
    let scope = Scope::Tenant(found.tenant.clone());
    match connections::create_request(app, scope, Bytes::from(body.to_string())).await {
        Ok((_, request)) => {
            let Some(url) = request.0.url.clone() else {
                return error_page(StatusCode::CONFLICT, "The app gave no consent address.");
            };
            let page = Page {
                title: "Reconnect".into(),
                section: Section::Connections,
                viewer: Some(viewer),
                live: false,
            };
            respond(
                StatusCode::OK,
                page.render(html! {
                    section.empty {
                        h1 { "Reconnect " (found.name) }
                        p { "Sign in at " (found.integration) " and allow weir again; the connection keeps its id." }
                        p { a.button.primary href=(url) rel="noreferrer" { "Continue to " (found.integration) } }
                        p { a href=(with_tenant(viewer, "/console/connections")) { "Back to the connections" } }
                    }
                }),
            )
        }
        Err(e) => api_error(e),
    }
}
