//! The Rhai environment: one engine, expressions and `${ }` templates compiled
//! at load, evaluated in a sandbox against a scope of `event`, `nodes`,
//! `vars`, `tenant`, `flow`, `run` (and `item`, `index` in loops).

mod chains;
pub mod convert;
pub mod engine;
mod library;
mod scope;
mod template;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rhai::{AST, Dynamic, EvalAltResult, Map, Position, Scope};

pub use chains::Reference;
pub use convert::{to_dynamic, to_json};
pub use scope::ScopeBuilder;
pub use template::Template;

use crate::diag::{Diagnostic, Diags, Pos};
use crate::yaml::{Kind, Yaml};

/// A secret a flow declares whose environment variable is not set (a run
/// resumed on an older version of its flow): using it fails the node, with
/// a message naming the variable.
#[derive(Clone, Debug)]
pub struct MissingSecret {
    pub name: String,
    pub env: String,
}

impl MissingSecret {
    pub fn message(&self) -> String {
        format!(
            "the secret `{}` cannot be used: its environment variable `{}` is not set",
            self.name, self.env
        )
    }
}

/// The names in scope for the expressions of a flow's nodes.
/// (`connection` only in a flow that runs per connection: checked at load.)
pub const FLOW_SCOPE: &[&str] = &[
    "event",
    "nodes",
    "vars",
    "tenant",
    "flow",
    "run",
    "connection",
];
/// The names in scope inside a `for_each` body.
pub const LOOP_SCOPE: &[&str] = &[
    "event",
    "nodes",
    "vars",
    "tenant",
    "flow",
    "run",
    "connection",
    "item",
    "index",
];

/// Where an expression's text starts in its file, so that Rhai's positions
/// (relative to the text) can be reported as file positions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub line: u32,
    pub col: u32,
    /// For block scalars (`|`, `>`): the column lines after the first start at.
    pub block_col: Option<u32>,
}

impl Origin {
    /// The origin of the text of a YAML scalar whose value starts at `pos` in
    /// `source`: past the opening quote of a quoted scalar, on the next line
    /// for a block scalar.
    pub fn of(source: &str, pos: Pos) -> Self {
        let rest = source.get(pos.offset as usize..).unwrap_or("");
        match rest.as_bytes().first() {
            Some(b'"' | b'\'') => Self {
                line: pos.line,
                col: pos.col + 1,
                block_col: None,
            },
            Some(b'|' | b'>') => {
                let body = rest.split_once('\n').map_or("", |(_, body)| body);
                let indent =
                    body.lines()
                        .find(|l| !l.trim().is_empty())
                        .map_or(0, |l| l.len() - l.trim_start().len()) as u32;
                Self {
                    line: pos.line + 1,
                    col: indent + 1,
                    block_col: Some(indent + 1),
                }
            }
            // A plain scalar, or the content of a block scalar (the parser
            // may place it there): later lines start at the same column.
            _ => Self {
                line: pos.line,
                col: pos.col,
                block_col: Some(pos.col),
            },
        }
    }

    /// The file position of a Rhai position inside the text.
    pub fn map(&self, p: Position) -> Pos {
        match (p.line(), p.position()) {
            (Some(1), col) => Pos::new(self.line, self.col + col.unwrap_or(1) as u32 - 1),
            (Some(line), col) => Pos::new(
                self.line + line as u32 - 1,
                self.block_col.unwrap_or(1) + col.unwrap_or(1) as u32 - 1,
            ),
            (None, _) => Pos::new(self.line, self.col),
        }
    }

    /// The origin of the text that follows `prefix`.
    pub fn advance(&self, prefix: &str) -> Self {
        match prefix.rfind('\n') {
            None => Self {
                col: self.col + prefix.chars().count() as u32,
                ..*self
            },
            Some(i) => Self {
                line: self.line + prefix.matches('\n').count() as u32,
                col: self.block_col.unwrap_or(1) + prefix[i + 1..].chars().count() as u32,
                block_col: self.block_col,
            },
        }
    }
}

/// A compiled expression (or a literal value written in YAML).
#[derive(Clone)]
pub struct Expr {
    text: Arc<str>,
    origin: Origin,
    code: Code,
    /// The `nodes.X` and `secrets.X` it reads, checked when the flow loads.
    refs: Arc<[Reference]>,
}

#[derive(Clone)]
enum Code {
    /// An expression: it cannot assign, and Rhai refuses non-pure method
    /// calls on the scope's constants, so it runs on the scope itself.
    Expression(Arc<AST>),
    /// A script may assign to properties of `event` or `nodes`; it runs on a
    /// copy of the scope so that later nodes (and a recomputation after a
    /// restart) see the values as they were.
    Script(Arc<AST>),
    Value(Dynamic),
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.text)
    }
}

/// An evaluation that failed: Rhai's message and where in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptError {
    pub message: String,
    pub pos: Option<Pos>,
}

impl std::error::Error for ScriptError {}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{} (at line {}, column {})", self.message, p.line, p.col),
            None => f.write_str(&self.message),
        }
    }
}

fn compile_scope(names: &[&str]) -> Scope<'static> {
    let mut scope = Scope::new();
    for name in names {
        // Not constants: the optimizer would fold the placeholder values in.
        scope.push(*name, ());
    }
    scope
}

impl Expr {
    /// Compiles an expression. A syntax error, or a name that is not in
    /// scope, is a diagnostic at its position in the file.
    pub fn compile(text: &str, origin: Origin, names: &[&str]) -> Result<Self, Diagnostic> {
        let engine = engine::engine();
        engine::start_compile();
        engine
            .compile_expression_with_scope(&compile_scope(names), text)
            .map(|ast| {
                let refs = chains::references(&ast, origin);
                Self::from_code(text, origin, Code::Expression(Arc::new(ast)), refs)
            })
            .map_err(|e| parse_error(text, origin, names, e))
    }

    /// Compiles a script: statements, `let`, loops and functions; its last
    /// value is its result.
    pub fn compile_script(text: &str, origin: Origin, names: &[&str]) -> Result<Self, Diagnostic> {
        let engine = engine::engine();
        engine::start_compile();
        engine
            .compile_with_scope(&compile_scope(names), text)
            .map(|ast| {
                let refs = chains::references(&ast, origin);
                Self::from_code(text, origin, Code::Script(Arc::new(ast)), refs)
            })
            .map_err(|e| parse_error(text, origin, names, e))
    }

    fn from_code(text: &str, origin: Origin, code: Code, refs: Vec<Reference>) -> Self {
        Self {
            text: text.into(),
            origin,
            code,
            refs: refs.into(),
        }
    }

    /// The `nodes.X` and `secrets.X` it reads.
    pub fn references(&self) -> &[Reference] {
        &self.refs
    }

    /// A constant value (a YAML number, boolean or null).
    pub fn literal(value: Dynamic, origin: Origin) -> Self {
        Self {
            text: value.to_string().into(),
            origin,
            code: Code::Value(value),
            refs: Arc::new([]),
        }
    }

    /// The expression from a YAML value: a string is compiled, any other
    /// scalar is a literal.
    pub fn from_yaml(
        yaml: &Yaml,
        source: &str,
        names: &[&str],
        what: &str,
    ) -> Result<Self, Diagnostic> {
        let origin = Origin::of(source, yaml.pos);
        match &yaml.kind {
            Kind::Str(text) => Self::compile(text, origin, names),
            Kind::Null | Kind::Bool(_) | Kind::Int(_) | Kind::Float(_) => {
                Ok(Self::literal(to_dynamic(&yaml.to_json()), origin))
            }
            Kind::List(_) | Kind::Map(_) => Err(Diagnostic::new(
                yaml.pos,
                format!(
                    "{what} must be an expression (a string), not {}",
                    yaml.describe()
                ),
            )),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluates against `scope`, which is left as it was. `timeout` bounds
    /// the wall-clock time (default: [`engine::LIMITS`]).
    pub fn eval(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Dynamic, ScriptError> {
        match &self.code {
            Code::Value(v) => Ok(v.clone()),
            Code::Expression(ast) => {
                let len = scope.len();
                let result = engine::with_deadline(timeout, || {
                    engine::engine().eval_ast_with_scope::<Dynamic>(scope, ast)
                });
                scope.rewind(len);
                result.map_err(|e| self.runtime_error(*e, ast, scope))
            }
            Code::Script(ast) => {
                let mut copy = scope.clone();
                engine::with_deadline(timeout, || {
                    engine::engine().eval_ast_with_scope::<Dynamic>(&mut copy, ast)
                })
                .map_err(|e| self.runtime_error(*e, ast, scope))
            }
        }
    }

    /// Evaluates to a boolean, or says what it got instead.
    pub fn eval_bool(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<bool, ScriptError> {
        let value = self.eval(scope, timeout)?;
        value.as_bool().map_err(|kind| ScriptError {
            message: format!("`{}` must be true or false, but is {kind}", self.text),
            pos: Some(self.origin.map(Position::new(1, 1))),
        })
    }

    fn runtime_error(
        &self,
        mut error: EvalAltResult,
        ast: &AST,
        scope: &Scope<'static>,
    ) -> ScriptError {
        let position = error.take_position();
        let message = match &error {
            EvalAltResult::ErrorTerminated(token, _) => token.to_string(),
            EvalAltResult::ErrorTooManyOperations(_) => format!(
                "{error}: the expression did more than {} operations",
                engine::LIMITS.operations
            ),
            // A method called on () (`event.body.emial.to_upper()`), or a
            // field read of something that is not a map: say which part of
            // the chain is missing, from the values in scope.
            EvalAltResult::ErrorFunctionNotFound(signature, _) => {
                let on_unit = signature.contains("(()");
                chains::explain(ast, scope, position, on_unit).unwrap_or_else(|| error.to_string())
            }
            EvalAltResult::ErrorDotExpr(..) => {
                chains::explain(ast, scope, position, false).unwrap_or_else(|| error.to_string())
            }
            _ => error.to_string(),
        };
        ScriptError {
            message,
            pos: Some(self.origin.map(position)),
        }
    }
}

/// An expression's text for a one-line message: its first line, shortened.
pub fn excerpt(text: &str) -> String {
    let first = text.trim().lines().next().unwrap_or_default();
    let short: String = first.chars().take(60).collect();
    if short.len() < text.trim().len() {
        format!("{short}…")
    } else {
        short
    }
}

fn parse_error(text: &str, origin: Origin, names: &[&str], e: rhai::ParseError) -> Diagnostic {
    let pos = origin.map(e.position());
    let shown = excerpt(text);
    let message = match e.err_type() {
        rhai::ParseErrorType::VariableUndefined(name) => {
            let hint = if text.trim() == name.as_str() {
                format!("; to write the text itself, quote it: '\"{name}\"'")
            } else {
                String::new()
            };
            format!(
                "unknown variable `{name}` in `{shown}`; in scope: {}{hint}",
                names.join(", ")
            )
        }
        other => format!("invalid expression `{shown}`: {other}"),
    };
    Diagnostic::new(pos, message)
}

/// A value built from expressions: a `mapping` (map or list of expressions,
/// mapped recursively; non-string scalars are literals).
#[derive(Clone, Debug)]
pub enum Mapping {
    Expr(Expr),
    Map(Vec<(String, Mapping)>),
    List(Vec<Mapping>),
}

impl Mapping {
    /// Compiles every expression in `yaml`; problems go to `diags`.
    /// `what` starts each message ("node 'x'").
    pub fn compile(yaml: &Yaml, source: &str, names: &[&str], what: &str, diags: &Diags) -> Self {
        match &yaml.kind {
            Kind::Map(entries) => Self::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), Self::compile(v, source, names, what, diags)))
                    .collect(),
            ),
            Kind::List(items) => Self::List(
                items
                    .iter()
                    .map(|v| Self::compile(v, source, names, what, diags))
                    .collect(),
            ),
            _ => match Expr::from_yaml(yaml, source, names, "a mapping value") {
                Ok(expr) => Self::Expr(expr),
                Err(d) => {
                    diags.error(d.pos, format!("{what}: {}", d.message));
                    Self::Expr(Expr::literal(Dynamic::UNIT, Origin::default()))
                }
            },
        }
    }

    /// Compiles a mapping written as JSON (through the API): each string
    /// is an expression, other scalars are literals. Each problem is
    /// `(pointer, message)`, the pointer under `at`, the message with the
    /// line and column inside the expression.
    pub fn from_json(
        value: &serde_json::Value,
        at: &str,
        names: &[&str],
        problems: &mut Vec<(String, String)>,
    ) -> Self {
        use serde_json::Value;
        let inside = Origin {
            line: 1,
            col: 1,
            block_col: Some(1),
        };
        match value {
            Value::Object(entries) => Self::Map(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let pointer = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                        (k.clone(), Self::from_json(v, &pointer, names, problems))
                    })
                    .collect(),
            ),
            Value::Array(items) => Self::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(n, v)| Self::from_json(v, &format!("{at}/{n}"), names, problems))
                    .collect(),
            ),
            Value::String(text) => match Expr::compile(text, inside, names) {
                Ok(expr) => Self::Expr(expr),
                Err(d) => {
                    problems.push((
                        at.to_owned(),
                        format!(
                            "{} (at line {}, column {})",
                            d.message, d.pos.line, d.pos.col
                        ),
                    ));
                    Self::Expr(Expr::literal(Dynamic::UNIT, inside))
                }
            },
            other => Self::Expr(Expr::literal(convert::to_dynamic(other), inside)),
        }
    }

    /// The `nodes.X` and `secrets.X` its expressions read.
    pub fn references(&self) -> Vec<Reference> {
        match self {
            Self::Expr(e) => e.references().to_vec(),
            Self::Map(entries) => entries.iter().flat_map(|(_, m)| m.references()).collect(),
            Self::List(items) => items.iter().flat_map(Mapping::references).collect(),
        }
    }

    pub fn eval(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Dynamic, ScriptError> {
        Ok(match self {
            Self::Expr(e) => e.eval(scope, timeout)?,
            Self::Map(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    map.insert(k.as_str().into(), v.eval(scope, timeout)?);
                }
                Dynamic::from_map(map)
            }
            Self::List(items) => Dynamic::from_array(
                items
                    .iter()
                    .map(|v| v.eval(scope, timeout))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests;
