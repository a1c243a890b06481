//! `log`: writes a structured log line.

use std::time::Duration;

use rhai::{Dynamic, Scope};

use crate::node::{NodeError, Outcome};
use crate::reader::Options;
use crate::script::Expr;

#[derive(Debug)]
pub struct Log {
    /// The line's message (an expression).
    pub message: Expr,
    /// An optional value logged as JSON in the `value` field.
    pub value: Option<Expr>,
    /// `debug`, `info` (default), `warn` or `error`.
    pub level: tracing::Level,
}

impl Log {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        let message = o.required_expr("message", names);
        let value = o.expr("value", names);
        let level = match o.str("level") {
            None | Some(("info", _)) => tracing::Level::INFO,
            Some(("debug", _)) => tracing::Level::DEBUG,
            Some(("warn", _)) => tracing::Level::WARN,
            Some(("error", _)) => tracing::Level::ERROR,
            Some((other, pos)) => {
                o.error(
                    pos,
                    format!("`level` must be debug, info, warn or error, not `{other}`"),
                );
                tracing::Level::INFO
            }
        };
        Some(Self {
            message: message?,
            value,
            level,
        })
    }

    pub fn run(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Outcome, NodeError> {
        let message = super::eval_text(&self.message, scope, timeout)?;
        let value = match &self.value {
            Some(v) => super::eval_json(v, scope, timeout)?.to_string(),
            None => String::new(),
        };
        match self.level {
            tracing::Level::ERROR => {
                tracing::error!(target: "weir::flow", message = %message, value)
            }
            tracing::Level::WARN => tracing::warn!(target: "weir::flow", message = %message, value),
            tracing::Level::DEBUG => {
                tracing::debug!(target: "weir::flow", message = %message, value)
            }
            _ => tracing::info!(target: "weir::flow", message = %message, value),
        }
        Ok(Outcome::Output(Dynamic::UNIT))
    }
}
