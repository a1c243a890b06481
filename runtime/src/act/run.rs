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
use serde_json::Value;
use weir_nodes::functions::action::{ActionCall, Actor};
use weir_nodes::functions::http::{Connector, Request, Via};
use weir_nodes::node::NodeError;
use weir_nodes::script::{ScopeBuilder, to_dynamic, to_json};
use weir_storage::{ConnectionRecord, IdempotencyRecord, RunStatus, Write};

use chrono::{DateTime, Utc};
use weir_storage::ActionOverride;

use super::definition::{Action, Implementation, RequestSpec, UniversalAction};
use super::overrides::{self, Compiled};
use super::schema::{Schema, SchemaError, describe};
use crate::connect::connections::{Connections, scope_value};
use crate::connect::integration::Integration;
use crate::daemon::registry::Registry;
use crate::daemon::runs::Runs;
use crate::engine::Engine;
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

/// An action resolved for one call: the connection it goes through, how its
/// integration does it, and its schemas.
pub struct Resolved {
    pub connection: ConnectionRecord,
    pub integration: Arc<Integration>,
    /// Into `integration.actions`.
    pub index: usize,
    pub input_schema: Option<Arc<Schema>>,
    pub output_schema: Option<Arc<Schema>>,
    /// The connection's override of the action, compiled.
    pub overrides: Option<Arc<Compiled>>,
}

impl Resolved {
    fn action(&self) -> &Action {
        &self.integration.actions[self.index]
    }
}

/// An override compiled, with the version it was compiled from.
type CompiledAt = (DateTime<Utc>, Arc<Compiled>);

/// The actions the daemon runs: universal ones from the actions folder,
/// integration ones from the integrations' files.
pub struct Actions {
    universal: Arc<Registry<UniversalAction>>,
    connections: Arc<Connections>,
    /// The one-node flow of each action's API runs, by action key.
    flows: std::sync::Mutex<HashMap<String, Arc<Flow>>>,
    /// Connection overrides compiled, by (connection, action), with the
    /// version they were compiled from.
    compiled: std::sync::Mutex<HashMap<(String, String), CompiledAt>>,
    /// Where the runs of flow actions are admitted (the daemon sets it).
    runs: std::sync::OnceLock<std::sync::Weak<Runs>>,
}

/// One action of the catalog, as `GET /api/v1/actions` shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Entry {
    pub key: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The JSON Schema its input must match.
    pub input_schema: Option<Value>,
    /// The JSON Schema of its output.
    pub output_schema: Option<Value>,
    /// The integrations that implement it.
    pub integrations: Vec<String>,
    /// The tenant's connections it can run through.
    pub connections: Vec<String>,
}

impl Actions {
    pub fn new(universal: Arc<Registry<UniversalAction>>, connections: Arc<Connections>) -> Self {
        Self {
            universal,
            connections,
            flows: Default::default(),
            compiled: Default::default(),
            runs: Default::default(),
        }
    }

    /// Lets flow actions start runs (the daemon's).
    pub fn set_runs(&self, runs: &Arc<Runs>) {
        let _ = self.runs.set(Arc::downgrade(runs));
    }

    /// Every action defined, by key: a universal one with the integrations
    /// that implement it, and each integration-only one.
    pub fn catalog(&self) -> Vec<Entry> {
        let mut by_key: BTreeMap<String, Entry> = BTreeMap::new();
        let view = |a: &Action, input: Option<&Schema>, output: Option<&Schema>| Entry {
            key: a.key.clone(),
            name: a.name.clone(),
            description: a.description.clone(),
            input_schema: input.map(|s| s.schema.clone()),
            output_schema: output.map(|s| s.schema.clone()),
            integrations: Vec::new(),
            connections: Vec::new(),
        };
        for u in self.universal.all() {
            let a = &u.action;
            by_key.insert(
                a.key.clone(),
                view(a, a.input_schema.as_deref(), a.output_schema.as_deref()),
            );
        }
        for i in self.connections.integrations().all() {
            for a in &i.actions {
                let entry = by_key.entry(a.key.clone()).or_insert_with(|| {
                    view(a, a.input_schema.as_deref(), a.output_schema.as_deref())
                });
                entry.integrations.push(i.key.clone());
            }
        }
        by_key.into_values().collect()
    }

    /// Whether a universal action or an integration defines `key`.
    pub fn defines(&self, key: &str) -> bool {
        self.universal.get(key).is_some()
            || self
                .connections
                .integrations()
                .all()
                .iter()
                .any(|i| i.actions.iter().any(|a| a.key == key))
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
        let overrides = match connection.overrides.get(key) {
            None => None,
            Some(o) => Some(self.compiled(&connection.id, key, o)?),
        };
        Ok(Resolved {
            connection,
            integration,
            index,
            input_schema,
            output_schema,
            overrides,
        })
    }

    /// A connection's override, compiled once per version.
    fn compiled(
        &self,
        connection: &str,
        key: &str,
        o: &ActionOverride,
    ) -> Result<Arc<Compiled>, ActError> {
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        let id = (connection.to_owned(), key.to_owned());
        if let Some((at, c)) = cache.get(&id)
            && *at == o.updated_at
        {
            return Ok(c.clone());
        }
        // Checked when it was written; a failure here means the record
        // was written by another version of weir.
        let c = Arc::new(overrides::compile(o).map_err(|e| {
            ActError::Broken(format!(
                "connection {connection}'s override of `{key}` does not compile: {}; PUT it again",
                describe(&e)
            ))
        })?);
        cache.insert(id, (o.updated_at, c.clone()));
        Ok(c)
    }

    /// The input the action runs with: the caller's, with the
    /// connection's defaults for the fields it left out, checked against
    /// the resolved action's schema (every problem).
    pub fn prepare(resolved: &Resolved, input: &Value) -> Result<Value, ActError> {
        let input = match &resolved.overrides {
            Some(o) if !o.input_defaults.is_empty() => {
                let mut scope = context(resolved, input).build();
                o.with_defaults(input, &mut scope, None)
                    .map_err(|e| ActError::Broken(e.to_string()))?
            }
            _ => input.clone(),
        };
        if let Some(schema) = &resolved.input_schema {
            let errors = schema.check(&input, "");
            if !errors.is_empty() {
                return Err(ActError::Invalid(errors));
            }
        }
        Ok(input)
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
        let spec = match &resolved.action().implementation {
            Some(Implementation::Request(spec)) => spec,
            Some(Implementation::Flow(flow)) => {
                return self.perform_flow(resolved, input, flow, key).await;
            }
            None => {
                return Err(NodeError::Invalid(
                    "the action has no implementation".into(),
                ));
            }
        };
        let context = || context(resolved, input);
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
        let mut scope = context().with("response", to_dynamic(&response)).build();
        let output = match &spec.output {
            None => response.get("body").cloned().unwrap_or(Value::Null),
            Some(mapping) => {
                let value = mapping.eval(&mut scope, timeout).map_err(|e| {
                    NodeError::Invalid(format!("the action's `output` mapping failed: {e}"))
                })?;
                to_json(&value)
                    .map_err(|e| NodeError::Invalid(format!("the action's `output`: {e}")))?
            }
        };
        let output = match &resolved.overrides {
            Some(o) => Compiled::merge(&o.output, "output", Some(output), &mut scope, timeout)?
                .unwrap_or(Value::Null),
            None => output,
        };
        check_output(resolved, output)
    }

    /// A flow action: a run of its flow (api-triggered, for the tenant,
    /// with the connection in scope) with the input as the event's body;
    /// its output is that of the run's last node that succeeded. The run
    /// is admitted once per `key` (the node's idempotency key): a node
    /// resumed after a restart waits for the run it started.
    async fn perform_flow(
        &self,
        resolved: &Resolved,
        input: &Value,
        id: &str,
        key: &str,
    ) -> Result<Value, NodeError> {
        let action = resolved.action();
        let integration = &resolved.integration.key;
        let runs = self
            .runs
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| {
                NodeError::Invalid(format!(
                    "action `{}` runs flow `{id}`: flow actions run in the daemon (weir serve), not in `weir run`",
                    action.key
                ))
            })?;
        let tenant = resolved.connection.tenant.as_str();
        let flow = runs.registry().get(id).ok_or_else(|| {
            NodeError::Invalid(format!(
                "`{integration}`'s action `{}` runs flow `{id}`, which is not loaded; add a flow with `id: {id}` and an api trigger to the flows folder",
                action.key
            ))
        })?;
        if !flow.tenants.serves(tenant) {
            return Err(NodeError::Invalid(format!(
                "flow `{id}` (action `{}`) does not serve tenant `{tenant}`; add it to the flow's `tenants` (or use `integration: {integration}`)",
                action.key
            )));
        }
        let Some((trigger, api)) = flow.api_trigger() else {
            return Err(NodeError::Invalid(format!(
                "flow `{id}` (action `{}`) has no api trigger; a flow action starts its flow through one",
                action.key
            )));
        };
        if runs.forwards() {
            return Err(NodeError::Invalid(format!(
                "action `{}` is implemented by flow `{id}`, whose output this process cannot wait for: with --role ingest its runs go to workers. Run flow-implemented actions on a --role all process",
                action.key
            )));
        }
        // A space: no caller's Idempotency-Key can take this name.
        let marker = format!("flow action {key}");
        let store = runs.engine().store().clone();
        let started = store
            .idempotency(tenant, &marker)
            .map_err(|e| NodeError::Invalid(format!("cannot read the action's run: {e}")))?;
        let run_id = match started {
            Some(first) => first.run_id,
            None => {
                let now = runs.engine().clock().now();
                let event = api.event(&Engine::new_run_id(), &trigger.id, now, input.clone());
                let remember = |run_id: &str| {
                    vec![Write::Idempotency(IdempotencyRecord {
                        tenant: tenant.to_owned(),
                        key: marker.clone(),
                        request_hash: String::new(),
                        run_id: run_id.to_owned(),
                        at: now,
                    })]
                };
                runs.admit_for(&flow, &resolved.connection, &trigger.id, event, remember)
                    .await
                    .map_err(|e| NodeError::Invalid(format!("flow `{id}` could not start: {e}")))?
                    .id
            }
        };
        let done = loop {
            if let Some(done) = runs.wait(&run_id, Duration::from_secs(600)).await {
                break done;
            }
            // Still running (or waiting on a timer); unless it is gone.
            if let Ok(None) = store.run_by_id(&run_id) {
                return Err(NodeError::Invalid(format!(
                    "the run {run_id} of flow `{id}` is no longer stored"
                )));
            }
        };
        if done.status != RunStatus::Succeeded {
            return Err(NodeError::Invalid(format!(
                "flow `{id}` (run {run_id}) {}: {}",
                done.status.as_str(),
                done.error.as_deref().unwrap_or("no error recorded")
            )));
        }
        let nodes = store
            .nodes(tenant, &run_id)
            .map_err(|e| NodeError::Invalid(format!("cannot read run {run_id}: {e}")))?;
        let output = flow.last_output(&nodes);
        let output = match &resolved.overrides {
            Some(o) if !o.output.is_empty() => {
                let mut scope = context(resolved, input)
                    .with("response", to_dynamic(&serde_json::json!({"body": output})))
                    .build();
                Compiled::merge(&o.output, "output", Some(output), &mut scope, None)?
                    .unwrap_or(Value::Null)
            }
            _ => output,
        };
        check_output(resolved, output)
    }
}

/// The output, if it matches the action's output schema.
fn check_output(resolved: &Resolved, output: Value) -> Result<Value, NodeError> {
    if let Some(schema) = &resolved.output_schema {
        let errors = schema.check(&output, "");
        if !errors.is_empty() {
            return Err(NodeError::Invalid(format!(
                "the output of `{}` (integration `{}`) does not match the action's output_schema: {}",
                resolved.action().key,
                resolved.integration.key,
                describe(&errors)
            )));
        }
    }
    Ok(output)
}

/// The scope an action's expressions see: `input` and `connection`.
fn context(resolved: &Resolved, input: &Value) -> ScopeBuilder {
    ScopeBuilder::new(&Dynamic::UNIT, &resolved.connection.tenant, "", "")
        .with("input", to_dynamic(input))
        .with("connection", to_dynamic(&scope_value(&resolved.connection)))
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
    let body = match &resolved.overrides {
        Some(o) => Compiled::merge(&o.body, "body", body, &mut scope, timeout)?,
        None => body,
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
            let input = Self::prepare(&resolved, &call.input)
                .map_err(|e| NodeError::Invalid(format!("action `{}`: {e}", call.action)))?;
            self.perform(&resolved, &input, key, timeout).await
        })
    }
}
