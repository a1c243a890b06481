//! Function nodes: they compute or do something and hand on an output.

pub mod action;
pub mod deliver;
pub mod http;
pub mod log;
pub mod map;
pub mod script;

use std::time::Duration;

use rhai::{Dynamic, Scope};
use serde_json::Value;

use crate::node::NodeError;
use crate::script::{Expr, to_json};

/// Evaluates an expression that must produce JSON.
pub(crate) fn eval_json(
    expr: &Expr,
    scope: &mut Scope<'static>,
    timeout: Option<Duration>,
) -> Result<Value, NodeError> {
    let value: Dynamic = expr.eval(scope, timeout)?;
    to_json(&value).map_err(|e| NodeError::Invalid(format!("`{}`: {e}", expr.text())))
}

/// Evaluates an expression to text: a string as it is, anything else as JSON.
pub(crate) fn eval_text(
    expr: &Expr,
    scope: &mut Scope<'static>,
    timeout: Option<Duration>,
) -> Result<String, NodeError> {
    let value: Dynamic = expr.eval(scope, timeout)?;
    match value.into_immutable_string() {
        Ok(s) => Ok(s.to_string()),
        Err(_) => Ok(eval_json(expr, scope, timeout)?.to_string()),
    }
}
