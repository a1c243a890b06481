//! `api`: fires on `POST /api/v1/flows/{flow}/runs`; the event's `body` is
//! the request's `input`, checked against the trigger's `input_schema`
//! when it has one (and that schema is an MCP tool's input schema).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::reader::Options;
use crate::schema::{self, Schema};

#[derive(Debug)]
pub struct Api {
    /// The JSON Schema the input must match, compiled.
    pub input_schema: Option<Arc<Schema>>,
}

impl Api {
    pub fn build(o: &mut Options) -> Option<Self> {
        let input_schema = match o.get("input_schema") {
            None => None,
            Some(v) => Some(Arc::new(schema::read(v, "input_schema", o)?)),
        };
        Some(Self { input_schema })
    }

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
