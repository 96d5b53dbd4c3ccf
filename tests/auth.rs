//! Basic auth, TLS and the connection table under attack and across
//! reloads, one test per way a login or a scrape was once starved. Loopback
//! only (attackers on 127.0.0.2-127.0.0.9), every loop bounded in count and
//! time. Outcomes are asserted by order and status, not by timing.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use compute_optimizer_exporter::app;
use support::{Exporter, HttpResponse, read_response, request, sample, tempdir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn web_yml(dir: &Path, users: &[(&str, &str)], cost: u32) -> std::path::PathBuf {
    let path = dir.join("web.yml");
    let mut text = String::from("basic_auth_users:\n");
    for (user, password) in users {
        let hash = bcrypt::hash(password, cost).unwrap();
        text.push_str(&format!("  {user}: '{hash}'\n"));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the demo exporter with `toml` as its config file and `web` as
/// its web config file; both are re-read on `POST /-/reload`.
async fn start(dir: &Path, toml: &str, web: &Path) -> Exporter {
    let config = dir.join("config.toml");
    std::fs::write(&config, toml).unwrap();
    let c = app::load_config(Some(&config), &Default::default(), true).unwrap();
    Exporter::start_full(c, Some(&config), true, Some(web)).await
}

async fn connect_from(source: u8, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::from([127, 0, 0, source]), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// One request on an open connection (kept alive), and its response.
async fn exchange(
    stream: &mut TcpStream,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<HttpResponse> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    read_response(stream).await
}

/// True when the peer closes the connection within `secs` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, secs: u64) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Finding 2: requests waiting for bcrypt were "in flight" and never shed,
/// so a few wrong passwords pinned a small table and a scraper whose login
/// was cached got no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_a_password_check_do_not_pin_the_table() {
    let dir = tempdir();
    let web = web_yml(&dir, &[("prometheus", "right")], 12);
    let e = start(
        &dir,
        "[web]\nmax_connections = 4\n[poll]\ninterval = \"1h\"\n",
        &web,
    )
    .await;
    let good = basic("prometheus", "right");
    let ok = request(e.addr, "GET", "/metrics", &[("Authorization", &good)]).await;
    assert_eq!(ok.status, 200, "the login is cached from here on");

    // Four attacker addresses, each a connection whose wrong password waits.
    let bad = basic("prometheus", "wrong");
    let mut attackers = Vec::new();
    for source in 2..=5 {
        let mut s = connect_from(source, e.addr).await;
        let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {bad}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        attackers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let r = request(e.addr, "GET", "/metrics", &[("Authorization", &good)]).await;
        assert_eq!(r.status, 200);
    }
    let text = request(e.addr, "GET", "/metrics", &[("Authorization", &good)])
        .await
        .text();
    let shed: f64 = ["new", "never_served"]
        .iter()
        .filter_map(|r| {
            sample(
                &text,
                &format!("aws_compute_optimizer_exporter_connections_shed_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    assert!(shed >= 1.0, "the sheds are counted");
    drop(attackers);
    e.stop().await;
}

/// Finding 3: a login not cached yet waited behind every wrong password
/// queued before it, and a reload emptied the cache. Now sources take
/// turns (one check each), a source may queue two, and the cache outlives
/// reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_login_does_not_wait_behind_every_wrong_password() {
    let dir = tempdir();
    let web = web_yml(&dir, &[("prometheus", "right")], 10);
    let e = start(&dir, "[poll]\ninterval = \"1h\"\n", &web).await;
    let addr = e.addr;
    // Each 401 and the login's 200 take a number as they arrive.
    let order = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for i in 0..16 {
        let order = order.clone();
        attackers.push(tokio::spawn(async move {
            let mut s = connect_from(2, addr).await;
            let bad = basic("prometheus", &format!("guess{i}"));
            let r = exchange(&mut s, "/metrics", &[("Authorization", &bad)]).await;
            let status = r.map_or(0, |r| r.status);
            (
                status,
                (status == 401).then(|| order.fetch_add(1, Ordering::SeqCst)),
            )
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let sent_at = order.load(Ordering::SeqCst);
    let r = exchange(
        &mut s,
        "/metrics",
        &[("Authorization", &basic("prometheus", "right"))],
    )
    .await
    .unwrap();
    let waited_for = order.fetch_add(1, Ordering::SeqCst) - sent_at;
    assert_eq!(r.status, 200);
    let mut statuses = Vec::new();
    for a in attackers {
        statuses.push(a.await.unwrap().0);
    }
    // At most the check running and one turn of the other source.
    assert!(
        waited_for <= 2,
        "the login waited for {waited_for} wrong passwords: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "the queue was not bounded: {statuses:?}"
    );

    // A reload keeps the cache: with the worker busy on a wrong password,
    // the login is answered first.
    let r = request(
        addr,
        "POST",
        "/-/reload",
        &[
            ("Authorization", &basic("prometheus", "right")),
            ("Content-Length", "0"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let order = Arc::new(AtomicUsize::new(0));
    let attacker = {
        let order = order.clone();
        tokio::spawn(async move {
            let mut s = connect_from(3, addr).await;
            let r = exchange(
                &mut s,
                "/metrics",
                &[("Authorization", &basic("prometheus", "nope"))],
            )
            .await;
            (
                r.map_or(0, |r| r.status),
                order.fetch_add(1, Ordering::SeqCst),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = exchange(
        &mut s,
        "/metrics",
        &[("Authorization", &basic("prometheus", "right"))],
    )
    .await
    .unwrap();
    let login_at = order.fetch_add(1, Ordering::SeqCst);
    assert_eq!(r.status, 200);
    let (status, attacker_at) = attacker.await.unwrap();
    assert_eq!(status, 401);
    assert!(login_at < attacker_at, "the reload emptied the login cache");
    e.stop().await;
}

/// Finding 4: each connection kept the security settings it was accepted
/// with. A user removed by a reload still got 200 on her open connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_user_is_refused_on_her_open_connection() {
    let dir = tempdir();
    let web = web_yml(&dir, &[("alice", "a-pass"), ("bob", "b-pass")], 4);
    let e = start(&dir, "[poll]\ninterval = \"1h\"\n", &web).await;
    let alice = basic("alice", "a-pass");
    let mut open = TcpStream::connect(e.addr).await.unwrap();
    let r = exchange(&mut open, "/-/healthy", &[("Authorization", &alice)])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    web_yml(&dir, &[("bob", "b-pass")], 4);
    let r = request(
        e.addr,
        "POST",
        "/-/reload",
        &[
            ("Authorization", &basic("bob", "b-pass")),
            ("Content-Length", "0"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = exchange(&mut open, "/-/healthy", &[("Authorization", &alice)])
        .await
        .unwrap();
    assert_eq!(r.status, 401, "revoked, on the same connection");
    e.stop().await;
}

/// Finding 4: turning TLS on by reload left plaintext connections open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_tls_on_closes_plaintext_connections() {
    let dir = tempdir();
    let web = dir.join("web.yml");
    std::fs::write(&web, "").unwrap();
    let e = start(&dir, "[poll]\ninterval = \"1h\"\n", &web).await;
    let mut open = TcpStream::connect(e.addr).await.unwrap();
    let r = exchange(&mut open, "/-/healthy", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    let tls = support::tls::web_config("");
    std::fs::copy(&tls, &web).unwrap();
    // Reloaded over a second plaintext connection, which is closed too.
    let mut admin = TcpStream::connect(e.addr).await.unwrap();
    admin
        .write_all(b"POST /-/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut admin).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        closed_within(&mut open, 5).await,
        "a plaintext connection outlived TLS"
    );
    let r = support::tls::tls_get(
        e.addr,
        "/-/healthy",
        Some(("prometheus", "correct horse")),
        false,
    )
    .await;
    assert_eq!(r.map(|r| r.status), Some(200));
    e.stop().await;
}

/// Finding 6: hyper's header timer ran while a keep-alive connection was
/// idle, so `web.idle_timeout` never applied. A header that never ends is
/// still cut at `web.header_read_timeout` from its first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_live_until_the_idle_timeout() {
    let dir = tempdir();
    let web = dir.join("web.yml");
    std::fs::write(&web, "").unwrap();
    let toml = "[web]\nheader_read_timeout = \"500ms\"\nidle_timeout = \"60s\"\n[poll]\ninterval = \"1h\"\n";
    let e = start(&dir, toml, &web).await;
    let mut s = TcpStream::connect(e.addr).await.unwrap();
    assert_eq!(
        exchange(&mut s, "/-/healthy", &[]).await.unwrap().status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = exchange(&mut s, "/-/healthy", &[]).await;
    assert_eq!(again.map(|r| r.status), Some(200), "closed while idle");
    // Slowloris on the served connection: the next header never ends.
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut s, 5).await,
        "an unfinished header kept its connection"
    );
    let text = e.metrics().await;
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_exporter_connections_shed_total{reason=\"header_read_timeout\"}"
        ),
        Some(1.0)
    );
    e.stop().await;
}

/// Finding 7: DNS rebinding. A page on evil.example whose name now resolves
/// to the exporter sends `Host: evil.example:PORT` and a matching `Origin`;
/// it must neither reload nor read the status pages. Configured names work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_host_is_refused_on_reload_and_status_pages() {
    let dir = tempdir();
    let web = dir.join("web.yml");
    std::fs::write(&web, "").unwrap();
    let toml = "[web]\nallowed_hosts = [\"exporter.monitoring.svc\"]\n[poll]\ninterval = \"1h\"\n";
    let e = start(&dir, toml, &web).await;
    let port = e.addr.port();
    let evil = format!("evil.example:{port}");
    let origin = format!("http://{evil}");
    let post = |host: String, origin: String| async move {
        let mut s = TcpStream::connect(e.addr).await.unwrap();
        let req = format!(
            "POST /-/reload HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        read_response(&mut s).await.unwrap()
    };
    let r = post(evil.clone(), origin.clone()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    for path in ["/status.json", "/status", "/"] {
        let mut s = TcpStream::connect(e.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {evil}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let r = read_response(&mut s).await.unwrap();
        assert_eq!(r.status, 403, "{path}");
        assert!(r.text().contains("web.allowed_hosts"), "{}", r.text());
    }
    // The scrape answers to any name; the configured name reaches all.
    let mut s = TcpStream::connect(e.addr).await.unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {evil}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.unwrap().status, 200);
    let named = format!("exporter.monitoring.svc:{port}");
    let r = post(named.clone(), format!("http://{named}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = e.metrics().await;
    assert_eq!(
        sample(
            &text,
            "aws_compute_optimizer_exporter_requests_refused_total{reason=\"host\"}"
        ),
        Some(4.0)
    );
    e.stop().await;
}

/// exporter-toolkit's `rate_limit` and `http_server_config.headers` apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_headers_from_the_web_config_apply() {
    let dir = tempdir();
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\nrate_limit:\n  interval: 1h\n  burst: 3\n",
    )
    .unwrap();
    let e = start(&dir, "[poll]\ninterval = \"1h\"\n", &web).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = request(e.addr, "GET", "/-/healthy", &[]).await;
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    e.stop().await;
}

/// `:port` listens on IPv4 and IPv6, as Go's does; a host name resolves.
#[tokio::test]
async fn listen_addresses_as_go_reads_them() {
    use compute_optimizer_exporter::config::parse_listen_address;
    use compute_optimizer_exporter::web::server::bind_listen;
    let any = bind_listen(&parse_listen_address(":0").unwrap()).unwrap();
    let port = any.local_addr().unwrap().port();
    for target in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        let (accepted, connected) = tokio::join!(any.accept(), TcpStream::connect(&target));
        assert!(connected.is_ok() && accepted.is_ok(), "{target}");
    }
    let local = bind_listen(&parse_listen_address("localhost:0").unwrap()).unwrap();
    assert!(local.local_addr().unwrap().ip().is_loopback());
}
