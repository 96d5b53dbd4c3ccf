//! A real TLS client for the exporter's `--web.config.file` tests, and the
//! fixtures it trusts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{HttpResponse, parse_response, tempdir};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

pub fn web_config(extra_tls: &str) -> PathBuf {
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

pub fn connector(client_cert: bool) -> tokio_rustls::TlsConnector {
    connector_with(client_cert.then_some("client"), &["ca.crt"])
}

/// A client trusting the fixtures `roots`, presenting the fixture
/// certificate `client` (`client` for client.crt and client.key).
pub fn connector_with(client: Option<&str>, roots: &[&str]) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(CertificateDer::from_pem_file(fixture(root)).unwrap())
            .unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let config = match client {
        Some(name) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(fixture(&format!("{name}.crt"))).unwrap()],
                PrivateKeyDer::from_pem_file(fixture(&format!("{name}.key"))).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// GET over TLS; `None` when the handshake or the exchange fails.
pub async fn tls_get(
    addr: SocketAddr,
    path: &str,
    auth: Option<(&str, &str)>,
    client_cert: bool,
) -> Option<HttpResponse> {
    use base64::Engine as _;
    let auth = auth.map(|(u, p)| {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        format!("Basic {b}")
    });
    let (r, _) = tls_request(addr, &connector(client_cert), path, auth.as_deref()).await?;
    Some(r)
}

/// GET `/-/healthy` over TLS with `connector`: the status and the server's
/// certificate, or `None` when the handshake or the exchange fails.
pub async fn healthy_with(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    auth: &str,
) -> Option<(u16, CertificateDer<'static>)> {
    let (r, cert) = tls_request(addr, connector, "/-/healthy", Some(auth)).await?;
    Some((r.status, cert))
}

/// One GET over a new TLS connection: the response and the server's
/// certificate.
async fn tls_request(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    path: &str,
    auth: Option<&str>,
) -> Option<(HttpResponse, CertificateDer<'static>)> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()?
        .first()?
        .clone()
        .into_owned();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(auth) = auth {
        req.push_str(&format!("Authorization: {auth}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    (!raw.is_empty()).then(|| (parse_response(&raw), cert))
}
