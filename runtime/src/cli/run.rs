//! `weir run FLOW_FILE [--input JSON|@FILE] [--trigger ID] [--json] [--data DIR] [--resume]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde_json::Value;
use weir_nodes::TriggerKind;
use weir_nodes::triggers::poll::Poll;
use weir_nodes::triggers::webhook::Request;
use weir_storage::{RunRecord, RunStatus, SledStore};

use super::exit;
use crate::engine::{Clock, Engine, EngineOptions};
use crate::flow::{Flow, Graph, load_file};
use crate::view;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The flow file.
    pub flow_file: PathBuf,
    /// The event's body as JSON (for a poll trigger, the record), or @FILE
    /// to read it from a file (@- reads standard input). Default: null.
    #[arg(long)]
    pub input: Option<String>,
    /// The trigger that fires (default: the flow's first).
    #[arg(long)]
    pub trigger: Option<String>,
    /// The tenant the run is for (default: the flow's first).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Print the run object (as the HTTP API shows it) and nothing else.
    #[arg(long)]
    pub json: bool,
    /// Keep the state in DIR instead of a temporary folder. Runs left
    /// unfinished there (by a crash) are finished first.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Only finish the unfinished runs in --data; start no new run.
    #[arg(long, requires = "data")]
    pub resume: bool,
    /// Wait for the disk after every node, not only before side effects.
    #[arg(long)]
    pub durable_each_step: bool,
    /// Send the run's deliveries (AMQP needs --amqp) instead of only
    /// printing them, and wait until they are confirmed (at most 30 s).
    #[arg(long)]
    pub deliver: bool,
    /// The AMQP broker for --deliver, like amqp://guest:guest@127.0.0.1:5672/%2f.
    #[arg(long, env = "WEIR_AMQP_URL")]
    pub amqp: Option<String>,
}

pub fn main(args: RunArgs) -> ExitCode {
    if !args.flow_file.is_file() {
        let name = args.flow_file.display();
        let hint = match std::path::Path::new("flows").join(format!("{name}.yaml")) {
            guess if guess.is_file() => format!("; did you mean {}?", guess.display()),
            _ => String::new(),
        };
        eprintln!(
            "weir: {name}: no such flow file (weir run takes a flow's file, not its id){hint}"
        );
        return ExitCode::from(exit::USAGE);
    }
    let flow = match load_file(&args.flow_file) {
        Ok(flow) => Arc::new(flow),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let input = if args.resume {
        Value::Null
    } else {
        match read_input(args.input.as_deref()) {
            Ok(v) => v,
            Err(message) => {
                eprintln!("weir: --input: {message}");
                return ExitCode::from(exit::USAGE);
            }
        }
    };
    let trigger = match &args.trigger {
        Some(t) if flow.trigger(t).is_none() => {
            let ids: Vec<&str> = flow.triggers.iter().map(|t| t.id.as_str()).collect();
            eprintln!(
                "weir: flow '{}' has no trigger '{t}'; its triggers: {}",
                flow.id,
                ids.join(", ")
            );
            return ExitCode::from(exit::USAGE);
        }
        Some(t) => t.clone(),
        None => flow.triggers[0].id.clone(),
    };
    let tenant = match &args.tenant {
        Some(t) if !flow.tenants.serves(t) => {
            eprintln!(
                "weir: flow '{}' does not serve tenant '{t}'; its tenants: {}",
                flow.id, flow.tenants
            );
            return ExitCode::from(exit::USAGE);
        }
        Some(t) => t.clone(),
        None => flow.tenants.first().to_owned(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(execute(&args, flow, &trigger, &tenant, input)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(exit::FAILED),
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

/// `--input`: JSON text, `@FILE`, or `@-` for standard input.
fn read_input(input: Option<&str>) -> Result<Value, String> {
    let Some(input) = input else {
        return Ok(Value::Null);
    };
    let (text, source) = match input.strip_prefix('@') {
        Some("-") => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            (text, "standard input".to_owned())
        }
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?,
            path.to_owned(),
        ),
        None => (input.to_owned(), "the argument".to_owned()),
    };
    weir_nodes::json::parse(text.as_bytes()).map_err(|e| match e {
        weir_nodes::json::ParseError::TooDeep => format!("{source}: {e}"),
        e => format!(
            "{source} is {e}; pass a JSON value like '{{\"email\": \"a@b.c\"}}' or @file.json"
        ),
    })
}

/// Builds the event the trigger would hand to its run.
fn event_for(
    flow: &Flow,
    trigger: &str,
    tenant: &str,
    input: Value,
    clock: &Clock,
) -> anyhow::Result<Value> {
    let now = clock.now();
    let id = uuid::Uuid::now_v7().to_string();
    let def = flow
        .trigger(trigger)
        .ok_or_else(|| anyhow::anyhow!("flow '{}' has no trigger '{trigger}'", flow.id))?;
    Ok(match &def.kind {
        TriggerKind::Webhook(w) => w.event(
            &id,
            trigger,
            now,
            Request {
                body: input,
                headers: Value::Object(Default::default()),
                query: Value::Object(Default::default()),
                method: "POST".into(),
            },
        ),
        TriggerKind::Api(a) => a.event(&id, trigger, now, input),
        TriggerKind::Cron(_) => {
            let mut event = weir_nodes::triggers::event_base("schedule", &id, trigger, now);
            let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            event.insert("scheduled_at".into(), Value::String(at));
            Value::Object(event)
        }
        TriggerKind::Poll(p) => {
            let mut scope = Poll::item_scope(&input, flow.scope(tenant, None));
            let (key, version) = p
                .identify(&input, &mut scope)
                .map_err(|e| anyhow::anyhow!("trigger '{trigger}': {e}"))?;
            let mut event = weir_nodes::triggers::event_base("created", &id, trigger, now);
            event.insert("key".into(), key);
            event.insert("version".into(), version);
            event.insert("item".into(), input);
            Value::Object(event)
        }
    })
}

async fn execute(
    args: &RunArgs,
    flow: Arc<Flow>,
    trigger: &str,
    tenant: &str,
    input: Value,
) -> anyhow::Result<bool> {
    let temp;
    let dir = match &args.data {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new().prefix("weir-run-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let store = SledStore::open(&dir)?;
    let options = EngineOptions {
        durable_each_step: args.durable_each_step,
        park_after: None,
    };
    let engine = Engine::new(store.clone(), Clock::new(), options);
    let mut all_ok = true;

    for run in engine.unfinished()? {
        if !args.json {
            eprintln!(
                "weir: resuming run {} of flow '{}' (left {} in {})",
                run.id,
                run.flow,
                run.status.as_str(),
                dir.display()
            );
        }
        let finished = engine.drive(run).await?;
        all_ok &= finished.status == RunStatus::Succeeded;
        let same_flow = (finished.flow == flow.id).then_some(flow.as_ref());
        let shown = match (args.resume, args.json) {
            (true, true) => Shown::Json,
            (true, false) => Shown::Table,
            // Stdout belongs to the new run.
            (false, _) => Shown::Summary,
        };
        report(&engine, &finished, same_flow, shown)?;
    }
    if args.resume {
        store.close().await;
        return Ok(all_ok);
    }

    let event = event_for(&flow, trigger, tenant, input, engine.clock())?;
    let run = engine.start(&flow, tenant, trigger, event).await?;
    let finished = engine.drive(run).await?;
    let shown = if args.json { Shown::Json } else { Shown::Table };
    report(&engine, &finished, Some(&flow), shown)?;
    let delivered = if args.deliver {
        deliver(&store, &engine, args.amqp.clone(), args.json).await?
    } else {
        true
    };
    store.close().await;
    Ok(finished.status == RunStatus::Succeeded && delivered)
}

/// Sends what is in the outbox and waits until it has left (or is dead, or
/// 30 s passed); true if nothing is left.
async fn deliver(
    store: &Arc<SledStore>,
    engine: &Engine,
    amqp: Option<String>,
    quiet: bool,
) -> anyhow::Result<bool> {
    let (_tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let no_broker = amqp.is_none();
    let outbox =
        crate::daemon::outbox::Outbox::start(store.clone(), engine.clock().clone(), amqp, rx)?;
    // AMQP deliveries without a broker would only wait.
    let amqp_pending = |outbox: &crate::daemon::outbox::Outbox| -> anyhow::Result<u64> {
        let view = outbox.view(&crate::auth::Scope::All)?;
        Ok(view
            .targets
            .iter()
            .find(|t| t.target == "amqp")
            .map_or(0, |t| t.pending as u64))
    };
    let deadline = if no_broker && amqp_pending(&outbox)? > 0 {
        tokio::time::Instant::now()
    } else {
        tokio::time::Instant::now() + std::time::Duration::from_secs(30)
    };
    let (pending, dead) = loop {
        let (pending, dead) = outbox.counts();
        if pending == 0 || tokio::time::Instant::now() >= deadline {
            break (pending, dead);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    outbox.stop();
    if !quiet {
        let view = outbox.view(&crate::auth::Scope::All)?;
        for t in &view.targets {
            if let Some(e) = &t.last_error {
                eprintln!("weir: {} deliveries: {e}", t.target);
            }
        }
        if pending == 0 && dead == 0 {
            out!("delivered");
        } else {
            out!("not all delivered: {pending} pending, {dead} dead");
        }
    }
    Ok(pending == 0 && dead == 0)
}

/// How a finished run is printed.
enum Shown {
    /// The run object on stdout.
    Json,
    /// Node by node, with the deliveries it left in the outbox.
    Table,
    /// One line on stderr.
    Summary,
}

fn report(
    engine: &Engine,
    run: &RunRecord,
    flow: Option<&Flow>,
    shown: Shown,
) -> anyhow::Result<()> {
    let store = engine.store();
    let records = store.nodes(&run.tenant, &run.id)?;
    let records = match flow {
        Some(flow) => view::in_flow_order(flow, records),
        None => records,
    };
    match shown {
        Shown::Json => {
            out!("{}", view::run_json(run, &records));
            return Ok(());
        }
        Shown::Summary => {
            eprintln!("weir: run {} {}", run.id, run.status.as_str());
            return Ok(());
        }
        Shown::Table => {}
    }
    out!(
        "run {}  flow {}  tenant {}  trigger {}",
        run.id,
        run.flow,
        run.tenant,
        run.trigger
    );
    let width = records.iter().map(|r| r.key.len()).max().unwrap_or(0);
    for r in &records {
        let type_ = flow.and_then(|f| type_of(&f.graph, &r.node)).unwrap_or("");
        let detail = match (&r.error, &r.output) {
            (Some(e), _) => format!("error: {e}"),
            (None, Some(o)) => o.to_string(),
            (None, None) => String::new(),
        };
        let tries = if r.attempts > 1 {
            format!(" ({} attempts)", r.attempts)
        } else {
            String::new()
        };
        out!(
            "  {:width$}  {:8}  {:9}{tries}  {detail}",
            r.key,
            type_,
            r.status.as_str()
        );
    }
    let deliveries: Vec<_> = store
        .deliveries()?
        .into_iter()
        .filter(|d| d.run == run.id)
        .collect();
    if !deliveries.is_empty() {
        out!("deliveries (in the outbox; sent with --deliver):");
        for d in deliveries {
            let target = match &d.target {
                weir_storage::DeliveryTarget::Amqp {
                    exchange,
                    routing_key,
                    format,
                } => {
                    format!("amqp exchange={exchange} routing_key={routing_key} format={format}")
                }
                weir_storage::DeliveryTarget::Http { url, .. } => format!("http POST {url}"),
            };
            out!("  {}  {target}\n    {}", d.id, d.payload);
        }
    }
    match &run.error {
        Some(e) => out!("{}: {e}", run.status.as_str()),
        None => out!("{}", run.status.as_str()),
    }
    Ok(())
}

fn type_of<'g>(graph: &'g Graph, id: &str) -> Option<&'g str> {
    for (i, node) in graph.nodes.iter().enumerate() {
        if node.id == id {
            return Some(node.kind.type_name());
        }
        if let Some(t) = graph.bodies[i].as_ref().and_then(|b| type_of(b, id)) {
            return Some(t);
        }
    }
    None
}
