//! The data folder when it is damaged or full: a record that cannot be
//! read back is listed as `corrupt` and counted (never a 500 for a whole
//! list, never a silent gap); an unfinished run that cannot be read is
//! reported stuck; a disk that fills up makes weir refuse events with 503
//! (none acknowledged is lost) and exit non-zero, and a restart once there
//! is space finishes every acknowledged run.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use weir_testkit::api::run_and_event;
use weir_testkit::{Api, Daemon, wait_until, write_flow};

const TIMEOUT: Duration = Duration::from_secs(30);

const FLOW: &str = r#"
id: keep
triggers: [{id: hook, type: webhook}]
nodes:
  - {id: first, type: map, mapping: {n: event.body.n}, next: done}
  - {id: done, type: map, mapping: {n: nodes.first.n}}
"#;

/// Runs that wait an hour (they park).
const WAITING_FLOW: &str = r#"
id: keep
triggers: [{id: hook, type: webhook}]
nodes:
  - {id: first, type: map, mapping: {n: event.body.n}, next: pause}
  - {id: pause, type: delay, for: 1h}
"#;

/// Overwrites what `key` holds in sled tree `tree` of the data folder (the
/// daemon must be stopped).
fn poke(data: &Path, tree: &str, key: &[u8], value: &[u8]) {
    let db = sled::open(data).unwrap();
    db.open_tree(tree).unwrap().insert(key, value).unwrap();
    db.flush().unwrap();
}

fn key(tenant: &str, run: &str) -> Vec<u8> {
    [tenant.as_bytes(), b"\0", run.as_bytes()].concat()
}

#[test]
fn records_that_cannot_be_read_are_listed_as_corrupt_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "keep.yaml", WAITING_FLOW);
    let first = Daemon::start(dir.path(), "first", &[], &[]);
    let api = Api::new(&first);
    let runs: Vec<String> = (0..3)
        .map(|n| run_and_event(&api.hook("/hooks/default/keep/hook", &json!({"n": n}), &[])).0)
        .collect();
    for run in &runs {
        api.wait_for(run, "waiting");
    }
    first.weir.terminate();
    first.weir.finish(TIMEOUT);
    // The middle run's record and its entry in the index of unfinished
    // runs are damaged.
    poke(
        &first.data,
        "runs",
        &key("default", &runs[1]),
        b"{\"id\": \"tru",
    );
    poke(
        &first.data,
        "active",
        &key("default", &runs[1]),
        b"\x00garbage",
    );

    let daemon = Daemon::start(dir.path(), "second", &[], &[]);
    let api = Api::new(&daemon);
    for query in ["limit=50", "tenant=default&limit=50"] {
        let list = api.list(query);
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 3, "{query}: {list:#}");
        assert_eq!(items[1]["id"], runs[1].as_str(), "{list:#}");
        assert_eq!(items[1]["status"], "corrupt", "{list:#}");
        assert!(
            items[1]["error"].as_str().unwrap().contains("decode"),
            "{list:#}"
        );
        assert_eq!(items[0]["status"], "waiting", "{list:#}");
    }
    let list = api.list("status=corrupt&limit=50");
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list:#}");
    let list = api.list("status=waiting&limit=50");
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list:#}");
    let shown = api.run(&runs[1]);
    assert_eq!(shown["status"], "corrupt", "{shown:#}");
    let message = api
        .post(&format!("/api/v1/runs/{}/cancel", runs[1]), &json!({}))
        .assert_error(409, "conflict");
    assert!(message.contains("cannot be read"), "{message}");
    // The others are whole, and the damaged one is reported stuck.
    api.run(&runs[0]);
    let ready = api.get_ok("/readyz");
    assert_eq!(ready["stuck"], 1, "{ready:#}");
    let metrics = api.metrics();
    assert!(metrics.contains("weir_runs_stuck 1"), "{metrics}");
    assert!(metrics.contains("weir_records_unreadable 1"), "{metrics}");
    let log = daemon.weir.stderr();
    assert!(log.contains("cannot be read"), "{log}");
}

/// Runs `cmd`; whether it succeeded.
fn sh(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// A tmpfs of a few MiB, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        )
        .then(|| Self {
            path: path.to_path_buf(),
        })
    }

    /// Fills it up but for `room` bytes.
    fn fill(&self, room: u64) {
        let free = fs_free(&self.path);
        let ballast = free.saturating_sub(room);
        std::fs::write(self.path.join("ballast"), vec![0u8; ballast as usize]).unwrap();
    }

    fn empty(&self) {
        std::fs::remove_file(self.path.join("ballast")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        sh("umount", &["-l", self.path.to_str().unwrap()]);
    }
}

/// Free bytes on the file system of `path`.
fn fs_free(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_full_disk_makes_weir_refuse_events_and_exit_and_a_restart_finishes_every_acknowledged_run() {
    let dir = tempfile::tempdir().unwrap();
    let disk_path = dir.path().join("disk");
    let Some(disk) = SmallDisk::mount(&disk_path, "8m") else {
        assert!(
            !weir_testkit::in_ci(),
            "mounting a tmpfs (as root) is needed under CI"
        );
        eprintln!("NOTICE: cannot mount a tmpfs (not root?); the full-disk test is skipped");
        return;
    };
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "keep.yaml", FLOW);
    let data = disk.path.join("data");
    let args = [
        "serve",
        "--flows",
        flows.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--grace",
        "1s",
    ];
    let spawn = |label: &str| {
        let mut weir =
            weir_testkit::Weir::spawn_with(dir.path(), label, &args, &[("WEIR_LOG", "info")]);
        let mut base = None;
        wait_until("the daemon serves", TIMEOUT, || {
            weir.assert_running();
            base = weir
                .stderr()
                .lines()
                .find(|l| l.contains("weir is serving"))
                .and_then(|l| l.split("address=").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .map(|a| format!("http://{a}"));
            base.is_some()
        });
        (weir, Api::at(&base.unwrap()))
    };
    let (first, api) = spawn("first");
    disk.fill(256 << 10);
    let body = json!({"n": 0, "pad": "x".repeat(4000)});
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for n in 0..2000 {
        let mut body = body.clone();
        body["n"] = json!(n);
        match api.try_hook("keep", &body) {
            Ok(a) if a.status == 202 => acknowledged.push(run_and_event(&a).0),
            Ok(a) => {
                assert_eq!(a.status, 503, "refused, never a 500: {a}");
                assert_eq!(a.retry_after.as_deref(), Some("5"), "{a}");
                a.assert_error(503, "unavailable");
                refused += 1;
            }
            // It stopped: the storage failed.
            Err(_) => break,
        }
    }
    assert!(
        !acknowledged.is_empty(),
        "nothing was accepted before the disk filled"
    );
    let done = first.finish(TIMEOUT);
    assert_eq!(done.code, Some(1), "{done}");
    assert!(
        done.stderr.contains("storage failed") && done.stderr.contains("start weir again"),
        "{done}"
    );
    assert!(!done.stderr.contains("panicked"), "{done}");
    eprintln!(
        "{} acknowledged, {refused} refused with 503",
        acknowledged.len()
    );

    // Space again: every acknowledged run is there and finishes.
    disk.empty();
    let (second, api) = spawn("second");
    for run in &acknowledged {
        api.wait_for(run, "succeeded");
    }
    let ready = api.get("/readyz");
    assert_eq!(ready.status, 200, "{ready}");
    drop(second);
    drop(disk);
}
