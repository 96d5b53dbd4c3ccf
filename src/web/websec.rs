//! `--web.config.file`: exporter-toolkit's web configuration, so existing
//! setups reuse their files:
//!
//! ```yaml
//! tls_server_config:          # see `tlsconf`: every toolkit key
//!   cert_file: server.crt
//!   key_file: server.key
//! http_server_config:
//!   headers:
//!     X-Frame-Options: deny
//! basic_auth_users:
//!   alice: $2y$10$...         # bcrypt
//! rate_limit:
//!   interval: 100ms
//!   burst: 20
//! ```
//!
//! Unknown keys are errors (a silently ignored security setting is worse than
//! a refusal to start), and so is everything exporter-toolkit refuses: a
//! client CA without a client auth type, a file that does not exist or parse,
//! a malformed bcrypt hash, an empty user name or one containing `:`, a
//! header the toolkit does not let you set. Relative paths are relative to
//! the file.
//!
//! bcrypt itself runs in [`crate::web::authgate`], which outlives this file's
//! reloads; here an unknown user is given the most expensive known hash as a
//! decoy, so the time a check takes says nothing about which names exist.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

use crate::web::authgate::{AuthGate, Verdict};
use crate::web::tlsconf::{self, TlsFile};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WebConfigFile {
    #[serde(default)]
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    http_server_config: Option<HttpFile>,
    #[serde(default, deserialize_with = "unique_users")]
    basic_auth_users: BTreeMap<String, String>,
    #[serde(default)]
    rate_limit: Option<RateLimitFile>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    /// HTTP/2 is not offered (ALPN names http/1.1 only), so `true`, the
    /// toolkit's default, and `false` both mean HTTP/1.1 here.
    #[serde(default)]
    #[allow(dead_code)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFile {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    burst: Option<u32>,
}

/// The headers exporter-toolkit lets a file add, with the values it allows
/// (`None`: any value).
const EXTRA_HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

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

/// A token bucket over every request, as the toolkit's `rate_limit`
/// (golang.org/x/time/rate): one token each `interval`, `burst` at most.
struct RateLimit {
    interval: Duration,
    burst: f64,
    /// Tokens left and when they were counted.
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    fn allow(&self) -> bool {
        let mut b = crate::sync::lock(&self.bucket);
        let now = Instant::now();
        let refill = now.duration_since(b.1).as_secs_f64() / self.interval.as_secs_f64();
        b.0 = (b.0 + refill).min(self.burst);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the server enforces: TLS, basic auth, headers and a rate limit, as
/// the web config file says. Swapped as a whole on reload.
pub struct WebSecurity {
    pub tls: Option<TlsAcceptor>,
    users: BTreeMap<String, String>,
    /// The most expensive user's hash: unknown users are checked against it,
    /// so their cost says nothing about which names exist.
    decoy: Option<String>,
    /// Added to every response (`http_server_config.headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    rate_limit: Option<RateLimit>,
}

/// The outcome of [`WebSecurity::authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// No or wrong credentials: 401.
    Denied,
    /// The password could not be checked now (bcrypt queue full): 429.
    Busy,
}

/// bcrypt only reads 72 bytes; a longer password is refused, never cut.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// Costs exporter-toolkit's bcrypt accepts start at 4; above 16 a single
/// check holds a CPU for seconds, which is an outage, not security.
const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=16;

impl WebSecurity {
    pub fn none() -> WebSecurity {
        WebSecurity {
            tls: None,
            users: BTreeMap::new(),
            decoy: None,
            headers: Vec::new(),
            rate_limit: None,
        }
    }

    /// Reads and checks `--web.config.file`. Every error is one line
    /// naming the file: a key or value quoted in it can hold a line break
    /// (a YAML flow key, found by fuzzing), which is escaped.
    pub fn load(path: &Path) -> Result<WebSecurity, String> {
        WebSecurity::read(path).map_err(|e| e.replace('\r', "\\r").replace('\n', "\\n"))
    }

    fn read(path: &Path) -> Result<WebSecurity, String> {
        let name = path.display().to_string();
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
                // Values here are password hashes and keys: never quote them.
                let msg = crate::config::without_values(&e.to_string());
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                format!("{name}{at}: {msg}")
            })?
        };
        check_users(&file.basic_auth_users, &name)?;
        let headers = headers(file.http_server_config.unwrap_or_default().headers, &name)?;
        let rate_limit = match file.rate_limit {
            Some(r) => rate_limit(r, &name)?,
            None => None,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = match &file.tls_server_config {
            Some(t) => tlsconf::acceptor(t, dir, &name)?,
            None => None,
        };
        let decoy = file
            .basic_auth_users
            .values()
            .max_by_key(|h| bcrypt::HashParts::from_str(h).map_or(0, |p| p.get_cost()))
            .cloned();
        Ok(WebSecurity {
            tls,
            users: file.basic_auth_users,
            decoy,
            headers,
            rate_limit,
        })
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// False when `rate_limit` has no token for this request (429).
    pub fn within_rate_limit(&self) -> bool {
        self.rate_limit.as_ref().is_none_or(RateLimit::allow)
    }

    /// Checks an `Authorization: Basic ...` header from `source` against the
    /// users, through the process-wide bcrypt `gate`.
    pub async fn authorize(
        &self,
        gate: &AuthGate,
        source: IpAddr,
        header: Option<&HeaderValue>,
    ) -> Access {
        if self.users.is_empty() {
            return Access::Allowed;
        }
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return Access::Denied;
        };
        if password.len() > MAX_PASSWORD_BYTES {
            return Access::Denied;
        }
        let (known, hash) = match (self.users.get(&user), &self.decoy) {
            (Some(hash), _) => (true, hash),
            (None, Some(decoy)) => (false, decoy),
            (None, None) => return Access::Denied,
        };
        match gate.check(source, &user, &password, hash, known).await {
            Verdict::Valid => Access::Allowed,
            Verdict::Invalid => Access::Denied,
            Verdict::Busy => Access::Busy,
        }
    }
}

fn check_users(users: &BTreeMap<String, String>, name: &str) -> Result<(), String> {
    for (user, hash) in users {
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
    Ok(())
}

/// `http_server_config.headers`, checked as exporter-toolkit checks them.
fn headers(
    configured: BTreeMap<String, String>,
    name: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    configured
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            let key = format!("{name}: http_server_config.headers.{k}");
            let Some((canonical, allowed)) = EXTRA_HEADERS.iter().find(|(h, _)| *h == k) else {
                let names: Vec<&str> = EXTRA_HEADERS.iter().map(|(h, _)| *h).collect();
                return Err(format!(
                    "{key}: this header can not be configured; allowed: {}",
                    names.join(", ")
                ));
            };
            if let Some(values) = allowed
                && !values.contains(&v.as_str())
            {
                return Err(format!(
                    "{key}: {v:?} is not allowed; expected one of {values:?}"
                ));
            }
            let value = HeaderValue::from_str(&v)
                .map_err(|_| format!("{key}: not a valid header value"))?;
            let header = HeaderName::from_bytes(canonical.as_bytes())
                .map_err(|_| format!("{key}: not a header name"))?;
            Ok((header, value))
        })
        .collect()
}

fn rate_limit(r: RateLimitFile, name: &str) -> Result<Option<RateLimit>, String> {
    let interval = match r.interval.as_deref() {
        None | Some("0") | Some("0s") => return Ok(None),
        Some(s) => crate::config::parse_duration(s)
            .map_err(|e| format!("{name}: rate_limit.interval: {e}"))?,
    };
    if interval.is_zero() {
        return Ok(None);
    }
    let burst = r.burst.unwrap_or(0);
    if burst == 0 {
        return Err(format!(
            "{name}: rate_limit.burst: must be at least 1 when rate_limit.interval is set (0 refuses every request)"
        ));
    }
    Ok(Some(RateLimit {
        interval,
        burst: f64::from(burst),
        bucket: Mutex::new((f64::from(burst), Instant::now())),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Authorizes through a fresh gate, as one source.
    async fn allowed(sec: &WebSecurity, header: Option<&HeaderValue>) -> bool {
        let gate = AuthGate::new();
        sec.authorize(&gate, IpAddr::from([127, 0, 0, 1]), header)
            .await
            == Access::Allowed
    }

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
        assert!(allowed(&sec, Some(&basic("alice", "s3cret"))).await);
        assert!(allowed(&sec, Some(&basic("alice", "s3cret"))).await);
        assert!(!allowed(&sec, Some(&basic("alice", "wrong"))).await);
        assert!(!allowed(&sec, Some(&basic("bob", "s3cret"))).await);
        assert!(!allowed(&sec, None).await);
        assert!(!allowed(&sec, Some(&HeaderValue::from_static("Basic !!!"))).await);
        assert!(allowed(&WebSecurity::none(), None).await);
        // The scheme is case-insensitive.
        let lower = basic("alice", "s3cret")
            .to_str()
            .unwrap()
            .replacen("Basic", "basic", 1);
        assert!(allowed(&sec, Some(&HeaderValue::from_str(&lower).unwrap())).await);
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
        assert!(allowed(&sec, Some(&basic("alice", &password))).await);
        let longer = format!("{password}EXTRA");
        assert!(!allowed(&sec, Some(&basic("alice", &longer))).await);
    }

    #[test]
    fn every_toolkit_key_is_applied() {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        let dir = std::env::temp_dir().join(format!("websec-all-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yml");
        std::fs::write(
            &path,
            format!(
                "tls_server_config:\n  cert_file: {d}/server.crt\n  key_file: {d}/server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {d}/ca.crt\n  client_allowed_sans: [prometheus.monitoring.svc]\n  min_version: TLS12\n  max_version: TLS13\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n  prefer_server_cipher_suites: false\n  curve_preferences: [X25519, CurveP256]\nhttp_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"default-src 'self'\"\n    X-XSS-Protection: ''\nrate_limit:\n  interval: 1h\n  burst: 2\n",
                d = d.display()
            ),
        )
        .unwrap();
        let sec = WebSecurity::load(&path).unwrap();
        assert!(sec.tls.is_some());
        let names: Vec<&str> = sec.headers.iter().map(|(k, _)| k.as_str()).collect();
        // A blank value is unset, as in the toolkit.
        assert_eq!(names, ["content-security-policy", "x-frame-options"]);
        assert!(sec.within_rate_limit() && sec.within_rate_limit());
        assert!(!sec.within_rate_limit(), "burst of 2, one token an hour");
        // `tls_server_config: {}` alone is plain HTTP, as in the toolkit.
        std::fs::write(&path, "tls_server_config: {}\n").unwrap();
        assert!(WebSecurity::load(&path).unwrap().tls.is_none());
        // An inline key that does not parse is never quoted.
        std::fs::write(
            &path,
            format!(
                "tls_server_config:\n  cert_file: {d}/server.crt\n  key: 'SECRETKEYMATERIAL'\n",
                d = d.display()
            ),
        )
        .unwrap();
        let err = WebSecurity::load(&path).err().unwrap();
        assert!(err.contains("tls_server_config.key"), "{err}");
        assert!(!err.contains("SECRETKEYMATERIAL"), "{err}");
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
                "tls_server_config.cipher_suites: unknown cipher: x",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n",
                "implements AEAD suites only",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n",
                "tls_server_config.min_version: TLS10 is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
                "tls_server_config.max_version: is below min_version",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [CurveP521]\n",
                "tls_server_config.curve_preferences: CurveP521 is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  curve_preferences: [Curve25519x]\n",
                "unknown curve: Curve25519x",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  client_allowed_sans: [x]\n",
                "client_allowed_sans: requires client_auth_type to be one of RequireAnyClientCert or RequireAndVerifyClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [ops@example.com]\n",
                "e-mail SANs cannot be matched",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Sometimes\n",
                "client_auth_type: \"Sometimes\" is not supported",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
                "RequireAndVerifyClientCert needs client_ca_file",
            ),
            (
                "tls_server_config:\n  cert: x\n  cert_file: a\n  key_file: b\n",
                "set either cert or cert_file, not both",
            ),
            (
                "tls_server_config:\n  cert_file: a\n",
                "missing one of key or key_file",
            ),
            (
                "http_server_config:\n  headers:\n    Server: nginx\n",
                "http_server_config.headers.Server: this header can not be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "X-Frame-Options: \"allow\" is not allowed",
            ),
            (
                "http_server_config:\n  http3: true\n",
                "unknown field `http3`",
            ),
            (
                "rate_limit:\n  interval: 1s\n",
                "rate_limit.burst: must be at least 1",
            ),
            (
                "rate_limit:\n  interval: fast\n  burst: 2\n",
                "rate_limit.interval:",
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
                "client CAs are set but client_auth_type is NoClientCert",
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
