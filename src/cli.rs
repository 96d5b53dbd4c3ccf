//! Command line: parse flags, load the configuration, start logging and the
//! runtime, and run until a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::io::Write as _;

use clap::Parser;

use crate::app::{self, Options, REVISION, VERSION};
use crate::logging::{self, LogFormat, LogLevel};
use crate::shutdown;
use crate::state::State;

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("GIT_REVISION"),
    ")"
);

/// Prometheus exporter for AWS Compute Optimizer enrollment statuses of an
/// AWS Organization's member accounts.
#[derive(Debug, Parser)]
#[command(name = "compute-optimizer-exporter", version = LONG_VERSION)]
pub struct Args {
    /// Configuration file (TOML). Without it, defaults and the AWS default chain are used.
    #[arg(long = "config.file", visible_alias = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, overriding web.listen_address (e.g. ":9746", "127.0.0.1:9746").
    #[arg(long = "web.listen-address", value_name = "ADDR")]
    pub listen_address: Option<String>,
    /// Path of the metrics, overriding web.telemetry_path (e.g. "/metrics").
    #[arg(long = "web.telemetry-path", value_name = "PATH")]
    pub telemetry_path: Option<String>,
    /// Serve on the socket systemd passes (socket activation, a .socket
    /// unit) instead of listening on web.listen_address.
    #[arg(long = "web.systemd-socket")]
    pub systemd_socket: bool,
    /// TLS and basic authentication, in the Prometheus exporter-toolkit's YAML format.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Serve POST /-/reload (as Prometheus' flag; off by default). SIGHUP always reloads.
    #[arg(long = "web.enable-lifecycle")]
    pub enable_lifecycle: bool,
    /// Folder where the organisation walk's names, OUs and tags are kept
    /// across restarts (as Prometheus' flag; off when not given).
    #[arg(long = "storage.path", value_name = "DIR")]
    pub storage_path: Option<PathBuf>,
    /// Validate the configuration, print it (secrets redacted) and exit.
    #[arg(long = "config.check", visible_alias = "check-config")]
    pub check_config: bool,
    /// Serve a simulated organisation of 300 accounts; no AWS access needed.
    #[arg(long)]
    pub demo: bool,
    /// Log level.
    #[arg(
        long = "log.level",
        value_enum,
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log_level: LogLevel,
    /// Log format.
    #[arg(
        long = "log.format",
        value_enum,
        default_value = "logfmt",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    let web_flags = app::WebFlags {
        listen_address: args.listen_address.clone(),
        telemetry_path: args.telemetry_path.clone(),
    };
    let config = match app::load_config(args.config.as_deref(), &web_flags, args.demo) {
        Ok(c) => c,
        Err(e) => {
            say_error(&e);
            return ExitCode::from(1);
        }
    };
    if let Some(web) = &args.web_config_file
        && let Err(e) = crate::web::websec::WebSecurity::load(web)
    {
        say_error(&e);
        return ExitCode::from(1);
    }
    if args.check_config {
        let built = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))
            .and_then(|rt| rt.block_on(crate::fleet::check(&config, args.demo)));
        match built {
            Ok(warnings) => {
                for w in warnings {
                    let _ = writeln!(std::io::stderr().lock(), "warning: {w}");
                }
            }
            Err(e) => {
                say_error(&e);
                return ExitCode::from(1);
            }
        }
        let source = args
            .config
            .as_ref()
            .map_or("defaults".into(), |p| p.display().to_string());
        // A closed pipe (`| head -1`) is not an error worth a panic.
        let _ = writeln!(
            std::io::stdout().lock(),
            "# {source}: configuration is valid\n{}",
            config.effective_toml()
        );
        return ExitCode::SUCCESS;
    }
    // Before any thread starts: taking the socket clears LISTEN_FDS and
    // LISTEN_PID from the environment.
    let activated = if args.systemd_socket {
        match crate::web::server::systemd_listener() {
            Ok(l) => Some(l),
            Err(e) => {
                say_error(&e);
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    logging::init(args.log_level, args.log_format);
    tune_malloc();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            say_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let listener = match activated {
            Some(socket) => {
                let listener = tokio::net::TcpListener::from_std(socket)
                    .map_err(|e| format!("cannot serve the socket systemd passed: {e}"))?;
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(%addr, "serving the socket systemd passed; web.listen_address is not used");
                }
                listener
            }
            None => {
                let addr = crate::config::parse_listen_address(&config.web.listen_address)?;
                crate::web::server::bind_listen(&addr)
                    .map_err(|e| format!("cannot listen on {}: {e}", config.web.listen_address))?
            }
        };
        let (trigger, shutdown) = shutdown::channel();
        let signalled = shutdown::signal();
        tokio::spawn(async move {
            let signal = signalled.await;
            tracing::info!(signal, "shutting down");
            trigger.trigger();
        });
        let state = Arc::new(State::new(VERSION, REVISION));
        let opts = Options {
            config,
            config_path: args.config.clone(),
            web_flags,
            demo: args.demo,
            credentials: None,
            sighup: true,
            web_config_file: args.web_config_file.clone(),
            enable_lifecycle: args.enable_lifecycle,
            storage_path: args.storage_path.clone(),
        };
        app::run(listener, opts, state, shutdown).await
    });
    // Do not wait for lingering blocking tasks (e.g. a metadata lookup).
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, as a log line: logging is up by now.
            tracing::error!(error = %e, "cannot start");
            ExitCode::from(1)
        }
    }
}

/// `error: ...` on stderr; a closed stderr is ignored, never a panic.
fn say_error(e: &str) {
    let _ = writeln!(std::io::stderr().lock(), "error: {e}");
}

/// Two glibc defaults that cost the exporter half its memory with several
/// organisations (measured with `ORGS=10 scripts/loadbench.sh`, 100,000
/// accounts: 124 MB peak with both, 74 MB without the first, 56 MB without
/// either):
///
/// * every thread that allocates under contention gets an arena of its
///   own, up to 8 per core, and memory freed in one is not reused by
///   another: two suit a 2-thread runtime;
/// * the threshold above which a block is mapped on its own (and returned
///   to the system when freed) rises to the largest block freed, so after
///   the first render the 1 MiB runs and compressor state come from the
///   heap and leave holes between snapshots: it stays at 128 KiB.
///
/// `MALLOC_ARENA_MAX` and `MALLOC_MMAP_THRESHOLD_`, when set, still win.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (variable, parameter, value) in [
        ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, 2),
        ("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 128 * 1024),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mallopt only sets an allocator parameter; it is
            // called before the runtime starts its threads.
            unsafe {
                libc::mallopt(parameter, value);
            }
        }
    }
}
