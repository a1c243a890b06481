//! `http`: an HTTP request on one shared reqwest client.
//!
//! The request is prepared from the scope at once (templates and the body
//! expression), then sent; a retry sends the same prepared request again with
//! the same `Idempotency-Key`.

use std::sync::LazyLock;
use std::time::Duration;

use reqwest::{Method, Url};
use rhai::Scope;
use serde_json::{Map, Value};

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
    pub fn build_request(o: &mut Options, names: &[&str]) -> Option<Self> {
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
        let mut url =
            check_url(&url).map_err(|e| NodeError::Invalid(format!("url `{url}`: {e}")))?;
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

fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!(
            "the scheme `{other}` is not supported; use http or https"
        )),
    }
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
/// errors. Not: other statuses, invalid requests, unreadable bodies.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: u16,
        /// The start of the response body.
        body: String,
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
            Self::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            Self::Timeout { .. } | Self::Connect { .. } => true,
            Self::Request { .. } => false,
        }
    }
}

/// The one client every `http` node shares (connection pools, TLS config).
pub fn client() -> &'static reqwest::Client {
    static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
        reqwest::Client::builder()
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            // Building fails only if the TLS backend cannot initialise, which
            // leaves nothing sensible to do at run time.
            .expect("the HTTP client must initialise")
    });
    &CLIENT
}

impl Request {
    /// Sends the request with `Idempotency-Key: key`; answers the node's
    /// output `{status, headers, body}`.
    pub async fn send(&self, key: &str, timeout: Option<Duration>) -> Result<Value, HttpError> {
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        let (method, url) = (self.method.clone(), self.url.to_string());
        let mut builder = client()
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
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                HttpError::Timeout {
                    method: method.clone(),
                    url: url.clone(),
                    timeout,
                }
            } else if e.is_connect() {
                HttpError::Connect {
                    method: method.clone(),
                    url: url.clone(),
                    reason: source_chain(&e),
                }
            } else if e.is_builder() {
                HttpError::Request {
                    method: method.clone(),
                    url: url.clone(),
                    reason: source_chain(&e),
                }
            } else {
                // Reset connections and broken bodies are transient.
                HttpError::Connect {
                    method: method.clone(),
                    url: url.clone(),
                    reason: source_chain(&e),
                }
            }
        };
        let mut response = builder.send().await.map_err(classify)?;
        let status = response.status().as_u16();
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
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE {
                return Err(HttpError::Request {
                    method,
                    url,
                    reason: format!("the response body is larger than {MAX_RESPONSE} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = match serde_json::from_slice::<Value>(&bytes) {
            Ok(json) => json,
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
            });
        }
        Ok(serde_json::json!({"status": status, "headers": headers, "body": body}))
    }
}

/// The error and its causes, without reqwest's "error sending request for
/// url (…)", which repeats the URL the message already names.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.len() > 1 && parts[0].starts_with("error sending request") {
        parts.remove(0);
    }
    parts.dedup();
    parts.join(": ")
}
