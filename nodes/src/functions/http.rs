//! `http`: an HTTP request on one shared reqwest client.
//!
//! The request is prepared from the scope at once (templates and the body
//! expression), then sent; a retry sends the same prepared request again with
//! the same `Idempotency-Key`.

use std::time::Duration;

use reqwest::{Method, Url};
use rhai::Scope;
use serde_json::{Map, Value};

use crate::http_client::{self, FailureKind, Verdict, check_url, shown};
use crate::node::NodeError;
use crate::reader::Options;
use crate::script::{Expr, Template};

/// Requests without a `timeout` give up after this long.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Response bodies larger than this fail the node.
pub const MAX_RESPONSE: usize = 16 << 20;

#[derive(Debug)]
pub struct Http {
    /// `GET` (default), `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD` or `OPTIONS`.
    pub method: Method,
    /// The URL (a template).
    pub url: Template,
    /// Request headers (values are templates).
    pub headers: Vec<(String, Template)>,
    /// Query parameters added to the URL (values are templates).
    pub query: Vec<(String, Template)>,
    /// The body: a string is sent as text, anything else as JSON.
    pub body: Option<Expr>,
    /// Statuses that count as success (default: any 2xx). Entries are codes
    /// (`200`) or classes (`"2xx"`).
    pub expect: Vec<StatusMatch>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusMatch {
    Code(u16),
    /// The hundreds digit: `Class(2)` is 2xx.
    Class(u16),
}

impl StatusMatch {
    fn matches(self, status: u16) -> bool {
        match self {
            Self::Code(c) => c == status,
            Self::Class(c) => status / 100 == c,
        }
    }
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

impl Http {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        Self::build_request(o, names)
    }

    /// Reads the request options; the poll trigger's `request` uses them too.
    /// Its templates and body may read `secrets` besides `names`.
    pub fn build_request(o: &mut Options, names: &[&str]) -> Option<Self> {
        let names: Vec<&str> = names.iter().copied().chain(["secrets"]).collect();
        let names = names.as_slice();
        let method = match o.str("method") {
            None => Method::GET,
            Some((m, pos)) => {
                let upper = m.to_ascii_uppercase();
                if METHODS.contains(&upper.as_str()) {
                    Method::from_bytes(upper.as_bytes()).unwrap_or(Method::GET)
                } else {
                    o.error(
                        pos,
                        format!("unknown method `{m}`; use one of {}", METHODS.join(", ")),
                    );
                    Method::GET
                }
            }
        };
        let url_pos = o.get("url").map(|v| v.pos);
        let url = o.required_template("url", names);
        if let (Some(url), Some(pos)) = (&url, url_pos)
            && let Some(literal) = url.as_literal()
            && let Err(e) = check_url(literal)
        {
            o.error(pos, format!("`url`: {e}"));
        }
        let headers = o.template_map("headers", names);
        let query = o.template_map("query", names);
        let body = o.expr("body", names);
        let expect = read_expect(o);
        Some(Self {
            method,
            url: url?,
            headers,
            query,
            body,
            expect,
        })
    }

    /// Evaluates the templates and the body.
    pub fn prepare(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Request, NodeError> {
        let url = self.url.render(scope, timeout)?;
        let mut url = check_url(&url).map_err(|e| {
            NodeError::Invalid(format!("url `{}`: {e}", http_client::shown_text(&url)))
        })?;
        if !self.query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &self.query {
                pairs.append_pair(k, &v.render(scope, timeout)?);
            }
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            headers.push((k.clone(), v.render(scope, timeout)?));
        }
        let body = match &self.body {
            None => None,
            Some(expr) => Some(super::eval_json(expr, scope, timeout)?),
        };
        Ok(Request {
            method: self.method.clone(),
            url,
            headers,
            body,
            expect: self.expect.clone(),
        })
    }
}

fn read_expect(o: &mut Options) -> Vec<StatusMatch> {
    let Some(value) = o.get("expect") else {
        return vec![StatusMatch::Class(2)];
    };
    let items = match &value.kind {
        crate::yaml::Kind::List(items) => items.iter().collect(),
        _ => vec![value],
    };
    let mut out = Vec::new();
    for item in items {
        let parsed = match &item.kind {
            crate::yaml::Kind::Int(c) if (100..600).contains(c) => {
                Some(StatusMatch::Code(*c as u16))
            }
            crate::yaml::Kind::Str(s) => match s.as_bytes() {
                [d @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                    Some(StatusMatch::Class(u16::from(d - b'0')))
                }
                _ => s
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (100..600).contains(c))
                    .map(StatusMatch::Code),
            },
            _ => None,
        };
        match parsed {
            Some(m) => out.push(m),
            None => o.error(
                item.pos,
                "`expect` entries must be status codes (200) or classes (\"2xx\")",
            ),
        }
    }
    out
}

/// A request ready to send.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub expect: Vec<StatusMatch>,
}

/// Why a request failed. Retryable: 5xx, 408, 429, timeouts, connection
/// errors. Not: other statuses, invalid requests, unreadable bodies. URLs
/// are shown without their query's values ([`http_client::shown`]).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: u16,
        /// The start of the response body.
        body: String,
        /// How long the server asked to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    #[error("{method} {url} timed out after {timeout:?}")]
    Timeout {
        method: Method,
        url: String,
        timeout: Duration,
    },
    #[error("{method} {url}: cannot connect: {reason}")]
    Connect {
        method: Method,
        url: String,
        reason: String,
    },
    #[error("{method} {url}: {reason}")]
    Request {
        method: Method,
        url: String,
        reason: String,
    },
}

impl HttpError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => http_client::classify(*status) == Verdict::Retry,
            Self::Timeout { .. } | Self::Connect { .. } => true,
            Self::Request { .. } => false,
        }
    }

    /// How long the server asked to wait before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl Request {
    /// Sends the request with `Idempotency-Key: key`; answers the node's
    /// output `{status, headers, body}`.
    pub async fn send(&self, key: &str, timeout: Option<Duration>) -> Result<Value, HttpError> {
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        let (method, url) = (self.method.clone(), shown(&self.url));
        let mut builder = http_client::client()
            .request(self.method.clone(), self.url.clone())
            .timeout(timeout)
            .header("idempotency-key", key);
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        builder = match &self.body {
            None => builder,
            Some(Value::String(text)) => builder.body(text.clone()),
            Some(json) => builder.json(json),
        };
        let fail = |e: reqwest::Error| {
            let (kind, reason) = http_client::describe(e);
            let (method, url) = (method.clone(), url.clone());
            match kind {
                FailureKind::Timeout => HttpError::Timeout {
                    method,
                    url,
                    timeout,
                },
                FailureKind::Connect => HttpError::Connect {
                    method,
                    url,
                    reason,
                },
                FailureKind::Invalid => HttpError::Request {
                    method,
                    url,
                    reason,
                },
            }
        };
        let mut response = builder.send().await.map_err(fail)?;
        let status = response.status().as_u16();
        let retry_after = http_client::retry_after(response.headers(), chrono::Utc::now());
        let mut headers = Map::new();
        for (name, value) in response.headers() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match headers.get_mut(name.as_str()) {
                Some(Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(&value);
                }
                _ => {
                    headers.insert(name.as_str().to_owned(), Value::String(value));
                }
            }
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fail)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE {
                return Err(HttpError::Request {
                    method,
                    url,
                    reason: format!("the response body is larger than {MAX_RESPONSE} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = match crate::json::parse(&bytes) {
            Ok(json) => json,
            Err(crate::json::ParseError::TooDeep) => {
                return Err(HttpError::Request {
                    method,
                    url,
                    reason: crate::json::too_deep("the response body"),
                });
            }
            Err(_) if bytes.is_empty() => Value::Null,
            Err(_) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        };
        if !self.expect.iter().any(|m| m.matches(status)) {
            let mut text = match &body {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if text.len() > 200 {
                let cut = (0..=200)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                text.truncate(cut);
                text.push('…');
            }
            return Err(HttpError::Status {
                method,
                url,
                status,
                body: text,
                retry_after,
            });
        }
        Ok(serde_json::json!({"status": status, "headers": headers, "body": body}))
    }
}
