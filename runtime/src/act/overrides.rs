//! Connection overrides, the third layer: one connection's customisation
//! of an action its integration implements — input defaults, body entries,
//! output entries — written through the API, checked when written (every
//! expression compiled, each problem with its pointer and its position
//! inside the expression), stored in the connection's record and compiled
//! once per version where it is used.

use std::time::Duration;

use rhai::Dynamic;
use serde::Deserialize;
use serde_json::{Map, Value};
use weir_nodes::node::NodeError;
use weir_nodes::script::{Mapping, to_json};
use weir_storage::ActionOverride;

use super::definition::{Action, Implementation, OUTPUT_SCOPE, REQUEST_SCOPE};
use super::schema::SchemaError;

/// `PUT /api/v1/connections/{id}/actions/{key}`: each part maps a field
/// to a Rhai expression (a string).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// Defaults for input fields the caller leaves out, over `input` and
    /// `connection`.
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub input_defaults: Option<Value>,
    /// Entries of the request body, over `input` and `connection`.
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub body: Option<Value>,
    /// Entries of the output, over `response`, `input` and `connection`.
    #[schema(value_type = Option<HashMap<String, String>>)]
    pub output: Option<Value>,
}

pub const OVERRIDE_SHAPE: &str =
    r#"{"input_defaults"?: {FIELD: EXPR}, "body"?: {FIELD: EXPR}, "output"?: {FIELD: EXPR}}"#;

/// An override, compiled: each part's entries in the order written.
#[derive(Debug, Default)]
pub struct Compiled {
    pub input_defaults: Vec<(String, Mapping)>,
    pub body: Vec<(String, Mapping)>,
    pub output: Vec<(String, Mapping)>,
}

/// Compiles every entry of `o`; every problem, with its pointer.
pub fn compile(o: &ActionOverride) -> Result<Compiled, Vec<SchemaError>> {
    let mut problems = Vec::new();
    let compiled = Compiled {
        input_defaults: entries(
            o.input_defaults.as_ref(),
            "/input_defaults",
            REQUEST_SCOPE,
            &mut problems,
        ),
        body: entries(o.body.as_ref(), "/body", REQUEST_SCOPE, &mut problems),
        output: entries(o.output.as_ref(), "/output", OUTPUT_SCOPE, &mut problems),
    };
    match problems.is_empty() {
        true => Ok(compiled),
        false => Err(problems),
    }
}

fn entries(
    part: Option<&Value>,
    at: &str,
    names: &[&str],
    problems: &mut Vec<SchemaError>,
) -> Vec<(String, Mapping)> {
    let Some(part) = part else {
        return Vec::new();
    };
    let Value::Object(map) = part else {
        problems.push(SchemaError::new(
            at,
            "must be a map of entries, each a field name and an expression (like {\"owner\": \"input.email\"})",
        ));
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let pointer = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
        out.push((
            k.clone(),
            Mapping::from_json(v, &pointer, names, &mut found),
        ));
    }
    problems.extend(
        found
            .into_iter()
            .map(|(pointer, message)| SchemaError::new(&pointer, message)),
    );
    out
}

/// The problems of an override of `action` beyond its own expressions:
/// empty, or a part that does not apply to how the integration does it.
pub fn check_against(o: &ActionOverride, action: &Action, integration: &str) -> Vec<SchemaError> {
    let mut problems = Vec::new();
    if o.input_defaults.is_none() && o.body.is_none() && o.output.is_none() {
        problems.push(SchemaError::new(
            "",
            "an override needs at least one of input_defaults, body or output (to remove it, DELETE it)",
        ));
    }
    match &action.implementation {
        Some(Implementation::Flow(flow)) => {
            for (part, given) in [("body", o.body.is_some()), ("output", o.output.is_some())] {
                if given {
                    problems.push(SchemaError::new(
                        &format!("/{part}"),
                        format!(
                            "`{integration}`'s action `{}` runs flow `{flow}`: it has no request {part} to change; only input_defaults apply",
                            action.key
                        ),
                    ));
                }
            }
        }
        Some(Implementation::Request(spec)) => {
            for (part, given, mapping) in [
                ("body", o.body.is_some(), spec.body.as_ref()),
                ("output", o.output.is_some(), spec.output.as_ref()),
            ] {
                if given && matches!(mapping, Some(Mapping::Expr(_) | Mapping::List(_))) {
                    problems.push(SchemaError::new(
                        &format!("/{part}"),
                        format!(
                            "`{integration}`'s action `{}` builds its {part} from one expression, not from entries, so entries cannot be added to it",
                            action.key
                        ),
                    ));
                }
            }
        }
        None => {}
    }
    problems
}

/// The override as the API shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct OverrideView {
    pub input_defaults: Option<Value>,
    pub body: Option<Value>,
    pub output: Option<Value>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

pub fn view(o: &ActionOverride) -> OverrideView {
    OverrideView {
        input_defaults: o.input_defaults.clone(),
        body: o.body.clone(),
        output: o.output.clone(),
        updated_at: o.updated_at,
    }
}

impl Compiled {
    /// `input` with the defaults of the fields it lacks (an input that is
    /// not an object is left as it is, for its schema to refuse).
    pub fn with_defaults(
        &self,
        input: &Value,
        scope: &mut rhai::Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Value, NodeError> {
        let Value::Object(fields) = input else {
            return Ok(input.clone());
        };
        let mut fields = fields.clone();
        for (k, m) in &self.input_defaults {
            if !fields.contains_key(k) {
                fields.insert(k.clone(), eval(m, scope, timeout, "input_defaults", k)?);
            }
        }
        Ok(Value::Object(fields))
    }

    /// `value` (the integration's body or output) with this part's entries
    /// added or replaced; no value yet is an empty object.
    pub fn merge(
        part: &[(String, Mapping)],
        what: &str,
        value: Option<Value>,
        scope: &mut rhai::Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Option<Value>, NodeError> {
        if part.is_empty() {
            return Ok(value);
        }
        let mut fields = match value {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(fields)) => fields,
            Some(other) => {
                return Err(NodeError::Invalid(format!(
                    "the connection's override adds {what} entries, but the integration's {what} is not an object: {}",
                    weir_nodes::script::excerpt(&other.to_string())
                )));
            }
        };
        for (k, m) in part {
            fields.insert(k.clone(), eval(m, scope, timeout, what, k)?);
        }
        Ok(Some(Value::Object(fields)))
    }
}

fn eval(
    m: &Mapping,
    scope: &mut rhai::Scope<'static>,
    timeout: Option<Duration>,
    part: &str,
    key: &str,
) -> Result<Value, NodeError> {
    let value: Dynamic = m.eval(scope, timeout).map_err(|e| {
        NodeError::Invalid(format!(
            "the connection's override `{part}.{key}` failed: {e}"
        ))
    })?;
    to_json(&value)
        .map_err(|e| NodeError::Invalid(format!("the connection's override `{part}.{key}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn o(value: Value) -> ActionOverride {
        let body: OverrideBody = serde_json::from_value(value).unwrap();
        ActionOverride {
            input_defaults: body.input_defaults,
            body: body.body,
            output: body.output,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn every_expression_is_compiled_and_each_problem_has_its_pointer_and_position() {
        let ok = compile(&o(json!({
            "input_defaults": {"owner": "\"ops\"", "tags": ["\"a\"", 1]},
            "body": {"source": "connection.name + \"/\" + input.email"},
            "output": {"created": "response.status == 201"}
        })))
        .unwrap();
        assert_eq!(ok.input_defaults.len(), 2);
        assert_eq!(ok.body.len(), 1);
        let problems = compile(&o(json!({
            "input_defaults": {"owner": "input.email +"},
            "body": {"a/b": {"deep": "nodes.x"}},
            "output": "response.body"
        })))
        .unwrap_err();
        let at = |p: &str| {
            problems
                .iter()
                .find(|e| e.pointer == p)
                .unwrap_or_else(|| panic!("no problem at {p}: {problems:?}"))
                .message
                .clone()
        };
        let owner = at("/input_defaults/owner");
        assert!(owner.contains("(at line 1, column"), "{owner}");
        assert!(at("/body/a~1b/deep").contains("unknown variable `nodes`"));
        assert!(at("/output").contains("must be a map of entries"));
    }

    #[test]
    fn defaults_fill_only_what_is_missing_and_entries_merge() {
        let c = compile(&o(json!({
            "input_defaults": {"owner": "\"ops\"", "name": "\"x\""},
            "body": {"source": "\"weir\"", "email": "input.email.to_upper()"}
        })))
        .unwrap();
        let input = json!({"email": "a@b.c", "name": "Ada"});
        let mut scope = weir_nodes::script::ScopeBuilder::new(&Dynamic::UNIT, "t", "", "")
            .with("input", weir_nodes::script::to_dynamic(&input))
            .build();
        let filled = c.with_defaults(&input, &mut scope, None).unwrap();
        assert_eq!(
            filled,
            json!({"email": "a@b.c", "name": "Ada", "owner": "ops"})
        );
        let body = Compiled::merge(
            &c.body,
            "body",
            Some(json!({"email": "a@b.c", "full_name": "Ada"})),
            &mut scope,
            None,
        )
        .unwrap();
        assert_eq!(
            body,
            Some(json!({"email": "A@B.C", "full_name": "Ada", "source": "weir"}))
        );
        let not_a_map = Compiled::merge(&c.body, "body", Some(json!([1])), &mut scope, None);
        assert!(not_a_map.is_err());
    }
}
