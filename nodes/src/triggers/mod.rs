//! Triggers: what starts a run. This module reads their options and builds
//! the event a trigger hands to its run.

pub mod api;
pub mod cron;
pub mod poll;
pub mod verify;
pub mod webhook;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::diag::{Diags, Pos};
use crate::reader::{Options, valid_id};
use crate::yaml::Yaml;

/// Names a webhook's `dedupe` expression may use.
pub const EVENT_SCOPE: &[&str] = &["event", "vars", "tenant", "flow"];

#[derive(Debug)]
pub struct TriggerDef {
    pub id: String,
    pub pos: Pos,
    pub kind: TriggerKind,
    /// The `secrets.X` its expressions read (a poll's request), checked
    /// once the whole flow is read.
    pub references: Vec<crate::script::Reference>,
}

#[derive(Debug)]
pub enum TriggerKind {
    Webhook(webhook::Webhook),
    Cron(cron::Cron),
    Poll(poll::Poll),
    Api(api::Api),
}

pub const TRIGGER_TYPES: &[&str] = &["webhook", "cron", "poll", "api"];

impl TriggerKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Cron(_) => "cron",
            Self::Poll(_) => "poll",
            Self::Api(_) => "api",
        }
    }
}

/// Reads one trigger.
pub fn read_trigger(yaml: &Yaml, source: &str, diags: &Diags) -> Option<TriggerDef> {
    let mark = diags.references_mark();
    let trigger = read_trigger_options(yaml, source, diags);
    let references = diags.take_references(mark);
    trigger.map(|t| TriggerDef { references, ..t })
}

fn read_trigger_options(yaml: &Yaml, source: &str, diags: &Diags) -> Option<TriggerDef> {
    let mut o = Options::new(yaml, "trigger", source, diags);
    let id = match o.required_str("id") {
        Some((id, pos)) => {
            if !valid_id(id) {
                o.error(
                    pos,
                    format!("trigger id `{id}` must match [a-z0-9_-]{{1,64}}"),
                );
            }
            id.to_owned()
        }
        None => String::new(),
    };
    if !id.is_empty() {
        o.what = format!("trigger '{id}'");
    }
    let (type_, type_pos) = o.required_str("type")?;
    let kind = match type_ {
        "webhook" => webhook::Webhook::build(&mut o).map(TriggerKind::Webhook),
        "cron" => cron::Cron::build(&mut o).map(TriggerKind::Cron),
        "poll" => poll::Poll::build(&mut o).map(TriggerKind::Poll),
        "api" => api::Api::build(&mut o).map(TriggerKind::Api),
        other => {
            let hint = crate::reader::closest(other, TRIGGER_TYPES)
                .map(|t| format!("did you mean `{t}`? "))
                .unwrap_or_default();
            o.error(
                type_pos,
                format!(
                    "unknown trigger type `{other}`; {hint}trigger types are: {}",
                    TRIGGER_TYPES.join(", ")
                ),
            );
            return None;
        }
    };
    o.finish();
    Some(TriggerDef {
        id,
        pos: yaml.pos,
        kind: kind?,
        references: Vec::new(),
    })
}

/// The fields every event has: `type`, `id`, `trigger`, `received_at`.
pub fn event_base(
    type_: &str,
    id: &str,
    trigger: &str,
    received_at: DateTime<Utc>,
) -> serde_json::Map<String, Value> {
    let mut event = serde_json::Map::new();
    event.insert("type".into(), json!(type_));
    event.insert("id".into(), json!(id));
    event.insert("trigger".into(), json!(trigger));
    event.insert(
        "received_at".into(),
        json!(received_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
    );
    event
}
