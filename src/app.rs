//! Wires the pieces together under one shutdown: the HTTP server, the
//! scheduler, and the reload loop that swaps the scheduler when the
//! configuration changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::aws::{AwsSource, StaticCredentials};
use crate::config::{Config, PollOptions, WebConfig};
use crate::conns::{self, Limits};
use crate::demo::{DEMO_ACCOUNTS, DemoSource};
use crate::model::unix_seconds;
use crate::names;
use crate::scheduler;
use crate::server::{self, ServerOptions};
use crate::shutdown::{self, Shutdown};
use crate::source::dispatch::Source;
use crate::state::{Org, State};
use crate::storage::Storage;
use crate::websec::WebSecurity;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("GIT_REVISION");

/// Everything `run` needs besides its listener and shutdown.
pub struct Options {
    pub config: Config,
    /// Re-read on reload; `None` means defaults only (reload is a no-op).
    pub config_path: Option<PathBuf>,
    /// `--web.listen-address` and `--web.telemetry-path`, which win over
    /// the file on every load.
    pub web_flags: WebFlags,
    pub demo: bool,
    /// Static keys instead of the default chain (tests, tools).
    pub credentials: Option<StaticCredentials>,
    /// Reload on SIGHUP (the binary does; in-process tests must not).
    pub sighup: bool,
    /// `--web.config.file`: TLS and basic auth, re-read on reload.
    pub web_config_file: Option<PathBuf>,
    /// `--web.enable-lifecycle`: serve `POST /-/reload` (SIGHUP always reloads).
    pub enable_lifecycle: bool,
    /// `--storage.path`: where the organisation walk is kept across restarts.
    pub storage_path: Option<PathBuf>,
}

fn load_security(path: Option<&std::path::Path>) -> Result<WebSecurity, String> {
    match path {
        Some(p) => WebSecurity::load(p),
        None => Ok(WebSecurity::none()),
    }
}

/// Lowers the connection caps to what the open-files limit allows: past it,
/// `accept` fails and every client waits, the scraper included.
fn fit_to_open_files(limits: &mut Limits, budget: u64) {
    if limits.max_connections as u64 > budget {
        let fitted = usize::try_from(budget).unwrap_or(usize::MAX);
        tracing::warn!(
            configured = limits.max_connections,
            used = fitted,
            "web.max_connections is above what the open-files limit (ulimit -n) allows; raise LimitNOFILE or lower it"
        );
        limits.max_connections = fitted;
    }
}

/// The `--web.*` flags that override `[web]` keys, as node_exporter's do.
#[derive(Debug, Clone, Default)]
pub struct WebFlags {
    /// `--web.listen-address`, over `web.listen_address`.
    pub listen_address: Option<String>,
    /// `--web.telemetry-path`, over `web.telemetry_path`.
    pub telemetry_path: Option<String>,
}

/// Loads the configuration file (or defaults) and applies the flags, each
/// held to the same rule as the key it overrides. `--demo` without a file
/// gets settings that show the simulation moving, on every load, so a
/// reload keeps them.
pub fn load_config(
    path: Option<&std::path::Path>,
    flags: &WebFlags,
    demo: bool,
) -> Result<Config, String> {
    let mut config = match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None if demo => Config::demo(),
        None => Config::default(),
    };
    if let Some(addr) = &flags.listen_address {
        config.web.listen_address = addr.clone();
    }
    if let Some(path) = &flags.telemetry_path {
        config.web.telemetry_path = path.clone();
    }
    if let Err((key, msg)) = config.validate() {
        let flag = match key.as_str() {
            "web.listen_address" => "--web.listen-address",
            "web.telemetry_path" => "--web.telemetry-path",
            other => other,
        };
        return Err(format!("{flag}: {msg}"));
    }
    Ok(config)
}

/// What `--config.check` adds to the file's own rules: each organisation's
/// clients built exactly as a start builds them, so the check refuses what
/// a start would (no region anywhere, say). Sends no request to AWS.
/// Returns the warnings a start would log (a profile not found).
pub async fn check(config: &Config, demo: bool) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    if demo {
        return Ok(warnings);
    }
    for (name, org) in config.organizations() {
        if let Some(w) = crate::aws::missing_profile(&org.aws).await {
            warnings.push(of_organization(name.as_deref(), w));
        }
        make_source(&None, &org, &None)
            .await
            .map_err(|e| of_organization(name.as_deref(), e))?;
    }
    Ok(warnings)
}

/// An organisation's error, prefixed with its name when it has one.
fn of_organization(name: Option<&str>, e: String) -> String {
    match name {
        Some(name) => format!("organization {name:?}: {e}"),
        None => e,
    }
}

async fn make_source(
    credentials: &Option<StaticCredentials>,
    config: &Config,
    demo: &Option<Arc<DemoSource>>,
) -> Result<Source, String> {
    match demo {
        Some(d) => Ok(Source::Demo(d.clone())),
        None => {
            if let Some(warning) = crate::aws::missing_profile(&config.aws).await {
                tracing::warn!(warning, "AWS profile not found");
            }
            let s = AwsSource::connect(&config.aws, credentials.clone()).await?;
            let a = &config.aws;
            tracing::info!(
                region = %s.region,
                endpoint = a.endpoint_url.as_deref().unwrap_or("default"),
                sts_endpoint = a.sts_endpoint_url.as_deref().unwrap_or("default"),
                organizations_endpoint = a.organizations_endpoint_url.as_deref().unwrap_or("default"),
                role_arn = a.role_arn.as_deref().unwrap_or(""),
                "AWS client ready"
            );
            Ok(Source::Aws(s))
        }
    }
}

/// Runs the exporter until `shutdown` fires. Returns an error only when it
/// cannot start at all.
pub async fn run(
    listener: TcpListener,
    opts: Options,
    state: Arc<State>,
    shutdown: Shutdown,
) -> Result<(), String> {
    let mut config = opts.config.clone();
    state.set_simulated(opts.demo);
    let security = load_security(opts.web_config_file.as_deref())?;
    let storage = match &opts.storage_path {
        Some(dir) => Some(Storage::open(dir)?),
        None => None,
    };
    let tls = security.tls.is_some();
    // Before the first scrape: a restart serves the labels it had.
    let mut fleet = Fleet {
        storage,
        demo: opts.demo,
        credentials: opts.credentials.clone(),
        watched: Vec::new(),
    };
    fleet.apply(&config, &state).await?;
    state.metrics.reload_success.set(1.0);
    state
        .metrics
        .reload_timestamp
        .set(unix_seconds(SystemTime::now()));

    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<Result<(), String>>>(4);
    let mut server_opts = ServerOptions::from_config(&config.web);
    fit_to_open_files(&mut server_opts.limits, conns::connection_budget());
    server_opts.reload = opts.enable_lifecycle.then(|| reload_tx.clone());
    // The web layer counts its own series; they are served with the rest.
    state.metrics.register(server_opts.metrics.collectors());
    server_opts.security.send_replace(Arc::new(security));
    let shared_security = server_opts.security.clone();
    // Installed before "listening" is logged: SIGHUP's default action kills.
    #[cfg(unix)]
    let hangup = opts
        .sighup
        .then(|| tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
        .flatten();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, telemetry_path = %server_opts.telemetry_path, tls, version = VERSION, "listening");
    }
    let server = tokio::spawn(server::run(
        listener,
        state.clone(),
        server_opts,
        shutdown.clone(),
    ));
    #[cfg(unix)]
    if let Some(hup) = hangup {
        tokio::spawn(sighup_reloads(hup, reload_tx, shutdown.clone()));
    }

    // [web] applies at start only: every reload compares the file with this.
    let running_web = config.web.clone();
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            Some(reply) = reload_rx.recv() => {
                let outcome = reload(&opts, &mut config, &running_web, &mut fleet, &state, &shared_security).await;
                let _ = reply.send(outcome);
            }
        }
    }
    fleet.stop().await;
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// The span an organisation's work runs in: its lines carry
/// `organization=<name>` (none for the only, unnamed one).
fn span_of(name: Option<&str>) -> tracing::Span {
    match name {
        Some(name) => tracing::info_span!("organization", organization = %name),
        None => tracing::Span::none(),
    }
}

/// One running producer and the means to stop it.
struct Task {
    stop: shutdown::Trigger,
    handle: tokio::task::JoinHandle<()>,
}

impl Task {
    /// Runs the producer in its organisation's span, so every line it logs
    /// names the organisation.
    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(
        org: &Org,
        run: impl FnOnce(Shutdown) -> F,
    ) -> Task {
        let (stop, stopped) = shutdown::channel();
        Task {
            stop,
            handle: tokio::spawn(run(stopped).instrument(span_of(org.name.as_deref()))),
        }
    }

    async fn stop(self) {
        self.stop.trigger();
        let _ = self.handle.await;
    }
}

/// One organisation's producers: the enrollment poll and, with
/// `aws.organizations`, the organisation walk, each restarted on its own
/// when its settings change.
struct Producers {
    source: Source,
    storage: Option<Arc<Storage>>,
    poll: Task,
    walk: Option<Task>,
}

impl Producers {
    fn start(
        source: Source,
        config: &Config,
        org: &Arc<Org>,
        storage: Option<Arc<Storage>>,
    ) -> Producers {
        Producers {
            poll: Producers::poll(&source, config, org),
            // At the organisation's start, its saved walk is served first.
            walk: Producers::walk(&source, config, org, &storage, true),
            source,
            storage,
        }
    }

    fn poll(source: &Source, config: &Config, org: &Arc<Org>) -> Task {
        let (source, opts, state) = (
            source.clone(),
            PollOptions::from_config(config),
            org.clone(),
        );
        Task::spawn(org, move |stopped| {
            scheduler::run(source, opts, state, stopped)
        })
    }

    fn walk(
        source: &Source,
        config: &Config,
        org: &Arc<Org>,
        storage: &Option<Arc<Storage>>,
        restore: bool,
    ) -> Option<Task> {
        if !config.aws.organizations {
            return None;
        }
        let restore = restore && storage.is_some();
        if restore {
            // Before the task exists, so readiness can never run ahead of it.
            org.set_restoring();
        }
        let walk = names::WalkOptions {
            interval: config.aws.organizations_interval,
            requests_per_second: config.aws.organizations_requests_per_second,
            tag_labels: crate::config::tag_labels(&config.aws.account_tags),
            storage: storage.clone(),
            restore,
            max_age: config.aws.organizations_max_age(),
        };
        let (source, opts, state) = (
            source.clone(),
            PollOptions::from_config(config),
            org.clone(),
        );
        Some(Task::spawn(org, move |stopped| {
            names::run(source, walk, opts, state, stopped)
        }))
    }

    /// Applies a new configuration: new clients restart both producers; a
    /// change to `[poll]` restarts the poll only, one to the walk's own keys
    /// the walk only. Nothing else is touched.
    async fn reload(&mut self, old: &Config, new: &Config, source: Option<Source>, org: &Arc<Org>) {
        let clients = source.is_some();
        if let Some(source) = source {
            self.source = source;
        }
        if clients || new.poll != old.poll {
            let poll = Producers::poll(&self.source, new, org);
            std::mem::replace(&mut self.poll, poll).stop().await;
        }
        if clients || new.aws.walk_differs(&old.aws) {
            // The old walk stops before anything is cleared or started, so
            // it cannot publish names after they were switched off.
            if let Some(walk) = self.walk.take() {
                walk.stop().await;
            }
            if !new.aws.organizations {
                org.forget_organizations();
            }
            self.walk = Producers::walk(&self.source, new, org, &self.storage, false);
        }
    }

    async fn stop(self) {
        self.poll.stop().await;
        if let Some(walk) = self.walk {
            walk.stop().await;
        }
    }
}

/// Every organisation watched, each with its own clients, producers and
/// data: the one of `[aws]`, or one per `[[organization]]` table.
struct Fleet {
    /// `--storage.path`: each organisation has its own file there.
    storage: Option<Storage>,
    /// `--demo`: each organisation is a simulated one of its own.
    demo: bool,
    credentials: Option<StaticCredentials>,
    watched: Vec<Watched>,
}

/// One organisation and what runs for it.
struct Watched {
    org: Arc<Org>,
    /// Its configuration as its producers see it.
    config: Config,
    demo: Option<Arc<DemoSource>>,
    producers: Producers,
}

impl Fleet {
    /// Makes the running organisations those of `config`. Every client is
    /// built before anything changes, so a configuration that cannot be
    /// applied is refused whole. An organisation whose settings are the
    /// same is not touched (no request, no restart); one that changed
    /// restarts only the producers its change concerns; one that is new
    /// starts (from its saved walk, if any); one that is gone stops and its
    /// series go.
    async fn apply(&mut self, config: &Config, state: &Arc<State>) -> Result<(), String> {
        let wanted = config.organizations();
        let mut sources = Vec::with_capacity(wanted.len());
        for (name, new) in &wanted {
            let current = self.watched.iter().find(|w| w.org.name == *name);
            let demo = match current {
                Some(w) => w.demo.clone(),
                None => self.demo.then(|| Arc::new(demo_for(name.as_deref()))),
            };
            let source = match current {
                Some(w) if !new.aws.clients_differ(&w.config.aws) => None,
                _ => Some(
                    make_source(&self.credentials, new, &demo)
                        .instrument(span_of(name.as_deref()))
                        .await
                        .map_err(|e| of_organization(name.as_deref(), e))?,
                ),
            };
            sources.push((demo, source));
        }
        let (mut kept, gone): (Vec<Watched>, Vec<Watched>) = std::mem::take(&mut self.watched)
            .into_iter()
            .partition(|w| wanted.iter().any(|(name, _)| *name == w.org.name));
        for w in gone {
            tracing::info!(
                organization = w.org.name.as_deref().unwrap_or(""),
                "organization removed from the configuration; its series go"
            );
            w.producers.stop().await;
        }
        let names: Vec<Option<String>> = wanted.iter().map(|(n, _)| n.clone()).collect();
        let orgs = state.set_orgs(&names);
        for (((name, new), (demo, source)), org) in wanted.into_iter().zip(sources).zip(orgs) {
            let current = kept
                .iter()
                .position(|w| w.org.name == name)
                .map(|i| kept.swap_remove(i));
            let watched = match current {
                Some(mut w) => {
                    w.producers.reload(&w.config, &new, source, &org).await;
                    w.config = new;
                    w
                }
                None => {
                    let Some(source) = source else {
                        // A new organisation always gets a source above.
                        continue;
                    };
                    let storage = self
                        .storage
                        .as_ref()
                        .map(|s| Arc::new(s.for_organization(name.as_deref())));
                    let producers = Producers::start(source, &new, &org, storage);
                    Watched {
                        org,
                        config: new,
                        demo,
                        producers,
                    }
                }
            };
            self.watched.push(watched);
        }
        Ok(())
    }

    async fn stop(self) {
        for w in self.watched {
            w.producers.stop().await;
        }
    }
}

/// The simulated organisation of `--demo`: the same for the same name.
fn demo_for(name: Option<&str>) -> DemoSource {
    let seed = name.map_or(0x5eed, |n| {
        n.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    });
    DemoSource::new(DEMO_ACCOUNTS, seed)
}

async fn reload(
    opts: &Options,
    config: &mut Config,
    running_web: &WebConfig,
    fleet: &mut Fleet,
    state: &Arc<State>,
    security: &server::SharedSecurity,
) -> Result<(), String> {
    let m = &state.metrics;
    let result = async {
        let new = load_config(
            opts.config_path.as_deref(),
            &opts.web_flags,
            opts.demo,
        )?;
        let new_security = load_security(opts.web_config_file.as_deref())?;
        if new.web != *running_web {
            tracing::warn!(
                "[web] settings in the file differ from the running ones: they take effect after a restart"
            );
        }
        fleet.apply(&new, state).await?;
        *config = new;
        security.send_replace(Arc::new(new_security));
        Ok::<(), String>(())
    }
    .await;
    match &result {
        Ok(()) => {
            m.reload_success.set(1.0);
            m.reload_timestamp.set(unix_seconds(SystemTime::now()));
            tracing::info!("configuration reloaded");
        }
        Err(e) => {
            m.reload_success.set(0.0);
            tracing::error!(error = %e, "configuration reload refused; the previous configuration keeps running");
        }
    }
    // The next scrape shows the outcome, not the live part cached before it.
    state.exposition().forget_live();
    result
}

#[cfg(unix)]
async fn sighup_reloads(
    mut hup: tokio::signal::unix::Signal,
    tx: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            Some(()) = hup.recv() => {
                // The outcome is logged by the reload itself.
                let (reply, _) = oneshot::channel();
                if tx.send(reply).await.is_err() {
                    return;
                }
            }
            _ = shutdown.wait() => return,
        }
    }
}
