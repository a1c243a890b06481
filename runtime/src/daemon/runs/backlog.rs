//! The backlog: unfinished runs held in memory — driven, waiting to be, or
//! queued behind their concurrency key. Each holds a [`BacklogPermit`]
//! that moves with it (into its task, or its queue entry) and gives its
//! place back when dropped, so the count is always the set it describes.
//! Parked runs (only timers left) are on disk alone and hold none.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Backlog {
    held: AtomicUsize,
    /// Past this many, new events are refused.
    max: usize,
}

/// One run's place in the [`Backlog`].
pub struct BacklogPermit(Arc<Backlog>);

impl Backlog {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            max,
        })
    }

    /// Places held.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A place for a new event's run, unless the backlog is full: then
    /// how many runs it holds.
    pub fn try_reserve(self: &Arc<Self>) -> Result<BacklogPermit, usize> {
        let held = self.held.fetch_add(1, Ordering::Relaxed);
        let permit = BacklogPermit(self.clone());
        if held >= self.max {
            return Err(held);
        }
        Ok(permit)
    }

    /// A place for a run weir already accepted (resumed, woken, retried,
    /// promoted from its queue): never refused.
    pub fn reserve(self: &Arc<Self>) -> BacklogPermit {
        self.held.fetch_add(1, Ordering::Relaxed);
        BacklogPermit(self.clone())
    }
}

impl Drop for BacklogPermit {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_come_back_when_permits_drop() {
        let backlog = Backlog::new(2);
        let a = backlog.try_reserve().ok();
        let b = backlog.try_reserve().ok();
        assert!(a.is_some() && b.is_some());
        assert_eq!(backlog.try_reserve().err(), Some(2));
        assert_eq!(backlog.held(), 2, "a refused reservation holds nothing");
        let forced = backlog.reserve();
        assert_eq!(backlog.held(), 3);
        drop((a, forced));
        assert_eq!(backlog.held(), 1);
        assert!(backlog.try_reserve().is_ok());
        drop(b);
        assert_eq!(backlog.held(), 0);
    }
}
