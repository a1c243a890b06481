//! weir's durable state: runs, node records, flow snapshots and the outbox.
//!
//! It knows nothing of flows: it stores records and applies commits.
//!
//! - [`store`]: the [`Store`] trait the engine uses, [`Commit`] and [`Ticket`]
//! - [`records`]: the records and their statuses (the on-disk format)
//! - [`keys`]: every key, encoded in one place
//! - [`sled_store`]: the sled backend with group commit
//! - [`memory`]: the in-memory model

pub mod keys;
pub mod memory;
pub mod records;
pub mod sled_store;
pub mod store;

pub use memory::MemoryStore;
pub use records::{
    ActiveRun, DedupeRecord, DeliveryRecord, DeliveryStatus, DeliveryTarget, FlowSnapshot, Listed,
    MAX_VALUE_DEPTH, NodeRecord, NodeStatus, RunRecord, RunStatus, SeenRecord, TriggerKey,
    Unreadable,
};
pub use sled_store::SledStore;
pub use store::{Commit, Expired, Store, Ticket, Write};

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error, Clone)]
pub enum Error {
    #[error("cannot open the data directory {path}: {why}")]
    Open {
        path: String,
        /// What went wrong, and what to do about it.
        why: String,
    },
    #[error(
        "{what} is nested more than {MAX_VALUE_DEPTH} levels deep; weir stores at most {MAX_VALUE_DEPTH}"
    )]
    TooDeep { what: &'static str },
    #[error("run {} of tenant {} cannot be read: {}", .0.id, .0.tenant, .0.error)]
    Unreadable(Unreadable),
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("a stored record does not decode: {0}")]
    Decode(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("the store is closed")]
    Closed,
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Decode(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
