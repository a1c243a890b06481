//! A flow drawn as inline SVG: the API's [`GraphView`] becomes a
//! [`Drawing`] (every node, edge and `for_each` body, with labels and
//! statuses), which `layout-rs` lays out in layers as Graphviz's `dot`
//! would; the SVG itself is written here, so that every shape carries its
//! node's type and status as classes and the stylesheet colours it.

use std::collections::HashMap;
use std::fmt::Write;

use layout::core::base::Orientation;
use layout::core::format::{ClipHandle, RenderBackend};
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;

use crate::daemon::http::api::GraphView;

/// What the drawing shows, before layout.
#[derive(Debug, Default, PartialEq)]
pub struct Drawing {
    pub nodes: Vec<Shape>,
    pub edges: Vec<Link>,
    /// `for_each` bodies: the loop node's id and its body's nodes.
    pub groups: Vec<Group>,
}

#[derive(Debug, PartialEq)]
pub struct Shape {
    /// The node's id (a trigger's id for a trigger).
    pub id: String,
    /// Its type (`map`, `if`, ...) or `trigger`.
    pub kind: String,
    /// For a trigger: its type (`webhook`, `cron`, ...).
    pub detail: Option<String>,
    /// In a run: the node's status (`succeeded`, `failed`, ...).
    pub status: Option<String>,
}

#[derive(Debug, PartialEq)]
pub struct Link {
    pub from: usize,
    pub to: usize,
    /// `next`, `then`, `else`, `case N`, `default`, `on_error`, `each`
    /// (a loop into its body) or `start` (a trigger into the flow).
    pub route: String,
}

#[derive(Debug, PartialEq)]
pub struct Group {
    pub id: String,
    pub members: Vec<usize>,
}

impl Drawing {
    /// The flow's graph with its triggers in front; `status` gives a
    /// node's status in a run, by node id (loop iterations folded into
    /// their body node).
    pub fn of(
        graph: &GraphView,
        triggers: &[(&str, &str)],
        status: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let mut d = Drawing::default();
        let first = d.add_graph(graph, None, status);
        for (id, kind) in triggers {
            let t = d.nodes.len();
            d.nodes.push(Shape {
                id: (*id).to_owned(),
                kind: "trigger".into(),
                detail: Some((*kind).to_owned()),
                status: None,
            });
            for &root in &first {
                d.edges.push(Link {
                    from: t,
                    to: root,
                    route: "start".into(),
                });
            }
        }
        d
    }

    /// Adds `graph`'s nodes and edges; answers the indexes of its entry
    /// nodes (those without incoming edges).
    fn add_graph(
        &mut self,
        graph: &GraphView,
        group: Option<usize>,
        status: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<usize> {
        let base = self.nodes.len();
        let mut index = HashMap::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            index.insert(node.id.as_str(), base + i);
            self.nodes.push(Shape {
                id: node.id.clone(),
                kind: node.kind.to_owned(),
                detail: None,
                status: status(&node.id),
            });
            if let Some(g) = group {
                self.groups[g].members.push(base + i);
            }
        }
        for edge in &graph.edges {
            if let (Some(&from), Some(&to)) =
                (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
            {
                self.edges.push(Link {
                    from,
                    to,
                    route: edge.route.clone(),
                });
            }
        }
        for (i, node) in graph.nodes.iter().enumerate() {
            if let Some(body) = &node.body {
                let g = self.groups.len();
                self.groups.push(Group {
                    id: node.id.clone(),
                    members: Vec::new(),
                });
                for root in self.add_graph(body, Some(g), status) {
                    self.edges.push(Link {
                        from: base + i,
                        to: root,
                        route: "each".into(),
                    });
                }
            }
        }
        (0..graph.nodes.len())
            .map(|i| base + i)
            .filter(|n| !self.edges.iter().any(|e| e.to == *n))
            .collect()
    }

    /// The drawing as an `<svg>` element (every text escaped).
    pub fn svg(&self) -> String {
        if self.nodes.is_empty() {
            return String::new();
        }
        let drawing = std::panic::AssertUnwindSafe(|| self.layout());
        // layout-rs asserts its invariants; a graph it cannot lay out is
        // drawn as a list rather than failing the page.
        match std::panic::catch_unwind(drawing) {
            Ok(svg) => svg,
            Err(_) => {
                tracing::warn!(
                    nodes = self.nodes.len(),
                    "the flow graph could not be laid out"
                );
                self.fallback()
            }
        }
    }

    fn layout(&self) -> String {
        let mut graph = VisualGraph::new(Orientation::TopToBottom);
        let handles: Vec<_> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let widest = n.id.chars().count().max(n.subtitle().chars().count());
                let size = Point::new(widest as f64 * CHAR_WIDTH + 28.0, 46.0);
                let shape = ShapeKind::new_box(&format!("{}\n{}", n.id, n.subtitle()));
                graph.add_node(Element::create_with_properties(
                    shape,
                    StyleAttr::simple(),
                    Orientation::TopToBottom,
                    size,
                    format!("n{i}"),
                ))
            })
            .collect();
        for (i, e) in self.edges.iter().enumerate() {
            let label = match e.route.as_str() {
                "next" | "start" => "",
                other => other,
            };
            graph.add_edge(
                Arrow::simple_with_properties(label, format!("e{i}")),
                handles[e.from],
                handles[e.to],
            );
        }
        let mut canvas = Canvas::new(self);
        graph.do_it(false, false, false, &mut canvas);
        canvas.finish()
    }

    /// The nodes as a column of boxes, for a graph layout-rs refused.
    fn fallback(&self) -> String {
        let mut canvas = Canvas::new(self);
        for (i, n) in self.nodes.iter().enumerate() {
            let width =
                n.id.chars().count().max(n.subtitle().chars().count()) as f64 * CHAR_WIDTH + 28.0;
            canvas.draw_rect(
                Point::new(10.0, 10.0 + i as f64 * 60.0),
                Point::new(width, 46.0),
                &StyleAttr::simple(),
                Some(format!("n{i}")),
                None,
            );
            canvas.draw_text(
                Point::new(10.0 + width / 2.0, 33.0 + i as f64 * 60.0),
                &n.id,
                &StyleAttr::simple(),
            );
        }
        canvas.finish()
    }
}

impl Shape {
    fn subtitle(&self) -> &str {
        self.detail.as_deref().unwrap_or(&self.kind)
    }

    fn classes(&self) -> String {
        let mut c = format!("node type-{}", css_word(&self.kind));
        if let Some(s) = &self.status {
            let _ = write!(c, " status-{}", css_word(s));
        }
        c
    }
}

/// The width the layout gives a character of a label (the stylesheet's
/// 13px sans-serif is narrower on average).
const CHAR_WIDTH: f64 = 8.0;

/// `[a-z0-9_-]` only, for a class name.
fn css_word(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Text for SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// layout-rs's render calls, written as SVG. A node is drawn as its box
/// (`draw_rect` with the node's `n{i}` property), then its label
/// (`draw_text`); an edge's label arrives as a `draw_text` of its own.
struct Canvas<'a> {
    drawing: &'a Drawing,
    body: String,
    /// The node whose label comes next.
    open: Option<usize>,
    /// Each node's box, for the groups' outlines.
    boxes: HashMap<usize, (Point, Point)>,
    max: Point,
}

impl<'a> Canvas<'a> {
    fn new(drawing: &'a Drawing) -> Self {
        Self {
            drawing,
            body: String::new(),
            open: None,
            boxes: HashMap::new(),
            max: Point::new(0.0, 0.0),
        }
    }

    fn grow(&mut self, p: Point) {
        self.max.x = self.max.x.max(p.x);
        self.max.y = self.max.y.max(p.y);
    }

    fn close_node(&mut self) {
        if self.open.take().is_some() {
            self.body.push_str("</g>");
        }
    }

    fn finish(mut self) -> String {
        self.close_node();
        let mut groups = String::new();
        for g in &self.drawing.groups {
            let boxes: Vec<_> = g.members.iter().filter_map(|m| self.boxes.get(m)).collect();
            if boxes.is_empty() {
                continue;
            }
            let x0 = boxes.iter().map(|b| b.0.x).fold(f64::MAX, f64::min) - 14.0;
            let y0 = boxes.iter().map(|b| b.0.y).fold(f64::MAX, f64::min) - 24.0;
            let x1 = boxes.iter().map(|b| b.0.x + b.1.x).fold(f64::MIN, f64::max) + 14.0;
            // Wide enough for its label (11px text).
            let label = ("for_each ".len() + g.id.chars().count()) as f64 * 6.5 + 16.0;
            let x1 = x1.max(x0 + label);
            let y1 = boxes.iter().map(|b| b.0.y + b.1.y).fold(f64::MIN, f64::max) + 10.0;
            let _ = write!(
                groups,
                r#"<g class="group" data-group="{id}"><rect x="{x0:.1}" y="{y0:.1}" width="{w:.1}" height="{h:.1}" rx="8"/><text x="{tx:.1}" y="{ty:.1}">for_each {id}</text></g>"#,
                id = escape(&g.id),
                w = x1 - x0,
                h = y1 - y0,
                tx = x0 + 8.0,
                ty = y0 + 15.0,
            );
            self.max.x = self.max.x.max(x1);
            self.max.y = self.max.y.max(y1);
        }
        let (w, h) = (self.max.x + 10.0, self.max.y + 10.0);
        format!(
            r#"<svg class="flow-graph" xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" role="img"><defs><marker id="arrowhead" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>{groups}{}</svg>"#,
            self.body
        )
    }

    fn node_of(properties: &Option<String>) -> Option<usize> {
        properties.as_deref()?.strip_prefix('n')?.parse().ok()
    }
}

impl RenderBackend for Canvas<'_> {
    fn draw_rect(
        &mut self,
        xy: Point,
        size: Point,
        _: &StyleAttr,
        properties: Option<String>,
        _: Option<ClipHandle>,
    ) {
        self.close_node();
        self.grow(Point::new(xy.x + size.x, xy.y + size.y));
        let Some(i) = Self::node_of(&properties) else {
            return;
        };
        let Some(node) = self.drawing.nodes.get(i) else {
            return;
        };
        self.boxes.insert(i, (xy, size));
        let _ = write!(
            self.body,
            r#"<g class="{}" data-node="{}"{}><title>{} ({}){}</title>"#,
            node.classes(),
            escape(&node.id),
            // In a run, a node opens its details (Enter, or a click).
            if node.status.is_some() && node.kind != "trigger" {
                r#" tabindex="0" role="button""#
            } else {
                ""
            },
            escape(&node.id),
            escape(node.subtitle()),
            node.status
                .as_ref()
                .map(|s| format!(": {}", escape(s)))
                .unwrap_or_default(),
        );
        let (x, y, w, h) = (xy.x, xy.y, size.x, size.y);
        match node.kind.as_str() {
            "if" | "switch" | "filter" => {
                let _ = write!(
                    self.body,
                    r#"<polygon class="shape" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}"/>"#,
                    x + w / 2.0,
                    y - 6.0,
                    x + w + 10.0,
                    y + h / 2.0,
                    x + w / 2.0,
                    y + h + 6.0,
                    x - 10.0,
                    y + h / 2.0
                );
            }
            "trigger" => {
                let _ = write!(
                    self.body,
                    r#"<ellipse class="shape" cx="{:.1}" cy="{:.1}" rx="{:.1}" ry="{:.1}"/>"#,
                    x + w / 2.0,
                    y + h / 2.0,
                    w / 2.0 + 6.0,
                    h / 2.0
                );
            }
            kind => {
                let rx = if matches!(kind, "deliver" | "fail") {
                    h / 2.0
                } else {
                    6.0
                };
                let _ = write!(
                    self.body,
                    r#"<rect class="shape" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="{rx:.1}"/>"#
                );
            }
        }
        self.open = Some(i);
    }

    fn draw_line(&mut self, start: Point, stop: Point, _: &StyleAttr, _: Option<String>) {
        self.grow(start);
        self.grow(stop);
        let _ = write!(
            self.body,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"/>"#,
            start.x, start.y, stop.x, stop.y
        );
    }

    fn draw_circle(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}

    fn draw_text(&mut self, xy: Point, text: &str, _: &StyleAttr) {
        match self.open.and_then(|i| self.drawing.nodes.get(i)) {
            Some(node) => {
                let _ = write!(
                    self.body,
                    r#"<text class="label" x="{:.1}" y="{:.1}">{}</text><text class="kind" x="{:.1}" y="{:.1}">{}</text>"#,
                    xy.x,
                    xy.y - 4.0,
                    escape(&node.id),
                    xy.x,
                    xy.y + 12.0,
                    escape(node.subtitle())
                );
                self.close_node();
            }
            None => {
                self.grow(Point::new(xy.x + text.len() as f64 * 4.0, xy.y + 8.0));
                let _ = write!(
                    self.body,
                    r#"<text class="route" x="{:.1}" y="{:.1}">{}</text>"#,
                    xy.x,
                    xy.y + 4.0,
                    escape(text)
                );
            }
        }
    }

    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        _: bool,
        head: (bool, bool),
        _: &StyleAttr,
        properties: Option<String>,
        _: &str,
    ) {
        self.close_node();
        if path.len() < 2 {
            return;
        }
        for p in path {
            self.grow(p.0);
            self.grow(p.1);
        }
        let route = properties
            .as_deref()
            .and_then(|p| p.strip_prefix('e'))
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| self.drawing.edges.get(i))
            .map_or("next", |e| e.route.as_str());
        let mut d = format!(
            "M {:.1} {:.1} C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}",
            path[0].0.x,
            path[0].0.y,
            path[0].1.x,
            path[0].1.y,
            path[1].0.x,
            path[1].0.y,
            path[1].1.x,
            path[1].1.y
        );
        for p in path.iter().skip(2) {
            let _ = write!(d, " S {:.1} {:.1}, {:.1} {:.1}", p.0.x, p.0.y, p.1.x, p.1.y);
        }
        let marker = if head.1 {
            r#" marker-end="url(#arrowhead)""#
        } else {
            ""
        };
        let _ = write!(
            self.body,
            r#"<path class="edge route-{}" d="{d}"{marker}/>"#,
            css_word(route)
        );
    }

    fn create_clip(&mut self, _: Point, _: Point, _: usize) -> ClipHandle {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::http::api::{GraphEdge, GraphNode};

    fn node(id: &str, kind: &'static str) -> GraphNode {
        GraphNode {
            id: id.into(),
            kind,
            body: None,
        }
    }

    fn edge(from: &str, to: &str, route: &str) -> GraphEdge {
        GraphEdge {
            from: from.into(),
            to: to.into(),
            route: route.into(),
        }
    }

    fn sample() -> GraphView {
        let body = GraphView {
            nodes: vec![node("fetch", "http"), node("shape", "map")],
            edges: vec![edge("fetch", "shape", "next")],
        };
        let mut each = node("each", "for_each");
        each.body = Some(Box::new(body));
        GraphView {
            nodes: vec![
                node("check", "if"),
                node("yes", "map"),
                node("no", "deliver"),
                each,
            ],
            edges: vec![
                edge("check", "yes", "then"),
                edge("check", "no", "else"),
                edge("yes", "each", "next"),
            ],
        }
    }

    #[test]
    fn every_node_edge_and_body_is_in_the_layout_input() {
        let status = |id: &str| (id == "yes").then(|| "failed".to_owned());
        let d = Drawing::of(&sample(), &[("hook", "webhook")], &status);
        let ids: Vec<_> = d.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            ["check", "yes", "no", "each", "fetch", "shape", "hook"]
        );
        let edges: Vec<_> = d
            .edges
            .iter()
            .map(|e| {
                (
                    d.nodes[e.from].id.as_str(),
                    d.nodes[e.to].id.as_str(),
                    e.route.as_str(),
                )
            })
            .collect();
        assert_eq!(
            edges,
            [
                ("check", "yes", "then"),
                ("check", "no", "else"),
                ("yes", "each", "next"),
                ("fetch", "shape", "next"),
                ("each", "fetch", "each"),
                ("hook", "check", "start"),
            ]
        );
        assert_eq!(
            d.groups,
            [Group {
                id: "each".into(),
                members: vec![4, 5]
            }]
        );
        assert_eq!(d.nodes[1].status.as_deref(), Some("failed"));
        assert_eq!(d.nodes[6].detail.as_deref(), Some("webhook"));
    }

    #[test]
    fn the_svg_has_one_shape_per_node_with_its_classes_and_the_branch_labels() {
        let status = |id: &str| (id == "yes").then(|| "failed".to_owned());
        let svg = Drawing::of(&sample(), &[("hook", "webhook")], &status).svg();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches(r#"<g class="node "#).count(), 7, "{svg}");
        assert!(
            svg.contains(r#"<g class="node type-map status-failed" data-node="yes" tabindex="0" role="button">"#),
            "{svg}"
        );
        assert_eq!(
            svg.matches("tabindex").count(),
            1,
            "only nodes with a status take focus: {svg}"
        );
        assert!(svg.contains("<polygon"), "the if is a diamond: {svg}");
        assert!(svg.contains("<ellipse"), "the trigger is an ellipse: {svg}");
        for label in [">then<", ">else<", ">each<", ">for_each each<"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        assert_eq!(svg.matches("<path class=\"edge").count(), 6, "{svg}");
    }

    #[test]
    fn ids_are_escaped_in_the_svg() {
        let g = GraphView {
            nodes: vec![node("<script>x</script>", "map")],
            edges: vec![],
        };
        let svg = Drawing::of(&g, &[], &|_| None).svg();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
    }

    #[test]
    fn a_forty_node_flow_is_laid_out_without_overlaps() {
        let nodes: Vec<_> = (0..40)
            .map(|i| node(&format!("step_{i}"), if i % 7 == 0 { "if" } else { "map" }))
            .collect();
        let mut edges = Vec::new();
        for i in 1..40 {
            let from = if i % 3 == 0 { i - 3 } else { i - 1 };
            edges.push(edge(
                &format!("step_{from}"),
                &format!("step_{i}"),
                if from % 7 == 0 { "then" } else { "next" },
            ));
        }
        let d = Drawing::of(&GraphView { nodes, edges }, &[("api", "api")], &|_| None);
        let svg = d.svg();
        assert_eq!(svg.matches(r#"<g class="node "#).count(), 41);
        // Laid out (not the fallback column): every edge is drawn.
        assert_eq!(svg.matches("<path class=\"edge").count(), 40, "{svg}");
        // Boxes, as the layout placed them, do not overlap.
        let re_boxes: Vec<(f64, f64, f64, f64)> = svg
            .split("<rect class=\"shape\" ")
            .skip(1)
            .map(|r| {
                let num = |k: &str| -> f64 {
                    let at = r
                        .find(&format!("{k}=\""))
                        .map(|a| a + k.len() + 2)
                        .unwrap_or(0);
                    r[at..]
                        .split('"')
                        .next()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN)
                };
                (num("x"), num("y"), num("width"), num("height"))
            })
            .collect();
        assert!(re_boxes.len() >= 30);
        for (i, a) in re_boxes.iter().enumerate() {
            for b in &re_boxes[i + 1..] {
                let apart =
                    a.0 + a.2 <= b.0 || b.0 + b.2 <= a.0 || a.1 + a.3 <= b.1 || b.1 + b.3 <= a.1;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
        }
    }
}
