//! `cron`: fires at each instant its schedule names, in its time zone.
//!
//! Schedules are written in standard crontab syntax (5 fields, or 6 with
//! seconds first; day-of-week 0 and 7 are Sunday). The `cron` crate numbers
//! days the Quartz way (1 = Sunday) and needs a seconds field, so schedules
//! are translated: the day-of-week field is expanded into day names, which
//! mean the same in both.

use std::str::FromStr;

use chrono_tz::Tz;

use crate::reader::Options;

#[derive(Debug)]
pub struct Cron {
    /// The schedule as written.
    pub schedule_text: String,
    /// The schedule in the `cron` crate's syntax.
    pub schedule: cron::Schedule,
    /// The IANA time zone the schedule is read in (default UTC).
    pub timezone: Tz,
    /// What to do with instants missed while the daemon was down.
    pub catch_up: CatchUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    /// Fire none of them (default).
    Skip,
    /// Fire the most recent one.
    Latest,
    /// Fire each of them, up to [`MAX_CATCH_UP`].
    All,
}

/// The most missed instants `catch_up: all` fires.
pub const MAX_CATCH_UP: usize = 1000;

impl Cron {
    pub fn build(o: &mut Options) -> Option<Self> {
        let schedule = o.required_str("schedule");
        let timezone = match o.str("timezone") {
            None => Some(Tz::UTC),
            Some((name, pos)) => {
                match Tz::from_str(name) {
                    Ok(tz) => Some(tz),
                    Err(_) => {
                        o.error(pos, format!("unknown time zone `{name}`; use an IANA name like Europe/Berlin or UTC"));
                        None
                    }
                }
            }
        };
        let catch_up = match o.str("catch_up") {
            None | Some(("skip", _)) => CatchUp::Skip,
            Some(("latest", _)) => CatchUp::Latest,
            Some(("all", _)) => CatchUp::All,
            Some((other, pos)) => {
                o.error(
                    pos,
                    format!("`catch_up` must be skip, latest or all, not `{other}`"),
                );
                CatchUp::Skip
            }
        };
        let (text, pos) = schedule?;
        let parsed = to_cron_crate(text)
            .and_then(|t| cron::Schedule::from_str(&t).map_err(|e| format!("{e}")));
        let schedule = match parsed {
            Ok(s) => s,
            Err(e) => {
                o.error(pos, format!("invalid cron schedule `{text}`: {e}"));
                return None;
            }
        };
        Some(Self {
            schedule_text: text.to_owned(),
            schedule,
            timezone: timezone?,
            catch_up,
        })
    }
}

const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Translates a crontab schedule into the `cron` crate's syntax.
pub fn to_cron_crate(text: &str) -> Result<String, String> {
    let text = match text.trim() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other => other,
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    let mut fields = match fields.len() {
        5 => {
            let mut f = vec!["0"];
            f.extend(fields);
            f.into_iter().map(str::to_owned).collect::<Vec<_>>()
        }
        6 => fields.into_iter().map(str::to_owned).collect(),
        n => {
            return Err(format!(
                "it has {n} fields; write 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
    };
    fields[5] = day_of_week(&fields[5])?;
    Ok(fields.join(" "))
}

/// Expands a crontab day-of-week field into day names.
fn day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .map_err(|_| format!("bad step in `{part}`"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("a step of 0 in `{part}`"));
        }
        let (from, to) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                None if step > 1 => (day(r)?, 6),
                None => {
                    let d = day(r)?;
                    (d, d)
                }
            },
        };
        // 7 is Sunday too; a range may end on it (5-7 is Fri, Sat, Sun).
        if from > to {
            return Err(format!("the range `{range}` runs backwards"));
        }
        for d in (from..=to).step_by(step) {
            days[d % 7] = true;
        }
    }
    if days.iter().all(|d| *d) {
        return Ok("*".into());
    }
    Ok(DAYS
        .iter()
        .zip(days)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(","))
}

fn day(text: &str) -> Result<usize, String> {
    if let Ok(n) = text.parse::<usize>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("day of week {n} is out of range 0-7"))
        };
    }
    DAYS.iter()
        .position(|d| d.eq_ignore_ascii_case(text))
        .ok_or_else(|| format!("`{text}` is not a day of week (0-7 or SUN-SAT)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crontab_numbering_becomes_day_names() {
        assert_eq!(to_cron_crate("0 3 * * *").unwrap(), "0 0 3 * * *");
        assert_eq!(
            to_cron_crate("0 3 * * 1-5").unwrap(),
            "0 0 3 * * MON,TUE,WED,THU,FRI"
        );
        assert_eq!(to_cron_crate("0 3 * * 0").unwrap(), "0 0 3 * * SUN");
        assert_eq!(to_cron_crate("0 3 * * 7").unwrap(), "0 0 3 * * SUN");
        assert_eq!(
            to_cron_crate("0 3 * * 5-7").unwrap(),
            "0 0 3 * * SUN,FRI,SAT"
        );
        assert_eq!(
            to_cron_crate("0 3 * * */2").unwrap(),
            "0 0 3 * * SUN,TUE,THU,SAT"
        );
        assert_eq!(
            to_cron_crate("0 3 * * mon,WED").unwrap(),
            "0 0 3 * * MON,WED"
        );
        assert_eq!(to_cron_crate("*/5 * * * * *").unwrap(), "*/5 * * * * *");
        assert_eq!(to_cron_crate("@daily").unwrap(), "0 0 0 * * *");
        assert!(to_cron_crate("0 3 * *").unwrap_err().contains("4 fields"));
        assert!(to_cron_crate("0 3 * * 8").is_err());
    }

    #[test]
    fn translated_schedules_fire_on_the_crontab_day() {
        use chrono::{Datelike, TimeZone, Utc};
        let s = cron::Schedule::from_str(&to_cron_crate("0 9 * * 1").unwrap()).unwrap();
        let start = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
        let next = s.after(&start).next().unwrap();
        assert_eq!(next.weekday(), chrono::Weekday::Mon);
    }
}
