//! Cron triggers: each instant fires once, across `kill -9`; `catch_up`;
//! `next_fire_at`; one schedule per tenant.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Timelike, Utc};
use serde_json::Value;

use crate::{TIMEOUT, assert_event_base, flow, get, runs, start, time};
use weir_testkit::{Daemon, wait_until};

/// One cron run: the instant it is for and when it was created.
#[derive(Debug, Clone)]
struct Fired {
    at: DateTime<Utc>,
    created: DateTime<Utc>,
}

fn cron_flow(schedule: &str, catch_up: &str, tenants: &str) -> String {
    format!(
        r#"
id: ticks
tenants: {tenants}
triggers:
  - id: tick
    type: cron
    schedule: "{schedule}"
    catch_up: {catch_up}
nodes:
  - id: note
    type: map
    mapping:
      at: event.scheduled_at
"#
    )
}

/// The cron runs of flow `ticks` (of `tenant` if given), ordered by
/// instant. Checks each run's event on the way.
fn fired(daemon: &Daemon, tenant: Option<&str>) -> Vec<Fired> {
    let mut fired: Vec<Fired> = runs(daemon, "ticks", tenant)
        .iter()
        .map(|run| {
            let event = &run["event"];
            assert_eq!(event["type"], "schedule", "a cron run's event: {run:#}");
            assert_eq!(event["trigger"], "tick", "a cron run's event: {run:#}");
            assert_eq!(run["trigger"], "tick", "a cron run: {run:#}");
            assert_event_base(run);
            Fired {
                at: time(&event["scheduled_at"]),
                created: time(&run["created_at"]),
            }
        })
        .collect();
    fired.sort_by_key(|f| f.at);
    fired
}

/// Panics unless every instant fired once and is a whole second.
fn assert_once_each_whole_second(fired: &[Fired], what: &str) {
    let mut count: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    for f in fired {
        *count.entry(f.at).or_default() += 1;
        assert_eq!(
            f.at.nanosecond(),
            0,
            "{what}: instant {} is not a whole second",
            f.at
        );
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: instants fired more than once: {twice:?}"
    );
}

/// Panics unless `instants` (sorted) are `step` seconds apart throughout.
fn assert_no_gaps(instants: &[DateTime<Utc>], step: i64, what: &str) {
    for pair in instants.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_seconds(),
            step,
            "{what}: a gap or a repeat between {} and {} in {instants:?}",
            pair[0],
            pair[1]
        );
    }
}

/// Waits until `daemon` created at least `n` cron runs after `since`;
/// returns all cron runs.
fn wait_fired(daemon: &mut Daemon, since: DateTime<Utc>, n: usize) -> Vec<Fired> {
    let mut all = Vec::new();
    wait_until(&format!("{n} cron runs after {since}"), TIMEOUT, || {
        daemon.weir.assert_running();
        all = fired(daemon, None);
        all.iter().filter(|f| f.created >= since).count() >= n
    });
    all
}

/// What a cron test with a daemon killed while it fires every `step`
/// seconds saw.
struct Restarted {
    /// The instants the first daemon fired (runs created before the kill).
    before: Vec<DateTime<Utc>>,
    /// The instants the second daemon fired.
    after: Vec<DateTime<Utc>>,
    /// When the second daemon logged that it serves: its cron tasks start
    /// right after, so the instant they take as "now" is later.
    serving: DateTime<Utc>,
}

/// When a daemon logged "weir is serving" (the log line's timestamp).
fn serving_at(log: &str) -> DateTime<Utc> {
    let line = log
        .lines()
        .find(|l| l.contains("weir is serving"))
        .unwrap_or_else(|| panic!("no \"weir is serving\" in the log:\n{log}"));
    let stamp = line.split_whitespace().next().unwrap();
    DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("no timestamp in `{line}`: {e}"))
        .with_timezone(&Utc)
}

/// Lets `schedule` with `catch_up` fire `fires` times, `kill -9`, waits
/// `down`, then (once `align` says the clock is right) restarts and lets it
/// fire `fires` more times.
fn kill_and_restart_cron(
    schedule: &str,
    catch_up: &str,
    fires: usize,
    down: Duration,
    align: impl Fn(DateTime<Utc>) -> bool,
) -> Restarted {
    let dir = tempfile::tempdir().unwrap();
    flow(
        dir.path(),
        "ticks.yaml",
        &cron_flow(schedule, catch_up, "[default]"),
    );
    let started = Utc::now();
    let mut first = start(dir.path(), "first");
    // A run is listed as soon as it is committed, a moment before its
    // flush: the newest one may not survive the kill. One firing more
    // than needed makes sure `fires` of them are on disk (the next firing
    // comes a second after a flush of a few milliseconds).
    wait_fired(&mut first, started, fires + 1);
    first.weir.kill();
    let killed = Utc::now();
    std::thread::sleep(down);
    wait_until("the clock is where the test restarts", TIMEOUT, || {
        align(Utc::now())
    });
    let restarted = Utc::now();
    let mut second = start(dir.path(), "second");
    let all = wait_fired(&mut second, restarted, fires);
    second.weir.terminate();
    let done = second.weir.finish(TIMEOUT);
    done.assert_no_panic();
    assert_eq!(done.code, Some(0), "SIGTERM: exit code\n{done}");

    let serving = serving_at(&done.stderr);
    assert!(serving >= restarted, "the log's clock is not the test's");

    assert_once_each_whole_second(&all, &format!("catch_up: {catch_up}"));
    let (before, after): (Vec<Fired>, Vec<Fired>) =
        all.into_iter().partition(|f| f.created < killed);
    let before: Vec<DateTime<Utc>> = before.iter().map(|f| f.at).collect();
    let after: Vec<DateTime<Utc>> = after.iter().map(|f| f.at).collect();
    assert!(before.len() >= fires, "the first daemon fired {before:?}");
    assert!(
        after.first() > before.last(),
        "the second daemon fired an instant at or before the first one's last: {before:?} then {after:?}"
    );
    Restarted {
        before,
        after,
        serving,
    }
}

/// The whole seconds in (from, to] that are multiples of `step` seconds.
fn instants_between(from: DateTime<Utc>, to: DateTime<Utc>, step: i64) -> Vec<DateTime<Utc>> {
    let mut t = from.trunc_subsecs(0) + chrono::Duration::seconds(1);
    let mut out = Vec::new();
    while t <= to {
        if t.timestamp() % step == 0 {
            out.push(t);
        }
        t += chrono::Duration::seconds(1);
    }
    out
}

#[test]
fn cron_catch_up_skip_fires_nothing_for_the_down_time_and_nothing_twice() {
    let r = kill_and_restart_cron(
        "* * * * * *",
        "skip",
        3,
        Duration::from_millis(2000),
        |_| true,
    );
    assert_no_gaps(&r.before, 1, "the first daemon");
    assert_no_gaps(&r.after, 1, "the second daemon");
    // Every instant up to the restart was missed while down; skip fires none.
    let missed = instants_between(*r.before.last().unwrap(), r.serving, 1);
    assert!(missed.len() >= 2, "the daemon was down for {missed:?}");
    assert!(
        r.after[0] > r.serving,
        "catch_up: skip fired {} although the daemon was down then (serving again at {}); missed {missed:?}, fired after the restart {:?}",
        r.after[0],
        r.serving,
        r.after
    );
}

#[test]
fn cron_catch_up_all_fires_each_missed_instant_once() {
    let r = kill_and_restart_cron("* * * * * *", "all", 3, Duration::from_millis(2000), |_| {
        true
    });
    let missed = instants_between(*r.before.last().unwrap(), r.serving, 1);
    assert!(missed.len() >= 2, "the daemon was down for {missed:?}");
    let all: Vec<DateTime<Utc>> = r.before.iter().chain(&r.after).copied().collect();
    assert_no_gaps(&all, 1, "catch_up: all, across the restart");
    for at in &missed {
        assert!(r.after.contains(at), "missed instant {at} was not fired");
    }
}

#[test]
fn cron_catch_up_latest_fires_only_the_last_missed_instant() {
    // Every 2 s. The second daemon's cron task takes "now" right after it
    // logs that it serves (within `STARTS` here); the latest missed instant
    // is the last even second up to then. Restarting early in an even
    // second keeps both ends in the same 2 s, so that instant is known.
    let r = kill_and_restart_cron(
        "*/2 * * * * *",
        "latest",
        2,
        Duration::from_millis(3000),
        |now| now.timestamp() % 2 == 0 && (50..400).contains(&now.timestamp_subsec_millis()),
    );
    assert_no_gaps(&r.before, 2, "the first daemon");
    assert_no_gaps(&r.after, 2, "the second daemon");
    let missed = instants_between(*r.before.last().unwrap(), r.serving, 2);
    assert!(missed.len() >= 2, "the daemon was down for {missed:?}");
    let even = |t: DateTime<Utc>| t.timestamp() - t.timestamp().rem_euclid(2);
    const STARTS: chrono::Duration = chrono::Duration::milliseconds(500);
    let (earliest, latest) = (even(r.serving), even(r.serving + STARTS));
    let first = r.after[0].timestamp();
    // If an even second passed between the two ends, either may be it.
    assert!(
        first == earliest || (earliest < latest && first <= latest),
        "catch_up: latest fired first {} (then {:?}); the latest missed instant is {} (serving again at {}); missed before serving {missed:?}",
        r.after[0],
        r.after,
        DateTime::from_timestamp(earliest, 0).unwrap(),
        r.serving,
    );
}

#[test]
fn next_fire_at_is_the_coming_whole_second() {
    let dir = tempfile::tempdir().unwrap();
    flow(
        dir.path(),
        "ticks.yaml",
        r#"
id: ticks
triggers:
  - {id: tick, type: cron, schedule: "* * * * * *"}
  - {id: nightly, type: cron, schedule: "0 3 * * *"}
nodes:
  - {id: note, type: map, mapping: {at: event.scheduled_at}}
"#,
    );
    let daemon = start(dir.path(), "daemon");
    let next_fire_at = |trigger: &str| -> Value {
        let flows = get(&daemon, "/api/v1/flows");
        let flow = flows["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == "ticks")
            .unwrap_or_else(|| panic!("flow `ticks` is not loaded: {flows:#}"))
            .clone();
        flow["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == trigger)
            .unwrap_or_else(|| panic!("no trigger `{trigger}` in {flow:#}"))["next_fire_at"]
            .clone()
    };
    wait_until("next_fire_at is set", TIMEOUT, || {
        !next_fire_at("tick").is_null()
    });
    let mut seen = BTreeSet::new();
    let mut future = 0;
    let samples = 12;
    for _ in 0..samples {
        let asked = Utc::now();
        let next = time(&next_fire_at("tick"));
        let answered = Utc::now();
        assert_eq!(
            next.nanosecond(),
            0,
            "next_fire_at {next} is not a whole second"
        );
        // While an instant's run is being admitted, it may still be shown.
        assert!(
            next > asked - chrono::Duration::milliseconds(500)
                && next <= answered + chrono::Duration::seconds(1),
            "next_fire_at {next}, asked at {asked}, answered at {answered}"
        );
        if next > answered {
            future += 1;
        }
        seen.insert(next);
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        future * 4 >= samples * 3,
        "next_fire_at was in the future in only {future} of {samples} samples"
    );
    assert!(seen.len() >= 2, "next_fire_at did not move on: {seen:?}");

    let asked = Utc::now();
    let nightly = time(&next_fire_at("nightly"));
    let today = asked.date_naive().and_hms_opt(3, 0, 0).unwrap().and_utc();
    let expected = if today > asked {
        today
    } else {
        today + chrono::Duration::days(1)
    };
    assert_eq!(nightly, expected, "next_fire_at of \"0 3 * * *\" (UTC)");
}

#[test]
fn cron_fires_once_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    flow(
        dir.path(),
        "ticks.yaml",
        &cron_flow("* * * * * *", "skip", "[default, acme]"),
    );
    let mut daemon = start(dir.path(), "daemon");
    let mut per_tenant = BTreeMap::new();
    wait_until("both tenants' cron runs", TIMEOUT, || {
        daemon.weir.assert_running();
        for tenant in ["default", "acme"] {
            per_tenant.insert(tenant, fired(&daemon, Some(tenant)));
        }
        per_tenant.values().all(|f| f.len() >= 3)
    });
    for (tenant, fired) in &per_tenant {
        assert_once_each_whole_second(fired, &format!("tenant {tenant}"));
        let at: Vec<DateTime<Utc>> = fired.iter().map(|f| f.at).collect();
        assert_no_gaps(&at, 1, &format!("tenant {tenant}"));
    }
    for run in runs(&daemon, "ticks", Some("acme")) {
        assert_eq!(run["tenant"], "acme", "a run listed for acme: {run:#}");
    }
    // Each tenant fires each instant: with no gaps, their instants overlap.
    let instants = |tenant: &str| -> BTreeSet<DateTime<Utc>> {
        per_tenant[tenant].iter().map(|f| f.at).collect()
    };
    let both: Vec<_> = instants("default")
        .intersection(&instants("acme"))
        .copied()
        .collect();
    assert!(
        both.len() >= 2,
        "the tenants fired different instants: {per_tenant:#?}"
    );
}
