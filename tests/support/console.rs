//! The console as a browser sees it, without one: pages fetched with the
//! session cookie, forms posted with their CSRF token, no redirect followed.

use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;

use crate::Daemon;

/// `pairs` as an `application/x-www-form-urlencoded` body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A client that shows redirects instead of following them.
pub fn client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("an HTTP client")
}

/// A console page fetched with the session cookie of `token`.
pub fn page(daemon: &Daemon, path: &str, token: &str) -> Response {
    client()
        .get(daemon.url(path))
        .header("cookie", format!("weir_console={token}"))
        .send()
        .expect("the daemon answers")
}

/// A console form posted with the session of `token` and `csrf`.
pub fn post(daemon: &Daemon, path: &str, token: &str, csrf: &str) -> Response {
    client()
        .post(daemon.url(path))
        .header("cookie", format!("weir_console={token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("csrf", csrf)]))
        .send()
        .expect("the daemon answers")
}

/// The CSRF token a console page's forms carry.
pub fn csrf_in(html: &str) -> String {
    html.split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form with a CSRF token")
        .to_owned()
}
