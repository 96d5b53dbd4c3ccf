//! The wiring, under one shutdown: the web server, the fleet of
//! organisations, and the reload loop that hands the fleet each new
//! configuration (SIGHUP, `POST /-/reload`). Nothing here produces or
//! serves a series itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, WebConfig};
use crate::fleet::Fleet;
use crate::model::unix_seconds;
use crate::routes::Endpoints;
use crate::shutdown::Shutdown;
use crate::source::aws::StaticCredentials;
use crate::state::State;
use crate::storage::Storage;
use crate::web::conns::{self, Limits};
use crate::web::server::{self, ServerOptions};
use crate::web::websec::WebSecurity;

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
    let mut fleet = Fleet::new(storage, opts.demo, opts.credentials.clone());
    fleet.apply(&config, &state).await?;
    state.metrics.reload_success.set(1.0);
    state
        .metrics
        .reload_timestamp
        .set(unix_seconds(SystemTime::now()));

    let (reload_tx, mut reload_rx) = mpsc::channel::<oneshot::Sender<Result<(), String>>>(4);
    let mut server_opts = ServerOptions::from_config(&config.web);
    fit_to_open_files(&mut server_opts.limits, conns::connection_budget());
    let routes = Arc::new(Endpoints::new(
        state.clone(),
        &config.web,
        opts.enable_lifecycle.then(|| reload_tx.clone()),
    ));
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
        tracing::info!(address = %addr, telemetry_path = %config.web.telemetry_path, tls, version = VERSION, "listening");
    }
    let server = tokio::spawn(server::run(listener, routes, server_opts, shutdown.clone()));
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
