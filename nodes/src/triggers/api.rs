//! `api`: fires on `POST /api/v1/flows/{flow}/runs`; the event's `body` is
//! the request's `input`.

use chrono::{DateTime, Utc};
use serde_json::Value;

#[derive(Debug)]
pub struct Api;

impl Api {
    pub fn event(
        &self,
        id: &str,
        trigger: &str,
        received_at: DateTime<Utc>,
        input: Value,
    ) -> Value {
        let mut event = super::event_base("api", id, trigger, received_at);
        event.insert("body".into(), input);
        Value::Object(event)
    }
}
