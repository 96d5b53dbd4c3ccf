//! `--web.config.file`: TLS and basic auth with a real TLS client.

mod support;

use std::time::Duration;

use compute_optimizer_exporter::config::Config;
use support::Exporter;
use support::tls::{fixture, tls_get, web_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_basic_auth() {
    let web = web_config("");
    let e = Exporter::start_full(Config::default(), None, true, Some(&web)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ok = tls_get(
        e.addr,
        "/metrics",
        Some(("prometheus", "correct horse")),
        false,
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("aws_compute_optimizer_up"));
    let wrong = tls_get(
        e.addr,
        "/metrics",
        Some(("prometheus", "battery staple")),
        false,
    )
    .await
    .unwrap();
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.header("www-authenticate"),
        Some("Basic realm=\"compute-optimizer-exporter\"")
    );
    assert!(!wrong.text().contains("aws_compute_optimizer"));
    let nobody = tls_get(e.addr, "/", None, false).await.unwrap();
    assert_eq!(nobody.status, 401);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(e.addr).await.unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut raw)).await;
    assert!(
        !raw.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(!String::from_utf8_lossy(&raw).contains("aws_compute_optimizer"));
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_when_required() {
    let web = web_config(&format!(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
        fixture("ca.crt").display()
    ));
    let e = Exporter::start_full(Config::default(), None, true, Some(&web)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let with = tls_get(
        e.addr,
        "/-/healthy",
        Some(("prometheus", "correct horse")),
        true,
    )
    .await;
    assert_eq!(with.map(|r| r.status), Some(200));
    let without = tls_get(
        e.addr,
        "/-/healthy",
        Some(("prometheus", "correct horse")),
        false,
    )
    .await;
    assert!(without.is_none(), "served a client without a certificate");
    e.stop().await;
}
