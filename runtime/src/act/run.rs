//! Running an action: resolved at call time (connection → integration →
//! universal), its input checked against its schema before anything is
//! sent, its request built from the integration's mapping and sent through
//! the connection (credentials, refresh on 401), retried on 429 (after
//! `Retry-After`, capped at 5 minutes), 5xx and timeouts, its output
//! mapped and checked against its output schema.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rhai::Dynamic;
use serde_json::{Value, json};
use weir_nodes::functions::action::{ActionCall, Actor};
use weir_nodes::functions::http::{Connector, Request, Via};
use weir_nodes::node::NodeError;
use weir_nodes::script::{ScopeBuilder, to_dynamic, to_json};
use weir_storage::ConnectionRecord;

use super::definition::{Action, Implementation, RequestSpec, UniversalAction};
use super::schema::{Schema, SchemaError};
use crate::connect::connections::{Connections, scope_value};
use crate::connect::integration::Integration;
use crate::daemon::registry::Registry;
use crate::flow::Flow;

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why an action cannot run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("no action `{0}`: no universal action or integration defines it")]
    Unknown(String),
    #[error("{0}")]
    NoConnection(String),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "several connections implement `{action}` ({}); name one with `connection` (its id) or `integration`",
        connections.join(", ")
    )]
    Ambiguous {
        action: String,
        connections: Vec<String>,
    },
    #[error("the input does not match the action's input_schema: {}", describe(.0))]
    Invalid(Vec<SchemaError>),
    #[error("{0}")]
    Broken(String),
}

fn describe(errors: &[SchemaError]) -> String {
    errors
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                if e.pointer.is_empty() {
                    "/"
                } else {
                    &e.pointer
                },
                e.message
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An action resolved for one call: the connection it goes through, how its
/// integration does it, and its schemas.
pub struct Resolved {
    pub connection: ConnectionRecord,
    pub integration: Arc<Integration>,
    /// Into `integration.actions`.
    pub index: usize,
    pub input_schema: Option<Arc<Schema>>,
    pub output_schema: Option<Arc<Schema>>,
}

impl Resolved {
    fn spec(&self) -> Result<&RequestSpec, ActError> {
        match &self.integration.actions[self.index].implementation {
            Some(Implementation::Request(spec)) => Ok(spec),
            Some(Implementation::Flow(flow)) => Err(ActError::Broken(format!(
                "action `{}` of `{}` runs flow `{flow}`; flow actions are not runnable yet",
                self.integration.actions[self.index].key, self.integration.key
            ))),
            None => Err(ActError::Broken("the action has no implementation".into())),
        }
    }
}

/// The actions the daemon runs: universal ones from the actions folder,
/// integration ones from the integrations' files.
pub struct Actions {
    universal: Arc<Registry<UniversalAction>>,
    connections: Arc<Connections>,
    /// The one-node flow of each action's API runs, by action key.
    flows: std::sync::Mutex<HashMap<String, Arc<Flow>>>,
}

/// One action of the catalog: `{key, name, description, input_schema,
/// output_schema}`, and the integrations that implement it.
pub struct Entry {
    pub view: Value,
    pub integrations: Vec<String>,
}

impl Actions {
    pub fn new(universal: Arc<Registry<UniversalAction>>, connections: Arc<Connections>) -> Self {
        Self {
            universal,
            connections,
            flows: Default::default(),
        }
    }

    /// Every action defined, by key: a universal one with the integrations
    /// that implement it, and each integration-only one.
    pub fn catalog(&self) -> Vec<Entry> {
        let mut by_key: BTreeMap<String, Entry> = BTreeMap::new();
        let view = |a: &Action, input: Option<&Schema>, output: Option<&Schema>| {
            json!({
                "key": a.key,
                "name": a.name,
                "description": a.description,
                "input_schema": input.map(|s| &s.schema),
                "output_schema": output.map(|s| &s.schema),
            })
        };
        for u in self.universal.all() {
            let a = &u.action;
            by_key.insert(
                a.key.clone(),
                Entry {
                    view: view(a, a.input_schema.as_deref(), a.output_schema.as_deref()),
                    integrations: Vec::new(),
                },
            );
        }
        for i in self.connections.integrations().all() {
            for a in &i.actions {
                let entry = by_key.entry(a.key.clone()).or_insert_with(|| Entry {
                    view: view(a, a.input_schema.as_deref(), a.output_schema.as_deref()),
                    integrations: Vec::new(),
                });
                entry.integrations.push(i.key.clone());
            }
        }
        by_key.into_values().collect()
    }

    /// The flow an API call of `key` runs: one `action` node, its input
    /// and connection from the call (`action-KEY`, any tenant). Its text
    /// is fixed by the key, so a run resumed after a restart finds it in
    /// its snapshot.
    pub fn flow_of(&self, key: &str) -> Result<Arc<Flow>, String> {
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flow) = flows.get(key) {
            return Ok(flow.clone());
        }
        let source = format!(
            "# The runs of action {key} called through the API.\nid: action-{key}\nname: action {key}\ntenants: \"*\"\ntriggers: [{{id: run, type: api}}]\nnodes:\n  - {{id: action, type: action, action: {key}, input: event.body.input, connection_id: event.body.connection}}\n"
        );
        let flow = Arc::new(
            crate::flow::load_source(&source, &format!("(action {key})"))
                .map_err(|e| e.to_string())?,
        );
        flows.insert(key.to_owned(), flow.clone());
        Ok(flow)
    }

    /// Which connection and implementation `call` uses for `tenant`:
    /// the connection it names; else the tenant's connection of the
    /// integration it names; else the run's own connection if its
    /// integration implements the action; else the tenant's only
    /// connection whose integration does.
    pub fn resolve(
        &self,
        tenant: &str,
        own_connection: Option<&str>,
        call: &ActionCall,
    ) -> Result<Resolved, ActError> {
        let key = call.action.as_str();
        let integrations = self.connections.integrations();
        let implements = |c: &ConnectionRecord| {
            integrations
                .get(&c.integration)
                .and_then(|i| i.actions.iter().position(|a| a.key == key).map(|n| (i, n)))
        };
        let store = self.connections.store();
        let mut candidates: Vec<ConnectionRecord> = match (&call.connection_id, &call.integration) {
            (Some(id), _) => {
                let found = store
                    .connection(tenant, id)
                    .map_err(|e| ActError::Broken(e.to_string()))?
                    .ok_or_else(|| ActError::NotFound(format!("no connection {id}")))?;
                vec![found]
            }
            (None, integration) => {
                let all = store
                    .connections(tenant)
                    .map_err(|e| ActError::Broken(e.to_string()))?;
                let own: Vec<ConnectionRecord> = all
                    .iter()
                    .filter(|c| Some(c.id.as_str()) == own_connection)
                    .filter(|c| integration.as_ref().is_none_or(|i| *i == c.integration))
                    .filter(|c| implements(c).is_some())
                    .cloned()
                    .collect();
                match own.is_empty() {
                    false => own,
                    true => all
                        .into_iter()
                        .filter(|c| integration.as_ref().is_none_or(|i| *i == c.integration))
                        .filter(|c| implements(c).is_some())
                        .collect(),
                }
            }
        };
        let universal = self.universal.get(key);
        let defined = universal.is_some()
            || integrations
                .all()
                .iter()
                .any(|i| i.actions.iter().any(|a| a.key == key));
        if !defined {
            return Err(ActError::Unknown(key.to_owned()));
        }
        let connection = match candidates.len() {
            0 => {
                return Err(ActError::NoConnection(match &call.integration {
                    Some(i) => format!(
                        "tenant `{tenant}` has no connection to `{i}` that implements `{key}`"
                    ),
                    None => format!(
                        "tenant `{tenant}` has no connection whose integration implements `{key}`; create one (POST /api/v1/connections)"
                    ),
                }));
            }
            1 => candidates.remove(0),
            _ => {
                return Err(ActError::Ambiguous {
                    action: key.to_owned(),
                    connections: candidates.into_iter().map(|c| c.id).collect(),
                });
            }
        };
        let (integration, index) = implements(&connection).ok_or_else(|| {
            ActError::NoConnection(format!(
                "connection {} is to `{}`, which does not implement `{key}`",
                connection.id, connection.integration
            ))
        })?;
        let action = &integration.actions[index];
        let contract = universal.as_ref().map(|u| &u.action);
        if let (Some(ours), Some(theirs)) = (
            &action.input_schema,
            contract.and_then(|u| u.input_schema.as_ref()),
        ) && ours.schema != theirs.schema
        {
            return Err(ActError::Broken(format!(
                "`{}`'s action `{key}` changes the universal action's input_schema ({}); fix {}",
                integration.key,
                contract.map_or("", |u| u.file.as_str()),
                action.file
            )));
        }
        let input_schema = action
            .input_schema
            .clone()
            .or_else(|| contract.and_then(|u| u.input_schema.clone()));
        let output_schema = action
            .output_schema
            .clone()
            .or_else(|| contract.and_then(|u| u.output_schema.clone()));
        Ok(Resolved {
            connection,
            integration,
            index,
            input_schema,
            output_schema,
        })
    }

    /// Every problem of `input` against the resolved action's schema.
    pub fn check_input(resolved: &Resolved, input: &Value) -> Result<(), ActError> {
        match &resolved.input_schema {
            Some(schema) => {
                let errors = schema.check(input, "");
                match errors.is_empty() {
                    true => Ok(()),
                    false => Err(ActError::Invalid(errors)),
                }
            }
            None => Ok(()),
        }
    }

    /// Runs a resolved action with a checked input: the request, its
    /// retries, the output mapping and its check.
    pub async fn perform(
        &self,
        resolved: &Resolved,
        input: &Value,
        key: &str,
        timeout: Option<Duration>,
    ) -> Result<Value, NodeError> {
        let spec = resolved
            .spec()
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let connection = scope_value(&resolved.connection);
        let context = || {
            ScopeBuilder::new(&Dynamic::UNIT, &resolved.connection.tenant, "", "")
                .with("input", to_dynamic(input))
                .with("connection", to_dynamic(&connection))
        };
        let request = build_request(spec, resolved, context().build(), timeout)?;
        let connector: Arc<dyn Connector> = self.connections.clone();
        let tenant = resolved.connection.tenant.as_str();
        let mut attempt = 1;
        let response = loop {
            match crate::engine::send(&request, key, timeout, Some(connector.clone()), tenant).await
            {
                Ok(response) => break response,
                Err(e) if e.is_retryable() && attempt < spec.attempts => {
                    let wait = e
                        .retry_after()
                        .map(|w| w.min(MAX_RETRY_AFTER))
                        .unwrap_or_else(|| Duration::from_millis(500 << (attempt - 1).min(6)));
                    tracing::debug!(action = %resolved.integration.actions[resolved.index].key, attempt, wait_ms = wait.as_millis() as u64, error = %e, "action attempt failed; trying again");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let output = match &spec.output {
            None => response.get("body").cloned().unwrap_or(Value::Null),
            Some(mapping) => {
                let mut scope = context().with("response", to_dynamic(&response)).build();
                let value = mapping.eval(&mut scope, timeout).map_err(|e| {
                    NodeError::Invalid(format!("the action's `output` mapping failed: {e}"))
                })?;
                to_json(&value)
                    .map_err(|e| NodeError::Invalid(format!("the action's `output`: {e}")))?
            }
        };
        if let Some(schema) = &resolved.output_schema {
            let errors = schema.check(&output, "");
            if !errors.is_empty() {
                return Err(NodeError::Invalid(format!(
                    "the output of `{}` (integration `{}`) does not match the action's output_schema: {}",
                    resolved.integration.actions[resolved.index].key,
                    resolved.integration.key,
                    describe(&errors)
                )));
            }
        }
        Ok(output)
    }
}

/// The request of an action: its path, query and headers rendered, its
/// body mapped, through the resolved connection.
fn build_request(
    spec: &RequestSpec,
    resolved: &Resolved,
    mut scope: rhai::Scope<'static>,
    timeout: Option<Duration>,
) -> Result<Request, NodeError> {
    let mut path = spec.path.render(&mut scope, timeout)?;
    if !spec.query.is_empty() {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &spec.query {
            query.append_pair(k, &v.render(&mut scope, timeout)?);
        }
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&query.finish());
    }
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (k, v) in &spec.headers {
        headers.push((k.clone(), v.render(&mut scope, timeout)?));
    }
    let body = match &spec.body {
        None => None,
        Some(mapping) => Some(
            to_json(&mapping.eval(&mut scope, timeout)?)
                .map_err(|e| NodeError::Invalid(format!("the action's `body`: {e}")))?,
        ),
    };
    let via = Via {
        integration: resolved.integration.key.clone(),
        id: Some(resolved.connection.id.clone()),
    };
    Request::through(via, spec.method.clone(), &path, headers, body).map_err(NodeError::Invalid)
}

impl Actor for Actions {
    fn run<'a>(
        &'a self,
        tenant: &'a str,
        own_connection: Option<&'a str>,
        call: &'a ActionCall,
        key: &'a str,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, NodeError>> + Send + 'a>> {
        Box::pin(async move {
            let resolved = self
                .resolve(tenant, own_connection, call)
                .map_err(|e| NodeError::Invalid(format!("action `{}`: {e}", call.action)))?;
            Self::check_input(&resolved, &call.input)
                .map_err(|e| NodeError::Invalid(format!("action `{}`: {e}", call.action)))?;
            self.perform(&resolved, &call.input, key, timeout).await
        })
    }
}
