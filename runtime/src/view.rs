//! The run object of docs/api.md, shared by `weir run --json` and the HTTP API.

use serde_json::{Value, json};
use weir_storage::{NodeRecord, RunRecord, Unreadable};

use crate::flow::{Flow, Graph};

/// `{id, flow, flow_version, tenant, trigger, connection, status, event,
/// error, created_at, started_at, finished_at, nodes: [...]}`.
pub fn run_json(run: &RunRecord, nodes: &[NodeRecord]) -> Value {
    json!({
        "id": run.id,
        "flow": run.flow,
        "flow_version": run.flow_version,
        "tenant": run.tenant,
        "trigger": run.trigger,
        "connection": run.connection,
        "attempt": run.attempt,
        "status": run.status.as_str(),
        "event": *run.event,
        "error": run.error,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "nodes": nodes.iter().map(node_json).collect::<Vec<_>>(),
    })
}

/// A run whose record cannot be read: `{id, tenant, status: "corrupt",
/// error}`.
pub fn unreadable_json(u: &Unreadable) -> Value {
    json!({
        "id": u.id,
        "tenant": u.tenant,
        "status": "corrupt",
        "error": u.error,
    })
}

/// One node record: `id` is its key (`loop[2].step` inside loops).
pub fn node_json(n: &NodeRecord) -> Value {
    json!({
        "id": n.key,
        "status": n.status.as_str(),
        "attempts": n.attempts,
        "started_at": n.started_at,
        "finished_at": n.finished_at,
        "wake_at": n.wake_at,
        "output": n.output,
        "error": n.error,
    })
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
