//! `switch`: routes on the first case whose `when` holds.

use std::time::Duration;

use rhai::{Dynamic, Map, Scope};
use serde_json::Value;

use crate::node::{Link, NodeError, Outcome, Route, Taken, read_links};
use crate::reader::Options;
use crate::script::Expr;
use crate::yaml::Kind;

#[derive(Debug)]
pub struct Switch {
    /// Tried in order; the first whose `when` is true routes to its `next`.
    pub cases: Vec<Case>,
    /// Where to go when no case matches (a node id or a list; optional).
    pub default: Vec<Link>,
}

#[derive(Debug)]
pub struct Case {
    pub when: Expr,
    pub next: Vec<Link>,
}

impl Switch {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        let mut cases = Vec::new();
        if let Some(value) = o.required("cases") {
            match &value.kind {
                Kind::List(items) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        let mut c =
                            Options::new(item, format!("{}: case {i}", o.what), o.source, o.diags);
                        let when = c.required_expr("when", names);
                        let next = c
                            .required("next")
                            .map(|v| read_links(&c, "next", v))
                            .unwrap_or_default();
                        c.finish();
                        if let Some(when) = when {
                            cases.push(Case { when, next });
                        }
                    }
                }
                _ => o.error(
                    value.pos,
                    "`cases` must be a non-empty list of {when, next}",
                ),
            }
        }
        let default = o
            .get("default")
            .map(|v| read_links(o, "default", v))
            .unwrap_or_default();
        Some(Self { cases, default })
    }

    pub fn routes(&self) -> Vec<(Route, &[Link])> {
        let mut routes: Vec<(Route, &[Link])> = self
            .cases
            .iter()
            .enumerate()
            .map(|(i, c)| (Route::Case(i), &c.next[..]))
            .collect();
        routes.push((Route::Default, &self.default[..]));
        routes
    }

    pub fn run(
        &self,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<Outcome, NodeError> {
        let mut case = Dynamic::from("default");
        for (i, c) in self.cases.iter().enumerate() {
            if c.when.eval_bool(scope, timeout)? {
                case = Dynamic::from_int(i as i64);
                break;
            }
        }
        let mut output = Map::new();
        output.insert("case".into(), case);
        Ok(Outcome::Output(Dynamic::from_map(output)))
    }

    pub fn taken(output: &Value) -> Taken {
        match output.get("case").and_then(Value::as_u64) {
            Some(i) => Taken::Also(Route::Case(i as usize)),
            None => Taken::Also(Route::Default),
        }
    }
}
