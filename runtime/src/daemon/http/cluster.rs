//! `GET /api/v1/cluster`: this process's part in a deployment, its broker
//! link, the depth of the event queues, and the events it dead-lettered.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::Serialize;
use utoipa::ToSchema;

use super::{Admin, ApiError, AppState, ErrorBody};
use crate::daemon::cluster::{DeadLetter, short};

/// How long counting the queues may take before the answer goes without.
const COUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// `all`, `ingest` or `worker`.
    #[schema(pattern = "^(all|ingest|worker)$")]
    pub role: &'static str,
    /// Whether the event broker is connected (`ingest` and `worker`).
    pub broker_connected: Option<bool>,
    /// Why the last attempt to reach the broker failed, if it did.
    pub broker_error: Option<String>,
    /// The work queues and the dead-letter queue, while connected.
    pub queues: Vec<QueueView>,
    /// The events this process sent to the dead-letter queue (the latest
    /// 200, newest first; the queue holds them all).
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub name: String,
    /// Messages ready (not delivered yet).
    pub ready: u32,
    pub consumers: u32,
}

#[utoipa::path(get, path = "/api/v1/cluster", tag = "operations",
    responses(
        (status = 200, description = "This process's part in the deployment", body = ClusterView),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn cluster(
    State(app): State<Arc<AppState>>,
    _: Admin,
) -> Result<Json<ClusterView>, ApiError> {
    let Some(cluster) = &app.cluster else {
        return Ok(Json(ClusterView {
            role: "all",
            broker_connected: None,
            broker_error: None,
            queues: Vec::new(),
            dead_letters: Vec::new(),
        }));
    };
    // A link that just broke may leave a broker call unanswered: the
    // counts are left out rather than the answer held.
    let mut queues = Vec::new();
    let count = async {
        if let Some(link) = cluster.broker.current()
            && let Ok(channel) = link.connection.create_channel().await
        {
            let t = &cluster.topology;
            let mut names = vec![t.events()];
            names.extend((0..t.partitions()).map(|i| t.partition(i)));
            names.push(t.dead());
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            for name in names {
                if let Ok(q) = channel
                    .queue_declare(short(&name), options, FieldTable::default())
                    .await
                {
                    queues.push(QueueView {
                        name,
                        ready: q.message_count(),
                        consumers: q.consumer_count(),
                    });
                }
            }
            crate::daemon::cluster::broker::close_channel(&channel, "counted").await;
        }
    };
    let _ = tokio::time::timeout(COUNT_TIMEOUT, count).await;
    Ok(Json(ClusterView {
        role: cluster.role().as_str(),
        broker_connected: Some(cluster.broker.is_connected()),
        broker_error: cluster.broker.last_error(),
        queues,
        dead_letters: cluster.dead_letters(),
    }))
}
