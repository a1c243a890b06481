//! Control nodes: they route, wait, repeat or stop.

pub mod delay;
pub mod fail;
pub mod filter;
pub mod for_each;
pub mod if_;
pub mod switch;
