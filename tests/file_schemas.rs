//! `weir schema flow|integration|action`: the JSON Schemas editors use for
//! completion. Every example file matches its schema, every option the docs
//! document is in it, and what weir refuses the schema refuses too.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use weir_testkit::run_weir;

const TIMEOUT: Duration = Duration::from_secs(20);
const META_SCHEMA: &str = "https://json-schema.org/draft/2020-12/schema";

/// The workspace's root folder.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What `weir schema KIND` prints, parsed.
fn schema_of(kind: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let done = run_weir(dir.path(), kind, &["schema", kind], TIMEOUT);
    done.assert_no_panic();
    assert_eq!(done.code, Some(0), "{done}");
    serde_json::from_str(&done.stdout).unwrap_or_else(|e| panic!("{e}: {done}"))
}

/// A YAML file's text as JSON, read by weir's own YAML reader.
fn yaml_to_json(text: &str, what: &str) -> Value {
    weir_nodes::yaml::parse(text)
        .unwrap_or_else(|d| panic!("{what}: {}", d.message))
        .to_json()
}

/// The `*.yaml` files of a folder of the workspace, in name order.
fn yaml_files(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {folder}/");
    files
}

/// Every problem of `value` against `schema`, one line each.
fn problems(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect()
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::validator_for(schema).unwrap()
}

/// Every property name anywhere in a schema.
fn property_names(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::Object(properties)) = object.get("properties") {
                out.extend(properties.keys().cloned());
            }
            object.values().for_each(|v| property_names(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| property_names(v, out)),
        _ => {}
    }
}

/// Every `const` and `enum` string value anywhere in a schema.
fn constants(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(object) => {
            if let Some(Value::String(c)) = object.get("const") {
                out.insert(c.clone());
            }
            if let Some(Value::Array(values)) = object.get("enum") {
                out.extend(values.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            object.values().for_each(|v| constants(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| constants(v, out)),
        _ => {}
    }
}

/// The `const` values of every `type` property: the trigger, node and auth
/// types the schema knows.
fn type_names(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(object) => {
            if let Some(c) = object
                .get("properties")
                .and_then(|p| p.get("type"))
                .and_then(|t| t.get("const"))
                .and_then(Value::as_str)
            {
                out.insert(c.to_owned());
            }
            object.values().for_each(|v| type_names(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| type_names(v, out)),
        _ => {}
    }
}

/// A Markdown table: its header's cells and its rows' cells.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect()
}

/// The tables of a Markdown text.
fn tables(text: &str) -> Vec<Table> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < lines.len() {
        if lines[i].starts_with('|') && lines[i + 1].starts_with("|---") {
            let header = cells(lines[i]);
            let mut rows = Vec::new();
            i += 2;
            while i < lines.len() && lines[i].starts_with('|') {
                rows.push(cells(lines[i]));
                i += 1;
            }
            out.push(Table { header, rows });
        } else {
            i += 1;
        }
    }
    out
}

/// A cell that is exactly one backticked name (`` `max_body` ``).
fn name_cell(cell: &str) -> Option<&str> {
    let name = cell.strip_prefix('`')?.strip_suffix('`')?;
    is_name(name).then_some(name)
}

fn is_name(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_lowercase())
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The backticked names in a text (`` `url` (template), `headers` `` → url,
/// headers); backticked text that is not one name is left out.
fn backticked_names(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| is_name(w))
        .collect()
}

/// The part of a Markdown text from the heading `## title` to the next
/// heading of that level.
fn section<'t>(text: &'t str, title: &str) -> &'t str {
    let heading = format!("\n## {title}\n");
    let start = text
        .find(&heading)
        .unwrap_or_else(|| panic!("no section `{title}`"));
    let rest = &text[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The ```yaml blocks of a Markdown text.
fn yaml_blocks(text: &str) -> Vec<String> {
    text.split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_schemas_are_json_schema_2020_12() {
    for kind in ["flow", "integration", "action"] {
        let schema = schema_of(kind);
        assert_eq!(schema["$schema"], META_SCHEMA, "{kind}");
        assert!(
            jsonschema::meta::is_valid(&schema),
            "{kind}: not a valid JSON Schema"
        );
        assert_eq!(schema["type"], "object", "{kind}");
        assert_eq!(
            schema["additionalProperties"], false,
            "{kind}: unknown keys are flagged"
        );
        assert!(
            schema["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{kind}: documented"
        );
    }
}

#[test]
fn an_unknown_kind_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let done = run_weir(dir.path(), "bogus", &["schema", "flows"], TIMEOUT);
    done.assert_no_panic();
    assert_eq!(done.code, Some(2), "{done}");
    assert!(done.stdout.is_empty(), "{done}");
    for kind in ["flow", "integration", "action"] {
        assert!(done.stderr.contains(kind), "names the kinds: {done}");
    }
}

#[test]
fn every_example_file_matches_its_schema() {
    let cases = [
        ("flow", vec!["flows", "examples/flows"]),
        ("integration", vec!["integrations"]),
        ("action", vec!["actions"]),
    ];
    let mut checked = 0;
    let mut failures = Vec::new();
    for (kind, folders) in cases {
        let validator = validator(&schema_of(kind));
        for folder in folders {
            for file in yaml_files(folder) {
                let text = std::fs::read_to_string(&file).unwrap();
                let value = yaml_to_json(&text, &file.display().to_string());
                for p in problems(&validator, &value) {
                    failures.push(format!("{} ({kind}): {p}", file.display()));
                }
                checked += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 10, "checked {checked} files");
}

#[test]
fn the_complete_examples_of_the_docs_match_their_schemas() {
    let flow = validator(&schema_of("flow"));
    let integration = validator(&schema_of("integration"));
    let action = validator(&schema_of("action"));
    let mut checked = 0;
    for doc in ["flow-format.md", "connections.md", "actions.md"] {
        let text = std::fs::read_to_string(root().join("docs").join(doc)).unwrap();
        for (i, block) in yaml_blocks(&text).iter().enumerate() {
            let what = format!("docs/{doc}, yaml block {}", i + 1);
            let Ok(parsed) = weir_nodes::yaml::parse(block) else {
                continue;
            };
            let mut value = parsed.to_json();
            let Some(map) = value.as_object_mut() else {
                continue;
            };
            let has = |k: &str| map.contains_key(k);
            let validator = if has("id") && has("triggers") && has("nodes") {
                &flow
            } else if has("key") && has("base_url") {
                &integration
            } else if has("key") && has("input_schema") {
                &action
            } else if map.len() == 1 && has("actions") {
                // An integration's `actions:` shown alone.
                map.insert("key".into(), json!("example"));
                map.insert("base_url".into(), json!("https://app.example/api"));
                map.insert("auth".into(), json!({"type": "none"}));
                &integration
            } else {
                continue;
            };
            let found = problems(validator, &value);
            assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
            checked += 1;
        }
    }
    assert!(checked >= 4, "checked {checked} blocks");
}

#[test]
fn every_documented_flow_option_is_in_the_flow_schema() {
    let schema = schema_of("flow");
    let mut properties = BTreeSet::new();
    property_names(&schema, &mut properties);
    let mut values = BTreeSet::new();
    constants(&schema, &mut values);
    let mut types = BTreeSet::new();
    type_names(&schema, &mut types);

    let text = std::fs::read_to_string(root().join("docs/flow-format.md")).unwrap();
    let mut missing = Vec::new();
    let mut options = 0;
    let mut node_types = 0;
    for table in tables(&text) {
        match table.header.first().map(String::as_str) {
            Some("key" | "option") => {
                for row in &table.rows {
                    let Some(name) = row.first().and_then(|c| name_cell(c)) else {
                        continue;
                    };
                    options += 1;
                    if !properties.contains(name) {
                        missing.push(format!("option `{name}`"));
                    }
                }
            }
            Some("type") => {
                for row in &table.rows {
                    let Some(name) = row.first().and_then(|c| name_cell(c)) else {
                        continue;
                    };
                    node_types += 1;
                    if !types.contains(name) {
                        missing.push(format!("node type `{name}`"));
                    }
                    // The options column names the type's options and
                    // their values (`payload` or `cloudevents`); it also
                    // mentions what is not an option of a flow file.
                    const NOT_OPTIONS: &[&str] = &["base_url", "whsec_"];
                    for word in backticked_names(row.get(1).map_or("", String::as_str)) {
                        if !properties.contains(word)
                            && !values.contains(word)
                            && !NOT_OPTIONS.contains(&word)
                        {
                            missing.push(format!("`{word}` of node type `{name}`"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    assert!(missing.is_empty(), "not in the flow schema: {missing:?}");
    assert!(options >= 30, "read {options} options");
    assert_eq!(node_types, 12, "the node types table");
    for trigger in ["webhook", "cron", "poll", "api"] {
        assert!(types.contains(trigger), "trigger type {trigger}");
    }
}

#[test]
fn every_documented_integration_option_is_in_the_integration_schema() {
    let schema = schema_of("integration");
    let mut properties = BTreeSet::new();
    property_names(&schema, &mut properties);
    let mut values = BTreeSet::new();
    constants(&schema, &mut values);
    let mut types = BTreeSet::new();
    type_names(&schema, &mut types);

    let text = std::fs::read_to_string(root().join("docs/connections.md")).unwrap();
    let files = section(&text, "Integration files");
    let mut auth_types = 0;
    for table in tables(files) {
        if table.header.first().map(String::as_str) != Some("`type`") {
            continue;
        }
        for row in &table.rows {
            let name = row.first().and_then(|c| name_cell(c)).unwrap();
            assert!(types.contains(name), "auth type `{name}`: {types:?}");
            auth_types += 1;
        }
    }
    assert_eq!(auth_types, 5, "the auth types table");

    let oauth2 = files
        .split("\n\n")
        .find(|p| p.contains("`oauth2` takes"))
        .unwrap();
    let mut words = 0;
    for word in backticked_names(oauth2) {
        if word == "true" || word == "false" {
            continue;
        }
        assert!(
            properties.contains(word) || values.contains(word),
            "`{word}` of oauth2 is not in the integration schema"
        );
        words += 1;
    }
    assert!(words >= 8, "read {words} oauth2 options");

    for key in [
        "key",
        "name",
        "base_url",
        "parameters",
        "auth",
        "test",
        "actions",
    ] {
        assert!(schema["properties"].get(key).is_some(), "top-level `{key}`");
    }
    for option in [
        "request", "flow", "output", "retry", "attempts", "path", "query",
    ] {
        assert!(properties.contains(option), "action option `{option}`");
    }
}

/// A flow that weir loads, to be spoilt one way at a time.
fn good_flow() -> Value {
    json!({
        "id": "spoilt",
        "triggers": [{"id": "hook", "type": "webhook"}],
        "nodes": [
            {"id": "shape", "type": "map", "mapping": {"email": "event.body.email"}, "next": "loop"},
            {"id": "loop", "type": "for_each", "items": "event.body.items", "do": [
                {"id": "each", "type": "log", "message": "item.name"}
            ]}
        ]
    })
}

#[test]
fn what_weir_refuses_the_schemas_refuse() {
    let flow = validator(&schema_of("flow"));
    assert_eq!(problems(&flow, &good_flow()), Vec::<String>::new());

    let refused = |what: &str, value: Value| {
        assert!(!flow.is_valid(&value), "{what} passed: {value:#}");
    };
    let mut v = good_flow();
    v["tirggers"] = json!([]);
    refused("an unknown top-level key", v);

    let mut v = good_flow();
    v["nodes"][0]["type"] = json!("mapp");
    refused("an unknown node type", v);

    let mut v = good_flow();
    v["nodes"][1]["do"][0]["type"] = json!("lgo");
    refused("an unknown node type in a loop body", v);

    let mut v = good_flow();
    v["nodes"][0]["maping"] = json!({});
    refused("an unknown node option", v);

    let mut v = good_flow();
    v["nodes"][0].as_object_mut().unwrap().remove("mapping");
    refused("a missing required option", v);

    let mut v = good_flow();
    v["triggers"][0]["type"] = json!("hook");
    refused("an unknown trigger type", v);

    let mut v = good_flow();
    v["triggers"][0]["schedule"] = json!("* * * * *");
    refused("a cron option on a webhook", v);

    let mut v = good_flow();
    v["nodes"] = json!([]);
    refused("no nodes", v);

    let mut v = good_flow();
    v["name"] = Value::Null;
    refused("an optional key written as null", v);

    let mut v = good_flow();
    v["nodes"][0]["timeout"] = json!("30 seconds");
    refused("a duration without a unit weir knows", v);

    let mut v = good_flow();
    v["nodes"][1] = json!({"id": "out", "type": "deliver", "target": "amqp",
        "exchange": "x", "routing_key": "k", "payload": "event",
        "secret_env": "HOOK_SECRET"});
    refused("an option of the other deliver target", v);

    let integration = validator(&schema_of("integration"));
    let good = json!({
        "key": "crm",
        "base_url": "https://crm.example/api",
        "auth": {"type": "api_key", "name": "X-API-Key"},
        "actions": [{"key": "list", "request": {"path": "/contacts"}}]
    });
    assert_eq!(problems(&integration, &good), Vec::<String>::new());
    let mut v = good.clone();
    v["auth"]["type"] = json!("apikey");
    assert!(!integration.is_valid(&v), "an unknown auth type");
    let mut v = good.clone();
    v["actions"][0]["flow"] = json!("crm-upsert");
    assert!(!integration.is_valid(&v), "a request and a flow");

    let action = validator(&schema_of("action"));
    let good = json!({"key": "create-contact", "input_schema": {"type": "object"}});
    assert_eq!(problems(&action, &good), Vec::<String>::new());
    let mut v = good.clone();
    v["request"] = json!({"path": "/contacts"});
    assert!(
        !action.is_valid(&v),
        "a universal action is the contract only"
    );
    let mut v = good;
    v.as_object_mut().unwrap().remove("input_schema");
    assert!(!action.is_valid(&v), "input_schema is required");
}
