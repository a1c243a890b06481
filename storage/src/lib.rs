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
    ActionOverride, ActiveRun, ConnectionRecord, ConnectionRequestRecord, ConnectionState,
    DedupeRecord, DeliveryFormat, DeliveryRecord, DeliveryStatus, DeliveryTarget, FlowSnapshot,
    IdempotencyRecord, Listed, MAX_VALUE_DEPTH, NodeRecord, NodeStatus, RequestStatus, RunRecord,
    RunStatus, Sealed, SeenRecord, TargetKind, TriggerKey, Unreadable,
};
pub use sled_store::SledStore;
pub use store::{Commit, Expired, Store, TenantCounts, Ticket, Write};

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
    #[error("storage error: {}", sled_message(.0))]
    Sled(#[from] sled::Error),
    #[error("a stored record does not decode: {0}")]
    Decode(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("the store is closed")]
    Closed,
    /// A write or flush failed before: sled keeps failing after one (its
    /// error is latched), so nothing more is written until weir restarts.
    #[error("storage failed earlier ({0}); nothing more is written until weir restarts")]
    Failed(String),
}

/// A sled error as a person reads it (sled wraps some I/O errors with their
/// debug text).
fn sled_message(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) if io.raw_os_error().is_some() => io.to_string(),
        sled::Error::Io(io) if io.kind() != std::io::ErrorKind::Other => {
            let kind = io.kind();
            match kind {
                std::io::ErrorKind::StorageFull => "no space left on the device".into(),
                _ => kind.to_string(),
            }
        }
        other => other.to_string(),
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Decode(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
