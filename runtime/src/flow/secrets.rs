//! `secrets:` — values a flow's `http` nodes and poll requests need (API
//! tokens, keys) that must not be written into the flow: each names an
//! environment variable, read when the flow loads. Templates and bodies of
//! requests read them as `secrets.NAME`; no other expression can. Wherever
//! weir would record, log or show a text that contains one (a node's
//! output or error, a run's error, a log line), the value is replaced by
//! `[secrets.NAME]`.

use std::borrow::Cow;
use std::fmt;

use rhai::{Dynamic, Map};
use serde_json::Value;
use weir_nodes::Diags;
use weir_nodes::reader::Options;
use weir_nodes::script::MissingSecret;
use weir_nodes::yaml::{Kind, Yaml};

/// One declared secret.
struct Secret {
    name: String,
    env: String,
    /// The variable's value; `None` if it is not set (allowed only when a
    /// stored flow version is read back for a run that resumes).
    value: Option<String>,
}

/// A flow's secrets. Their `Debug` shows names, never values.
#[derive(Default)]
pub struct Secrets {
    entries: Vec<Secret>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|s| &s.name))
            .finish()
    }
}

impl Secrets {
    /// Reads `secrets: {NAME: {env: VAR}}`. With `require_env`, a variable
    /// that is not set (or is empty) is a load error at its name.
    pub fn read(value: &Yaml, source: &str, diags: &Diags, require_env: bool) -> Self {
        let mut secrets = Self::default();
        let Kind::Map(entries) = &value.kind else {
            diags.error(
                value.pos,
                format!(
                    "`secrets` must be a map of `NAME: {{env: VARIABLE}}`, not {}",
                    value.describe()
                ),
            );
            return secrets;
        };
        for (key, spec) in entries {
            let name = &key.name;
            if !valid_name(name) {
                diags.error(
                    key.pos,
                    format!("secret name `{name}` must match [a-z0-9_]{{1,64}} (it is read as `secrets.{name}`)"),
                );
                continue;
            }
            let mut o = Options::new(spec, format!("secret '{name}'"), source, diags);
            let Some((env, env_pos)) = o.required_str("env") else {
                o.finish();
                continue;
            };
            o.finish();
            let value = match std::env::var(env) {
                Ok(v) if !v.is_empty() => Some(v),
                Ok(_) if require_env => {
                    diags.error(
                        env_pos,
                        format!(
                            "secret '{name}': the environment variable `{env}` is set but empty"
                        ),
                    );
                    None
                }
                Err(std::env::VarError::NotUnicode(_)) if require_env => {
                    diags.error(
                        env_pos,
                        format!(
                            "secret '{name}': the environment variable `{env}` is not valid UTF-8"
                        ),
                    );
                    None
                }
                Err(_) if require_env => {
                    diags.error(
                        env_pos,
                        format!("secret '{name}': the environment variable `{env}` is not set; set it to the secret's value before weir starts"),
                    );
                    None
                }
                _ => None,
            };
            secrets.entries.push(Secret {
                name: name.clone(),
                env: env.to_owned(),
                value,
            });
        }
        secrets
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|s| s.name.as_str()).collect()
    }

    /// `secrets` as expressions read it: each name to its value (or to a
    /// [`MissingSecret`], which fails the node that uses it).
    pub fn scope_value(&self) -> Dynamic {
        let mut map = Map::new();
        for s in &self.entries {
            let value = match &s.value {
                Some(v) => Dynamic::from(v.clone()),
                None => Dynamic::from(MissingSecret {
                    name: s.name.clone(),
                    env: s.env.clone(),
                }),
            };
            map.insert(s.name.as_str().into(), value);
        }
        Dynamic::from_map(map)
    }

    /// `text` with every secret's value replaced by `[secrets.NAME]`.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut text = Cow::Borrowed(text);
        for s in &self.entries {
            if let Some(value) = &s.value
                && text.contains(value.as_str())
            {
                text = Cow::Owned(text.replace(value.as_str(), &format!("[secrets.{}]", s.name)));
            }
        }
        text
    }

    /// [`Secrets::redact`] over every string (and key) of a JSON value.
    pub fn redact_value(&self, value: &mut Value) {
        if self.entries.iter().all(|s| s.value.is_none()) {
            return;
        }
        let mut stack = vec![value];
        while let Some(value) = stack.pop() {
            match value {
                Value::String(s) => {
                    if let Cow::Owned(redacted) = self.redact(s) {
                        *s = redacted;
                    }
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(fields) => {
                    let renamed: Vec<(String, String)> = fields
                        .keys()
                        .filter_map(|k| match self.redact(k) {
                            Cow::Owned(r) => Some((k.clone(), r)),
                            Cow::Borrowed(_) => None,
                        })
                        .collect();
                    for (old, new) in renamed {
                        if let Some(v) = fields.remove(&old) {
                            fields.insert(new, v);
                        }
                    }
                    stack.extend(fields.values_mut());
                }
                _ => {}
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secrets(pairs: &[(&str, Option<&str>)]) -> Secrets {
        Secrets {
            entries: pairs
                .iter()
                .map(|(name, value)| Secret {
                    name: (*name).into(),
                    env: name.to_uppercase(),
                    value: value.map(str::to_owned),
                })
                .collect(),
        }
    }

    #[test]
    fn values_are_redacted_in_text_and_json() {
        let s = secrets(&[("token", Some("tok-SECRET-1")), ("unset", None)]);
        assert_eq!(
            s.redact("GET /x?key=tok-SECRET-1 failed"),
            "GET /x?key=[secrets.token] failed"
        );
        assert!(matches!(s.redact("nothing here"), Cow::Borrowed(_)));
        let mut v = json!({"echo": ["Bearer tok-SECRET-1"], "tok-SECRET-1": 1, "n": 2});
        s.redact_value(&mut v);
        assert_eq!(
            v,
            json!({"echo": ["Bearer [secrets.token]"], "[secrets.token]": 1, "n": 2})
        );
        assert_eq!(format!("{s:?}"), r#"["token", "unset"]"#);
    }
}
