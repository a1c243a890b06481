//! `webhook`: fires on `POST /hooks/{tenant}/{flow}/{trigger}`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::EVENT_SCOPE;
use crate::reader::Options;
use crate::script::Expr;

/// Requests larger than this are refused (413) unless `max_body` says more.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// Headers that carry credentials: never kept in a stored event (unless a
/// trigger's `keep_headers` names one).
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];

#[derive(Debug)]
pub struct Webhook {
    /// An optional signature check.
    pub verify: Option<Verify>,
    /// An expression over `event` giving the dedupe key; a second request
    /// with the same key within the retention window starts no run.
    pub dedupe: Option<Expr>,
    /// The largest body accepted, in bytes (default 1 MiB).
    pub max_body: u64,
    /// Headers left out of the event besides [`CREDENTIAL_HEADERS`] and the
    /// signature header (lower-case names).
    pub drop_headers: Vec<String>,
    /// Headers of [`CREDENTIAL_HEADERS`] (or the signature header) kept in
    /// the event after all.
    pub keep_headers: Vec<String>,
}

/// What a webhook request carried, as its event shows it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Parsed JSON, or the raw text.
    pub body: Value,
    /// Lower-cased header names to values.
    pub headers: Value,
    pub query: Value,
    pub method: String,
}

/// `verify:` — how a request proves it comes from the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    pub scheme: Scheme,
    /// The header carrying the signature (lower case): the configured one
    /// for `hmac-sha256`, the scheme's own for the others.
    pub header: String,
    /// The environment variable that holds the secret; `{TENANT}` in it
    /// stands for the tenant's key in upper case, `-` as `_`
    /// (`CRM_SECRET_{TENANT}` → `CRM_SECRET_ACME`).
    pub secret_env: String,
    /// Where `secret_env` is written, for load errors.
    pub secret_env_pos: crate::Pos,
    /// How old a signed timestamp may be (`stripe`, `standard-webhooks`;
    /// default 5m).
    pub tolerance: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Hex (or `sha256=`-prefixed hex) HMAC-SHA256 of the raw body.
    HmacSha256,
    /// GitHub's `X-Hub-Signature-256`.
    Github,
    /// Stripe's `Stripe-Signature`, with a timestamp tolerance.
    Stripe,
    /// The Standard Webhooks specification (`webhook-id`,
    /// `webhook-timestamp`, `webhook-signature`; secret `whsec_…`).
    StandardWebhooks,
}

const SCHEMES: &[&str] = &["hmac-sha256", "github", "stripe", "standard-webhooks"];

impl Verify {
    /// The environment variable holding `tenant`'s secret.
    pub fn secret_var(&self, tenant: &str) -> String {
        self.secret_env
            .replace("{TENANT}", &tenant.to_ascii_uppercase().replace('-', "_"))
    }
}

impl Webhook {
    pub fn build(o: &mut Options) -> Option<Self> {
        let verify = o.get("verify").and_then(|v| read_verify(o, v));
        let dedupe = o.expr("dedupe", EVENT_SCOPE);
        let max_body = o.size("max_body").unwrap_or(DEFAULT_MAX_BODY);
        let mut names = |key: &'static str| -> Vec<String> {
            o.str_list(key)
                .unwrap_or_default()
                .into_iter()
                .map(|(h, _)| h.to_ascii_lowercase())
                .collect()
        };
        let drop_headers = names("drop_headers");
        let keep_headers = names("keep_headers");
        Some(Self {
            verify,
            dedupe,
            max_body,
            drop_headers,
            keep_headers,
        })
    }

    /// Whether the event keeps the header `name` (lower case): not a
    /// credential, the signature or one of `drop_headers` — unless
    /// `keep_headers` names it.
    pub fn keeps_header(&self, name: &str) -> bool {
        if self.keep_headers.iter().any(|h| h == name) {
            return true;
        }
        let signature = self.verify.as_ref().is_some_and(|v| v.header == name);
        !(signature
            || CREDENTIAL_HEADERS.contains(&name)
            || self.drop_headers.iter().any(|h| h == name))
    }

    /// The event of a request.
    pub fn event(
        &self,
        id: &str,
        trigger: &str,
        received_at: DateTime<Utc>,
        request: Request,
    ) -> Value {
        let mut event = super::event_base("webhook", id, trigger, received_at);
        event.insert("body".into(), request.body);
        event.insert("headers".into(), request.headers);
        event.insert("query".into(), request.query);
        event.insert("method".into(), json!(request.method));
        Value::Object(event)
    }
}

fn read_verify(o: &Options, value: &crate::yaml::Yaml) -> Option<Verify> {
    let mut v = Options::new(value, format!("{}: `verify`", o.what), o.source, o.diags);
    let scheme = v.required_str("scheme");
    let header = v.str("header").map(|(h, _)| h.to_ascii_lowercase());
    let secret_env = v.required_str("secret_env");
    let tolerance = v
        .duration("tolerance")
        .unwrap_or(std::time::Duration::from_secs(300));
    let scheme = match scheme {
        Some(("hmac-sha256", _)) => Some(Scheme::HmacSha256),
        Some(("github", _)) => Some(Scheme::Github),
        Some(("stripe", _)) => Some(Scheme::Stripe),
        Some(("standard-webhooks", _)) => Some(Scheme::StandardWebhooks),
        Some((other, pos)) => {
            v.error(
                pos,
                format!(
                    "unknown scheme `{other}`; use one of {}",
                    SCHEMES.join(", ")
                ),
            );
            None
        }
        None => None,
    };
    let header = match (scheme, header) {
        (Some(Scheme::HmacSha256), Some(h)) => h,
        (Some(Scheme::HmacSha256), None) => {
            v.error(
                value.pos,
                "the hmac-sha256 scheme needs `header` (the header carrying the signature)",
            );
            String::new()
        }
        (Some(Scheme::Github), _) => "x-hub-signature-256".into(),
        (Some(Scheme::Stripe), _) => "stripe-signature".into(),
        (Some(Scheme::StandardWebhooks), _) => "webhook-signature".into(),
        (None, _) => String::new(),
    };
    v.finish();
    let (secret_env, secret_env_pos) = secret_env?;
    Some(Verify {
        scheme: scheme?,
        header,
        secret_env: secret_env.to_owned(),
        secret_env_pos,
        tolerance,
    })
}
