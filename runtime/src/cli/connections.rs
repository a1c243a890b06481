//! `weir connections list|show|create|test|refresh|delete|ensure`: a
//! tenant's connections on a running daemon (with the tenant's `--token`).

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
        #[command(flatten)]
        new: NewConnection,
    },
    /// Runs the connection's test again.
    Test { id: String },
    /// Refreshes an OAuth2 connection's token.
    Refresh { id: String },
    /// Forgets the connection and its credentials.
    Delete { id: String },
    /// The tenant's ready connection to an integration; without one, makes
    /// one: asks for the credentials (or takes --credentials), or, for
    /// OAuth2, prints the URL to open and waits until consent is given.
    Ensure {
        integration: String,
        #[command(flatten)]
        new: NewConnection,
    },
}

/// What a new connection is made with (`create`, `ensure`).
#[derive(Debug, clap::Args)]
pub struct NewConnection {
    #[arg(long)]
    name: Option<String>,
    /// The parameters as JSON, or @FILE.
    #[arg(long)]
    parameters: Option<String>,
    /// The credentials as JSON, @FILE, or - to read them from stdin (which
    /// keeps them out of the shell's history); without it, `ensure` asks
    /// for each field (typed without echo).
    #[arg(long)]
    credentials: Option<String>,
}

/// A JSON argument: the text, `@FILE`, or `-` for stdin.
pub(super) fn json_arg(what: &str, value: &str) -> Result<Value, String> {
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
    match &args.command {
        ConnectionsCommand::Ensure { .. } => client::run(&args.daemon, ensure(&args)),
        _ => client::run(&args.daemon, call(&args)),
    }
}

fn usage(e: String) -> ExitCode {
    eprintln!("weir: {e}");
    ExitCode::from(super::exit::USAGE)
}

/// The body of `POST /api/v1/connections` (or of a connection request,
/// without credentials) from the command's options.
fn connection_body(
    integration: &str,
    name: &Option<String>,
    parameters: &Option<String>,
) -> Result<Value, String> {
    let mut body = json!({ "integration": integration });
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    if let Some(p) = parameters {
        body["parameters"] = json_arg("--parameters", p)?;
    }
    Ok(body)
}

/// `weir connections ensure KEY`.
async fn ensure(args: &ConnectionsArgs) -> Result<ExitCode, String> {
    let ConnectionsCommand::Ensure {
        integration,
        new:
            NewConnection {
                name,
                parameters,
                credentials,
            },
    } = &args.command
    else {
        return Ok(ExitCode::SUCCESS);
    };
    let daemon = &args.daemon;
    let http = reqwest::Client::new();
    let get = |segments: &[&str]| -> Result<reqwest::RequestBuilder, String> {
        Ok(http.get(daemon.url(segments)?))
    };
    macro_rules! call {
        ($request:expr) => {
            match client::send($request, daemon).await? {
                Ok(body) => body,
                Err(code) => return Ok(code),
            }
        };
    }
    let about = call!(get(&["api", "v1", "integrations", integration])?);
    let ready = call!(
        get(&["api", "v1", "connections"])?
            .query(&[("integration", integration.as_str()), ("state", "ready")])
    );
    if let Some(found) = ready["items"].as_array().and_then(|items| items.first()) {
        return Ok(show_one(found, daemon.json));
    }
    let mut body = match connection_body(integration, name, parameters) {
        Ok(body) => body,
        Err(e) => return Ok(usage(e)),
    };
    let made = if about["auth"]["type"] == "oauth2" {
        let request = call!(
            http.post(daemon.url(&["api", "v1", "connection-requests"])?)
                .json(&body)
        );
        let id = client::text(&request["id"]);
        eprintln!(
            "Open this URL to connect {integration}; weir waits until it is done:\n\n  {}\n",
            client::text(&request["url"])
        );
        let connection = loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let status = call!(get(&["api", "v1", "connection-requests", &id])?);
            match status["status"].as_str() {
                Some("pending") => continue,
                Some("success") => break client::text(&status["connection_id"]),
                other => {
                    eprintln!(
                        "weir: the connection request ended {}: {}",
                        other.unwrap_or("oddly"),
                        client::text(&status["error"])
                    );
                    return Ok(ExitCode::from(super::exit::FAILED));
                }
            }
        };
        call!(get(&["api", "v1", "connections", &connection])?)
    } else {
        let fields: Vec<String> = about["auth"]["credentials"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect();
        let given = match credentials {
            Some(c) => json_arg("--credentials", c),
            None => ask(integration, &fields),
        };
        match given {
            Ok(c) if !fields.is_empty() => body["credentials"] = c,
            Ok(_) => {}
            Err(e) => return Ok(usage(e)),
        }
        call!(
            http.post(daemon.url(&["api", "v1", "connections"])?)
                .json(&body)
        )
    };
    let code = show_one(&made, daemon.json);
    if made["state"] != "ready" {
        eprintln!(
            "weir: the connection is {}: {}",
            client::text(&made["state"]),
            client::text(&made["error"])
        );
        return Ok(ExitCode::from(super::exit::FAILED));
    }
    Ok(code)
}

/// Asks for each credential field on the terminal (secrets without echo),
/// or reads one line per field from stdin when it is not a terminal.
fn ask(integration: &str, fields: &[String]) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    for field in fields {
        let prompt = format!("{integration} {field}");
        let value = read_line(&prompt, field != "username")
            .map_err(|e| format!("cannot read the {field}: {e}"))?;
        if value.is_empty() {
            return Err(format!(
                "no {field} given; type it, or pass --credentials JSON|@FILE|-"
            ));
        }
        out.insert(field.clone(), json!(value));
    }
    Ok(Value::Object(out))
}

/// One line from stdin, the prompt on stderr; `hidden`: not echoed on a
/// terminal (the terminal's settings are put back after).
fn read_line(prompt: &str, hidden: bool) -> std::io::Result<String> {
    use rustix::termios;
    let stdin = std::io::stdin();
    let tty = termios::isatty(&stdin);
    if tty {
        eprint!("{prompt}: ");
    }
    let saved = match (tty, hidden) {
        (true, true) => {
            let saved = termios::tcgetattr(&stdin)?;
            let mut quiet = saved.clone();
            quiet.local_modes.remove(termios::LocalModes::ECHO);
            termios::tcsetattr(&stdin, termios::OptionalActions::Now, &quiet)?;
            Some(saved)
        }
        _ => None,
    };
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    if let Some(saved) = saved {
        let _ = termios::tcsetattr(&stdin, termios::OptionalActions::Now, &saved);
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn show_one(c: &Value, json: bool) -> ExitCode {
    if json {
        out!("{c}");
    } else {
        header();
        row(c);
    }
    ExitCode::SUCCESS
}

fn header() {
    out!(
        "{:<38} {:<16} {:<14} {:<20} ERROR",
        "ID",
        "INTEGRATION",
        "STATE",
        "NAME"
    );
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
            new:
                NewConnection {
                    name,
                    parameters,
                    credentials,
                },
        } => {
            let mut body = match connection_body(integration, name, parameters) {
                Ok(body) => body,
                Err(e) => return Ok(usage(e)),
            };
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
        ConnectionsCommand::Ensure { .. } => return ensure(args).await,
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
            header();
            for c in body["items"].as_array().into_iter().flatten() {
                row(c);
            }
        }
        ConnectionsCommand::Delete { id } => out!("connection {id} deleted"),
        _ => {
            show_one(&body, false);
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
