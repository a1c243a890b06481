//! `if`: routes on a condition.

use std::time::Duration;

use rhai::{Dynamic, Map, Scope};
use serde_json::Value;

use crate::node::{Link, NodeError, Outcome, Route, Taken, read_links};
use crate::reader::Options;
use crate::script::Expr;

#[derive(Debug)]
pub struct If {
    /// Must be true or false.
    pub condition: Expr,
    /// Runs when the condition holds (a node id or a list).
    pub then: Vec<Link>,
    /// Runs when it does not.
    pub else_: Vec<Link>,
}

impl If {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        let condition = o.required_expr("condition", names);
        let then = o
            .get("then")
            .map(|v| read_links(o, "then", v))
            .unwrap_or_default();
        let else_ = o
            .get("else")
            .map(|v| read_links(o, "else", v))
            .unwrap_or_default();
        if o.key_pos("then").is_none() && o.key_pos("else").is_none() {
            o.error(
                o.pos,
                "an `if` needs `then` or `else` (a node id or a list)",
            );
        }
        Some(Self {
            condition: condition?,
            then,
            else_,
        })
    }

    pub fn run(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Outcome, NodeError> {
        let value = self.condition.eval_bool(scope, timeout)?;
        let mut output = Map::new();
        output.insert("value".into(), Dynamic::from_bool(value));
        Ok(Outcome::Output(Dynamic::from_map(output)))
    }

    pub fn taken(output: &Value) -> Taken {
        match output.get("value").and_then(Value::as_bool) {
            Some(true) => Taken::Also(Route::Then),
            _ => Taken::Also(Route::Else),
        }
    }
}
