//! The JSON values weir accepts: at most [`MAX_DEPTH`] levels of nesting,
//! wherever JSON enters — webhook and API bodies, `http` responses, what
//! expressions and scripts produce. Deeper values are refused where they
//! enter (a 4xx, or a failed node), so that everything weir stores it can
//! also read back, and no value is deep enough to exhaust a stack.

use serde_json::Value;

/// The deepest nesting of arrays and objects weir accepts (`[]` is 1).
pub const MAX_DEPTH: usize = 64;

/// How deep `value` nests (a scalar is 0, `[]` and `{}` are 1), counting no
/// further than `limit + 1`. Iterative: any depth is safe to measure.
pub fn depth(value: &Value, limit: usize) -> usize {
    fn is_container(v: &&Value) -> bool {
        matches!(v, Value::Array(_) | Value::Object(_))
    }
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = Vec::new();
    if is_container(&value) {
        stack.push((value, 1));
    }
    while let Some((value, level)) = stack.pop() {
        deepest = deepest.max(level);
        if deepest > limit {
            break;
        }
        match value {
            Value::Array(items) => {
                stack.extend(items.iter().filter(is_container).map(|c| (c, level + 1)))
            }
            Value::Object(fields) => {
                stack.extend(fields.values().filter(is_container).map(|c| (c, level + 1)))
            }
            _ => {}
        }
    }
    deepest
}

/// The message for a value nested deeper than [`MAX_DEPTH`].
pub fn too_deep(what: &str) -> String {
    format!(
        "{what} is nested more than {MAX_DEPTH} levels deep (arrays and objects within each other); weir accepts at most {MAX_DEPTH}"
    )
}

/// Why JSON text was refused.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not valid JSON: {0}")]
    Invalid(serde_json::Error),
    #[error(
        "nested more than {MAX_DEPTH} levels deep (arrays and objects within each other); weir accepts at most {MAX_DEPTH}"
    )]
    TooDeep,
}

/// Parses JSON text, refusing values nested deeper than [`MAX_DEPTH`].
pub fn parse(bytes: &[u8]) -> Result<Value, ParseError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) if depth(&value, MAX_DEPTH) > MAX_DEPTH => Err(ParseError::TooDeep),
        Ok(value) => Ok(value),
        // serde_json's own guard (128 levels) tripped first.
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => Err(ParseError::TooDeep),
        Err(e) => Err(ParseError::Invalid(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert_eq!(depth(&json!(1), 10), 0);
        assert_eq!(depth(&json!([]), 10), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": {}}]}), 10), 4);
        assert_eq!(depth(&json!([[[[]]], 1]), 10), 4);
        // It stops counting past the limit.
        assert_eq!(depth(&json!([[[[]]]]), 2), 3);
    }

    #[test]
    fn parse_refuses_deep_values_and_keeps_the_rest() {
        assert!(parse(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert!(matches!(
            parse(nested(MAX_DEPTH + 1).as_bytes()),
            Err(ParseError::TooDeep)
        ));
        assert!(matches!(
            parse(nested(127).as_bytes()),
            Err(ParseError::TooDeep)
        ));
        assert!(matches!(
            parse(nested(100_000).as_bytes()),
            Err(ParseError::TooDeep)
        ));
        assert!(matches!(parse(b"{nope"), Err(ParseError::Invalid(_))));
    }
}
