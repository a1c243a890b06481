//! The one place the scope of expressions is built. Every expression of a
//! flow sees `vars`, `tenant` and `flow` (`{id, version}`); each kind adds
//! its own names (`event`, `nodes`, `run`, `item`, `cursor`, `response`, …),
//! as the lists in [`super`] and the triggers say.

use rhai::{Dynamic, Map, Scope};

/// A scope under construction: the flow's part first, then what the
/// expression's kind adds, in order.
pub struct ScopeBuilder(Scope<'static>);

impl ScopeBuilder {
    /// `vars`, `tenant` and `flow` (`{id, version}`).
    pub fn new(vars: &Dynamic, tenant: &str, flow_id: &str, flow_version: &str) -> Self {
        let mut scope = Scope::new();
        scope.push_constant_dynamic("vars", vars.clone());
        scope.push_constant("tenant", tenant.to_owned());
        let mut flow = Map::new();
        flow.insert("id".into(), flow_id.into());
        flow.insert("version".into(), flow_version.into());
        scope.push_constant("flow", flow);
        Self(scope)
    }

    /// Adds a constant.
    pub fn with(mut self, name: &'static str, value: Dynamic) -> Self {
        self.0.push_constant_dynamic(name, value);
        self
    }

    pub fn build(self) -> Scope<'static> {
        self.0
    }
}
