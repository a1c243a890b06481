//! `weir actions list|run`: the actions a tenant can run on a running
//! daemon, and running one (with the tenant's `--token`).

use std::process::ExitCode;

use serde_json::{Value, json};

use super::client::{self, DaemonArgs, text};
use super::connections::json_arg;

#[derive(Debug, clap::Args)]
pub struct ActionsArgs {
    #[command(subcommand)]
    pub command: ActionsCommand,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum ActionsCommand {
    /// Every action, with the integrations that implement it and the
    /// tenant's connections it can run through.
    List {
        #[arg(long)]
        integration: Option<String>,
    },
    /// Runs an action and prints its output. Exits 1 if the action failed,
    /// 2 if the daemon refused the call (an input that does not match the
    /// schema, no or several connections).
    Run {
        key: String,
        /// The input as JSON, @FILE, or - for stdin.
        #[arg(long)]
        input: String,
        /// The connection to run it through (its id).
        #[arg(long)]
        connection: Option<String>,
        /// The integration whose connection to use.
        #[arg(long)]
        integration: Option<String>,
        /// Sent as `Idempotency-Key`: running again with the same key
        /// answers the first result and does not call the app again.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

pub fn main(args: ActionsArgs) -> ExitCode {
    client::run(&args.daemon, call(&args))
}

async fn call(args: &ActionsArgs) -> Result<ExitCode, String> {
    let http = reqwest::Client::new();
    let request = match &args.command {
        ActionsCommand::List { integration } => {
            let query: Vec<(&str, &str)> = integration
                .iter()
                .map(|i| ("integration", i.as_str()))
                .collect();
            http.get(args.daemon.url(&["api", "v1", "actions"])?)
                .query(&query)
        }
        ActionsCommand::Run {
            key,
            input,
            connection,
            integration,
            idempotency_key,
        } => {
            let input = match json_arg("--input", input) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("weir: {e}");
                    return Ok(ExitCode::from(super::exit::USAGE));
                }
            };
            let mut body = json!({ "input": input });
            if let Some(c) = connection {
                body["connection"] = json!(c);
            }
            if let Some(i) = integration {
                body["integration"] = json!(i);
            }
            let request = http
                .post(args.daemon.url(&["api", "v1", "actions", key, "run"])?)
                .json(&body);
            match idempotency_key {
                Some(k) => request.header("idempotency-key", k),
                None => request,
            }
        }
    };
    let body = match client::send(request, &args.daemon).await? {
        Ok(body) => body,
        Err(code) => return Ok(code),
    };
    match &args.command {
        ActionsCommand::List { .. } if !args.daemon.json => {
            out!(
                "{:<24} {:<24} {:<38} NAME",
                "KEY",
                "INTEGRATIONS",
                "CONNECTIONS"
            );
            for a in body["items"].as_array().into_iter().flatten() {
                let list = |v: &Value| {
                    let items: Vec<String> = v.as_array().into_iter().flatten().map(text).collect();
                    if items.is_empty() {
                        "-".to_owned()
                    } else {
                        items.join(",")
                    }
                };
                out!(
                    "{:<24} {:<24} {:<38} {}",
                    text(&a["key"]),
                    list(&a["integrations"]),
                    list(&a["connections"]),
                    text(&a["name"])
                );
            }
        }
        ActionsCommand::Run { .. } if !args.daemon.json => {
            out!(
                "{}",
                serde_json::to_string_pretty(&body["output"]).unwrap_or_default()
            );
        }
        _ => out!("{body}"),
    }
    Ok(ExitCode::SUCCESS)
}
