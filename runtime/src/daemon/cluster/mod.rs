//! More than one process: `weir serve --role ingest` and `--role worker`
//! share work through RabbitMQ quorum queues (Raft-replicated), not through
//! a protocol of weir's own.
//!
//! - An ingest process checks events as `--role all` does, publishes each
//!   one to a quorum queue and answers `202` only after the broker's
//!   confirm ([`ingest`]). It leads cron and poll triggers through
//!   single-active-consumer queues whose one message carries the trigger's
//!   state ([`lead`]).
//! - A worker consumes with manual acks and a prefetch window, runs each
//!   event in its own sled, and acks once the run is finished and its
//!   deliveries are confirmed ([`worker`]). The run id is the event id, so
//!   a redelivered event runs under the same id and idempotency keys.
//! - Events of a flow with a `concurrency.key` go to one of a fixed number
//!   of partition queues, chosen by hashing the key; each partition has a
//!   single active consumer, so a key's runs keep their order.
//! - What a worker cannot run (a corrupt message, a flow it does not
//!   have) goes to the dead-letter queue with the reason.
//!
//! - [`broker`]: the connection, kept open, and the queues it declares

pub mod broker;
pub mod ingest;
pub mod lead;
pub mod worker;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;
use weir_storage::TriggerKey;

/// What a `weir serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything, in one process (no broker needed for events).
    All,
    /// Takes webhooks and API calls, fires schedules, publishes events.
    Ingest,
    /// Runs the events the ingest processes publish.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Worker => "worker",
        }
    }
}

/// How the processes of one deployment share the broker; every process of
/// a deployment must be given the same values (the queues are declared
/// with them, and the broker refuses a declaration that differs).
#[derive(Debug, Clone)]
pub struct Settings {
    pub role: Role,
    pub amqp: String,
    /// Queue names start with it (`weir.events`, `weir.keys.3`, ...).
    pub prefix: String,
    /// How many partition queues `concurrency.key` events are hashed to.
    pub partitions: u16,
    /// Unacknowledged events a worker holds per queue.
    pub prefetch: u16,
    /// Ready events a work queue holds before the broker refuses more
    /// (ingest answers 429).
    pub max_queue: u64,
    /// `--role worker`: a run that waits on a timer further away than
    /// this is handed off through the broker (its event acked) instead of
    /// keeping its event unacked.
    pub hand_off_after: std::time::Duration,
}

/// The queues of a deployment.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    partitions: u16,
    max_queue: u64,
}

/// Delay queues: level `n` holds a message `2^n` seconds (up to about 24
/// days), then dead-letters it back to the event queue.
pub const WAIT_LEVELS: u32 = 22;

/// Deliveries of one event before the broker dead-letters it (a worker
/// that dies on it every time must not make a redelivery loop).
pub const DELIVERY_LIMIT: i64 = 20;

impl Topology {
    pub fn new(settings: &Settings) -> Self {
        Self {
            prefix: settings.prefix.clone(),
            partitions: settings.partitions.max(1),
            max_queue: settings.max_queue,
        }
    }

    /// Events without a concurrency key: any worker takes any of them.
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// Partition `i` of the events with a concurrency key.
    pub fn partition(&self, i: u16) -> String {
        format!("{}.keys.{i}", self.prefix)
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// Delay queue `level`: holds a hand-off `2^level` seconds.
    pub fn wait(&self, level: u32) -> String {
        format!("{}.wait.{level}", self.prefix)
    }

    /// The delay queue for a hand-off due in `remaining`: the longest one
    /// that does not overshoot (it comes back, and goes on, until due).
    pub fn wait_level(remaining: std::time::Duration) -> u32 {
        let seconds = remaining.as_secs().max(1);
        (63 - seconds.leading_zeros()).min(WAIT_LEVELS - 1)
    }

    /// The arguments of delay queue `level`: quorum, a message TTL, and
    /// dead-lettering (at least once) to the event queue.
    pub fn wait_arguments(&self, level: u32) -> FieldTable {
        let mut args = quorum();
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(1000 * (1i64 << level)),
        );
        args.insert("x-overflow".into(), text("reject-publish"));
        args.insert("x-dead-letter-exchange".into(), text(""));
        args.insert("x-dead-letter-routing-key".into(), text(&self.events()));
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args
    }

    /// Where what cannot be run goes, with why.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The leadership queue of one cron or poll trigger.
    pub fn lead(&self, key: &TriggerKey) -> String {
        let mut name = format!(
            "{}.lead.{}.{}.{}",
            self.prefix, key.tenant, key.flow, key.trigger
        );
        if let Some(c) = &key.connection {
            name.push('.');
            name.push_str(c);
        }
        // Queue names are at most 255 bytes: long ones are hashed.
        if name.len() > 200 {
            let digest = sha2::Sha256::digest(name.as_bytes());
            name = format!("{}.lead.{}", self.prefix, hex::encode(&digest[..16]));
        }
        name
    }

    /// The partition a concurrency key's events go to: a hash that every
    /// process computes alike (SHA-256, not Rust's per-process hasher).
    pub fn partition_of(&self, tenant: &str, flow: &str, key: &str) -> u16 {
        let mut hash = sha2::Sha256::new();
        for part in [tenant, flow, key] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first) % u64::from(self.partitions)) as u16
    }

    /// The arguments of a work queue: quorum, bounded (a publish past the
    /// bound is refused, so ingest can say 429), dead-lettering (at least
    /// once) after [`DELIVERY_LIMIT`] deliveries.
    pub fn work_arguments(&self, single_active: bool) -> FieldTable {
        let mut args = quorum();
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(i64::try_from(self.max_queue).unwrap_or(i64::MAX)),
        );
        args.insert("x-overflow".into(), text("reject-publish"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        args.insert("x-dead-letter-exchange".into(), text(""));
        args.insert("x-dead-letter-routing-key".into(), text(&self.dead()));
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        if single_active {
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        args
    }

    /// The arguments of a leadership queue: quorum, one active consumer,
    /// at most one ready message (a newer state drops an older one).
    pub fn lead_arguments(&self) -> FieldTable {
        let mut args = quorum();
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
        args.insert("x-overflow".into(), text("drop-head"));
        args
    }

    pub fn dead_arguments(&self) -> FieldTable {
        quorum()
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    args
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

pub(crate) fn short(s: &str) -> ShortString {
    ShortString::from(s)
}

/// One event on its way from an ingest process to a worker: everything
/// the worker needs to admit it, and the flow version it was accepted
/// against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMessage {
    /// The format's version ([`EVENT_FORMAT`]).
    pub v: u32,
    /// The event's id; the run's id too.
    pub event_id: String,
    pub tenant: String,
    pub flow: String,
    pub flow_version: String,
    pub trigger: String,
    /// The connection the run is for (its public view), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    pub accepted_at: DateTime<Utc>,
    pub event: Value,
    /// A run handed off while it waits on a timer: its records, to go on
    /// from where it stopped once `due`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Box<Checkpoint>>,
}

/// What a worker needs to go on with a run another worker handed off.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub run: weir_storage::RunRecord,
    pub nodes: Vec<weir_storage::NodeRecord>,
    /// The flow's version the run started on.
    pub snapshot: Option<weir_storage::FlowSnapshot>,
    /// When its timer is due.
    pub due: DateTime<Utc>,
}

pub const EVENT_FORMAT: u32 = 1;

impl EventMessage {
    /// The message that carries `run`'s event (the run id is the event id).
    pub fn of(run: &weir_storage::RunRecord) -> Self {
        Self {
            v: EVENT_FORMAT,
            event_id: run.id.clone(),
            tenant: run.tenant.clone(),
            flow: run.flow.clone(),
            flow_version: run.flow_version.clone(),
            trigger: run.trigger.clone(),
            connection: run.connection.clone(),
            concurrency_key: run.concurrency_key.clone(),
            accepted_at: run.created_at,
            event: (*run.event).clone(),
            resume: None,
        }
    }
}

/// An event a worker could not run, sent to the dead-letter queue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The event's id, when the message could be read that far.
    pub event_id: Option<String>,
    pub tenant: Option<String>,
    pub flow: Option<String>,
    /// A short code: `corrupt`, `unknown_flow`, `flow_version`, `tenant`.
    pub reason: String,
    /// What was wrong, and how to fix it.
    pub message: String,
    pub at: DateTime<Utc>,
}

/// What the cluster API shows: this process's role, its broker link, and
/// the dead letters it sent.
pub struct Cluster {
    pub settings: Settings,
    pub topology: Topology,
    pub broker: Arc<broker::Broker>,
    dead: Mutex<VecDeque<DeadLetter>>,
}

/// Dead letters remembered for the API (the queue itself holds them all).
const DEAD_KEPT: usize = 200;

impl Cluster {
    pub fn new(settings: Settings) -> Arc<Self> {
        let topology = Topology::new(&settings);
        let broker = broker::Broker::start(settings.amqp.clone(), topology.clone(), settings.role);
        Arc::new(Self {
            settings,
            topology,
            broker,
            dead: Mutex::new(VecDeque::new()),
        })
    }

    pub fn role(&self) -> Role {
        self.settings.role
    }

    pub(crate) fn remember_dead(&self, letter: DeadLetter) {
        crate::metrics::event_dead_lettered(&letter.reason);
        let mut dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        if dead.len() == DEAD_KEPT {
            dead.pop_front();
        }
        dead.push_back(letter);
    }

    /// The dead letters this process sent, newest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        let dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        dead.iter().rev().cloned().collect()
    }
}

/// A run id for an instant of a cron trigger that is the same in every
/// process: a UUIDv7 of the instant, its other bits a hash of the trigger
/// and the instant. A leader that fires an instant again after a takeover
/// starts the same run, with the same idempotency keys.
pub fn instant_id(key: &TriggerKey, at: DateTime<Utc>) -> String {
    let mut hash = sha2::Sha256::new();
    for part in [
        key.tenant.as_str(),
        key.flow.as_str(),
        key.trigger.as_str(),
        key.connection.as_deref().unwrap_or(""),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.update(at.timestamp_micros().to_be_bytes());
    let digest = hash.finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(partitions: u16) -> Topology {
        Topology::new(&Settings {
            role: Role::Ingest,
            amqp: String::new(),
            prefix: "weir".into(),
            partitions,
            prefetch: 1,
            max_queue: 10,
            hand_off_after: std::time::Duration::from_secs(60),
        })
    }

    #[test]
    fn a_key_always_lands_on_the_same_partition_and_keys_spread() {
        let t = topology(8);
        let a = t.partition_of("acme", "orders", "customer-1");
        for _ in 0..10 {
            assert_eq!(t.partition_of("acme", "orders", "customer-1"), a);
        }
        let used: std::collections::HashSet<u16> = (0..200)
            .map(|i| t.partition_of("acme", "orders", &format!("customer-{i}")))
            .collect();
        assert_eq!(used.len(), 8, "200 keys use every one of 8 partitions");
        // The parts are length-prefixed: moving a character between them
        // is another key.
        assert_ne!(
            (0..50)
                .map(|i| t.partition_of("ab", &format!("c{i}"), "d"))
                .collect::<Vec<_>>(),
            (0..50)
                .map(|i| t.partition_of("a", &format!("bc{i}"), "d"))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_instant_has_one_id_everywhere_and_it_sorts_by_time() {
        let key = TriggerKey::new("acme", "report", "nightly");
        let at = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let later = at + chrono::Duration::seconds(1);
        assert_eq!(instant_id(&key, at), instant_id(&key, at));
        assert_ne!(instant_id(&key, at), instant_id(&key, later));
        assert!(instant_id(&key, at) < instant_id(&key, later));
        let other = TriggerKey::new("globex", "report", "nightly");
        assert_ne!(instant_id(&key, at), instant_id(&other, at));
        let id = uuid::Uuid::parse_str(&instant_id(&key, at)).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }

    #[test]
    fn a_hand_off_waits_in_the_longest_queue_that_does_not_overshoot() {
        let level = |s: u64| Topology::wait_level(std::time::Duration::from_secs(s));
        assert_eq!(level(0), 0);
        assert_eq!(level(1), 0);
        assert_eq!(level(3), 1);
        assert_eq!(level(4), 2);
        assert_eq!(level(3600), 11); // 2048 s, then the rest
        assert_eq!(level(u64::MAX), WAIT_LEVELS - 1);
    }

    #[test]
    fn long_lead_queue_names_are_hashed_under_the_limit() {
        let t = topology(1);
        let long = "x".repeat(120);
        let key = TriggerKey::for_connection(&long, &long, "t", "c");
        assert!(t.lead(&key).len() <= 255);
        assert_eq!(t.lead(&key), t.lead(&key));
        assert_eq!(
            t.lead(&TriggerKey::new("acme", "report", "nightly")),
            "weir.lead.acme.report.nightly"
        );
    }
}
