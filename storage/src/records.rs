//! The records weir keeps on disk. Each is stored as JSON under a key built in
//! [`crate::keys`]; field names are part of the on-disk format.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The deepest nesting of arrays and objects a stored value may have. weir
/// accepts values of at most 64 levels where they enter, so this leaves
/// room for what it builds around them; a commit holding a deeper value is
/// refused, so that every record on disk decodes.
pub const MAX_VALUE_DEPTH: usize = 100;

/// Whether `value` nests deeper than `limit` (iterative: safe at any depth).
pub(crate) fn nests_deeper(value: &Value, limit: usize) -> bool {
    // (value, its level if it is an array or object)
    let mut stack: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Array(_) | Value::Object(_) if level > limit => return true,
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
            Value::Object(fields) => stack.extend(fields.values().map(|v| (v, level + 1))),
            _ => {}
        }
    }
    false
}

/// A run whose stored record cannot be read back: lists show it as such
/// rather than failing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub tenant: String,
    pub id: String,
    /// Why it cannot be read.
    pub error: String,
}

/// A run as a list holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum Listed {
    Run(RunRecord),
    Unreadable(Unreadable),
}

impl Listed {
    pub fn id(&self) -> &str {
        match self {
            Self::Run(r) => &r.id,
            Self::Unreadable(u) => &u.id,
        }
    }

    pub fn run(&self) -> Option<&RunRecord> {
        match self {
            Self::Run(r) => Some(r),
            Self::Unreadable(_) => None,
        }
    }
}

/// Where a run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, waiting for its turn (a flow `concurrency` key).
    Queued,
    /// At least one node is running or ready.
    Running,
    /// Every live node waits on a timer (a `delay` node or a retry backoff).
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    /// A finished run never changes again.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    pub const ALL: [Self; 6] = [
        Self::Queued,
        Self::Running,
        Self::Waiting,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status `{s}`; use {}",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

/// Where one node of a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Pending,
    Running,
    /// Sleeping until `wake_at`: a `delay` node, or a retry backoff.
    Waiting,
    Succeeded,
    Failed,
    Skipped,
}

impl NodeStatus {
    /// A node in a final status is never run again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

/// One run of one flow for one event and one tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Time-ordered id (UUIDv7 text): sorting ids sorts runs by creation.
    pub id: String,
    pub tenant: String,
    pub flow: String,
    /// The flow version the run started on; its snapshot is kept with the run.
    pub flow_version: String,
    pub trigger: String,
    /// The flow's `concurrency` key for this run, if the flow has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// In a flow that runs per connection: the connection the run is for,
    /// as it was when the run started (`{id, integration, name,
    /// parameters}`: never its credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Value>,
    /// 1 for the first execution; a retry of a failed run counts up.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    pub status: RunStatus,
    /// The trigger's event, as the flow's expressions see it. Kept apart
    /// from the record on disk: written once, by [`crate::Write::NewRun`];
    /// the record itself is rewritten at each status change.
    #[serde(skip)]
    pub event: std::sync::Arc<Value>,
    /// Why the run failed, naming the node.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

fn first_attempt() -> u32 {
    1
}

/// One node of one run. Nodes inside a `for_each` body have one record per
/// iteration; their `key` carries the iteration (`loop[2].body_node`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Unique within the run: the node id, prefixed by enclosing loops.
    pub key: String,
    /// The node's id in the flow.
    pub node: String,
    pub status: NodeStatus,
    /// How many times the node was started.
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub output: Option<Value>,
    pub error: Option<String>,
    /// For a `waiting` node: when it wakes.
    pub wake_at: Option<DateTime<Utc>>,
    /// Node-specific progress that must survive a restart (the item list of a
    /// `for_each`).
    pub state: Option<Value>,
}

impl NodeRecord {
    /// A fresh record for a node that has not started.
    pub fn new(key: impl Into<String>, node: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            node: node.into(),
            status: NodeStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            output: None,
            error: None,
            wake_at: None,
            state: None,
        }
    }
}

/// The text of a flow file as a run started on it, so that the run finishes on
/// that version even if the file changes or disappears.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSnapshot {
    pub flow: String,
    pub version: String,
    /// The file the flow was loaded from, for messages.
    pub file: String,
    pub source: String,
}

/// Where a delivery goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum DeliveryTarget {
    Amqp {
        exchange: String,
        routing_key: String,
        format: DeliveryFormat,
    },
    Http {
        url: String,
        /// The environment variable holding the signing secret (never the
        /// secret itself).
        secret_env: Option<String>,
    },
}

impl DeliveryTarget {
    pub fn kind(&self) -> TargetKind {
        match self {
            Self::Amqp { .. } => TargetKind::Amqp,
            Self::Http { .. } => TargetKind::Http,
        }
    }
}

/// The kinds of [`DeliveryTarget`], for counts and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Amqp,
    Http,
}

impl TargetKind {
    pub const ALL: [Self; 2] = [Self::Amqp, Self::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Amqp => "amqp",
            Self::Http => "http",
        }
    }
}

/// The body of an AMQP delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryFormat {
    /// The payload as JSON.
    #[default]
    Payload,
    /// A CloudEvents 1.0 structured JSON envelope around it.
    Cloudevents,
}

impl std::fmt::Display for DeliveryFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Payload => "payload",
            Self::Cloudevents => "cloudevents",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Dead,
}

/// A message a `deliver` node handed to a backend, waiting in the outbox until
/// the backend confirms it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    /// The idempotency key `{run_id}:{node_id}` (plus `:{index}` in loops).
    pub id: String,
    pub tenant: String,
    pub flow: String,
    pub run: String,
    pub node: String,
    /// The id of the event that started the run.
    pub event: String,
    #[serde(flatten)]
    pub target: DeliveryTarget,
    pub payload: Value,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Deliveries of one lane leave in order, one at a time: the run's id,
    /// or `tenant/flow/key` for runs sharing a concurrency key.
    #[serde(default)]
    pub lane: String,
    /// The order of this delivery among its run's.
    #[serde(default)]
    pub seq: u32,
    /// Attempts before the delivery is dead (the node's `retry`); `None`:
    /// retried until it goes through.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// The broker returned the last attempt: no queue is bound to its
    /// routing key.
    #[serde(default)]
    pub unroutable: bool,
}

/// A webhook's dedupe key, remembered for the retention window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupeRecord {
    /// The run the first request started.
    pub run: String,
    pub event: String,
    pub at: DateTime<Utc>,
    /// The tenant of that run (a key shared by tenants, like a signature
    /// under a secret they share, can be met from another tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// What a poll trigger last saw of one record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeenRecord {
    pub version: Value,
    /// The record itself, for the `deleted` event.
    pub item: Value,
}

/// Where a trigger's state belongs: one trigger of one flow for one tenant
/// — and, in a flow that runs per connection, for one of its connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TriggerKey {
    pub tenant: String,
    pub flow: String,
    pub trigger: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

impl TriggerKey {
    pub fn new(tenant: &str, flow: &str, trigger: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            flow: flow.to_owned(),
            trigger: trigger.to_owned(),
            connection: None,
        }
    }

    /// The state of a trigger of a per-connection flow for one connection.
    pub fn for_connection(tenant: &str, flow: &str, trigger: &str, connection: &str) -> Self {
        Self {
            connection: Some(connection.to_owned()),
            ..Self::new(tenant, flow, trigger)
        }
    }
}

/// What the index of unfinished runs keeps of each: enough to rebuild
/// concurrency queues at start without reading every run record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRun {
    pub tenant: String,
    pub id: String,
    pub flow: String,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
}

impl From<&RunRecord> for ActiveRun {
    fn from(run: &RunRecord) -> Self {
        Self {
            tenant: run.tenant.clone(),
            id: run.id.clone(),
            flow: run.flow.clone(),
            status: run.status,
            concurrency_key: run.concurrency_key.clone(),
        }
    }
}

/// A credential sealed by the key ring: the store holds ciphertext only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The id of the key that sealed it.
    pub kid: String,
    /// Base64 of the 24-byte nonce.
    pub nonce: String,
    /// Base64 of the ciphertext and its tag.
    pub data: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Whether a connection works.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Its last test or use succeeded.
    Ready,
    /// The app no longer accepts its credentials: it needs reconnecting.
    Disconnected,
    /// A test or refresh failed for another reason; it is tried again.
    Error,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Ready => "ready",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Error => "error",
        }
    }

    pub const ALL: [ConnectionState; 3] = [
        ConnectionState::Ready,
        ConnectionState::Disconnected,
        ConnectionState::Error,
    ];
}

impl std::str::FromStr for ConnectionState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is not a connection state; use ready, disconnected or error")
            })
    }
}

/// A tenant's connection to an integration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub id: String,
    pub tenant: String,
    pub integration: String,
    pub name: String,
    pub state: ConnectionState,
    pub parameters: Value,
    /// Each credential field, sealed.
    pub credentials: std::collections::BTreeMap<String, Sealed>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Why the connection is not ready (no credential in it).
    pub error: Option<String>,
    pub credentials_expire_at: Option<DateTime<Utc>>,
    /// When the current credentials were granted (OAuth2: the token's
    /// start, for the refresh-ahead rule).
    #[serde(default)]
    pub credentials_granted_at: Option<DateTime<Utc>>,
    /// This connection's customisations of its integration's actions, by
    /// action key.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub overrides: std::collections::BTreeMap<String, ActionOverride>,
}

/// How one connection customises an action of its integration: mapping
/// entries (expressions, as the mappings of a flow's `map` node) that are
/// added to, or replace, the integration's. Stored as written; compiled
/// where it is used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionOverride {
    /// Entries for input fields the caller left out, evaluated over
    /// `input` and `connection` before the input is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_defaults: Option<Value>,
    /// Entries of the request body, over `input` and `connection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Entries of the output, over `response`, `input` and `connection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    pub updated_at: DateTime<Utc>,
}

/// Where an OAuth2 connection request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for the person to consent at the provider.
    Pending,
    Success,
    Error,
    /// Not completed within its 10 minutes.
    Expired,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Success => "success",
            RequestStatus::Error => "error",
            RequestStatus::Expired => "expired",
        }
    }
}

/// A caller's `Idempotency-Key` for an action call: the run it started, and
/// the hash of the body it came with (the same key with another body is
/// refused). Kept 24 hours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub tenant: String,
    pub key: String,
    /// SHA-256 (hex) of what the call asked: the action and its body.
    pub request_hash: String,
    pub run_id: String,
    pub at: DateTime<Utc>,
}

/// An OAuth2 connection request: what the callback needs to finish it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRequestRecord {
    pub id: String,
    pub tenant: String,
    pub integration: String,
    pub parameters: Value,
    /// The connection it reconnects, if any.
    pub connection_id: Option<String>,
    /// Where the browser goes once it is done.
    pub redirect_uri: Option<String>,
    pub status: RequestStatus,
    /// SHA-256 (hex) of the secret part of its `state`.
    pub state_hash: String,
    /// The PKCE verifier, sealed.
    pub verifier: Option<Sealed>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub error: Option<String>,
    /// The connection it made or reconnected.
    pub result: Option<String>,
}
