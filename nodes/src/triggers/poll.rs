//! `poll`: detects changes by calling an HTTP API every `every`.

use std::time::Duration;

use rhai::Scope;
use serde_json::Value;

use crate::functions::http::Http;
use crate::node::NodeError;
use crate::reader::Options;
use crate::script::{Expr, ScopeBuilder};

/// Names a poll's request templates may use.
pub const REQUEST_SCOPE: &[&str] = &["cursor", "vars", "tenant", "flow", "connection"];
/// Names `items` and `cursor` may use.
pub const RESPONSE_SCOPE: &[&str] = &["response", "cursor", "vars", "tenant", "flow", "connection"];
/// Names `key` and `version` may use.
pub const ITEM_SCOPE: &[&str] = &["item", "vars", "tenant", "flow", "connection"];

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
        if let (Some(every), Some(pos)) = (every, o.key_pos("every"))
            && every < MIN_EVERY
        {
            o.error(pos, "`every` must be at least 100ms");
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
                        other => o.error(
                            pos,
                            format!("`emit` takes created, updated and deleted, not `{other}`"),
                        ),
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

impl Poll {
    /// The scope `key` and `version` are evaluated in.
    pub fn item_scope(item: &Value, context: ScopeBuilder) -> Scope<'static> {
        context
            .with("item", crate::script::to_dynamic(item))
            .build()
    }

    /// A record's key and version.
    pub fn identify(
        &self,
        item: &Value,
        scope: &mut Scope<'static>,
    ) -> Result<(Value, Value), NodeError> {
        let key = crate::functions::eval_json(&self.key, scope, None)?;
        if key.is_null() {
            return Err(NodeError::Invalid(format!(
                "`key` ({}) is null for a record",
                self.key.text()
            )));
        }
        let version = match &self.version {
            Some(v) => crate::functions::eval_json(v, scope, None)?,
            None => Value::String(default_version(item, &self.ignore_fields)),
        };
        Ok((key, version))
    }
}

/// A record's version when `version` is not set: the first 16 hex digits of
/// the SHA-256 of its canonical JSON (keys sorted), without `ignore_fields`.
pub fn default_version(item: &Value, ignore_fields: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut item = item.clone();
    if let Value::Object(fields) = &mut item {
        for f in ignore_fields {
            fields.remove(f);
        }
    }
    write_canonical(&item, &mut hasher);
    hex::encode(&hasher.finalize()[..8])
}

fn write_canonical(value: &Value, hasher: &mut sha2::Sha256) {
    use sha2::Digest;
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for k in keys {
                hasher.update(Value::String(k.clone()).to_string().as_bytes());
                hasher.update(b":");
                write_canonical(&fields[k], hasher);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                write_canonical(item, hasher);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_default_version_ignores_key_order_and_ignored_fields() {
        let a = json!({"id": 1, "name": "x", "seen_at": "today"});
        let b = json!({"seen_at": "tomorrow", "name": "x", "id": 1});
        let ignore = vec!["seen_at".to_owned()];
        assert_eq!(default_version(&a, &ignore), default_version(&b, &ignore));
        assert_ne!(default_version(&a, &[]), default_version(&b, &[]));
        assert_ne!(
            default_version(&a, &ignore),
            default_version(&json!({"id": 1, "name": "y"}), &ignore)
        );
    }
}
