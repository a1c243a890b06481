//! JSON Schemas (draft 2020-12) of weir's file formats — flows,
//! integrations and universal actions — for editors (`weir schema KIND`).
//!
//! The loaders read YAML by hand, so that every problem of a file is
//! reported at once with its place; the types here only describe what they
//! accept, to generate the schemas. They follow the loaders: a key a loader
//! does not read is unknown here too, and what a loader checks beyond shape
//! (expressions compile, links name nodes, cron schedules parse) is left to
//! `weir validate`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::Value;

/// A weir file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A flow file (`flows/*.yaml`).
    Flow,
    /// An integration file (`integrations/*.yaml`).
    Integration,
    /// A universal action file (`actions/*.yaml`).
    Action,
}

/// The JSON Schema (draft 2020-12) of the files of `kind`.
pub fn schema(kind: Kind) -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let root = match kind {
        Kind::Flow => generator.into_root_schema_for::<FlowFile>(),
        Kind::Integration => generator.into_root_schema_for::<IntegrationFile>(),
        Kind::Action => generator.into_root_schema_for::<UniversalActionFile>(),
    };
    let mut value = root.to_value();
    no_null_options(&mut value);
    value
}

/// An optional key is left out, never written as null (the loaders refuse
/// `name: null`): takes the `null` that `Option` adds out of every
/// property's schema. (The expressions' own schema, referenced, keeps it.)
fn no_null_options(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::Object(properties)) = object.get_mut("properties") {
                for property in properties.values_mut() {
                    drop_null(property);
                }
            }
            for child in object.values_mut() {
                no_null_options(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(no_null_options),
        _ => {}
    }
}

/// `{anyOf: [S, {type: null}]}` → S; `{type: [T, null]}` → `{type: T}`.
fn drop_null(schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    let is_null = |v: &Value| v.get("type").and_then(Value::as_str) == Some("null");
    if let Some(Value::Array(any_of)) = object.get("anyOf")
        && any_of.len() == 2
        && any_of.iter().any(is_null)
    {
        let kept = any_of.iter().find(|v| !is_null(v)).cloned();
        object.remove("anyOf");
        if let Some(Value::Object(kept)) = kept {
            for (k, v) in kept {
                object.entry(k).or_insert(v);
            }
        }
        return;
    }
    if let Some(Value::Array(types)) = object.get_mut("type")
        && types.len() == 2
        && types.iter().any(|t| t == "null")
    {
        types.retain(|t| t != "null");
        if let Some(only) = types.pop() {
            object.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(values)) = object.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
}

// ---------------------------------------------------------------------------
// Values shared by the formats.

/// Ids and keys: `[a-z0-9_-]{1,64}`.
const ID_PATTERN: &str = "^[a-z0-9_-]{1,64}$";
/// Action keys: `[a-z0-9_-]{1,57}` (its API runs' flow is `action-KEY`).
const ACTION_KEY_PATTERN: &str = "^[a-z0-9_-]{1,57}$";

/// An expression: Rhai text compiled when the file loads. Numbers, booleans
/// and null are literals; a literal string is a Rhai string inside YAML
/// quotes (`'"contact"'`).
pub struct Expression;

impl JsonSchema for Expression {
    fn schema_name() -> Cow<'static, str> {
        "Expression".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An expression (Rhai): a string is compiled when the file loads; numbers, booleans and null are literals. A literal string is a Rhai string inside YAML quotes: '\"contact\"'.",
            "type": ["string", "number", "boolean", "null"]
        })
    }
}

/// A template: literal text in which each `${ expr }` is replaced by the
/// expression's value (`$${` writes `${`).
pub struct Template;

impl JsonSchema for Template {
    fn schema_name() -> Cow<'static, str> {
        "Template".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A template: text in which each ${ expr } is replaced by the expression's value ($${ writes a literal ${). Numbers and booleans are read as their text.",
            "type": ["string", "number", "boolean"]
        })
    }
}

/// A mapping: a map or a list whose values are expressions, nested maps
/// and lists mapped recursively.
pub struct Mapping;

impl JsonSchema for Mapping {
    fn schema_name() -> Cow<'static, str> {
        "Mapping".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A mapping: a map or a list of expressions; nested maps and lists are mapped recursively.",
            "type": ["object", "array"]
        })
    }
}

/// A JSON Schema (2020-12), checked against the meta-schema when the file
/// loads.
pub struct JsonSchemaValue;

impl JsonSchema for JsonSchemaValue {
    fn schema_name() -> Cow<'static, str> {
        "JsonSchema".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A JSON Schema (2020-12), checked against the meta-schema when the file loads; weir never fetches a remote $ref.",
            "type": "object"
        })
    }
}

/// A duration: a number and a unit (`500ms`, `30s`, `10m`, `2h`, `1d`;
/// decimals allowed).
pub struct Duration;

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: a number and a unit, like 500ms, 30s, 10m, 2h or 1d (decimals allowed: 1.5s).",
            "type": "string",
            "pattern": "^\\s*([0-9]+\\.?[0-9]*|\\.[0-9]+)\\s*(ms|s|m|h|d)\\s*$"
        })
    }
}

/// A size: bytes, or a number and a unit (`512KiB`, `1MiB`).
pub struct Size;

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: bytes (1048576), or a number and a unit: B, KiB, MiB, GiB (KB, MB, GB are powers of 1000).",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9]+\\s*(B|KiB|MiB|GiB|KB|kB|MB|GB)?\\s*$"}
            ]
        })
    }
}

/// An id: `[a-z0-9_-]{1,64}`.
pub struct Id;

impl JsonSchema for Id {
    fn schema_name() -> Cow<'static, str> {
        "Id".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An id or key: [a-z0-9_-]{1,64}.",
            "type": "string",
            "pattern": ID_PATTERN
        })
    }
}

/// A string, or a list of strings (a single string is a list of one).
pub struct StringList;

impl JsonSchema for StringList {
    fn schema_name() -> Cow<'static, str> {
        "StringList".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A string, or a list of strings (a single string is a list of one).",
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}}
            ]
        })
    }
}

/// Node ids: one, or a list of them.
pub struct Links;

impl JsonSchema for Links {
    fn schema_name() -> Cow<'static, str> {
        "Links".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A node id, or a list of node ids.",
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}}
            ]
        })
    }
}

/// A case-insensitive choice among HTTP `methods` (offered upper-case).
fn method_schema(methods: &[&str], description: &str) -> Schema {
    let alternatives: Vec<String> = methods
        .iter()
        .map(|m| {
            m.chars()
                .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
                .collect()
        })
        .collect();
    let pattern = format!("^({})$", alternatives.join("|"));
    json_schema!({
        "description": description,
        "anyOf": [
            {"enum": methods},
            {"type": "string", "pattern": pattern}
        ]
    })
}

/// The method of an `http` node or a poll's request.
pub struct HttpMethod;

impl JsonSchema for HttpMethod {
    fn schema_name() -> Cow<'static, str> {
        "HttpMethod".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        method_schema(
            &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            "The HTTP method (default GET; any case).",
        )
    }
}

/// The method of an integration action's request.
pub struct ActionMethod;

impl JsonSchema for ActionMethod {
    fn schema_name() -> Cow<'static, str> {
        "ActionMethod".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        method_schema(
            &["GET", "POST", "PUT", "PATCH", "DELETE"],
            "The HTTP method (default GET; any case).",
        )
    }
}

/// The method of an integration's test request: any HTTP method.
pub struct TestMethod;

impl JsonSchema for TestMethod {
    fn schema_name() -> Cow<'static, str> {
        "TestMethod".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The HTTP method (default GET; any case).",
            "anyOf": [
                {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]},
                {"type": "string", "pattern": "^[A-Za-z]+$"}
            ]
        })
    }
}

/// The statuses that count as success: codes (`200`) or classes (`"2xx"`),
/// one or a list.
pub struct Expect;

impl JsonSchema for Expect {
    fn schema_name() -> Cow<'static, str> {
        "Expect".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let status = json_schema!({
            "oneOf": [
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "string", "pattern": "^([1-5][xX][xX]|[1-5][0-9][0-9])$"}
            ]
        });
        json_schema!({
            "description": "The statuses that count as success: codes like 200 or classes like \"2xx\", one or a list (default any 2xx).",
            "oneOf": [
                status.clone(),
                {"type": "array", "items": status}
            ]
        })
    }
}

/// What a node does when it fails after its retries.
pub struct OnError;

impl JsonSchema for OnError {
    fn schema_name() -> Cow<'static, str> {
        "OnError".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "fail (default: the run fails), continue (the node is recorded failed, its output is {\"error\": message} and its successors run), or a node id: that node runs instead of `next`.",
            "anyOf": [
                {"enum": ["fail", "continue"]},
                {"type": "string"}
            ]
        })
    }
}

// ---------------------------------------------------------------------------
// Flows.

/// A weir flow: triggers that start runs, and the nodes (a DAG) each run
/// goes through.
#[derive(JsonSchema)]
#[schemars(title = "weir flow", deny_unknown_fields)]
pub struct FlowFile {
    /// The flow's id, unique across the flows folder.
    pub id: Id,
    /// A description.
    pub name: Option<String>,
    /// A map of constants, visible as `vars` in expressions (the flows API
    /// shows them: no secrets here).
    pub vars: Option<serde_json::Map<String, Value>>,
    /// `NAME: {env: VARIABLE}`: values read from the environment when the
    /// flow loads, for the `url`, `headers`, `query` and `body` of requests.
    pub secrets: Option<BTreeMap<String, SecretSpec>>,
    /// The tenants the flow serves (default `[default]`; with
    /// `integration`, every tenant with a connection to it); each
    /// `[a-z0-9_-]{1,64}`, or `"*"` for any tenant.
    pub tenants: Option<StringList>,
    /// An integration key: the flow runs per connection to it (its cron and
    /// poll triggers fire once for each ready connection; `connection` is in
    /// scope).
    pub integration: Option<Id>,
    /// Runs with the same key run `limit` at a time, in arrival order, per
    /// tenant.
    pub concurrency: Option<Concurrency>,
    /// What starts a run: a non-empty list of triggers.
    #[schemars(length(min = 1))]
    pub triggers: Vec<Trigger>,
    /// The nodes: a non-empty list.
    #[schemars(length(min = 1))]
    pub nodes: Vec<Node>,
}

/// A secret, read from an environment variable when the flow loads.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SecretSpec {
    /// The environment variable holding the secret (it must be set and not
    /// empty).
    pub env: String,
}

/// `concurrency`: how many runs of the flow run at once.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Concurrency {
    /// An expression over `event` (and `vars`, `tenant`, `flow`); without
    /// it the limit holds for all runs of the flow.
    pub key: Option<Expression>,
    /// How many runs with the same key run at once (default 1).
    #[schemars(range(min = 1))]
    pub limit: Option<u64>,
}

// Triggers.

/// A trigger: what starts a run. Every trigger has an `id` (unique in its
/// flow) and a `type`.
#[derive(JsonSchema)]
#[schemars(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// Fires on `POST /hooks/{tenant}/{flow}/{trigger}`.
    Webhook(WebhookTrigger),
    /// Fires at each instant `schedule` names.
    Cron(CronTrigger),
    /// Calls an HTTP API every `every` and turns what changed into events.
    Poll(PollTrigger),
    /// Fires on `POST /api/v1/flows/{flow}/runs`.
    Api(ApiTrigger),
}

/// A `webhook` trigger.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WebhookTrigger {
    /// The trigger's id, unique in its flow.
    pub id: Id,
    /// How requests are signed.
    pub verify: Option<Verify>,
    /// An expression over `event` (and `vars`, `tenant`, `flow`) giving a
    /// dedupe key; null means none.
    pub dedupe: Option<Expression>,
    /// The largest body accepted (default `1MiB`).
    pub max_body: Option<Size>,
    /// More headers left out of the stored event (names).
    pub drop_headers: Option<StringList>,
    /// Headers kept in the event although they are dropped by default.
    pub keep_headers: Option<StringList>,
}

/// A webhook's signature check.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Verify {
    /// The signature scheme.
    pub scheme: Scheme,
    /// The environment variable holding the secret; `{TENANT}` in it stands
    /// for the tenant's key in upper case with `-` as `_`.
    pub secret_env: String,
    /// For `hmac-sha256` (required there): the header carrying the
    /// signature.
    pub header: Option<String>,
    /// For `stripe` and `standard-webhooks`: how old a signed timestamp may
    /// be (default `5m`).
    pub tolerance: Option<Duration>,
}

/// A webhook signature scheme.
#[derive(JsonSchema)]
#[schemars(rename_all = "kebab-case")]
pub enum Scheme {
    /// HMAC-SHA256 of the body in the header `header`.
    HmacSha256,
    /// GitHub's `X-Hub-Signature-256`.
    Github,
    /// Stripe's `Stripe-Signature`.
    Stripe,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`).
    StandardWebhooks,
}

/// A `cron` trigger.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CronTrigger {
    /// The trigger's id, unique in its flow.
    pub id: Id,
    /// 5 fields (minute hour day month weekday) or 6 with seconds first;
    /// `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
    pub schedule: String,
    /// An IANA time zone name (default `UTC`).
    pub timezone: Option<String>,
    /// What to do with instants missed while the daemon was down.
    pub catch_up: Option<CatchUp>,
}

/// A cron trigger's missed instants.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire none of them (the default).
    Skip,
    /// Fire the latest.
    Latest,
    /// Fire all (at most 1000).
    All,
}

/// A `poll` trigger.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PollTrigger {
    /// The trigger's id, unique in its flow.
    pub id: Id,
    /// How often (at least `100ms`).
    pub every: Duration,
    /// The request, with the options of an `http` node; its templates may
    /// use `cursor`.
    pub request: PollRequest,
    /// Over `response` (`{status, headers, body}`): the list of records.
    pub items: Expression,
    /// Over `item`: the record's id.
    pub key: Expression,
    /// Over `item`: its version (default: a hash of the record without
    /// `ignore_fields`).
    pub version: Option<Expression>,
    /// Fields left out of the default version.
    pub ignore_fields: Option<StringList>,
    /// Over `response`: the value the next request uses, for incremental
    /// APIs.
    pub cursor: Option<Expression>,
    /// Which of `created`, `updated`, `deleted` start runs (default all).
    pub emit: Option<Emit>,
    /// `true` (default): the first poll only records what exists; `false`:
    /// it emits every record as created.
    pub baseline: Option<bool>,
}

/// A poll's changes that start runs: one or a list.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum Emit {
    /// One change.
    One(Change),
    /// Several.
    List(Vec<Change>),
}

/// A change a poll sees.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum Change {
    /// A record that was not there before.
    Created,
    /// A record whose version changed.
    Updated,
    /// A record that is gone.
    Deleted,
}

/// A poll's request: the options of an `http` node. In a flow with
/// `integration`, `url` is a path under the integration's `base_url`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PollRequest {
    /// The HTTP method (default `GET`).
    pub method: Option<HttpMethod>,
    /// The URL (a template); a path like `/contacts` in a flow with
    /// `integration`.
    pub url: Template,
    /// Request headers (templates).
    pub headers: Option<BTreeMap<String, Template>>,
    /// Query parameters (templates).
    pub query: Option<BTreeMap<String, Template>>,
    /// The body (an expression: a string is sent as text, anything else as
    /// JSON).
    pub body: Option<Expression>,
    /// The statuses that count as success.
    pub expect: Option<Expect>,
}

/// An `api` trigger.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ApiTrigger {
    /// The trigger's id, unique in its flow.
    pub id: Id,
    /// A JSON Schema (2020-12) the input must match; it is also the input
    /// schema of the flow's MCP tool.
    pub input_schema: Option<JsonSchemaValue>,
}

// Nodes.

/// The options every node has.
#[derive(JsonSchema)]
pub struct NodeCommon {
    /// The node's id, unique in the flow (`for_each` bodies included).
    pub id: Id,
    /// The successors: a node id or a list.
    pub next: Option<Links>,
    /// How often the node is tried on a retryable error (HTTP 5xx, 408,
    /// 429, timeouts, connection errors).
    pub retry: Option<Retry>,
    /// For `http`: the request's time limit (default `30s`); for expression
    /// nodes: the wall-clock limit of the evaluation (default `5s`).
    pub timeout: Option<Duration>,
    /// What happens when the node fails after its retries.
    pub on_error: Option<OnError>,
}

/// `retry`: tries and the waits between them (exponential, with jitter).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Retry {
    /// Tries in all, counting the first (default 1).
    #[schemars(range(min = 1, max = 1000))]
    pub max_attempts: Option<u32>,
    /// The waits: `initial` (default `1s`) doubling up to `max` (default
    /// `5m`).
    pub backoff: Option<Backoff>,
}

/// `retry.backoff`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Backoff {
    /// The wait after the first failure (default `1s`).
    pub initial: Option<Duration>,
    /// The longest wait (default `5m`).
    pub max: Option<Duration>,
}

/// A node. Every node has an `id` and a `type`, and the common options
/// `next`, `retry`, `timeout` and `on_error`.
#[derive(JsonSchema)]
#[schemars(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Node {
    /// Builds a value from a mapping.
    Map(MapNode),
    /// Runs a Rhai script; its output is the script's last value.
    Script(ScriptNode),
    /// Makes an HTTP request; its output is `{status, headers, body}`.
    Http(HttpNode),
    /// Runs an action on a connected app; its output is the action's.
    Action(ActionNode),
    /// Delivers a message to AMQP, through the outbox.
    #[schemars(rename = "deliver")]
    DeliverAmqp(DeliverAmqpNode),
    /// Delivers a signed HTTP request, through the outbox.
    #[schemars(rename = "deliver")]
    DeliverHttp(DeliverHttpNode),
    /// Writes a log line.
    Log(LogNode),
    /// Takes `then` or `else`.
    If(IfNode),
    /// Takes the first case whose `when` holds, else `default`.
    Switch(SwitchNode),
    /// Skips the rest of the branch when `condition` is false.
    Filter(FilterNode),
    /// Runs its body once per item.
    ForEach(ForEachNode),
    /// Waits `for` a duration or `until` a time.
    Delay(DelayNode),
    /// Fails the run with a message.
    Fail(FailNode),
}

/// A `map` node.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MapNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// A map or list of expressions: the node's output.
    pub mapping: Mapping,
}

/// A `script` node.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ScriptNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// A Rhai script (statements, `let`, loops, functions); its last value
    /// is the output.
    pub script: String,
}

/// An `http` node.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct HttpNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// The HTTP method (default `GET`).
    pub method: Option<HttpMethod>,
    /// The URL (a template); with `connection`, a path under the
    /// integration's `base_url`.
    pub url: Template,
    /// Request headers (templates; may read `secrets`).
    pub headers: Option<BTreeMap<String, Template>>,
    /// Query parameters (templates; may read `secrets`).
    pub query: Option<BTreeMap<String, Template>>,
    /// The body (an expression: a string is sent as text, anything else as
    /// JSON; may read `secrets`).
    pub body: Option<Expression>,
    /// The statuses that count as success.
    pub expect: Option<Expect>,
    /// An integration key: the request goes through the run's tenant's
    /// connection to it.
    pub connection: Option<Id>,
    /// An expression picking one of several connections (with
    /// `connection`).
    pub connection_id: Option<Expression>,
}

/// An `action` node.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ActionNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// The action's key.
    #[schemars(regex(pattern = ACTION_KEY_PATTERN))]
    pub action: String,
    /// The action's input: a mapping, or one expression.
    pub input: ActionInput,
    /// An integration key: the connection to run it through.
    pub connection: Option<Id>,
    /// An expression picking one of several connections.
    pub connection_id: Option<Expression>,
}

/// An action node's input.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum ActionInput {
    /// One expression (a string).
    Expression(String),
    /// A map or list of expressions.
    Mapping(Mapping),
}

/// A `deliver` node with `target: amqp`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DeliverAmqpNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// Where the message goes.
    pub target: AmqpTarget,
    /// The message (an expression).
    pub payload: Expression,
    /// The exchange (a template).
    pub exchange: Template,
    /// The routing key (a template).
    pub routing_key: Template,
    /// `payload` (default: the payload as it is) or `cloudevents` (a
    /// CloudEvents envelope).
    pub format: Option<DeliverFormat>,
}

/// `target: amqp`.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum AmqpTarget {
    /// An AMQP exchange.
    Amqp,
}

/// `target: http`.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum HttpTarget {
    /// A signed HTTP POST (Standard Webhooks).
    Http,
}

/// How an AMQP delivery is written.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum DeliverFormat {
    /// The payload as it is.
    Payload,
    /// A CloudEvents envelope around it.
    Cloudevents,
}

/// A `deliver` node with `target: http`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DeliverHttpNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// Where the message goes.
    pub target: HttpTarget,
    /// The message (an expression).
    pub payload: Expression,
    /// The URL (a template).
    pub url: Template,
    /// The environment variable holding the Standard Webhooks signing
    /// secret (`whsec_` + base64 of 24 to 64 bytes).
    pub secret_env: String,
}

/// A `log` node.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LogNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// The message (an expression).
    pub message: Expression,
    /// A value logged with it (an expression).
    pub value: Option<Expression>,
    /// The level (default `info`).
    pub level: Option<LogLevel>,
}

/// A log level.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info (the default).
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// An `if` node.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IfNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// The condition (an expression).
    pub condition: Expression,
    /// The nodes taken when it holds.
    pub then: Option<Links>,
    /// The nodes taken when it does not.
    #[schemars(rename = "else")]
    pub else_: Option<Links>,
}

/// A `switch` node.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SwitchNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// The cases, tried in order: a non-empty list.
    #[schemars(length(min = 1))]
    pub cases: Vec<Case>,
    /// The nodes taken when no case holds.
    pub default: Option<Links>,
}

/// A case of a `switch`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Case {
    /// The condition (an expression).
    pub when: Expression,
    /// The nodes taken when it holds.
    pub next: Links,
}

/// A `filter` node.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FilterNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// The condition (an expression); when false the rest of the branch is
    /// skipped.
    pub condition: Expression,
}

/// A `for_each` node.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ForEachNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// The items (an expression giving a list; null is empty; at most
    /// 10,000).
    pub items: Expression,
    /// The body: nodes linked by their own `next`, ending in one node; it
    /// sees `item` and `index`.
    #[schemars(rename = "do", length(min = 1))]
    pub do_: Vec<Node>,
    /// How many iterations run at once (default 1).
    #[schemars(range(min = 1))]
    pub concurrency: Option<u64>,
}

/// A `delay` node: `for` or `until`, not both.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DelayNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// How long to wait from when the node starts.
    #[schemars(rename = "for")]
    pub for_: Option<Duration>,
    /// An expression giving the RFC 3339 time to wait until.
    pub until: Option<Expression>,
}

/// A `fail` node.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FailNode {
    #[schemars(flatten)]
    pub common: NodeCommon,
    /// The run's error (an expression).
    pub message: Expression,
}

// ---------------------------------------------------------------------------
// Integrations.

/// A weir integration: one external app — where its API is, what a
/// connection to it needs, how requests authenticate, and its actions.
#[derive(JsonSchema)]
#[schemars(title = "weir integration", deny_unknown_fields)]
pub struct IntegrationFile {
    /// The integration's key, unique across the integrations folder.
    pub key: Id,
    /// A name for people.
    pub name: Option<String>,
    /// The API's URL: a template over `connection` (`{id, integration,
    /// name, parameters}`); an http(s) URL.
    pub base_url: Template,
    /// The JSON Schema of a connection's parameters.
    pub parameters: Option<JsonSchemaValue>,
    /// Where a connection's credentials go.
    pub auth: Auth,
    /// A request that proves a connection works.
    pub test: Option<Test>,
    /// What a connection can do on the app.
    pub actions: Option<Vec<IntegrationAction>>,
}

/// How requests authenticate.
#[derive(JsonSchema)]
#[schemars(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// A key (credentials `{api_key}`) in a header or a query parameter.
    ApiKey(ApiKeyAuth),
    /// HTTP basic (credentials `{username, password}`).
    Basic {},
    /// `Authorization: Bearer` (credentials `{token}`).
    Bearer {},
    /// OAuth2: tokens obtained from the provider.
    #[schemars(rename = "oauth2")]
    OAuth2(OAuth2Auth),
    /// No credentials.
    None {},
}

/// `auth: {type: api_key}`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// `header` (default) or `query`.
    #[schemars(rename = "in")]
    pub in_: Option<KeyPlace>,
    /// The header's or query parameter's name, like `X-API-Key`.
    pub name: String,
}

/// Where an API key goes.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum KeyPlace {
    /// A header (the default).
    Header,
    /// A query parameter.
    Query,
}

/// `auth: {type: oauth2}`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct OAuth2Auth {
    /// The provider's authorize URL (http or https).
    pub authorize_url: String,
    /// The provider's token URL (http or https).
    pub token_url: String,
    /// The scopes asked for.
    pub scopes: Option<StringList>,
    /// The environment variable holding the client id.
    #[schemars(regex(pattern = "^[A-Za-z0-9_]+$"))]
    pub client_id_env: String,
    /// The environment variable holding the client secret.
    #[schemars(regex(pattern = "^[A-Za-z0-9_]+$"))]
    pub client_secret_env: String,
    /// How the client authenticates at the token endpoint: `header`
    /// (default, HTTP basic) or `body`.
    pub client_auth: Option<ClientAuth>,
    /// Whether to use PKCE (default `true`).
    pub pkce: Option<bool>,
    /// More parameters of the authorize URL (text).
    pub extra_authorize_params: Option<BTreeMap<String, ExtraParam>>,
}

/// A value of `extra_authorize_params`: text (numbers and booleans are read
/// as text).
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum ExtraParam {
    /// Text.
    Text(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// How an OAuth2 client authenticates at the token endpoint.
#[derive(JsonSchema)]
#[schemars(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP basic with the client id and secret (the default).
    Header,
    /// `client_id` and `client_secret` in the form body.
    Body,
}

/// `test`: a request that proves a connection works.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Test {
    /// The request.
    pub request: TestRequest,
}

/// `test.request`: a request relative to `base_url`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TestRequest {
    /// The HTTP method (default `GET`).
    pub method: Option<TestMethod>,
    /// A path under `base_url` (a template over `connection`).
    pub path: Template,
}

/// An integration's action: a request to the app, or a flow.
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum IntegrationAction {
    /// Done by one request.
    Request(RequestAction),
    /// Done by a flow with an api trigger.
    Flow(FlowAction),
}

/// An action done by one request to the app.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RequestAction {
    #[schemars(flatten)]
    pub contract: ActionContract,
    /// The request to the app.
    pub request: ActionRequest,
    /// Over `response` (`{status, headers, body}`), `input` and
    /// `connection`: the action's output (default: the response's body).
    pub output: Option<Mapping>,
    /// Attempts on 429, 5xx and timeouts.
    pub retry: Option<ActionRetry>,
}

/// An action done by a flow.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct FlowAction {
    #[schemars(flatten)]
    pub contract: ActionContract,
    /// The id of a flow with an api trigger; the action's output is the
    /// output of its last node that succeeded.
    pub flow: Id,
}

/// What an integration action says of itself. One whose `key` is a
/// universal action's implements it, inheriting its schemas.
#[derive(JsonSchema)]
pub struct ActionContract {
    /// The action's key: `[a-z0-9_-]{1,57}`.
    #[schemars(regex(pattern = ACTION_KEY_PATTERN))]
    pub key: String,
    /// A name for people.
    pub name: Option<String>,
    /// What it does.
    pub description: Option<String>,
    /// The JSON Schema of its input (a universal action's may not be
    /// changed).
    pub input_schema: Option<JsonSchemaValue>,
    /// The JSON Schema of its output.
    pub output_schema: Option<JsonSchemaValue>,
}

/// `request` of an integration action.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ActionRequest {
    /// The HTTP method (default `GET`).
    pub method: Option<ActionMethod>,
    /// A path under `base_url`, starting with `/` (a template over `input`
    /// and `connection`).
    pub path: Template,
    /// Query parameters (templates).
    pub query: Option<BTreeMap<String, Template>>,
    /// Request headers (templates).
    pub headers: Option<BTreeMap<String, Template>>,
    /// The JSON body: a mapping over `input` and `connection`.
    pub body: Option<Mapping>,
}

/// `retry` of an integration action.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ActionRetry {
    /// Attempts in all (default 3).
    #[schemars(range(min = 1, max = 10))]
    pub attempts: Option<u32>,
}

// ---------------------------------------------------------------------------
// Universal actions.

/// A weir universal action: the contract of one operation on a connected
/// app (its key, description and schemas); each integration's `actions:`
/// implements it.
#[derive(JsonSchema)]
#[schemars(title = "weir action", deny_unknown_fields)]
pub struct UniversalActionFile {
    /// The action's key: `[a-z0-9_-]{1,57}`.
    #[schemars(regex(pattern = ACTION_KEY_PATTERN))]
    pub key: String,
    /// A name for people.
    pub name: Option<String>,
    /// What it does.
    pub description: Option<String>,
    /// The JSON Schema of its input.
    pub input_schema: JsonSchemaValue,
    /// The JSON Schema of its output.
    pub output_schema: Option<JsonSchemaValue>,
}
