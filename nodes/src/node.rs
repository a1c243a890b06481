//! A node of a flow: its common options (`id`, `type`, `next`, `retry`,
//! `timeout`, `on_error`) and its type's own options, as a closed enum.

use std::time::Duration;

use rhai::{Dynamic, Scope};
use serde_json::Value;

use crate::control::{
    delay::Delay, fail::Fail, filter::Filter, for_each::ForEach, if_::If, switch::Switch,
};
use crate::diag::{Diags, Pos};
use crate::functions::{
    action::ActionNode, deliver::Deliver, http::Http, log::Log, map::MapNode, script::ScriptNode,
};
use crate::reader::{Options, valid_id};
use crate::script::ScriptError;
use crate::yaml::{Kind, Yaml};

/// A reference to another node by id, with where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub id: String,
    pub pos: Pos,
}

/// Which kind of edge leads from a node to a successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `next`: taken whenever the node succeeds (unless it is a `filter`
    /// whose condition failed).
    Next,
    /// `then` of an `if`.
    Then,
    /// `else` of an `if`.
    Else,
    /// `cases[i].next` of a `switch`.
    Case(usize),
    /// `default` of a `switch`.
    Default,
    /// The `on_error` handler: taken only when the node fails.
    OnError,
}

impl Taken {
    /// Whether an edge of `route` is taken.
    pub fn takes(self, route: Route) -> bool {
        match self {
            Self::Next => route == Route::Next,
            Self::Also(r) => route == Route::Next || route == r,
            Self::Only(r) => route == r,
            Self::Nothing => false,
        }
    }
}

impl Route {
    pub fn label(self) -> String {
        match self {
            Self::Next => "next".into(),
            Self::Then => "then".into(),
            Self::Else => "else".into(),
            Self::Case(i) => format!("case {i}"),
            Self::Default => "default".into(),
            Self::OnError => "on_error".into(),
        }
    }
}

/// The routes a finished node takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// `next` only.
    Next,
    /// `next` and this route.
    Also(Route),
    /// This route alone (an `on_error` handler).
    Only(Route),
    /// None: the rest of the branch is skipped.
    Nothing,
}

/// The node's behaviour on a failure that retries did not cure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnError {
    /// The run fails.
    Fail,
    /// The output is `{"error": message}` and successors run.
    Continue,
    /// This node runs instead of `next`.
    Handler(Link),
}

/// `retry:` — how often a node is tried on a retryable error, and how long it
/// waits in between (exponential, with jitter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all, counting the first (default 1: no retry).
    pub max_attempts: u32,
    /// The wait after the first failure (default 1s).
    pub initial: Duration,
    /// The longest wait (default 5m).
    pub max: Duration,
    /// Whether `max_attempts` was written (a `deliver` node's default is to
    /// retry without bound).
    pub max_attempts_set: bool,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            max_attempts_set: false,
        }
    }
}

impl Retry {
    /// The wait before attempt `attempt + 1`, given a random `jitter` in
    /// [0, 1): between half and all of `initial * 2^(attempt-1)`, capped.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        crate::backoff::Backoff::new(self.initial, self.max).delay(attempt, jitter)
    }
}

/// One node of a flow.
#[derive(Debug)]
pub struct NodeDef {
    pub id: String,
    /// Where the id is written.
    pub id_pos: Pos,
    /// Where the node's map starts.
    pub pos: Pos,
    pub kind: NodeKind,
    pub next: Vec<Link>,
    pub retry: Retry,
    pub timeout: Option<Duration>,
    pub on_error: OnError,
    /// The `nodes.X` and `secrets.X` its expressions read (a `for_each`'s
    /// own, not its body's), checked once the whole flow is read.
    pub references: Vec<crate::script::Reference>,
}

/// The node types.
#[derive(Debug)]
pub enum NodeKind {
    Map(MapNode),
    Script(ScriptNode),
    Http(Http),
    /// An action on a connected app (resolved by the daemon).
    Action(ActionNode),
    Deliver(Deliver),
    Log(Log),
    If(If),
    Switch(Switch),
    Filter(Filter),
    ForEach(ForEach),
    Delay(Delay),
    Fail(Fail),
    /// A node whose options had errors. It keeps its place in the graph so
    /// that links to it are not reported too; a flow with errors never runs.
    Invalid,
}

pub const NODE_TYPES: &[&str] = &[
    "map", "script", "http", "action", "deliver", "log", "if", "switch", "filter", "for_each",
    "delay", "fail",
];

/// What a node that runs at once (not `http`, `delay`, `for_each`) produced.
#[derive(Debug)]
pub enum Outcome {
    Output(Dynamic),
    /// A `deliver` node: the message goes to the outbox in the node's commit.
    Deliver(crate::functions::deliver::Delivery),
    /// A `fail` node: the run fails with this message.
    Fail(String),
}

/// Why a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Script(#[from] ScriptError),
    #[error("{0}")]
    Http(#[from] crate::functions::http::HttpError),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(String),
}

impl NodeError {
    /// Whether trying again may succeed: HTTP 5xx, 408, 429, timeouts and
    /// connection errors; never script errors or 4xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Script(_) | Self::Invalid(_) => false,
            Self::Http(e) => e.is_retryable(),
            Self::Timeout(_) => true,
        }
    }

    /// How long the other side asked to wait before trying again (an HTTP
    /// answer's `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http(e) => e.retry_after(),
            _ => None,
        }
    }
}

impl NodeKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Map(_) => "map",
            Self::Script(_) => "script",
            Self::Http(_) => "http",
            Self::Action(_) => "action",
            Self::Deliver(_) => "deliver",
            Self::Log(_) => "log",
            Self::If(_) => "if",
            Self::Switch(_) => "switch",
            Self::Filter(_) => "filter",
            Self::ForEach(_) => "for_each",
            Self::Delay(_) => "delay",
            Self::Fail(_) => "fail",
            Self::Invalid => "invalid",
        }
    }

    /// Outgoing links besides `next` and `on_error`.
    pub fn routes(&self) -> Vec<(Route, &[Link])> {
        match self {
            Self::If(n) => vec![(Route::Then, &n.then[..]), (Route::Else, &n.else_[..])],
            Self::Switch(n) => n.routes(),
            _ => Vec::new(),
        }
    }

    /// The routes a node that finished with `output` takes. Derived from the
    /// output alone, so a resumed run takes the same ones.
    pub fn taken(&self, output: &Value) -> Taken {
        match self {
            Self::If(_) => If::taken(output),
            Self::Switch(_) => Switch::taken(output),
            Self::Filter(_) => Filter::taken(output),
            _ => Taken::Next,
        }
    }

    /// Runs a node that finishes at once. `http`, `delay` and `for_each`
    /// are driven by the engine.
    pub fn run_now(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Option<Result<Outcome, NodeError>> {
        Some(match self {
            Self::Map(n) => n.run(scope, timeout),
            Self::Script(n) => n.run(scope, timeout),
            Self::Deliver(n) => n.run(scope, timeout),
            Self::Log(n) => n.run(scope, timeout),
            Self::If(n) => n.run(scope, timeout),
            Self::Switch(n) => n.run(scope, timeout),
            Self::Filter(n) => n.run(scope, timeout),
            Self::Fail(n) => n.run(scope, timeout),
            Self::Http(_) | Self::Action(_) | Self::Delay(_) | Self::ForEach(_) | Self::Invalid => {
                return None;
            }
        })
    }

    /// Whether running the node has an effect outside weir, so that what it
    /// depends on must be on disk first.
    pub fn has_effect(&self) -> bool {
        matches!(self, Self::Http(_) | Self::Action(_))
    }
}

/// Reads a `next`-like value: a node id or a list of them.
pub fn read_links(o: &Options, key: &str, value: &Yaml) -> Vec<Link> {
    let items: Vec<&Yaml> = match &value.kind {
        Kind::List(items) => items.iter().collect(),
        _ => vec![value],
    };
    items
        .into_iter()
        .filter_map(|item| match &item.kind {
            Kind::Str(id) => Some(Link {
                id: id.clone(),
                pos: item.pos,
            }),
            _ => {
                o.error(
                    item.pos,
                    format!(
                        "`{key}` must name a node id (or a list of them), not {}",
                        item.describe()
                    ),
                );
                None
            }
        })
        .collect()
}

/// Reads one node. `names` are the variables its expressions may use. A
/// node with errors comes back as [`NodeKind::Invalid`], its problems in
/// `diags`.
pub fn read_node(yaml: &Yaml, source: &str, names: &[&str], diags: &Diags) -> Option<NodeDef> {
    let mark = diags.references_mark();
    let mut node = read_node_options(yaml, source, names, diags)?;
    node.references = diags.take_references(mark);
    Some(node)
}

fn read_node_options(yaml: &Yaml, source: &str, names: &[&str], diags: &Diags) -> Option<NodeDef> {
    let mut o = Options::new(yaml, "node", source, diags);
    let (id, id_pos) = match o.required_str("id") {
        Some((id, pos)) => {
            if !valid_id(id) {
                o.error(pos, format!("node id `{id}` must match [a-z0-9_-]{{1,64}}"));
            }
            (id.to_owned(), pos)
        }
        None => (String::new(), yaml.pos),
    };
    o.what = if id.is_empty() {
        "node".into()
    } else {
        format!("node '{id}'")
    };
    let type_ = o.required_str("type");
    let next = o
        .get("next")
        .map(|v| read_links(&o, "next", v))
        .unwrap_or_default();
    let retry = read_retry(&mut o);
    let timeout = o.duration("timeout");
    let on_error = match o.get("on_error") {
        None => OnError::Fail,
        Some(v) => match v.as_str() {
            Some("fail") => OnError::Fail,
            Some("continue") => OnError::Continue,
            Some(id) => OnError::Handler(Link {
                id: id.to_owned(),
                pos: v.pos,
            }),
            None => {
                o.error(v.pos, "`on_error` must be `fail`, `continue` or a node id");
                OnError::Fail
            }
        },
    };
    let Some((type_, type_pos)) = type_ else {
        return Some(invalid(id, id_pos, yaml.pos, next, on_error));
    };
    let kind = match type_ {
        "map" => MapNode::build(&mut o, names).map(NodeKind::Map),
        "script" => ScriptNode::build(&mut o, names).map(NodeKind::Script),
        "http" => Http::build(&mut o, names).map(NodeKind::Http),
        "action" => ActionNode::build(&mut o, names).map(NodeKind::Action),
        "deliver" => Deliver::build(&mut o, names).map(NodeKind::Deliver),
        "log" => Log::build(&mut o, names).map(NodeKind::Log),
        "if" => If::build(&mut o, names).map(NodeKind::If),
        "switch" => Switch::build(&mut o, names).map(NodeKind::Switch),
        "filter" => Filter::build(&mut o, names).map(NodeKind::Filter),
        "for_each" => ForEach::build(&mut o, names).map(NodeKind::ForEach),
        "delay" => Delay::build(&mut o, names).map(NodeKind::Delay),
        "fail" => Fail::build(&mut o, names).map(NodeKind::Fail),
        other => {
            let hint = crate::reader::closest(other, NODE_TYPES)
                .map(|t| format!("did you mean `{t}`? "))
                .unwrap_or_default();
            o.error(
                type_pos,
                format!(
                    "unknown node type `{other}`; {hint}node types are: {}",
                    NODE_TYPES.join(", ")
                ),
            );
            return Some(invalid(id, id_pos, yaml.pos, next, on_error));
        }
    };
    o.finish();
    Some(NodeDef {
        id,
        id_pos,
        pos: yaml.pos,
        kind: kind.unwrap_or(NodeKind::Invalid),
        next,
        retry,
        timeout,
        on_error,
        references: Vec::new(),
    })
}

fn invalid(id: String, id_pos: Pos, pos: Pos, next: Vec<Link>, on_error: OnError) -> NodeDef {
    NodeDef {
        id,
        id_pos,
        pos,
        kind: NodeKind::Invalid,
        next,
        retry: Retry::default(),
        timeout: None,
        on_error,
        references: Vec::new(),
    }
}

fn read_retry(o: &mut Options) -> Retry {
    let mut retry = Retry::default();
    let Some(value) = o.get("retry") else {
        return retry;
    };
    let mut r = Options::new(value, format!("{}: `retry`", o.what), o.source, o.diags);
    if let Some(n) = r.uint("max_attempts") {
        if n == 0 || n > 1_000 {
            r.error(value.pos, "`max_attempts` must be between 1 and 1000");
        } else {
            retry.max_attempts = n as u32;
            retry.max_attempts_set = true;
        }
    }
    if let Some(backoff) = r.get("backoff") {
        let mut b = Options::new(
            backoff,
            format!("{}: `retry.backoff`", o.what),
            o.source,
            o.diags,
        );
        if let Some(d) = b.duration("initial") {
            retry.initial = d;
        }
        if let Some(d) = b.duration("max") {
            retry.max = d;
        }
        if retry.max < retry.initial {
            b.error(backoff.pos, "`max` must not be shorter than `initial`");
        }
        b.finish();
    }
    r.finish();
    retry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let r = Retry {
            max_attempts: 10,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            max_attempts_set: true,
        };
        assert_eq!(r.backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(r.backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(r.backoff(3, 0.0), Duration::from_secs(2));
        assert_eq!(r.backoff(9, 1.0), Duration::from_secs(10));
        assert_eq!(r.backoff(1000, 1.0), Duration::from_secs(10));
    }
}
