//! The sled store checked against the in-memory model: random sequences of
//! commits, with the database closed and reopened in between, must read back
//! exactly what the model holds.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;
use weir_storage::{
    Commit, DedupeRecord, DeliveryRecord, DeliveryStatus, DeliveryTarget, FlowSnapshot,
    MemoryStore, NodeRecord, NodeStatus, RunRecord, RunStatus, SeenRecord, SledStore, Store,
    TriggerKey, Write,
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

fn run_record() -> impl Strategy<Value = RunRecord> {
    (0..TENANTS.len(), 0..RUNS.len(), status(), any::<i32>()).prop_map(|(t, r, status, n)| {
        RunRecord {
            id: run_id(t, r),
            tenant: TENANTS[t].into(),
            flow: "f".into(),
            flow_version: "v1".into(),
            trigger: "hook".into(),
            concurrency_key: None,
            attempt: 1,
            status,
            event: std::sync::Arc::new(json!({"n": n})),
            error: None,
            created_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            started_at: None,
            finished_at: None,
        }
    })
}

const FLOWS: &[&str] = &["f", "f2"];

fn trigger() -> impl Strategy<Value = TriggerKey> {
    (0..TENANTS.len(), 0..FLOWS.len(), 0..2u8)
        .prop_map(|(t, f, g)| TriggerKey::new(TENANTS[t], FLOWS[f], &format!("t{g}")))
}

fn all_triggers() -> Vec<TriggerKey> {
    let mut out = Vec::new();
    for t in TENANTS {
        for f in FLOWS {
            for g in 0..2 {
                out.push(TriggerKey::new(t, f, &format!("t{g}")));
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
            any::<u8>()
        )
            .prop_map(|(t, r, n, status, attempts)| {
                let mut record = NodeRecord::new(NODES[n], "a");
                record.status = status;
                record.attempts = attempts.into();
                record.output = Some(json!([attempts]));
                Write::Node {
                    tenant: TENANTS[t].into(),
                    run: run_id(t, r),
                    record,
                }
            }),
        (0..3u8).prop_map(|v| Write::Snapshot(FlowSnapshot {
            flow: "f".into(),
            version: format!("v{v}"),
            file: "f.yaml".into(),
            source: format!("id: f # {v}"),
        })),
        (0..3u8, any::<bool>()).prop_map(|(d, dead)| Write::Delivery(DeliveryRecord {
            id: format!("run:{d}"),
            tenant: "default".into(),
            flow: "f".into(),
            run: "run".into(),
            node: format!("n{d}"),
            event: "ev".into(),
            target: DeliveryTarget::Amqp {
                exchange: "x".into(),
                routing_key: "k".into(),
                format: "payload".into(),
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
        })),
        (0..3u8).prop_map(|d| Write::RemoveDelivery(format!("run:{d}"))),
        (trigger(), 0..3u8, 0..3i64).prop_map(|(trigger, k, at)| Write::Dedupe {
            trigger,
            key: format!("k{k}\0x"),
            record: DedupeRecord {
                run: format!("r{k}"),
                event: "e".into(),
                at: Utc.timestamp_opt(1_700_000_000 + at, 0).unwrap()
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
        (trigger(), any::<u16>()).prop_map(|(trigger, c)| Write::Cursor {
            trigger,
            cursor: json!({"page": c})
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
    let failed = |r: &RunRecord| r.status == RunStatus::Failed;
    for after in [None, Some("0190-b-t1")] {
        let ids = |runs: Vec<RunRecord>| {
            runs.into_iter()
                .map(|r| (r.tenant, r.id))
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
                model.commit(commit.clone()).await.unwrap();
                sled.commit(commit).await.unwrap();
            }
            Op::Burst(commits) => {
                let mut tickets = Vec::new();
                for writes in commits {
                    let commit = Commit { writes };
                    model.commit(commit.clone()).await.unwrap();
                    tickets.push(sled.commit(commit));
                }
                for ticket in tickets {
                    ticket.await.unwrap();
                }
            }
            Op::Reopen => {
                sled.close().await;
                drop(sled);
                sled = SledStore::open(dir.path()).unwrap();
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
