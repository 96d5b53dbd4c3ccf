//! `tls_server_config` of exporter-toolkit's web config, on rustls.
//!
//! Every key of the toolkit's schema is applied or refused with the key and
//! the reason: a security setting silently ignored is worse than a refusal
//! to start. What rustls cannot do (TLS 1.0/1.1, CBC suites, P-521, e-mail
//! SANs) is refused by name.
//!
//! Certificates given as files are re-read when the files change (checked
//! at each handshake by size, mtime and inode, so a cert-manager or
//! Kubernetes Secret rotation needs no signal). A rotation caught half
//! written keeps serving the previous pair until both files agree again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme, SupportedCipherSuite};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// The file's `tls_server_config`, every key exporter-toolkit defines.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    client_ca: Option<String>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    curve_preferences: Vec<String>,
}

impl TlsFile {
    /// The toolkit serves TLS when any certificate or client-auth key is
    /// set; `tls_server_config: {}` alone means plain HTTP.
    fn enabled(&self) -> bool {
        self.cert.is_some()
            || self.key.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.client_ca.is_some()
            || self.client_ca_file.is_some()
            || self.client_auth_type.is_some()
    }
}

/// The acceptor for `t`, or `None` when it enables no TLS. `dir` is the
/// web config file's folder (relative paths are relative to it) and `name`
/// the file's name for errors.
pub fn acceptor(t: &TlsFile, dir: &Path, name: &str) -> Result<Option<TlsAcceptor>, String> {
    if !t.enabled() {
        return Ok(None);
    }
    let err = |key: &str, why: String| format!("{name}: tls_server_config.{key}: {why}");
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            dir.join(p)
        }
    };

    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites =
        cipher_suites(&t.cipher_suites).map_err(|e| err("cipher_suites", e))?;
    if !t.curve_preferences.is_empty() {
        provider.kx_groups =
            curves(&t.curve_preferences).map_err(|e| err("curve_preferences", e))?;
    }
    let provider = Arc::new(provider);

    let min =
        version(t.min_version.as_deref().unwrap_or("TLS12")).map_err(|e| err("min_version", e))?;
    let max =
        version(t.max_version.as_deref().unwrap_or("TLS13")).map_err(|e| err("max_version", e))?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, v)| v)
            .collect();
    if versions.is_empty() {
        return Err(err(
            "max_version",
            "is below min_version: no TLS version is left".into(),
        ));
    }

    let verifier = client_verifier(t, &provider, &resolve).map_err(|(k, e)| err(k, e))?;
    let certs = match (&t.cert, &t.cert_file, &t.key, &t.key_file) {
        (Some(_), Some(_), _, _) => {
            return Err(err("cert", "set either cert or cert_file, not both".into()));
        }
        (_, _, Some(_), Some(_)) => {
            return Err(err("key", "set either key or key_file, not both".into()));
        }
        (None, None, _, _) => {
            return Err(err("cert_file", "missing one of cert or cert_file".into()));
        }
        (_, _, None, None) => return Err(err("key_file", "missing one of key or key_file".into())),
        (cert, cert_file, key, key_file) => CertSource {
            cert: match (cert, cert_file) {
                (Some(text), _) => Pem::Inline(text.clone()),
                (_, Some(p)) => Pem::File(resolve(p)),
                _ => unreachable!("matched above"),
            },
            key: match (key, key_file) {
                (Some(text), _) => Pem::Inline(text.clone()),
                (_, Some(p)) => Pem::File(resolve(p)),
                _ => unreachable!("matched above"),
            },
        },
    };
    let loaded = certs
        .load(&provider)
        .map_err(|e| format!("{name}: tls_server_config.{e}"))?;
    let resolver = Arc::new(CertResolver {
        stamp_and_key: Mutex::new((certs.stamp(), Arc::new(loaded))),
        source: certs,
        provider: provider.clone(),
    });

    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("{name}: tls_server_config: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn version(name: &str) -> Result<u8, String> {
    match name {
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        "TLS10" | "TLS11" => Err(format!(
            "{name} is not supported: the TLS library (rustls) implements TLS 1.2 and 1.3 only"
        )),
        other => Err(format!(
            "{other:?} is not a TLS version; allowed: TLS12, TLS13"
        )),
    }
}

/// TLS 1.3 suites are always on (Go's `cipher_suites` governs TLS 1.2 and
/// below only); the TLS 1.2 suites named, in the order named.
fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, String> {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let all = rustls::crypto::aws_lc_rs::DEFAULT_CIPHER_SUITES;
    if names.is_empty() {
        return Ok(all.to_vec());
    }
    let mut suites: Vec<SupportedCipherSuite> = all
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    for n in names {
        let suite = match n.as_str() {
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            }
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            }
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            }
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
            | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
                cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            }
            // TLS 1.3 suites: accepted and always on, as in Go.
            "TLS_AES_128_GCM_SHA256"
            | "TLS_AES_256_GCM_SHA384"
            | "TLS_CHACHA20_POLY1305_SHA256" => {
                continue;
            }
            other if other.contains("_CBC_") => {
                return Err(format!(
                    "{other} is not supported: the TLS library (rustls) implements AEAD suites only (AES-GCM, ChaCha20-Poly1305)"
                ));
            }
            other => return Err(format!("unknown cipher: {other}")),
        };
        if !suites.contains(&suite) {
            suites.push(suite);
        }
    }
    Ok(suites)
}

fn curves(names: &[String]) -> Result<Vec<&'static dyn SupportedKxGroup>, String> {
    use rustls::crypto::aws_lc_rs::kx_group;
    names
        .iter()
        .map(|n| match n.as_str() {
            "X25519" => Ok(kx_group::X25519),
            "CurveP256" => Ok(kx_group::SECP256R1),
            "CurveP384" => Ok(kx_group::SECP384R1),
            "X25519MLKEM768" => Ok(kx_group::X25519MLKEM768),
            "CurveP521" => Err(
                "CurveP521 is not supported by the TLS library (rustls with aws-lc-rs); use X25519, CurveP256 or CurveP384"
                    .to_string(),
            ),
            other => Err(format!("unknown curve: {other}")),
        })
        .collect()
}

/// The client-certificate policy for `client_auth_type`, or the key at
/// fault and why.
fn client_verifier(
    t: &TlsFile,
    provider: &Arc<CryptoProvider>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Arc<dyn ClientCertVerifier>, (&'static str, String)> {
    let ca_pem = match (&t.client_ca, &t.client_ca_file) {
        (Some(_), Some(_)) => {
            return Err((
                "client_ca",
                "set either client_ca or client_ca_file, not both".into(),
            ));
        }
        (Some(text), None) => Some(Pem::Inline(text.clone())),
        (None, Some(p)) => Some(Pem::File(resolve(p))),
        (None, None) => None,
    };
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    // (certificate asked for, certificate required, chain verified)
    let (offer, mandatory, verify) = match auth {
        "NoClientCert" | "" => (false, false, false),
        "RequestClientCert" => (true, false, false),
        "RequireAnyClientCert" | "RequireClientCert" => (true, true, false),
        "VerifyClientCertIfGiven" => (true, false, true),
        "RequireAndVerifyClientCert" => (true, true, true),
        other => {
            return Err((
                "client_auth_type",
                format!(
                    "{other:?} is not supported; allowed: NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ),
            ));
        }
    };
    if ca_pem.is_some() && !offer {
        return Err((
            "client_ca_file",
            "client CAs are set but client_auth_type is NoClientCert: set client_auth_type to RequireAndVerifyClientCert (or VerifyClientCertIfGiven), or remove the client CA".into(),
        ));
    }
    if let Some(sans) = &t.client_allowed_sans {
        if !mandatory {
            return Err((
                "client_allowed_sans",
                "requires client_auth_type to be one of RequireAnyClientCert or RequireAndVerifyClientCert".into(),
            ));
        }
        if let Some(email) = sans.iter().find(|s| s.contains('@') && !s.contains(':')) {
            return Err((
                "client_allowed_sans",
                format!("{email:?}: e-mail SANs cannot be matched here; use a DNS, IP or URI SAN"),
            ));
        }
    }
    if !offer {
        return Ok(rustls::server::WebPkiClientVerifier::no_client_auth());
    }
    let chain = if verify {
        let Some(pem) = ca_pem else {
            return Err((
                "client_auth_type",
                format!(
                    "{auth} needs client_ca_file (or client_ca) to verify certificates against"
                ),
            ));
        };
        let key = if t.client_ca.is_some() {
            "client_ca"
        } else {
            "client_ca_file"
        };
        let bytes = pem.read().map_err(|e| (key, e))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| (key, e.to_string()))?;
            roots.add(cert).map_err(|e| (key, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err((key, "no certificate found".into()));
        }
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        );
        let builder = if mandatory {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        Some(builder.build().map_err(|e| (key, e.to_string()))?)
    } else {
        None
    };
    Ok(Arc::new(ClientCerts {
        chain,
        mandatory,
        allowed_sans: t.client_allowed_sans.clone(),
        algorithms: provider.signature_verification_algorithms,
    }))
}

/// Client certificates as the toolkit's auth types ask: verified against
/// the CA or only asked for, and matched against `client_allowed_sans`.
#[derive(Debug)]
struct ClientCerts {
    /// Chain verification; `None` accepts any certificate (the client still
    /// proves it holds the key).
    chain: Option<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
    allowed_sans: Option<Vec<String>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.as_ref().map_or(&[], |c| c.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_client_cert(end_entity, intermediates, now)?;
        }
        if let Some(allowed) = &self.allowed_sans
            && !san_allowed(end_entity, allowed)
        {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// True when one of the certificate's DNS, URI or IP SANs is in `allowed`
/// (an exact match, as exporter-toolkit does).
fn san_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    if ee
        .valid_dns_names()
        .chain(ee.valid_uri_names())
        .any(|n| allowed.iter().any(|a| a == n))
    {
        return true;
    }
    allowed.iter().any(|a| {
        a.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            ee.verify_is_valid_for_subject_name(&ServerName::IpAddress(ip.into()))
                .is_ok()
        })
    })
}

/// PEM text given inline or in a file.
#[derive(Debug, Clone)]
enum Pem {
    Inline(String),
    File(PathBuf),
}

impl Pem {
    fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Pem::Inline(text) => Ok(text.clone().into_bytes()),
            Pem::File(p) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())),
        }
    }

    /// Size, mtime and inode of a file: what changes when it is rewritten
    /// or a Secret's symlink is swapped.
    fn stamp(&self) -> Option<(u64, SystemTime, u64)> {
        let Pem::File(p) = self else { return None };
        let m = std::fs::metadata(p).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some((m.len(), m.modified().ok()?, inode))
    }
}

#[derive(Debug)]
struct CertSource {
    cert: Pem,
    key: Pem,
}

type Stamp = [Option<(u64, SystemTime, u64)>; 2];

impl CertSource {
    fn stamp(&self) -> Stamp {
        [self.cert.stamp(), self.key.stamp()]
    }

    /// The certificate chain and key, checked to belong together. Errors
    /// start with the key at fault; the key's PEM is never quoted.
    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
        let (ck, kk) = match (&self.cert, &self.key) {
            (Pem::Inline(_), _) => (
                "cert",
                if matches!(self.key, Pem::Inline(_)) {
                    "key"
                } else {
                    "key_file"
                },
            ),
            (_, Pem::Inline(_)) => ("cert_file", "key"),
            _ => ("cert_file", "key_file"),
        };
        let cert_bytes = self.cert.read().map_err(|e| format!("{ck}: {e}"))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{ck}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{ck}: no certificate found"));
        }
        let key_bytes = self.key.read().map_err(|e| format!("{kk}: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes)
            .map_err(|_| format!("{kk}: no PEM private key found"))?;
        CertifiedKey::from_der(certs, key, provider)
            .map_err(|e| format!("{ck}: certificate and key do not match: {e}"))
    }
}

/// Serves the current certificate, re-reading the files when they change.
#[derive(Debug)]
struct CertResolver {
    source: CertSource,
    provider: Arc<CryptoProvider>,
    stamp_and_key: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamp = self.source.stamp();
        let mut current = crate::sync::lock(&self.stamp_and_key);
        if stamp != current.0 {
            // Tried once per change: a half-written pair is retried when the
            // second file lands, and never on every handshake.
            current.0 = stamp;
            match self.source.load(&self.provider) {
                Ok(key) => {
                    current.1 = Arc::new(key);
                    tracing::info!("TLS certificate reloaded");
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "TLS certificate files changed but cannot be loaded; the previous certificate stays in use"
                ),
            }
        }
        Some(current.1.clone())
    }
}
