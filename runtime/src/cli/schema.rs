//! `weir schema flow|integration|action`: prints the JSON Schema (draft
//! 2020-12) of a file format, for editor completion.

use std::process::ExitCode;

use clap::Args;

use super::exit;
use crate::formats::{self, Kind};

/// `weir schema KIND`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which file format: flow, integration or action.
    #[arg(value_enum)]
    pub kind: Kind,
}

/// Prints the schema of `args.kind` as pretty JSON on stdout.
pub fn main(args: SchemaArgs) -> ExitCode {
    match serde_json::to_string_pretty(&formats::schema(args.kind)) {
        Ok(text) => {
            out!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir schema: cannot write the schema: {e}");
            ExitCode::from(exit::FAILED)
        }
    }
}
