//! weir's node and trigger types, their YAML options, and the Rhai
//! environment their expressions run in.
//!
//! - [`node`]: a node's common options and the closed enum of node types
//! - [`functions`]: `map`, `script`, `http`, `deliver`, `log`
//! - [`control`]: `if`, `switch`, `filter`, `for_each`, `delay`, `fail`
//! - [`triggers`]: `webhook`, `cron`, `poll`, `api`
//! - [`script`]: the Rhai engine, expressions, templates, JSON ↔ Dynamic
//! - [`yaml`], [`reader`], [`diag`], [`units`]: reading flow files with
//!   every problem reported at its line and column
//! - [`json`]: limits on the JSON values weir accepts
//! - [`http_client`], [`backoff`]: what outgoing requests and retries share

pub mod backoff;
pub mod control;
pub mod diag;
pub mod functions;
pub mod http_client;
pub mod json;
pub mod node;
pub mod reader;
pub mod schema;
pub mod script;
pub mod triggers;
pub mod units;
pub mod yaml;

pub use diag::{Diagnostic, Diags, Pos};
pub use node::{Link, NodeDef, NodeError, NodeKind, OnError, Outcome, Retry, Route, Taken};
pub use triggers::{TriggerDef, TriggerKind};
