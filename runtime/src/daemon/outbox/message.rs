//! What a delivery looks like on the wire (docs/consuming.md): the AMQP properties and
//! headers, and the body — the payload as JSON, or a CloudEvents 1.0
//! structured envelope.

use chrono::SecondsFormat;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::{Value, json};
use weir_storage::{DeliveryFormat, DeliveryRecord, DeliveryTarget};

pub const JSON: &str = "application/json";
pub const CLOUDEVENTS: &str = "application/cloudevents+json";

/// The routing key (AMQP) or `None` (HTTP).
fn routing_key(d: &DeliveryRecord) -> Option<&str> {
    match &d.target {
        DeliveryTarget::Amqp { routing_key, .. } => Some(routing_key),
        DeliveryTarget::Http { .. } => None,
    }
}

fn is_cloudevents(d: &DeliveryRecord) -> bool {
    matches!(
        &d.target,
        DeliveryTarget::Amqp {
            format: DeliveryFormat::Cloudevents,
            ..
        }
    )
}

/// The message body and its content type.
pub fn body(d: &DeliveryRecord) -> (Vec<u8>, &'static str) {
    if is_cloudevents(d) {
        let envelope = json!({
            "specversion": "1.0",
            "id": d.id,
            "source": format!("weir/{}/{}", d.tenant, d.flow),
            "type": routing_key(d).unwrap_or_default(),
            "time": d.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "datacontenttype": JSON,
            "data": d.payload,
        });
        (envelope.to_string().into_bytes(), CLOUDEVENTS)
    } else {
        (payload_bytes(&d.payload), JSON)
    }
}

fn payload_bytes(payload: &Value) -> Vec<u8> {
    // A `Value` always serializes.
    serde_json::to_vec(payload).unwrap_or_default()
}

/// The `weir-*` headers: tenant, flow, run, node, event.
pub fn weir_headers(d: &DeliveryRecord) -> [(&'static str, &str); 5] {
    [
        ("weir-tenant", &d.tenant),
        ("weir-flow", &d.flow),
        ("weir-run", &d.run),
        ("weir-node", &d.node),
        ("weir-event", &d.event),
    ]
}

/// AMQP properties: persistent, content type, `message_id` = the
/// idempotency key, `timestamp`, `app_id` weir, `type` = the routing key,
/// and the `weir-*` headers.
pub fn properties(d: &DeliveryRecord, content_type: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in weir_headers(d) {
        headers.insert(
            ShortString::from(k),
            AMQPValue::LongString(LongString::from(v)),
        );
    }
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from(content_type))
        .with_message_id(ShortString::from(d.id.as_str()))
        .with_timestamp(d.created_at.timestamp().max(0) as u64)
        .with_app_id(ShortString::from("weir"))
        .with_type(ShortString::from(routing_key(d).unwrap_or_default()))
        .with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use weir_storage::DeliveryStatus;

    fn delivery(format: DeliveryFormat) -> DeliveryRecord {
        DeliveryRecord {
            id: "run1:publish".into(),
            tenant: "acme".into(),
            flow: "contacts".into(),
            run: "run1".into(),
            node: "publish".into(),
            event: "ev1".into(),
            target: DeliveryTarget::Amqp {
                exchange: "crm.events".into(),
                routing_key: "contact.created".into(),
                format,
            },
            payload: json!({"email": "a@b.c", "n": 1}),
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_error: None,
            created_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            next_attempt_at: None,
            lane: "run1".into(),
            seq: 0,
            max_attempts: None,
            unroutable: false,
        }
    }

    #[test]
    fn the_payload_format_is_the_payload_as_json() {
        let (body, content_type) = body(&delivery(DeliveryFormat::Payload));
        assert_eq!(content_type, "application/json");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"email": "a@b.c", "n": 1})
        );
    }

    #[test]
    fn the_cloudevents_format_is_a_structured_envelope() {
        let (body, content_type) = body(&delivery(DeliveryFormat::Cloudevents));
        assert_eq!(content_type, "application/cloudevents+json");
        let envelope: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(envelope["specversion"], "1.0");
        assert_eq!(envelope["id"], "run1:publish");
        assert_eq!(envelope["source"], "weir/acme/contacts");
        assert_eq!(envelope["type"], "contact.created");
        assert_eq!(envelope["time"], "2026-01-02T03:04:05.000Z");
        assert_eq!(envelope["data"], json!({"email": "a@b.c", "n": 1}));
    }

    #[test]
    fn properties_follow_the_documented_message_format() {
        let d = delivery(DeliveryFormat::Payload);
        let p = properties(&d, JSON);
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some("run1:publish")
        );
        assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("weir"));
        assert_eq!(
            p.kind().as_ref().map(|s| s.as_str()),
            Some("contact.created")
        );
        assert_eq!(p.timestamp(), &Some(d.created_at.timestamp() as u64));
        let headers = p.headers().as_ref().unwrap();
        for (k, v) in [
            ("weir-tenant", "acme"),
            ("weir-flow", "contacts"),
            ("weir-run", "run1"),
            ("weir-node", "publish"),
            ("weir-event", "ev1"),
        ] {
            let value = headers.inner().get(k).unwrap_or_else(|| panic!("no {k}"));
            assert_eq!(value, &AMQPValue::LongString(LongString::from(v)), "{k}");
        }
    }
}
