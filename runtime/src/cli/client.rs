//! What the commands that talk to a running daemon share (`weir runs`,
//! `weir outbox`): its address, the `--json` switch, one call to the API
//! with readable errors, and cell text for tables.

use std::future::Future;
use std::process::ExitCode;

use serde_json::Value;

use super::exit;

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
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
    /// The bearer token the daemon's API asks for (`weir token` makes one).
    #[arg(long, global = true, env = "WEIR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl DaemonArgs {
    /// The address without a trailing `/`.
    pub fn base(&self) -> &str {
        self.server.trim_end_matches('/')
    }

    /// The URL of an API path, each segment escaped (an id like
    /// `../flows/x` stays one segment). An error if `--server` is not an
    /// http(s) URL.
    pub fn url(&self, segments: &[&str]) -> Result<reqwest::Url, String> {
        let bad = || {
            format!(
                "--server must be a URL like http://127.0.0.1:8080, not `{}`",
                self.server
            )
        };
        let mut url = reqwest::Url::parse(self.base()).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(bad());
        }
        url.path_segments_mut()
            .map_err(|()| bad())?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }
}

/// A client command: `--server` checked first (a bad one exits 2), then
/// `call` run to its end.
pub fn run(daemon: &DaemonArgs, call: impl Future<Output = Result<ExitCode, String>>) -> ExitCode {
    if let Err(e) = daemon.url(&[]) {
        eprintln!("weir: {e}");
        return ExitCode::from(exit::USAGE);
    }
    block_on(call)
}

/// Runs `call` to its end on a small runtime; an `Err` is printed.
pub fn block_on(call: impl Future<Output = Result<ExitCode, String>>) -> ExitCode {
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
    runtime.block_on(call).unwrap_or_else(|message| {
        eprintln!("weir: {message}");
        ExitCode::from(exit::FAILED)
    })
}

/// Sends `request` to the daemon at `base`: the answer's JSON body, or,
/// if the daemon refused, its error printed and the exit code to leave
/// with (2 for a request it refused, 1 for its own failure).
pub async fn send(
    request: reqwest::RequestBuilder,
    daemon: &DaemonArgs,
) -> Result<Result<Value, ExitCode>, String> {
    let base = daemon.base();
    let request = match &daemon.token {
        Some(token) => request.bearer_auth(token.trim()),
        None => request,
    };
    let response = request.send().await.map_err(|e| {
        format!("cannot reach the daemon at {base}: {e}; is `weir serve` running? (--server URL)")
    })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("the daemon's answer is not JSON: {e}"))?;
    if status.is_success() {
        return Ok(Ok(body));
    }
    eprintln!(
        "weir: {} ({status})",
        body["error"]["message"].as_str().unwrap_or("an error")
    );
    Ok(Err(ExitCode::from(if status.is_client_error() {
        exit::USAGE
    } else {
        exit::FAILED
    })))
}

/// A JSON value as a table cell: text as is, null as `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
