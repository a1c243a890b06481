//! `POST /hooks/{tenant}/{flow}/{trigger}`: a webhook becomes a durable run,
//! and only then is it acknowledged.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rhai::Scope;
use serde_json::{Map, Value, json};
use tracing::warn;
use weir_nodes::TriggerKind;
use weir_nodes::script::{to_dynamic, to_json};
use weir_nodes::triggers::webhook::{Request, Scheme, Webhook};
use weir_storage::{DedupeRecord, TriggerKey, Write};

use super::{ApiError, AppState};
use crate::engine::Engine;
use crate::flow::Flow;
use crate::metrics;

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
    if !flow.tenants.iter().any(|t| t == tenant) {
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
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the body is larger than this webhook's max_body ({} bytes)",
                hook.max_body
            ),
        )
    })?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(verify) = &hook.verify {
        let secret = std::env::var(&verify.secret_env).unwrap_or_default();
        let now = app.runs.engine().clock().now();
        if let Err(e) = verify.check(&secret, &header, &bytes, now) {
            warn!(flow = flow_id, trigger = trigger_id, tenant, reason = %e, "webhook signature rejected");
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "the request's signature does not verify",
            ));
        }
    }
    let body = parse_body(&headers, &bytes)?;
    metrics::event_received(flow_id, trigger_id);
    let event_id = Engine::new_run_id();
    let request = Request {
        body,
        headers: headers_json(&headers),
        query: query_json(query.as_deref()),
        method: "POST".into(),
    };
    let now = app.runs.engine().clock().now();
    let event = hook.event(&event_id, trigger_id, now, request);

    let dedupe_key = dedupe_key(hook, &flow, tenant, &event, &header)?;
    let Some(key) = dedupe_key else {
        let run = app
            .runs
            .admit(&flow, tenant, trigger_id, event, |_| Vec::new())
            .await?;
        return Ok(accepted(&run.id, &event_id));
    };
    // One request per key at a time: the check and the commit that records
    // the key must not interleave with another request's.
    let trigger = TriggerKey::new(tenant, flow_id, trigger_id);
    let _guard = app.dedupe_locks.lock(&trigger, &key).await;
    let store = app.runs.engine().store();
    if let Some(first) = store.dedupe(&trigger, &key).map_err(ApiError::internal)? {
        let age = now - first.at;
        if age.to_std().unwrap_or_default() < app.dedupe_retention {
            metrics::event_rejected("duplicate");
            return Ok((
                StatusCode::OK,
                Json(json!({"run_id": first.run, "event_id": first.event, "duplicate": true})),
            )
                .into_response());
        }
    }
    let dedupe_event = event_id.clone();
    let run = app
        .runs
        .admit(&flow, tenant, trigger_id, event, move |run_id| {
            vec![Write::Dedupe {
                trigger,
                key,
                record: DedupeRecord {
                    run: run_id.to_owned(),
                    event: dedupe_event,
                    at: now,
                },
            }]
        })
        .await?;
    Ok(accepted(&run.id, &event_id))
}

fn accepted(run_id: &str, event_id: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({"run_id": run_id, "event_id": event_id})),
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
        let mut scope = Scope::new();
        scope.push_constant_dynamic("event", to_dynamic(event));
        scope.push_constant_dynamic("vars", flow.vars_dynamic.clone());
        scope.push_constant("tenant", tenant.to_owned());
        scope.push_constant("flow", flow.id.clone());
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
/// JSON if it parses, the text if not.
fn parse_body(headers: &HeaderMap, bytes: &Bytes) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if mime == "application/json" || mime.ends_with("+json") {
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")));
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
    Ok(serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned())))
}

/// Lower-case header names to values; repeated headers joined with ", ".
fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = Map::new();
    for (name, value) in headers {
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
