//! A local stand-in for an external app, to try connections against:
//! the Example CRM of `integrations/example-crm.yaml`.
//!
//! ```sh
//! cargo run --release --example fake_app        # on 127.0.0.1:8090
//! ```
//!
//! `GET /{region}/me`, `GET /{region}/contacts` (three contacts; the third
//! is updated every minute), `POST /{region}/contacts` (`{email,
//! full_name}` → `201 {id, …}`) and `GET /{region}/contacts/{id}` answer when
//! the request carries `X-API-Key: demo-key`, or `Authorization: Bearer`
//! with a token from its OAuth2 token endpoint (anything else: 401).
//! `POST /oauth/token` grants tokens to any client (they live
//! `FAKE_APP_TOKEN_TTL` seconds, default 3600); `GET /stats` counts the
//! grants.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

const KEY: &str = "demo-key";

/// Token grants so far.
static GRANTS: AtomicU64 = AtomicU64::new(0);

fn authorized(headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (key, bearer) {
        (Some(KEY), _) => Ok(()),
        (_, Some(token)) if token.starts_with("fake-token-") => Ok(()),
        _ => Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid credentials"})),
        )),
    }
}

async fn token() -> Json<Value> {
    let n = GRANTS.fetch_add(1, Ordering::Relaxed) + 1;
    let ttl: u64 = std::env::var("FAKE_APP_TOKEN_TTL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3600);
    Json(json!({
        "access_token": format!("fake-token-{n}"),
        "refresh_token": format!("fake-refresh-{n}"),
        "expires_in": ttl,
        "token_type": "Bearer",
    }))
}

async fn stats() -> Json<Value> {
    Json(json!({"token_grants": GRANTS.load(Ordering::Relaxed)}))
}

async fn me(
    Path(region): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    authorized(&headers)?;
    Ok(Json(json!({"account": "Demo Inc.", "region": region})))
}

async fn contact(
    Path((region, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    authorized(&headers)?;
    Ok(Json(json!({
        "id": id,
        "region": region,
        "name": format!("Contact {id}"),
        "email": format!("contact{id}@demo.example"),
    })))
}

/// Three contacts; the third changes every minute (a poll sees it updated).
async fn contacts(
    Path(region): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    authorized(&headers)?;
    let minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60);
    let items: Vec<Value> = (1..=3u64)
        .map(|id| {
            json!({
                "id": id,
                "region": region,
                "name": format!("Contact {id}"),
                "email": format!("contact{id}@demo.example"),
                "updated_at": if id == 3 { minute } else { 0 },
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// Contacts created so far (their ids).
static CREATED: AtomicU64 = AtomicU64::new(100);

/// Creates a contact (the `create-contact` action): answers its new id.
async fn create_contact(
    Path(region): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)> {
    authorized(&headers)?;
    if !body["email"].as_str().is_some_and(|e| e.contains('@')) {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": "email is required"})),
        ));
    }
    let id = CREATED.fetch_add(1, Ordering::Relaxed) + 1;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": id, "region": region, "email": body["email"], "name": body["full_name"]}),
        ),
    ))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("FAKE_APP_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let app = Router::new()
        .route("/oauth/token", post(token))
        .route("/stats", get(stats))
        .route("/{region}/me", get(me))
        .route("/{region}/contacts", get(contacts).post(create_contact))
        .route("/{region}/contacts/{id}", get(contact));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("the example CRM listens on http://{addr} (API key: {KEY})");
    axum::serve(listener, app).await
}
