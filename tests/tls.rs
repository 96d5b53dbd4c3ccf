//! `--web.config.file`: TLS and basic auth with a real TLS client.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use compute_optimizer_exporter::config::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::{Exporter, parse_response, tempdir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn web_config(extra_tls: &str) -> PathBuf {
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    let dir = tempdir();
    let path = dir.join("web.yml");
    std::fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{extra_tls}basic_auth_users:\n  prometheus: '{hash}'\n",
            fixture("server.crt").display(),
            fixture("server.key").display()
        ),
    )
    .unwrap();
    path
}

fn connector(client_cert: bool) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("ca.crt")).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if client_cert {
        builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(fixture("client.crt")).unwrap()],
                PrivateKeyDer::from_pem_file(fixture("client.key")).unwrap(),
            )
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// GET over TLS; `None` when the handshake or the exchange fails.
async fn tls_get(
    addr: SocketAddr,
    path: &str,
    auth: Option<(&str, &str)>,
    client_cert: bool,
) -> Option<support::HttpResponse> {
    use base64::Engine as _;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector(client_cert)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {b}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    (!raw.is_empty()).then(|| parse_response(&raw))
}

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
