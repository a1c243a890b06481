//! `weir validate [PATH...]`: flow files and integration files (an
//! integration file is the one whose top level has `key:` and no `id:`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::exit;
use crate::connect::integration;
use crate::flow::{Links, flow_files, load_paths};

/// Whether the file reads as an integration rather than a flow: a
/// top-level `key:` line and no `id:` line (a look at the text, not a
/// parse: each file is parsed once, by its loader).
fn is_integration(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let top = |name: &str| text.lines().any(|l| l.starts_with(name));
    top("key:") && !top("id:")
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

pub fn validate(mut paths: Vec<PathBuf>, links: Links) -> ExitCode {
    if paths.is_empty() {
        paths.push(PathBuf::from("flows"));
        if Path::new("integrations").is_dir() {
            paths.push(PathBuf::from("integrations"));
        }
    }
    let missing: Vec<_> = paths.iter().filter(|p| !p.exists()).collect();
    if !missing.is_empty() {
        for p in missing {
            eprintln!("weir: {}: no such file or folder", p.display());
        }
        return ExitCode::from(exit::USAGE);
    }
    let (files, mut errors) = flow_files(&paths, links);
    let (integration_files, flow_files): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|f| is_integration(f));
    let (flows, flow_errors) = load_paths(&flow_files, links);
    let (integrations, integration_errors) = integration::load_paths(&integration_files, links);
    errors.extend(flow_errors);
    errors.extend(integration_errors);
    errors.sort_by(|a, b| a.file.cmp(&b.file));
    for error in &errors {
        out!("{error}");
    }
    let valid = format!(
        "{}, {}",
        plural(flows.len(), "valid flow"),
        plural(integrations.len(), "valid integration")
    );
    if errors.is_empty() {
        eprintln!("{valid}");
        ExitCode::SUCCESS
    } else {
        let problems: usize = errors.iter().map(|e| e.diagnostics.len()).sum();
        eprintln!(
            "{} in {}; {valid}",
            plural(problems, "problem"),
            plural(errors.len(), "file")
        );
        ExitCode::from(exit::FAILED)
    }
}
