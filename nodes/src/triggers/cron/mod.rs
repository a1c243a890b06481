//! `cron`: fires at each instant its schedule names, in its time zone.
//!
//! Schedules are written in standard crontab syntax (5 fields, or 6 with
//! seconds first; day-of-week 0 and 7 are Sunday). The `cron` crate numbers
//! days the Quartz way (1 = Sunday) and needs a seconds field, so schedules
//! are translated: the day-of-week field is expanded into day names, which
//! mean the same in both.
//!
//! The crate only matches local times; which real instants fire (Vixie
//! cron's rules across daylight-saving changes, and its OR of the two day
//! fields) is worked out in [`instants`].

mod instants;
#[cfg(test)]
mod tests;

use std::str::FromStr;

use chrono_tz::Tz;

use crate::reader::Options;

#[derive(Debug)]
pub struct Cron {
    /// The schedule as written.
    pub schedule_text: String,
    /// The IANA time zone the schedule is read in (default UTC).
    pub timezone: Tz,
    /// What to do with instants missed while the daemon was down.
    pub catch_up: CatchUp,
    /// The schedule in the `cron` crate's syntax, matched against local
    /// times. When both day fields are restricted a day matches if either
    /// does, which the crate cannot say: then this one has day-of-week `*`,
    /// `or_weekdays` has day-of-month `*`, and the schedule is their union.
    schedule: cron::Schedule,
    or_weekdays: Option<cron::Schedule>,
    /// The hour field names fixed hours (no `*`, no step): across DST a
    /// skipped time fires at the end of the gap and a repeated one once.
    /// Otherwise every real instant whose local time matches fires.
    fixed_hour: bool,
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
            Some((name, pos)) => match Tz::from_str(name) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    o.error(
                        pos,
                        format!(
                            "unknown time zone `{name}`; use an IANA name like Europe/Berlin or UTC"
                        ),
                    );
                    None
                }
            },
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
        match Self::new(text, timezone.unwrap_or(Tz::UTC), catch_up) {
            Ok(cron) => timezone.map(|_| cron),
            Err(e) => {
                o.error(pos, format!("invalid cron schedule `{text}`: {e}"));
                None
            }
        }
    }

    /// A trigger firing on `text` (crontab syntax) read in `timezone`. The
    /// error says what is wrong with the schedule.
    pub fn new(text: &str, timezone: Tz, catch_up: CatchUp) -> Result<Self, String> {
        let t = translate(text)?;
        let parse = |fields: &[String]| {
            // The crate's message shows its own form of the schedule and a
            // caret over lines; keep the reason alone.
            cron::Schedule::from_str(&fields.join(" ")).map_err(|e| {
                let text = e.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty() && !l.trim().starts_with('^'))
                    .unwrap_or(&text);
                reason.trim().to_owned()
            })
        };
        let (schedule, or_weekdays) = if t.dom_restricted && t.dow_restricted {
            let mut any_weekday = t.fields.clone();
            any_weekday[5] = "*".into();
            let mut any_day = t.fields.clone();
            any_day[3] = "*".into();
            (parse(&any_weekday)?, Some(parse(&any_day)?))
        } else {
            (parse(&t.fields)?, None)
        };
        Ok(Self {
            schedule_text: text.to_owned(),
            timezone,
            catch_up,
            schedule,
            or_weekdays,
            fixed_hour: t.fixed_hour,
        })
    }
}

const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Translates a crontab schedule into the `cron` crate's syntax.
///
/// The crate ANDs the two day fields; weir ORs them when both are
/// restricted, which one translated schedule cannot say (see [`Cron`]).
pub fn to_cron_crate(text: &str) -> Result<String, String> {
    translate(text).map(|t| t.fields.join(" "))
}

/// A schedule in the crate's syntax, and what its crontab text says about
/// day matching and DST.
struct Translated {
    /// seconds, minutes, hours, day of month, month, day of week.
    fields: Vec<String>,
    /// Day-of-month does not start with `*` or `?` (Vixie cron's test).
    dom_restricted: bool,
    /// Day-of-week does not start with `*` or `?`.
    dow_restricted: bool,
    /// The hour field has neither `*` nor a step.
    fixed_hour: bool,
}

fn translate(text: &str) -> Result<Translated, String> {
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
    for (i, (what, plural, min, max)) in [
        ("second", "seconds", 0, 59),
        ("minute", "minutes", 0, 59),
        ("hour", "hours", 0, 23),
        ("day-of-month", "days of the month", 1, 31),
        ("month", "months", 1, 12),
    ]
    .into_iter()
    .enumerate()
    {
        check_field(&fields[i], (what, plural), min, max)?;
    }
    let restricted = |f: &str| !(f.starts_with('*') || f.starts_with('?'));
    let dom_restricted = restricted(&fields[3]);
    let dow_restricted = restricted(&fields[5]);
    let fixed_hour = !fields[2].contains(['*', '/', '?']);
    fields[5] = day_of_week(&fields[5])?;
    Ok(Translated {
        fields,
        dom_restricted,
        dow_restricted,
        fixed_hour,
    })
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// Checks the numbers of one field against its range, so that a mistake
/// is reported in crontab's terms (the `cron` crate's own messages name
/// its internal form and are off by one).
fn check_field(
    field: &str,
    (what, plural): (&str, &str),
    min: u32,
    max: u32,
) -> Result<(), String> {
    let value = |text: &str| -> Result<u32, String> {
        let n = match text.parse::<u32>() {
            Ok(n) => n,
            Err(_) if what == "month" => MONTHS
                .iter()
                .position(|m| m.eq_ignore_ascii_case(text))
                .map(|i| i as u32 + 1)
                .ok_or_else(|| {
                    format!("the month field has `{text}`; write 1 to 12, or JAN to DEC")
                })?,
            Err(_) => {
                return Err(format!(
                    "the {what} field has `{text}`, which is not a number"
                ));
            }
        };
        if !(min..=max).contains(&n) {
            return Err(format!(
                "the {what} field has {n}; {plural} go from {min} to {max}"
            ));
        }
        Ok(n)
    };
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (part, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(0) => return Err(format!("the {what} field has a step of 0 in `{part}`")),
                Ok(_) => {}
                Err(_) => {
                    return Err(format!(
                        "the {what} field has the step `{step}`, which is not a number"
                    ));
                }
            }
        }
        match range {
            "*" | "?" => {}
            _ => match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (value(a)?, value(b)?);
                    if a > b {
                        return Err(format!("the {what} field's range `{range}` runs backwards"));
                    }
                }
                None => {
                    value(range)?;
                }
            },
        }
    }
    Ok(())
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
