//! A load generator for weir's webhooks: POSTs a JSON body to a URL, either
//! as fast as `--concurrency` connections allow (closed loop) or at a fixed
//! `--rate` (open loop: requests start on schedule whether or not earlier
//! ones finished, so latency includes queueing). Reports throughput, status
//! counts and latency percentiles.
//!
//! ```text
//! cargo run --release -p weir-runtime --example loadgen -- \
//!     --url http://127.0.0.1:8080/hooks/default/bench/hook --concurrency 64 --seconds 10
//! cargo run --release -p weir-runtime --example loadgen -- --url ... --rate 5000 --seconds 10
//! cargo run --release -p weir-runtime --example loadgen -- --url ... --requests 100000 --seconds 600
//! cargo run --release -p weir-runtime --example loadgen -- --url .../healthz --get --rate 100
//! cargo run --release -p weir-runtime --example loadgen -- --url .../api/v1/flows/f/runs \
//!     --header "authorization: Bearer $TOKEN" --body examples/payloads/api-run.json
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

struct Args {
    url: String,
    concurrency: usize,
    seconds: f64,
    rate: Option<f64>,
    /// Stop after this many requests (closed loop only).
    requests: Option<u64>,
    body: String,
    /// Put `"sent_us": <Unix microseconds>` into each body, for end-to-end
    /// latency measured by the consumer.
    stamp: bool,
    /// `GET` instead of `POST` (no body): to time `/healthz`.
    get: bool,
    /// `--header 'NAME: VALUE'` (repeatable), like an `Authorization`.
    headers: Vec<(String, String)>,
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let body = match get("--body") {
        Some(path) => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("--body {path}: {e}")),
        None => r#"{"email":"Ada@Example.COM","first_name":"Ada","last_name":"Lovelace","orders":7,"company":{"name":"Analytical Engines"}}"#.to_owned(),
    };
    Args {
        url: get("--url")
            .unwrap_or_else(|| "http://127.0.0.1:8080/hooks/default/bench/hook".into()),
        concurrency: get("--concurrency")
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        seconds: get("--seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10.0),
        rate: get("--rate").and_then(|v| v.parse().ok()),
        requests: get("--requests").and_then(|v| v.parse().ok()),
        stamp: args.iter().any(|a| a == "--stamp"),
        get: args.iter().any(|a| a == "--get"),
        headers: args
            .windows(2)
            .filter(|w| w[0] == "--header")
            .filter_map(|w| w[1].split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
        body,
    }
}

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

fn body(args: &Args) -> String {
    if !args.stamp {
        return args.body.clone();
    }
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    match args.body.trim_start().strip_prefix('{') {
        Some(rest) => format!("{{\"sent_us\":{micros},{rest}"),
        None => args.body.clone(),
    }
}

async fn one(client: &reqwest::Client, args: &Args, stats: &Mutex<Stats>) {
    let start = Instant::now();
    let mut request = match args.get {
        true => client.get(&args.url),
        false => client
            .post(&args.url)
            .header("content-type", "application/json")
            .body(body(args)),
    };
    for (name, value) in &args.headers {
        request = request.header(name, value);
    }
    let result = request.send().await;
    let status = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            Some(status)
        }
        Err(_) => None,
    };
    let elapsed = start.elapsed().as_micros() as u64;
    let mut stats = stats.lock().await;
    match status {
        Some(s) => {
            *stats.statuses.entry(s).or_default() += 1;
            stats.latencies_us.push(elapsed);
        }
        None => stats.errors += 1,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Arc::new(parse_args());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .expect("an HTTP client");
    let stats = Arc::new(Mutex::new(Stats::default()));
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    match args.rate {
        None => {
            let mut workers = Vec::new();
            let sent = Arc::new(AtomicU64::new(0));
            for _ in 0..args.concurrency {
                let (client, args, stats, sent) =
                    (client.clone(), args.clone(), stats.clone(), sent.clone());
                workers.push(tokio::spawn(async move {
                    while Instant::now() < deadline {
                        if args
                            .requests
                            .is_some_and(|n| sent.fetch_add(1, Ordering::Relaxed) >= n)
                        {
                            break;
                        }
                        one(&client, &args, &stats).await;
                    }
                }));
            }
            for w in workers {
                let _ = w.await;
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let in_flight = Arc::new(AtomicU64::new(0));
            let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1) * 16));
            let mut next = tokio::time::Instant::now();
            let mut tasks = Vec::new();
            while Instant::now() < deadline {
                tokio::time::sleep_until(next).await;
                next += interval;
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let (client, args, stats, in_flight) = (
                    client.clone(),
                    args.clone(),
                    stats.clone(),
                    in_flight.clone(),
                );
                in_flight.fetch_add(1, Ordering::Relaxed);
                tasks.push(tokio::spawn(async move {
                    one(&client, &args, &stats).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut stats = stats.lock().await;
    stats.latencies_us.sort_unstable();
    let total: u64 = stats.statuses.values().sum();
    let acked = stats
        .statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum::<u64>();
    println!("url          {}", args.url);
    match args.rate {
        Some(rate) => println!("mode         open loop at {rate:.0} req/s"),
        None => println!("mode         closed loop, {} connections", args.concurrency),
    }
    println!("duration     {elapsed:.1} s");
    println!(
        "requests     {total} ({:.0}/s), errors {}",
        total as f64 / elapsed,
        stats.errors
    );
    println!("acknowledged {acked} ({:.0}/s)", acked as f64 / elapsed);
    println!("statuses     {:?}", stats.statuses);
    let l = &stats.latencies_us;
    println!(
        "latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(l, 0.50),
        percentile(l, 0.90),
        percentile(l, 0.99),
        percentile(l, 1.0)
    );
}
