//! `weir validate [PATH...]`: flow files, integration files and universal
//! action files (an integration file is one whose top level has `key:`
//! and no `id:`; an action file has `key:` and `input_schema:`, and no
//! `base_url:` or `auth:`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::exit;
use crate::act::definition;
use crate::connect::integration;
use crate::flow::{Links, flow_files, load_paths};

#[derive(PartialEq, Eq)]
enum FileKind {
    Flow,
    Integration,
    Action,
}

/// What the file reads as, by its top-level keys (a look at the text, not
/// a parse: each file is parsed once, by its loader).
fn kind_of(path: &Path) -> FileKind {
    let Ok(text) = std::fs::read_to_string(path) else {
        return FileKind::Flow;
    };
    let top = |name: &str| text.lines().any(|l| l.starts_with(name));
    match top("key:") && !top("id:") {
        false => FileKind::Flow,
        true if top("input_schema:") && !top("base_url:") && !top("auth:") => FileKind::Action,
        true => FileKind::Integration,
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

pub fn validate(mut paths: Vec<PathBuf>, links: Links) -> ExitCode {
    if paths.is_empty() {
        paths.push(PathBuf::from("flows"));
        for dir in ["integrations", "actions"] {
            if Path::new(dir).is_dir() {
                paths.push(PathBuf::from(dir));
            }
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
    let mut by_kind: [Vec<PathBuf>; 3] = Default::default();
    for f in files {
        let slot = match kind_of(&f) {
            FileKind::Flow => 0,
            FileKind::Integration => 1,
            FileKind::Action => 2,
        };
        by_kind[slot].push(f);
    }
    let [flow_files, integration_files, action_files] = by_kind;
    let (flows, flow_errors) = load_paths(&flow_files, links);
    let (integrations, integration_errors) = integration::load_paths(&integration_files, links);
    let (actions, action_errors) = definition::load_universal_paths(&action_files, links);
    errors.extend(flow_errors);
    errors.extend(integration_errors);
    errors.extend(action_errors);
    let universal: Vec<&definition::Action> = actions.iter().map(|a| &a.action).collect();
    let implemented: Vec<&definition::Action> =
        integrations.iter().flat_map(|i| &i.actions).collect();
    errors.extend(definition::check_layers(&universal, &implemented));
    // A flow action's flow, when flows are validated with it.
    if !flow_files.is_empty() {
        errors.extend(definition::check_flows(&implemented, &flows));
    }
    errors.sort_by(|a, b| a.file.cmp(&b.file));
    for error in &errors {
        out!("{error}");
    }
    let mut valid = format!(
        "{}, {}",
        plural(flows.len(), "valid flow"),
        plural(integrations.len(), "valid integration")
    );
    if !action_files.is_empty() {
        valid.push_str(&format!(", {}", plural(actions.len(), "valid action")));
    }
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
