//! Templates: literal text in which each `${ expr }` is replaced by the
//! expression's value (`$${` writes a literal `${`).

use std::time::Duration;

use rhai::{Dynamic, ImmutableString, Scope};

use super::{Expr, Origin, ScriptError, convert};
use crate::diag::Diagnostic;

#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug)]
enum Part {
    Text(String),
    Expr(Expr),
}

impl Template {
    /// Splits `text` into literal parts and compiled expressions.
    pub fn compile(text: &str, origin: Origin, names: &[&str]) -> Result<Self, Vec<Diagnostic>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut consumed = 0;
        while let Some(start) = rest.find("${") {
            if rest[..start].ends_with('$') {
                literal.push_str(&rest[..start - 1]);
                literal.push_str("${");
                consumed += start + 2;
                rest = &rest[start + 2..];
                continue;
            }
            literal.push_str(&rest[..start]);
            let body_start = consumed + start + 2;
            let Some(len) = closing_brace(&rest[start + 2..]) else {
                errors.push(Diagnostic::new(
                    origin
                        .advance(&text[..consumed + start])
                        .map(rhai::Position::new(1, 1)),
                    format!("unclosed `${{` in template `{text}`; close it with `}}`"),
                ));
                return Err(errors);
            };
            let body = &rest[start + 2..start + 2 + len];
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            let at = origin.advance(&text[..body_start]);
            if body.trim().is_empty() {
                errors.push(Diagnostic::new(
                    at.map(rhai::Position::new(1, 1)),
                    format!("empty `${{}}` in template `{text}`"),
                ));
            } else {
                match Expr::compile(body, at, names) {
                    Ok(expr) => parts.push(Part::Expr(expr)),
                    Err(e) => errors.push(e),
                }
            }
            consumed = body_start + len + 1;
            rest = &text[consumed..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if errors.is_empty() {
            Ok(Self { parts })
        } else {
            Err(errors)
        }
    }

    /// A template of plain text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            parts: vec![Part::Text(text.into())],
        }
    }

    /// The `nodes.X` and `secrets.X` its expressions read.
    pub fn references(&self) -> Vec<super::Reference> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Expr(e) => Some(e.references()),
                Part::Text(_) => None,
            })
            .flatten()
            .cloned()
            .collect()
    }

    /// The text, if the template has no expressions.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Renders the template. Strings are inserted as they are, `()` as
    /// nothing, anything else as JSON.
    pub fn render(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<String, ScriptError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr(e) => {
                    let value = e.eval(scope, timeout)?;
                    push_value(&mut out, &value).map_err(|message| ScriptError {
                        message: format!("`${{{}}}`: {message}", e.text()),
                        pos: None,
                    })?;
                }
            }
        }
        Ok(out)
    }
}

fn push_value(out: &mut String, value: &Dynamic) -> Result<(), String> {
    if value.is_unit() {
        return Ok(());
    }
    if let Some(s) = value.read_lock::<ImmutableString>() {
        out.push_str(&s);
        return Ok(());
    }
    out.push_str(&convert::to_json(value)?.to_string());
    Ok(())
}

/// The length of an expression up to the `}` that closes its `${`, skipping
/// nested braces and string literals.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            '"' | '\'' | '`' => {
                let quote = c;
                loop {
                    match chars.next() {
                        Some((_, '\\')) => {
                            chars.next();
                        }
                        Some((_, c)) if c == quote => break,
                        Some(_) => {}
                        None => return None,
                    }
                }
            }
            _ => {}
        }
    }
    None
}
