//! `weir serve [--flows DIR] [--data DIR] [--listen ADDR] [--amqp URL]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::exit;
use crate::auth::Auth;
use crate::daemon::{self, Config};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The flows folder.
    #[arg(long, env = "WEIR_FLOWS", default_value = "flows")]
    pub flows: PathBuf,
    /// The data folder (created if missing).
    #[arg(long, env = "WEIR_DATA", default_value = "data")]
    pub data: PathBuf,
    /// The address to listen on; port 0 picks a free one (the log says which).
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The AMQP broker deliveries go to, like amqp://guest:guest@127.0.0.1:5672/%2f.
    #[arg(long, env = "WEIR_AMQP_URL")]
    pub amqp: Option<String>,
    /// How long running nodes may take to finish at shutdown.
    #[arg(long, env = "WEIR_GRACE", default_value = "10s", value_parser = duration)]
    pub grace: Duration,
    /// Unfinished runs held in memory (working, or waiting for their turn)
    /// past which new events are refused (webhooks answer 429). Runs that
    /// only wait on a timer more than 2s away are parked on disk and do not
    /// count.
    #[arg(long, env = "WEIR_MAX_BACKLOG", default_value_t = 50_000)]
    pub max_backlog: usize,
    /// How long webhook dedupe keys are remembered.
    #[arg(long, env = "WEIR_DEDUPE_RETENTION", default_value = "24h", value_parser = duration)]
    pub dedupe_retention: Duration,
    /// How long finished runs (their records, events and node outputs) are
    /// kept before they are forgotten; `off` keeps them forever. Unfinished
    /// runs are never forgotten.
    #[arg(long, env = "WEIR_RUN_RETENTION", default_value = "7d", value_parser = retention)]
    pub run_retention: Retention,
    /// Connections open at once; past it, a new connection is answered 503.
    /// Default: what the file descriptor limit allows (it is raised to its
    /// hard limit first), less 256 kept for storage and outgoing requests.
    #[arg(long, env = "WEIR_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// How long a client may take to send a request's head; also how long
    /// a keep-alive connection may stay idle between requests.
    #[arg(long, env = "WEIR_HEADER_TIMEOUT", default_value = "10s", value_parser = timeout)]
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body (408 after).
    #[arg(long, env = "WEIR_BODY_TIMEOUT", default_value = "30s", value_parser = timeout)]
    pub body_timeout: Duration,
    /// Read symbolic links in the flows folder that lead out of it (by
    /// default they are reported and not read).
    #[arg(long, env = "WEIR_FOLLOW_SYMLINKS")]
    pub follow_symlinks: bool,
    /// Serve /metrics without a token (by default it asks for an admin
    /// token, like the API).
    #[arg(long, env = "WEIR_METRICS_OPEN")]
    pub metrics_open: bool,
    /// The Host names /mcp answers (a guard against DNS rebinding), comma
    /// separated; `host` matches any port, `host:port` that one. Default:
    /// localhost, 127.0.0.1, ::1 and the host of --public-url.
    #[arg(long, env = "WEIR_MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub mcp_allowed_hosts: Vec<String>,
    /// The browser origins /mcp answers (a request with another `Origin`
    /// is refused; one without `Origin` is not a browser's and passes),
    /// comma separated, like `https://app.example.com` or
    /// `http://localhost:*`. Default: loopback origins on any port and the
    /// origin of --public-url.
    #[arg(long, env = "WEIR_MCP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub mcp_allowed_origins: Vec<String>,
    /// An AMQP exchange that receives notifications (connection.created,
    /// .disconnected, .reconnected, .deleted; run.failed), the type as
    /// routing key.
    #[arg(long, env = "WEIR_NOTIFY_EXCHANGE")]
    pub notify_exchange: Option<String>,
    /// A URL that receives notifications as signed HTTP POSTs (Standard
    /// Webhooks, with the `whsec_` secret in WEIR_NOTIFY_SECRET).
    #[arg(long, env = "WEIR_NOTIFY_URL")]
    pub notify_url: Option<String>,
    /// How the outside world reaches weir; OAuth2 providers send the
    /// browser back to PUBLIC_URL/oauth2/callback. Default: http:// and the
    /// address weir listens on.
    #[arg(long, env = "WEIR_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Prefixes (comma-separated) an OAuth2 request's `redirect_uri` may
    /// start with, besides the public URL's origin and loopback addresses.
    #[arg(long, env = "WEIR_OAUTH_REDIRECT_ALLOW", value_delimiter = ',')]
    pub oauth_redirect_allow: Vec<String>,
    /// The integrations folder (one external app per file).
    #[arg(long, env = "WEIR_INTEGRATIONS", default_value = "integrations")]
    pub integrations: PathBuf,
    /// The universal actions folder (one action's contract per file).
    #[arg(long, env = "WEIR_ACTIONS", default_value = "actions")]
    pub actions: PathBuf,
    /// What this process does: `all` (everything, one process), `ingest`
    /// (takes webhooks and API calls, fires schedules, publishes events to
    /// RabbitMQ) or `worker` (runs the events); ingest and worker need
    /// --amqp.
    #[arg(long, env = "WEIR_ROLE", value_enum, default_value = "all")]
    pub role: crate::daemon::cluster::Role,
    /// How many partition queues events with a `concurrency.key` are
    /// hashed to; the same on every process of a deployment.
    #[arg(long, env = "WEIR_PARTITIONS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub partitions: u16,
    /// `--role worker`: unacknowledged events held per queue.
    #[arg(long, env = "WEIR_PREFETCH", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Ready events an event queue holds before the broker refuses more
    /// (ingest then answers 429); the same on every process.
    #[arg(long, env = "WEIR_MAX_QUEUE", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queue: u64,
    /// `--role worker`: a run waiting on a timer further away than this
    /// hands its checkpoint to the broker and acks its event, so no event
    /// stays unacked past RabbitMQ's consumer timeout (30 minutes by
    /// default); any worker goes on with it when it is due.
    #[arg(long, env = "WEIR_HAND_OFF_AFTER", default_value = "60s", value_parser = duration)]
    pub hand_off_after: Duration,
    /// Names of the deployment's queues start with it; two deployments
    /// sharing a broker need different ones.
    #[arg(long, env = "WEIR_QUEUE_PREFIX", default_value = "weir")]
    pub queue_prefix: String,
    #[command(flatten)]
    pub workspace: super::token::WorkspaceArgs,
    #[command(flatten)]
    pub keys: super::secrets::KeyArgs,
}

/// `--run-retention`: a duration, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct Retention(pub Option<Duration>);

fn retention(text: &str) -> Result<Retention, String> {
    match text.trim() {
        "off" | "never" => Ok(Retention(None)),
        other => match duration(other)? {
            d if d.is_zero() => Err("a retention of 0 would forget runs as they finish; use a duration like 7d, or `off` to keep runs forever".into()),
            d => Ok(Retention(Some(d))),
        },
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    weir_nodes::units::parse_duration(text)
}

/// A connection timeout: at least 100ms (shorter would cut off every
/// client).
fn timeout(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d < Duration::from_millis(100) => Err(format!(
            "`{text}` is too short a timeout; give at least 100ms (like 10s)"
        )),
        d => Ok(d),
    }
}

pub fn main(args: ServeArgs) -> ExitCode {
    let auth = match args.workspace.workspace() {
        Ok(Some(workspace)) => Auth::Tokens(workspace),
        Ok(None) => Auth::Open,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let secret_keys = match args.keys.ring() {
        Ok(ring) => ring,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let notify = match notify_targets(args.notify_exchange.clone(), args.notify_url.clone()) {
        Ok(targets) => targets,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let cluster = match cluster_settings(&args) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let config = Config {
        cluster,
        flows: args.flows,
        data: args.data,
        listen: args.listen,
        amqp: args.amqp,
        grace: args.grace,
        max_backlog: args.max_backlog,
        dedupe_retention: args.dedupe_retention,
        run_retention: args.run_retention.0,
        max_connections: args
            .max_connections
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        links: super::links(args.follow_symlinks),
        auth: std::sync::Arc::new(auth),
        metrics_open: args.metrics_open,
        mcp_allowed_hosts: args.mcp_allowed_hosts.clone(),
        mcp_allowed_origins: args.mcp_allowed_origins.clone(),
        integrations: args.integrations,
        actions: args.actions,
        secret_keys,
        notify,
        public_url: args.public_url,
        oauth_redirect_allow: args.oauth_redirect_allow,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(daemon::serve(config, shutdown_signal(), |_| {})) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "weir serve failed");
            eprintln!("weir: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// `--role` and what it needs.
fn cluster_settings(args: &ServeArgs) -> Result<Option<crate::daemon::cluster::Settings>, String> {
    use crate::daemon::cluster::{Role, Settings};
    if args.role == Role::All {
        return Ok(None);
    }
    let Some(amqp) = args.amqp.clone().filter(|u| !u.trim().is_empty()) else {
        return Err(format!(
            "--role {} needs the RabbitMQ broker the processes share: pass --amqp URL or set WEIR_AMQP_URL (like amqp://guest:guest@127.0.0.1:5672/%2f)",
            args.role.as_str()
        ));
    };
    let prefix = args.queue_prefix.trim();
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "--queue-prefix `{prefix}`: use 1 to 64 letters, digits, `-`, `_` or `.` (like weir or weir-staging)"
        ));
    }
    Ok(Some(Settings {
        role: args.role,
        amqp,
        prefix: prefix.to_owned(),
        partitions: args.partitions,
        prefetch: args.prefetch,
        max_queue: args.max_queue,
        hand_off_after: args.hand_off_after,
    }))
}

/// `--notify-exchange` and `--notify-url`; the URL needs its signing
/// secret.
fn notify_targets(
    exchange: Option<String>,
    url: Option<String>,
) -> Result<Vec<crate::daemon::notify::Target>, String> {
    use crate::daemon::notify::{SECRET_VAR, Target};
    let mut targets = Vec::new();
    if let Some(exchange) = exchange.filter(|e| !e.trim().is_empty()) {
        targets.push(Target::Amqp { exchange });
    }
    if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
        weir_nodes::http_client::check_url(&url).map_err(|e| format!("--notify-url: {e}"))?;
        let secret = std::env::var(SECRET_VAR).unwrap_or_default();
        if secret.is_empty() {
            return Err(format!(
                "--notify-url needs the secret its requests are signed with: set {SECRET_VAR} to `whsec_` + base64 (like whsec_$(openssl rand -base64 32))"
            ));
        }
        weir_nodes::triggers::verify::check_standard_webhooks_secret(&secret)
            .map_err(|e| format!("{SECRET_VAR} {e}"))?;
        targets.push(Target::Http { url });
    }
    Ok(targets)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("signal received");
}
