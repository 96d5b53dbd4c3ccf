//! Scrapes under attack, as figures: starts the release exporter in `--demo`,
//! points the test suite's hostile crowd at it from 127.0.0.2–127.0.0.9, and
//! scrapes from a fresh connection every 50 ms.
//!
//!     scripts/attackbench.sh [CONNECTIONS=2000] [SECONDS=20] [--tls | --wrong-passwords]
//!
//! Prints the scrape success rate, p50/p99/max latency, the exporter's peak
//! RSS and what the kernel holds for its unread responses.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::attack;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tls = args.iter().any(|a| a == "--tls");
    // Basic auth only (bcrypt cost 10), and a crowd of wrong passwords.
    let auth = args.iter().any(|a| a == "--wrong-passwords");
    let mut numbers = args.iter().filter_map(|a| a.parse::<u64>().ok());
    let connections = numbers.next().unwrap_or(2000) as usize;
    let seconds = numbers.next().unwrap_or(20);
    let bin =
        std::env::var("EXPORTER").unwrap_or("target/release/compute-optimizer-exporter".into());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(&bin);
    cmd.args(["--demo", "--log.level", "error", "--web.listen-address"])
        .arg(addr.to_string())
        .stdout(Stdio::null());
    if tls {
        cmd.arg("--web.config.file")
            .arg(support::tls::web_config(""));
    } else if auth {
        let web = support::tempdir().join("web.yml");
        let hash = bcrypt::hash("correct horse", 10).expect("bcrypt");
        std::fs::write(&web, format!("basic_auth_users:\n  prometheus: '{hash}'\n"))
            .expect("web config");
        cmd.arg("--web.config.file").arg(web);
    }
    let good = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "prometheus:correct horse"
        )
    );
    let child = Exporter(cmd.spawn().unwrap_or_else(|e| panic!("{bin}: {e}")));
    let scrape = || async {
        if tls {
            support::tls::tls_get(
                addr,
                "/metrics",
                Some(("prometheus", "correct horse")),
                false,
            )
            .await
            .filter(|r| r.status == 200)
            .is_some()
        } else {
            let mut headers = vec![("Accept-Encoding", "gzip")];
            if auth {
                headers.push(("Authorization", good.as_str()));
            }
            support::try_request(addr, "GET", "/metrics", &headers)
                .await
                .is_ok_and(|r| r.status == 200 && !r.decoded().is_empty())
        }
    };
    let ready = Instant::now() + Duration::from_secs(10);
    while !scrape().await {
        assert!(Instant::now() < ready, "the exporter did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let kinds: &[attack::Kind] = if auth {
        &[attack::Kind::WrongPassword]
    } else {
        &attack::ALL
    };
    let crowd = attack::Attack::start(addr, connections, kinds, Duration::from_secs(seconds + 10));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = Instant::now() + Duration::from_secs(seconds);
    let (mut times, mut failed, mut held) = (Vec::new(), 0, 0);
    while Instant::now() < end {
        let started = Instant::now();
        if scrape().await {
            times.push(started.elapsed());
        } else {
            failed += 1;
        }
        held = held.max(crowd.held());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queues = attack::server_send_queues(port);
    let report = crowd.stop();
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", child.0.id())).unwrap_or_default();
    let peak_rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(str::trim)
        .unwrap_or("?")
        .to_owned();
    drop(child);

    times.sort();
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or("-".into(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1000.0)
            })
    };
    let total = times.len() + failed;
    let (transport, crowd_kind) = match (tls, auth) {
        (true, _) => (
            "TLS + basic auth",
            "idle, slowloris, pipelined never read, stalled TLS",
        ),
        (false, true) => (
            "plain HTTP + basic auth, bcrypt cost 10",
            "wrong passwords back to back",
        ),
        _ => (
            "plain HTTP",
            "idle, slowloris, pipelined never read, stalled TLS",
        ),
    };
    println!("transport          {transport}");
    println!("hostile slots      {connections} from 127.0.0.2-9 ({crowd_kind})");
    println!(
        "crowd              {} connects, {} closed by the exporter, {held} held at most, {} wrong passwords refused",
        report.connects, report.closed_by_server, report.refused_guesses
    );
    println!(
        "scrapes            {}/{total} succeeded ({:.1}%)",
        times.len(),
        100.0 * times.len() as f64 / total.max(1) as f64
    );
    println!(
        "latency            p50 {}  p99 {}  max {}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!("exporter peak RSS  {peak_rss}");
    println!(
        "kernel send queues {} KiB over {} connections (largest {} KiB)",
        queues.iter().sum::<u64>() / 1024,
        queues.len(),
        queues.iter().max().unwrap_or(&0) / 1024
    );
}

/// The exporter process, killed however `main` ends.
struct Exporter(std::process::Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
