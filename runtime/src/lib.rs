//! weir's runtime: flow loading and validation, the DAG engine that drives
//! runs durably, and the `weir` command.
//!
//! - [`flow`]: a flow file → triggers and a validated DAG
//! - [`engine`]: runs: start, drive node by node with durable commits, resume
//! - [`cli`]: `weir validate`, `weir run`, `weir graph`

pub mod act;
pub mod auth;
pub mod cli;
pub mod connect;
pub mod console;
pub mod daemon;
pub mod engine;
pub mod flow;
pub mod formats;
pub mod metrics;
pub mod view;

#[cfg(test)]
mod tests {
    /// The end-to-end tests live in the top-level `tests/` folder, which
    /// cargo does not search: each file there must be a `[[test]]` of this
    /// package, or it would silently never run.
    #[test]
    fn every_end_to_end_test_file_is_a_test_target() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
        let dir = root.join("../tests");
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".rs") && !manifest.contains(&format!("path = \"../tests/{name}\"")) {
                missing.push(name);
            }
        }
        assert!(
            missing.is_empty(),
            "tests/{missing:?} are not [[test]] targets in runtime/Cargo.toml; add them"
        );
        assert!(
            manifest.contains("path = \"../tests/cli.rs\""),
            "the check reads the manifest"
        );
    }
}
