//! The HTTP target: `POST url` with the delivery's body, signed per Standard
//! Webhooks (`webhook-id` = the idempotency key). 2xx confirms it; 5xx, 408,
//! 429, timeouts and connection errors are retried (no sooner than the
//! answer's `Retry-After` asks); other statuses, redirects included, make
//! the delivery dead. Messages show the URL without its query's values.

use std::time::Duration;

use weir_nodes::http_client::{self, Verdict, shown_text};
use weir_nodes::triggers::verify::standard_webhooks_sign;
use weir_storage::{DeliveryRecord, DeliveryTarget};

use super::{Failure, message};

/// How long a backend may take to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

pub async fn post(d: &DeliveryRecord, now: chrono::DateTime<chrono::Utc>) -> Result<(), Failure> {
    let DeliveryTarget::Http { url, secret_env } = &d.target else {
        return Err(Failure::dead("not an HTTP delivery"));
    };
    let shown = shown_text(url);
    let target =
        http_client::check_url(url).map_err(|e| Failure::dead(format!("`{shown}`: {e}")))?;
    let (body, content_type) = message::body(d);
    let timestamp = now.timestamp();
    let mut request = http_client::delivery_client()
        .post(target)
        .timeout(TIMEOUT)
        .header("content-type", content_type)
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", timestamp.to_string());
    if let Some(env) = secret_env {
        let secret = std::env::var(env).map_err(|_| {
            Failure::retry(format!(
                "the signing secret's environment variable `{env}` is not set; set it and the delivery is retried"
            ))
        })?;
        let signature = standard_webhooks_sign(&secret, &d.id, timestamp, &body)
            .map_err(|e| Failure::retry(format!("cannot sign with `{env}`: {e}")))?;
        request = request.header("webhook-signature", signature);
    }
    for (k, v) in message::weir_headers(d) {
        request = request.header(k, v);
    }
    crate::metrics::delivery_published("http");
    let response = request.body(body).send().await.map_err(|e| {
        let (kind, reason) = http_client::describe(e);
        let why = match kind {
            http_client::FailureKind::Timeout => "timed out",
            _ => "cannot connect",
        };
        Failure::retry(format!("POST {shown}: {why}: {reason}"))
    })?;
    let status = response.status().as_u16();
    match http_client::classify(status) {
        Verdict::Success => Ok(()),
        Verdict::Retry => {
            let wait = http_client::retry_after(response.headers(), now);
            Err(Failure::retry(format!("POST {shown} answered {status}")).after(wait))
        }
        Verdict::Refused => Err(Failure::dead(format!(
            "POST {shown} answered {status}; the backend refused the delivery"
        ))),
    }
}
