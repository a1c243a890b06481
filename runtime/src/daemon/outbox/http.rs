//! The HTTP target: `POST url` with the delivery's body, signed per Standard
//! Webhooks (`webhook-id` = the idempotency key). 2xx confirms it; 5xx, 408,
//! 429, timeouts and connection errors are retried; other statuses make the
//! delivery dead.

use std::sync::LazyLock;
use std::time::Duration;

use weir_nodes::triggers::verify::standard_webhooks_sign;
use weir_storage::{DeliveryRecord, DeliveryTarget};

use super::{Failure, message};

/// How long a backend may take to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

fn client() -> &'static reqwest::Client {
    static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
        reqwest::Client::builder()
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            // A redirect is not a confirmation: the backend did not take it.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            // Fails only if the TLS backend cannot start: nothing to do then.
            .expect("the HTTP client must initialise")
    });
    &CLIENT
}

pub async fn post(d: &DeliveryRecord, now: chrono::DateTime<chrono::Utc>) -> Result<(), Failure> {
    let DeliveryTarget::Http { url, secret_env } = &d.target else {
        return Err(Failure::dead("not an HTTP delivery"));
    };
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(u) => {
            return Err(Failure::dead(format!(
                "`{url}`: the scheme `{}` is not supported; use http or https",
                u.scheme()
            )));
        }
        Err(e) => return Err(Failure::dead(format!("`{url}` is not a valid URL: {e}"))),
    }
    let (body, content_type) = message::body(d);
    let timestamp = now.timestamp();
    let mut request = client()
        .post(url)
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
        let why = if e.is_timeout() {
            "timed out"
        } else {
            "cannot connect"
        };
        Failure::retry(format!("POST {url}: {why}: {e}"))
    })?;
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(Failure::retry(format!("POST {url} answered {status}"))),
        _ => Err(Failure::dead(format!(
            "POST {url} answered {status}; the backend refused the delivery"
        ))),
    }
}
