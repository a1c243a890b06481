//! Flows: a YAML file read into triggers and a DAG of nodes, with every
//! problem reported at once.

mod checks;
mod graph;
mod load;
mod secrets;

pub use graph::{Edge, Graph};
pub use load::{
    Links, LoadError, duplicate_id, flow_files, load_file, load_paths, load_snapshot, load_source,
};
pub use secrets::Secrets;

use rhai::Dynamic;
use serde_json::Value;
use weir_nodes::TriggerDef;
use weir_nodes::script::{Expr, ScopeBuilder};

/// A loaded flow: compiled, validated, ready to run.
#[derive(Debug)]
pub struct Flow {
    pub id: String,
    pub name: Option<String>,
    /// The first 16 hex digits of the SHA-256 of the file's text.
    pub version: String,
    /// The file it was loaded from, as given.
    pub file: String,
    /// The file's text, kept with each run as the flow's snapshot.
    pub source: String,
    /// `vars`: constants visible to expressions.
    pub vars: Value,
    pub vars_dynamic: Dynamic,
    /// `secrets`: values from the environment for requests.
    pub secrets: Secrets,
    /// The tenants the flow serves (default `[default]`; with
    /// `integration`, any tenant with a connection to it).
    pub tenants: Tenants,
    /// `integration:` — the flow runs per connection: its cron and poll
    /// triggers fire once for each ready connection to this integration,
    /// and `connection` is in scope.
    pub integration: Option<String>,
    pub concurrency: Option<Concurrency>,
    pub triggers: Vec<TriggerDef>,
    pub graph: Graph,
}

impl Flow {
    /// Its `api` trigger, if it has one (a flow has at most one that the
    /// API starts).
    pub fn api_trigger(&self) -> Option<(&TriggerDef, &weir_nodes::triggers::api::Api)> {
        self.triggers.iter().find_map(|t| match &t.kind {
            weir_nodes::TriggerKind::Api(api) => Some((t, api)),
            _ => None,
        })
    }

    /// A run's output: that of its last node that succeeded, last in the
    /// flow's order (`null` if none did), from the run's node records.
    pub fn last_output(&self, nodes: &[weir_storage::NodeRecord]) -> Value {
        self.graph
            .order
            .iter()
            .rev()
            .map(|&n| self.graph.nodes[n].id.as_str())
            .find_map(|node| {
                nodes
                    .iter()
                    .find(|r| r.node == node && r.status == weir_storage::NodeStatus::Succeeded)
            })
            .and_then(|r| r.output.clone())
            .unwrap_or(Value::Null)
    }
}

/// `tenants:` — the tenants a flow serves: a list of keys, or `"*"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    Listed(Vec<String>),
    /// `"*"`: any tenant (its webhooks and api trigger take any tenant key).
    Any,
}

impl Tenants {
    pub fn serves(&self, tenant: &str) -> bool {
        match self {
            Tenants::Listed(list) => list.iter().any(|t| t == tenant),
            Tenants::Any => weir_nodes::reader::valid_id(tenant),
        }
    }

    /// The listed tenants (none for `"*"`).
    pub fn listed(&self) -> &[String] {
        match self {
            Tenants::Listed(list) => list,
            Tenants::Any => &[],
        }
    }

    /// The tenant a run gets when none is named: the first listed, or
    /// `default`.
    pub fn first(&self) -> &str {
        self.listed().first().map_or("default", String::as_str)
    }

    /// For messages and the API: the keys, or `"*"`.
    pub fn to_json(&self) -> Value {
        match self {
            Tenants::Listed(list) => serde_json::json!(list),
            Tenants::Any => serde_json::json!("*"),
        }
    }
}

impl std::fmt::Display for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tenants::Listed(list) => f.write_str(&list.join(", ")),
            Tenants::Any => f.write_str("any tenant (\"*\")"),
        }
    }
}

/// `concurrency:` — runs with the same key run one at a time (or `limit`
/// at a time), in arrival order, per tenant.
#[derive(Debug)]
pub struct Concurrency {
    /// Over `event`: the key; without it, the limit holds for all runs of
    /// the flow.
    pub key: Option<Expr>,
    /// Runs per key at once (default 1).
    pub limit: u32,
}

impl Flow {
    pub fn trigger(&self, id: &str) -> Option<&TriggerDef> {
        self.triggers.iter().find(|t| t.id == id)
    }

    /// The scope of this flow's expressions for `tenant`: `vars`, `tenant`,
    /// `flow` and `connection` (`{id, integration, name, parameters}` in a
    /// flow that runs per connection, else `()`), to which each kind of
    /// expression adds its own names.
    pub fn scope(&self, tenant: &str, connection: Option<&Value>) -> ScopeBuilder {
        let connection = connection.map_or(Dynamic::UNIT, weir_nodes::script::to_dynamic);
        ScopeBuilder::new(&self.vars_dynamic, tenant, &self.id, &self.version)
            .with("connection", connection)
    }
}

/// The version of a flow's text.
pub fn version_of(source: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(source.as_bytes())[..8])
}

#[cfg(test)]
mod tests;
