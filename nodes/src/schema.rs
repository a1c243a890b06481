//! JSON Schemas in weir's files (integration parameters, actions' input
//! and output, an api trigger's input): checked against the JSON Schema
//! meta-schema when the file loads, compiled once, and reused for every
//! value they check.

use crate::reader::Options;
use crate::yaml::{Kind, Yaml};
use serde_json::Value;

/// A compiled JSON Schema.
pub struct Schema {
    pub schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.schema == other.schema
    }
}

/// A problem of a value against a schema: where (a JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SchemaError {
    pub pointer: String,
    pub message: String,
}

impl SchemaError {
    pub fn new(pointer: &str, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.to_owned(),
            message: message.into(),
        }
    }
}

impl Schema {
    /// Every problem of `value`, with pointers under `prefix` (like
    /// `/parameters`; empty for the value itself). A missing required
    /// property is pointed at itself (`/email`), not at its parent.
    pub fn check(&self, value: &Value, prefix: &str) -> Vec<SchemaError> {
        // The common case, without building an error iterator.
        if self.validator.is_valid(value) {
            return Vec::new();
        }
        self.validator
            .iter_errors(value)
            .map(|e| {
                let mut pointer = format!("{prefix}{}", e.instance_path());
                if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind()
                    && let Some(name) = property.as_str()
                {
                    pointer.push('/');
                    pointer.push_str(&name.replace('~', "~0").replace('/', "~1"));
                }
                SchemaError {
                    pointer,
                    message: e.to_string(),
                }
            })
            .collect()
    }

    /// Whether `value` matches.
    pub fn accepts(&self, value: &Value) -> bool {
        self.validator.is_valid(value)
    }
}

/// Every problem on one line: `/email: "email" is a required property; …`.
pub fn describe(errors: &[SchemaError]) -> String {
    errors
        .iter()
        .map(|e| {
            let pointer = if e.pointer.is_empty() {
                "/"
            } else {
                &e.pointer
            };
            format!("{pointer}: {}", e.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads the schema under `key` (a map), checked against the meta-schema;
/// problems go to `o`'s diagnostics, at the schema's position.
pub fn read(value: &Yaml, key: &str, o: &Options<'_>) -> Option<Schema> {
    if !matches!(value.kind, Kind::Map(_)) {
        o.error(
            value.pos,
            format!(
                "`{key}` must be a JSON Schema (a map), not {}",
                value.describe()
            ),
        );
        return None;
    }
    compile(value.to_json())
        .map_err(|e| o.error(value.pos, format!("`{key}` {e}")))
        .ok()
}

/// Compiles a schema given as JSON, checked against the meta-schema.
pub fn compile(schema: Value) -> Result<Schema, String> {
    if let Err(e) = jsonschema::meta::validate(&schema) {
        let at = e.instance_path().to_string();
        let at = if at.is_empty() {
            String::new()
        } else {
            format!(" (at {at})")
        };
        return Err(format!("is not a valid JSON Schema: {e}{at}"));
    }
    match jsonschema::validator_for(&schema) {
        Ok(validator) => Ok(Schema { schema, validator }),
        Err(e) => Err(format!("cannot be compiled: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_missing_property_is_pointed_at_itself() {
        let s = compile(json!({
            "type": "object",
            "required": ["email", "a/b"],
            "properties": {"age": {"type": "integer"}}
        }))
        .unwrap();
        let errors = s.check(&json!({"age": "x"}), "");
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert!(pointers.contains(&"/email"), "{errors:?}");
        assert!(pointers.contains(&"/a~1b"), "{errors:?}");
        assert!(pointers.contains(&"/age"), "{errors:?}");
        assert!(s.accepts(&json!({"email": "x", "a/b": 1})));
    }

    #[test]
    fn an_invalid_schema_is_refused() {
        let e = compile(json!({"type": "objekt"})).unwrap_err();
        assert!(e.contains("not a valid JSON Schema"), "{e}");
    }
}
