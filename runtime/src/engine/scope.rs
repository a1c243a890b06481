//! The Rhai scope a run's expressions see: `event`, `vars`, `tenant`,
//! `flow`, `connection`, `run`, `nodes` (and `item`, `index` in loops), all
//! constants.
//! `nodes` is always the last entry, so it can be taken out and put back as
//! nodes finish without copying the others.

use rhai::{Dynamic, Map, Scope};
use weir_nodes::script::to_dynamic;
use weir_storage::RunRecord;

use crate::flow::Flow;

/// The scope of a run's top-level nodes.
pub fn for_run(flow: &Flow, run: &RunRecord) -> Scope<'static> {
    let mut r = Map::new();
    r.insert("id".into(), run.id.clone().into());
    r.insert("attempt".into(), Dynamic::from_int(i64::from(run.attempt)));
    let mut scope = flow
        .scope(&run.tenant, run.connection.as_ref())
        .with("event", to_dynamic(&run.event))
        .with("run", Dynamic::from_map(r));
    if !flow.secrets.is_empty() {
        // Only requests' templates and bodies can name it (checked at load).
        scope = scope.with("secrets", flow.secrets.scope_value());
    }
    scope.with("nodes", Dynamic::from_map(Map::new())).build()
}

/// The scope of one iteration of a loop body: the parent's, plus `item` and
/// `index`.
pub fn for_iteration(parent: &Scope<'static>, item: Dynamic, index: usize) -> Scope<'static> {
    let mut scope = parent.clone();
    let nodes = scope
        .remove::<Dynamic>("nodes")
        .unwrap_or_else(|| Dynamic::from_map(Map::new()));
    scope.push_constant_dynamic("item", item);
    scope.push_constant("index", index as i64);
    scope.push_constant_dynamic("nodes", nodes);
    scope
}

/// Makes a finished node's output visible as `nodes.<id>`.
pub fn set_output(scope: &mut Scope<'static>, id: &str, output: Dynamic) {
    let mut nodes = scope
        .remove::<Dynamic>("nodes")
        .unwrap_or_else(|| Dynamic::from_map(Map::new()));
    if let Some(mut map) = nodes.write_lock::<Map>() {
        map.insert(id.into(), output);
    }
    scope.push_constant_dynamic("nodes", nodes);
}
