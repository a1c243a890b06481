//! The `weir` command.

/// Prints a line to stdout. A closed stdout (`weir runs list | head -1`)
/// ends the command quietly, as it ends Unix tools; it never panics.
macro_rules! out {
    () => {
        $crate::cli::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::print_line(format_args!($($arg)*))
    };
}

mod actions;
mod client;
mod connections;
mod graph;
mod mcp;
mod outbox;
mod run;
mod runs;
mod schema;
mod secrets;
mod serve;
mod token;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// weir: a self-hosted integration runtime. Flows are YAML files; runs are
/// durable.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// The largest flow file weir reads (like 1MiB); larger ones are
    /// refused with a message.
    #[arg(long, global = true, env = "WEIR_MAX_FLOW_SIZE", default_value = "1MiB", value_parser = size)]
    pub max_flow_size: usize,
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    weir_nodes::units::parse_duration(text)
}

fn size(text: &str) -> Result<usize, String> {
    let n = weir_nodes::units::parse_size(text)?;
    usize::try_from(n).map_err(|_| format!("`{text}` is too large a size"))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: serves webhooks and the API, runs cron and poll triggers.
    Serve(Box<serve::ServeArgs>),
    /// Check flow files without running anything; exit 1 if any is invalid.
    Validate {
        /// Flow files or folders (default: ./flows).
        #[arg(env = "WEIR_FLOWS")]
        paths: Vec<PathBuf>,
        /// Read symbolic links in a folder that lead out of it.
        #[arg(long, env = "WEIR_FOLLOW_SYMLINKS")]
        follow_symlinks: bool,
    },
    /// Run one event through a flow, in this process, and print each node.
    Run(run::RunArgs),
    /// List, show, retry and cancel runs of a running daemon.
    Runs(runs::RunsArgs),
    /// The deliveries waiting in a running daemon's outbox.
    Outbox(outbox::OutboxArgs),
    /// A tenant's connections to integrations, on a running daemon.
    Connections(connections::ConnectionsArgs),
    /// The actions a tenant can run on a running daemon, and running one.
    Actions(actions::ActionsArgs),
    /// A tenant's MCP tools over stdio, for a local agent (through a
    /// running daemon).
    Mcp(mcp::McpArgs),
    /// Print an API token signed with the workspace secret.
    Token(token::TokenArgs),
    /// The key ring that encrypts stored credentials.
    Secrets(secrets::SecretsArgs),
    /// Print a flow's DAG as Graphviz DOT or Mermaid.
    Graph {
        flow_file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of a file format (flow, integration or
    /// action), for editor completion.
    Schema(schema::SchemaArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// Exit codes: 0 success, 1 an invalid flow or a failed run, 2 bad usage
/// or input.
pub mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn,weir::flow=info",
    };
    init_logging(default_log);
    weir_nodes::yaml::set_max_size(cli.max_flow_size);
    match cli.command {
        Command::Serve(args) => serve::main(*args),
        Command::Runs(args) => runs::main(args),
        Command::Outbox(args) => outbox::main(args),
        Command::Token(args) => token::main(args),
        Command::Connections(args) => connections::main(args),
        Command::Actions(args) => actions::main(args),
        Command::Mcp(args) => mcp::main(args),
        Command::Secrets(args) => secrets::main(args),
        Command::Validate {
            paths,
            follow_symlinks,
        } => validate::validate(paths, links(follow_symlinks)),
        Command::Graph { flow_file, format } => graph::graph(&flow_file, format),
        Command::Run(args) => run::main(args),
        Command::Schema(args) => schema::main(args),
    }
}

/// What is never logged, whatever `WEIR_LOG` says: lapin logs the whole
/// message (payload included) of each message the broker returns; weir
/// reports the delivery as unroutable itself.
const SILENCED: &[&str] = &["lapin::returned_messages=error"];

/// See [`out!`].
pub fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("weir: cannot write to stdout: {e}");
            std::process::exit(i32::from(exit::FAILED));
        }
    }
}

/// What `--follow-symlinks` allows.
pub fn links(follow: bool) -> crate::flow::Links {
    match follow {
        true => crate::flow::Links::Anywhere,
        false => crate::flow::Links::WithinFolder,
    }
}

fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let mut filter =
        EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    for directive in SILENCED {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
