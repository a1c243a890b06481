//! `script`: runs a Rhai script; its last value is the output.

use std::time::Duration;

use rhai::Scope;

use crate::node::{NodeError, Outcome};
use crate::reader::Options;
use crate::script::Expr;

#[derive(Debug)]
pub struct ScriptNode {
    /// A Rhai script (usually a `|` block). It sees the same names as
    /// expressions; changes it makes to them stay inside the script.
    pub script: Expr,
}

impl ScriptNode {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        Some(Self {
            script: o.required_script("script", names)?,
        })
    }

    pub fn run(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Outcome, NodeError> {
        Ok(Outcome::Output(self.script.eval(scope, timeout)?))
    }
}
