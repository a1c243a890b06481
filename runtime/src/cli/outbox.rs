//! `weir outbox list|retry ID`: the outbox of a running daemon.

use std::process::ExitCode;

use serde_json::Value;

use super::exit;

#[derive(Debug, clap::Args)]
pub struct OutboxArgs {
    #[command(subcommand)]
    pub command: OutboxCommand,
    /// The daemon's address.
    #[arg(
        long,
        global = true,
        env = "WEIR_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// Pending and dead deliveries per target, and the dead ones.
    List,
    /// Sends a dead delivery again.
    Retry { id: String },
}

pub fn main(args: OutboxArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    runtime.block_on(call(&args)).unwrap_or_else(|message| {
        eprintln!("weir: {message}");
        ExitCode::from(exit::FAILED)
    })
}

async fn call(args: &OutboxArgs) -> Result<ExitCode, String> {
    let base = args.server.trim_end_matches('/');
    let client = reqwest::Client::new();
    let request = match &args.command {
        OutboxCommand::List => client.get(format!("{base}/api/v1/outbox")),
        OutboxCommand::Retry { id } => client.post(format!("{base}/api/v1/outbox/{id}/retry")),
    };
    let response = request.send().await.map_err(|e| {
        format!("cannot reach the daemon at {base}: {e}; is `weir serve` running? (--server URL)")
    })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("the daemon's answer is not JSON: {e}"))?;
    if !status.is_success() {
        eprintln!(
            "weir: {} ({status})",
            body["error"]["message"].as_str().unwrap_or("an error")
        );
        return Ok(ExitCode::from(if status.is_client_error() {
            exit::USAGE
        } else {
            exit::FAILED
        }));
    }
    if args.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    match &args.command {
        OutboxCommand::List => print_outbox(&body),
        OutboxCommand::Retry { id } => println!("delivery {id} is pending again"),
    }
    Ok(ExitCode::SUCCESS)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_outbox(body: &Value) {
    println!(
        "{:<8} {:<10} {:>8} {:>6} {:>12}  LAST ERROR",
        "TARGET", "CONNECTED", "PENDING", "DEAD", "OLDEST (s)"
    );
    for t in body["targets"].as_array().into_iter().flatten() {
        println!(
            "{:<8} {:<10} {:>8} {:>6} {:>12.1}  {}",
            text(&t["target"]),
            text(&t["connected"]),
            text(&t["pending"]),
            text(&t["dead"]),
            t["oldest_pending_age_s"].as_f64().unwrap_or(0.0),
            text(&t["last_error"]),
        );
    }
    let dead = body["dead"].as_array().cloned().unwrap_or_default();
    if dead.is_empty() {
        return;
    }
    println!("\ndead deliveries (retry with `weir outbox retry ID`):");
    for d in dead {
        println!(
            "  {}  {} attempts  {}",
            text(&d["id"]),
            text(&d["attempts"]),
            text(&d["last_error"])
        );
    }
}
