//! `weir validate [PATH...]`

use std::path::PathBuf;
use std::process::ExitCode;

use super::exit;
use crate::flow::{Links, load_paths};

pub fn validate(mut paths: Vec<PathBuf>, links: Links) -> ExitCode {
    if paths.is_empty() {
        paths.push(PathBuf::from("flows"));
    }
    let missing: Vec<_> = paths.iter().filter(|p| !p.exists()).collect();
    if !missing.is_empty() {
        for p in missing {
            eprintln!("weir: {}: no such file or folder", p.display());
        }
        return ExitCode::from(exit::USAGE);
    }
    let (flows, errors) = load_paths(&paths, links);
    for error in &errors {
        out!("{error}");
    }
    let problems: usize = errors.iter().map(|e| e.diagnostics.len()).sum();
    if errors.is_empty() {
        eprintln!(
            "{} valid flow{}",
            flows.len(),
            if flows.len() == 1 { "" } else { "s" }
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{problems} problem{} in {} file{}; {} valid flow{}",
            if problems == 1 { "" } else { "s" },
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            flows.len(),
            if flows.len() == 1 { "" } else { "s" },
        );
        ExitCode::from(exit::FAILED)
    }
}
