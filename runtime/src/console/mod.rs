//! The console: web pages served by the daemon at `/console`, rendered on
//! the server from compiled templates (maud) with a stylesheet and a
//! little script embedded in the binary. Pages read through the API's own
//! handlers, with the viewer's [`Scope`](crate::auth::Scope), so they show
//! exactly what the API would answer that caller.
//!
//! - `session`: sign-in, the session cookie, CSRF tokens
//! - `pages`: the page shell and each page (flows, runs, one run,
//!   connections, outbox)
//! - `graph`: a flow's graph laid out (layout-rs) and drawn as SVG
//! - `json`: JSON pretty-printed and cut for a page

mod graph;
mod json;
mod pages;
mod session;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::daemon::http::AppState;

/// The console's routes, under `/console`.
pub fn router() -> Router<Arc<AppState>> {
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/console/runs") }))
        .route(
            "/sign-in",
            get(pages::sign_in::form).post(pages::sign_in::submit),
        )
        .route("/sign-out", post(pages::sign_in::sign_out))
        .route("/flows", get(pages::flows::list))
        .route("/flows/{id}", get(pages::flows::show))
        .route("/runs", get(pages::runs::list))
        .route("/runs/{id}", get(pages::run::show))
        .route("/runs/{id}/json", get(pages::run::json))
        .route("/runs/{id}/{action}", post(pages::run::act))
        .route("/connections", get(pages::connections::list))
        .route("/connections/{id}/{action}", post(pages::connections::act))
        .route("/outbox", get(pages::outbox::list))
        .route("/outbox/{id}/retry", post(pages::outbox::retry))
        .route("/assets/{name}", get(asset))
        .fallback(|| async { pages::error_page(StatusCode::NOT_FOUND, "There is no such page.") })
        .layer(middleware::from_fn(headers));
    Router::new()
        .route("/console/", get(|| async { Redirect::to("/console/runs") }))
        .nest("/console", pages)
}

/// The Content-Security-Policy of every console answer: scripts, styles
/// and images from the console itself only; no inline script or style,
/// no frames, forms post back to the console only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn headers(request: Request, next: Next) -> Response {
    let mut response = if cross_site_post(&request) {
        pages::error_page(
            StatusCode::FORBIDDEN,
            "This form was posted from another site; weir only takes its own.",
        )
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        // Pages hold a tenant's data: never kept by a cache (assets say
        // how long they keep).
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A POST whose `Origin` is not this host (browsers send it with every
/// form post): refused, so that no other site can sign a browser in with
/// its own token or press a button; the CSRF token stops the rest.
fn cross_site_post(request: &Request) -> bool {
    if request.method() != axum::http::Method::POST {
        return false;
    }
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return false;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    host.is_none() || origin_host != host
}

/// The files of the console, embedded in the binary.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
];

/// A short hash of the assets, in their URLs (`?v=`), so a new build's
/// are fetched and old ones may be cached for good.
pub fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (_, _, body) in ASSETS {
            h.update(body.as_bytes());
        }
        hex::encode(&h.finalize()[..6])
    })
}

async fn asset(Path(name): Path<String>, request_headers: axum::http::HeaderMap) -> Response {
    let Some((_, kind, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return pages::error_page(StatusCode::NOT_FOUND, "There is no such file.");
    };
    let etag = format!("\"{}\"", asset_version());
    if request_headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, *kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::ETAG, etag.as_str()),
        ],
        *body,
    )
        .into_response()
}
