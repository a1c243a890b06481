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
    /// Where `url` is written.
    pub url_pos: crate::diag::Pos,
    /// Request headers (values are templates).
    pub headers: Vec<(String, Template)>,
    /// Query parameters added to the URL (values are templates).
    pub query: Vec<(String, Template)>,
    /// The body: a string is sent as text, anything else as JSON.
    pub body: Option<Expr>,
    /// Statuses that count as success (default: any 2xx). Entries are codes
    /// (`200`) or classes (`"2xx"`).
    pub expect: Vec<StatusMatch>,
    /// `connection:`: the request goes to an integration's app through one
    /// of the run's tenant's connections; `url` is then a path under the
    /// integration's `base_url`.
    pub connection: Option<Connection>,
}

/// `connection: KEY` (and `connection_id:`) of an `http` node.
#[derive(Debug)]
pub struct Connection {
    /// The integration's key.
    pub integration: String,
    /// Picks one of the tenant's connections by id (an expression).
    pub id: Option<Expr>,
}

/// Which connection a prepared request goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    pub integration: String,
    pub id: Option<String>,
}

/// The base of the placeholder URL of a request through a connection: its
/// path and query are kept there until the connection gives the app's URL.
const VIA_BASE: &str = "connection:///";

/// What a connection makes of a request: the app's URL, and the headers
/// that carry the credentials (marked sensitive, never recorded or logged).
pub struct Authorized {
    /// The connection used.
    pub connection: String,
    pub url: Url,
    pub headers: reqwest::header::HeaderMap,
    /// The credential values the request carries: where the app's answer
    /// echoes one (an error body quoting the key), it is replaced by
    /// `[credential]` before the answer becomes an output or an error.
    pub echoes: Vec<String>,
}

impl Authorized {
    fn redact(&self, value: &mut Value) {
        let mut stack = vec![value];
        while let Some(value) = stack.pop() {
            match value {
                Value::String(s) => {
                    for secret in &self.echoes {
                        if s.contains(secret.as_str()) {
                            *s = s.replace(secret.as_str(), "[credential]");
                        }
                    }
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(fields) => stack.extend(fields.values_mut()),
                _ => {}
            }
        }
    }
}

/// Gives requests through connections their URL and credentials. The
/// daemon implements it; nodes never hold a credential.
pub trait Connector: Send + Sync {
    /// The connection `via` names for `tenant`, applied to `request`.
    fn authorize<'a>(
        &'a self,
        tenant: &'a str,
        via: &'a Via,
        request: &'a Request,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Authorized, NodeError>> + Send + 'a>>;

    /// The app answered 401 to `request` with `authorized`: a connection
    /// whose token can be refreshed answers new credentials to repeat the
    /// request with, once; any other is disconnected, and the error says
    /// what the node's error should add.
    fn rejected<'a>(
        &'a self,
        tenant: &'a str,
        request: &'a Request,
        authorized: &'a Authorized,
        why: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Authorized, String>> + Send + 'a>>;
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

/// What a request's `url` must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UrlKind {
    Absolute,
    /// A path under a connection's `base_url`.
    Relative,
    /// Either (a poll's request: its flow decides).
    Either,
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

impl Http {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        let integration = o.str("connection").map(|(key, pos)| {
            if !crate::reader::valid_id(key) {
                o.error(
                    pos,
                    format!(
                        "`connection` must be an integration key ([a-z0-9_-]{{1,64}}), not `{key}`"
                    ),
                );
            }
            key.to_owned()
        });
        let id = o.expr("connection_id", names);
        if let (Some(_), None, Some(pos)) = (&id, &integration, o.key_pos("connection_id")) {
            o.error(
                pos,
                "`connection_id` picks a connection of the `connection:` integration; set `connection:` too",
            );
        }
        let url = match integration {
            Some(_) => UrlKind::Relative,
            None => UrlKind::Absolute,
        };
        let mut http = Self::read(o, names, url)?;
        http.connection = integration.map(|integration| Connection { integration, id });
        Some(http)
    }

    /// Reads the request options; the poll trigger's `request` uses them too.
    /// Its templates and body may read `secrets` besides `names`. Its `url`
    /// may be a path (`/contacts`), for a flow that runs per connection:
    /// the flow checks which it must be and sets [`Http::connection`].
    pub fn build_request(o: &mut Options, names: &[&str]) -> Option<Self> {
        Self::read(o, names, UrlKind::Either)
    }

    /// Whether a literal `url` is a path under a connection's `base_url`.
    pub fn url_is_path(&self) -> Option<bool> {
        self.url.as_literal().map(|u| u.starts_with('/'))
    }

    fn read(o: &mut Options, names: &[&str], kind: UrlKind) -> Option<Self> {
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
        {
            let path = literal.starts_with('/');
            if (kind == UrlKind::Absolute || (kind == UrlKind::Either && !path))
                && let Err(e) = check_url(literal)
            {
                o.error(pos, format!("`url`: {e}"));
            }
            if kind == UrlKind::Relative && !path {
                o.error(
                    pos,
                    format!("`url` is a path under the integration's base_url with `connection:`, like /contacts; not `{literal}`"),
                );
            }
        }
        let headers = o.template_map("headers", names);
        let query = o.template_map("query", names);
        let body = o.expr("body", names);
        let expect = read_expect(o);
        Some(Self {
            method,
            url: url?,
            url_pos: url_pos.unwrap_or(o.pos),
            headers,
            query,
            body,
            expect,
            connection: None,
        })
    }

    /// Evaluates the templates and the body.
    pub fn prepare(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Request, NodeError> {
        let url = self.url.render(scope, timeout)?;
        let (mut url, via) = match &self.connection {
            None => (
                check_url(&url).map_err(|e| {
                    NodeError::Invalid(format!("url `{}`: {e}", http_client::shown_text(&url)))
                })?,
                None,
            ),
            Some(c) => {
                let path = Url::parse(VIA_BASE)
                    .and_then(|base| base.join(url.trim_start_matches('/')))
                    .map_err(|e| {
                        NodeError::Invalid(format!("url `{}`: {e}", http_client::shown_text(&url)))
                    })?;
                let id = match &c.id {
                    None => None,
                    Some(expr) => Some(match super::eval_json(expr, scope, timeout)? {
                        Value::String(s) => s,
                        other => {
                            return Err(NodeError::Invalid(format!(
                                "`connection_id` must be a connection id (text), not {other}"
                            )));
                        }
                    }),
                };
                let via = Via {
                    integration: c.integration.clone(),
                    id,
                };
                (path, Some(via))
            }
        };
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
            via,
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
    /// Through a connection: a placeholder holding the path and query
    /// ([`Request::path_and_query`]) until [`Connector::authorize`] gives
    /// the app's URL.
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub expect: Vec<StatusMatch>,
    /// The connection it goes through, if any.
    pub via: Option<Via>,
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
    /// A request through a connection to `path_and_query` under the
    /// integration's `base_url` (an action's request).
    pub fn through(
        via: Via,
        method: Method,
        path_and_query: &str,
        headers: Vec<(String, String)>,
        body: Option<Value>,
    ) -> Result<Self, String> {
        let url = Url::parse(VIA_BASE)
            .and_then(|base| base.join(path_and_query.trim_start_matches('/')))
            .map_err(|e| format!("path `{}`: {e}", http_client::shown_text(path_and_query)))?;
        Ok(Self {
            method,
            url,
            headers,
            body,
            expect: vec![StatusMatch::Class(2)],
            via: Some(via),
        })
    }

    /// The path (from `/`) and the query of a request through a connection.
    pub fn path_and_query(&self) -> String {
        let mut out = self.url.path().to_owned();
        if let Some(q) = self.url.query() {
            out.push('?');
            out.push_str(q);
        }
        out
    }

    /// Sends the request with `Idempotency-Key: key`; answers the node's
    /// output `{status, headers, body}`.
    pub async fn send(&self, key: &str, timeout: Option<Duration>) -> Result<Value, HttpError> {
        self.send_to(key, timeout, None).await
    }

    /// [`Request::send`], to the URL and with the credential headers a
    /// connection gave.
    pub async fn send_to(
        &self,
        key: &str,
        timeout: Option<Duration>,
        authorized: Option<&Authorized>,
    ) -> Result<Value, HttpError> {
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        let target = authorized.map_or(&self.url, |a| &a.url);
        let (method, url) = (self.method.clone(), shown(target));
        let mut builder = http_client::client()
            .request(self.method.clone(), target.clone())
            .timeout(timeout)
            .header("idempotency-key", key);
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        if let Some(a) = authorized {
            builder = builder.headers(a.headers.clone());
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
        let mut body = match crate::json::parse(&bytes) {
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
        if let Some(a) = authorized.filter(|a| !a.echoes.is_empty()) {
            a.redact(&mut body);
            for value in headers.values_mut() {
                a.redact(value);
            }
        }
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
