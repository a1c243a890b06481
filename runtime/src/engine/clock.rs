//! Time as an argument: wall-clock instants that follow Tokio's clock, so a
//! test that pauses and advances Tokio time moves `now()` too.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct Clock {
    base_utc: DateTime<Utc>,
    base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock reading the system time now and advancing with Tokio's.
    pub fn new() -> Self {
        Self {
            base_utc: Utc::now(),
            base: Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let elapsed =
            chrono::Duration::from_std(self.base.elapsed()).unwrap_or(chrono::Duration::MAX);
        self.base_utc
            .checked_add_signed(elapsed)
            .unwrap_or(self.base_utc)
    }

    /// How long from now until `at` (zero if it has passed).
    pub fn until(&self, at: DateTime<Utc>) -> Duration {
        (at - self.now()).to_std().unwrap_or(Duration::ZERO)
    }

    pub async fn sleep_until(&self, at: DateTime<Utc>) {
        tokio::time::sleep(self.until(at)).await;
    }
}
