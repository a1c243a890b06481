//! A [`Scope`] is whose data a call may touch. Handlers reach runs through
//! it: a tenant's scope reads by the tenant-partitioned keys, so it cannot
//! even ask for another tenant's run (which then does not exist for it,
//! and answers 404 as any missing one).

use weir_storage::{Listed, Result, RunRecord, Store};

/// Whose data a call may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's.
    Tenant(String),
    /// Every tenant's (an admin that named none).
    All,
}

impl Scope {
    /// The tenant, if the scope is one tenant's.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Tenant(t) => Some(t),
            Scope::All => None,
        }
    }

    /// Whether data of `tenant` is within the scope.
    pub fn sees(&self, tenant: &str) -> bool {
        match self {
            Scope::Tenant(t) => t == tenant,
            Scope::All => true,
        }
    }

    /// A run by id, if the scope holds it. A record that cannot be read is
    /// [`weir_storage::Error::Unreadable`].
    pub fn run(&self, store: &dyn Store, id: &str) -> Result<Option<RunRecord>> {
        match self {
            Scope::Tenant(t) => store.run(t, id),
            Scope::All => store.run_by_id(id),
        }
    }

    /// Runs newest first after `after`: at most `limit` that `keep`
    /// accepts, looking at no more than `scan`.
    pub fn runs(
        &self,
        store: &dyn Store,
        after: Option<&str>,
        limit: usize,
        scan: usize,
        keep: &dyn Fn(&Listed) -> bool,
    ) -> Result<Vec<Listed>> {
        match self {
            Scope::Tenant(t) => Ok(store
                .list_runs(t, after, scan)?
                .into_iter()
                .filter(|r| keep(r))
                .take(limit)
                .collect()),
            Scope::All => store.list_all_runs(after, limit, scan, keep),
        }
    }
}
