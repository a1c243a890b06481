//! Action definitions: universal actions (`actions/*.yaml`, one per file:
//! the contract — key, description, schemas) and integration actions (an
//! integration file's `actions:` list: a request to the app, or a flow).
//! Read with the flows' reader: every problem at once, at FILE:LINE:COL.

use std::path::Path;
use std::sync::Arc;

use weir_nodes::diag::{Diagnostic, Diags, Pos};
use weir_nodes::reader::{Options, valid_id};
use weir_nodes::script::{Mapping, Template};
use weir_nodes::yaml::{self, Kind, Yaml};

use super::schema::{self, Schema};
use crate::flow::{LoadError, version_of};

/// The names an action's request (`path`, `query`, `headers`, `body`) sees.
pub const REQUEST_SCOPE: &[&str] = &["input", "connection"];
/// The names an action's `output` mapping sees.
pub const OUTPUT_SCOPE: &[&str] = &["response", "input", "connection"];

/// The longest action key: its API runs' flow is `action-KEY`, a flow id.
pub const MAX_KEY: usize = 57;

/// The most attempts an action's `retry` may ask for.
pub const MAX_ATTEMPTS: u64 = 10;
/// Attempts when `retry` is not given.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// One action: a universal one (no implementation) or an integration's.
#[derive(Debug)]
pub struct Action {
    pub key: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// For an integration action that implements a universal one and gives
    /// none: `None` (it inherits the universal action's).
    pub input_schema: Option<Arc<Schema>>,
    pub output_schema: Option<Arc<Schema>>,
    pub implementation: Option<Implementation>,
    /// Where its `key` is written (its file's, for messages).
    pub file: String,
    pub pos: Pos,
    /// Where `input_schema` is written, if it is.
    pub input_schema_pos: Option<Pos>,
}

/// How an integration action is done.
#[derive(Debug)]
pub enum Implementation {
    Request(Box<RequestSpec>),
    /// `flow: ID`: an api-triggered flow whose last node's output is the
    /// action's output.
    Flow(String),
}

/// `request:` (and `output:`) of an integration action.
#[derive(Debug)]
pub struct RequestSpec {
    pub method: reqwest::Method,
    /// Relative to the integration's `base_url`.
    pub path: Template,
    pub query: Vec<(String, Template)>,
    pub headers: Vec<(String, Template)>,
    /// The JSON body, a mapping over `input` and `connection`.
    pub body: Option<Mapping>,
    /// Over `response` (`{status, headers, body}`): the action's output
    /// (default: the response's body).
    pub output: Option<Mapping>,
    /// Attempts on 429, 5xx and timeouts (default 3).
    pub attempts: u32,
}

/// A universal action file: one action, the contract only.
#[derive(Debug)]
pub struct UniversalAction {
    pub action: Action,
    /// The first 16 hex digits of the SHA-256 of the file's text.
    pub version: String,
}

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Reads a universal action from its text; `file` names it in messages.
pub fn load_universal(source: &str, file: &str) -> Result<UniversalAction, LoadError> {
    let root = yaml::parse(source).map_err(|d| LoadError {
        file: file.to_owned(),
        diagnostics: vec![d],
    })?;
    let diags = Diags::new();
    let action = read(&root, source, file, &diags, None);
    match action {
        Some(action) if diags.is_empty() => Ok(UniversalAction {
            action,
            version: version_of(source),
        }),
        _ => {
            let mut diagnostics = diags.into_sorted();
            if diagnostics.is_empty() {
                diagnostics.push(Diagnostic::new(root.pos, "the action is invalid"));
            }
            Err(LoadError {
                file: file.to_owned(),
                diagnostics,
            })
        }
    }
}

pub fn load_universal_file(path: &Path) -> Result<UniversalAction, LoadError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path)
        .map_err(|e| LoadError::one(&file, Pos::new(1, 1), format!("cannot read the file: {e}")))?;
    load_universal(&source, &file)
}

/// Reads an integration's `actions:` list; problems go to `diags`.
pub fn read_integration_actions(
    value: &Yaml,
    source: &str,
    file: &str,
    integration: &str,
    diags: &Diags,
) -> Vec<Action> {
    let Kind::List(items) = &value.kind else {
        diags.error(
            value.pos,
            format!("`actions` must be a list, not {}", value.describe()),
        );
        return Vec::new();
    };
    let mut out: Vec<Action> = Vec::new();
    for item in items {
        let Some(action) = read(item, source, file, diags, Some(integration)) else {
            continue;
        };
        match out.iter().find(|a| a.key == action.key) {
            Some(first) => diags.error(
                action.pos,
                format!(
                    "duplicate action key `{}` (first defined at line {})",
                    action.key, first.pos.line
                ),
            ),
            None => out.push(action),
        }
    }
    out
}

/// One action; `integration`: of that integration's file (an
/// implementation is required), else a universal one (none is allowed).
fn read(
    yaml: &Yaml,
    source: &str,
    file: &str,
    diags: &Diags,
    integration: Option<&str>,
) -> Option<Action> {
    let mut o = Options::new(yaml, "action", source, diags);
    let (key, pos) = o.required_str("key")?;
    if !valid_id(key) || key.len() > MAX_KEY {
        o.error(
            pos,
            format!("action key `{key}` must match [a-z0-9_-]{{1,{MAX_KEY}}}"),
        );
    }
    o.what = format!("action '{key}'");
    let name = o.str("name").map(|(n, _)| n.to_owned());
    let description = o.str("description").map(|(d, _)| d.to_owned());
    let input_schema_pos = o.get("input_schema").map(|v| v.pos);
    let input_schema = match (o.get("input_schema"), integration) {
        (Some(v), _) => schema::read(v, "input_schema", &o).map(Arc::new),
        (None, None) => {
            o.error(
                o.pos,
                "a universal action needs `input_schema` (the JSON Schema of its input)",
            );
            None
        }
        (None, Some(_)) => None,
    };
    let output_schema = o
        .get("output_schema")
        .and_then(|v| schema::read(v, "output_schema", &o))
        .map(Arc::new);
    let request_pos = o.key_pos("request");
    let flow_pos = o.key_pos("flow");
    let implementation = match integration {
        None => {
            for (k, at) in [
                ("request", request_pos),
                ("flow", flow_pos),
                ("output", o.key_pos("output")),
            ] {
                if let Some(at) = at {
                    o.error(
                        at,
                        format!(
                            "a universal action is the contract only (key, description, schemas): its `{k}` belongs in each integration's `actions:`"
                        ),
                    );
                }
            }
            None
        }
        Some(_) => read_implementation(&mut o, request_pos, flow_pos),
    };
    o.finish();
    Some(Action {
        key: key.to_owned(),
        name,
        description,
        input_schema,
        output_schema,
        implementation,
        file: file.to_owned(),
        pos,
        input_schema_pos,
    })
}

fn read_implementation(
    o: &mut Options<'_>,
    request_pos: Option<Pos>,
    flow_pos: Option<Pos>,
) -> Option<Implementation> {
    match (request_pos, flow_pos) {
        (Some(_), Some(at)) => {
            o.get("request");
            o.get("flow");
            o.get("output");
            o.error(at, "an action has a `request` or a `flow`, not both");
            None
        }
        (None, None) => {
            o.error(
                o.pos,
                "an integration action needs a `request` (method, path, body) or a `flow` (an api-triggered flow's id)",
            );
            None
        }
        (None, Some(_)) => {
            if let Some(at) = o.key_pos("output") {
                o.get("output");
                o.error(
                    at,
                    "`output` maps a request's response; a flow's action outputs its last node's output",
                );
            }
            let (id, pos) = o.required_str("flow")?;
            if !valid_id(id) {
                o.error(pos, format!("`flow` must be a flow id, not `{id}`"));
            }
            Some(Implementation::Flow(id.to_owned()))
        }
        (Some(_), None) => {
            let value = o.required("request")?;
            let mut r = Options::new(value, format!("{}: `request`", o.what), o.source, o.diags);
            let method = match r.str("method") {
                None => reqwest::Method::GET,
                Some((m, pos)) => {
                    let upper = m.to_ascii_uppercase();
                    match METHODS.contains(&upper.as_str()) {
                        true => reqwest::Method::from_bytes(upper.as_bytes())
                            .unwrap_or(reqwest::Method::GET),
                        false => {
                            r.error(
                                pos,
                                format!("unknown method `{m}`; use one of {}", METHODS.join(", ")),
                            );
                            reqwest::Method::GET
                        }
                    }
                }
            };
            let path_pos = r.get("path").map(|v| v.pos);
            let path = r.required_template("path", REQUEST_SCOPE);
            if let (Some(path), Some(pos)) = (&path, path_pos)
                && let Some(text) = path.as_literal()
                && !text.starts_with('/')
            {
                r.error(
                    pos,
                    format!("`path` is under the integration's base_url and starts with `/`, like /contacts; not `{text}`"),
                );
            }
            let query = r.template_map("query", REQUEST_SCOPE);
            let headers = r.template_map("headers", REQUEST_SCOPE);
            let body = match r.get("body") {
                None => None,
                Some(_) => r.mapping("body", REQUEST_SCOPE),
            };
            r.finish();
            let output = match o.get("output") {
                None => None,
                Some(_) => o.mapping("output", OUTPUT_SCOPE),
            };
            let attempts = match o.get("retry") {
                None => DEFAULT_ATTEMPTS,
                Some(_) => {
                    let mut retry = Options::new(
                        o.get("retry")?,
                        format!("{}: `retry`", o.what),
                        o.source,
                        o.diags,
                    );
                    let attempts = match retry.uint("attempts") {
                        Some(n @ 1..=MAX_ATTEMPTS) => n as u32,
                        Some(_) => {
                            let at = retry.key_pos("attempts").unwrap_or(retry.pos);
                            retry.error(at, format!("`attempts` must be 1 to {MAX_ATTEMPTS}"));
                            DEFAULT_ATTEMPTS
                        }
                        None => DEFAULT_ATTEMPTS,
                    };
                    retry.finish();
                    attempts
                }
            };
            Some(Implementation::Request(Box::new(RequestSpec {
                method,
                path: path?,
                query,
                headers,
                body,
                output,
                attempts,
            })))
        }
    }
}

/// Where universal and integration actions disagree: an integration action
/// that implements a universal one (the same key) may not change its
/// `input_schema` (callers rely on the contract). Each problem is a
/// load error of the integration's file.
pub fn check_layers(universal: &[&Action], integration: &[&Action]) -> Vec<LoadError> {
    let mut out = Vec::new();
    for a in integration {
        let Some(u) = universal.iter().find(|u| u.key == a.key) else {
            continue;
        };
        if let (Some(theirs), Some(ours)) = (&a.input_schema, &u.input_schema)
            && theirs.schema != ours.schema
        {
            out.push(LoadError::one(
                &a.file,
                a.input_schema_pos.unwrap_or(a.pos),
                format!(
                    "action '{}' implements the universal action of {} and may not change its `input_schema` (leave it out to inherit it)",
                    a.key, u.file
                ),
            ));
        }
    }
    out
}

/// Where an integration's flow action names a flow that is not among
/// `flows`, or one without an api trigger (the way the action starts it).
pub fn check_flows(integration: &[&Action], flows: &[crate::flow::Flow]) -> Vec<LoadError> {
    let mut out = Vec::new();
    for a in integration {
        let Some(Implementation::Flow(id)) = &a.implementation else {
            continue;
        };
        let problem = match flows.iter().find(|f| f.id == *id) {
            None => format!(
                "action '{}' runs flow `{id}`, which is not among the flows given; add a flow with `id: {id}` and an api trigger",
                a.key
            ),
            Some(f)
                if !f
                    .triggers
                    .iter()
                    .any(|t| matches!(t.kind, weir_nodes::TriggerKind::Api(_))) =>
            {
                format!(
                    "action '{}' runs flow `{id}` ({}), which has no api trigger; a flow action starts its flow through one",
                    a.key, f.file
                )
            }
            Some(_) => continue,
        };
        out.push(LoadError::one(&a.file, a.pos, problem));
    }
    out
}

impl crate::daemon::registry::Item for UniversalAction {
    const KIND: &'static str = "action";
    fn id(&self) -> &str {
        &self.action.key
    }
    fn file(&self) -> &str {
        &self.action.file
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn load(path: &Path) -> Result<Self, LoadError> {
        load_universal_file(path)
    }
    fn duplicate(&self, first: &str) -> LoadError {
        LoadError::one(
            &self.action.file,
            self.action.pos,
            format!(
                "duplicate action key `{}`: {first} has it too; keys must be unique across the actions folder",
                self.action.key
            ),
        )
    }
}

/// Every universal action file in the given files and folders; keys must
/// be unique across them.
pub fn load_universal_paths(
    paths: &[std::path::PathBuf],
    links: crate::flow::Links,
) -> (Vec<UniversalAction>, Vec<LoadError>) {
    use crate::daemon::registry::Item;
    let (files, mut errors) = crate::flow::flow_files(paths, links);
    let mut out: Vec<UniversalAction> = Vec::new();
    for file in files {
        match load_universal_file(&file) {
            Ok(a) => match out.iter().find(|b| b.action.key == a.action.key) {
                Some(first) => errors.push(a.duplicate(&first.action.file)),
                None => out.push(a),
            },
            Err(e) => errors.push(e),
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every problem of a universal action file, rendered.
    fn universal(source: &str) -> Vec<String> {
        match load_universal(source, "a.yaml") {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics.iter().map(|d| d.render(&e.file)).collect(),
        }
    }

    /// Every problem of an integration file's actions, rendered.
    fn integration(actions: &str) -> Vec<String> {
        let source = format!(
            "key: crm\nbase_url: https://crm.example\nauth: {{type: bearer}}\nactions:\n{actions}"
        );
        match crate::connect::integration::load_source(&source, "i.yaml") {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics.iter().map(|d| d.render(&e.file)).collect(),
        }
    }

    fn has(found: &[String], at: &str, needle: &str) {
        assert!(
            found
                .iter()
                .any(|p| p.contains(&format!(":{at}: error: ")) && p.contains(needle)),
            "expected `{needle}` at {at} in {found:#?}"
        );
    }

    const SCHEMA: &str =
        "input_schema: {type: object, required: [email], properties: {email: {type: string}}}\n";

    #[test]
    fn a_universal_action_is_a_contract() {
        let a = load_universal(
            &format!("key: create-contact\ndescription: d\n{SCHEMA}"),
            "a.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.action.key, "create-contact");
        assert!(a.action.implementation.is_none());
        let found = universal("key: x\nrequest: {path: /x}\n");
        has(&found, "1:1", "needs `input_schema`");
        has(&found, "2:1", "a universal action is the contract only");
        let found = universal("key: Bad Key\ninput_schema: {type: objekt}\noutput_schema: [1]\n");
        has(&found, "1:6", "action key `Bad Key` must match");
        has(&found, "2:15", "`input_schema` is not a valid JSON Schema");
        has(
            &found,
            "3:16",
            "`output_schema` must be a JSON Schema (a map)",
        );
        has(
            &universal("key: x\ninput_schema: {}\ninput_shema: {}\n"),
            "3:1",
            "input_schema",
        );
    }

    #[test]
    fn integration_actions_need_one_implementation_that_compiles() {
        let ok = crate::connect::integration::load_source(
            "key: crm\nbase_url: https://crm.example\nauth: {type: bearer}\nactions:\n  - key: create-contact\n    request: {method: post, path: '/contacts/${input.id}', query: {q: '${input.q}'}, body: {email: input.email, who: connection.name}}\n    output: {id: response.body.id}\n    retry: {attempts: 5}\n  - {key: sync, flow: crm-sync}\n",
            "i.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.actions.len(), 2);
        let Some(Implementation::Request(r)) = &ok.actions[0].implementation else {
            panic!("a request action")
        };
        assert_eq!(r.method, reqwest::Method::POST);
        assert_eq!(r.attempts, 5);
        assert!(
            matches!(&ok.actions[1].implementation, Some(Implementation::Flow(f)) if f == "sync" || f == "crm-sync")
        );

        let found = integration(
            "  - {key: a}\n  - {key: b, flow: f, request: {path: /x}}\n  - {key: c, request: {path: x, method: FETCH}}\n  - {key: c, flow: f}\n  - {key: d, request: {path: /x, body: {e: input.emial +}}, output: {id: nodes.x}}\n  - {key: e, flow: f, output: {a: 1}}\n  - {key: f, request: {path: /x}, retry: {attempts: 0}}\n",
        );
        has(&found, "5:5", "needs a `request`");
        has(&found, "6:14", "a `request` or a `flow`, not both");
        has(&found, "7:30", "`path` is under the integration's base_url");
        has(&found, "7:41", "unknown method `FETCH`");
        has(&found, "8:11", "duplicate action key `c`");
        has(&found, "9:57", "invalid expression");
        has(&found, "9:74", "unknown variable `nodes`");
        has(&found, "10:23", "`output` maps a request's response");
        has(&found, "11:43", "`attempts` must be 1 to 10");
        assert!(
            !found.iter().any(|p| p.contains("unknown option")),
            "{found:#?}"
        );
    }

    #[test]
    fn an_implementation_may_not_change_the_universal_input_schema() {
        let u = load_universal(&format!("key: create-contact\n{SCHEMA}"), "u.yaml").unwrap();
        let i = crate::connect::integration::load_source(
            "key: crm\nbase_url: https://crm.example\nauth: {type: bearer}\nactions:\n  - key: create-contact\n    input_schema: {type: object}\n    request: {path: /c}\n  - key: list-contacts\n    input_schema: {type: object}\n    request: {path: /c}\n  - key: create-contact-too\n    request: {path: /c}\n",
            "i.yaml",
        )
        .unwrap();
        let problems = check_layers(&[&u.action], &i.actions.iter().collect::<Vec<_>>());
        assert_eq!(problems.len(), 1, "{problems:?}");
        let text = problems[0].to_string();
        assert!(text.contains("i.yaml:6:19"), "{text}");
        assert!(text.contains("may not change its `input_schema`"), "{text}");
        // The same schema, or none, inherits it.
        let same = crate::connect::integration::load_source(
            &format!("key: crm\nbase_url: https://crm.example\nauth: {{type: bearer}}\nactions:\n  - key: create-contact\n    {SCHEMA}    request: {{path: /c}}\n"),
            "i.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(check_layers(&[&u.action], &same.actions.iter().collect::<Vec<_>>()).is_empty());
    }
}
