//! Signing in to the console: a token posted to `/console/sign-in` is
//! checked exactly as the API checks a bearer token, then kept in an
//! HttpOnly, SameSite=Strict cookie (never in a URL, so never in a log or
//! the browser's history). Every page checks it again, so an expired
//! token sends the browser back to sign-in with the reason. Forms that
//! change something carry a CSRF token: an HMAC of the session's token
//! under a key this process drew at start.

use std::sync::{Arc, OnceLock};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{KeyInit, Mac};

use crate::auth::{Caller, Refusal, Scope, TokenError};
use crate::daemon::http::{AppState, now_seconds};

/// The session cookie's name.
pub const COOKIE: &str = "weir_console";

/// Who is looking at a page, and for which tenant.
pub struct Viewer {
    pub caller: Caller,
    /// What the page shows: the caller's tenant, the tenant an admin
    /// picked (`?tenant=`), or every tenant.
    pub scope: Scope,
    /// The CSRF token forms must send back.
    pub csrf: String,
    /// Whether the daemon runs without a workspace secret (no sign-in).
    pub open: bool,
}

impl Viewer {
    /// The tenant picked by an admin, for links that keep it.
    pub fn picked(&self) -> Option<&str> {
        match (&self.caller, &self.scope) {
            (Caller::Admin, Scope::Tenant(t)) => Some(t),
            _ => None,
        }
    }
}

/// Not signed in, or no longer: the browser goes to sign-in.
pub struct SignIn {
    reason: &'static str,
    then: String,
}

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        let mut url = format!("/console/sign-in?reason={}", self.reason);
        if self.then.starts_with("/console/") {
            url.push_str("&then=");
            url.extend(form_urlencoded::byte_serialize(self.then.as_bytes()));
        }
        let mut r = Redirect::to(&url).into_response();
        if self.reason != "none" {
            // The cookie no longer works: drop it.
            r.headers_mut()
                .insert(header::SET_COOKIE, HeaderValue::from_static(CLEAR));
        }
        r
    }
}

/// Why sign-in is shown, for the page.
pub fn reason_text(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "expired" => "Your token expired. Sign in with a new one.",
        "invalid" => "Your token is no longer valid for this workspace. Sign in again.",
        "signed-out" => "You are signed out.",
        _ => return None,
    })
}

const CLEAR: &str = "weir_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0";

/// The session cookie for `token`; `Secure` when the request came over
/// HTTPS (through a proxy that says so).
pub fn cookie(token: &str, headers: &HeaderMap) -> Option<HeaderValue> {
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let value = format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&value).ok()
}

pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(CLEAR)
}

/// The session's token, from the `Cookie` header.
fn token_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|t| !t.is_empty())
}

/// The key CSRF tokens are made with, drawn once per process.
fn csrf_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

/// The CSRF token of a session.
pub fn csrf_of(token: &str) -> String {
    // Any key length is valid for HMAC, so this cannot fail.
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(csrf_key())
        .expect("HMAC takes keys of any length");
    mac.update(b"weir-console-csrf\0");
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `sent` is the session's CSRF token (compared in constant time).
pub fn csrf_matches(viewer: &Viewer, sent: &str) -> bool {
    let (a, b) = (viewer.csrf.as_bytes(), sent.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a token as sign-in does: the caller it speaks for, or why not.
pub fn check(app: &AppState, token: &str) -> Result<Caller, String> {
    app.auth
        .token_caller(token, now_seconds())
        .map_err(|r| r.message())
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, Response> {
        // Inside the nested router the path has lost its `/console`.
        let original = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map(|u| &u.0);
        let then = original
            .unwrap_or(&parts.uri)
            .path_and_query()
            .map_or("", |p| p.as_str())
            .to_owned();
        let open = app.auth.is_open();
        let (caller, token) = match token_of(&parts.headers) {
            None if open => (Caller::Admin, String::new()),
            None => {
                return Err(SignIn {
                    reason: "none",
                    then,
                }
                .into_response());
            }
            Some(token) => match app.auth.token_caller(token, now_seconds()) {
                Ok(caller) => (caller, token.to_owned()),
                Err(Refusal::Invalid(TokenError::Expired(_))) => {
                    return Err(SignIn {
                        reason: "expired",
                        then,
                    }
                    .into_response());
                }
                Err(_) => {
                    return Err(SignIn {
                        reason: "invalid",
                        then,
                    }
                    .into_response());
                }
            },
        };
        let asked = parts.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, v)| k == "tenant" && !v.is_empty())
                .map(|(_, v)| v.into_owned())
        });
        let scope = match caller.scope(asked.as_deref()) {
            Ok(scope) => scope,
            Err(e @ crate::auth::ScopeError::OtherTenant { .. }) => {
                return Err(super::pages::error_page(
                    axum::http::StatusCode::FORBIDDEN,
                    &e.to_string(),
                ));
            }
            Err(e) => {
                return Err(super::pages::error_page(
                    axum::http::StatusCode::BAD_REQUEST,
                    &e.to_string(),
                ));
            }
        };
        Ok(Viewer {
            csrf: csrf_of(&token),
            caller,
            scope,
            open,
        })
    }
}

/// `State` for handlers that take a [`Viewer`] as well.
pub type App = State<Arc<AppState>>;
