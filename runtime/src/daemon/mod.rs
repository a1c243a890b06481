//! `weir serve`: the daemon. It opens the data folder, loads the flows
//! folder, resumes unfinished runs, and serves webhooks and the API; it runs
//! cron schedules and pollers, reloads flow files when they change, and
//! stops gracefully on SIGTERM or SIGINT.
//!
//! - [`registry`]: the flows being served, reloaded on change
//! - [`runs`]: admission, concurrency keys, run tasks, cancel and retry
//! - [`triggers`]: cron and poll tasks, webhook dedupe
//! - [`http`]: the HTTP edge

pub mod cluster;
pub mod http;
pub mod notify;
pub mod outbox;
pub mod registry;
pub mod runs;
pub mod triggers;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing::{info, warn};
use weir_storage::SledStore;

use crate::act::definition::UniversalAction;
use crate::act::run::Actions;
use crate::auth::Auth;
use crate::connect::connections::Connections;
use crate::connect::integration::Integration;
use crate::connect::vault::KeyRing;
use crate::engine::{Clock, Engine, EngineOptions};
use registry::Registry;
use runs::Runs;
use triggers::{DedupeLocks, Schedules, Triggers};

/// How the daemon runs (`weir serve` flags and `WEIR_*` variables).
#[derive(Debug, Clone)]
pub struct Config {
    pub flows: PathBuf,
    pub data: PathBuf,
    pub listen: String,
    pub amqp: Option<String>,
    /// How long running nodes may take to finish at shutdown.
    pub grace: Duration,
    /// Unfinished runs past which webhooks are refused with 429.
    pub max_backlog: usize,
    /// How long webhook dedupe keys are remembered.
    pub dedupe_retention: Duration,
    /// How long finished runs are kept; `None` keeps them forever.
    pub run_retention: Option<Duration>,
    /// Connections open at once; `None`: what the file descriptor limit
    /// allows ([`http::server::default_max_connections`]).
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request head (and how long a
    /// keep-alive connection may stay idle).
    pub header_timeout: Duration,
    /// How long a client may take to send a request body.
    pub body_timeout: Duration,
    /// Whether symbolic links in the flows folder may lead out of it.
    pub links: crate::flow::Links,
    /// How API callers are authenticated: tokens, or open (no workspace
    /// secret; loopback only).
    pub auth: Arc<Auth>,
    /// `/metrics` without a token.
    pub metrics_open: bool,
    /// The Host names `/mcp` answers (empty: loopback names and the
    /// public URL's host).
    pub mcp_allowed_hosts: Vec<String>,
    /// The browser origins `/mcp` answers (empty: loopback and the public
    /// URL's origin).
    pub mcp_allowed_origins: Vec<String>,
    /// The integrations folder.
    pub integrations: PathBuf,
    /// The universal actions folder.
    pub actions: PathBuf,
    /// The keys credentials are sealed with.
    pub secret_keys: Option<Arc<KeyRing>>,
    /// Where notifications go (none: they are not sent).
    pub notify: Vec<notify::Target>,
    /// How the outside world reaches weir (OAuth2 redirects); default
    /// `http://` + the address it listens on.
    pub public_url: Option<String>,
    /// Prefixes a caller's OAuth2 `redirect_uri` may start with.
    pub oauth_redirect_allow: Vec<String>,
    /// `--role ingest` or `worker`: how this process shares the broker
    /// (`None`: `--role all`, one process does everything).
    pub cluster: Option<cluster::Settings>,
}

/// Without a workspace secret the API is open, which is only allowed on a
/// loopback address (a laptop); said loudly at start.
async fn check_open_listen(config: &Config) -> anyhow::Result<()> {
    if !config.auth.is_open() {
        return Ok(());
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&config.listen)
        .await
        .with_context(|| format!("cannot resolve the listen address {}", config.listen))?
        .collect();
    if let Some(addr) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        anyhow::bail!(
            "weir would listen on {addr} with an open API: no workspace secret is set. Set WEIR_WORKSPACE_SECRET (or --workspace-secret-file PATH) to at least 32 random bytes, or listen on a loopback address like 127.0.0.1:8080"
        );
    }
    warn!(listen = %config.listen, "no workspace secret: the API is open to anyone who reaches this loopback address; set WEIR_WORKSPACE_SECRET to require tokens");
    Ok(())
}

/// Runs the daemon until `shutdown` resolves. `bound` learns the address it
/// listens on.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    check_open_listen(&config).await?;
    if !config.flows.is_dir() {
        anyhow::bail!(
            "the flows folder {} does not exist; create it or pass --flows DIR",
            config.flows.display()
        );
    }
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("cannot create the data folder {}", config.data.display()))?;
    // Installed before anything records (the broker keeper sets its gauge
    // as soon as it connects; a value recorded earlier would be lost).
    let metrics = crate::metrics::install();
    let store = SledStore::open(&config.data)?;
    let registry = Arc::new(Registry::<crate::flow::Flow>::load(
        &config.flows,
        config.links,
    ));
    info!(flows = registry.all().len(), errors = registry.errors().len(), dir = %config.flows.display(), "flows loaded");
    let integrations = Arc::new(match config.integrations.is_dir() {
        true => Registry::<Integration>::load(&config.integrations, config.links),
        false => Registry::<Integration>::empty(&config.integrations, config.links),
    });
    info!(integrations = integrations.all().len(), errors = integrations.errors().len(), dir = %config.integrations.display(), "integrations loaded");
    let connections = Arc::new(Connections::new(
        store.clone(),
        integrations.clone(),
        config.secret_keys.clone(),
    ));
    match connections.check_keys() {
        Ok(n) if n > 0 => info!(connections = n, "the key ring opens the stored credentials"),
        Ok(_) => {}
        Err(e) => anyhow::bail!(e),
    }
    if config.secret_keys.is_none() {
        info!(
            "no key ring ({}): connections with credentials cannot be created",
            crate::connect::vault::KEYS_VAR
        );
    }
    if config.amqp.is_none() {
        warn!("no AMQP URL (--amqp or WEIR_AMQP_URL): AMQP deliveries wait in the outbox");
    }
    let options = EngineOptions {
        // Runs that only wait on timers leave memory until they are due.
        park_after: Some(Duration::from_secs(2)),
        ..EngineOptions::default()
    };
    let clock = Clock::new();
    let engine = Engine::new(store.clone(), clock.clone(), options);
    engine.set_connector(connections.clone());
    let universal = Arc::new(match config.actions.is_dir() {
        true => Registry::<UniversalAction>::load(&config.actions, config.links),
        false => Registry::<UniversalAction>::empty(&config.actions, config.links),
    });
    info!(actions = universal.all().len(), errors = universal.errors().len(), dir = %config.actions.display(), "universal actions loaded");
    let actions = Arc::new(Actions::new(universal.clone(), connections.clone()));
    engine.set_actor(actions.clone());
    let (deliveries, incoming) = tokio::sync::mpsc::unbounded_channel();
    engine.set_outbox(deliveries);
    let outbox = outbox::Outbox::start(store.clone(), clock, config.amqp.clone(), incoming)?;
    let work = WorkRuntime::start()?;
    let notifier = notify::Notifier::new(store.clone(), engine.clone(), config.notify.clone());
    connections.set_notifier(notifier.clone());
    let runs = Runs::new(engine, registry.clone(), config.max_backlog, work.handle());
    actions.set_runs(&runs);
    runs.set_notifier(notifier);
    let cluster = config.cluster.clone().map(cluster::Cluster::new);
    if let Some(c) = &cluster {
        info!(role = c.role().as_str(), broker = %cluster::broker::redacted(&c.settings.amqp), prefix = %c.settings.prefix, partitions = c.settings.partitions, "weir runs as part of a deployment");
    }
    let resumed = runs.resume_all()?;
    let descriptors = http::server::descriptor_limit();
    let limits = http::server::Limits {
        max_connections: config
            .max_connections
            .unwrap_or_else(|| http::server::default_max_connections(descriptors)),
        header_timeout: config.header_timeout,
        body_timeout: config.body_timeout,
    };
    let schedules = Arc::new(Schedules::default());
    let triggers = Triggers::new(
        runs.clone(),
        registry.clone(),
        schedules.clone(),
        connections.clone(),
    );
    let mut worker = None;
    if let Some(c) = &cluster {
        match c.role() {
            cluster::Role::Ingest => {
                let forward = cluster::ingest::Forward::start(c.clone(), store.clone());
                runs.set_forward(forward.clone());
                let lead = cluster::lead::Lead::new(c.clone(), store.clone());
                forward.set_lead(lead.clone());
                triggers.set_mode(triggers::Mode::Led(lead));
            }
            cluster::Role::Worker => {
                triggers.set_mode(triggers::Mode::Off);
                worker = Some(cluster::worker::Worker::start(
                    c.clone(),
                    runs.clone(),
                    outbox.clone(),
                ));
            }
            cluster::Role::All => {}
        }
    }
    let state = Arc::new(http::AppState {
        cluster: cluster.clone(),
        registry: registry.clone(),
        runs: runs.clone(),
        metrics,
        dedupe_retention: config.dedupe_retention,
        dedupe_locks: DedupeLocks::default(),
        schedules,
        outbox: outbox.clone(),
        limits,
        auth: config.auth.clone(),
        metrics_open: config.metrics_open,
        mcp_allowed_hosts: mcp_hosts(&config),
        mcp_allowed_origins: mcp_origins(&config),
        connections,
        actions,
    });

    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    state.connections.set_public_url(
        config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
        config.oauth_redirect_allow.clone(),
    );
    info!(address = %addr, resumed, max_connections = limits.max_connections, "weir is serving");
    bound(addr);

    triggers.start_all();
    let watcher = reload::watch(
        registry.clone(),
        integrations.clone(),
        universal.clone(),
        triggers.clone(),
    );
    let idempotency_expiry = tokio::spawn(triggers::expire_idempotency(
        runs.clone(),
        http::actions::IDEMPOTENCY_TTL,
        Duration::from_secs(600),
    ));
    let expiry = tokio::spawn(triggers::expire_dedupe(
        runs.clone(),
        config.dedupe_retention,
        Duration::from_secs(600),
    ));
    let sweeper = config.run_retention.map(|retention| {
        tokio::spawn(runs::retention::forget_finished(
            runs.clone(),
            retention,
            runs::retention::sweep_interval(retention),
        ))
    });

    // Stop on a signal, or when storage fails: sled cannot go on after a
    // failed write or flush (its error is latched), and what it holds in
    // memory may differ from the disk, so weir exits and recovers from
    // the disk when started again (a supervisor restarts it).
    let failure: Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let stop = {
        let (store, failure) = (store.clone(), failure.clone());
        async move {
            tokio::select! {
                () = shutdown => {}
                why = storage_failed(store) => {
                    tracing::error!(error = %why, "storage failed; weir stops (start it again once the disk has space: nothing acknowledged is lost)");
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                }
            }
        }
    };
    http::server::serve(listener, http::router(state), limits, config.grace, stop).await;

    info!("shutting down: no new events; letting running nodes finish");
    if let Some(worker) = worker {
        // Unacked events go back to their queue when the connection closes.
        worker.abort();
    }
    drop(watcher);
    expiry.abort();
    idempotency_expiry.abort();
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    triggers.stop_all().await;
    runs.shutdown(config.grace).await;
    outbox.stop();
    store.close().await;
    drop(work);
    if let Some(why) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        anyhow::bail!(
            "storage failed ({why}); weir stopped, because its store cannot be trusted after a failed write. Free space on the data disk (or fix the error) and start weir again: every acknowledged event, and every step that finished, is on disk and resumes"
        );
    }
    info!("stopped");
    Ok(())
}

/// Resolves, with why, once the store reports that a write failed.
async fn storage_failed(store: Arc<SledStore>) -> String {
    use weir_storage::Store;
    loop {
        if let Some(why) = store.failure() {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The runtime runs are driven on, apart from the HTTP edge's (see
/// [`runs`]). Its threads have 8 MiB stacks: deeply nested script values
/// are dropped recursively.
struct WorkRuntime(Option<tokio::runtime::Runtime>);

impl WorkRuntime {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("weir-work")
            .thread_stack_size(8 << 20)
            .enable_all()
            .build()
            .context("cannot start the runtime runs are driven on")?;
        Ok(Self(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(runtime) => runtime.handle().clone(),
            // Only `drop` takes the runtime out.
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for WorkRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one would block it: let its
        // threads end in the background (its tasks were stopped already).
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

mod reload {
    //! Reloads flow files when the flows folder changes.

    use std::sync::Arc;
    use std::time::Duration;

    use notify::{RecursiveMode, Watcher};
    use tracing::warn;

    use super::registry::Registry;
    use super::triggers::Triggers;
    use crate::act::definition::UniversalAction;
    use crate::connect::integration::Integration;

    /// How long changes settle before a reload (editors write in steps).
    const SETTLE: Duration = Duration::from_millis(200);
    /// A reload also happens this often, in case an event was missed.
    const RESCAN: Duration = Duration::from_secs(1);

    /// Watches the flows folder (and the integrations folder); dropping
    /// the result stops watching.
    pub fn watch(
        registry: Arc<Registry>,
        integrations: Arc<Registry<Integration>>,
        actions: Arc<Registry<UniversalAction>>,
        triggers: Arc<Triggers>,
    ) -> Option<notify::RecommendedWatcher> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.send(());
            }
        });
        let watcher = match watcher {
            Ok(mut w) => match w.watch(registry.dir(), RecursiveMode::NonRecursive) {
                Ok(()) => {
                    for (dir, what) in [
                        (integrations.dir(), "integrations"),
                        (actions.dir(), "actions"),
                    ] {
                        if dir.is_dir()
                            && let Err(e) = w.watch(dir, RecursiveMode::NonRecursive)
                        {
                            warn!(error = %e, "cannot watch the {what} folder; it is read again every few seconds");
                        }
                    }
                    Some(w)
                }
                Err(e) => {
                    warn!(error = %e, "cannot watch the flows folder; rescanning it every second instead");
                    None
                }
            },
            Err(e) => {
                warn!(error = %e, "cannot watch the flows folder; rescanning it every second instead");
                None
            }
        };
        let watching = watcher.is_some();
        tokio::spawn(async move {
            loop {
                let event = if watching {
                    tokio::time::timeout(RESCAN * 5, rx.recv()).await
                } else {
                    tokio::time::sleep(RESCAN).await;
                    Ok(Some(()))
                };
                if let Ok(None) = event {
                    return; // the watcher was dropped
                }
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
                let (registry, integrations, actions) =
                    (registry.clone(), integrations.clone(), actions.clone());
                let changes = tokio::task::spawn_blocking(move || {
                    integrations.reload_if_present();
                    actions.reload_if_present();
                    registry.reload()
                })
                .await;
                if let Ok(changes) = changes
                    && !changes.is_empty()
                {
                    triggers.apply(&changes).await;
                }
            }
        });
        watcher
    }
}

/// The Host names `/mcp` answers: the configured ones, else loopback names
/// and the public URL's host.
fn mcp_hosts(config: &Config) -> Vec<String> {
    if !config.mcp_allowed_hosts.is_empty() {
        return config.mcp_allowed_hosts.clone();
    }
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    if let Some(host) = config
        .public_url
        .as_deref()
        .and_then(|u| reqwest::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
    {
        hosts.push(host);
    }
    hosts
}

/// The browser origins `/mcp` answers: the configured ones, else loopback
/// origins on any port and the public URL's origin.
fn mcp_origins(config: &Config) -> Vec<String> {
    if !config.mcp_allowed_origins.is_empty() {
        return config.mcp_allowed_origins.clone();
    }
    let mut origins: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .flat_map(|h| [format!("http://{h}:*"), format!("https://{h}:*")])
        .collect();
    if let Some(url) = config
        .public_url
        .as_deref()
        .and_then(|u| reqwest::Url::parse(u).ok())
    {
        origins.push(url.origin().ascii_serialization());
    }
    origins
}
