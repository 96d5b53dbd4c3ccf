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

fn basic_auth() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("prometheus:correct horse")
    )
}

/// Certificates are re-read when their files change, with no signal, as
/// exporter-toolkit reads them at each handshake (cert-manager rotation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_reload() {
    let dir = support::tempdir();
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(fixture("server.crt"), &crt).unwrap();
    std::fs::copy(fixture("server.key"), &key).unwrap();
    let web = dir.join("web.yml");
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  prometheus: '{hash}'\n"
        ),
    )
    .unwrap();
    let e = Exporter::start_full(Config::default(), None, true, Some(&web)).await;
    // A new client each time: a resumed session would show the old certificate.
    let client = || support::tls::connector_with(None, &["ca.crt", "server2.crt"]);
    let pem = |name: &str| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(fixture(name)).unwrap()
    };
    let (status, served) = support::tls::healthy_with(e.addr, &client(), &basic_auth())
        .await
        .unwrap();
    assert_eq!((status, served), (200, pem("server.crt")));
    // The key lands first: a handshake in between keeps the old pair.
    std::fs::copy(fixture("server2.key"), &key).unwrap();
    let (_, between) = support::tls::healthy_with(e.addr, &client(), &basic_auth())
        .await
        .unwrap();
    assert_eq!(between, pem("server.crt"));
    std::fs::copy(fixture("server2.crt"), &crt).unwrap();
    let (status, served) = support::tls::healthy_with(e.addr, &client(), &basic_auth())
        .await
        .unwrap();
    assert_eq!((status, served), (200, pem("server2.crt")));
    e.stop().await;
}

/// `RequireAnyClientCert` with `client_allowed_sans`: any certificate the
/// client holds the key of, if one of its DNS, URI or IP SANs is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_allowed_sans_admit_only_the_listed_names() {
    for san in [
        "prometheus.monitoring.svc",
        "spiffe://cluster.local/ns/monitoring/sa/prometheus",
        "127.0.0.9",
    ] {
        let web = web_config(&format!(
            "  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [\"{san}\"]\n"
        ));
        let e = Exporter::start_full(Config::default(), None, true, Some(&web)).await;
        let listed = support::tls::connector_with(Some("client-san"), &["ca.crt"]);
        let r = support::tls::healthy_with(e.addr, &listed, &basic_auth()).await;
        assert_eq!(r.map(|(s, _)| s), Some(200), "{san}");
        // A CA-signed certificate without the name, and none at all.
        for other in [Some("client"), None] {
            let c = support::tls::connector_with(other, &["ca.crt"]);
            let r = support::tls::healthy_with(e.addr, &c, &basic_auth()).await;
            assert!(r.is_none(), "{san}: {other:?} was served");
        }
        e.stop().await;
    }
}
