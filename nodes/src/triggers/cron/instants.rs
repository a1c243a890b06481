//! The instants a cron trigger fires at.
//!
//! The `cron` crate matches local (wall-clock) times; it is asked about them
//! in `Utc`, which stands for "no time zone". Real time is cut into spans of
//! constant UTC offset; within one span instant `t` has local time
//! `t + offset`, so the first matching local time gives the first firing
//! instant, unless a transition (a change of offset) comes first. At a
//! transition, Vixie cron's rules apply:
//!
//! - hour field `*` or a step: nothing special. Local times skipped by a gap
//!   never occur, so they do not fire; local times repeated after a fall-back
//!   occur twice, so they fire twice.
//! - fixed hours: if a local time in the gap matches, the transition instant
//!   itself (the first instant after the gap) fires, once however many do;
//!   local times repeated after a fall-back fire only the first time, so the
//!   instants of the repeat are skipped.
//!
//! chrono-tz lists no transitions, so they are found by comparing offsets a
//! day apart and bisecting to the second: a pair of transitions less than a
//! day apart that cancel out is not seen (tzdb has none in recent decades).
//! In the common case, no transition before the next firing, `next_after`
//! costs one or two crate lookups (two when both day fields are restricted)
//! and two or three offset lookups (binary searches in chrono-tz's table).

use chrono::{DateTime, LocalResult, Offset, TimeZone, Utc};

use super::Cron;

/// Offsets are compared a day apart when looking for transitions.
const DAY: i64 = 86_400;

impl Cron {
    /// The first instant strictly after `after` at which the trigger fires.
    /// `None` when the schedule names no instant after it (the crate stops
    /// at the year 2100).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let at = self.next_after_secs(after.timestamp())?;
        DateTime::from_timestamp(at, 0)
    }

    /// The instants in (from, to], in order, at most `limit` of them (the
    /// earliest ones).
    pub fn fires_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::new();
        let mut after = from;
        while fires.len() < limit {
            match self.next_after(after) {
                Some(at) if at <= to => {
                    fires.push(at);
                    after = at;
                }
                _ => break,
            }
        }
        fires
    }

    /// [`Self::next_after`] in whole Unix seconds (`after` already rounded
    /// down: fires are at whole seconds, so the first candidate is
    /// `after + 1`).
    fn next_after_secs(&self, after: i64) -> Option<i64> {
        // The earliest instant that may fire.
        let mut lo = after.checked_add(1)?;
        // Transitions are looked for after this instant...
        let mut from = after;
        // ...whose offset is this; it holds until the next transition, so
        // also at `lo` unless a transition is exactly there.
        let mut offset = self.offset_at(from);
        // Each round returns, passes a transition or skips a repeat: the
        // search ends (the crate gives up after 2100).
        loop {
            let local = self.next_local(lo + offset)?;
            let at = local - offset;
            match self.transition(from, offset, at) {
                None => {
                    // The offset holds from `lo` to `at`; `at` fires unless
                    // it repeats a local time that fired before (which only
                    // happens when `after` is inside such a repeat).
                    if self.fixed_hour
                        && let Some(end) = self.repeat_end(local, at)
                    {
                        lo = end;
                        continue;
                    }
                    return Some(at);
                }
                Some((t, new)) => {
                    // Nothing matched in [lo, t).
                    if self.fixed_hour && new > offset {
                        // Spring forward: local times [t + offset, t + new)
                        // are skipped; if one matches, `t` fires.
                        if self.next_local(t + offset).is_some_and(|l| l < t + new) {
                            return Some(t);
                        }
                    }
                    lo = if self.fixed_hour && new < offset {
                        // Fall back: the local times of [t, t + offset - new)
                        // occurred just before `t`.
                        t + (offset - new)
                    } else {
                        t
                    };
                    from = t;
                    offset = new;
                }
            }
        }
    }

    /// The first matching local time at or after `local` (seconds since
    /// 1970-01-01T00:00 local).
    fn next_local(&self, local: i64) -> Option<i64> {
        let before = DateTime::<Utc>::from_timestamp(local.checked_sub(1)?, 0)?;
        std::iter::once(&self.schedule)
            .chain(&self.or_weekdays)
            .filter_map(|s| s.after(&before).next())
            .map(|t| t.timestamp())
            .min()
    }

    /// The UTC offset, in seconds, of the trigger's time zone at `t`.
    fn offset_at(&self, t: i64) -> i64 {
        DateTime::<Utc>::from_timestamp(t, 0).map_or(0, |t| {
            let offset = self.timezone.offset_from_utc_datetime(&t.naive_utc());
            i64::from(offset.fix().local_minus_utc())
        })
    }

    /// The first instant in (from, to] whose offset is not `offset` (the
    /// offset at `from`), with its offset.
    fn transition(&self, from: i64, offset: i64, to: i64) -> Option<(i64, i64)> {
        let mut a = from;
        while a < to {
            let b = (a + DAY).min(to);
            if self.offset_at(b) != offset {
                // The offset changes in (a, b]: bisect to the second.
                let (mut a, mut b) = (a, b);
                while b - a > 1 {
                    let mid = a + (b - a) / 2;
                    if self.offset_at(mid) == offset {
                        a = mid;
                    } else {
                        b = mid;
                    }
                }
                return Some((b, self.offset_at(b)));
            }
            a = b;
        }
        None
    }

    /// If instant `at` (local time `local`) is the second occurrence of a
    /// local time repeated by a fall-back, the instant the repeat ends.
    fn repeat_end(&self, local: i64, at: i64) -> Option<i64> {
        let naive = DateTime::<Utc>::from_timestamp(local, 0)?.naive_utc();
        // chrono-tz gives the offsets of the earlier occurrence first.
        let LocalResult::Ambiguous(first, second) =
            self.timezone.offset_from_local_datetime(&naive)
        else {
            return None;
        };
        let first = i64::from(first.fix().local_minus_utc());
        let second = i64::from(second.fix().local_minus_utc());
        if first <= second || local - second != at {
            return None;
        }
        // The repeat is [t, t + first - second) for the transition t
        // between the two occurrences.
        let (t, _) = self.transition(local - first, first, at)?;
        Some(t + (first - second))
    }
}
