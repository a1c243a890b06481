//! The workspace flags (`weir serve`, `weir token`) and `weir token`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use secrecy::SecretString;

use super::exit;
use crate::auth::{Caller, Grant, Workspace};

/// The variable that holds the workspace secret, or `@PATH` to a file.
pub const SECRET_VAR: &str = "WEIR_WORKSPACE_SECRET";

#[derive(Debug, clap::Args)]
pub struct WorkspaceArgs {
    /// The workspace key: the `iss` of its tokens.
    #[arg(long, env = "WEIR_WORKSPACE_KEY", default_value = "default")]
    pub workspace_key: String,
    /// A file holding the workspace secret that signs tokens (or set
    /// WEIR_WORKSPACE_SECRET to the secret, or to @PATH). Without one the
    /// API is open, on a loopback address only.
    #[arg(long)]
    pub workspace_secret_file: Option<PathBuf>,
    /// The longest lifetime (exp − iat) of a token weir accepts.
    #[arg(long, env = "WEIR_MAX_TOKEN_TTL", default_value = "24h", value_parser = super::duration)]
    pub max_token_ttl: Duration,
}

impl WorkspaceArgs {
    /// The workspace, if a secret is configured.
    pub fn workspace(&self) -> Result<Option<Workspace>, String> {
        let Some(secret) = self.secret()? else {
            return Ok(None);
        };
        Workspace::new(&self.workspace_key, &secret, self.max_token_ttl)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn secret(&self) -> Result<Option<SecretString>, String> {
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|text| SecretString::from(text.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| {
                    format!(
                        "cannot read the workspace secret file {}: {e}",
                        path.display()
                    )
                })
        };
        if let Some(path) = &self.workspace_secret_file {
            return read(path).map(Some);
        }
        match std::env::var(SECRET_VAR) {
            Ok(value) if value.is_empty() => Ok(None),
            Ok(value) => match value.strip_prefix('@') {
                Some(path) => read(std::path::Path::new(path)).map(Some),
                None => Ok(Some(SecretString::from(value))),
            },
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("{SECRET_VAR} is not UTF-8 text"))
            }
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("who").required(true).args(["tenant", "admin"]))]
pub struct TokenArgs {
    /// The tenant the token acts for.
    #[arg(long)]
    pub tenant: Option<String>,
    /// A workspace-wide token: every tenant, and the admin endpoints.
    #[arg(long)]
    pub admin: bool,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = super::duration)]
    pub ttl: Duration,
    /// A name for the token (its `name` claim).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub workspace: WorkspaceArgs,
}

/// `weir token`: prints a token signed with the workspace secret.
pub fn main(args: TokenArgs) -> ExitCode {
    let usage = |message: String| {
        eprintln!("weir: {message}");
        ExitCode::from(exit::USAGE)
    };
    let workspace = match args.workspace.workspace() {
        Ok(Some(w)) => w,
        Ok(None) => {
            return usage(format!(
                "no workspace secret: set {SECRET_VAR} (or pass --workspace-secret-file PATH) to the secret the daemon uses"
            ));
        }
        Err(e) => return usage(e),
    };
    if args.ttl > args.workspace.max_token_ttl {
        return usage(format!(
            "--ttl {}s is longer than the daemon accepts (--max-token-ttl {}s)",
            args.ttl.as_secs(),
            args.workspace.max_token_ttl.as_secs()
        ));
    }
    if args.ttl.is_zero() {
        return usage("--ttl must be longer than 0s".into());
    }
    let caller = match (&args.tenant, args.admin) {
        (Some(t), false) if weir_nodes::reader::valid_id(t) => Caller::Tenant(t.clone()),
        (Some(t), false) => return usage(format!("--tenant `{t}` must match [a-z0-9_-]{{1,64}}")),
        _ => Caller::Admin,
    };
    let grant = Grant {
        caller,
        ttl: args.ttl,
        name: args.name,
    };
    match workspace.issue(&grant, chrono::Utc::now().timestamp()) {
        Ok(token) => {
            out!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}
