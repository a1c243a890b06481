//! `weir runs list|show|retry|cancel`: the runs API from a terminal.

use std::process::ExitCode;

use serde_json::Value;

use super::client::{self, DaemonArgs, text};

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    pub command: RunsCommand,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// Runs, newest first.
    List {
        #[arg(long)]
        flow: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// queued, running, waiting, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Runs older than this run id (the previous page's `next_after`).
        #[arg(long)]
        after: Option<String>,
    },
    /// One run with its nodes.
    Show { id: String },
    /// Runs a failed run again from its failed nodes.
    Retry { id: String },
    /// Cancels a live run.
    Cancel { id: String },
}

pub fn main(args: RunsArgs) -> ExitCode {
    client::run(&args.daemon, call(&args))
}

async fn call(args: &RunsArgs) -> Result<ExitCode, String> {
    let url = |segments: &[&str]| args.daemon.url(segments);
    let http = reqwest::Client::new();
    let request = match &args.command {
        RunsCommand::List {
            flow,
            tenant,
            status,
            limit,
            after,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("flow", flow),
                ("tenant", tenant),
                ("status", status),
                ("after", after),
            ] {
                if let Some(v) = v {
                    query.push((k, v.clone()));
                }
            }
            http.get(url(&["api", "v1", "runs"])?).query(&query)
        }
        RunsCommand::Show { id } => http.get(url(&["api", "v1", "runs", id])?),
        RunsCommand::Retry { id } => http.post(url(&["api", "v1", "runs", id, "retry"])?),
        RunsCommand::Cancel { id } => http.post(url(&["api", "v1", "runs", id, "cancel"])?),
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
        RunsCommand::List { .. } => print_list(&body),
        _ => print_run(&body),
    }
    Ok(ExitCode::SUCCESS)
}

/// Times without sub-seconds: `2026-01-01 12:00:00`.
fn short_time(v: &Value) -> String {
    let t = text(v);
    t.get(..19).map(|s| s.replace('T', " ")).unwrap_or(t)
}

fn print_table(rows: Vec<Vec<String>>) {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i + 1 == widths.len() {
                    cell.clone()
                } else {
                    format!("{cell:w$}")
                }
            })
            .collect();
        out!("{}", line.join("  ").trim_end());
    }
}

fn print_list(body: &Value) {
    let mut rows = vec![vec![
        "ID".to_owned(),
        "FLOW".into(),
        "TENANT".into(),
        "TRIGGER".into(),
        "STATUS".into(),
        "CREATED".into(),
        "ERROR".into(),
    ]];
    for run in body["items"].as_array().into_iter().flatten() {
        rows.push(vec![
            text(&run["id"]),
            text(&run["flow"]),
            text(&run["tenant"]),
            text(&run["trigger"]),
            text(&run["status"]),
            short_time(&run["created_at"]),
            if run["error"].is_null() {
                String::new()
            } else {
                text(&run["error"])
            },
        ]);
    }
    if rows.len() == 1 {
        out!("no runs");
        return;
    }
    print_table(rows);
    if let Some(next) = body["next_after"].as_str() {
        out!("more: --after {next}");
    }
}

fn print_run(run: &Value) {
    out!("run      {}", text(&run["id"]));
    out!(
        "flow     {} (version {})",
        text(&run["flow"]),
        text(&run["flow_version"])
    );
    out!("tenant   {}", text(&run["tenant"]));
    out!("trigger  {}", text(&run["trigger"]));
    out!(
        "status   {} (attempt {})",
        text(&run["status"]),
        text(&run["attempt"])
    );
    out!("created  {}", short_time(&run["created_at"]));
    out!("finished {}", short_time(&run["finished_at"]));
    if !run["error"].is_null() {
        out!("error    {}", text(&run["error"]));
    }
    let mut rows = vec![vec![
        "NODE".to_owned(),
        "STATUS".into(),
        "ATTEMPTS".into(),
        "OUTPUT / ERROR".into(),
    ]];
    for node in run["nodes"].as_array().into_iter().flatten() {
        let detail = if node["error"].is_null() {
            text(&node["output"])
        } else {
            format!("error: {}", text(&node["error"]))
        };
        let detail = if detail == "-" { String::new() } else { detail };
        rows.push(vec![
            text(&node["id"]),
            text(&node["status"]),
            text(&node["attempts"]),
            detail,
        ]);
    }
    out!();
    print_table(rows);
}
