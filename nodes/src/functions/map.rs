//! `map`: builds a value from expressions.

use std::time::Duration;

use rhai::Scope;

use crate::node::{NodeError, Outcome};
use crate::reader::Options;
use crate::script::Mapping;

#[derive(Debug)]
pub struct MapNode {
    /// A map or list of expressions, mapped recursively; non-string scalars
    /// are literals. The node's output is the built value.
    pub mapping: Mapping,
}

impl MapNode {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        Some(Self {
            mapping: o.mapping("mapping", names)?,
        })
    }

    pub fn run(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Outcome, NodeError> {
        Ok(Outcome::Output(self.mapping.eval(scope, timeout)?))
    }
}
