//! What weir reads off a compiled expression's syntax tree: the property
//! chains it uses (`event.body.email`, `nodes.normalize.email`,
//! `secrets.crm_token`). At load, the names after `nodes.` and `secrets.`
//! are checked against the flow; at run time, a failure on a chain is
//! explained by walking it over the values in scope ("`event.body` has no
//! field `emial`; did you mean `email`?").

use rhai::{AST, ASTNode, Dynamic, Expr, ImmutableString, Map, Position, Scope};

use super::Origin;
use crate::diag::Pos;

/// A `root.name` the expression reads, where `root` is `nodes` or
/// `secrets` (the names weir checks at load).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub root: &'static str,
    pub name: String,
    /// Where `name` is written in the file.
    pub pos: Pos,
}

/// The roots whose names are checked at load.
const CHECKED_ROOTS: &[&str] = &["nodes", "secrets"];

/// `root.a.b.c` as written, up to the first method call (if any).
struct Chain {
    root: ImmutableString,
    steps: Vec<(ImmutableString, Position)>,
    method: Option<(ImmutableString, Position)>,
}

/// Every chain that starts at a variable: `event.body.x`, `nodes["id"]`.
fn chains(ast: &AST) -> Vec<Chain> {
    let mut out = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Expr(Expr::Dot(b, _, _) | Expr::Index(b, _, _))) = path.last()
            && let Expr::Variable(v, _, _) = &b.lhs
        {
            let mut chain = Chain {
                root: v.1.clone(),
                steps: Vec::new(),
                method: None,
            };
            chain.method = flatten(&b.rhs, &mut chain.steps);
            out.push(chain);
        }
        true
    });
    out
}

/// Collects the property names of a chain's right side; answers the method
/// call that ends it, if one does.
fn flatten(
    e: &Expr,
    steps: &mut Vec<(ImmutableString, Position)>,
) -> Option<(ImmutableString, Position)> {
    match e {
        Expr::Property(p, pos) => {
            steps.push((p.2.clone(), *pos));
            None
        }
        Expr::StringConstant(s, pos) => {
            steps.push((s.clone(), *pos));
            None
        }
        Expr::MethodCall(call, pos) => Some((call.name.clone(), *pos)),
        Expr::Dot(b, _, _) | Expr::Index(b, _, _) => {
            flatten(&b.lhs, steps).or_else(|| flatten(&b.rhs, steps))
        }
        _ => None,
    }
}

/// The `nodes.X` and `secrets.X` an expression reads, and each use of
/// `connection` (in scope only in flows that run per connection; its
/// `name` is empty).
pub(super) fn references(ast: &AST, origin: Origin) -> Vec<Reference> {
    let mut connection = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Expr(Expr::Variable(v, _, pos))) = path.last()
            && v.1 == "connection"
        {
            connection.push(Reference {
                root: "connection",
                name: String::new(),
                pos: origin.map(*pos),
            });
        }
        true
    });
    chains(ast)
        .into_iter()
        .filter_map(|chain| {
            let root = CHECKED_ROOTS.iter().find(|r| **r == chain.root.as_str())?;
            let (name, pos) = chain.steps.first()?;
            Some(Reference {
                root,
                name: name.to_string(),
                pos: origin.map(*pos),
            })
        })
        .chain(connection)
        .collect()
}

/// What a value is, for messages.
fn describe(value: &Dynamic) -> &'static str {
    if value.is_unit() {
        "() (missing or null)"
    } else if value.is_string() {
        "text"
    } else if value.is_array() {
        "a list"
    } else if value.is_int() || value.is_float() {
        "a number"
    } else if value.is_bool() {
        "true or false"
    } else if value.is_map() {
        "a map"
    } else {
        "a value"
    }
}

/// Why the chain that failed at `at` failed, read off the values in
/// `scope`: which field is missing (and what its parent has), or which
/// part is not a map. `None` if the failure is not on a chain weir can
/// walk.
pub(super) fn explain(
    ast: &AST,
    scope: &Scope<'static>,
    at: Position,
    method_on_unit: bool,
) -> Option<String> {
    for chain in chains(ast) {
        let reason = walk(&chain, scope, at, method_on_unit);
        let Some(reason) = reason else { continue };
        return Some(match &chain.method {
            Some((method, pos)) if method_on_unit && *pos == at => format!(
                "{reason}; so `.{method}()` cannot be called on it (give a default with `??`, as in `(x ?? \"\").{method}()`)"
            ),
            _ => reason,
        });
    }
    None
}

fn walk(
    chain: &Chain,
    scope: &Scope<'static>,
    at: Position,
    method_on_unit: bool,
) -> Option<String> {
    let failing_step = chain.steps.iter().position(|(_, pos)| *pos == at);
    let failing_method = chain.method.as_ref().is_some_and(|(_, pos)| *pos == at);
    if failing_step.is_none() && !(failing_method && method_on_unit) {
        return None;
    }
    let mut value = scope.get(chain.root.as_str())?.clone();
    let mut path = chain.root.to_string();
    let upto = failing_step.unwrap_or(chain.steps.len());
    for (name, _) in &chain.steps[..upto] {
        let next = match value.read_lock::<Map>() {
            Some(map) => match map.get(name.as_str()) {
                Some(v) => v.clone(),
                None => {
                    let keys: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
                    let hint = match crate::reader::closest(name, &keys) {
                        Some(near) => format!("; did you mean `{near}`?"),
                        None if keys.is_empty() => format!("; `{path}` is empty"),
                        None => format!("; it has {}", list(&keys)),
                    };
                    return Some(format!(
                        "`{path}.{name}` is missing: `{path}` has no field `{name}`{hint}"
                    ));
                }
            },
            None => {
                return Some(format!(
                    "`{path}` is {}, not a map, so it has no field `{name}`",
                    describe(&value)
                ));
            }
        };
        value = next;
        path = format!("{path}.{name}");
    }
    if let Some(i) = failing_step {
        let name = &chain.steps[i].0;
        return Some(format!(
            "`{path}` is {}, not a map, so it has no field `{name}`",
            describe(&value)
        ));
    }
    if value.is_unit() {
        return Some(format!("`{path}` is null"));
    }
    None
}

fn list(keys: &[&str]) -> String {
    let mut keys: Vec<String> = keys.iter().take(8).map(|k| format!("`{k}`")).collect();
    if keys.len() == 8 {
        keys.push("…".into());
    }
    keys.join(", ")
}
