//! `fail`: ends the run as failed.

use std::time::Duration;

use rhai::Scope;

use crate::node::{NodeError, Outcome};
use crate::reader::Options;
use crate::script::Expr;

#[derive(Debug)]
pub struct Fail {
    /// Why (an expression; its text becomes the run's error).
    pub message: Expr,
}

impl Fail {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        Some(Self {
            message: o.required_expr("message", names)?,
        })
    }

    pub fn run(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Outcome, NodeError> {
        let text = crate::functions::eval_text(&self.message, scope, timeout)?;
        Ok(Outcome::Fail(text))
    }
}
