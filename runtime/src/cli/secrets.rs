//! The key ring flags (`weir serve`, `weir secrets`) and `weir secrets
//! rotate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use secrecy::SecretString;

use super::exit;
use crate::connect::vault::{KEYS_VAR, KeyRing};

#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// A file with the key ring (else WEIR_SECRET_KEYS): comma-separated
    /// `kid:base64key` pairs of 32-byte keys; the first encrypts
    /// credentials, every one decrypts.
    #[arg(long)]
    pub secret_keys_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The key ring, if one is configured.
    pub fn ring(&self) -> Result<Option<Arc<KeyRing>>, String> {
        let text = match &self.secret_keys_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?,
            None => match std::env::var(KEYS_VAR) {
                Ok(v) if !v.trim().is_empty() => v,
                Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!("{KEYS_VAR} is not UTF-8 text"));
                }
            },
        };
        KeyRing::parse(&SecretString::from(text))
            .map(|r| Some(Arc::new(r)))
            .map_err(|e| e.to_string())
    }
}

#[derive(Debug, clap::Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub command: SecretsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Encrypt every stored credential again with the first key of the
    /// ring (then the other keys can be removed). Run it with the daemon
    /// stopped.
    Rotate {
        /// The data folder.
        #[arg(long, env = "WEIR_DATA", default_value = "data")]
        data: PathBuf,
        #[command(flatten)]
        keys: KeyArgs,
    },
}

pub fn main(args: SecretsArgs) -> ExitCode {
    let SecretsCommand::Rotate { data, keys } = args.command;
    let ring = match keys.ring() {
        Ok(Some(ring)) => ring,
        Ok(None) => {
            eprintln!(
                "weir: no key ring: set {KEYS_VAR} (new key first, then the old ones) or pass --secret-keys-file"
            );
            return ExitCode::from(exit::USAGE);
        }
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    if !data.is_dir() {
        eprintln!(
            "weir: the data folder {} does not exist (--data DIR)",
            data.display()
        );
        return ExitCode::from(exit::USAGE);
    }
    super::client::block_on(async move {
        let store = weir_storage::SledStore::open(&data).map_err(|e| e.to_string())?;
        let integrations = Arc::new(crate::daemon::registry::Registry::empty(
            std::path::Path::new("."),
            crate::flow::Links::WithinFolder,
        ));
        let connections = crate::connect::connections::Connections::new(
            store.clone(),
            integrations,
            Some(ring.clone()),
        );
        let changed = connections.rotate().await.map_err(|e| e.to_string())?;
        store.close().await;
        out!(
            "{changed} credential(s) encrypted again with key `{}`",
            ring.primary()
        );
        Ok(ExitCode::SUCCESS)
    })
}
