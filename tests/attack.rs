//! A hostile network: 2,000 connections from 127.0.0.2–127.0.0.9 holding the
//! port in every way a client can (idle, slowloris, pipelined and never
//! read, stalled TLS), while scrapes from a fresh connection must all get
//! through. Its own test binary, so its load never overlaps another test's
//! timing. Bounded: the crowd stops after 30 s and each slot reconnects at
//! most 200 times.

mod support;

use std::time::{Duration, Instant};

use support::{Exporter, attack, request, tls};

/// Scrapes `/metrics` from fresh connections while 2,000 hostile ones from
/// 127.0.0.2–9 hold the port; every scrape must get the whole body.
async fn scrape_under_attack(e: &Exporter, tls_auth: bool) -> (Vec<Duration>, attack::Report, u64) {
    let crowd = attack::Attack::start(e.addr, 2000, &attack::ALL, Duration::from_secs(30));
    // Until the whole crowd has tried to connect at least once.
    let deadline = Instant::now() + Duration::from_secs(15);
    while crowd.attempts() < 2000 {
        assert!(
            Instant::now() < deadline,
            "the crowd tried {} times",
            crowd.attempts()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut times = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let r = if tls_auth {
            tls::tls_get(
                e.addr,
                "/metrics",
                Some(("prometheus", "correct horse")),
                false,
            )
            .await
            .unwrap_or_else(|| panic!("TLS scrape {i} failed"))
        } else {
            request(e.addr, "GET", "/metrics", &[("Accept-Encoding", "gzip")]).await
        };
        times.push(started.elapsed());
        assert_eq!(r.status, 200, "scrape {i}");
        // Every account's series: the body arrived whole.
        let series = r
            .decoded()
            .lines()
            .filter(|l| l.starts_with("aws_compute_optimizer_enrollment_status{"))
            .count();
        assert_eq!(series, 1201, "scrape {i}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = crowd.held();
    // Read once: with the crowd's closed connections in TIME_WAIT the table
    // is long.
    let worst_queue = attack::server_send_queues(e.addr.port())
        .into_iter()
        .max()
        .unwrap_or(0);
    let report = crowd.stop();
    assert!(held > 0, "the crowd held nothing: {report:?}");
    (times, report, worst_queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_hostile_connections_cannot_starve_a_scrape() {
    use compute_optimizer_exporter::web::conns::SEND_BUFFER_BYTES;
    let web = tls::web_config("");
    let cases: [(&str, &str, bool); 3] = [
        ("defaults: the per-source cap", "", false),
        (
            "a small table: shedding",
            "max_connections = 300\nmax_connections_per_source = 1000\n",
            false,
        ),
        ("defaults with TLS and basic auth", "", true),
    ];
    for (name, web_toml, tls_auth) in cases {
        let mut config = compute_optimizer_exporter::config::Config::demo();
        config.poll.interval = Duration::from_secs(3600);
        let extra: compute_optimizer_exporter::config::WebConfig =
            toml::from_str(web_toml).unwrap();
        config.web.max_connections = extra.max_connections;
        config.web.max_connections_per_source = extra.max_connections_per_source;
        let e = Exporter::start_full(config, None, true, tls_auth.then_some(web.as_path())).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !e.state.is_ready() {
            assert!(Instant::now() < deadline, "{name}: no poll");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (mut times, report, worst_queue) = scrape_under_attack(&e, tls_auth).await;
        times.sort();
        eprintln!(
            "{name}: 20/20 scrapes, p50 {:?}, max {:?}; crowd {report:?}; largest send queue {worst_queue} B",
            times[10], times[19]
        );
        // Unread responses pin about the capped send buffer per connection
        // (the kernel doubles the setting and overshoots it by a few
        // segments), not the autotuned megabytes.
        assert!(
            worst_queue <= 4 * SEND_BUFFER_BYTES as u64,
            "{name}: {worst_queue} bytes queued on one connection"
        );
        assert!(
            report.closed_by_server > 0,
            "{name}: nothing was shed: {report:?}"
        );
        e.stop().await;
    }
}
