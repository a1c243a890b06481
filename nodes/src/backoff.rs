//! Exponential backoff with jitter: the wait after a failed attempt, for
//! node retries, deliveries, broker reconnects and polls alike.

use std::time::Duration;

/// Waits that double after each failure, from `initial` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The wait after the `failures`-th failure in a row (1 for the first),
    /// given a random `jitter` in [0, 1): between half and all of
    /// `initial * 2^(failures-1)`, capped at `max`. A `jitter` of 1 gives
    /// the full wait (no jitter).
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exp = self.initial.as_secs_f64() * 2f64.powi(failures.saturating_sub(1).min(30) as i32);
        let capped = exp.min(self.max.as_secs_f64());
        Duration::from_secs_f64(capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_with_jitter_up_to_the_cap() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(b.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(9, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_secs(10));
        assert_eq!(b.delay(0, 1.0), Duration::from_secs(1));
    }
}
