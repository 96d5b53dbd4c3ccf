//! The HTTP endpoints over a real socket bound to 127.0.0.1:0.

mod support;

use std::time::{Duration, Instant};

use support::standin::{Fault, Standin, org};
use support::{Exporter, get, request, sample, tempdir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn demo() -> Exporter {
    let e = Exporter::start_with(None, true).await;
    e.wait_polls(1).await;
    e
}

#[tokio::test]
async fn metrics_plain_and_gzip_carry_the_same_series() {
    let e = demo().await;
    let plain = get(e.addr, "/metrics").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-type"), Some(CONTENT_TYPE));
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept, Accept-Encoding"));
    let zipped = request(e.addr, "GET", "/metrics", &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(zipped.header("content-type"), Some(CONTENT_TYPE));
    assert!(zipped.body.len() * 4 < plain.body.len());
    let series = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| {
                l.starts_with("aws_compute_optimizer_enrollment") && !l.contains("_transitions_")
            })
            .map(str::to_owned)
            .collect()
    };
    let unzipped = zipped.decoded();
    assert_eq!(series(&unzipped), series(&plain.text()));
    assert_eq!(series(&plain.text()).len(), 5 + 300 * 4 + 1 + 300);
    // The live half is present in both.
    for t in [plain.text(), unzipped] {
        assert!(t.contains(
            "aws_compute_optimizer_exporter_build_info{revision=\"test\",version=\"test\"} 1"
        ));
        assert!(t.contains("process_resident_memory_bytes"));
    }
    e.stop().await;
}

#[tokio::test]
async fn head_answers_without_a_body() {
    let e = demo().await;
    let r = request(e.addr, "HEAD", "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
    assert!(r.body.is_empty());
    e.stop().await;
}

#[tokio::test]
async fn landing_health_and_unknown_paths() {
    let e = demo().await;
    let home = get(e.addr, "/").await;
    assert_eq!(home.status, 200);
    assert_eq!(
        home.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = home.text();
    for needle in [
        "href=\"/metrics\"",
        "href=\"/-/healthy\"",
        "href=\"/-/ready\"",
        "href=\"/status\"",
        "Version test",
        "Last poll succeeded",
        "Pending: ",
        "Exports the AWS Compute Optimizer enrollment status",
        "this organisation is simulated",
    ] {
        assert!(html.contains(needle), "{needle} missing from {html}");
    }
    // The demo says so everywhere a person or a script looks.
    assert!(
        get(e.addr, "/status")
            .await
            .text()
            .contains("this organisation is simulated")
    );
    assert!(
        get(e.addr, "/status.json")
            .await
            .text()
            .contains("\"simulated\":true")
    );
    assert_eq!(get(e.addr, "/-/healthy").await.status, 200);
    assert_eq!(get(e.addr, "/-/ready").await.status, 200);
    assert_eq!(get(e.addr, "/nope").await.status, 404);
    assert_eq!(get(e.addr, "/metrics/extra").await.status, 404);
    let post = request(e.addr, "POST", "/metrics", &[("Content-Length", "0")]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let del = request(e.addr, "DELETE", "/", &[]).await;
    assert_eq!(del.status, 405);
    e.stop().await;
}

#[tokio::test]
async fn ready_only_once_the_first_poll_has_finished() {
    let standin = Standin::start(org(10)).await;
    standin.fault(0, Fault::Delay(Duration::from_millis(1500)), 1);
    let e = Exporter::start(&standin, "[poll]\ninterval = \"5s\"\ntimeout = \"5s\"\n").await;
    let r = get(e.addr, "/-/ready").await;
    assert_eq!(r.status, 503);
    assert_eq!(get(e.addr, "/-/healthy").await.status, 200);
    // Before the first poll there are no organisation series at all.
    let text = e.metrics().await;
    assert!(!text.contains("aws_compute_optimizer_enrollment_accounts"));
    e.wait_polls(1).await;
    assert_eq!(get(e.addr, "/-/ready").await.status, 200);
    e.stop().await;
}

#[tokio::test]
async fn status_page_and_json_list_the_accounts_not_active() {
    let e = demo().await;
    let json = get(e.addr, "/status.json").await;
    assert_eq!(json.status, 200);
    assert_eq!(json.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    let counts = v["counts"].as_object().unwrap();
    let not_active: u64 = counts
        .iter()
        .filter(|(k, _)| *k != "Active")
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    let listed = v["not_active"].as_array().unwrap();
    assert_eq!(listed.len() as u64, not_active);
    assert!(listed.iter().all(|a| a["status"] != "Active"));
    assert_eq!(v["accounts_total"], 300);
    assert_eq!(v["last_poll"]["success"], true);
    let html = get(e.addr, "/status").await;
    assert_eq!(html.status, 200);
    let body = html.text();
    let first = listed[0]["account_id"].as_str().unwrap();
    assert!(body.contains(first));
    // The enrollment table, before the demo's Automation table.
    let enrollment = body.split("<h3>").next().unwrap();
    assert_eq!(enrollment.matches("<tr class=").count() as u64, not_active);
    let automation = &v["automation"];
    let automation_not_active = automation["accounts_total"].as_u64().unwrap()
        - automation["counts"]["Active"].as_u64().unwrap();
    assert_eq!(
        body.matches("<tr class=").count() as u64,
        not_active + automation_not_active
    );
    e.stop().await;
}

#[tokio::test]
async fn a_custom_telemetry_path_replaces_metrics() {
    let dir = tempdir();
    let path = dir.join("c.toml");
    std::fs::write(&path, "[web]\ntelemetry_path = \"/prom\"\n").unwrap();
    let e = Exporter::start_with(Some(&path), true).await;
    assert_eq!(get(e.addr, "/metrics").await.status, 404);
    let r = get(e.addr, "/prom").await;
    assert_eq!(r.status, 200);
    assert!(get(e.addr, "/").await.text().contains("href=\"/prom\""));
    e.stop().await;
}

#[tokio::test]
async fn slow_clients_cannot_starve_a_scrape() {
    let dir = tempdir();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        "[web]\nmax_connections = 4\nheader_read_timeout = \"500ms\"\n",
    )
    .unwrap();
    let e = Exporter::start_with(Some(&path), true).await;
    e.wait_polls(1).await;
    // Twenty slow-loris clients: half a request line each, then nothing.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(e.addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    let started = Instant::now();
    let r = get(e.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The slow clients were cut off by the header read timeout.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), slow[0].read(&mut buf))
        .await
        .expect("closed by the server")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    e.stop().await;
}

#[tokio::test]
async fn request_bodies_are_not_read() {
    let e = demo().await;
    // Claims a 100 MB body that never comes: the answer does not wait for it.
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        request(
            e.addr,
            "GET",
            "/-/healthy",
            &[("Content-Length", "100000000")],
        ),
    )
    .await
    .expect("answered without the body");
    assert_eq!(r.status, 200);
    e.stop().await;
}

#[tokio::test]
async fn many_concurrent_scrapes_all_succeed() {
    let e = demo().await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let addr = e.addr;
        tasks.push(tokio::spawn(async move {
            let gzip = if i % 2 == 0 { "gzip" } else { "identity" };
            let r = request(addr, "GET", "/metrics", &[("Accept-Encoding", gzip)]).await;
            assert_eq!(r.status, 200);
            r.decoded()
                .lines()
                .filter(|l| l.starts_with("aws_compute_optimizer_enrollment_status{"))
                .count()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1201);
    }
    e.stop().await;
}

#[tokio::test]
async fn reload_applies_a_good_config_and_refuses_a_bad_one() {
    let standin = Standin::start(org(30)).await;
    let dir = tempdir();
    let path = dir.join("c.toml");
    let base = format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\nretry_backoff = \"10ms\"\n[poll]\ninterval = \"1s\"\ntimeout = \"1s\"\n",
        standin.url()
    );
    std::fs::write(&path, &base).unwrap();
    let e = Exporter::start_with(Some(&path), false).await;
    e.wait_polls(1).await;
    assert!(standin.seen().iter().all(|s| s.max_results == Some(100)));

    std::fs::write(&path, format!("{base}page_size = 7\n")).unwrap();
    let r = request(e.addr, "POST", "/-/reload", &[("Content-Length", "0")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    e.wait_for(10, |_| {
        standin.seen().last().and_then(|s| s.max_results) == Some(7)
    })
    .await;
    let text = e.metrics().await;
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_exporter_config_last_reload_successful"
        ),
        Some(1.0)
    );

    std::fs::write(&path, format!("{base}page_size = 700\n")).unwrap();
    let r = request(e.addr, "POST", "/-/reload", &[("Content-Length", "0")]).await;
    assert_eq!(r.status, 500);
    assert!(r.text().contains("poll.page_size"), "{}", r.text());
    let text = e.metrics().await;
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_exporter_config_last_reload_successful"
        ),
        Some(0.0)
    );
    // The old configuration keeps polling.
    let before = standin.requests();
    e.wait_for(10, |_| standin.requests() > before + 2).await;
    assert!(
        standin
            .seen()
            .iter()
            .rev()
            .take(2)
            .all(|s| s.max_results == Some(7))
    );
    assert_eq!(get(e.addr, "/-/reload").await.status, 405);
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_scrape_finish() {
    // A body far larger than the socket buffers, read slowly.
    let standin = Standin::start(org(25_000)).await;
    let e = Exporter::start(&standin, "[poll]\ninterval = \"1m\"\n").await;
    e.wait_for(60, |t| {
        t.contains("aws_compute_optimizer_enrollment_accounts{")
    })
    .await;
    let addr = e.addr;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = vec![0u8; 64 * 1024];
    let n = s.read(&mut raw).await.unwrap();
    raw.truncate(n);
    // Shut down while most of the body is still to be sent.
    let stopping = tokio::spawn(e.stop());
    let mut buf = vec![0u8; 256 * 1024];
    // Slowly, so shutdown comes mid-body; bounded, so a server that never
    // closes fails the test instead of hanging it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("the response ends within 60 s")
            .unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let r = support::parse_response(&raw);
    assert_eq!(r.status, 200);
    let declared: usize = r.header("content-length").unwrap().parse().unwrap();
    assert!(declared > 10_000_000, "{declared}");
    assert_eq!(r.body.len(), declared, "the in-flight response was cut");
    stopping.await.unwrap();
    // And nothing new is accepted.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_real_organisation_is_not_called_simulated() {
    let standin = support::standin::Standin::start(support::standin::org(3)).await;
    let e = Exporter::start(&standin, "[poll]\ninterval = \"1h\"\n").await;
    e.wait_polls(1).await;
    for path in ["/", "/status"] {
        let html = get(e.addr, path).await.text();
        assert!(!html.contains("simulated"), "{path}: {html}");
    }
    assert!(
        get(e.addr, "/status.json")
            .await
            .text()
            .contains("\"simulated\":false")
    );
    e.stop().await;
}

/// The body is one ordinary gzip member however it is read: Python's gzip
/// module, curl, and (in tests/prometheus.rs) Prometheus' Go reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_gzip_readers_read_the_whole_body() {
    let e = demo().await;
    e.wait_polls(1).await;
    let url = format!("http://{}/metrics", e.addr);
    let python = "import gzip, sys, urllib.request as u\n\
                  r = u.urlopen(u.Request(sys.argv[1], headers={'Accept-Encoding': 'gzip'}))\n\
                  assert r.headers['Content-Encoding'] == 'gzip'\n\
                  sys.stdout.buffer.write(gzip.decompress(r.read()))\n";
    let runs: [(&str, Vec<String>); 2] = [
        ("python3", vec!["-c".into(), python.into(), url.clone()]),
        (
            "curl",
            vec!["-sf".into(), "--compressed".into(), url.clone()],
        ),
    ];
    for (program, args) in runs {
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(program).args(&args).output()
        })
        .await
        .unwrap()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("aws_compute_optimizer_enrollment_status{"))
            .count();
        assert_eq!(series, 1201, "{program}");
        assert!(text.contains("aws_compute_optimizer_up 1"), "{program}");
    }
    e.stop().await;
}
