//! `weir outbox list|retry ID`: the outbox of a running daemon.

use std::process::ExitCode;

use serde_json::Value;

use super::client::{self, DaemonArgs, text};

#[derive(Debug, clap::Args)]
pub struct OutboxArgs {
    #[command(subcommand)]
    pub command: OutboxCommand,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// Pending and dead deliveries per target, and the dead ones.
    List,
    /// Sends a dead delivery again.
    Retry { id: String },
}

pub fn main(args: OutboxArgs) -> ExitCode {
    client::run(&args.daemon, call(&args))
}

async fn call(args: &OutboxArgs) -> Result<ExitCode, String> {
    let url = |segments: &[&str]| args.daemon.url(segments);
    let http = reqwest::Client::new();
    let request = match &args.command {
        OutboxCommand::List => http.get(url(&["api", "v1", "outbox"])?),
        OutboxCommand::Retry { id } => http.post(url(&["api", "v1", "outbox", id, "retry"])?),
    };
    let body = match client::send(request, &args.daemon).await? {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    if args.daemon.json {
        out!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    match &args.command {
        OutboxCommand::List => print_outbox(&body),
        OutboxCommand::Retry { id } => out!("delivery {id} is pending again"),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_outbox(body: &Value) {
    out!(
        "{:<8} {:<10} {:>8} {:>6} {:>12}  LAST ERROR",
        "TARGET",
        "CONNECTED",
        "PENDING",
        "DEAD",
        "OLDEST (s)"
    );
    for t in body["targets"].as_array().into_iter().flatten() {
        out!(
            "{:<8} {:<10} {:>8} {:>6} {:>12.1}  {}",
            text(&t["target"]),
            text(&t["connected"]),
            text(&t["pending"]),
            text(&t["dead"]),
            t["oldest_pending_age_s"].as_f64().unwrap_or(0.0),
            text(&t["last_error"]),
        );
    }
    let failing = body["failing"].as_array().cloned().unwrap_or_default();
    if !failing.is_empty() {
        out!("\nfailing deliveries (retried; each with its last error):");
        for d in failing {
            out!(
                "  {}  {} attempts  next {}  {}",
                text(&d["id"]),
                text(&d["attempts"]),
                text(&d["next_attempt_at"]),
                text(&d["last_error"])
            );
        }
    }
    let dead = body["dead"].as_array().cloned().unwrap_or_default();
    if dead.is_empty() {
        return;
    }
    out!("\ndead deliveries (retry with `weir outbox retry ID`):");
    for d in dead {
        out!(
            "  {}  {} attempts  {}",
            text(&d["id"]),
            text(&d["attempts"]),
            text(&d["last_error"])
        );
    }
}
