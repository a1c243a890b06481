//! Every key weir writes, built in this one module.
//!
//! Parts are joined with a NUL byte, which no tenant, flow, run or node id may
//! contain (their syntax is `[a-z0-9_-]`, plus `[`, `]` and `.` in node keys),
//! so a prefix scan over `tenant\0run\0` finds exactly one run's nodes. Run ids
//! are UUIDv7 text, so keys of one tenant sort by creation time.

use crate::records::TriggerKey;

const SEP: u8 = 0;

fn join(parts: &[&str]) -> Vec<u8> {
    let len = parts.iter().map(|p| p.len() + 1).sum();
    let mut key = Vec::with_capacity(len);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(SEP);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// `runs` and `active` trees: one run.
pub fn run(tenant: &str, run: &str) -> Vec<u8> {
    join(&[tenant, run])
}

/// The (tenant, run id) of a `runs` or `active` key.
pub fn run_parts(key: &[u8]) -> (String, String) {
    let mut parts = key.splitn(2, |b| *b == SEP);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    (next(), next())
}

/// `nodes` tree: one node record of a run.
pub fn node(tenant: &str, run: &str, node_key: &str) -> Vec<u8> {
    join(&[tenant, run, node_key])
}

/// `nodes` tree: the prefix of all node records of a run.
pub fn nodes_of(tenant: &str, run: &str) -> Vec<u8> {
    let mut key = join(&[tenant, run]);
    key.push(SEP);
    key
}

/// `snapshots` tree: one version of one flow.
pub fn snapshot(flow: &str, version: &str) -> Vec<u8> {
    join(&[flow, version])
}

/// The trigger part of a trigger key: the trigger id, or `trigger@connection`
/// for one connection of a per-connection flow (`@` is in neither id).
fn trigger_part(t: &TriggerKey) -> std::borrow::Cow<'_, str> {
    match &t.connection {
        None => t.trigger.as_str().into(),
        Some(c) => format!("{}@{c}", t.trigger).into(),
    }
}

/// `cron` and `cursors` trees: one trigger of one flow for one tenant.
pub fn trigger(t: &TriggerKey) -> Vec<u8> {
    join(&[&t.tenant, &t.flow, &trigger_part(t)])
}

/// `dedupe` and `seen` trees: one key under a trigger. The key is last and
/// may hold any bytes.
pub fn trigger_item(t: &TriggerKey, key: &str) -> Vec<u8> {
    join(&[&t.tenant, &t.flow, &trigger_part(t), key])
}

/// The (trigger, connection) of a trigger key's trigger part.
pub fn trigger_of(part: &str) -> (String, Option<String>) {
    match part.split_once('@') {
        Some((t, c)) => (t.to_owned(), Some(c.to_owned())),
        None => (part.to_owned(), None),
    }
}

/// Whether a key of the `cron`, `seen` or `cursors` tree belongs to one
/// connection's state (its trigger part ends with `@connection`).
pub fn is_connection_state(key: &[u8], connection: &str) -> bool {
    let mut parts = key.splitn(4, |b| *b == SEP);
    let trigger = parts.nth(2).unwrap_or_default();
    trigger
        .iter()
        .position(|b| *b == b'@')
        .is_some_and(|at| &trigger[at + 1..] == connection.as_bytes())
}

/// `dedupe` and `seen` trees: the prefix of a trigger's keys.
pub fn trigger_items(t: &TriggerKey) -> Vec<u8> {
    let mut key = trigger(t);
    key.push(SEP);
    key
}

/// `dedupe` and `seen` trees: the item key of a full key under `prefix`.
pub fn item_of(full: &[u8], prefix_len: usize) -> String {
    String::from_utf8_lossy(&full[prefix_len.min(full.len())..]).into_owned()
}

/// The prefix of every key of a tenant in the trees keyed by tenant
/// first (`runs`, `active`, `nodes`, `events`, `dedupe`, `cron`, `seen`,
/// `cursors`, `connections`).
pub fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut key = tenant.as_bytes().to_vec();
    key.push(SEP);
    key
}

/// The tenant of a key in a tree keyed by tenant first.
pub fn tenant_of(key: &[u8]) -> String {
    let end = key.iter().position(|b| *b == SEP).unwrap_or(key.len());
    String::from_utf8_lossy(&key[..end]).into_owned()
}

/// `by_id` tree: a run id, for lookups without the tenant and for listing
/// all tenants' runs by time.
pub fn by_id(run: &str) -> Vec<u8> {
    run.as_bytes().to_vec()
}

/// `connections` tree: one connection of a tenant.
pub fn connection(tenant: &str, id: &str) -> Vec<u8> {
    join(&[tenant, id])
}

/// `requests` tree: OAuth2 connection requests by id.
pub fn connection_request(id: &str) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// `outbox` tree: deliveries by id (the idempotency key).
pub fn delivery(id: &str) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// `idempotency` tree: a caller's idempotency key of a tenant (the key is
/// last and may hold any bytes).
pub fn idempotency(tenant: &str, key: &str) -> Vec<u8> {
    join(&[tenant, key])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_prefix_does_not_match_a_longer_run_id() {
        let prefix = nodes_of("t", "run1");
        assert!(node("t", "run1", "a").starts_with(&prefix));
        assert!(!node("t", "run10", "a").starts_with(&prefix));
        assert!(!run("t", "run1").starts_with(&prefix));
    }
}
