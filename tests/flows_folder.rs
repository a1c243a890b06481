//! The flows folder while weir serves it: problems reading it never unload
//! what serves (a webhook answered 404 is lost: senders take it as final);
//! a change is seen even when the modification time and size stay the
//! same; links that lead nowhere or out of the folder are reported, not
//! followed; and a new file with a served flow's id is the duplicate.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::api::run_and_event;
use weir_testkit::{Api, Daemon, run_weir, wait_until, write_flow};

const TIMEOUT: Duration = Duration::from_secs(20);

fn flow(id: &str, tag: &str) -> String {
    format!(
        "id: {id}\ntriggers: [{{id: hook, type: webhook}}]\nnodes:\n  - {{id: tag, type: map, mapping: {{tag: '\"{tag}\"'}}}}\n"
    )
}

/// The `tag` a webhook's run of `flow` puts out: which version served it.
fn served_tag(api: &Api, flow: &str) -> Value {
    let a = api.hook(&format!("/hooks/default/{flow}/hook"), &json!({}), &[]);
    let (run, _) = run_and_event(&a);
    let run = api.wait_for(&run, "succeeded");
    weir_testkit::api::node(&run, "tag")["output"]["tag"].clone()
}

fn errors(api: &Api) -> String {
    api.flows()["errors"].to_string()
}

#[test]
fn a_flows_folder_moved_away_keeps_its_flows_serving_and_is_read_again_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "a.yaml", &flow("a", "v1"));
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    assert_eq!(served_tag(&api, "a"), "v1");

    let away = dir.path().join("away");
    std::fs::rename(&flows, &away).unwrap();
    wait_until("the folder problem is reported", TIMEOUT, || {
        errors(&api).contains("cannot read the flows folder")
    });
    assert_eq!(served_tag(&api, "a"), "v1", "it keeps serving");
    let log = daemon.weir.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("cannot read the folder") && l.contains(r#"kind="flow""#)),
        "{log}"
    );

    std::fs::rename(&away, &flows).unwrap();
    write_flow(&flows, "a.yaml", &flow("a", "v2"));
    wait_until("the folder is read again", TIMEOUT, || {
        !errors(&api).contains("cannot read") && served_tag(&api, "a") == "v2"
    });
}

#[test]
fn a_change_is_seen_though_the_file_keeps_its_size_and_modification_time() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    let file = write_flow(&flows, "a.yaml", &flow("a", "v1"));
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    assert_eq!(served_tag(&api, "a"), "v1");
    // Same size, same modification time (as `cp -p` or a fast editor can
    // leave it).
    let stamp = dir.path().join("stamp");
    std::fs::write(&stamp, "").unwrap();
    assert!(
        Command::new("touch")
            .arg("-r")
            .arg(&file)
            .arg(&stamp)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(&file, flow("a", "v9")).unwrap();
    assert!(
        Command::new("touch")
            .arg("-r")
            .arg(&stamp)
            .arg(&file)
            .status()
            .unwrap()
            .success()
    );
    wait_until("the new version serves", TIMEOUT, || {
        served_tag(&api, "a") == "v9"
    });
}

/// As root, permissions do not stop a read: weir runs as `nobody` here.
#[test]
fn a_file_that_cannot_be_read_keeps_serving_and_is_read_once_it_can_be() {
    let root = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&root.stdout).trim() != "0"
        || !Path::new("/usr/bin/setpriv").exists()
    {
        assert!(
            !weir_testkit::in_ci(),
            "this test needs root and setpriv under CI"
        );
        eprintln!("NOTICE: not root (or no setpriv); the unreadable-file test is skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    let file = write_flow(&flows, "a.yaml", &flow("a", "v1"));
    assert!(
        Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success()
    );
    let daemon = Daemon::start_under(
        dir.path(),
        "daemon",
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
        &[],
        &[],
    );
    let api = Api::new(&daemon);
    assert_eq!(served_tag(&api, "a"), "v1");
    assert!(
        Command::new("chmod")
            .arg("000")
            .arg(&file)
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(&file, flow("a", "v2")).unwrap();
    wait_until("the unreadable file is reported", TIMEOUT, || {
        errors(&api).contains("cannot read the file")
    });
    assert_eq!(served_tag(&api, "a"), "v1", "the last good version serves");
    // Readable again, unchanged since: read all the same.
    assert!(
        Command::new("chmod")
            .arg("644")
            .arg(&file)
            .status()
            .unwrap()
            .success()
    );
    wait_until("the file is read again", TIMEOUT, || {
        served_tag(&api, "a") == "v2"
    });
}

#[test]
fn dangling_links_and_links_out_of_the_folder_are_reported_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "a.yaml", &flow("a", "v1"));
    let outside = dir.path().join("outside.yaml");
    std::fs::write(&outside, "this: [is not a flow\n").unwrap();
    std::os::unix::fs::symlink(&outside, flows.join("out.yaml")).unwrap();
    std::os::unix::fs::symlink(flows.join("gone.yaml"), flows.join("dangling.yaml")).unwrap();
    std::os::unix::fs::symlink(flows.join("a.yaml"), flows.join("inside.yml")).unwrap();

    let done = run_weir(
        dir.path(),
        "validate",
        &["validate", flows.to_str().unwrap()],
        TIMEOUT,
    );
    assert_eq!(done.code, Some(1), "{done}");
    assert!(
        done.stdout
            .contains("dangling.yaml:1:1: error: a symbolic link to"),
        "{done}"
    );
    assert!(done.stdout.contains("which does not exist"), "{done}");
    assert!(
        done.stdout
            .contains("out.yaml:1:1: error: a symbolic link to"),
        "{done}"
    );
    assert!(done.stdout.contains("outside the flows folder"), "{done}");
    assert!(
        !done.stdout.contains("is not a flow"),
        "the outside file was read: {done}"
    );
    // A link within the folder is read: its flow is a duplicate of a.yaml.
    assert!(
        done.stdout.contains("inside.yml") && done.stdout.contains("duplicate flow id `a`"),
        "{done}"
    );

    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    let errors = errors(&api);
    assert!(
        errors.contains("dangling.yaml") && errors.contains("out.yaml"),
        "{errors}"
    );
    assert!(!errors.contains("is not a flow"), "{errors}");
    assert_eq!(served_tag(&api, "a"), "v1");

    // With --follow-symlinks, links out of the folder are read.
    let done = run_weir(
        dir.path(),
        "validate-follow",
        &["validate", "--follow-symlinks", flows.to_str().unwrap()],
        TIMEOUT,
    );
    assert!(done.stdout.contains("out.yaml:1:"), "{done}");
    assert!(!done.stdout.contains("outside the flows folder"), "{done}");
}

#[test]
fn a_new_file_with_a_served_flows_id_is_the_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    write_flow(&flows, "m.yaml", &flow("contacts", "original"));
    let daemon = Daemon::start(dir.path(), "daemon", &[], &[]);
    let api = Api::new(&daemon);
    assert_eq!(served_tag(&api, "contacts"), "original");
    // Its name sorts first.
    write_flow(&flows, "a.yaml", &flow("contacts", "newcomer"));
    wait_until("the newcomer is reported", TIMEOUT, || {
        let e = errors(&api);
        e.contains("a.yaml") && e.contains("duplicate flow id `contacts`")
    });
    assert_eq!(served_tag(&api, "contacts"), "original");
    let log = daemon.weir.stderr();
    assert!(log.contains("duplicate flow id `contacts`"), "{log}");
    let listed = api.flows();
    let file = listed["items"][0]["file"].as_str().unwrap();
    assert!(file.ends_with("m.yaml"), "{listed:#}");
}
