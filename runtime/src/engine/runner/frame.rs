//! A frame: one execution of a graph (the flow, or one loop iteration),
//! with per-node edge counts and the ready queue.

use std::collections::VecDeque;

use rhai::Scope;
use serde_json::Value;
use weir_nodes::node::{NodeDef, Taken};
use weir_storage::NodeRecord;

use crate::flow::Graph;

/// Per node of a frame.
pub(super) struct NodeState {
    pub(super) resolved_in: usize,
    pub(super) taken_in: usize,
    pub(super) attempts: u32,
    pub(super) record: NodeRecord,
}

pub(super) struct Frame<'g> {
    pub(super) graph: &'g Graph,
    /// Prefix of node keys: `""`, or `loop[2].` inside an iteration.
    pub(super) prefix: String,
    /// Loop indexes, outermost first, for idempotency keys.
    pub(super) indexes: Vec<usize>,
    pub(super) scope: Scope<'static>,
    pub(super) state: Vec<NodeState>,
    pub(super) ready: VecDeque<usize>,
    /// Nodes made ready since the work count last saw them.
    pub(super) newly_ready: Vec<usize>,
    pub(super) sink_output: Value,
}

impl<'g> Frame<'g> {
    pub(super) fn new(
        graph: &'g Graph,
        prefix: String,
        indexes: Vec<usize>,
        scope: Scope<'static>,
    ) -> Self {
        let state = graph
            .nodes
            .iter()
            .map(|n| NodeState {
                resolved_in: 0,
                taken_in: 0,
                attempts: 0,
                record: NodeRecord::new(format!("{prefix}{}", n.id), n.id.clone()),
            })
            .collect();
        Self {
            graph,
            prefix,
            indexes,
            scope,
            state,
            ready: VecDeque::new(),
            newly_ready: Vec::new(),
            sink_output: Value::Null,
        }
    }

    pub(super) fn key(&self, node: &NodeDef) -> String {
        format!("{}{}", self.prefix, node.id)
    }

    /// `{run_id}:{node_id}`, plus `:{index}` per enclosing loop.
    pub(super) fn idempotency_key(&self, run_id: &str, node: &NodeDef) -> String {
        let mut key = format!("{run_id}:{}", node.id);
        for i in &self.indexes {
            key.push(':');
            key.push_str(&i.to_string());
        }
        key
    }

    /// Marks node `i` resolved: each outgoing edge counts as taken or not.
    pub(super) fn resolve(&mut self, i: usize, taken: Taken) {
        for &e in &self.graph.outgoing[i] {
            let edge = self.graph.edges[e];
            let to = &mut self.state[edge.to];
            to.resolved_in += 1;
            if taken.takes(edge.route) {
                to.taken_in += 1;
            }
            if to.resolved_in == self.graph.incoming[edge.to].len() {
                self.ready.push_back(edge.to);
                self.newly_ready.push(edge.to);
            }
        }
    }
}
