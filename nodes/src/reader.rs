//! Reading the options of a flow, trigger or node from its YAML map.
//!
//! Written by hand rather than with serde so that every problem of a file is
//! reported at once, each at its own line and column: serde stops at the
//! first error. Each accessor remembers the key it was asked for; `finish`
//! then reports every other key as unknown, listing the known ones.

use std::time::Duration;

use crate::diag::{Diags, Pos};
use crate::script::{Expr, Mapping, Origin, Template};
use crate::units;
use crate::yaml::{Key, Kind, Yaml};

/// The options of one YAML map, read key by key.
pub struct Options<'a> {
    entries: &'a [(Key, Yaml)],
    used: Vec<bool>,
    known: Vec<&'static str>,
    /// Where the map starts, for "missing option" messages.
    pub pos: Pos,
    /// What the map is, for messages: "node 'publish'".
    pub what: String,
    /// The file's text, to place expressions exactly.
    pub source: &'a str,
    pub diags: &'a Diags,
}

impl<'a> Options<'a> {
    /// Reads `yaml`, which must be a map; if it is not, reports it and
    /// returns options with no keys.
    pub fn new(yaml: &'a Yaml, what: impl Into<String>, source: &'a str, diags: &'a Diags) -> Self {
        let what = what.into();
        let entries: &[(Key, Yaml)] = match &yaml.kind {
            Kind::Map(entries) => entries,
            _ => {
                diags.error(
                    yaml.pos,
                    format!("{what} must be a map of options, not {}", yaml.describe()),
                );
                &[]
            }
        };
        Self {
            entries,
            used: vec![false; entries.len()],
            known: Vec::new(),
            pos: yaml.pos,
            what,
            source,
            diags,
        }
    }

    pub fn error(&self, pos: Pos, message: impl AsRef<str>) {
        self.diags
            .error(pos, format!("{}: {}", self.what, message.as_ref()));
    }

    /// The value of `key`, if present.
    pub fn get(&mut self, key: &'static str) -> Option<&'a Yaml> {
        self.known.push(key);
        let i = self.entries.iter().position(|(k, _)| k.name == key)?;
        self.used[i] = true;
        Some(&self.entries[i].1)
    }

    /// The position of `key` itself, if present.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, _)| k.pos)
    }

    /// The value of `key`, reporting it when missing.
    pub fn required(&mut self, key: &'static str) -> Option<&'a Yaml> {
        let value = self.get(key);
        if value.is_none() {
            self.error(self.pos, format!("missing option `{key}`"));
        }
        value
    }

    fn expect_str(&self, key: &str, value: &'a Yaml) -> Option<&'a str> {
        match &value.kind {
            Kind::Str(s) => Some(s),
            _ => {
                self.error(
                    value.pos,
                    format!("`{key}` must be a string, not {}", value.describe()),
                );
                None
            }
        }
    }

    pub fn str(&mut self, key: &'static str) -> Option<(&'a str, Pos)> {
        let value = self.get(key)?;
        self.expect_str(key, value).map(|s| (s, value.pos))
    }

    pub fn required_str(&mut self, key: &'static str) -> Option<(&'a str, Pos)> {
        let value = self.required(key)?;
        self.expect_str(key, value).map(|s| (s, value.pos))
    }

    pub fn bool(&mut self, key: &'static str) -> Option<bool> {
        let value = self.get(key)?;
        match value.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.error(
                    value.pos,
                    format!("`{key}` must be true or false, not {}", value.describe()),
                );
                None
            }
        }
    }

    /// A non-negative integer.
    pub fn uint(&mut self, key: &'static str) -> Option<u64> {
        let value = self.get(key)?;
        match value.kind {
            Kind::Int(i) if i >= 0 => Some(i as u64),
            _ => {
                self.error(
                    value.pos,
                    format!(
                        "`{key}` must be a whole number ≥ 0, not {}",
                        value.describe()
                    ),
                );
                None
            }
        }
    }

    pub fn duration(&mut self, key: &'static str) -> Option<Duration> {
        let value = self.get(key)?;
        let text = match &value.kind {
            Kind::Str(s) => s.as_str(),
            _ => {
                self.error(
                    value.pos,
                    format!(
                        "`{key}` must be a duration like 30s, not {}",
                        value.describe()
                    ),
                );
                return None;
            }
        };
        units::parse_duration(text)
            .map_err(|e| self.error(value.pos, format!("`{key}`: {e}")))
            .ok()
    }

    pub fn size(&mut self, key: &'static str) -> Option<u64> {
        let value = self.get(key)?;
        let parsed = match &value.kind {
            Kind::Int(i) if *i >= 0 => Ok(*i as u64),
            Kind::Str(s) => units::parse_size(s),
            _ => Err(format!(
                "must be a size like 1MiB, not {}",
                value.describe()
            )),
        };
        parsed
            .map_err(|e| self.error(value.pos, format!("`{key}`: {e}")))
            .ok()
    }

    /// A list of strings; a single string is a list of one.
    pub fn str_list(&mut self, key: &'static str) -> Option<Vec<(&'a str, Pos)>> {
        let value = self.get(key)?;
        match &value.kind {
            Kind::Str(s) => Some(vec![(s.as_str(), value.pos)]),
            Kind::List(items) => Some(
                items
                    .iter()
                    .filter_map(|item| self.expect_str(key, item).map(|s| (s, item.pos)))
                    .collect(),
            ),
            _ => {
                self.error(
                    value.pos,
                    format!(
                        "`{key}` must be a string or a list of strings, not {}",
                        value.describe()
                    ),
                );
                None
            }
        }
    }

    /// An expression (a string compiled with `names` in scope; other scalars
    /// are literals).
    pub fn expr(&mut self, key: &'static str, names: &[&str]) -> Option<Expr> {
        let value = self.get(key)?;
        self.compile_expr(key, value, names)
    }

    pub fn required_expr(&mut self, key: &'static str, names: &[&str]) -> Option<Expr> {
        let value = self.required(key)?;
        self.compile_expr(key, value, names)
    }

    pub fn compile_expr(&self, key: &str, value: &Yaml, names: &[&str]) -> Option<Expr> {
        Expr::from_yaml(value, self.source, names, &format!("`{key}`"))
            .map_err(|d| self.error(d.pos, d.message))
            .inspect(|e| self.diags.references(e.references()))
            .ok()
    }

    /// A Rhai script (statements allowed).
    pub fn required_script(&mut self, key: &'static str, names: &[&str]) -> Option<Expr> {
        let value = self.required(key)?;
        let text = self.expect_str(key, value)?;
        Expr::compile_script(text, Origin::of(self.source, value.pos), names)
            .map_err(|d| self.error(d.pos, d.message))
            .inspect(|e| self.diags.references(e.references()))
            .ok()
    }

    pub fn template(&mut self, key: &'static str, names: &[&str]) -> Option<Template> {
        let value = self.get(key)?;
        self.compile_template(key, value, names)
    }

    pub fn required_template(&mut self, key: &'static str, names: &[&str]) -> Option<Template> {
        let value = self.required(key)?;
        self.compile_template(key, value, names)
    }

    pub fn compile_template(&self, key: &str, value: &Yaml, names: &[&str]) -> Option<Template> {
        let text = match &value.kind {
            Kind::Str(s) => s.clone(),
            Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => value.to_json().to_string(),
            _ => {
                self.error(
                    value.pos,
                    format!("`{key}` must be text, not {}", value.describe()),
                );
                return None;
            }
        };
        Template::compile(&text, Origin::of(self.source, value.pos), names)
            .map_err(|errors| {
                for d in errors {
                    self.error(d.pos, d.message);
                }
            })
            .inspect(|t| self.diags.references(&t.references()))
            .ok()
    }

    /// A map of templates (`headers`, `query`).
    pub fn template_map(&mut self, key: &'static str, names: &[&str]) -> Vec<(String, Template)> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let Kind::Map(entries) = &value.kind else {
            self.error(
                value.pos,
                format!("`{key}` must be a map, not {}", value.describe()),
            );
            return Vec::new();
        };
        entries
            .iter()
            .filter_map(|(k, v)| {
                self.compile_template(&format!("{key}.{}", k.name), v, names)
                    .map(|t| (k.name.clone(), t))
            })
            .collect()
    }

    pub fn mapping(&mut self, key: &'static str, names: &[&str]) -> Option<Mapping> {
        let value = self.required(key)?;
        if !matches!(value.kind, Kind::Map(_) | Kind::List(_)) {
            self.error(
                value.pos,
                format!(
                    "`{key}` must be a map or a list of expressions, not {}",
                    value.describe()
                ),
            );
            return None;
        }
        let mapping = Mapping::compile(value, self.source, names, &self.what, self.diags);
        self.diags.references(&mapping.references());
        Some(mapping)
    }

    /// Reports every key that no accessor asked for.
    pub fn finish(self) {
        for ((key, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let hint = match closest(&key.name, &self.known) {
                Some(near) => format!("; did you mean `{near}`?"),
                None => String::new(),
            };
            let mut known = self.known.clone();
            known.sort_unstable();
            known.dedup();
            self.error(
                key.pos,
                format!(
                    "unknown option `{}`{hint} (known: {})",
                    key.name,
                    known.join(", ")
                ),
            );
        }
    }
}

/// The known name closest to `name`, if it is close enough to be a typo.
pub fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// [`valid_id`] as a regular expression (for schemas).
pub const ID_PATTERN: &str = "^[a-z0-9_-]{1,64}$";

/// Checks an id against `[a-z0-9_-]{1,64}`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_option() {
        assert_eq!(closest("mapping", &["mapping", "next"]), Some("mapping"));
        assert_eq!(closest("maping", &["mapping", "next"]), Some("mapping"));
        assert_eq!(
            closest("condtion", &["condition", "then"]),
            Some("condition")
        );
        assert_eq!(closest("zzz", &["mapping", "next"]), None);
    }

    #[test]
    fn ids() {
        assert!(valid_id("contact-sync_2"));
        assert!(!valid_id("Contact"));
        assert!(!valid_id(""));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(!valid_id("a.b"));
    }
}
