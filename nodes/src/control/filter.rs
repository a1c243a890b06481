//! `filter`: continues only if the condition holds; otherwise the rest of the
//! branch is skipped.

use std::time::Duration;

use rhai::{Dynamic, Map, Scope};
use serde_json::Value;

use crate::node::{NodeError, Outcome, Taken};
use crate::reader::Options;
use crate::script::Expr;

#[derive(Debug)]
pub struct Filter {
    /// Must be true or false.
    pub condition: Expr,
}

impl Filter {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        Some(Self {
            condition: o.required_expr("condition", names)?,
        })
    }

    pub fn run(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Outcome, NodeError> {
        let passed = self.condition.eval_bool(scope, timeout)?;
        let mut output = Map::new();
        output.insert("passed".into(), Dynamic::from_bool(passed));
        Ok(Outcome::Output(Dynamic::from_map(output)))
    }

    pub fn taken(output: &Value) -> Taken {
        match output.get("passed").and_then(Value::as_bool) {
            Some(true) => Taken::Next,
            _ => Taken::Nothing,
        }
    }
}
