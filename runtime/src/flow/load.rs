//! Reading flow files: one file, a list of files and folders, or text.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use weir_nodes::diag::{Diagnostic, Diags, Pos};
use weir_nodes::node::read_node;
use weir_nodes::reader::{Options, valid_id};
use weir_nodes::script::{FLOW_SCOPE, to_dynamic};
use weir_nodes::triggers::{EVENT_SCOPE, read_trigger};
use weir_nodes::yaml::{self, Kind};
use weir_nodes::{TriggerDef, TriggerKind};

use super::{Concurrency, Flow, Graph, Secrets, Tenants, checks, version_of};

/// Every problem of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&d.render(&self.file))?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    pub fn one(file: &str, pos: Pos, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            diagnostics: vec![Diagnostic::new(pos, message)],
        }
    }
}

/// Reads one flow file.
pub fn load_file(path: &Path) -> Result<Flow, LoadError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path)
        .map_err(|e| LoadError::one(&file, Pos::new(1, 1), format!("cannot read the file: {e}")))?;
    load_source(&source, &file)
}

/// Reads every `*.yaml`/`*.yml` file in the given files and folders (a
/// folder's files in name order). Flow ids must be unique across them.
pub fn load_paths(paths: &[PathBuf], links: Links) -> (Vec<Flow>, Vec<LoadError>) {
    let (files, mut errors) = flow_files(paths, links);
    let mut flows: Vec<Flow> = Vec::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    for file in files {
        match load_file(&file) {
            Ok(flow) => match ids.get(&flow.id) {
                Some(first) => errors.push(duplicate_id(&flow, first)),
                None => {
                    ids.insert(flow.id.clone(), flow.file.clone());
                    flows.push(flow);
                }
            },
            Err(e) => errors.push(e),
        }
    }
    (flows, errors)
}

/// The error for a flow whose id another file, `first`, already has.
pub fn duplicate_id(flow: &Flow, first: &str) -> LoadError {
    LoadError::one(
        &flow.file,
        id_pos(&flow.source),
        format!(
            "duplicate flow id `{}`: {first} has it too; flow ids must be unique across the flows folder",
            flow.id
        ),
    )
}

/// Whether a folder's symbolic links may lead out of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Links {
    /// Links to files inside the folder are read; others are reported,
    /// not read (`--follow-symlinks` allows them).
    #[default]
    WithinFolder,
    /// Links are read wherever they lead.
    Anywhere,
}

/// The flow files among `paths`: files as given, and each folder's
/// `*.yaml`/`*.yml` files in name order. In a folder, a symbolic link that
/// leads nowhere is reported, and one that leads out of the folder is
/// reported and not read, unless `links` allows it. A folder that cannot
/// be read is an error of its own.
pub fn flow_files(paths: &[PathBuf], links: Links) -> (Vec<PathBuf>, Vec<LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        if path.is_dir() {
            match folder_files(path, links) {
                Ok((found, problems)) => {
                    files.extend(found);
                    errors.extend(problems);
                }
                Err(e) => errors.push(LoadError::one(
                    &path.display().to_string(),
                    Pos::new(1, 1),
                    format!("cannot read the folder: {e}"),
                )),
            }
        } else {
            files.push(path.clone());
        }
    }
    (files, errors)
}

fn is_flow_file(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "yaml" || x == "yml")
}

/// A folder's flow files, and the problems of its links.
fn folder_files(dir: &Path, links: Links) -> std::io::Result<(Vec<PathBuf>, Vec<LoadError>)> {
    let canonical = std::fs::canonicalize(dir)?;
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if !is_flow_file(&path) {
            continue;
        }
        let file = path.display().to_string();
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            let target = std::fs::read_link(&path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            match std::fs::canonicalize(&path) {
                Err(_) => problems.push(LoadError::one(
                    &file,
                    Pos::new(1, 1),
                    format!("a symbolic link to `{target}`, which does not exist"),
                )),
                Ok(real) if links == Links::WithinFolder && !real.starts_with(&canonical) => {
                    problems.push(LoadError::one(
                        &file,
                        Pos::new(1, 1),
                        format!(
                            "a symbolic link to `{target}`, outside the flows folder: it is not read (weir serve --follow-symlinks allows links out of the folder)"
                        ),
                    ))
                }
                Ok(real) if real.is_file() => found.push(path),
                Ok(_) => {}
            }
        } else if kind.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok((found, problems))
}

/// Where the `id:` value of a valid flow stands.
fn id_pos(source: &str) -> Pos {
    let Ok(root) = yaml::parse(source) else {
        return Pos::new(1, 1);
    };
    match &root.kind {
        Kind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.name == "id")
            .map_or(root.pos, |(_, v)| v.pos),
        _ => root.pos,
    }
}

/// Reads a flow from its text; `file` names it in messages. The
/// environment variables it names (`secret_env`, `secrets`) must be set.
pub fn load_source(source: &str, file: &str) -> Result<Flow, LoadError> {
    load(source, file, true)
}

/// Reads back a stored flow version for a run that resumes on it: its
/// environment variables need not be set any more (a node that uses a
/// secret that is gone fails, naming it).
pub fn load_snapshot(source: &str, file: &str) -> Result<Flow, LoadError> {
    load(source, file, false)
}

fn load(source: &str, file: &str, require_env: bool) -> Result<Flow, LoadError> {
    let root = yaml::parse(source).map_err(|d| LoadError {
        file: file.to_owned(),
        diagnostics: vec![d],
    })?;
    let diags = Diags::new();
    let flow = read_flow(&root, source, file, &diags, require_env);
    match flow {
        Some(flow) if diags.is_empty() => Ok(flow),
        _ => {
            let mut diagnostics = diags.into_sorted();
            if diagnostics.is_empty() {
                diagnostics.push(Diagnostic::new(root.pos, "the flow is invalid"));
            }
            Err(LoadError {
                file: file.to_owned(),
                diagnostics,
            })
        }
    }
}

/// A poll's request in a flow that runs per connection goes through the
/// connection (its `url` a path under the integration's `base_url`); in
/// any other flow its `url` is a full URL.
fn connect_polls(triggers: &mut [TriggerDef], integration: Option<&str>, diags: &Diags) {
    for t in triggers {
        let TriggerKind::Poll(poll) = &mut t.kind else {
            continue;
        };
        let request = &mut poll.request;
        match (integration, request.url_is_path()) {
            (Some(key), is_path) => {
                if is_path == Some(false) {
                    diags.error(
                        request.url_pos,
                        format!(
                            "trigger '{}': in a flow with `integration: {key}` the poll goes through each connection, so `url` is a path under the integration's base_url, like /contacts",
                            t.id
                        ),
                    );
                }
                request.connection = Some(weir_nodes::functions::http::Connection {
                    integration: key.to_owned(),
                    id: None,
                });
            }
            (None, Some(true)) => diags.error(
                request.url_pos,
                format!(
                    "trigger '{}': `url` is a path; a poll with a path goes through connections, which needs `integration: KEY` at the top of the flow — else give a full URL (https://…)",
                    t.id
                ),
            ),
            (None, _) => {}
        }
    }
}

fn read_flow(
    root: &yaml::Yaml,
    source: &str,
    file: &str,
    diags: &Diags,
    require_env: bool,
) -> Option<Flow> {
    let mut o = Options::new(root, "flow", source, diags);
    let id = o.required_str("id").map(|(id, pos)| {
        if !valid_id(id) {
            diags.error(pos, format!("flow id `{id}` must match [a-z0-9_-]{{1,64}}"));
        }
        id.to_owned()
    });
    if let Some(id) = &id {
        o.what = format!("flow '{id}'");
    }
    let name = o.str("name").map(|(n, _)| n.to_owned());
    let vars = match o.get("vars") {
        None => serde_json::json!({}),
        Some(v) if matches!(v.kind, Kind::Map(_)) => v.to_json(),
        Some(v) => {
            o.error(v.pos, format!("`vars` must be a map, not {}", v.describe()));
            serde_json::json!({})
        }
    };
    let secrets = o
        .get("secrets")
        .map(|v| Secrets::read(v, source, diags, require_env))
        .unwrap_or_default();
    let integration = o.str("integration").map(|(key, pos)| {
        if !valid_id(key) {
            o.error(
                pos,
                format!(
                    "`integration` must be an integration key ([a-z0-9_-]{{1,64}}), not `{key}`"
                ),
            );
        }
        key.to_owned()
    });
    let tenants_pos = o.key_pos("tenants").unwrap_or(o.pos);
    let tenants = match o.str_list("tenants") {
        // A flow that runs per connection serves every tenant with one.
        None if integration.is_some() => Tenants::Any,
        None => Tenants::Listed(vec!["default".to_owned()]),
        Some(list) if list.iter().any(|(t, _)| *t == "*") => {
            if list.len() > 1 {
                o.error(
                    tenants_pos,
                    "`tenants: \"*\"` serves any tenant; list no other key beside it",
                );
            }
            Tenants::Any
        }
        Some(list) => {
            let mut tenants = Vec::new();
            for (t, pos) in list {
                if !valid_id(t) {
                    o.error(pos, format!("tenant `{t}` must match [a-z0-9_-]{{1,64}}"));
                } else if tenants.iter().any(|x| x == t) {
                    o.error(pos, format!("tenant `{t}` is listed twice"));
                } else {
                    tenants.push(t.to_owned());
                }
            }
            if tenants.is_empty() {
                o.error(tenants_pos, "`tenants` must list at least one tenant");
            }
            Tenants::Listed(tenants)
        }
    };
    let concurrency = o.get("concurrency").map(|value| {
        let mut c = Options::new(value, format!("{}: `concurrency`", o.what), source, diags);
        let key = c.expr("key", EVENT_SCOPE);
        let limit = match c.uint("limit") {
            None => 1,
            Some(0) => {
                c.error(value.pos, "`limit` must be at least 1");
                1
            }
            Some(n) => n.min(u64::from(u32::MAX)) as u32,
        };
        c.finish();
        Concurrency { key, limit }
    });

    let mut triggers = Vec::new();
    if let Some(value) = o.required("triggers") {
        match &value.kind {
            Kind::List(items) if !items.is_empty() => {
                let mut seen: HashMap<String, Pos> = HashMap::new();
                for item in items {
                    if let Some(t) = read_trigger(item, source, diags) {
                        if let Some(first) = seen.get(&t.id) {
                            diags.error(
                                t.pos,
                                format!(
                                    "duplicate trigger id `{}` (first defined at line {})",
                                    t.id, first.line
                                ),
                            );
                        } else {
                            seen.insert(t.id.clone(), t.pos);
                            triggers.push(t);
                        }
                    }
                }
            }
            _ => o.error(value.pos, "`triggers` must be a non-empty list of triggers"),
        }
    }

    let mut nodes = Vec::new();
    if let Some(value) = o.required("nodes") {
        match &value.kind {
            Kind::List(items) if !items.is_empty() => {
                for item in items {
                    if let Some(node) = read_node(item, source, FLOW_SCOPE, diags) {
                        nodes.push(node);
                    }
                }
            }
            _ => o.error(value.pos, "`nodes` must be a non-empty list of nodes"),
        }
    }
    o.finish();
    connect_polls(&mut triggers, integration.as_deref(), diags);
    if tenants == Tenants::Any && integration.is_none() {
        for t in &triggers {
            if matches!(t.kind, TriggerKind::Cron(_) | TriggerKind::Poll(_)) {
                diags.error(
                    t.pos,
                    format!(
                        "trigger '{}': a {} trigger fires for each tenant listed in `tenants`; with `tenants: \"*\"` there is no list — name the tenants",
                        t.id,
                        t.kind.type_name()
                    ),
                );
            }
        }
    }
    let graph = Graph::build(nodes, &mut HashMap::new(), None, diags);
    checks::references(&graph, &triggers, &secrets, diags);
    if integration.is_none() {
        checks::no_connection(&graph, &triggers, diags);
    }
    if require_env {
        checks::environment(&graph, &triggers, tenants.listed(), diags);
    }
    Some(Flow {
        id: id?,
        name,
        version: version_of(source),
        file: file.to_owned(),
        source: source.to_owned(),
        vars_dynamic: to_dynamic(&vars),
        vars,
        secrets,
        tenants,
        integration,
        concurrency,
        triggers,
        graph,
    })
}
