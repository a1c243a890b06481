//! The sled store checked against the in-memory model: random sequences of
//! commits, with the database closed and reopened in between, must read back
//! exactly what the model holds.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;
use weir_storage::{
    ActionOverride, Commit, ConnectionRecord, ConnectionRequestRecord, ConnectionState,
    DedupeRecord, DeliveryRecord, DeliveryStatus, DeliveryTarget, FlowSnapshot, IdempotencyRecord,
    Listed, MAX_VALUE_DEPTH, MemoryStore, NodeRecord, NodeStatus, RequestStatus, RunRecord,
    RunStatus, Sealed, SeenRecord, SledStore, Store, TriggerKey, Write,
};

const TENANTS: &[&str] = &["default", "acme", "acme-2"];
const RUNS: &[&str] = &["0190-a", "0190-b", "0190-b1", "0191-c"];

/// Run ids are unique across tenants (they are UUIDv7s in weir).
fn run_id(t: usize, r: usize) -> String {
    format!("{}-t{t}", RUNS[r])
}
const NODES: &[&str] = &["a", "b", "loop[0].c", "loop[10].c"];

fn status() -> impl Strategy<Value = RunStatus> {
    prop_oneof![
        Just(RunStatus::Queued),
        Just(RunStatus::Running),
        Just(RunStatus::Waiting),
        Just(RunStatus::Succeeded),
        Just(RunStatus::Failed),
        Just(RunStatus::Cancelled),
    ]
}

fn node_status() -> impl Strategy<Value = NodeStatus> {
    prop_oneof![
        Just(NodeStatus::Pending),
        Just(NodeStatus::Running),
        Just(NodeStatus::Waiting),
        Just(NodeStatus::Succeeded),
        Just(NodeStatus::Failed),
        Just(NodeStatus::Skipped),
    ]
}

/// `levels` arrays within each other around `leaf`.
fn nested(levels: usize, leaf: serde_json::Value) -> serde_json::Value {
    (0..levels).fold(leaf, |inner, _| json!([inner]))
}

/// Values of every depth, many of them around the stored limit: a commit
/// holding one too deep is refused by both stores, and whatever commits
/// reads back equal.
fn deep_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        3 => any::<i32>().prop_map(|n| json!({"n": n})),
        2 => (MAX_VALUE_DEPTH - 3..MAX_VALUE_DEPTH + 3).prop_map(|d| nested(d, json!({"deep": d}))),
        1 => (0..200usize).prop_map(|d| nested(d, json!(d))),
    ]
}

fn run_record() -> impl Strategy<Value = RunRecord> {
    (
        0..TENANTS.len(),
        0..RUNS.len(),
        status(),
        deep_value(),
        0..2i64,
        prop::option::of(0..3i64),
    )
        .prop_map(|(t, r, status, event, created, took)| RunRecord {
            id: run_id(t, r),
            tenant: TENANTS[t].into(),
            flow: "f".into(),
            flow_version: "v1".into(),
            trigger: "hook".into(),
            concurrency_key: None,
            connection: None,
            attempt: 1,
            status,
            event: std::sync::Arc::new(event),
            error: None,
            created_at: Utc.timestamp_opt(1_700_000_000 + created, 0).unwrap(),
            started_at: None,
            finished_at: took.map(|s| Utc.timestamp_opt(1_700_000_000 + created + s, 0).unwrap()),
        })
}

const FLOWS: &[&str] = &["f", "f2"];

/// A trigger's state: of the tenant (connection 0), or of one of its
/// connections (`conn-0`, `conn-1`) in a per-connection flow.
fn trigger_key(t: usize, f: usize, g: u8, c: u8) -> TriggerKey {
    let trigger = format!("t{g}");
    match c {
        0 => TriggerKey::new(TENANTS[t], FLOWS[f], &trigger),
        c => TriggerKey::for_connection(TENANTS[t], FLOWS[f], &trigger, &format!("conn-{}", c - 1)),
    }
}

fn trigger() -> impl Strategy<Value = TriggerKey> {
    (0..TENANTS.len(), 0..FLOWS.len(), 0..2u8, 0..3u8)
        .prop_map(|(t, f, g, c)| trigger_key(t, f, g, c))
}

fn all_triggers() -> Vec<TriggerKey> {
    let mut out = Vec::new();
    for t in 0..TENANTS.len() {
        for f in 0..FLOWS.len() {
            for g in 0..2 {
                for c in 0..3 {
                    out.push(trigger_key(t, f, g, c));
                }
            }
        }
    }
    out
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        run_record().prop_map(Write::NewRun),
        run_record().prop_map(Write::Run),
        (
            0..TENANTS.len(),
            0..RUNS.len(),
            0..NODES.len(),
            node_status(),
            any::<u8>(),
            deep_value(),
        )
            .prop_map(|(t, r, n, status, attempts, output)| {
                let mut record = NodeRecord::new(NODES[n], "a");
                record.status = status;
                record.attempts = attempts.into();
                record.output = Some(output);
                Write::Node {
                    tenant: TENANTS[t].into(),
                    run: run_id(t, r),
                    record,
                }
            }),
        (0..TENANTS.len(), 0..RUNS.len()).prop_map(|(t, r)| Write::ForgetRun {
            tenant: TENANTS[t].into(),
            run: run_id(t, r),
        }),
        (0..3u8).prop_map(|v| Write::Snapshot(FlowSnapshot {
            flow: "f".into(),
            version: format!("v{v}"),
            file: "f.yaml".into(),
            source: format!("id: f # {v}"),
        })),
        (0..3u8, any::<bool>(), 0..TENANTS.len()).prop_map(|(d, dead, t)| Write::Delivery(
            DeliveryRecord {
                id: format!("run:{d}"),
                tenant: TENANTS[t].into(),
                flow: "f".into(),
                run: "run".into(),
                node: format!("n{d}"),
                event: "ev".into(),
                target: DeliveryTarget::Amqp {
                    exchange: "x".into(),
                    routing_key: "k".into(),
                    format: weir_storage::DeliveryFormat::Payload,
                },
                payload: json!({"d": d}),
                status: if dead {
                    DeliveryStatus::Dead
                } else {
                    DeliveryStatus::Pending
                },
                attempts: 0,
                last_error: None,
                created_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                next_attempt_at: None,
                lane: "run".into(),
                seq: u32::from(d),
                max_attempts: None,
                unroutable: dead,
            }
        )),
        (0..3u8).prop_map(|d| Write::RemoveDelivery(format!("run:{d}"))),
        (trigger(), 0..3u8, 0..3i64).prop_map(|(trigger, k, at)| Write::Dedupe {
            trigger,
            key: format!("k{k}\0x"),
            record: DedupeRecord {
                run: format!("r{k}"),
                event: "e".into(),
                at: Utc.timestamp_opt(1_700_000_000 + at, 0).unwrap(),
                tenant: (k == 1).then(|| "acme".into()),
            },
        }),
        (trigger(), 0..3u8).prop_map(|(trigger, k)| Write::RemoveDedupe {
            trigger,
            key: format!("k{k}\0x")
        }),
        (trigger(), 0..100i64).prop_map(|(trigger, at)| Write::CronFired {
            trigger,
            at: Utc.timestamp_opt(1_700_000_000 + at, 0).unwrap()
        }),
        (trigger(), 0..3u8, prop::option::of(0..3u8)).prop_map(|(trigger, k, v)| Write::Seen {
            trigger,
            key: format!("item{k}"),
            record: v.map(|v| SeenRecord {
                version: json!(v),
                item: json!({"id": k, "v": v})
            }),
        }),
        (trigger(), deep_value()).prop_map(|(trigger, cursor)| Write::Cursor { trigger, cursor }),
        // A key shared by tenants (a signature), remembered for one of them.
        (0..3u8, 0..TENANTS.len()).prop_map(|(k, t)| Write::Dedupe {
            trigger: TriggerKey::new("", "f", "t0"),
            key: format!("k{k}\0x"),
            record: DedupeRecord {
                run: "r".into(),
                event: "e".into(),
                at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                tenant: Some(TENANTS[t].into()),
            },
        }),
        (0..TENANTS.len()).prop_map(|t| Write::EraseTenant(TENANTS[t].into())),
        (0..TENANTS.len(), 0..3u8, 0..3usize, deep_value()).prop_map(
            |(t, c, state, parameters)| {
                Write::Connection(ConnectionRecord {
                    id: format!("conn-{c}"),
                    tenant: TENANTS[t].into(),
                    integration: "crm".into(),
                    name: format!("crm {c}"),
                    state: ConnectionState::ALL[state],
                    parameters,
                    credentials: [(
                        "api_key".to_owned(),
                        Sealed {
                            kid: "k1".into(),
                            nonce: "bm9uY2U=".into(),
                            data: format!("ZGF0YQ{c}"),
                        },
                    )]
                    .into(),
                    created_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                    updated_at: Utc.timestamp_opt(1_700_000_000 + i64::from(c), 0).unwrap(),
                    last_used_at: None,
                    error: (state > 0).then(|| "refused".into()),
                    credentials_expire_at: None,
                    credentials_granted_at: None,
                    overrides: match c {
                        1 => [(
                            "create-contact".to_owned(),
                            ActionOverride {
                                input_defaults: Some(json!({"owner": "\"ops\""})),
                                body: None,
                                output: None,
                                updated_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                            },
                        )]
                        .into(),
                        _ => Default::default(),
                    },
                })
            }
        ),
        (0..TENANTS.len(), 0..3u8, any::<bool>()).prop_map(|(t, r, done)| {
            Write::ConnectionRequest(ConnectionRequestRecord {
                id: format!("req-{r}"),
                tenant: TENANTS[t].into(),
                integration: "crm".into(),
                parameters: json!({"region": "eu"}),
                connection_id: None,
                redirect_uri: None,
                status: if done {
                    RequestStatus::Success
                } else {
                    RequestStatus::Pending
                },
                state_hash: format!("{r:064}"),
                verifier: None,
                created_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                expires_at: Utc.timestamp_opt(1_700_000_600, 0).unwrap(),
                error: None,
                result: done.then(|| "conn-0".into()),
            })
        }),
        (0..TENANTS.len(), 0..3u8).prop_map(|(t, c)| Write::RemoveConnection {
            tenant: TENANTS[t].into(),
            id: format!("conn-{c}"),
        }),
        (0..TENANTS.len(), 0..3u8, 0..3i64).prop_map(|(t, k, at)| {
            Write::Idempotency(IdempotencyRecord {
                tenant: TENANTS[t].into(),
                key: format!("key-{k}\0/x"),
                request_hash: format!("{k:064}"),
                run_id: format!("run-{k}"),
                at: Utc.timestamp_opt(1_700_000_000 + at, 0).unwrap(),
            })
        }),
        (0..TENANTS.len(), 0..3u8).prop_map(|(t, k)| Write::RemoveIdempotency {
            tenant: TENANTS[t].into(),
            key: format!("key-{k}\0/x"),
        }),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Commit(Vec<Write>),
    /// Several commits submitted at once, so they share a group.
    Burst(Vec<Vec<Write>>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(write(), 0..6).prop_map(Op::Commit),
        2 => prop::collection::vec(prop::collection::vec(write(), 1..4), 1..6).prop_map(Op::Burst),
        1 => Just(Op::Reopen),
    ]
}

fn assert_same(sled: &dyn Store, model: &dyn Store) {
    for (t, tenant) in TENANTS.iter().enumerate() {
        for r in 0..RUNS.len() {
            let run = &run_id(t, r);
            assert_eq!(
                sled.run(tenant, run).unwrap(),
                model.run(tenant, run).unwrap()
            );
            assert_eq!(
                sled.nodes(tenant, run).unwrap(),
                model.nodes(tenant, run).unwrap()
            );
            assert_eq!(
                sled.list_runs(tenant, Some(run), 2).unwrap(),
                model.list_runs(tenant, Some(run), 2).unwrap()
            );
        }
        assert_eq!(
            sled.list_runs(tenant, None, 10).unwrap(),
            model.list_runs(tenant, None, 10).unwrap()
        );
    }
    assert_eq!(
        sled.unfinished_runs().unwrap(),
        model.unfinished_runs().unwrap()
    );
    assert_eq!(sled.active_runs().unwrap(), model.active_runs().unwrap());
    for t in 0..TENANTS.len() {
        for r in 0..RUNS.len() {
            let run = &run_id(t, r);
            assert_eq!(
                sled.run_by_id(run).unwrap().map(|r| r.id),
                model.run_by_id(run).unwrap().map(|r| r.id)
            );
        }
    }
    let failed = |r: &Listed| r.run().is_some_and(|r| r.status == RunStatus::Failed);
    for after in [None, Some("0190-b-t1")] {
        let ids = |runs: Vec<Listed>| {
            runs.into_iter()
                .map(|r| match r {
                    Listed::Run(r) => (r.tenant, r.id),
                    Listed::Unreadable(u) => panic!("unreadable: {u:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(sled.list_all_runs(after, 3, 100, &|_| true).unwrap()),
            ids(model.list_all_runs(after, 3, 100, &|_| true).unwrap())
        );
        assert_eq!(
            ids(sled.list_all_runs(after, 10, 100, &failed).unwrap()),
            ids(model.list_all_runs(after, 10, 100, &failed).unwrap())
        );
    }
    for before in [1, 3] {
        let before = Utc.timestamp_opt(1_700_000_000 + before, 0).unwrap();
        for after in [None, Some("0190-b-t1")] {
            for scan in [2, 100] {
                assert_eq!(
                    sled.finished_before(before, after, scan).unwrap(),
                    model.finished_before(before, after, scan).unwrap(),
                    "finished_before({before}, {after:?}, {scan})"
                );
            }
        }
    }
    for trigger in all_triggers() {
        assert_eq!(
            sled.cron_fired(&trigger).unwrap(),
            model.cron_fired(&trigger).unwrap()
        );
        assert_eq!(sled.seen(&trigger).unwrap(), model.seen(&trigger).unwrap());
        assert_eq!(
            sled.cursor(&trigger).unwrap(),
            model.cursor(&trigger).unwrap()
        );
        for k in 0..3 {
            let key = format!("k{k}\0x");
            assert_eq!(
                sled.dedupe(&trigger, &key).unwrap(),
                model.dedupe(&trigger, &key).unwrap()
            );
        }
    }
    let before = Utc.timestamp_opt(1_700_000_001, 0).unwrap();
    assert_eq!(
        sled.dedupes_before(before, 100).unwrap(),
        model.dedupes_before(before, 100).unwrap()
    );
    assert_eq!(sled.deliveries().unwrap(), model.deliveries().unwrap());
    assert_eq!(sled.tenants().unwrap(), model.tenants().unwrap());
    assert_eq!(
        sled.all_connections().unwrap(),
        model.all_connections().unwrap()
    );
    for r in 0..3 {
        let id = format!("req-{r}");
        assert_eq!(
            sled.connection_request(&id).unwrap(),
            model.connection_request(&id).unwrap()
        );
    }
    let mut old_keys = sled.idempotency_before(before, 100).unwrap();
    let mut model_keys = model.idempotency_before(before, 100).unwrap();
    old_keys.sort();
    model_keys.sort();
    assert_eq!(old_keys, model_keys);
    for tenant in TENANTS {
        for k in 0..3 {
            let key = format!("key-{k}\0/x");
            assert_eq!(
                sled.idempotency(tenant, &key).unwrap(),
                model.idempotency(tenant, &key).unwrap()
            );
        }
        assert_eq!(
            sled.connections(tenant).unwrap(),
            model.connections(tenant).unwrap()
        );
        for c in 0..3 {
            let id = format!("conn-{c}");
            assert_eq!(
                sled.connection(tenant, &id).unwrap(),
                model.connection(tenant, &id).unwrap()
            );
        }
    }
    let shared = TriggerKey::new("", "f", "t0");
    for k in 0..3 {
        let key = format!("k{k}\0x");
        assert_eq!(
            sled.dedupe(&shared, &key).unwrap(),
            model.dedupe(&shared, &key).unwrap()
        );
    }
    for v in 0..3 {
        let version = format!("v{v}");
        assert_eq!(
            sled.snapshot("f", &version).unwrap(),
            model.snapshot("f", &version).unwrap()
        );
    }
}

async fn check(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let model = MemoryStore::new();
    let mut sled: Arc<SledStore> = SledStore::open(dir.path()).unwrap();
    for op in ops {
        match op {
            Op::Commit(writes) => {
                let commit = Commit { writes };
                let expected = model
                    .commit(commit.clone())
                    .await
                    .map_err(|e| e.to_string());
                let got = sled.commit(commit).await.map_err(|e| e.to_string());
                assert_eq!(got, expected);
            }
            Op::Burst(commits) => {
                let mut tickets = Vec::new();
                for writes in commits {
                    let commit = Commit { writes };
                    let expected = model
                        .commit(commit.clone())
                        .await
                        .map_err(|e| e.to_string());
                    tickets.push((sled.commit(commit), expected));
                }
                for (ticket, expected) in tickets {
                    assert_eq!(ticket.await.map_err(|e| e.to_string()), expected);
                }
            }
            Op::Reopen => {
                sled.close().await;
                drop(sled);
                sled = reopen(dir.path());
            }
        }
        assert_same(sled.as_ref(), &model);
    }
    sled.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sled_store_matches_the_model(ops in prop::collection::vec(op(), 1..24)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check(ops));
    }
}

#[tokio::test]
async fn a_commit_after_close_fails_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    sled.close().await;
    let result = sled.commit(Commit::new()).await;
    assert!(result.is_err());
}

/// Forgetting runs: only finished ones go, with their nodes, event and id
/// index entry; a run restarted in the same group stays.
#[tokio::test]
async fn only_finished_runs_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    let model = MemoryStore::new();
    let at = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
    let run = |id: &str, status: RunStatus, created: i64, finished: Option<i64>| RunRecord {
        created_at: at(created),
        started_at: Some(at(created)),
        finished_at: finished.map(at),
        ..simple_run(id, status, json!({"id": id}))
    };
    let forget = |id: &str| Write::ForgetRun {
        tenant: "default".into(),
        run: id.into(),
    };
    for store in [&*sled as &dyn Store, &model] {
        let mut setup = Commit::new();
        for (id, status, created, finished) in [
            ("01-old-done", RunStatus::Succeeded, 0, Some(1)),
            ("02-old-waiting", RunStatus::Waiting, 0, None),
            ("03-old-retried", RunStatus::Failed, 0, Some(1)),
            ("04-new-done", RunStatus::Succeeded, 50, Some(51)),
            ("05-newer-done", RunStatus::Succeeded, 60, Some(61)),
        ] {
            setup.push(Write::NewRun(run(id, status, created, finished)));
            setup.push(Write::Node {
                tenant: "default".into(),
                run: id.into(),
                record: NodeRecord::new("a", "map"),
            });
        }
        store.commit(setup).await.unwrap();

        let expired = store.finished_before(at(10), None, 100).unwrap();
        let ids: Vec<&str> = expired.runs.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids, ["01-old-done", "03-old-retried"]);
        assert_eq!(expired.next, None, "the scan stops at the first newer run");
        let first = store.finished_before(at(10), None, 1).unwrap();
        assert_eq!(first.next.as_deref(), Some("01-old-done"));
        let rest = store
            .finished_before(at(10), Some("01-old-done"), 100)
            .unwrap();
        assert_eq!(rest.runs.len(), 1);

        // A retry restarts 03 just before the sweep's commit, in one group.
        let retried = submit_together(
            store,
            vec![
                Commit::new().run(run("03-old-retried", RunStatus::Running, 0, None)),
                Commit::new()
                    .with(forget("01-old-done"))
                    .with(forget("02-old-waiting"))
                    .with(forget("03-old-retried")),
            ],
        );
        retried.await;
        assert_eq!(store.run("default", "01-old-done").unwrap(), None);
        assert_eq!(store.run_by_id("01-old-done").unwrap(), None);
        assert!(store.nodes("default", "01-old-done").unwrap().is_empty());
        for kept in ["02-old-waiting", "03-old-retried", "04-new-done"] {
            let record = store.run("default", kept).unwrap().unwrap();
            assert_eq!(*record.event, json!({"id": kept}), "{kept}");
            assert_eq!(store.nodes("default", kept).unwrap().len(), 1, "{kept}");
        }
        assert_eq!(store.unfinished_runs().unwrap().len(), 2);
    }
    sled.close().await;
    drop(sled);
    // Gone for good: reopened, the sled store agrees.
    let sled = reopen(dir.path());
    assert_eq!(sled.run_by_id("01-old-done").unwrap(), None);
    assert_eq!(sled.list_runs("default", None, 10).unwrap().len(), 4);
    sled.close().await;
}

/// Submits `commits` at once (the sled store groups them), then waits.
fn submit_together(
    store: &dyn Store,
    commits: Vec<Commit>,
) -> impl std::future::Future<Output = ()> + use<> {
    let tickets: Vec<_> = commits.into_iter().map(|c| store.commit(c)).collect();
    async move {
        for ticket in tickets {
            ticket.await.unwrap();
        }
    }
}

/// A run record of tenant `default`.
fn simple_run(id: &str, status: RunStatus, event: serde_json::Value) -> RunRecord {
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    RunRecord {
        id: id.into(),
        tenant: "default".into(),
        flow: "f".into(),
        flow_version: "v1".into(),
        trigger: "hook".into(),
        concurrency_key: None,
        connection: None,
        attempt: 1,
        status,
        event: Arc::new(event),
        error: None,
        created_at: at,
        started_at: Some(at),
        finished_at: status.is_finished().then_some(at),
    }
}

/// Opens a store again once the one before has let go of the folder's lock
/// (sled's own threads end a moment after its last handle is dropped).
fn reopen(dir: &std::path::Path) -> Arc<SledStore> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStore::open(dir) {
            Ok(store) => return store,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for the store's lock: {e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open the store again: {e}"),
        }
    }
}

/// Replaces the bytes stored under `key` in `tree`, as a damaged disk (or
/// an earlier version of weir) could have left them.
fn poke(dir: &std::path::Path, tree: &str, key: &[u8], value: &[u8]) {
    // The store's last handle lets go of the folder's lock when sled's own
    // threads end, a moment after it is dropped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let db = loop {
        match sled::open(dir) {
            Ok(db) => break db,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for the store's lock: {e}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open the store: {e}"),
        }
    };
    db.open_tree(tree).unwrap().insert(key, value).unwrap();
    db.flush().unwrap();
}

/// A record that does not decode never fails a whole list, and never
/// vanishes silently: lists show it as unreadable, lookups say so, and it
/// is counted once.
#[tokio::test]
async fn a_record_that_does_not_decode_is_listed_as_unreadable_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let sled = reopen(dir.path());
    let mut setup = Commit::new();
    for (id, status) in [
        ("01-a", RunStatus::Succeeded),
        ("02-b", RunStatus::Succeeded),
        ("03-c", RunStatus::Waiting),
    ] {
        setup.push(Write::NewRun(simple_run(id, status, json!({"id": id}))));
    }
    sled.commit(setup).await.unwrap();
    sled.close().await;
    drop(sled);
    poke(
        dir.path(),
        "runs",
        b"default\x0002-b",
        b"{\"id\": \"02-b\", trunc",
    );
    poke(dir.path(), "runs", b"default\x0003-c", b"not json");
    poke(dir.path(), "active", b"default\x0003-c", b"not json either");
    poke(dir.path(), "outbox", b"run:9", b"[1,");

    let sled = SledStore::open(dir.path()).unwrap();
    let listed = sled.list_runs("default", None, 10).unwrap();
    assert_eq!(listed.len(), 3);
    assert!(matches!(&listed[0], Listed::Unreadable(u) if u.id == "03-c" && u.tenant == "default"));
    assert!(
        matches!(&listed[1], Listed::Unreadable(u) if u.id == "02-b" && u.error.contains("decode"))
    );
    assert!(matches!(&listed[2], Listed::Run(r) if r.id == "01-a"));
    let all = sled.list_all_runs(None, 10, 100, &|_| true).unwrap();
    assert_eq!(
        all.iter().map(Listed::id).collect::<Vec<_>>(),
        ["03-c", "02-b", "01-a"]
    );
    match sled.run_by_id("02-b") {
        Err(weir_storage::Error::Unreadable(u)) => assert_eq!(u.id, "02-b"),
        other => panic!("expected an unreadable run, got {other:?}"),
    }
    let (active, unreadable) = sled.active_runs().unwrap();
    assert!(active.is_empty());
    assert_eq!(unreadable.len(), 1);
    assert_eq!(unreadable[0].id, "03-c");
    assert!(sled.unfinished_runs().unwrap().is_empty());
    assert!(sled.deliveries().unwrap().is_empty());
    // Counted once each, however often read: 02-b, 03-c and the delivery.
    assert_eq!(sled.unreadable_records(), 3);
    sled.close().await;
}

/// Records as deep as serde_json's guard refused to read (an earlier
/// version of weir stored webhook bodies of 127 levels) read back.
#[tokio::test]
async fn records_deeper_than_serde_jsons_guard_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let sled = reopen(dir.path());
    sled.commit(Commit::new().with(Write::NewRun(simple_run(
        "01-deep",
        RunStatus::Waiting,
        json!(null),
    ))))
    .await
    .unwrap();
    sled.close().await;
    drop(sled);
    let deep = json!({"body": nested(127, json!(1))});
    poke(
        dir.path(),
        "events",
        b"default\x0001-deep",
        deep.to_string().as_bytes(),
    );
    let sled = SledStore::open(dir.path()).unwrap();
    let run = sled.run("default", "01-deep").unwrap().unwrap();
    assert_eq!(*run.event, deep);
    assert_eq!(sled.unreadable_records(), 0);
    // And a commit that would go deeper than the stored limit is refused.
    let too_deep = simple_run(
        "02-deep",
        RunStatus::Running,
        nested(MAX_VALUE_DEPTH + 1, json!(1)),
    );
    let e = sled
        .commit(Commit::new().with(Write::NewRun(too_deep)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nested more than 100 levels"), "{e}");
    assert_eq!(sled.run("default", "02-deep").unwrap(), None);
    sled.close().await;
}
