//! The run object of docs/api.md, shared by `weir run --json` and the HTTP API.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use weir_storage::{NodeRecord, NodeStatus, RunRecord, RunStatus, Unreadable};

use crate::flow::{Flow, Graph};

/// A run. A list of runs leaves `nodes` out.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The run id (a UUID v7).
    pub id: String,
    pub flow: String,
    /// The version of the flow the run follows (its snapshot).
    pub flow_version: String,
    pub tenant: String,
    /// The trigger that started it.
    pub trigger: String,
    /// The connection it runs through (flows of an integration).
    pub connection: Option<Value>,
    /// 1, plus one per retry.
    pub attempt: u32,
    pub status: RunStatus,
    /// The event that started it (secrets dropped).
    pub event: Value,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Every node of the flow, in flow order, reached or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeView>>,
}

/// A run whose record cannot be read back.
#[derive(Debug, Serialize, ToSchema)]
pub struct CorruptRun {
    pub id: String,
    pub tenant: String,
    /// Always `corrupt`.
    #[schema(value_type = String, pattern = "^corrupt$")]
    pub status: &'static str,
    /// Why it cannot be read.
    pub error: String,
}

/// A run, or one whose record cannot be read.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AnyRun {
    Run(RunView),
    Corrupt(CorruptRun),
}

/// One node of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    /// Its key: the node id, `loop[2].step` inside loops.
    pub id: String,
    pub status: NodeStatus,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When a waiting node runs again.
    pub wake_at: Option<DateTime<Utc>>,
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// The run with `nodes` (or without, when `nodes` is `None`).
pub fn run_view(run: &RunRecord, nodes: Option<&[NodeRecord]>) -> RunView {
    RunView {
        id: run.id.clone(),
        flow: run.flow.clone(),
        flow_version: run.flow_version.clone(),
        tenant: run.tenant.clone(),
        trigger: run.trigger.clone(),
        connection: run.connection.clone(),
        attempt: run.attempt,
        status: run.status,
        event: (*run.event).clone(),
        error: run.error.clone(),
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
        nodes: nodes.map(|n| n.iter().map(node_view).collect()),
    }
}

/// `{id, flow, flow_version, tenant, trigger, connection, status, event,
/// error, created_at, started_at, finished_at, nodes: [...]}`.
pub fn run_json(run: &RunRecord, nodes: &[NodeRecord]) -> Value {
    serde_json::to_value(run_view(run, Some(nodes))).unwrap_or(Value::Null)
}

/// A run whose record cannot be read: `{id, tenant, status: "corrupt",
/// error}`.
pub fn corrupt_view(u: &Unreadable) -> CorruptRun {
    CorruptRun {
        id: u.id.clone(),
        tenant: u.tenant.clone(),
        status: "corrupt",
        error: u.error.clone(),
    }
}

/// One node record: `id` is its key (`loop[2].step` inside loops).
pub fn node_view(n: &NodeRecord) -> NodeView {
    NodeView {
        id: n.key.clone(),
        status: n.status,
        attempts: n.attempts,
        started_at: n.started_at,
        finished_at: n.finished_at,
        wake_at: n.wake_at,
        output: n.output.clone(),
        error: n.error.clone(),
    }
}

/// A run's node records in flow order ([`in_flow_order`]), with a
/// `pending` entry for each node of the flow (outside loops) that has no
/// record yet: a run shows every node, reached or not.
pub fn all_nodes(flow: &Flow, mut records: Vec<NodeRecord>) -> Vec<NodeRecord> {
    for node in &flow.graph.nodes {
        if !records.iter().any(|r| r.key == node.id) {
            records.push(NodeRecord::new(node.id.clone(), node.id.clone()));
        }
    }
    in_flow_order(flow, records)
}

/// Orders a run's node records as the flow lists its nodes, each loop's
/// iterations after the loop node, in index order.
pub fn in_flow_order(flow: &Flow, mut records: Vec<NodeRecord>) -> Vec<NodeRecord> {
    let mut rank = std::collections::HashMap::new();
    fn walk(graph: &Graph, prefix: &str, rank: &mut std::collections::HashMap<String, usize>) {
        for (i, node) in graph.nodes.iter().enumerate() {
            let n = rank.len();
            rank.insert(format!("{prefix}{}", node.id), n);
            if let Some(body) = &graph.bodies[i] {
                walk(body, &format!("{prefix}{}[].", node.id), rank);
            }
        }
    }
    walk(&flow.graph, "", &mut rank);
    // `loop[12].step` ranks as `loop[].step`, then by its indexes.
    let shape = |key: &str| -> (usize, Vec<usize>) {
        let mut plain = String::with_capacity(key.len());
        let mut indexes = Vec::new();
        let mut chars = key.chars();
        while let Some(c) = chars.next() {
            plain.push(c);
            if c == '[' {
                let digits: String = chars.by_ref().take_while(|c| *c != ']').collect();
                indexes.push(digits.parse().unwrap_or(0));
                plain.push(']');
            }
        }
        (rank.get(&plain).copied().unwrap_or(usize::MAX), indexes)
    };
    records.sort_by_cached_key(|r| {
        let top = r.key.split('[').next().unwrap_or_default();
        let (rank_of_node, indexes) = shape(&r.key);
        (
            rank.get(top).copied().unwrap_or(usize::MAX),
            indexes,
            rank_of_node,
        )
    });
    records
}
