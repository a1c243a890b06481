//! YAML parsed into a tree that remembers where every key and value stands,
//! so that each problem in a flow file is reported at its line and column.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::diag::{Diagnostic, Pos};

/// A YAML value and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Yaml {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Yaml>),
    /// Keys in file order, each with its own position.
    Map(Vec<(Key, Yaml)>),
}

/// A mapping key and where it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub pos: Pos,
    pub name: String,
}

impl Yaml {
    /// What the value is, for messages: "a string", "a list", ...
    pub fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::List(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as JSON, positions dropped.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::List(items) => Value::Array(items.iter().map(Yaml::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// The largest flow file weir reads, by default.
pub const DEFAULT_MAX_SIZE: usize = 1 << 20;

static MAX_SIZE: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_SIZE);

/// Sets the largest file [`parse`] reads (`--max-flow-size`), for the
/// whole process.
pub fn set_max_size(bytes: usize) {
    MAX_SIZE.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// The largest file [`parse`] reads.
pub fn max_size() -> usize {
    MAX_SIZE.load(std::sync::atomic::Ordering::Relaxed)
}

/// How deep YAML may nest (maps and lists within each other): far more
/// than a flow needs, and little enough that reading never comes near the
/// end of a thread's stack.
pub const MAX_DEPTH: usize = 32;

/// Parses one YAML document. A syntax error comes back as one diagnostic.
/// Files over [`max_size`] are refused; within it, the parser's budget
/// (values, events) grows with the size, so a file that fits is never
/// refused for holding many small values.
pub fn parse(source: &str) -> Result<Yaml, Diagnostic> {
    let max = max_size();
    if source.len() > max {
        return Err(Diagnostic::new(
            Pos::new(1, 1),
            format!(
                "the file is {} bytes; weir reads flow files of at most {max} bytes (raise it with --max-flow-size)",
                source.len()
            ),
        ));
    }
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = (max / 2).max(budget.max_nodes);
    budget.max_events = max.max(budget.max_events);
    budget.max_depth = MAX_DEPTH;
    // YAML 1.2 booleans only: `yes`, `no`, `on`, `off`, `y` and `n` are text,
    // so a key `n:` or a node id `no` means what it says.
    let options = serde_saphyr::options! { strict_booleans: true, budget: Some(budget) };
    match serde_saphyr::from_str_with_options::<Spanned<Kind>>(source, options) {
        Ok(root) => Ok(Yaml {
            pos: pos_of(&root),
            kind: root.value,
        }),
        Err(e) => {
            let pos = e
                .location()
                .map(|l| Pos {
                    line: l.line() as u32,
                    col: l.column() as u32,
                    offset: l.span().byte_offset().unwrap_or(0) as u32,
                })
                .unwrap_or_default();
            let message = e.without_snippet().to_string();
            // The message may end with its own "at line X column Y"; the
            // diagnostic carries the position already.
            let message = match message.find(" at line ") {
                Some(i) => message[..i].to_owned(),
                None => message,
            };
            Err(Diagnostic::new(pos, explain(&message)))
        }
    }
}

/// The parser's message in weir's words.
fn explain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!(
            "invalid YAML: the key `{key}` appears twice in this map; each key may appear once"
        );
    }
    if message.contains("recursion limit") {
        return format!(
            "invalid YAML: maps and lists are nested more than {MAX_DEPTH} levels deep"
        );
    }
    if message.contains("budget breached") {
        if message.contains("Depth") {
            return format!(
                "invalid YAML: maps and lists are nested more than {MAX_DEPTH} levels deep"
            );
        }
        return format!(
            "invalid YAML: the file holds more than weir's parser reads in a file of {} bytes ({message}); raise it with --max-flow-size",
            max_size()
        );
    }
    format!("invalid YAML: {message}")
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line() as u32,
        col: s.referenced.column() as u32,
        offset: s.referenced.span().byte_offset().unwrap_or(0) as u32,
    }
}

fn wrap(s: Spanned<Kind>) -> Yaml {
    Yaml {
        pos: pos_of(&s),
        kind: s.value,
    }
}

/// Keys may be written as numbers or booleans; weir reads them as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".into()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Kind;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E>(self) -> Result<Kind, E> {
                Ok(Kind::Null)
            }
            fn visit_none<E>(self) -> Result<Kind, E> {
                Ok(Kind::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
                Kind::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
                Ok(Kind::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
                Ok(Kind::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
                // Integers past i64 cannot be Rhai integers; keep them as numbers.
                Ok(i64::try_from(v).map_or(Kind::Float(v as f64), Kind::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
                Ok(Kind::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
                Ok(Kind::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Kind, E> {
                Ok(Kind::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element::<Spanned<Kind>>()? {
                    items.push(wrap(item));
                }
                Ok(Kind::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = a.next_key::<Spanned<KeyText>>()? {
                    let value = a.next_value::<Spanned<Kind>>()?;
                    let key = Key {
                        pos: pos_of(&key),
                        name: key.value.0,
                    };
                    entries.push((key, wrap(value)));
                }
                Ok(Kind::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_know_their_position() {
        let y = parse("id: x\nnodes:\n  - id: a\n    n: 5\n").unwrap();
        let Kind::Map(entries) = &y.kind else {
            panic!("not a map")
        };
        assert_eq!(entries[1].0.name, "nodes");
        assert_eq!((entries[1].0.pos.line, entries[1].0.pos.col), (2, 1));
        let Kind::List(nodes) = &entries[1].1.kind else {
            panic!("not a list")
        };
        let Kind::Map(node) = &nodes[0].kind else {
            panic!("not a map")
        };
        assert_eq!(node[1].1.kind, Kind::Int(5));
        assert_eq!((node[1].1.pos.line, node[1].1.pos.col), (4, 8));
    }

    #[test]
    fn a_syntax_error_has_a_position_and_no_snippet() {
        let e = parse("id: x\nnodes: [1,\n  b: }\n").unwrap_err();
        assert!(e.pos.line >= 2, "{e:?}");
        assert!(e.message.starts_with("invalid YAML: "), "{}", e.message);
        assert!(!e.message.contains('\n'), "{}", e.message);
    }

    #[test]
    fn yes_no_and_single_letters_are_text() {
        let y = parse("n: yes\ny: off\nt: true\n").unwrap();
        let Kind::Map(entries) = &y.kind else {
            panic!("not a map")
        };
        let names: Vec<&str> = entries.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["n", "y", "t"]);
        assert_eq!(entries[0].1.kind, Kind::Str("yes".into()));
        assert_eq!(entries[1].1.kind, Kind::Str("off".into()));
        assert_eq!(entries[2].1.kind, Kind::Bool(true));
    }

    #[test]
    fn a_duplicate_key_is_an_error() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2);
        assert_eq!(
            e.message,
            "invalid YAML: the key `a` appears twice in this map; each key may appear once"
        );
    }

    #[test]
    fn large_files_are_refused_by_size_and_dense_ones_within_it_read() {
        let dense = format!("l: [{}]\n", vec!["1"; 300_000].join(","));
        assert!(dense.len() < DEFAULT_MAX_SIZE);
        assert!(
            parse(&dense).is_ok(),
            "300,000 values in {} bytes",
            dense.len()
        );
        let big = format!("l: [{}]\n", vec!["1"; 600_000].join(","));
        let e = parse(&big).unwrap_err();
        assert!(e.message.contains("at most 1048576 bytes"), "{}", e.message);
        assert!(e.message.contains("--max-flow-size"), "{}", e.message);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let at_limit = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&format!("a: {at_limit}")).is_ok());
        for levels in [MAX_DEPTH + 1, 200, 100_000] {
            let deep = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
            let e = parse(&deep).unwrap_err();
            assert!(
                e.message.contains("nested more than 32 levels"),
                "{}",
                e.message
            );
        }
    }
}
