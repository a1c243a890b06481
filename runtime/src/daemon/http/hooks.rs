//! `POST /hooks/{tenant}/{flow}/{trigger}`: a webhook becomes a durable run,
//! and only then is it acknowledged.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use tracing::warn;
use weir_nodes::script::{to_dynamic, to_json};
use weir_nodes::triggers::webhook::{Request, Scheme, Webhook};
use weir_nodes::{TriggerKind, json};
use weir_storage::{DedupeRecord, TriggerKey, Write};

use super::{ApiError, AppState, ErrorBody, read_body};
use crate::engine::Engine;
use crate::flow::Flow;
use crate::metrics;

/// A webhook accepted: the run it started and the event's id.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct HookAccepted {
    pub run_id: String,
    pub event_id: String,
}

/// A webhook seen before (its dedupe key or signature): nothing runs.
/// The first request's run and event, unless they are another tenant's.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct HookDuplicate {
    pub run_id: Option<String>,
    pub event_id: Option<String>,
    pub duplicate: bool,
}

/// `POST /hooks/{tenant}/{flow}/{trigger}`: authenticated by the
/// trigger's own scheme (a signature or a shared secret), not by a token.
#[utoipa::path(post, operation_id = "webhook", path = "/hooks/{tenant}/{flow}/{trigger}", tag = "webhooks",
    params(
        ("tenant" = String, Path, description = "The tenant the event is for", pattern = "^[a-z0-9_-]{1,64}$"),
        ("flow" = String, Path, description = "The flow's id"),
        ("trigger" = String, Path, description = "The webhook trigger's id")),
    request_body(content = Value, description = "The event: JSON, a form, or text, as the app sends it (at most the trigger's `max_body`)", content_type = "*/*"),
    responses(
        (status = 202, description = "The event is stored; its run will run", body = HookAccepted),
        (status = 200, description = "A repeat of an event already accepted", body = HookDuplicate),
        (status = 400, description = "The body is not what the trigger takes", body = ErrorBody),
        (status = 401, description = "The signature or secret is missing or wrong", body = ErrorBody),
        (status = 404, description = "No such flow, tenant or webhook trigger", body = ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = ErrorBody),
        (status = 413, description = "The body is over the trigger's `max_body`", body = ErrorBody),
        (status = 429, description = "Too many runs are waiting (`overloaded`)", body = ErrorBody),
        (status = 503, description = "weir cannot store the event now", body = ErrorBody)),
    security(()))]
pub async fn webhook(
    State(app): State<Arc<AppState>>,
    Path((tenant, flow_id, trigger_id)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = accept(&app, &tenant, &flow_id, &trigger_id, query, headers, body).await;
    match &result {
        Ok(_) => metrics::webhook_ack(started.elapsed().as_secs_f64()),
        Err(e) => metrics::event_rejected(match e.status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::UNAUTHORIZED => "bad_signature",
            StatusCode::BAD_REQUEST => "bad_body",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::TOO_MANY_REQUESTS => "overloaded",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::REQUEST_TIMEOUT => "timeout",
            _ => "error",
        }),
    }
    result
}

/// The flow and webhook trigger a request is for, or 404.
pub fn webhook_of(
    app: &AppState,
    tenant: &str,
    flow_id: &str,
    trigger_id: &str,
) -> Result<(Arc<Flow>, usize), ApiError> {
    let flow = app
        .registry
        .get(flow_id)
        .ok_or_else(|| ApiError::not_found(format!("no flow '{flow_id}'")))?;
    if !flow.tenants.serves(tenant) {
        return Err(ApiError::not_found(format!(
            "flow '{flow_id}' does not serve tenant '{tenant}'"
        )));
    }
    let index = flow
        .triggers
        .iter()
        .position(|t| t.id == trigger_id && matches!(t.kind, TriggerKind::Webhook(_)))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "flow '{flow_id}' has no webhook trigger '{trigger_id}'"
            ))
        })?;
    Ok((flow, index))
}

async fn accept(
    app: &AppState,
    tenant: &str,
    flow_id: &str,
    trigger_id: &str,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (flow, index) = webhook_of(app, tenant, flow_id, trigger_id)?;
    let TriggerKind::Webhook(hook) = &flow.triggers[index].kind else {
        return Err(ApiError::not_found(format!(
            "flow '{flow_id}' has no webhook trigger '{trigger_id}'"
        )));
    };
    let limit = usize::try_from(hook.max_body).unwrap_or(usize::MAX);
    let bytes = read_body(&headers, body, limit, app.limits.body_timeout, || {
        format!(
            "the body is larger than this webhook's max_body ({} bytes)",
            hook.max_body
        )
    })
    .await?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let now = app.runs.engine().clock().now();
    let signature = match &hook.verify {
        None => None,
        Some(verify) => {
            let var = verify.secret_var(tenant);
            let secret = std::env::var(&var).unwrap_or_default();
            if secret.is_empty() {
                // Only a flow of `tenants: "*"` with a per-tenant secret
                // gets here (listed tenants are checked at load): this
                // tenant has no secret, so none of its requests can verify.
                warn!(flow = flow_id, trigger = trigger_id, tenant, variable = %var, "webhook refused: the tenant's secret variable is not set");
                return Err(ApiError::not_found(format!(
                    "flow '{flow_id}' does not serve tenant '{tenant}'"
                )));
            }
            match verify.check(&secret, &header, &bytes, now) {
                Ok(proof) => Some((var, proof)),
                Err(e) => {
                    warn!(flow = flow_id, trigger = trigger_id, tenant, reason = %e, "webhook signature rejected");
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "bad_signature",
                        "the request's signature does not verify",
                    ));
                }
            }
        }
    };
    let body = parse_body(&headers, &bytes)?;
    metrics::event_received(flow_id, trigger_id);
    let event_id = Engine::new_run_id();
    let request = Request {
        body,
        headers: headers_json(hook, &headers),
        query: query_json(query.as_deref()),
        method: "POST".into(),
    };
    let event = hook.event(&event_id, trigger_id, now, request);

    // The keys that make a request a duplicate: the trigger's own (its
    // `dedupe` expression, or Standard Webhooks' `webhook-id`), per tenant;
    // and the signature's, so that a signed request sent again is a
    // duplicate whatever its unsigned headers say — across the tenants
    // that share the secret (its variable names the scope).
    let mut keys = Vec::new();
    if let Some(key) = dedupe_key(hook, &flow, tenant, &event, &header)? {
        keys.push((TriggerKey::new(tenant, flow_id, trigger_id), key));
    }
    if let Some((var, proof)) = signature {
        keys.push((
            TriggerKey::new("", flow_id, trigger_id),
            format!("signature:{var}:{}", proof.0),
        ));
    }
    if keys.is_empty() {
        let run = app
            .runs
            .admit(&flow, tenant, trigger_id, event, |_| Vec::new())
            .await?;
        return Ok(accepted(&run.id, &event_id));
    }
    // One request per key at a time: the check and the commit that records
    // the keys must not interleave with another request's.
    let _guards = app.dedupe_locks.lock_all(&keys).await;
    let store = app.runs.engine().store();
    for (trigger, key) in &keys {
        let Some(first) = store.dedupe(trigger, key).map_err(ApiError::internal)? else {
            continue;
        };
        if (now - first.at).to_std().unwrap_or_default() < app.dedupe_retention {
            metrics::event_rejected("duplicate");
            // Another tenant's run is not this caller's to know.
            let same_tenant = first.tenant.as_deref().is_none_or(|t| t == tenant);
            let (run_id, first_event) = match same_tenant {
                true => (Some(first.run), Some(first.event)),
                false => (None, None),
            };
            let duplicate = HookDuplicate {
                run_id,
                event_id: first_event,
                duplicate: true,
            };
            return Ok((StatusCode::OK, Json(duplicate)).into_response());
        }
    }
    let dedupe_event = event_id.clone();
    let dedupe_tenant = tenant.to_owned();
    let run = app
        .runs
        .admit(&flow, tenant, trigger_id, event, move |run_id| {
            keys.into_iter()
                .map(|(trigger, key)| Write::Dedupe {
                    trigger,
                    key,
                    record: DedupeRecord {
                        run: run_id.to_owned(),
                        event: dedupe_event.clone(),
                        at: now,
                        tenant: Some(dedupe_tenant.clone()),
                    },
                })
                .collect()
        })
        .await?;
    Ok(accepted(&run.id, &event_id))
}

fn accepted(run_id: &str, event_id: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(HookAccepted {
            run_id: run_id.to_owned(),
            event_id: event_id.to_owned(),
        }),
    )
        .into_response()
}

/// The dedupe key: the trigger's `dedupe` expression, or the `webhook-id`
/// header of a Standard Webhooks request. `None`: no dedupe.
fn dedupe_key(
    hook: &Webhook,
    flow: &Flow,
    tenant: &str,
    event: &Value,
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ApiError> {
    if let Some(expr) = &hook.dedupe {
        let mut scope = flow
            .scope(tenant, None)
            .with("event", to_dynamic(event))
            .build();
        let value = expr.eval(&mut scope, None).map_err(|e| {
            ApiError::bad_request(format!("the trigger's dedupe expression failed: {e}"))
        })?;
        return Ok(match to_json(&value).map_err(ApiError::bad_request)? {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        });
    }
    if hook
        .verify
        .as_ref()
        .is_some_and(|v| v.scheme == Scheme::StandardWebhooks)
    {
        return Ok(header("webhook-id"));
    }
    Ok(None)
}

/// JSON (must parse: 400 otherwise), form-encoded (a map), or anything else:
/// JSON if it parses, the text if not. JSON nested deeper than weir
/// accepts is a 400, whatever the content type.
fn parse_body(headers: &HeaderMap, bytes: &Bytes) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let too_deep = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "too_deep",
            json::too_deep("the body"),
        )
    };
    if mime == "application/json" || mime.ends_with("+json") {
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        return match json::parse(bytes) {
            Ok(value) => Ok(value),
            Err(json::ParseError::TooDeep) => Err(too_deep()),
            Err(e) => Err(ApiError::bad_request(format!("the body is {e}"))),
        };
    }
    if mime == "application/x-www-form-urlencoded" {
        let mut map = Map::new();
        for (k, v) in form_urlencoded::parse(bytes) {
            map.insert(k.into_owned(), Value::String(v.into_owned()));
        }
        return Ok(Value::Object(map));
    }
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    match json::parse(bytes) {
        Ok(value) => Ok(value),
        Err(json::ParseError::TooDeep) => Err(too_deep()),
        Err(_) => Ok(Value::String(String::from_utf8_lossy(bytes).into_owned())),
    }
}

/// Lower-case header names to values; repeated headers joined with ", ".
/// Credentials and the signature are left out ([`Webhook::keeps_header`]):
/// the event is stored.
fn headers_json(hook: &Webhook, headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
        if !hook.keeps_header(name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match map.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    Value::Object(map)
}

fn query_json(query: Option<&str>) -> Value {
    let mut map = Map::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        map.insert(k.into_owned(), Value::String(v.into_owned()));
    }
    Value::Object(map)
}
