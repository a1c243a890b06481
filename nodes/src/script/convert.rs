//! Exact conversion between JSON values and Rhai values: integers stay
//! integers, floats stay floats, null is `()`, nesting is kept.
//!
//! Written by hand rather than through `rhai::serde` because it runs for every
//! node output and is several times faster this way. JSON integers beyond the
//! range of `i64` become floats (Rhai integers are `i64`).

use rhai::{Array, Blob, Dynamic, ImmutableString, Map};
use serde_json::{Map as JsonMap, Number, Value};

/// JSON → Rhai.
pub fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::Array(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Object(fields) => Dynamic::from_map(
            fields
                .iter()
                .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
                .collect(),
        ),
    }
}

/// Rhai → JSON. Fails on values JSON cannot hold: NaN and infinities,
/// functions, other host types, and values nested deeper than
/// [`crate::json::MAX_DEPTH`] (which weir does not accept anywhere).
pub fn to_json(value: &Dynamic) -> Result<Value, String> {
    to_json_within(value, crate::json::MAX_DEPTH)
}

/// [`to_json`] of a value that may nest `levels` more levels.
fn to_json_within(value: &Dynamic, levels: usize) -> Result<Value, String> {
    if (value.is_array() || value.is_map() || value.is_blob()) && levels == 0 {
        return Err(crate::json::too_deep("the value"));
    }
    let below = levels.saturating_sub(1);
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = value.as_float() {
        return Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| format!("the number {f} cannot be written as JSON"));
    }
    if value.is_string()
        && let Some(s) = value.read_lock::<ImmutableString>()
    {
        return Ok(Value::String(s.to_string()));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if value.is_array()
        && let Some(items) = value.read_lock::<Array>()
    {
        return items
            .iter()
            .map(|item| to_json_within(item, below))
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if value.is_map()
        && let Some(fields) = value.read_lock::<Map>()
    {
        let mut object = JsonMap::new();
        for (k, v) in fields.iter() {
            object.insert(k.to_string(), to_json_within(v, below)?);
        }
        return Ok(Value::Object(object));
    }
    if value.is_blob()
        && let Some(bytes) = value.read_lock::<Blob>()
    {
        return Ok(Value::Array(
            bytes.iter().map(|b| Value::from(*b)).collect(),
        ));
    }
    if let Some(missing) = value.read_lock::<super::MissingSecret>() {
        return Err(missing.message());
    }
    Err(format!(
        "a value of type `{}` cannot be written as JSON",
        value.type_name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(".*", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn json_to_dynamic_to_json_is_the_identity(value in arb_json()) {
            prop_assert_eq!(to_json(&to_dynamic(&value)).unwrap(), value);
        }
    }

    #[test]
    fn integers_stay_integers_and_floats_stay_floats() {
        let v = json!({"i": 1, "f": 1.0, "n": null, "neg": -7, "big": 1e300});
        let d = to_dynamic(&v);
        let m = d.read_lock::<Map>().unwrap();
        assert!(m["i"].is_int());
        assert!(m["f"].is_float());
        assert!(m["n"].is_unit());
        drop(m);
        assert_eq!(to_json(&d).unwrap().to_string(), v.to_string());
    }

    #[test]
    fn values_nested_deeper_than_the_limit_are_refused() {
        let mut value = Dynamic::UNIT;
        for _ in 0..crate::json::MAX_DEPTH {
            value = Dynamic::from_array(vec![value]);
        }
        assert!(to_json(&value).is_ok());
        let deeper = Dynamic::from_array(vec![value]);
        let e = to_json(&deeper).unwrap_err();
        assert!(e.contains("nested more than 64 levels"), "{e}");
        let mut map = Map::new();
        map.insert("a".into(), deeper);
        assert!(to_json(&Dynamic::from_map(map)).is_err());
    }

    #[test]
    fn nan_is_refused() {
        let e = to_json(&Dynamic::from_float(f64::NAN)).unwrap_err();
        assert!(e.contains("cannot be written as JSON"), "{e}");
    }

    #[test]
    fn shared_values_are_read_through() {
        let shared = to_dynamic(&json!({"a": [1, 2]})).into_shared();
        assert_eq!(to_json(&shared).unwrap(), json!({"a": [1, 2]}));
    }
}
