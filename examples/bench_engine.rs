//! In-process benchmark of the engine on sled, every commit durable.
//!
//! A 5-node flow (map → if → map → script → deliver) runs many times at a
//! given number of concurrent runs. Reported: runs/s, node-steps/s and how
//! many commits shared each disk flush; then the cost of one 6-field mapping
//! from a JSON event to a JSON value, and of one check of a 10-field input
//! against its compiled JSON Schema. Each figure is the median of several
//! rounds.
//!
//! ```text
//! cargo run --release -p weir-runtime --example bench_engine
//! cargo run --release -p weir-runtime --example bench_engine -- --runs 20000 --rounds 5
//! ```

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::Ordering;

// The allocator of the `weir` binary, so the figures match it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_nodes::script::{Expr, FLOW_SCOPE, Mapping, Origin, to_dynamic, to_json};
use weir_runtime::engine::{Clock, Engine, EngineOptions};
use weir_runtime::flow::{Flow, load_source};
use weir_storage::{RunStatus, SledStore};

const FLOW: &str = r#"
id: bench
vars: {source: crm}
triggers:
  - {id: hook, type: webhook}
nodes:
  - id: normalize
    type: map
    mapping:
      email: event.body.email.to_lower()
      full_name: event.body.first_name + " " + event.body.last_name
      source: vars.source
      kind: '"contact"'
      company: event.body.company.name
      vip: if event.body.orders > 10 { true } else { false }
    next: check
  - id: check
    type: if
    condition: nodes.normalize.email.contains("@")
    then: enrich
  - id: enrich
    type: map
    mapping:
      contact: nodes.normalize
      received: event.received_at
    next: score
  - id: score
    type: script
    script: |
      let score = event.body.orders * 10;
      if nodes.normalize.vip { score += 100; }
      #{ score: score, tier: if score > 150 { "gold" } else { "basic" } }
    next: publish
  - id: publish
    type: deliver
    target: amqp
    exchange: crm.events
    routing_key: contact.${nodes.score.tier}
    payload: '#{contact: nodes.enrich.contact, score: nodes.score.score}'
"#;

const NODES_PER_RUN: u64 = 5;

fn event(n: usize) -> Value {
    json!({
        "type": "webhook", "id": format!("ev{n}"), "trigger": "hook",
        "received_at": "2026-01-01T00:00:00.000Z", "method": "POST", "headers": {}, "query": {},
        "body": {
            "email": format!("Person{n}@Example.COM"), "first_name": "Ada", "last_name": "Lovelace",
            "company": {"name": "Analytical Engines Ltd", "size": 12}, "orders": n % 20,
            "tags": ["a", "b", "c"], "notes": "x".repeat(600),
        }
    })
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs `runs` runs, `concurrency` at a time; answers (seconds, commits, flushes).
async fn round(
    flow: &Arc<Flow>,
    runs: usize,
    concurrency: usize,
    options: &EngineOptions,
) -> (f64, u64, u64) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = SledStore::open(dir.path()).expect("the store opens");
    let engine = Engine::new(store.clone(), Clock::new(), options.clone());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (engine, flow, next) = (engine.clone(), flow.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= runs {
                        break;
                    }
                    let run = engine
                        .start(&flow, "default", "hook", event(n))
                        .await
                        .expect("start");
                    let done = engine.drive(run).await.expect("drive");
                    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("a worker");
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = store.stats();
    let (commits, flushes) = (
        stats.commits.load(Ordering::Relaxed),
        stats.flushes.load(Ordering::Relaxed),
    );
    store.close().await;
    (secs, commits, flushes)
}

async fn engine_bench(flow: &Arc<Flow>, rounds: usize, runs_at_64: usize) {
    println!("engine: 5-node flow (map → if → map → script → deliver), sled, every commit flushed");
    println!(
        "{:<22} {:>6} {:>10} {:>14} {:>16}",
        "mode", "conc", "runs/s", "node-steps/s", "commits/flush"
    );
    for (label, options) in [
        ("pipelined (default)", EngineOptions::default()),
        (
            "durable each step",
            EngineOptions {
                durable_each_step: true,
                ..EngineOptions::default()
            },
        ),
    ] {
        for (concurrency, runs) in [(1, runs_at_64 / 10), (64, runs_at_64)] {
            let mut rates = Vec::new();
            let mut per_flush = Vec::new();
            for _ in 0..rounds {
                let (secs, commits, flushes) = round(flow, runs, concurrency, &options).await;
                rates.push(runs as f64 / secs);
                per_flush.push(commits as f64 / flushes.max(1) as f64);
            }
            let rate = median(rates);
            println!(
                "{label:<22} {concurrency:>6} {rate:>10.0} {:>14.0} {:>16.1}",
                rate * NODES_PER_RUN as f64,
                median(per_flush)
            );
        }
    }
}

fn mapping_bench(rounds: usize) {
    let src = r#"
email: event.body.email.to_lower()
full_name: event.body.first_name + " " + event.body.last_name
source: vars.source
kind: '"contact"'
company: event.body.company.name
vip: if event.body.orders > 10 { true } else { false }
"#;
    let yaml = weir_nodes::yaml::parse(src).expect("yaml");
    let diags = weir_nodes::Diags::new();
    let mapping = Mapping::compile(&yaml, src, FLOW_SCOPE, "bench", &diags);
    assert!(diags.is_empty());
    let _ = Expr::compile("1", Origin::default(), FLOW_SCOPE);
    let event = event(7);
    let vars = to_dynamic(&json!({"source": "crm"}));
    let n = 50_000;
    let mut full = Vec::new();
    let mut eval_only = Vec::new();
    for _ in 0..rounds {
        // JSON event in, JSON value out: convert the event once, evaluate the
        // six expressions, convert the result.
        let start = Instant::now();
        for _ in 0..n {
            let mut scope = rhai::Scope::new();
            scope.push_constant_dynamic("event", to_dynamic(&event));
            scope.push_constant_dynamic("vars", vars.clone());
            let out = mapping.eval(&mut scope, None).expect("eval");
            std::hint::black_box(to_json(&out).expect("json"));
        }
        full.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);

        let mut scope = rhai::Scope::new();
        scope.push_constant_dynamic("event", to_dynamic(&event));
        scope.push_constant_dynamic("vars", vars.clone());
        let start = Instant::now();
        for _ in 0..n {
            let _ = std::hint::black_box(mapping.eval(&mut scope, None).expect("eval"));
        }
        eval_only.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    let bytes = event.to_string().len();
    println!();
    println!("mapping: 6 fields, event of {bytes} bytes of JSON");
    println!(
        "  JSON event → JSON value (convert in, evaluate, convert out): {:.2} µs",
        median(full)
    );
    println!(
        "  evaluation alone (event already converted):                 {:.2} µs",
        median(eval_only)
    );
}

/// One check of a 10-field input against its compiled schema, as an action
/// call makes it: a valid input, and one with three problems (their
/// pointers and messages built).
fn schema_bench(rounds: usize) {
    let schema = weir_runtime::act::schema::compile(json!({
        "type": "object",
        "required": ["email", "name", "age"],
        "additionalProperties": false,
        "properties": {
            "email": {"type": "string", "minLength": 3, "pattern": "@"},
            "name": {"type": "string", "maxLength": 200},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "plan": {"enum": ["free", "pro", "enterprise"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
            "company": {"type": "object", "properties": {"name": {"type": "string"}}},
            "phone": {"type": "string", "pattern": "^[+0-9 ]+$"},
            "newsletter": {"type": "boolean"},
            "score": {"type": "number"},
            "country": {"type": "string", "minLength": 2, "maxLength": 2}
        }
    }))
    .expect("a valid schema");
    let good = json!({
        "email": "ada@example.com", "name": "Ada Lovelace", "age": 36, "plan": "pro",
        "tags": ["vip", "eu"], "company": {"name": "Analytical"}, "phone": "+44 20 7946 0000",
        "newsletter": true, "score": 9.5, "country": "GB"
    });
    let bad = json!({"email": "nope", "age": -1, "plan": "gold"});
    let n = 200_000;
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..n {
            assert!(std::hint::black_box(schema.check(&good, "")).is_empty());
        }
        valid.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
        let start = Instant::now();
        for _ in 0..n / 10 {
            assert!(!std::hint::black_box(schema.check(&bad, "")).is_empty());
        }
        invalid.push(start.elapsed().as_secs_f64() * 1e6 / (n / 10) as f64);
    }
    println!();
    println!("schema: 10 fields (compiled once)");
    println!(
        "  a valid input:                       {:.2} µs",
        median(valid)
    );
    println!(
        "  an invalid one (3 problems reported): {:.2} µs",
        median(invalid)
    );
}

fn main() {
    let rounds = arg("--rounds", 3);
    let runs = arg("--runs", 20_000);
    let flow = Arc::new(load_source(FLOW, "bench.yaml").unwrap_or_else(|e| panic!("{e}")));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(engine_bench(&flow, rounds, runs));
    mapping_bench(rounds.max(3));
    schema_bench(rounds.max(3));
    std::thread::sleep(Duration::from_millis(10));
}
