//! `action`: runs an action (a typed operation on a connected app) with
//! `input` (a mapping). What the action is and how it is done — its
//! schemas, its request, the connection it goes through — the daemon
//! resolves at call time ([`Actor`]); nodes never see an integration file
//! or a credential.

use std::pin::Pin;
use std::time::Duration;

use rhai::Scope;
use serde_json::Value;

use crate::node::NodeError;
use crate::reader::{Options, valid_id};
use crate::script::{Expr, Mapping};

#[derive(Debug)]
pub struct ActionNode {
    /// The action's key.
    pub action: String,
    /// The action's input: a mapping over the flow's scope, or one
    /// expression.
    pub input: Mapping,
    /// `connection: KEY` (an integration key) and `connection_id`: as for
    /// `http`; without them the tenant's only connection that implements
    /// the action is used.
    pub integration: Option<String>,
    pub connection_id: Option<Expr>,
}

/// One call of an action, ready to run.
#[derive(Debug, Clone)]
pub struct ActionCall {
    pub action: String,
    pub input: Value,
    pub integration: Option<String>,
    pub connection_id: Option<String>,
}

/// Runs actions for the engine. The daemon implements it.
pub trait Actor: Send + Sync {
    /// Runs `call` for `tenant` (the run's connection, in a flow that runs
    /// per connection, is `own_connection`); `key` is sent to the app as
    /// `Idempotency-Key`. Answers the action's output.
    fn run<'a>(
        &'a self,
        tenant: &'a str,
        own_connection: Option<&'a str>,
        call: &'a ActionCall,
        key: &'a str,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, NodeError>> + Send + 'a>>;
}

impl ActionNode {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        let action = o.required_str("action").map(|(key, pos)| {
            if !valid_id(key) {
                o.error(
                    pos,
                    format!("`action` must be an action key ([a-z0-9_-]{{1,64}}), not `{key}`"),
                );
            }
            key.to_owned()
        });
        // A map of expressions, or one expression for the whole input.
        let input = match o.get("input").map(|v| &v.kind) {
            Some(crate::yaml::Kind::Str(_)) => o.expr("input", names).map(Mapping::Expr),
            _ => o.mapping("input", names),
        };
        let integration = o.str("connection").map(|(key, pos)| {
            if !valid_id(key) {
                o.error(
                    pos,
                    format!(
                        "`connection` must be an integration key ([a-z0-9_-]{{1,64}}), not `{key}`"
                    ),
                );
            }
            key.to_owned()
        });
        let connection_id = o.expr("connection_id", names);
        Some(Self {
            action: action?,
            input: input?,
            integration,
            connection_id,
        })
    }

    /// Evaluates `input` and `connection_id`.
    pub fn prepare(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<ActionCall, NodeError> {
        let input = crate::script::to_json(&self.input.eval(scope, timeout)?)
            .map_err(|e| NodeError::Invalid(format!("`input`: {e}")))?;
        let connection_id = match &self.connection_id {
            None => None,
            Some(expr) => match super::eval_json(expr, scope, timeout)? {
                Value::String(s) => Some(s),
                Value::Null => None,
                other => {
                    return Err(NodeError::Invalid(format!(
                        "`connection_id` must be a connection id (text), not {other}"
                    )));
                }
            },
        };
        Ok(ActionCall {
            action: self.action.clone(),
            input,
            integration: self.integration.clone(),
            connection_id,
        })
    }
}
