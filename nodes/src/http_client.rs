//! What every outgoing HTTP request of weir shares — `http` nodes, poll
//! requests and HTTP deliveries: the clients, URL checks, how a status is
//! classified, `Retry-After`, and how a URL and an error are shown in
//! messages (without query values or passwords, which often carry secrets).

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use reqwest::header::HeaderMap;

/// The longest `Retry-After` weir honours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

fn build(redirects: reqwest::redirect::Policy) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .redirect(redirects)
        .build()
        // Building fails only if the TLS backend cannot initialise, which
        // leaves nothing sensible to do at run time.
        .expect("the HTTP client must initialise")
}

/// The client of `http` nodes and poll requests (connection pools, TLS):
/// it follows redirects, as API clients do (reqwest drops credentials
/// when a redirect leaves the host).
pub fn client() -> &'static reqwest::Client {
    static CLIENT: LazyLock<reqwest::Client> =
        LazyLock::new(|| build(reqwest::redirect::Policy::default()));
    &CLIENT
}

/// The client of HTTP deliveries: a redirect is not a confirmation (the
/// backend did not take the delivery), so it follows none.
pub fn delivery_client() -> &'static reqwest::Client {
    static CLIENT: LazyLock<reqwest::Client> =
        LazyLock::new(|| build(reqwest::redirect::Policy::none()));
    &CLIENT
}

/// Parses an absolute `http` or `https` URL.
pub fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a valid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!(
            "the scheme `{other}` is not supported; use http or https"
        )),
    }
}

/// What an answer's status means for the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Success,
    /// 408, 429 and 5xx: trying again later may succeed.
    Retry,
    /// Any other status: the server refused the request as it is.
    Refused,
}

pub fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Success,
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::Refused,
    }
}

/// How long an answer asks to wait (`Retry-After`: seconds, or an HTTP
/// date), at most [`MAX_RETRY_AFTER`]. `None` if absent or unreadable.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

/// [`retry_after`] of a header's text.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A URL as messages and logs show it: without its password and without
/// the values of its query (`?api_key=…`), which often carry secrets.
pub fn shown(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("…"));
    }
    if url.query().is_some() {
        let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let query: Vec<String> = names.iter().map(|k| format!("{k}=…")).collect();
        url.set_query(None);
        return format!("{url}?{}", query.join("&"));
    }
    url.to_string()
}

/// [`shown`] for a URL as text; text that is not a URL loses everything
/// from its first `?`.
pub fn shown_text(text: &str) -> String {
    match Url::parse(text) {
        Ok(url) => shown(&url),
        Err(_) => match text.split_once('?') {
            Some((before, _)) => format!("{before}?…"),
            None => text.to_owned(),
        },
    }
}

/// How a request failed before an answer came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Timeout,
    /// The connection could not be made, or broke: transient.
    Connect,
    /// The request could not be built: trying again does not help.
    Invalid,
}

/// What a reqwest error says, without the URL reqwest appends (the caller
/// names the URL, [`shown`]), with its causes.
pub fn describe(error: reqwest::Error) -> (FailureKind, String) {
    let kind = if error.is_timeout() {
        FailureKind::Timeout
    } else if error.is_builder() {
        FailureKind::Invalid
    } else {
        // Refused, reset and broken connections, broken bodies.
        FailureKind::Connect
    };
    let error = error.without_url();
    let mut parts = vec![error.to_string()];
    let mut source = std::error::Error::source(&error);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.len() > 1 && parts[0] == "error sending request" {
        parts.remove(0);
    }
    parts.dedup();
    (kind, parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_keep_query_names_and_drop_values_and_passwords() {
        let url = Url::parse("https://u:pw@api.example/x?api_key=tok-SECRET&page=2").unwrap();
        let shown = shown(&url);
        assert_eq!(shown, "https://u:%E2%80%A6@api.example/x?api_key=…&page=…");
        assert!(!shown.contains("SECRET") && !shown.contains("pw"));
        assert_eq!(
            shown_text("https://api.example/a?b=c"),
            "https://api.example/a?b=…"
        );
        assert_eq!(shown_text("not a url?token=x"), "not a url?…");
        assert_eq!(shown_text("https://api.example/a"), "https://api.example/a");
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(204), Verdict::Success);
        for s in [408, 429, 500, 503, 599] {
            assert_eq!(classify(s), Verdict::Retry, "{s}");
        }
        for s in [301, 400, 401, 404, 422] {
            assert_eq!(classify(s), Verdict::Refused, "{s}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
