//! The DAG of a flow's nodes on petgraph: edges from `next`, `then`, `else`,
//! switch cases and `on_error`; topological order; cycles reported by node
//! ids; `for_each` bodies as graphs of their own.

use std::collections::HashMap;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use weir_nodes::node::{NodeDef, NodeKind, OnError, Route};
use weir_nodes::reader::closest;
use weir_nodes::{Diags, Pos};

/// An edge from one node to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub route: Route,
}

/// Nodes (in file order) and their edges.
#[derive(Debug, Default)]
pub struct Graph {
    pub nodes: Vec<NodeDef>,
    pub edges: Vec<Edge>,
    /// Per node, the indices in `edges` of its outgoing edges.
    pub outgoing: Vec<Vec<usize>>,
    /// Per node, the indices in `edges` of its incoming edges.
    pub incoming: Vec<Vec<usize>>,
    /// A topological order of the nodes.
    pub order: Vec<usize>,
    /// Per node, the body of a `for_each`.
    pub bodies: Vec<Option<Graph>>,
    /// In a `for_each` body: the node without successors, whose output is the
    /// iteration's.
    pub sink: Option<usize>,
    index: HashMap<String, usize>,
}

impl Graph {
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Builds the graph of `nodes`. `seen` holds every node id of the flow
    /// so far (ids are unique across the flow, bodies included); `body_of`
    /// names the `for_each` whose body this is.
    pub fn build(
        mut nodes: Vec<NodeDef>,
        seen: &mut HashMap<String, Pos>,
        body_of: Option<&str>,
        diags: &Diags,
    ) -> Self {
        let mut index = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            if node.id.is_empty() {
                continue;
            }
            if let Some(first) = seen.get(&node.id) {
                diags.error(
                    node.id_pos,
                    format!("duplicate node id `{}` (first defined at line {}); node ids must be unique in a flow", node.id, first.line),
                );
            } else {
                seen.insert(node.id.clone(), node.id_pos);
                index.insert(node.id.clone(), i);
            }
        }
        // Bodies first: their ids count as seen when links are checked.
        let bodies: Vec<Option<Graph>> = nodes
            .iter_mut()
            .map(|node| match &mut node.kind {
                NodeKind::ForEach(fe) => {
                    let body = std::mem::take(&mut fe.body);
                    Some(Graph::build(body, seen, Some(&node.id), diags))
                }
                _ => None,
            })
            .collect();

        let mut edges = Vec::new();
        let known: Vec<&str> = index.keys().map(String::as_str).collect();
        for (from, node) in nodes.iter().enumerate() {
            let mut links: Vec<(Route, &weir_nodes::Link)> =
                node.next.iter().map(|l| (Route::Next, l)).collect();
            for (route, targets) in node.kind.routes() {
                links.extend(targets.iter().map(|l| (route, l)));
            }
            if let OnError::Handler(link) = &node.on_error {
                links.push((Route::OnError, link));
            }
            for (route, link) in links {
                match index.get(&link.id) {
                    Some(&to) => edges.push(Edge { from, to, route }),
                    None => {
                        let key = match route {
                            Route::Case(_) => "next".to_owned(),
                            other => other.label(),
                        };
                        let why = match (seen.contains_key(&link.id), body_of) {
                            (true, Some(parent)) => format!(
                                "which is not in the body of for_each '{parent}'; a body links only to its own nodes"
                            ),
                            (true, None) => {
                                "which is inside a for_each body; link to the for_each node instead"
                                    .to_owned()
                            }
                            (false, _) => match closest(&link.id, &known) {
                                Some(near) => format!(
                                    "which is not a node of this flow; did you mean `{near}`?"
                                ),
                                None => "which is not a node of this flow".to_owned(),
                            },
                        };
                        diags.error(
                            link.pos,
                            format!("node '{}': `{key}` names `{}`, {why}", node.id, link.id),
                        );
                    }
                }
            }
        }

        let mut outgoing = vec![Vec::new(); nodes.len()];
        let mut incoming = vec![Vec::new(); nodes.len()];
        for (e, edge) in edges.iter().enumerate() {
            outgoing[edge.from].push(e);
            incoming[edge.to].push(e);
        }

        let mut dag: DiGraph<usize, ()> = DiGraph::with_capacity(nodes.len(), edges.len());
        let ix: Vec<NodeIndex> = (0..nodes.len()).map(|i| dag.add_node(i)).collect();
        for edge in &edges {
            dag.add_edge(ix[edge.from], ix[edge.to], ());
        }
        let order = match toposort(&dag, None) {
            Ok(order) => order.into_iter().map(|n| dag[n]).collect(),
            Err(_) => {
                report_cycles(&dag, &nodes, &edges, diags);
                (0..nodes.len()).collect()
            }
        };

        let sink = body_of.and_then(|parent| {
            let sinks: Vec<usize> = (0..nodes.len()).filter(|i| outgoing[*i].is_empty()).collect();
            match sinks.as_slice() {
                [one] => Some(*one),
                [] => None,
                many => {
                    let ids: Vec<&str> = many.iter().map(|i| nodes[*i].id.as_str()).collect();
                    diags.error(
                        nodes[many[1]].pos,
                        format!("for_each '{parent}': the body must end in one node (its output is the iteration's), but {} have no `next`", ids.join(", ")),
                    );
                    None
                }
            }
        });

        Self {
            nodes,
            edges,
            outgoing,
            incoming,
            order,
            bodies,
            sink,
            index,
        }
    }
}

/// Reports each cycle once, at its first node, naming its nodes in order.
fn report_cycles(dag: &DiGraph<usize, ()>, nodes: &[NodeDef], edges: &[Edge], diags: &Diags) {
    for scc in tarjan_scc(dag) {
        let members: Vec<usize> = scc.iter().map(|n| dag[*n]).collect();
        let self_loop = members.len() == 1
            && edges
                .iter()
                .any(|e| e.from == members[0] && e.to == members[0]);
        if members.len() < 2 && !self_loop {
            continue;
        }
        let start = *members.iter().min().unwrap_or(&0);
        let path = cycle_path(start, &members, edges);
        let names: Vec<&str> = path.iter().map(|i| nodes[*i].id.as_str()).collect();
        diags.error(
            nodes[start].pos,
            format!(
                "the nodes {} form a cycle; a flow must be acyclic",
                names.join(" → ")
            ),
        );
    }
}

/// A path from `start` back to itself through `members`, found breadth-first.
fn cycle_path(start: usize, members: &[usize], edges: &[Edge]) -> Vec<usize> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for e in edges
            .iter()
            .filter(|e| e.from == at && members.contains(&e.to))
        {
            if e.to == start {
                let mut path = vec![start];
                let mut cur = at;
                while cur != start {
                    path.push(cur);
                    cur = parent[&cur];
                }
                path.push(start);
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if e.to != start && !parent.contains_key(&e.to) {
                parent.insert(e.to, at);
                queue.push_back(e.to);
            }
        }
    }
    vec![start, start]
}
