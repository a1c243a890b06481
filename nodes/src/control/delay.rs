//! `delay`: a durable timer. The engine records when it wakes before it
//! sleeps, so a restart wakes it at the same time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rhai::Scope;

use crate::node::NodeError;
use crate::reader::Options;
use crate::script::Expr;

#[derive(Debug)]
pub enum Delay {
    /// `for: 10m`: wait this long from when the node starts.
    For(Duration),
    /// `until: expr`: wait until the RFC 3339 time the expression yields.
    Until(Expr),
}

impl Delay {
    pub fn build(o: &mut Options, names: &[&str]) -> Option<Self> {
        let for_ = o.duration("for");
        let until = o.expr("until", names);
        match (for_, until) {
            (Some(d), None) => Some(Self::For(d)),
            (None, Some(e)) => Some(Self::Until(e)),
            (Some(_), Some(_)) => {
                o.error(o.pos, "a `delay` takes `for` or `until`, not both");
                None
            }
            (None, None) => {
                if o.key_pos("for").is_none() && o.key_pos("until").is_none() {
                    o.error(
                        o.pos,
                        "a `delay` needs `for` (like 10m) or `until` (an RFC 3339 time)",
                    );
                }
                None
            }
        }
    }

    /// When the timer started `now` fires.
    pub fn wake_at(
        &self,
        now: DateTime<Utc>,
        scope: &mut Scope<'static>,
        timeout: Option<Duration>,
    ) -> Result<DateTime<Utc>, NodeError> {
        match self {
            Self::For(d) => chrono::Duration::from_std(*d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| NodeError::Invalid(format!("a delay of {d:?} is out of range"))),
            Self::Until(expr) => {
                let value = expr.eval(scope, timeout)?;
                let text = value.clone().into_immutable_string().map_err(|t| {
                    NodeError::Invalid(format!("`until` must be an RFC 3339 time as text, not {t}"))
                })?;
                DateTime::parse_from_rfc3339(&text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        NodeError::Invalid(format!(
                            "`until`: `{text}` is not an RFC 3339 time: {e}"
                        ))
                    })
            }
        }
    }
}
