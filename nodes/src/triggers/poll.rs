//! `poll`: detects changes by calling an HTTP API every `every`.

use std::time::Duration;

use crate::functions::http::Http;
use crate::reader::Options;
use crate::script::Expr;

/// Names a poll's request templates may use.
pub const REQUEST_SCOPE: &[&str] = &["cursor", "vars", "tenant", "flow"];
/// Names `items` and `cursor` may use.
pub const RESPONSE_SCOPE: &[&str] = &["response", "cursor", "vars", "tenant", "flow"];
/// Names `key` and `version` may use.
pub const ITEM_SCOPE: &[&str] = &["item", "vars", "tenant", "flow"];

#[derive(Debug)]
pub struct Poll {
    /// How often to poll (like 30s).
    pub every: Duration,
    /// The request, with the options of an `http` node.
    pub request: Http,
    /// Over `response`: the list of records.
    pub items: Expr,
    /// Over `item`: the record's id.
    pub key: Expr,
    /// Over `item`: the record's version; default a hash of the item
    /// without `ignore_fields`.
    pub version: Option<Expr>,
    /// Fields left out of the default version hash.
    pub ignore_fields: Vec<String>,
    /// Over `response`: the cursor the next poll's request uses.
    pub cursor: Option<Expr>,
    /// Which changes start runs (default all three).
    pub emit: Emit,
    /// `true` (default): the first poll only records what exists and emits
    /// nothing; `false`: it emits every record it finds as created.
    pub baseline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emit {
    pub created: bool,
    pub updated: bool,
    pub deleted: bool,
}

/// The shortest `every` accepted.
pub const MIN_EVERY: Duration = Duration::from_millis(100);

impl Poll {
    pub fn build(o: &mut Options) -> Option<Self> {
        let every = o.required("every").and(o.duration("every"));
        if let (Some(every), Some(pos)) = (every, o.key_pos("every")) {
            if every < MIN_EVERY {
                o.error(pos, "`every` must be at least 100ms");
            }
        }
        let request = o.required("request").and_then(|value| {
            let mut r = Options::new(value, format!("{}: `request`", o.what), o.source, o.diags);
            let request = Http::build_request(&mut r, REQUEST_SCOPE);
            r.finish();
            request
        });
        let items = o.required_expr("items", RESPONSE_SCOPE);
        let key = o.required_expr("key", ITEM_SCOPE);
        let version = o.expr("version", ITEM_SCOPE);
        let ignore_fields = o
            .str_list("ignore_fields")
            .unwrap_or_default()
            .into_iter()
            .map(|(s, _)| s.to_owned())
            .collect();
        let cursor = o.expr("cursor", RESPONSE_SCOPE);
        let emit = match o.str_list("emit") {
            None => Emit {
                created: true,
                updated: true,
                deleted: true,
            },
            Some(list) => {
                let mut emit = Emit {
                    created: false,
                    updated: false,
                    deleted: false,
                };
                for (kind, pos) in list {
                    match kind {
                        "created" => emit.created = true,
                        "updated" => emit.updated = true,
                        "deleted" => emit.deleted = true,
                        other => o.error(pos, format!("`emit` takes created, updated and deleted, not `{other}`")),
                    }
                }
                emit
            }
        };
        let baseline = o.bool("baseline").unwrap_or(true);
        Some(Self {
            every: every?,
            request: request?,
            items: items?,
            key: key?,
            version,
            ignore_fields,
            cursor,
            emit,
            baseline,
        })
    }
}
