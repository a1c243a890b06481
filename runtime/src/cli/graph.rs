//! `weir graph FLOW_FILE [--format dot|mermaid]`

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use weir_nodes::Route;

use super::{GraphFormat, exit};
use crate::flow::{Graph, load_file};

pub fn graph(file: &Path, format: GraphFormat) -> ExitCode {
    let flow = match load_file(file) {
        Ok(flow) => flow,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let text = match format {
        GraphFormat::Dot => dot(&flow.id, &flow.graph),
        GraphFormat::Mermaid => mermaid(&flow.graph),
    };
    crate::cli::print_line(format_args!("{}", text.trim_end_matches('\n')));
    ExitCode::SUCCESS
}

fn edge_label(route: Route) -> Option<String> {
    match route {
        Route::Next => None,
        other => Some(other.label()),
    }
}

/// Graphviz DOT: one box per node labelled with its id and type, edges
/// labelled with their route, loop bodies as clusters.
pub fn dot(flow_id: &str, graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{flow_id}\" {{");
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=rounded, fontname=\"Helvetica\"];"
    );
    dot_graph(&mut out, graph, "  ");
    out.push_str("}\n");
    out
}

fn dot_graph(out: &mut String, graph: &Graph, indent: &str) {
    for (i, node) in graph.nodes.iter().enumerate() {
        let shape = match node.kind.type_name() {
            "if" | "switch" | "filter" => ", shape=diamond, style=\"\"",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{indent}\"{}\" [label=\"{}\\n{}\"{shape}];",
            node.id,
            node.id,
            node.kind.type_name()
        );
        if let Some(body) = &graph.bodies[i] {
            let _ = writeln!(out, "{indent}subgraph \"cluster_{}\" {{", node.id);
            let _ = writeln!(out, "{indent}  label=\"for_each {} (body)\";", node.id);
            dot_graph(out, body, &format!("{indent}  "));
            let _ = writeln!(out, "{indent}}}");
            for (j, b) in body.nodes.iter().enumerate() {
                if body.incoming[j].is_empty() {
                    let _ = writeln!(
                        out,
                        "{indent}\"{}\" -> \"{}\" [style=dashed, label=\"each\"];",
                        node.id, b.id
                    );
                }
            }
        }
    }
    for edge in &graph.edges {
        let (from, to) = (&graph.nodes[edge.from].id, &graph.nodes[edge.to].id);
        match edge_label(edge.route) {
            None => {
                let _ = writeln!(out, "{indent}\"{from}\" -> \"{to}\";");
            }
            Some(label) => {
                let style = if edge.route == Route::OnError {
                    ", style=dotted, color=red"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "{indent}\"{from}\" -> \"{to}\" [label=\"{label}\"{style}];"
                );
            }
        }
    }
}

/// Mermaid `flowchart LR`, with loop bodies as subgraphs.
pub fn mermaid(graph: &Graph) -> String {
    let mut out = String::from("flowchart LR\n");
    mermaid_graph(&mut out, graph, "  ");
    out
}

fn mermaid_id(id: &str) -> String {
    // Mermaid ids may not contain '-'.
    format!("n_{}", id.replace('-', "_"))
}

fn mermaid_graph(out: &mut String, graph: &Graph, indent: &str) {
    for (i, node) in graph.nodes.iter().enumerate() {
        let id = mermaid_id(&node.id);
        let label = format!("{} ({})", node.id, node.kind.type_name());
        let _ = match node.kind.type_name() {
            "if" | "switch" | "filter" => writeln!(out, "{indent}{id}{{\"{label}\"}}"),
            _ => writeln!(out, "{indent}{id}[\"{label}\"]"),
        };
        if let Some(body) = &graph.bodies[i] {
            let _ = writeln!(out, "{indent}subgraph {id}_body [\"for_each {}\"]", node.id);
            mermaid_graph(out, body, &format!("{indent}  "));
            let _ = writeln!(out, "{indent}end");
            let _ = writeln!(out, "{indent}{id} -.each.-> {id}_body");
        }
    }
    for edge in &graph.edges {
        let (from, to) = (
            mermaid_id(&graph.nodes[edge.from].id),
            mermaid_id(&graph.nodes[edge.to].id),
        );
        let _ = match edge_label(edge.route) {
            None => writeln!(out, "{indent}{from} --> {to}"),
            Some(label) if edge.route == Route::OnError => {
                writeln!(out, "{indent}{from} -.{label}.-> {to}")
            }
            Some(label) => writeln!(out, "{indent}{from} -- {label} --> {to}"),
        };
    }
}
