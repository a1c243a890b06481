//! Checks that need the whole flow: the `nodes.X` and `secrets.X` its
//! expressions read, and the environment variables it names.

use std::collections::HashMap;

use weir_nodes::functions::deliver::Target;
use weir_nodes::node::NodeKind;
use weir_nodes::reader::closest;
use weir_nodes::script::Reference;
use weir_nodes::triggers::verify::{check_secret, check_standard_webhooks_secret};
use weir_nodes::{Diags, Pos, TriggerDef, TriggerKind};

use super::{Graph, Secrets};

/// Each `nodes.X` names a node whose output the expression can see: one of
/// its own graph, or of the graphs around it (a loop body sees the flow's
/// nodes); a node inside a loop body is not visible outside it. Each
/// `secrets.X` names a declared secret.
pub fn references(graph: &Graph, triggers: &[TriggerDef], secrets: &Secrets, diags: &Diags) {
    let mut owner = HashMap::new();
    owners(graph, None, &mut owner);
    let secret_names = secrets.names();
    let check_secret_ref = |r: &Reference| {
        if secret_names.contains(&r.name.as_str()) {
            return;
        }
        let hint = match closest(&r.name, &secret_names) {
            Some(near) => format!("did you mean `secrets.{near}`?"),
            None if secret_names.is_empty() => {
                format!("declare it as `secrets: {{{}: {{env: VARIABLE}}}}`", r.name)
            }
            None => format!("the flow's secrets are {}", secret_names.join(", ")),
        };
        diags.error(
            r.pos,
            format!(
                "`secrets.{}`: the flow declares no secret '{}'; {hint}",
                r.name, r.name
            ),
        );
    };
    for trigger in triggers {
        for r in trigger.references.iter().filter(|r| r.root == "secrets") {
            check_secret_ref(r);
        }
    }
    check_graph(graph, &mut Vec::new(), &owner, &check_secret_ref, diags);
}

/// Every node id of the flow with the `for_each` whose body holds it.
fn owners(graph: &Graph, parent: Option<&str>, out: &mut HashMap<String, Option<String>>) {
    for (i, node) in graph.nodes.iter().enumerate() {
        out.insert(node.id.clone(), parent.map(str::to_owned));
        if let Some(body) = &graph.bodies[i] {
            owners(body, Some(&node.id), out);
        }
    }
}

/// `connection` is in scope only in a flow that runs per connection.
pub fn no_connection(graph: &Graph, triggers: &[TriggerDef], diags: &Diags) {
    let report = |r: &Reference| {
        if r.root == "connection" {
            diags.error(
                r.pos,
                "`connection` is in scope only in a flow that runs per connection: add `integration: KEY` at the top of the flow",
            );
        }
    };
    for trigger in triggers {
        trigger.references.iter().for_each(report);
    }
    fn walk(graph: &Graph, report: &dyn Fn(&Reference)) {
        for (i, node) in graph.nodes.iter().enumerate() {
            node.references.iter().for_each(report);
            if let Some(body) = &graph.bodies[i] {
                walk(body, report);
            }
        }
    }
    walk(graph, &report);
}

fn check_graph<'g>(
    graph: &'g Graph,
    visible: &mut Vec<&'g str>,
    owner: &HashMap<String, Option<String>>,
    check_secret: &dyn Fn(&Reference),
    diags: &Diags,
) {
    let outer = visible.len();
    visible.extend(graph.nodes.iter().map(|n| n.id.as_str()));
    for (i, node) in graph.nodes.iter().enumerate() {
        for r in &node.references {
            match r.root {
                "secrets" => check_secret(r),
                "nodes" => check_node(r, &node.id, visible, owner, diags),
                _ => {}
            }
        }
        if let Some(body) = &graph.bodies[i] {
            check_graph(body, visible, owner, check_secret, diags);
        }
    }
    visible.truncate(outer);
}

fn check_node(
    r: &Reference,
    in_node: &str,
    visible: &[&str],
    owner: &HashMap<String, Option<String>>,
    diags: &Diags,
) {
    if visible.contains(&r.name.as_str()) {
        return;
    }
    let why = match owner.get(&r.name) {
        Some(Some(parent)) => format!(
            "node '{}' is inside the body of for_each '{parent}', so it is not visible here; outside the body, `nodes.{parent}` holds the list of its iterations' outputs",
            r.name
        ),
        _ => match closest(&r.name, visible) {
            Some(near) => format!(
                "there is no node '{}'; did you mean `nodes.{near}`?",
                r.name
            ),
            None => format!("there is no node '{}' in this flow", r.name),
        },
    };
    diags.error(
        r.pos,
        format!("node '{in_node}': `nodes.{}`: {why}", r.name),
    );
}

/// The environment variables the flow names are set, and hold usable
/// secrets: `verify.secret_env` of each webhook (for each tenant, with
/// `{TENANT}`), and `secret_env` of each HTTP delivery.
pub fn environment(graph: &Graph, triggers: &[TriggerDef], tenants: &[String], diags: &Diags) {
    for trigger in triggers {
        let TriggerKind::Webhook(hook) = &trigger.kind else {
            continue;
        };
        let Some(verify) = &hook.verify else {
            continue;
        };
        let mut vars: Vec<(String, Option<&str>)> = Vec::new();
        for tenant in tenants {
            let var = verify.secret_var(tenant);
            if !vars.iter().any(|(v, _)| *v == var) {
                let per_tenant = verify.secret_env.contains("{TENANT}");
                vars.push((var, per_tenant.then_some(tenant.as_str())));
            }
        }
        for (var, tenant) in vars {
            let what = format!("trigger '{}': `verify.secret_env`", trigger.id);
            let check = |secret: &str| check_secret(verify.scheme, secret);
            env_secret(&what, &var, tenant, verify.secret_env_pos, &check, diags);
        }
    }
    check_deliveries(graph, diags);
}

fn check_deliveries(graph: &Graph, diags: &Diags) {
    for (i, node) in graph.nodes.iter().enumerate() {
        if let NodeKind::Deliver(d) = &node.kind
            && let Target::Http {
                secret_env,
                secret_env_pos,
                ..
            } = &d.target
        {
            let what = format!("node '{}': `secret_env`", node.id);
            env_secret(
                &what,
                secret_env,
                None,
                *secret_env_pos,
                &check_standard_webhooks_secret,
                diags,
            );
        }
        if let Some(body) = &graph.bodies[i] {
            check_deliveries(body, diags);
        }
    }
}

/// Reports `var` if it is not set, or if `check` refuses its value (the
/// message never shows the value).
fn env_secret(
    what: &str,
    var: &str,
    tenant: Option<&str>,
    pos: Pos,
    check: &dyn Fn(&str) -> Result<(), String>,
    diags: &Diags,
) {
    let for_tenant = tenant
        .map(|t| format!(" (tenant {t}'s)"))
        .unwrap_or_default();
    match std::env::var(var) {
        Ok(value) => {
            if let Err(why) = check(&value) {
                diags.error(
                    pos,
                    format!("{what}: the environment variable `{var}`{for_tenant} {why}"),
                );
            }
        }
        Err(std::env::VarError::NotUnicode(_)) => diags.error(
            pos,
            format!("{what}: the environment variable `{var}`{for_tenant} is not valid UTF-8"),
        ),
        Err(std::env::VarError::NotPresent) => diags.error(
            pos,
            format!(
                "{what}: the environment variable `{var}`{for_tenant} is not set; set it to the secret before weir starts"
            ),
        ),
    }
}
