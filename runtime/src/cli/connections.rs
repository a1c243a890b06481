//! `weir connections list|show|create|test|refresh|delete`: a tenant's
//! connections on a running daemon (with the tenant's `--token`).

use std::process::ExitCode;

use serde_json::{Value, json};

use super::client::{self, DaemonArgs, text};

#[derive(Debug, clap::Args)]
pub struct ConnectionsArgs {
    #[command(subcommand)]
    pub command: ConnectionsCommand,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConnectionsCommand {
    /// The tenant's connections.
    List {
        #[arg(long)]
        integration: Option<String>,
        /// ready, disconnected or error.
        #[arg(long)]
        state: Option<String>,
    },
    /// One connection.
    Show { id: String },
    /// Connects to an integration with credentials (API key, basic,
    /// bearer); the connection is tested and its state printed.
    Create {
        integration: String,
        #[arg(long)]
        name: Option<String>,
        /// The parameters as JSON, or @FILE.
        #[arg(long)]
        parameters: Option<String>,
        /// The credentials as JSON, @FILE, or - to read them from stdin
        /// (which keeps them out of the shell's history).
        #[arg(long)]
        credentials: Option<String>,
    },
    /// Runs the connection's test again.
    Test { id: String },
    /// Refreshes an OAuth2 connection's token.
    Refresh { id: String },
    /// Forgets the connection and its credentials.
    Delete { id: String },
}

/// A JSON argument: the text, `@FILE`, or `-` for stdin.
fn json_arg(what: &str, value: &str) -> Result<Value, String> {
    let text = match value {
        "-" => std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("cannot read {what} from stdin: {e}"))?,
        v => match v.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {what} from {path}: {e}"))?,
            None => v.to_owned(),
        },
    };
    // The message never repeats the text: it may hold a credential.
    serde_json::from_str(&text).map_err(|e| format!("{what} is not JSON ({e})"))
}

pub fn main(args: ConnectionsArgs) -> ExitCode {
    client::run(&args.daemon, call(&args))
}

async fn call(args: &ConnectionsArgs) -> Result<ExitCode, String> {
    let url = |segments: &[&str]| args.daemon.url(segments);
    let http = reqwest::Client::new();
    let one = |id: &str, action: Option<&str>| {
        let mut s = vec!["api", "v1", "connections", id];
        s.extend(action);
        url(&s)
    };
    let request = match &args.command {
        ConnectionsCommand::List { integration, state } => {
            let mut query = Vec::new();
            for (k, v) in [("integration", integration), ("state", state)] {
                if let Some(v) = v {
                    query.push((k, v.clone()));
                }
            }
            http.get(url(&["api", "v1", "connections"])?).query(&query)
        }
        ConnectionsCommand::Show { id } => http.get(one(id, None)?),
        ConnectionsCommand::Create {
            integration,
            name,
            parameters,
            credentials,
        } => {
            let mut body = json!({ "integration": integration });
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            let usage = |e: String| {
                eprintln!("weir: {e}");
                ExitCode::from(super::exit::USAGE)
            };
            if let Some(p) = parameters {
                match json_arg("--parameters", p) {
                    Ok(v) => body["parameters"] = v,
                    Err(e) => return Ok(usage(e)),
                }
            }
            if let Some(c) = credentials {
                match json_arg("--credentials", c) {
                    Ok(v) => body["credentials"] = v,
                    Err(e) => return Ok(usage(e)),
                }
            }
            http.post(url(&["api", "v1", "connections"])?).json(&body)
        }
        ConnectionsCommand::Test { id } => http.post(one(id, Some("test"))?),
        ConnectionsCommand::Refresh { id } => http.post(one(id, Some("refresh"))?),
        ConnectionsCommand::Delete { id } => http.delete(one(id, None)?),
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
        ConnectionsCommand::List { .. } => {
            out!(
                "{:<38} {:<16} {:<14} {:<20} ERROR",
                "ID",
                "INTEGRATION",
                "STATE",
                "NAME"
            );
            for c in body["items"].as_array().into_iter().flatten() {
                row(c);
            }
        }
        ConnectionsCommand::Delete { id } => out!("connection {id} deleted"),
        _ => {
            out!(
                "{:<38} {:<16} {:<14} {:<20} ERROR",
                "ID",
                "INTEGRATION",
                "STATE",
                "NAME"
            );
            row(&body);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(c: &Value) {
    out!(
        "{:<38} {:<16} {:<14} {:<20} {}",
        text(&c["id"]),
        text(&c["integration"]),
        text(&c["state"]),
        text(&c["name"]),
        text(&c["error"])
    );
}
