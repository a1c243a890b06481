//! weir's runtime: flow loading and validation, the DAG engine that drives
//! runs durably, and the `weir` command.
//!
//! - [`flow`]: a flow file → triggers and a validated DAG
//! - [`engine`]: runs: start, drive node by node with durable commits, resume
//! - [`cli`]: `weir validate`, `weir run`, `weir graph`

pub mod cli;
pub mod daemon;
pub mod engine;
pub mod flow;
pub mod metrics;
pub mod view;
