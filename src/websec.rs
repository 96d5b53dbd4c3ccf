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
//! a refusal to start), and so is everything exporter-toolkit refuses: a
//! client CA without a client auth type, a file that does not exist or parse,
//! a malformed bcrypt hash, an empty user name or one containing `:`.
//! Relative paths are relative to the file.
//!
//! bcrypt is slow by design, so it never runs on the async workers: checks
//! run one at a time on the blocking pool, a verified login is cached (keyed
//! by user, password and hash, so a changed password is not accepted), and an
//! unknown user costs as much as the most expensive known one.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
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
    #[serde(default, deserialize_with = "unique_users")]
    basic_auth_users: BTreeMap<String, String>,
}

/// The users map, refusing a user named twice (YAML would keep the last).
fn unique_users<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Users;
    impl<'de> serde::de::Visitor<'de> for Users {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of user names to bcrypt hashes")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut users = BTreeMap::new();
            while let Some((user, hash)) = m.next_entry::<String, String>()? {
                if users.contains_key(&user) {
                    return Err(serde::de::Error::custom(format!(
                        "basic_auth_users: duplicate user {user:?}"
                    )));
                }
                users.insert(user, hash);
            }
            Ok(users)
        }
    }
    d.deserialize_any(Users)
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
    /// The most expensive user's hash: unknown users are checked against it,
    /// so their cost says nothing about which names exist.
    decoy: Option<String>,
    /// SHA-256 of user, password and hash for credentials already verified,
    /// so a scrape does not pay for bcrypt every time.
    verified: Mutex<HashSet<[u8; 32]>>,
    /// One bcrypt check at a time: a flood of wrong passwords queues here
    /// and leaves the other core to the scrapes.
    bcrypt_slot: tokio::sync::Semaphore,
}

const MAX_CACHED: usize = 256;

/// bcrypt only reads 72 bytes; a longer password is refused, never cut.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Costs exporter-toolkit's bcrypt accepts start at 4; above 16 a single
/// check holds a CPU for seconds, which is an outage, not security.
const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=16;

impl WebSecurity {
    pub fn none() -> WebSecurity {
        WebSecurity::new(None, BTreeMap::new())
    }

    fn new(tls: Option<TlsAcceptor>, users: BTreeMap<String, String>) -> WebSecurity {
        let decoy = users
            .values()
            .max_by_key(|h| bcrypt::HashParts::from_str(h).map_or(0, |p| p.get_cost()))
            .cloned();
        WebSecurity {
            tls,
            users,
            decoy,
            verified: Mutex::new(HashSet::new()),
            bcrypt_slot: tokio::sync::Semaphore::new(1),
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
                // Values here are password hashes: never quote them.
                let msg = crate::config::without_values(&e.to_string());
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                format!("{name}{at}: {msg}")
            })?
        };
        for (user, hash) in &file.basic_auth_users {
            if user.is_empty() || user.contains(':') {
                return Err(format!(
                    "{name}: basic_auth_users: user name {user:?} must be non-empty and contain no ':'"
                ));
            }
            let parts =
                (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
                    .then(|| bcrypt::HashParts::from_str(hash).ok())
                    .flatten();
            let Some(parts) = parts else {
                return Err(format!(
                    "{name}: basic_auth_users.{user}: not a bcrypt hash (expected $2y$..., e.g. from `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                ));
            };
            if !BCRYPT_COSTS.contains(&parts.get_cost()) {
                return Err(format!(
                    "{name}: basic_auth_users.{user}: bcrypt cost {} is outside {}-{}",
                    parts.get_cost(),
                    BCRYPT_COSTS.start(),
                    BCRYPT_COSTS.end()
                ));
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = match file.tls_server_config {
            Some(t) => Some(tls_acceptor(&t, dir, &name.to_string())?),
            None => None,
        };
        Ok(WebSecurity::new(tls, file.basic_auth_users))
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks an `Authorization: Basic ...` header against the users.
    pub async fn authorize(&self, header: Option<&HeaderValue>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return false;
        };
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        let (known, hash) = match (self.users.get(&user), &self.decoy) {
            (Some(hash), _) => (true, hash.clone()),
            (None, Some(decoy)) => (false, decoy.clone()),
            (None, None) => return false,
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if known && self.cache().contains(&key) {
            return true;
        }
        let Ok(_slot) = self.bcrypt_slot.acquire().await else {
            return false;
        };
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false)
            && known;
        if ok {
            let mut cache = self.cache();
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key);
        }
        ok
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// User and password of an `Authorization: Basic` header (the scheme name
/// is case-insensitive, RFC 9110).
fn basic_credentials(header: &HeaderValue) -> Option<(String, String)> {
    let value = header.to_str().ok()?.trim();
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn tls_acceptor(t: &TlsFile, dir: &Path, name: &str) -> Result<TlsAcceptor, String> {
    if t.client_ca_file.is_some() && t.client_auth_type.is_none() {
        return Err(format!(
            "{name}: tls_server_config.client_ca_file is set but client_auth_type is not: set client_auth_type to RequireAndVerifyClientCert (or VerifyClientCertIfGiven), or remove client_ca_file"
        ));
    }
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
        ("NoClientCert", None) => builder.with_no_client_auth(),
        ("NoClientCert", Some(_)) => {
            return Err(format!(
                "{name}: tls_server_config.client_ca_file is set but client_auth_type is NoClientCert: no client certificate would be checked"
            ));
        }
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

    #[tokio::test]
    async fn basic_auth_checks_bcrypt_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let dir = std::env::temp_dir().join(format!("websec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yml");
        std::fs::write(&path, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let sec = WebSecurity::load(&path).unwrap();
        assert!(sec.requires_auth());
        assert!(sec.authorize(Some(&basic("alice", "s3cret"))).await);
        assert!(sec.authorize(Some(&basic("alice", "s3cret"))).await); // cached
        assert!(!sec.authorize(Some(&basic("alice", "wrong"))).await);
        assert!(!sec.authorize(Some(&basic("bob", "s3cret"))).await);
        assert!(!sec.authorize(None).await);
        assert!(
            !sec.authorize(Some(&HeaderValue::from_static("Basic !!!")))
                .await
        );
        assert!(WebSecurity::none().authorize(None).await);
        // The scheme is case-insensitive.
        let lower = basic("alice", "s3cret")
            .to_str()
            .unwrap()
            .replacen("Basic", "basic", 1);
        assert!(
            sec.authorize(Some(&HeaderValue::from_str(&lower).unwrap()))
                .await
        );
    }

    #[tokio::test]
    async fn a_password_longer_than_72_bytes_is_refused_not_cut() {
        let password = "A".repeat(72);
        let hash = bcrypt::hash(&password, 4).unwrap();
        let dir = std::env::temp_dir().join(format!("websec-72-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yml");
        std::fs::write(&path, format!("basic_auth_users:\n  alice: '{hash}'\n")).unwrap();
        let sec = WebSecurity::load(&path).unwrap();
        assert!(sec.authorize(Some(&basic("alice", &password))).await);
        let longer = format!("{password}EXTRA");
        assert!(!sec.authorize(Some(&basic("alice", &longer))).await);
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        let dir = std::env::temp_dir().join(format!("websec-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let h4 = bcrypt::hash("x", 4).unwrap();
        let h31 = h4.replacen("$04$", "$31$", 1);
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
            (
                "basic_auth_users:\n  alice: $2y$10$short\n",
                "basic_auth_users.alice: not a bcrypt hash",
            ),
            (
                format!("basic_auth_users:\n  alice: {h31}\n").leak(),
                "bcrypt cost 31 is outside 4-16",
            ),
            (
                format!("basic_auth_users:\n  '': {h4}\n").leak(),
                "must be non-empty and contain no ':'",
            ),
            (
                format!("basic_auth_users:\n  'a:b': {h4}\n").leak(),
                "must be non-empty and contain no ':'",
            ),
            (
                format!("basic_auth_users:\n  alice: {h4}\n  alice: {h4}\n").leak(),
                "duplicate",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_ca_file: ca.crt\n",
                "client_ca_file is set but client_auth_type is not",
            ),
            // A number where a hash belongs: refused, and never quoted.
            (
                "basic_auth_users:\n  alice: 123456789\n",
                "alice: not a bcrypt hash",
            ),
        ] {
            let path = dir.join("web.yml");
            std::fs::write(&path, text).unwrap();
            let err = WebSecurity::load(&path).err().unwrap();
            assert!(err.contains(needle), "{needle}: {err}");
            assert!(!err.contains("123456789") && !err.contains("$2b$"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let err = WebSecurity::load(&dir.join("missing.yml")).err().unwrap();
        assert!(err.contains("cannot read web config file"), "{err}");
    }
}
