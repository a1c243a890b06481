//! Notifications — `connection.created`, `connection.disconnected`,
//! `connection.reconnected`, `connection.deleted` and `run.failed` — sent
//! through the durable outbox to `--notify-exchange` (AMQP, the type as
//! routing key) and/or `--notify-url` (signed HTTP), so that nobody learns
//! from a customer that a token died.
//!
//! Each is `{type, tenant, time, data}`; `data` is `{connection: {id,
//! integration, name, state, error}}` or `{run: {id, flow, error}}`. A
//! notification is committed to the outbox first and handed to the
//! dispatcher once on disk, like a `deliver` node's delivery.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Value, json};
use tracing::warn;
use weir_storage::{
    Commit, ConnectionRecord, DeliveryFormat, DeliveryRecord, DeliveryStatus, DeliveryTarget,
    RunRecord, Store, Write,
};

use crate::engine::Engine;

/// The variable holding the `whsec_` secret `--notify-url` deliveries are
/// signed with.
pub const SECRET_VAR: &str = "WEIR_NOTIFY_SECRET";

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Amqp { exchange: String },
    Http { url: String },
}

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    Created,
    Disconnected,
    Reconnected,
    Deleted,
}

impl ConnectionEvent {
    fn type_name(self) -> &'static str {
        match self {
            ConnectionEvent::Created => "connection.created",
            ConnectionEvent::Disconnected => "connection.disconnected",
            ConnectionEvent::Reconnected => "connection.reconnected",
            ConnectionEvent::Deleted => "connection.deleted",
        }
    }
}

pub struct Notifier {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    targets: Vec<Target>,
}

impl Notifier {
    pub fn new(store: Arc<dyn Store>, engine: Arc<Engine>, targets: Vec<Target>) -> Arc<Self> {
        Arc::new(Self {
            store,
            engine,
            targets,
        })
    }

    pub async fn connection(&self, event: ConnectionEvent, c: &ConnectionRecord) {
        let data = json!({"connection": {
            "id": c.id,
            "integration": c.integration,
            "name": c.name,
            "state": c.state.as_str(),
            "error": c.error,
        }});
        self.send(&c.tenant, event.type_name(), data, "", "").await;
    }

    pub async fn run_failed(&self, run: &RunRecord) {
        let data = json!({"run": {"id": run.id, "flow": run.flow, "error": run.error}});
        self.send(&run.tenant, "run.failed", data, &run.flow, &run.id)
            .await;
    }

    async fn send(&self, tenant: &str, kind: &str, data: Value, flow: &str, run: &str) {
        if self.targets.is_empty() {
            return;
        }
        let now = Utc::now();
        let id = uuid::Uuid::now_v7().to_string();
        let payload = json!({"type": kind, "tenant": tenant, "time": now, "data": data});
        let deliveries: Vec<DeliveryRecord> = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let id = format!("notify:{id}:{i}");
                DeliveryRecord {
                    lane: id.clone(),
                    id,
                    tenant: tenant.to_owned(),
                    flow: flow.to_owned(),
                    run: run.to_owned(),
                    node: String::new(),
                    event: kind.to_owned(),
                    target: match target {
                        Target::Amqp { exchange } => DeliveryTarget::Amqp {
                            exchange: exchange.clone(),
                            routing_key: kind.to_owned(),
                            format: DeliveryFormat::Payload,
                        },
                        Target::Http { url } => DeliveryTarget::Http {
                            url: url.clone(),
                            secret_env: Some(SECRET_VAR.to_owned()),
                        },
                    },
                    payload: payload.clone(),
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    last_error: None,
                    created_at: now,
                    next_attempt_at: None,
                    seq: 0,
                    max_attempts: None,
                    unroutable: false,
                }
            })
            .collect();
        let mut commit = Commit::new();
        for d in &deliveries {
            commit.push(Write::Delivery(d.clone()));
        }
        match self.store.commit(commit).await {
            Ok(()) => {
                for d in deliveries {
                    self.engine.hand_to_outbox(d);
                }
            }
            Err(e) => {
                warn!(r#type = kind, tenant, error = %e, "a notification could not be stored")
            }
        }
    }
}
