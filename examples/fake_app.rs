//! A local stand-in for an external app, to try connections against:
//! the Example CRM of `integrations/example-crm.yaml`.
//!
//! ```sh
//! cargo run --release --example fake_app        # on 127.0.0.1:8090
//! ```
//!
//! `GET /{region}/me` and `GET /{region}/contacts/{id}` answer when the
//! request carries `X-API-Key: demo-key` (any other key: 401).

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};

const KEY: &str = "demo-key";

fn authorized(headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(KEY) => Ok(()),
        _ => Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid API key"})),
        )),
    }
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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("FAKE_APP_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let app = Router::new()
        .route("/{region}/me", get(me))
        .route("/{region}/contacts/{id}", get(contact));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("the example CRM listens on http://{addr} (API key: {KEY})");
    axum::serve(listener, app).await
}
