use std::time::Instant;

use chrono::{DateTime, Datelike, Offset, SecondsFormat, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::*;

fn cron(schedule: &str, tz: &str) -> Cron {
    Cron::new(schedule, tz.parse().unwrap(), CatchUp::Skip).unwrap()
}

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The fires in (from, to], as RFC 3339 UTC.
fn fires(c: &Cron, from: &str, to: &str) -> Vec<String> {
    c.fires_between(at(from), at(to), 100_000)
        .into_iter()
        .map(text)
        .collect()
}

fn next(c: &Cron, after: &str) -> String {
    text(c.next_after(at(after)).unwrap())
}

/// Local wall-clock times ("HH:MM") of instants in `tz`.
fn local_times(c: &Cron, from: &str, to: &str) -> Vec<String> {
    c.fires_between(at(from), at(to), 100_000)
        .into_iter()
        .map(|t| t.with_timezone(&c.timezone).format("%H:%M").to_string())
        .collect()
}

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
    let s = cron::Schedule::from_str(&to_cron_crate("0 9 * * 1").unwrap()).unwrap();
    let start = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
    let next = s.after(&start).next().unwrap();
    assert_eq!(next.weekday(), chrono::Weekday::Mon);
}

#[test]
fn crontab_day_numbers_through_next_after() {
    // 2024-03-01 is a Friday.
    let after = "2024-03-01T00:00:00Z";
    assert_eq!(
        next(&cron("0 9 * * 1", "UTC"), after),
        "2024-03-04T09:00:00Z"
    );
    assert_eq!(
        next(&cron("0 9 * * 0", "UTC"), after),
        "2024-03-03T09:00:00Z"
    );
    assert_eq!(
        next(&cron("0 9 * * 7", "UTC"), after),
        "2024-03-03T09:00:00Z"
    );
    assert_eq!(
        next(&cron("0 9 * * SUN", "UTC"), after),
        "2024-03-03T09:00:00Z"
    );
}

#[test]
fn bad_schedules_are_errors() {
    assert!(Cron::new("61 3 * * *", Tz::UTC, CatchUp::Skip).is_err());
    assert!(Cron::new("0 3 * *", Tz::UTC, CatchUp::Skip).is_err());
    assert!(Cron::new("0 3 32 * 1", Tz::UTC, CatchUp::Skip).is_err());
}

// Europe/Berlin: 2024-03-31 01:00Z CET (+1) -> CEST (+2), local 02:00-02:59
// skipped; 2024-10-27 01:00Z CEST -> CET, local 02:00-02:59 twice (00:xxZ
// and 01:xxZ). America/New_York: 2024-03-10 07:00Z EST (-5) -> EDT (-4),
// local 02:xx skipped; 2024-11-03 06:00Z EDT -> EST, local 01:xx twice
// (05:xxZ and 06:xxZ). All four days are Sundays.

#[test]
fn fixed_hour_in_the_spring_gap_fires_at_the_end_of_the_gap() {
    let c = cron("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        fires(&c, "2024-03-29T12:00:00Z", "2024-04-01T12:00:00Z"),
        [
            "2024-03-30T01:30:00Z", // 02:30 CET
            "2024-03-31T01:00:00Z", // 03:00 CEST, the first instant after the gap
            "2024-04-01T00:30:00Z", // 02:30 CEST
        ]
    );
    assert_eq!(next(&c, "2024-03-31T00:59:59Z"), "2024-03-31T01:00:00Z");
    assert_eq!(next(&c, "2024-03-31T00:30:00Z"), "2024-03-31T01:00:00Z");
    assert_eq!(next(&c, "2024-03-31T01:00:00Z"), "2024-04-01T00:30:00Z");

    let c = cron("30 2 * * *", "America/New_York");
    assert_eq!(
        fires(&c, "2024-03-09T00:00:00Z", "2024-03-12T00:00:00Z"),
        [
            "2024-03-09T07:30:00Z", // 02:30 EST
            "2024-03-10T07:00:00Z", // 03:00 EDT
            "2024-03-11T06:30:00Z", // 02:30 EDT
        ]
    );
}

#[test]
fn several_times_in_the_gap_fire_once() {
    // 02:00, 02:15, ... 02:45 and 03:00 all map to 01:00Z.
    let c = cron("0,15,30,45 2,3 * * *", "Europe/Berlin");
    assert_eq!(
        fires(&c, "2024-03-31T00:00:00Z", "2024-03-31T02:00:00Z"),
        [
            "2024-03-31T01:00:00Z",
            "2024-03-31T01:15:00Z", // 03:15 CEST
            "2024-03-31T01:30:00Z",
            "2024-03-31T01:45:00Z",
        ]
    );
}

#[test]
fn fixed_hour_repeated_by_fall_back_fires_at_the_first_occurrence_only() {
    let c = cron("30 2 * * *", "Europe/Berlin");
    assert_eq!(
        fires(&c, "2024-10-26T12:00:00Z", "2024-10-28T12:00:00Z"),
        [
            "2024-10-27T00:30:00Z", // 02:30 CEST; not 01:30Z, 02:30 CET
            "2024-10-28T01:30:00Z", // 02:30 CET
        ]
    );
    assert_eq!(next(&c, "2024-10-27T00:30:00Z"), "2024-10-28T01:30:00Z");
    // From inside the repeated hour, first and second pass.
    assert_eq!(next(&c, "2024-10-27T00:45:00Z"), "2024-10-28T01:30:00Z");
    assert_eq!(next(&c, "2024-10-27T01:10:00Z"), "2024-10-28T01:30:00Z");
    let c = cron("45 2 * * *", "Europe/Berlin");
    // 01:10Z is 02:10 CET: 02:45 CET (01:45Z) repeats 02:45 CEST (00:45Z).
    assert_eq!(next(&c, "2024-10-27T01:10:00Z"), "2024-10-28T01:45:00Z");
    assert_eq!(next(&c, "2024-10-27T00:10:00Z"), "2024-10-27T00:45:00Z");
    // 03:00 CET is after the repeat.
    let c = cron("0 3 * * *", "Europe/Berlin");
    assert_eq!(next(&c, "2024-10-27T01:10:00Z"), "2024-10-27T02:00:00Z");

    let c = cron("30 1 * * *", "America/New_York");
    assert_eq!(
        fires(&c, "2024-11-02T00:00:00Z", "2024-11-05T00:00:00Z"),
        [
            "2024-11-02T05:30:00Z", // 01:30 EDT
            "2024-11-03T05:30:00Z", // 01:30 EDT; not 06:30Z, 01:30 EST
            "2024-11-04T06:30:00Z", // 01:30 EST
        ]
    );
    // 02:30 is not repeated in New York: 02:30 EST.
    let c = cron("30 2 * * *", "America/New_York");
    assert_eq!(
        fires(&c, "2024-11-02T00:00:00Z", "2024-11-04T00:00:00Z"),
        ["2024-11-02T06:30:00Z", "2024-11-03T07:30:00Z"]
    );
}

#[test]
fn wildcard_hour_skips_the_gap_and_fires_twice_in_the_repeat() {
    let hourly = cron("0 * * * *", "Europe/Berlin");
    assert_eq!(
        fires(&hourly, "2024-03-30T22:00:00Z", "2024-03-31T03:00:00Z"),
        [
            "2024-03-30T23:00:00Z",
            "2024-03-31T00:00:00Z",
            "2024-03-31T01:00:00Z",
            "2024-03-31T02:00:00Z",
            "2024-03-31T03:00:00Z",
        ]
    );
    assert_eq!(
        local_times(&hourly, "2024-03-30T22:00:00Z", "2024-03-31T03:00:00Z"),
        ["00:00", "01:00", "03:00", "04:00", "05:00"]
    );
    assert_eq!(
        fires(&hourly, "2024-10-26T22:00:00Z", "2024-10-27T03:00:00Z"),
        [
            "2024-10-26T23:00:00Z",
            "2024-10-27T00:00:00Z", // 02:00 CEST
            "2024-10-27T01:00:00Z", // 02:00 CET
            "2024-10-27T02:00:00Z",
            "2024-10-27T03:00:00Z",
        ]
    );
    assert_eq!(
        local_times(&hourly, "2024-10-26T22:00:00Z", "2024-10-27T03:00:00Z"),
        ["01:00", "02:00", "02:00", "03:00", "04:00"]
    );

    let half = cron("*/30 * * * *", "Europe/Berlin");
    assert_eq!(
        fires(&half, "2024-03-31T00:00:00Z", "2024-03-31T02:00:00Z"),
        [
            "2024-03-31T00:30:00Z", // 01:30 CET
            "2024-03-31T01:00:00Z", // 03:00 CEST
            "2024-03-31T01:30:00Z",
            "2024-03-31T02:00:00Z",
        ]
    );
    assert_eq!(
        fires(&half, "2024-10-26T23:30:00Z", "2024-10-27T02:00:00Z"),
        [
            "2024-10-27T00:00:00Z", // 02:00 CEST
            "2024-10-27T00:30:00Z", // 02:30 CEST
            "2024-10-27T01:00:00Z", // 02:00 CET
            "2024-10-27T01:30:00Z", // 02:30 CET
            "2024-10-27T02:00:00Z", // 03:00 CET
        ]
    );

    let ny = cron("*/30 * * * *", "America/New_York");
    assert_eq!(
        fires(&ny, "2024-03-10T06:00:00Z", "2024-03-10T08:00:00Z"),
        [
            "2024-03-10T06:30:00Z", // 01:30 EST
            "2024-03-10T07:00:00Z", // 03:00 EDT
            "2024-03-10T07:30:00Z",
            "2024-03-10T08:00:00Z",
        ]
    );
    assert_eq!(
        local_times(&ny, "2024-03-10T06:00:00Z", "2024-03-10T08:00:00Z"),
        ["01:30", "03:00", "03:30", "04:00"]
    );
    let ny = cron("0 * * * *", "America/New_York");
    assert_eq!(
        fires(&ny, "2024-11-03T04:00:00Z", "2024-11-03T07:00:00Z"),
        [
            "2024-11-03T05:00:00Z", // 01:00 EDT
            "2024-11-03T06:00:00Z", // 01:00 EST
            "2024-11-03T07:00:00Z", // 02:00 EST
        ]
    );
}

#[test]
fn hour_steps_count_as_wildcards() {
    // Same local times, written with a step and as fixed hours.
    let step = cron("30 */2 * * *", "Europe/Berlin");
    let fixed = cron("30 0,2,4 * * *", "Europe/Berlin");
    let (from, to) = ("2024-03-30T22:00:00Z", "2024-03-31T04:00:00Z");
    assert_eq!(
        fires(&step, from, to),
        ["2024-03-30T23:30:00Z", "2024-03-31T02:30:00Z"] // 00:30 CET, 04:30 CEST
    );
    assert_eq!(
        fires(&fixed, from, to),
        [
            "2024-03-30T23:30:00Z",
            "2024-03-31T01:00:00Z", // for 02:30
            "2024-03-31T02:30:00Z",
        ]
    );
    let (from, to) = ("2024-10-26T22:00:00Z", "2024-10-27T04:00:00Z");
    assert_eq!(
        fires(&step, from, to),
        [
            "2024-10-26T22:30:00Z", // 00:30 CEST
            "2024-10-27T00:30:00Z", // 02:30 CEST
            "2024-10-27T01:30:00Z", // 02:30 CET
            "2024-10-27T03:30:00Z", // 04:30 CET
        ]
    );
    assert_eq!(
        fires(&fixed, from, to),
        [
            "2024-10-26T22:30:00Z",
            "2024-10-27T00:30:00Z",
            "2024-10-27T03:30:00Z",
        ]
    );
    // A range with a step is a wildcard too.
    let ranged = cron("30 0-4/2 * * *", "Europe/Berlin");
    assert_eq!(fires(&ranged, from, to), fires(&step, from, to));
}

#[test]
fn six_fields_every_20_seconds_across_transitions() {
    let c = cron("*/20 * * * * *", "Europe/Berlin");
    assert_eq!(
        fires(&c, "2024-03-31T00:59:00Z", "2024-03-31T01:01:00Z"),
        [
            "2024-03-31T00:59:20Z",
            "2024-03-31T00:59:40Z",
            "2024-03-31T01:00:00Z",
            "2024-03-31T01:00:20Z",
            "2024-03-31T01:00:40Z",
            "2024-03-31T01:01:00Z",
        ]
    );
    // Local time jumps, real time does not: no gap, no duplicate.
    for (from, to) in [
        ("2024-03-30T23:00:00Z", "2024-03-31T03:00:00Z"),
        ("2024-10-26T23:00:00Z", "2024-10-27T03:00:00Z"),
    ] {
        let f = c.fires_between(at(from), at(to), 100_000);
        assert_eq!(f.len(), 4 * 180);
        assert_eq!(text(f[0]), from.replace(":00:00Z", ":00:20Z"));
        assert_eq!(text(f[f.len() - 1]), to);
        assert!(f.windows(2).all(|w| (w[1] - w[0]).num_seconds() == 20));
    }

    // Fixed hour, every 20 s within 02:xx: the whole gap is one fire...
    let c = cron("*/20 * 2 * * *", "Europe/Berlin");
    assert_eq!(
        fires(&c, "2024-03-30T12:00:00Z", "2024-03-31T12:00:00Z"),
        ["2024-03-31T01:00:00Z"]
    );
    // ...and the repeated hour fires once, in CEST.
    let f = c.fires_between(at("2024-10-26T12:00:00Z"), at("2024-10-27T12:00:00Z"), 1000);
    assert_eq!(f.len(), 180);
    assert_eq!(text(f[0]), "2024-10-27T00:00:00Z");
    assert_eq!(text(f[179]), "2024-10-27T00:59:40Z");
    assert!(f.windows(2).all(|w| (w[1] - w[0]).num_seconds() == 20));
}

#[test]
fn gap_time_on_a_day_that_does_not_match_does_not_fire() {
    // 2024-03-31 is a Sunday.
    let monday = cron("30 2 * * 1", "Europe/Berlin");
    assert_eq!(
        fires(&monday, "2024-03-30T00:00:00Z", "2024-04-02T00:00:00Z"),
        ["2024-04-01T00:30:00Z"]
    );
    let sunday = cron("30 2 * * 0", "Europe/Berlin");
    assert_eq!(
        fires(&sunday, "2024-03-30T00:00:00Z", "2024-04-02T00:00:00Z"),
        ["2024-03-31T01:00:00Z"]
    );
    let the_30th = cron("30 2 30 3 *", "Europe/Berlin");
    assert_eq!(
        fires(&the_30th, "2024-03-29T00:00:00Z", "2024-04-02T00:00:00Z"),
        ["2024-03-30T01:30:00Z"]
    );
    let saturday = cron("30 2 * * 6", "America/New_York");
    assert_eq!(
        fires(&saturday, "2024-03-09T00:00:00Z", "2024-03-17T00:00:00Z"),
        ["2024-03-09T07:30:00Z", "2024-03-16T06:30:00Z"]
    );
}

#[test]
fn both_day_fields_restricted_means_either() {
    // September 2024: Fridays 6, 13, 20, 27; October: 4, 11, 18, 25 (the
    // 13th is a Sunday).
    let c = cron("0 12 13 * 5", "UTC");
    assert_eq!(
        fires(&c, "2024-09-01T00:00:00Z", "2024-11-01T00:00:00Z"),
        [
            "2024-09-06T12:00:00Z",
            "2024-09-13T12:00:00Z",
            "2024-09-20T12:00:00Z",
            "2024-09-27T12:00:00Z",
            "2024-10-04T12:00:00Z",
            "2024-10-11T12:00:00Z",
            "2024-10-13T12:00:00Z",
            "2024-10-18T12:00:00Z",
            "2024-10-25T12:00:00Z",
        ]
    );
    // In a time zone: noon CEST.
    let c = cron("0 12 13 * 5", "Europe/Berlin");
    assert_eq!(
        fires(&c, "2024-10-01T00:00:00Z", "2024-10-20T00:00:00Z"),
        [
            "2024-10-04T10:00:00Z",
            "2024-10-11T10:00:00Z",
            "2024-10-13T10:00:00Z",
            "2024-10-18T10:00:00Z",
        ]
    );
    // One restricted: the other is "any".
    assert_eq!(
        fires(
            &cron("0 12 13 * *", "UTC"),
            "2024-09-01T00:00:00Z",
            "2024-11-01T00:00:00Z"
        ),
        ["2024-09-13T12:00:00Z", "2024-10-13T12:00:00Z"]
    );
    assert_eq!(
        fires(
            &cron("0 12 * * 5", "UTC"),
            "2024-10-01T00:00:00Z",
            "2024-11-01T00:00:00Z"
        ),
        [
            "2024-10-04T12:00:00Z",
            "2024-10-11T12:00:00Z",
            "2024-10-18T12:00:00Z",
            "2024-10-25T12:00:00Z",
        ]
    );
    // As in Vixie cron, a field starting with `*` (`*/2`) is not
    // "restricted": the days must match both (odd days that are Fridays).
    assert_eq!(
        fires(
            &cron("0 12 */2 * 5", "UTC"),
            "2024-09-01T00:00:00Z",
            "2024-11-01T00:00:00Z"
        ),
        [
            "2024-09-13T12:00:00Z",
            "2024-09-27T12:00:00Z",
            "2024-10-11T12:00:00Z",
            "2024-10-25T12:00:00Z",
        ]
    );
}

#[test]
fn next_after_is_strictly_after() {
    let c = cron("0 9 * * *", "UTC");
    assert_eq!(next(&c, "2024-05-01T09:00:00Z"), "2024-05-02T09:00:00Z");
    assert_eq!(next(&c, "2024-05-01T08:59:59.999Z"), "2024-05-01T09:00:00Z");
    assert_eq!(next(&c, "2024-05-01T09:00:00.001Z"), "2024-05-02T09:00:00Z");
    let c = cron("* * * * * *", "Europe/Berlin");
    assert_eq!(next(&c, "2024-05-01T09:00:00Z"), "2024-05-01T09:00:01Z");
    assert_eq!(next(&c, "2024-05-01T09:00:00.5Z"), "2024-05-01T09:00:01Z");
    // @daily in Berlin: local midnight.
    let c = cron("@daily", "Europe/Berlin");
    assert_eq!(next(&c, "2024-03-30T23:30:00Z"), "2024-03-31T22:00:00Z");
    // A day that never comes.
    assert_eq!(
        cron("0 0 30 2 *", "UTC").next_after(at("2024-01-01T00:00:00Z")),
        None
    );
}

#[test]
fn fires_between_bounds_and_limit() {
    let c = cron("*/20 * * * * *", "UTC");
    assert_eq!(
        fires(&c, "2024-05-01T00:00:20Z", "2024-05-01T00:01:00Z"),
        ["2024-05-01T00:00:40Z", "2024-05-01T00:01:00Z"]
    );
    let f = c.fires_between(at("2024-05-01T00:00:00Z"), at("2024-05-01T01:00:00Z"), 3);
    assert_eq!(
        f.into_iter().map(text).collect::<Vec<_>>(),
        [
            "2024-05-01T00:00:20Z",
            "2024-05-01T00:00:40Z",
            "2024-05-01T00:01:00Z"
        ]
    );
    let t = at("2024-05-01T00:00:00Z");
    assert!(c.fires_between(t, at("2024-05-01T01:00:00Z"), 0).is_empty());
    assert!(c.fires_between(t, t, 10).is_empty());
    assert!(
        c.fires_between(t, at("2024-05-01T00:00:19Z"), 10)
            .is_empty()
    );
    let f = c.fires_between(t, at("2024-05-01T01:00:00Z"), MAX_CATCH_UP);
    assert_eq!(f.len(), 180);
}

/// Which instants in (from, to] fire, found minute by minute from the rules
/// as the flow format states them (5-field schedules only).
fn brute_force(c: &Cron, fixed_hour: bool, from: i64, to: i64) -> Vec<i64> {
    let tz = c.timezone;
    let offset = |t: i64| {
        let t = DateTime::<Utc>::from_timestamp(t, 0).unwrap();
        i64::from(
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    };
    let matches = |local: i64| {
        let local = DateTime::<Utc>::from_timestamp(local, 0).unwrap();
        std::iter::once(&c.schedule)
            .chain(&c.or_weekdays)
            .any(|s| s.includes(local))
    };
    let mut offsets: Vec<i64> = (from..=to).step_by(60).map(offset).collect();
    offsets.sort();
    offsets.dedup();
    let mut out = Vec::new();
    for t in (from + 60..=to).step_by(60) {
        let (now, before) = (offset(t), offset(t - 1));
        let local = t + now;
        if !fixed_hour {
            if matches(local) {
                out.push(t);
            }
            continue;
        }
        let seen_before = offsets
            .iter()
            .any(|&o| o != now && local - o < t && offset(local - o) == o);
        let in_gap = now > before && (t + before..t + now).step_by(60).any(matches);
        if (matches(local) && !seen_before) || in_gap {
            out.push(t);
        }
    }
    out
}

#[test]
fn agrees_with_brute_force_around_transitions() {
    let days = [
        ("Europe/Berlin", "2024-03-31"),
        ("Europe/Berlin", "2024-10-27"),
        ("America/New_York", "2024-03-10"),
        ("America/New_York", "2024-11-03"),
        // Half-hour DST.
        ("Australia/Lord_Howe", "2024-04-07"),
        ("Australia/Lord_Howe", "2024-10-06"),
        // Transitions at midnight.
        ("America/Sao_Paulo", "2018-11-04"),
        ("America/Sao_Paulo", "2019-02-17"),
        // A whole day skipped (2011-12-30).
        ("Pacific/Apia", "2011-12-30"),
        ("UTC", "2024-03-31"),
    ];
    let schedules = [
        ("30 2 * * *", true),
        ("0 * * * *", false),
        ("*/30 * * * *", false),
        ("30 */2 * * *", false),
        ("15,45 1-3 * * *", true),
        ("0 0 * * *", true),
        ("*/7 0 * * *", true),
        ("45 23 * * *", true),
        ("0,30 2 * * 0", true),
        ("10 1,2 * * 1-6", true),
        ("0 2 3,4,5,6,7,17,30 * 0", true),
        ("*/10 2 * * *", true),
    ];
    for (tz, day) in days {
        let mid = at(&format!("{day}T00:00:00Z")).timestamp();
        let (from, to) = (mid - 2 * 86_400, mid + 2 * 86_400);
        for (schedule, fixed) in schedules {
            let c = cron(schedule, tz);
            assert_eq!(c.fixed_hour, fixed, "{schedule}");
            let got: Vec<i64> = c
                .fires_between(
                    DateTime::from_timestamp(from, 0).unwrap(),
                    DateTime::from_timestamp(to, 0).unwrap(),
                    100_000,
                )
                .iter()
                .map(DateTime::timestamp)
                .collect();
            let want = brute_force(&c, fixed, from, to);
            assert_eq!(
                got.iter()
                    .map(|t| text(DateTime::from_timestamp(*t, 0).unwrap()))
                    .collect::<Vec<_>>(),
                want.iter()
                    .map(|t| text(DateTime::from_timestamp(*t, 0).unwrap()))
                    .collect::<Vec<_>>(),
                "{schedule} in {tz} around {day}"
            );
            // next_after from anywhere, on and off the fire instants.
            for t in (from..to - 86_400).step_by(300).chain(want.iter().copied()) {
                for t in [t, t + 7] {
                    let expected = want.iter().find(|&&w| w > t).copied();
                    let next = c.next_after(DateTime::from_timestamp(t, 0).unwrap());
                    if let Some(expected) = expected {
                        assert_eq!(
                            next.map(|n| n.timestamp()),
                            Some(expected),
                            "{schedule} in {tz} after {t}"
                        );
                    } else {
                        assert!(
                            next.is_none_or(|n| n.timestamp() > to),
                            "{schedule} in {tz} after {t}"
                        );
                    }
                }
            }
        }
    }
}

/// `cargo test -p weir-nodes --lib --release triggers::cron::tests::cost -- --ignored --nocapture`
#[test]
#[ignore]
fn cost_of_next_after() {
    for (schedule, tz) in [
        ("* * * * * *", "Europe/Berlin"),
        ("* * * * * *", "UTC"),
        ("*/5 * * * *", "Europe/Berlin"),
        ("30 2 * * *", "Europe/Berlin"),
        ("0 12 13 * 5", "Europe/Berlin"),
        ("0 0 1 1 *", "Europe/Berlin"),
    ] {
        let c = cron(schedule, tz);
        let mut t = at("2024-05-01T00:00:00Z");
        let n = 200_000;
        let start = Instant::now();
        let mut sum = 0;
        for _ in 0..n {
            let next = c.next_after(t).unwrap();
            sum += next.timestamp() & 1;
            // Stay in May for the frequent schedules.
            t = if next.month() == 5 { next } else { t };
        }
        let per = start.elapsed().as_nanos() / n as u128;
        println!("{schedule:>14} {tz:<14} {per:>6} ns per next_after ({sum})");
    }
    // The crate alone, for comparison.
    let s = cron::Schedule::from_str("* * * * * *").unwrap();
    let tz: Tz = "Europe/Berlin".parse().unwrap();
    let mut t = at("2024-05-01T00:00:00Z").with_timezone(&tz);
    let n = 200_000;
    let start = Instant::now();
    for _ in 0..n {
        t = s.after(&t).next().unwrap();
    }
    let per = start.elapsed().as_nanos() / n as u128;
    println!(
        "crate alone, * * * * * * Europe/Berlin: {per} ns ({})",
        t.second()
    );
}

#[test]
fn schedule_errors_are_one_line_in_crontab_terms() {
    for (schedule, expected) in [
        (
            "60 * * * *",
            "the minute field has 60; minutes go from 0 to 59",
        ),
        ("0 24 * * *", "the hour field has 24; hours go from 0 to 23"),
        (
            "0 0 32 * *",
            "the day-of-month field has 32; days of the month go from 1 to 31",
        ),
        (
            "0 0 0 * *",
            "the day-of-month field has 0; days of the month go from 1 to 31",
        ),
        (
            "0 0 1 13 *",
            "the month field has 13; months go from 1 to 12",
        ),
        ("*/0 * * * *", "the minute field has a step of 0 in `*/0`"),
        (
            "5-2 * * * *",
            "the minute field's range `5-2` runs backwards",
        ),
        (
            "x * * * *",
            "the minute field has `x`, which is not a number",
        ),
    ] {
        let e = Cron::new(schedule, Tz::UTC, CatchUp::Skip).unwrap_err();
        assert_eq!(e, expected, "{schedule}");
    }
    // 59 is a minute, JAN-DEC are months.
    assert!(Cron::new("59 23 31 DEC *", Tz::UTC, CatchUp::Skip).is_ok());
}
