//! Logins and scrapes under attack, one row per way they were once starved:
//! for each, a fresh release exporter in `--demo` with TLS and basic auth
//! (bcrypt cost 10), attackers on 127.0.0.2-127.0.0.9, and a scraper with
//! basic auth over TLS on a keep-alive connection every 50 ms, whose first
//! login happens during the attack.
//!
//!     scripts/authattackbench.sh [SECONDS=10]
//!
//! Prints per row: scrape success, p50/p99/max, the exporter's CPU in cores
//! (the whole process, and its bcrypt worker thread, which can never pass
//! 1.0), and what the attack achieved. Every loop is bounded in count and time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

const BIN: &str = "target/release/compute-optimizer-exporter";
/// Requests one attacker task sends at most, whatever the duration.
const MAX_ROUNDS: u64 = 20_000;

#[derive(Clone, Copy, PartialEq)]
enum Finding {
    HangUp,
    WaitingLogins,
    WrongPasswords,
    ReloadStorm,
    ManySources,
    IdleKeepAlive,
    Rebinding,
}

const ROWS: [(Finding, &str); 7] = [
    (Finding::HangUp, "1 wrong password, hang up (8 sources x 4)"),
    (
        Finding::WaitingLogins,
        "2 wrong password, hold the connection (8 x 64)",
    ),
    (
        Finding::WrongPasswords,
        "3 wrong passwords back to back (8 x 8)",
    ),
    (
        Finding::ReloadStorm,
        "4 SIGHUP every 250 ms, a user revoked and restored",
    ),
    (
        Finding::ManySources,
        "5 one idle connection per source, table of 16",
    ),
    (
        Finding::IdleKeepAlive,
        "6 keep-alive scraper every 1.5 s, header timeout 1 s",
    ),
    (
        Finding::Rebinding,
        "7 reload and status from Host: evil.example (8 x 4)",
    ),
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    println!(
        "{:<56} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6}  attack",
        "finding (release build, TLS + basic auth, cost 10)",
        "scrapes",
        "p50",
        "p99",
        "max",
        "cores",
        "bcrypt"
    );
    for (finding, title) in ROWS {
        row(finding, title, Duration::from_secs(seconds)).await;
    }
}

async fn row(finding: Finding, title: &str, duration: Duration) {
    let dir = support::tempdir();
    let users = |with_revoked: bool| {
        let hash = bcrypt::hash("correct horse", 10).expect("bcrypt");
        let mut text = format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: '{hash}'\n",
            support::tls::fixture("server.crt").display(),
            support::tls::fixture("server.key").display()
        );
        if with_revoked {
            text.push_str(&format!("  intern: '{hash}'\n"));
        }
        text
    };
    let web = dir.join("web.yml");
    std::fs::write(&web, users(true)).expect("web config");
    let config = dir.join("config.toml");
    let web_section = match finding {
        Finding::ManySources => "[web]\nmax_connections = 16\nmax_connections_per_source = 2\n",
        Finding::IdleKeepAlive => "[web]\nheader_read_timeout = \"1s\"\n",
        _ => "",
    };
    std::fs::write(&config, web_section).expect("config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Exporter(
        Command::new(std::env::var("EXPORTER").unwrap_or(BIN.into()))
            .args(["--demo", "--log.level", "error", "--web.enable-lifecycle"])
            .arg("--web.listen-address")
            .arg(addr.to_string())
            .arg("--config.file")
            .arg(&config)
            .arg("--web.config.file")
            .arg(&web)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{BIN}: {e} (run scripts/authattackbench.sh)")),
    );
    let up = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < up, "the exporter did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Only the rebinding row logs in before the attack (to read this).
    let reloaded_before = if finding == Finding::Rebinding {
        metric(addr, &basic("prometheus", "correct horse"), RELOADED_AT).await
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let achieved = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let per_source = match finding {
        Finding::HangUp | Finding::Rebinding => 4,
        Finding::WaitingLogins => 64,
        Finding::WrongPasswords => 8,
        Finding::ManySources => 1,
        Finding::ReloadStorm | Finding::IdleKeepAlive => 0,
    };
    for source in 2..=9u8 {
        for i in 0..per_source {
            let (stop, achieved) = (stop.clone(), achieved.clone());
            tasks.push(tokio::spawn(attacker(
                finding, source, i, addr, stop, achieved,
            )));
        }
    }
    if finding == Finding::ReloadStorm {
        let (stop, achieved, web, pid) =
            (stop.clone(), achieved.clone(), web.clone(), child.0.id());
        let revoked = users(false);
        let restored = users(true);
        tasks.push(tokio::spawn(async move {
            for n in 0..MAX_ROUNDS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = std::fs::write(&web, if n % 2 == 0 { &revoked } else { &restored });
                let _ = Command::new("kill")
                    .args(["-s", "HUP", &pid.to_string()])
                    .status();
                achieved.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }
    // The attack takes hold first; the scraper's first login is under it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = (cpu_seconds(child.0.id()), Instant::now());
    let interval = if finding == Finding::IdleKeepAlive {
        Duration::from_millis(1500)
    } else {
        Duration::from_millis(50)
    };
    let (mut times, mut failed, mut connects) = (Vec::new(), 0u64, 0u64);
    let mut conn: Option<TlsStream<TcpStream>> = None;
    let good = basic("prometheus", "correct horse");
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let started = Instant::now();
        let ok = match scrape(&mut conn, addr, &good, &mut connects).await {
            Some(200) => true,
            _ => {
                conn = None;
                false
            }
        };
        if ok {
            times.push(started.elapsed());
        } else {
            failed += 1;
        }
        tokio::time::sleep(interval).await;
    }
    let wall = cpu0.1.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(child.0.id());
    let (cores, bcrypt_cores) = ((cpu1.0 - cpu0.0.0) / wall, (cpu1.1 - cpu0.0.1) / wall);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let attack = match finding {
        Finding::HangUp => format!("{} hang-ups", achieved.load(Ordering::Relaxed)),
        Finding::WaitingLogins | Finding::WrongPasswords => {
            format!(
                "{} wrong passwords answered",
                achieved.load(Ordering::Relaxed)
            )
        }
        Finding::ReloadStorm => format!("{} reloads", achieved.load(Ordering::Relaxed)),
        Finding::ManySources => format!("{} attacker connects", achieved.load(Ordering::Relaxed)),
        Finding::IdleKeepAlive => format!("{connects} scraper connection(s)"),
        Finding::Rebinding => {
            let after = metric(addr, &good, RELOADED_AT).await;
            let refused = metric(addr, &good, HOST_REFUSED).await.unwrap_or(0.0);
            let reloaded = if after == reloaded_before {
                "no reload"
            } else {
                "RELOADED"
            };
            format!("{reloaded}, {refused} requests refused for their Host")
        }
    };
    drop(child);
    times.sort();
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or("-".into(), |d| format!("{:.1}ms", d.as_secs_f64() * 1000.0))
    };
    let total = times.len() as u64 + failed;
    println!(
        "{title:<56} {:>9} {:>8} {:>8} {:>8} {cores:>6.2} {bcrypt_cores:>6.2}  {attack}",
        format!("{}/{total}", times.len()),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn tls_connect(source: IpAddr, addr: SocketAddr) -> Option<TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let tcp = socket.connect(addr).await.ok()?;
    tokio::time::timeout(
        Duration::from_secs(5),
        support::tls::connector(false).connect(ServerName::try_from("localhost").ok()?, tcp),
    )
    .await
    .ok()?
    .ok()
}

/// Sends one request and reads one response: its status.
async fn exchange(
    s: &mut TlsStream<TcpStream>,
    method: &str,
    path: &str,
    headers: &str,
) -> Option<u16> {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    support::read_response(s).await.map(|r| r.status)
}

/// One scrape on the kept-alive connection, reconnecting when it is gone.
async fn scrape(
    conn: &mut Option<TlsStream<TcpStream>>,
    addr: SocketAddr,
    auth: &str,
    connects: &mut u64,
) -> Option<u16> {
    if conn.is_none() {
        *conn = Some(tls_connect(IpAddr::from([127, 0, 0, 1]), addr).await?);
        *connects += 1;
    }
    let headers = format!("Authorization: {auth}\r\nAccept-Encoding: gzip\r\n");
    exchange(conn.as_mut()?, "GET", "/metrics", &headers).await
}

async fn attacker(
    finding: Finding,
    source: u8,
    i: u64,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    achieved: Arc<AtomicU64>,
) {
    let source = IpAddr::from([127, 0, 0, source]);
    let bad = format!(
        "Authorization: {}\r\n",
        basic("prometheus", &format!("guess{i}"))
    );
    for _ in 0..MAX_ROUNDS {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(mut s) = tls_connect(source, addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match finding {
            Finding::HangUp => {
                let req = format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{bad}\r\n");
                let _ = s.write_all(req.as_bytes()).await;
                let _ = s.flush().await;
                drop(s);
                achieved.fetch_add(1, Ordering::Relaxed);
            }
            Finding::WaitingLogins => {
                let req = format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{bad}\r\n");
                let _ = s.write_all(req.as_bytes()).await;
                let mut buf = [0u8; 4096];
                // Hold it until the exporter answers or closes it.
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await
                    && n > 0
                {
                    achieved.fetch_add(1, Ordering::Relaxed);
                }
            }
            Finding::WrongPasswords => {
                for _ in 0..100 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match exchange(&mut s, "GET", "/metrics", &bad).await {
                        Some(_) => achieved.fetch_add(1, Ordering::Relaxed),
                        None => break,
                    };
                }
            }
            Finding::ManySources => {
                achieved.fetch_add(1, Ordering::Relaxed);
                // Idle until closed, then reconnect.
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await;
            }
            Finding::Rebinding => {
                // The worst case: a browser that holds the credentials.
                let auth = format!(
                    "Authorization: {}\r\nOrigin: http://evil.example:{}\r\n",
                    basic("prometheus", "correct horse"),
                    addr.port()
                );
                let evil = |m: &str, p: &str| {
                    format!(
                        "{m} {p} HTTP/1.1\r\nHost: evil.example:{}\r\n{auth}Content-Length: 0\r\n\r\n",
                        addr.port()
                    )
                };
                for req in [evil("POST", "/-/reload"), evil("GET", "/status.json")] {
                    let _ = s.write_all(req.as_bytes()).await;
                }
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Finding::ReloadStorm | Finding::IdleKeepAlive => return,
        }
    }
}

/// The value of `series` in a fresh scrape, if it is there.
async fn metric(addr: SocketAddr, auth: &str, series: &str) -> Option<f64> {
    let mut s = tls_connect(IpAddr::from([127, 0, 0, 1]), addr).await?;
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
    support::sample(&String::from_utf8_lossy(&raw), series)
}

const RELOADED_AT: &str =
    "aws_compute_optimizer_exporter_config_last_reload_success_timestamp_seconds";
const HOST_REFUSED: &str = "aws_compute_optimizer_exporter_requests_refused_total{reason=\"host\"}";

/// The exporter's CPU time so far, in seconds: the whole process, and its
/// bcrypt worker thread alone.
fn cpu_seconds(pid: u32) -> (f64, f64) {
    let mut bcrypt = 0.0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim() == "bcrypt" {
                bcrypt += support::cpu_seconds(&t.path().join("stat"));
            }
        }
    }
    let process = support::cpu_seconds(std::path::Path::new(&format!("/proc/{pid}/stat")));
    (process, bcrypt)
}

/// The exporter process, killed however the row ends.
struct Exporter(std::process::Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
