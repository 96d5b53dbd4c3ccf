//! `--web.config.file`: TLS and basic authentication in the Prometheus
//! exporter-toolkit's YAML format, so existing setups reuse their files:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt
//!   key_file: server.key
//!   # client_ca_file: ca.crt
//!   # client_auth_type: RequireAndVerifyClientCert
//!   # min_version: TLS12
//! basic_auth_users:
//!   alice: $2y$10$...   # bcrypt
//! ```
//!
//! Unknown keys are errors (a silently ignored security setting is worse than
//! a refusal to start). Relative paths are relative to the file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hyper::header::HeaderValue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
}

/// What the server enforces: TLS, basic auth, both or neither.
pub struct WebSecurity {
    pub tls: Option<TlsAcceptor>,
    users: BTreeMap<String, String>,
    /// SHA-256 of user, password and hash for credentials already verified,
    /// so a scrape does not pay for bcrypt every time.
    verified: Mutex<HashSet<[u8; 32]>>,
}

const MAX_CACHED: usize = 256;

impl WebSecurity {
    pub fn none() -> WebSecurity {
        WebSecurity {
            tls: None,
            users: BTreeMap::new(),
            verified: Mutex::new(HashSet::new()),
        }
    }

    pub fn load(path: &Path) -> Result<WebSecurity, String> {
        let name = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{name}: cannot read web config file: {e}"))?;
        let file: WebConfigFile = if text.trim().is_empty() {
            WebConfigFile::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| {
                let at = e
                    .location()
                    .map(|l| format!(":{}:{}", l.line(), l.column()))
                    .unwrap_or_default();
                let msg = e.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                format!("{name}{at}: {msg}")
            })?
        };
        for (user, hash) in &file.basic_auth_users {
            if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
                return Err(format!(
                    "{name}: basic_auth_users.{user}: not a bcrypt hash (expected $2y$..., e.g. from `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                ));
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = match file.tls_server_config {
            Some(t) => Some(tls_acceptor(&t, dir, &name.to_string())?),
            None => None,
        };
        Ok(WebSecurity {
            tls,
            users: file.basic_auth_users,
            verified: Mutex::new(HashSet::new()),
        })
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an `Authorization: Basic ...` header against the users.
    pub fn authorize(&self, header: Option<&HeaderValue>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some((user, password)) = header
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
        else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            // Same cost as a wrong password, so user names cannot be probed by timing.
            if let Some(any) = self.users.values().next() {
                let _ = bcrypt::verify(&password, any);
            }
            return false;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if cache.contains(&key) {
            return true;
        }
        drop(cache);
        let ok = bcrypt::verify(&password, hash).unwrap_or(false);
        if ok {
            cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }
}

fn tls_acceptor(t: &TlsFile, dir: &Path, name: &str) -> Result<TlsAcceptor, String> {
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            dir.join(p)
        }
    };
    let cert_path = resolve(&t.cert_file);
    let key_path = resolve(&t.key_file);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            format!(
                "{name}: tls_server_config.cert_file {}: {e}",
                cert_path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{name}: tls_server_config.cert_file {}: no certificate found",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        format!(
            "{name}: tls_server_config.key_file {}: {e}",
            key_path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match t.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(other) => {
            return Err(format!(
                "{name}: tls_server_config.min_version: {other:?} is not supported; allowed: TLS12, TLS13"
            ));
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("{name}: tls_server_config: {e}"))?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match (auth, &t.client_ca_file) {
        ("NoClientCert", _) => builder.with_no_client_auth(),
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", Some(ca)) => {
            let ca_path = resolve(ca);
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&ca_path).map_err(|e| {
                format!(
                    "{name}: tls_server_config.client_ca_file {}: {e}",
                    ca_path.display()
                )
            })? {
                let cert =
                    cert.map_err(|e| format!("{name}: tls_server_config.client_ca_file: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{name}: tls_server_config.client_ca_file: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if auth == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{name}: tls_server_config.client_ca_file: {e}"))?,
            )
        }
        ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven", None) => {
            return Err(format!(
                "{name}: tls_server_config.client_auth_type {auth} needs client_ca_file"
            ));
        }
        (other, _) => {
            return Err(format!(
                "{name}: tls_server_config.client_auth_type: {other:?} is not supported; allowed: NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ));
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{name}: tls_server_config: certificate and key do not match: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> HeaderValue {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        HeaderValue::from_str(&format!("Basic {b}")).unwrap()
    }

    #[test]
    fn basic_auth_checks_bcrypt_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let dir = std::env::temp_dir().join(format!("websec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yml");
        std::fs::write(&path, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let sec = WebSecurity::load(&path).unwrap();
        assert!(sec.requires_auth());
        assert!(sec.authorize(Some(&basic("alice", "s3cret"))));
        assert!(sec.authorize(Some(&basic("alice", "s3cret")))); // cached
        assert!(!sec.authorize(Some(&basic("alice", "wrong"))));
        assert!(!sec.authorize(Some(&basic("bob", "s3cret"))));
        assert!(!sec.authorize(None));
        assert!(!sec.authorize(Some(&HeaderValue::from_static("Basic !!!"))));
        assert!(WebSecurity::none().authorize(None));
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let dir = std::env::temp_dir().join(format!("websec-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (text, needle) in [
            (
                "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
                "tls_server_config.cert_file",
            ),
            (
                "basic_auth_users:\n  alice: plaintext\n",
                "basic_auth_users.alice: not a bcrypt hash",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n",
                "unknown field `cipher_suites`",
            ),
            ("basic_auth_users: [\n", "web.yml:"),
        ] {
            let path = dir.join("web.yml");
            std::fs::write(&path, text).unwrap();
            let err = WebSecurity::load(&path).err().unwrap();
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = WebSecurity::load(&dir.join("missing.yml")).err().unwrap();
        assert!(err.contains("cannot read web config file"), "{err}");
    }
}
