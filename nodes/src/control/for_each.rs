//! `for_each`: runs a nested list of nodes once per item. The engine drives
//! the iterations; this holds their configuration.

use std::time::Duration;

use rhai::Scope;
use serde_json::Value;

use crate::node::{NodeDef, NodeError, read_node};
use crate::reader::Options;
use crate::script::{Expr, LOOP_SCOPE};
use crate::yaml::Kind;

#[derive(Debug)]
pub struct ForEach {
    /// The list to iterate over (an expression).
    pub items: Expr,
    /// The body: nodes linked by their own `next`. In scope: `item`,
    /// `index`, and the body's finished nodes as `nodes.<id>`.
    pub body: Vec<NodeDef>,
    /// How many iterations run at once (default 1).
    pub concurrency: usize,
}

/// The most items one `for_each` takes.
pub const MAX_ITEMS: usize = 10_000;

impl ForEach {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        let items = o.required_expr("items", names);
        let concurrency = match o.uint("concurrency") {
            None => 1,
            Some(0) => {
                o.error(
                    o.key_pos("concurrency").unwrap_or(o.pos),
                    "`concurrency` must be at least 1",
                );
                1
            }
            Some(n) => n.min(1024) as usize,
        };
        let mut body = Vec::new();
        if let Some(value) = o.required("do") {
            match &value.kind {
                Kind::List(nodes) if !nodes.is_empty() => {
                    for node in nodes {
                        if let Some(n) = read_node(node, o.source, LOOP_SCOPE, o.diags) {
                            body.push(n);
                        }
                    }
                }
                _ => o.error(value.pos, "`do` must be a non-empty list of nodes"),
            }
        }
        Some(Self {
            items: items?,
            body,
            concurrency,
        })
    }

    /// The items, which must be a list.
    pub fn items(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Value>, NodeError> {
        match crate::functions::eval_json(&self.items, scope, timeout)? {
            Value::Array(items) if items.len() <= MAX_ITEMS => Ok(items),
            Value::Array(items) => Err(NodeError::Invalid(format!(
                "`items` has {} items; a for_each takes at most {MAX_ITEMS}",
                items.len()
            ))),
            Value::Null => Ok(Vec::new()),
            other => Err(NodeError::Invalid(format!(
                "`items` must be a list, not {}",
                match other {
                    Value::Object(_) => "a map",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    _ => "a boolean",
                }
            ))),
        }
    }
}
