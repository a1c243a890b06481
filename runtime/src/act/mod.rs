//! Actions: typed operations on connected apps, on three layers —
//! universal (the contract), integration (how one app does it), connection
//! (one customer's override) — resolved in that order at call time.

pub mod definition;
pub mod overrides;
pub mod run;
pub use weir_nodes::schema;
