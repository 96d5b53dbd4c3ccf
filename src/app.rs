//! Wires the pieces together under one shutdown: the HTTP server, the
//! scheduler, and the reload loop that swaps the scheduler when the
//! configuration changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

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
use crate::state::State;
use crate::storage::{self, Storage};
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

async fn make_source(
    opts: &Options,
    config: &Config,
    demo: &Option<Arc<DemoSource>>,
) -> Result<Source, String> {
    match demo {
        Some(d) => Ok(Source::Demo(d.clone())),
        None => {
            let s = AwsSource::connect(&config.aws, opts.credentials.clone()).await?;
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
    let demo = opts
        .demo
        .then(|| Arc::new(DemoSource::new(DEMO_ACCOUNTS, 0x5eed)));
    let mut config = opts.config.clone();
    state.set_simulated(opts.demo);
    let security = load_security(opts.web_config_file.as_deref())?;
    let storage = match &opts.storage_path {
        Some(dir) => Some(Arc::new(Storage::open(dir)?)),
        None => None,
    };
    // Before the first scrape: a restart serves the labels it had.
    if config.aws.organizations
        && let Some(restored) = storage.as_ref().and_then(|s| s.load())
    {
        let labels = crate::config::tag_labels(&config.aws.account_tags);
        let dir = storage::fit_to_labels(restored.directory, &labels);
        tracing::info!(
            accounts = dir.len(),
            complete = dir.complete(),
            "organisation restored from --storage.path; walking it again in the background"
        );
        state.set_learned(restored.learned);
        state.set_organizations_complete(dir.complete());
        state.set_names(dir);
    }
    let tls = security.tls.is_some();
    let source = make_source(&opts, &config, &demo).await?;
    state.metrics.reload_success.set(1.0);
    state
        .metrics
        .reload_timestamp
        .set(unix_seconds(SystemTime::now()));

    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<Result<(), String>>>(4);
    let mut server_opts = ServerOptions::from_config(&config.web);
    fit_to_open_files(&mut server_opts.limits, conns::connection_budget());
    server_opts.reload = opts.enable_lifecycle.then(|| reload_tx.clone());
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
    let mut producers = Producers::start(source, &config, &state, &storage);
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            Some(reply) = reload_rx.recv() => {
                let outcome = reload(&opts, &mut config, &running_web, &demo, &mut producers, &state, &shared_security).await;
                let _ = reply.send(outcome);
            }
        }
    }
    producers.stop().await;
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// One running producer and the means to stop it.
struct Task {
    stop: shutdown::Trigger,
    handle: tokio::task::JoinHandle<()>,
}

impl Task {
    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(
        run: impl FnOnce(Shutdown) -> F,
    ) -> Task {
        let (stop, stopped) = shutdown::channel();
        Task {
            stop,
            handle: tokio::spawn(run(stopped)),
        }
    }

    async fn stop(self) {
        self.stop.trigger();
        let _ = self.handle.await;
    }
}

/// The producers: the enrollment poll and, with `aws.organizations`, the
/// organisation walk, each restarted on its own when its settings change.
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
        state: &Arc<State>,
        storage: &Option<Arc<Storage>>,
    ) -> Producers {
        Producers {
            poll: Producers::poll(&source, config, state),
            walk: Producers::walk(&source, config, state, storage),
            source,
            storage: storage.clone(),
        }
    }

    fn poll(source: &Source, config: &Config, state: &Arc<State>) -> Task {
        let (source, opts, state) = (
            source.clone(),
            PollOptions::from_config(config),
            state.clone(),
        );
        Task::spawn(move |stopped| scheduler::run(source, opts, state, stopped))
    }

    fn walk(
        source: &Source,
        config: &Config,
        state: &Arc<State>,
        storage: &Option<Arc<Storage>>,
    ) -> Option<Task> {
        if !config.aws.organizations {
            return None;
        }
        let walk = names::WalkOptions {
            interval: config.aws.organizations_interval,
            requests_per_second: config.aws.organizations_requests_per_second,
            tag_labels: crate::config::tag_labels(&config.aws.account_tags),
            storage: storage.clone(),
        };
        let (source, opts, state) = (
            source.clone(),
            PollOptions::from_config(config),
            state.clone(),
        );
        Some(Task::spawn(move |stopped| {
            names::run(source, walk, opts, state, stopped)
        }))
    }

    /// Applies a new configuration: new clients restart both producers; a
    /// change to `[poll]` restarts the poll only, one to the walk's own keys
    /// the walk only. Nothing else is touched.
    async fn reload(
        &mut self,
        old: &Config,
        new: &Config,
        source: Option<Source>,
        state: &Arc<State>,
    ) {
        let clients = source.is_some();
        if let Some(source) = source {
            self.source = source;
        }
        if clients || new.poll != old.poll {
            let poll = Producers::poll(&self.source, new, state);
            std::mem::replace(&mut self.poll, poll).stop().await;
        }
        if clients || new.aws.walk_differs(&old.aws) {
            // The old walk stops before anything is cleared or started, so
            // it cannot publish names after they were switched off.
            if let Some(walk) = self.walk.take() {
                walk.stop().await;
            }
            if !new.aws.organizations {
                state.forget_organizations();
            }
            self.walk = Producers::walk(&self.source, new, state, &self.storage);
        }
    }

    async fn stop(self) {
        self.poll.stop().await;
        if let Some(walk) = self.walk {
            walk.stop().await;
        }
    }
}

async fn reload(
    opts: &Options,
    config: &mut Config,
    running_web: &WebConfig,
    demo: &Option<Arc<DemoSource>>,
    producers: &mut Producers,
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
        let source = if new.aws.clients_differ(&config.aws) {
            Some(make_source(opts, &new, demo).await?)
        } else {
            None
        };
        producers.reload(config, &new, source, state).await;
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
